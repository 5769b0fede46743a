"""The National Data Science Bowl plankton networks (thesis Chapter 6, Tables 6.1 and 6.2).

Grey-scale plankton images, 121 classes. Both networks follow the maximum-depth rule
(Section 4.3, eq. 4.5): a 5x5 convolution and 3x3/2 max pooling, then a first stage of five
stacked 3x3 convolutions (32, 32, 64, 64, 128) and short later stages up to 512 filters,
ending in global average (or max: ``pool="max"``) pooling and a softmax classifier.

* ``ndsb1`` (Table 6.1): 128x128 input, stages at 64, 32, 16, 8 pixels; ~12x AlexNet's
  complexity.
* ``ndsb2`` (Table 6.2): 144x144 input, stages at 72, 36, 18 and -- after a 3x3/3 pooling -- 6
  pixels; ~6x AlexNet's complexity.

The activation defaults to RReLU (thesis Section 5.3.4): the one activation the team used on
all its competition networks, which it introduced there to curb over-fitting on this small
data set. The tables show no normalization, so the weights start from Kaiming's initialization
(``init="auto"``, see :mod:`cnnlab.models.init`).
"""
from __future__ import annotations

import torch.nn as nn

from .init import initialize, resolve_init
from .layers import ClassifierHead, ConvNormAct, check_norm, scale_width
from .registry import register_model

# ("conv", filters, kernel) | ("pool", kernel, stride): Table 6.1 / Table 6.2 rows
_FIRST = [("conv", 16, 5), ("pool", 3, 2), ("conv", 32, 3), ("conv", 32, 3), ("conv", 64, 3), ("conv", 64, 3),
          ("conv", 128, 3), ("pool", 3, 2), ("conv", 256, 3), ("pool", 3, 2)]
TABLE_6_1 = _FIRST + [("conv", 512, 3), ("pool", 3, 2), ("conv", 512, 3), ("conv", 512, 3)]
TABLE_6_2 = _FIRST + [("conv", 512, 3), ("conv", 512, 3), ("pool", 3, 3), ("conv", 512, 3), ("conv", 512, 3)]


class NDSBNet(nn.Module):
    def __init__(self, layout: list, num_classes: int, in_channels: int, act: str = "rrelu", norm: str = "none",
                 dropout: float = 0.0, width: float = 1.0, pool: str = "avg"):
        super().__init__()
        check_norm(norm)
        layers: list[nn.Module] = []
        c = in_channels
        for kind, a, b in layout:
            if kind == "conv":
                w = scale_width(a, width)
                layers.append(ConvNormAct(c, w, b, act=act, norm=norm))
                c = w
            else:  # 3x3/2 pools pad by 1 (128 -> 64 as in the table); the 3x3/3 pool does not (18 -> 6)
                layers.append(nn.MaxPool2d(a, b, 1 if b == 2 else 0))
        self.features = nn.Sequential(*layers)
        self.head = ClassifierHead(c, num_classes, pool, dropout)

    def forward(self, x):
        return self.head(self.features(x))


@register_model("ndsb1", "NDSB network 1: 5x5 conv + max-depth stages of 3x3 convs, RReLU (128x128 grey)",
                source="thesis Table 6.1", min_size=16, native_size=128, native_channels=1)
def ndsb1(num_classes: int, in_channels: int, image_size: int = 128, act: str = "rrelu", norm: str = "none",
          dropout: float = 0.0, width: float = 1.0, pool: str = "avg", init: str = "auto") -> nn.Module:
    model = NDSBNet(TABLE_6_1, num_classes, in_channels, act, norm, dropout, width, pool)
    return initialize(model, resolve_init(init, norm))


@register_model("ndsb2", "NDSB network 2: like network 1 with a 3x3/3 pooling stage (144x144 grey)",
                source="thesis Table 6.2", min_size=17, native_size=144, native_channels=1)
def ndsb2(num_classes: int, in_channels: int, image_size: int = 144, act: str = "rrelu", norm: str = "none",
          dropout: float = 0.0, width: float = 1.0, pool: str = "avg", init: str = "auto") -> nn.Module:
    model = NDSBNet(TABLE_6_2, num_classes, in_channels, act, norm, dropout, width, pool)
    return initialize(model, resolve_init(init, norm))
