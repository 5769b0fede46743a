"""fastnet: the network tuned for time-to-accuracy on small images (MNIST, digits, CIFAR-sized).

Design, measured with ``benchmarks/mnist_time_to_accuracy.py`` on a 2-core CPU:
a 2x2 stride-2 "patch" stem (as airbench's) halves the resolution at once, because on
CPU the full-resolution BN/activation/pooling passes cost more than the convolutions;
then 3x3 conv-BN-activation stages with 2x2 max pooling between them, so most compute
happens at low resolution; no bias before BN; a global max-pool head. BN makes the
high learning rate of the one-cycle schedule stable. The default widths (32, 48, 64, 96)
reach 99.0% MNIST test accuracy in 1.5 epochs; four stages beat three of the same cost.
Most of the multiply-adds are the first 3x3 stage at 14x14, so the width of the stem and of
that stage set the cost: the benchmark's 99.0% recipe uses (24, 32, 48, 64), half the
multiply-adds (2.30M vs 4.59M per 28x28 image) for the same held-out accuracy
(docs/performance.md). For inference, :func:`cnnlab.models.fuse.fuse_conv_bn` folds each
batch norm into its convolution.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import CnnlabError
from .layers import ConvNormAct
from .registry import register_model


class FastNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, widths: tuple[int, ...] = (32, 48, 64, 96),
                 stem: str = "patch2", act: str = "relu", norm: str = "batch", dropout: float = 0.0,
                 head_scale: float = 1.0):
        super().__init__()
        if stem not in ("patch2", "conv3"):
            raise CnnlabError(f"fastnet: stem must be patch2 or conv3, got {stem!r}")
        # patch2: a 2x2 stride-2 convolution halves the resolution at once (as airbench's stem);
        # on CPU the full-resolution BN/activation/pooling passes cost more than the convolutions.
        layers: list[nn.Module] = [ConvNormAct(in_channels, widths[0], 2, stride=2, padding=0, act=act, norm=norm)
                                   if stem == "patch2" else ConvNormAct(in_channels, widths[0], 3, act=act, norm=norm)]
        c = widths[0]
        for i, w in enumerate(widths[1:], start=1):
            if stem == "conv3" or i > 1:  # the patch stem already halved the resolution once
                layers.append(nn.MaxPool2d(2))
            layers.append(ConvNormAct(c, w, 3, act=act, norm=norm))
            c = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.head = nn.Linear(c, num_classes, bias=False)
        self.head_scale = head_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x)).flatten(1)
        return self.head(self.dropout(x)) * self.head_scale


@register_model("fastnet", "conv-BN net (one stage per width, 4 by default) tuned for time-to-accuracy on small images",
                source="cnnlab (benchmarks/mnist_time_to_accuracy.py)", min_size=8, native_size=28,
                native_channels=1)
def fastnet(num_classes: int, in_channels: int, image_size: int = 28, widths: tuple[int, ...] | str = (32, 48, 64, 96),
            stem: str = "patch2", act: str = "relu", norm: str = "batch", dropout: float = 0.0,
            head_scale: float = 1.0) -> nn.Module:
    if isinstance(widths, str):
        widths = tuple(int(w) for w in widths.split(","))
    return FastNet(num_classes, in_channels, tuple(widths), stem, act, norm, dropout, head_scale)
