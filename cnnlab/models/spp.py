"""Spatial pyramid pooling (thesis Figure 4.2, He et al. 2014) and the networks that use it.

**SPP layer** (:class:`SpatialPyramidPool`): max pooling of the last feature map into a fixed
grid at several levels -- e.g. 6x6, 3x3, 2x2 and 1x1 bins -- and the concatenation of all bins,
C * (36 + 9 + 4 + 1) numbers whatever the map's size. It replaces the last max pooling in front
of the fully connected layers, so a network with an FC head accepts any input size and sees
the image at several scales of pooling. Bins follow the SPP paper's window arithmetic through
``AdaptiveMaxPool2d`` (bin i covers [floor(i H / n), ceil((i + 1) H / n)) ), which equals its
ceil-window / floor-stride pooling whenever H is divisible by n.

* ``alexnet-spp`` (the SPP variant): AlexNet (thesis Table 4.2) with its last 3x3/2 max pooling
  replaced by a {6, 3, 2, 1} pyramid, as SPP-net did for its ZF/AlexNet-style networks.
* ``msra-vgg`` (the MSRA "deeper and wider" VGG, thesis Section 4.2.3 -- He et al. 2015's model C):
  a 7x7/2 convolution with 96 filters instead of VGG's first two 3x3 layers and pooling; one
  3x3/2 max pooling at 112x112; then six 3x3 layers per stage (VGG-19's four plus two) with
  128, 256 and 384 more filters than VGG's (384 at 56x56, 768 at 28x28, 896 at 14x14), 2x2/2
  pooling between stages, and a {7, 3, 2, 1} pyramid in place of the last max pooling, then
  FC 4096 - FC 4096 - classifier with dropout 0.5. With 896 x 63 pyramid bins feeding FC 4096
  it has ~330M parameters, more than the 95M of Table 4.7's "Kaiming Net" row (whose figures
  -- 1.28x AlexNet's complexity -- fit He & Sun's constrained-time nets better); the thesis
  text is what is built, and docs/models.md lists its cost figures.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from ..errors import CnnlabError
from .alexnet import AlexNet
from .init import initialize, resolve_init
from .layers import ConvNormAct, check_norm, linear_act, parse_floats, scale_width
from .registry import register_model


class SpatialPyramidPool(nn.Module):
    """Max-pool a [B, C, H, W] map into n x n bins for every n in ``levels``; output [B, C * sum(n^2)]."""

    def __init__(self, levels: Sequence[int] = (4, 2, 1)):
        super().__init__()
        levels = tuple(int(n) for n in levels)
        if not levels or any(n < 1 for n in levels):
            raise CnnlabError(f"spatial pyramid pooling: levels must be integers >= 1, got {levels}")
        self.levels = levels
        self.pools = nn.ModuleList(nn.AdaptiveMaxPool2d(n) for n in levels)

    @property
    def bins(self) -> int:
        return sum(n * n for n in self.levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([pool(x).flatten(1) for pool in self.pools], dim=1)


def _levels(value, name: str) -> tuple[int, ...]:
    levels = parse_floats(value, "levels")
    if not levels or any(v < 1 or not float(v).is_integer() for v in levels):
        raise CnnlabError(f"model {name!r}: option levels must be integers >= 1 like 6,3,2,1, got {value!r}")
    return tuple(int(v) for v in levels)


@register_model("alexnet-spp", "AlexNet with the last max pooling replaced by a 6/3/2/1 spatial pyramid "
                "(any input size)", source="thesis Figure 4.2 (SPP-net, He et al. 2014)", min_size=63,
                native_size=224, native_channels=3)
def alexnet_spp(num_classes: int, in_channels: int, image_size: int = 224, act: str = "relu", norm: str = "lrn",
                dropout: float = 0.5, width: float = 1.0, groups: int = 1, levels="6,3,2,1",
                init: str = "auto") -> nn.Module:
    model = AlexNet(num_classes, in_channels, image_size, act, norm, dropout, width, int(groups))
    spp = SpatialPyramidPool(_levels(levels, "alexnet-spp"))
    model.features[-1] = spp  # the last 3x3/2 max pooling
    c5 = next(m for m in reversed(model.features) if isinstance(m, nn.Conv2d)).out_channels
    c5 *= _act_multiplier(act)
    first_fc = next(m for m in model.classifier if isinstance(m, nn.Linear))
    model.classifier[1] = nn.Linear(c5 * spp.bins, first_fc.out_features, bias=first_fc.bias is not None)
    return initialize(model, resolve_init(init, norm))


def _act_multiplier(act: str) -> int:
    from .activations import channel_multiplier

    return channel_multiplier(act)


# VGG-19 (thesis Table 4.3) made deeper and wider as listed in thesis Section 4.2.3: (filters, convs) per stage
MSRA_STAGES = ((384, 6), (768, 6), (896, 6))


class MSRAVGG(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, act: str = "relu", norm: str = "none",
                 dropout: float = 0.5, width: float = 1.0, levels: tuple[int, ...] = (7, 3, 2, 1)):
        super().__init__()
        check_norm(norm)
        c = scale_width(96, width)
        layers: list[nn.Module] = [ConvNormAct(in_channels, c, 7, 2, act=act, norm=norm), nn.MaxPool2d(3, 2, 1)]
        for i, (filters, n) in enumerate(MSRA_STAGES):
            if i:
                layers.append(nn.MaxPool2d(2, 2))
            for _ in range(n):
                out = scale_width(filters, width)
                layers.append(ConvNormAct(c, out, 3, act=act, norm=norm))
                c = out
        self.features = nn.Sequential(*layers)
        self.spp = SpatialPyramidPool(levels)  # replaces the last 2x2/2 max pooling
        fc = scale_width(4096, width)
        self.classifier = nn.Sequential(*linear_act(c * self.spp.bins, fc, act, dropout, norm),
                                        *linear_act(fc, fc, act, dropout, norm), nn.Linear(fc, num_classes))

    def forward(self, x):
        return self.classifier(self.spp(self.features(x)))


@register_model("msra-vgg", "MSRA deeper-wider VGG: 7x7/2 96, 3 stages of six 3x3 convs (384/768/896), "
                "7/3/2/1 spatial pyramid, FC4096x2", source="thesis Sec. 4.2.3, Table 4.7 (He et al. 2015 model C)",
                min_size=32, native_size=224, native_channels=3)
def msra_vgg(num_classes: int, in_channels: int, image_size: int = 224, act: str = "relu", norm: str = "none",
             dropout: float = 0.5, width: float = 1.0, levels="7,3,2,1", init: str = "auto") -> nn.Module:
    model = MSRAVGG(num_classes, in_channels, act, norm, dropout, width, _levels(levels, "msra-vgg"))
    return initialize(model, resolve_init(init, norm))
