"""TinyNet (thesis Section 4.6, Table 4.6) and its 28x28 CIFAR-10 subnet (Table 5.1).

The thesis's answer to "AlexNet accuracy at mobile cost": ten small Inception-like modules
built from what the module study (Table 4.5) found worth its cost -- a 1x1 path next to the
3x3 path (module E) -- with about half of AlexNet's filters. Table 4.7: ~1.5M parameters,
7.9 MB, 0.40x (A) / 0.42x (B) of AlexNet's complexity (eq. 4.7), and a lower error.

Modules (Table 4.6 columns "1x1", "3x3", "pool"):

* a normal module concatenates a 1x1 convolution and a 3x3 convolution;
* a "stride 2" module concatenates a 3x3/2 convolution and a 3x3/2 max pooling of its
  input (hence 80 + 80 = 160 and 96 + 144 = 240 output channels).

``tinynet-a``: 7x7/2 first convolution; ``tinynet-b`` (the final "TinyNet"): 9x9/4. Both then
3x3/2 max pooling and a 3x3 convolution with 96 filters, reaching 28x28 at module 1. The
thesis trains A on 128x128 and B on 256x256 images; the 56x56 maps after the first layer in
Table 4.6 correspond to 112 and 224 pixel crops, the native sizes declared here (global
average pooling makes any size >= 32 work).

``tinynet-cifar`` (Table 5.1): the same modules without the first convolution and pooling,
on 28x28 crops of CIFAR-10: 3x3 conv 96, modules 1-10, 7x7 average pooling. It is the network
of the activation study (Table 5.2), where RReLU + batch norm did best.
"""
from __future__ import annotations

import torch.nn as nn

from ..errors import CnnlabError
from .init import initialize, resolve_init
from .layers import Branches, ClassifierHead, ConvNormAct, check_norm, scale_width
from .registry import register_model

# ("module", #1x1, #3x3) or ("reduce", #3x3): Table 4.6 / Table 5.1 modules 1-10
TABLE_4_6 = [
    ("module", 32, 32), ("module", 32, 48), ("reduce", 80),
    ("module", 112, 48), ("module", 96, 64), ("module", 80, 80), ("module", 48, 96), ("reduce", 96),
    ("module", 176, 160), ("module", 176, 160),
]
STEMS = {"a": (7, 2, 3), "b": (9, 4, 4)}  # kernel, stride, padding of the first convolution


def tiny_module(cin: int, spec: tuple, act: str, norm: str, width: float) -> Branches:
    """1x1 | 3x3 (normal module) or 3x3/2 conv | 3x3/2 max pool (stride-2 module)."""
    if spec[0] == "module":
        n1, n3 = scale_width(spec[1], width), scale_width(spec[2], width)
        return Branches(ConvNormAct(cin, n1, 1, act=act, norm=norm), ConvNormAct(cin, n3, 3, act=act, norm=norm),
                        out_channels=n1 + n3)
    n3 = scale_width(spec[1], width)
    return Branches(ConvNormAct(cin, n3, 3, 2, act=act, norm=norm), nn.MaxPool2d(3, 2, 1), out_channels=n3 + cin)


class TinyNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, stem: str, act: str = "relu", norm: str = "batch",
                 dropout: float = 0.0, width: float = 1.0):
        super().__init__()
        check_norm(norm)
        c64, c96 = scale_width(64, width), scale_width(96, width)
        layers: list[nn.Module] = []
        if stem in STEMS:
            k, s, p = STEMS[stem]
            layers += [ConvNormAct(in_channels, c64, k, s, p, act=act, norm=norm), nn.MaxPool2d(3, 2, 1)]
            c = c64
        elif stem == "cifar":
            c = in_channels
        else:
            raise CnnlabError(f"tinynet: unknown stem {stem!r}")
        layers.append(ConvNormAct(c, c96, 3, act=act, norm=norm))
        c = c96
        for spec in TABLE_4_6:
            module = tiny_module(c, spec, act, norm, width)
            layers.append(module)
            c = module.out_channels
        self.features = nn.Sequential(*layers)
        self.head = ClassifierHead(c, num_classes, "avg", dropout)  # 7x7 average pooling at the native size

    def forward(self, x):
        return self.head(self.features(x))


@register_model("tinynet-a", "TinyNet-A: 7x7/2 stem + 10 (1x1 | 3x3) modules, ~2M params",
                source="thesis Table 4.6, 4.7", min_size=32, native_size=112, native_channels=3)
def tinynet_a(num_classes: int, in_channels: int, image_size: int = 112, act: str = "relu", norm: str = "batch",
              dropout: float = 0.0, width: float = 1.0, init: str = "auto") -> nn.Module:
    model = TinyNet(num_classes, in_channels, "a", act, norm, dropout, width)
    return initialize(model, resolve_init(init, norm))


@register_model("tinynet-b", "TinyNet(-B): 9x9/4 stem + 10 (1x1 | 3x3) modules, 7.9 MB",
                source="thesis Table 4.6, 4.7", min_size=32, native_size=224, native_channels=3)
def tinynet_b(num_classes: int, in_channels: int, image_size: int = 224, act: str = "relu", norm: str = "batch",
              dropout: float = 0.0, width: float = 1.0, init: str = "auto") -> nn.Module:
    model = TinyNet(num_classes, in_channels, "b", act, norm, dropout, width)
    return initialize(model, resolve_init(init, norm))


@register_model("tinynet-cifar", "TinyNet's 28x28 CIFAR subnet of the activation study",
                source="thesis Table 5.1", min_size=8, native_size=28, native_channels=3)
def tinynet_cifar(num_classes: int, in_channels: int, image_size: int = 28, act: str = "relu", norm: str = "batch",
                  dropout: float = 0.0, width: float = 1.0, init: str = "auto") -> nn.Module:
    model = TinyNet(num_classes, in_channels, "cifar", act, norm, dropout, width)
    return initialize(model, resolve_init(init, norm))
