"""Network in Network (Lin et al. 2014), thesis Section 4.4.

Two ideas (Section 4.4): the *mlpconv* layer -- a kxk convolution followed by 1x1
convolutions, i.e. a small multi-layer perceptron slid over the image, adding depth and
capacity to each layer -- regularized by dropout between the blocks; and *global average
pooling*: the last mlpconv produces one map per class and their averages are the logits,
so no fully connected layers are needed.

The layout is Lin et al.'s CIFAR-10 network: mlpconv(5x5 192, 1x1 160, 1x1 96) - max pool
3x3/2 - dropout - mlpconv(5x5 192, 1x1 192, 1x1 192) - avg pool 3x3/2 - dropout -
mlpconv(3x3 192, 1x1 192, 1x1 classes) - global average pool. The final 1x1 layer has no
activation (its outputs are the class scores).
"""
from __future__ import annotations

import torch.nn as nn

from .init import initialize, resolve_init
from .layers import ConvNormAct, check_norm, scale_width
from .registry import register_model


def mlpconv(cin: int, widths: tuple[int, int, int], kernel: int, act: str, norm: str) -> list[nn.Module]:
    """kxk conv followed by two 1x1 convs (the "micro network", thesis Section 4.4)."""
    layers, c = [], cin
    for i, w in enumerate(widths):
        layers.append(ConvNormAct(c, w, kernel if i == 0 else 1, act=act, norm=norm))
        c = w
    return layers


class NiN(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, act: str = "relu", norm: str = "none",
                 dropout: float = 0.5, width: float = 1.0):
        super().__init__()
        check_norm(norm)
        w = lambda c: scale_width(c, width)  # noqa: E731
        b1, b2, b3 = (w(192), w(160), w(96)), (w(192), w(192), w(192)), (w(192), w(192))
        self.features = nn.Sequential(
            *mlpconv(in_channels, b1, 5, act, norm),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            nn.Dropout(dropout) if dropout else nn.Identity(),
            *mlpconv(b1[-1], b2, 5, act, norm),
            nn.AvgPool2d(3, 2, ceil_mode=True),
            nn.Dropout(dropout) if dropout else nn.Identity(),
            ConvNormAct(b2[-1], b3[0], 3, act=act, norm=norm),
            ConvNormAct(b3[0], b3[1], 1, act=act, norm=norm),
            nn.Conv2d(b3[1], num_classes, 1),  # one map per class
            nn.AdaptiveAvgPool2d(1),  # global average pooling
            nn.Flatten(),
        )

    def forward(self, x):
        return self.features(x)


@register_model("nin", "Network in Network: mlpconv blocks + global average pooling (CIFAR-10 layout)",
                source="thesis Sec. 4.4 (Lin et al. 2014)", min_size=8, native_size=32, native_channels=3)
def nin(num_classes: int, in_channels: int, image_size: int = 32, act: str = "relu", norm: str = "none",
        dropout: float = 0.5, width: float = 1.0, init: str = "auto") -> nn.Module:
    """Network in Network; no normalization by default (the 2014 network), hence Kaiming initialization."""
    model = NiN(num_classes, in_channels, act, norm, dropout, width)
    return initialize(model, resolve_init(init, norm))
