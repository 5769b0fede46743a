"""Fold batch norm into the convolution before it, for inference.

In eval mode batch norm is an affine map per channel, y = gamma (x - mu) / sqrt(var + eps) + beta
(thesis eq. 5.8-5.11 with the running statistics), so conv -> BN equals one convolution with
weights W' = W * s and bias b' = (b - mu) * s + beta, s = gamma / sqrt(var + eps). The fused model
computes the same function (to float rounding) with one pass over each feature map less: on a
CPU, where batch norm is memory-bound, that is the cheap part of an inference speed-up
(``benchmarks/throughput.py`` measures it as the ``fused`` inference mode).
"""
from __future__ import annotations

import copy

import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every Conv2d directly followed by a BatchNorm2d (as siblings
    in an ``nn.Sequential``, e.g. :class:`cnnlab.models.layers.ConvNormAct`) folded into one Conv2d;
    the batch norm is replaced by ``nn.Identity`` so module names and indices stay valid. ``model``
    itself is left unchanged. Only for inference: the fused copy has no batch statistics to train."""
    fused = copy.deepcopy(model).eval()
    for parent in fused.modules():
        if not isinstance(parent, nn.Sequential):
            continue
        children = list(parent.named_children())
        for (name, conv), (bn_name, bn) in zip(children, children[1:]):
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats \
                    and conv.out_channels == bn.num_features:
                setattr(parent, name, fuse_conv_bn_eval(conv, bn))
                setattr(parent, bn_name, nn.Identity())
    return fused
