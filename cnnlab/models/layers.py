"""Blocks shared by the model families: normalization by name and conv-norm-activation."""
from __future__ import annotations

import torch.nn as nn

from ..errors import CnnlabError
from .activations import channel_multiplier, make_activation

NORMS = ("batch", "lrn", "none")


def make_norm(norm: str, channels: int) -> nn.Module:
    """Normalization after a convolution: batch norm (thesis eq. 5.8-5.11), LRN (eq. 4.1) or none."""
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "lrn":  # AlexNet's constants: n=5, alpha=1e-4, beta=0.75, k=2
        return nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)
    if norm == "none":
        return nn.Identity()
    raise CnnlabError(f"unknown norm {norm!r} (choose from {', '.join(NORMS)})")


class ConvNormAct(nn.Sequential):
    """conv -> norm -> activation; ``out_channels`` is the activation's output (CReLU-aware).

    With CReLU the convolution produces ``out_channels // 2`` maps so the block's output
    width is what the caller asked for, keeping the next layer's shape unchanged.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int | None = None, act: str = "relu", norm: str = "batch", groups: int = 1):
        mult = channel_multiplier(act)
        if out_channels % mult:
            raise CnnlabError(f"activation {act!r} needs an even channel count, got {out_channels}")
        conv_out = out_channels // mult
        padding = kernel_size // 2 if padding is None else padding
        super().__init__(
            nn.Conv2d(in_channels, conv_out, kernel_size, stride, padding, groups=groups, bias=norm != "batch"),
            make_norm(norm, conv_out),
            make_activation(act, conv_out),
        )
