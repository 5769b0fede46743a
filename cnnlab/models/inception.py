"""Inception networks: Inception-BN (thesis Table 4.4) and the module study of thesis
Figure 4.5 / Table 4.5 (``inception-a`` ... ``inception-k``).

An Inception module runs several paths on the same input -- 1x1, 3x3, double 3x3, pooling --
and concatenates their outputs (thesis Section 4.4, Figures 4.3-4.4). The 1x1 "reduce"
convolutions in front of the 3x3 paths are Network-in-Network layers that keep the cost down.

**Inception-BN** (``inception-bn``) is Table 4.4, the 2015 GoogLeNet: batch norm after every
convolution, 5x5 paths replaced by double 3x3, average pooling inside the modules; modules
3c and 4e halve the resolution (stride-2 3x3 paths plus a max-pooling pass-through).
Depth: 3 stem convolutions + 10 modules x 3 = 33 layers, the "33 layer Inception-BN"
of thesis Section 5.7. At 224x224 (``stem="imagenet"``) the stem is 7x7/2 conv, 3x3/2
max pool, 1x1 64, 3x3 192, 3x3/2 max pool; for small images (``stem="cifar"``, the default
below 112 pixels on the smaller side) it keeps the resolution: 3x3 64, 1x1 64, 3x3 192.

**The module family** (``inception-a`` .. ``inception-k``): thesis Section 4.6 replaces every
module of one base network by a variant built from part of the Inception module, on
CIFAR-10 (Table 4.5). Figure 4.5 itself is not reproduced in the text, so the variants
follow its description; each path has w filters (1x1 reductions w/2):

====  =================================================================  =============
name  paths                                                              output
====  =================================================================  =============
A     3x3 (baseline: single path, VGG-like)                              w
B     A + double 3x3 path                                                2w
C     3x3 + 5x5 (B's double 3x3 path replaced by a 5x5)                  2w
D     1x1 reduce -> 3x3 (A + NiN dimension reduction)                    w
E     3x3 + 1x1 (C's 5x5 path replaced by a 1x1)                         2w
F     one 3x3 path with 2w filters (the sum of B's two paths)            2w
G     3x3 + 3x3 average pooling (pass-through)                           w + input
H     3x3 + 3x3 max pooling (pass-through)                               w + input
I     3x3 + average pooling -> 1x1 projection                            2w
J     D + a second reduce -> double 3x3 path                             2w
K     1x1 + reduce->3x3 + reduce->double 3x3 + pool->1x1 projection      4w
====  =================================================================  =============

K is the Inception(-BN) module; Table 4.5 finds it best, and G/H (pooling without a
projection) fail to train. The base network mirrors the TinyNet CIFAR layout (Table 5.1):
a 3x3 convolution with 96 filters, then 2 + 4 + 2 modules at path widths 32, 64, 128 with
3x3/2 max pooling between the stages, global average pooling and a linear classifier.
"""
from __future__ import annotations

import string

import torch.nn as nn

from ..errors import CnnlabError
from .init import initialize, resolve_init
from .layers import Branches, ClassifierHead, ConvNormAct, auto_stem, check_norm, scale_width
from .registry import register_model

# name, #1x1, #3x3 reduce, #3x3, double #3x3 reduce, double #3x3, pool, pool projection, stride
TABLE_4_4 = [
    ("3a", 64, 64, 64, 64, 96, "avg", 32, 1),
    ("3b", 64, 64, 96, 64, 96, "avg", 64, 1),
    ("3c", 0, 128, 160, 64, 96, "max", 0, 2),
    ("4a", 224, 64, 96, 96, 128, "avg", 128, 1),
    ("4b", 192, 96, 128, 96, 128, "avg", 128, 1),
    ("4c", 160, 128, 160, 128, 160, "avg", 128, 1),
    ("4d", 96, 128, 192, 160, 192, "avg", 128, 1),
    ("4e", 0, 128, 192, 192, 256, "max", 0, 2),
    ("5a", 352, 192, 320, 160, 224, "avg", 128, 1),
    ("5b", 352, 192, 320, 192, 224, "max", 128, 1),
]


def _pool(kind: str, stride: int = 1) -> nn.Module:
    if kind == "avg":
        return nn.AvgPool2d(3, stride, 1, count_include_pad=False)
    return nn.MaxPool2d(3, stride, 1)


def inception_bn_module(cin: int, spec: tuple, act: str, norm: str, width: float) -> Branches:
    """One row of Table 4.4: 1x1 | reduce -> 3x3 | reduce -> 3x3 -> 3x3 | pool [-> 1x1 projection]."""
    _, n1, n3r, n3, nd3r, nd3, pool, proj, stride = spec
    n1, n3r, n3, nd3r, nd3, proj = (scale_width(c, width) if c else 0 for c in (n1, n3r, n3, nd3r, nd3, proj))
    conv = lambda ci, co, k, s=1: ConvNormAct(ci, co, k, s, act=act, norm=norm)  # noqa: E731
    paths: list[nn.Module] = []
    if n1:
        paths.append(conv(cin, n1, 1))
    paths.append(nn.Sequential(conv(cin, n3r, 1), conv(n3r, n3, 3, stride)))
    paths.append(nn.Sequential(conv(cin, nd3r, 1), conv(nd3r, nd3, 3), conv(nd3, nd3, 3, stride)))
    if proj:
        paths.append(nn.Sequential(_pool(pool, stride), conv(cin, proj, 1)))
    else:
        paths.append(_pool(pool, stride))
    return Branches(*paths, out_channels=n1 + n3 + nd3 + (proj or cin))


class InceptionBN(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, image_size: int | tuple[int, int] = 224, stem: str = "auto",
                 act: str = "relu", norm: str = "batch", dropout: float = 0.0, width: float = 1.0):
        super().__init__()
        check_norm(norm)
        if stem == "auto":
            stem = auto_stem(image_size)  # by the smaller side of a non-square input
        if stem not in ("imagenet", "cifar"):
            raise CnnlabError(f"inception-bn: option stem must be 'auto', 'imagenet' or 'cifar', got {stem!r}")
        c64, c192 = scale_width(64, width), scale_width(192, width)
        conv = lambda ci, co, k, s=1: ConvNormAct(ci, co, k, s, act=act, norm=norm)  # noqa: E731
        if stem == "imagenet":
            layers = [conv(in_channels, c64, 7, 2), nn.MaxPool2d(3, 2, 1), conv(c64, c64, 1), conv(c64, c192, 3),
                      nn.MaxPool2d(3, 2, 1)]
        else:
            layers = [conv(in_channels, c64, 3), conv(c64, c64, 1), conv(c64, c192, 3)]
        c = c192
        for spec in TABLE_4_4:
            module = inception_bn_module(c, spec, act, norm, width)
            layers.append(module)
            c = module.out_channels
        self.features = nn.Sequential(*layers)
        self.head = ClassifierHead(c, num_classes, "avg", dropout)  # Table 4.4: 7x7 average pool

    def forward(self, x):
        return self.head(self.features(x))


@register_model("inception-bn", "Inception-BN (GoogLeNet 2015): 10 Inception modules with BN, 33 layers deep",
                source="thesis Table 4.4", min_size=16, native_size=224, native_channels=3)
def inception_bn(num_classes: int, in_channels: int, image_size: int = 224, stem: str = "auto", act: str = "relu",
                 norm: str = "batch", dropout: float = 0.0, width: float = 1.0, init: str = "auto") -> nn.Module:
    """Inception-BN (thesis Table 4.4); ``stem`` "imagenet" (7x7/2 + pools), "cifar" (no downsampling) or "auto"."""
    model = InceptionBN(num_classes, in_channels, image_size, stem, act, norm, dropout, width)
    return initialize(model, resolve_init(init, norm))


# ----------------------------------------------------------------------------- Figure 4.5 family

VARIANTS = {
    "a": "3x3 path only (baseline)",
    "b": "3x3 + double 3x3 paths",
    "c": "3x3 + 5x5 paths",
    "d": "1x1 reduce -> 3x3",
    "e": "3x3 + 1x1 paths",
    "f": "single 3x3 path with B's total filters",
    "g": "3x3 + average-pool pass-through",
    "h": "3x3 + max-pool pass-through",
    "i": "3x3 + average pool -> 1x1 projection",
    "j": "reduce -> 3x3 + reduce -> double 3x3",
    "k": "1x1 + reduce->3x3 + reduce->double 3x3 + pool->proj (Inception)",
}


def variant_module(letter: str, cin: int, w: int, act: str, norm: str) -> Branches:
    """Module ``letter`` of thesis Figure 4.5 with path width ``w`` (see the module docstring)."""
    conv = lambda ci, co, k: ConvNormAct(ci, co, k, act=act, norm=norm)  # noqa: E731
    seq = nn.Sequential
    h = max(2, w // 2 // 2 * 2)  # 1x1 reduction width (even, for CReLU)
    reduce3 = lambda: seq(conv(cin, h, 1), conv(h, w, 3))  # noqa: E731
    reduce33 = lambda: seq(conv(cin, h, 1), conv(h, w, 3), conv(w, w, 3))  # noqa: E731
    build = {
        "a": lambda: [conv(cin, w, 3)],
        "b": lambda: [conv(cin, w, 3), seq(conv(cin, w, 3), conv(w, w, 3))],
        "c": lambda: [conv(cin, w, 3), conv(cin, w, 5)],
        "d": lambda: [reduce3()],
        "e": lambda: [conv(cin, w, 3), conv(cin, w, 1)],
        "f": lambda: [conv(cin, 2 * w, 3)],
        "g": lambda: [conv(cin, w, 3), _pool("avg")],
        "h": lambda: [conv(cin, w, 3), _pool("max")],
        "i": lambda: [conv(cin, w, 3), seq(_pool("avg"), conv(cin, w, 1))],
        "j": lambda: [reduce3(), reduce33()],
        "k": lambda: [conv(cin, w, 1), reduce3(), reduce33(), seq(_pool("avg"), conv(cin, w, 1))],
    }[letter]
    paths = build()
    out = sum(cin if isinstance(p, (nn.AvgPool2d, nn.MaxPool2d)) else _out_channels(p) for p in paths)
    return Branches(*paths, out_channels=out)


def _out_channels(path: nn.Module) -> int:
    """Output width of a path: a ConvNormAct, or a Sequential ending in one."""
    return path.out_channels if hasattr(path, "out_channels") else path[-1].out_channels


class InceptionFamily(nn.Module):
    """The base network of the module study, with every module of variant ``letter``.

    ``make_module(cin, w, act, norm)`` builds one module instead (the naive module of Figure 4.3 uses
    this base network too: :mod:`cnnlab.models.googlenet`)."""

    STAGES = ((32, 2), (64, 4), (128, 2))  # (path width, modules), after Table 5.1's 2 + 4 + 2 modules

    def __init__(self, letter: str, num_classes: int, in_channels: int, act: str = "relu", norm: str = "batch",
                 dropout: float = 0.0, width: float = 1.0, make_module=None):
        super().__init__()
        if make_module is None:
            def make_module(cin: int, w: int, act: str, norm: str) -> Branches:
                return variant_module(letter, cin, w, act, norm)
        check_norm(norm)
        c = scale_width(96, width)
        layers: list[nn.Module] = [ConvNormAct(in_channels, c, 3, act=act, norm=norm)]
        for i, (w, n) in enumerate(self.STAGES):
            if i:
                layers.append(nn.MaxPool2d(3, 2, 1))
            for _ in range(n):
                module = make_module(c, scale_width(w, width), act, norm)
                layers.append(module)
                c = module.out_channels
        self.features = nn.Sequential(*layers)
        self.head = ClassifierHead(c, num_classes, "avg", dropout)

    def forward(self, x):
        return self.head(self.features(x))


def _register_variant(letter: str) -> None:
    @register_model(f"inception-{letter}", f"Inception module study, module {letter.upper()}: {VARIANTS[letter]}",
                    source="thesis Figure 4.5, Table 4.5", min_size=8, native_size=32, native_channels=3)
    def builder(num_classes: int, in_channels: int, image_size: int = 32, act: str = "relu", norm: str = "batch",
                dropout: float = 0.0, width: float = 1.0, init: str = "auto") -> nn.Module:
        model = InceptionFamily(letter, num_classes, in_channels, act, norm, dropout, width)
        return initialize(model, resolve_init(init, norm))


for _letter in string.ascii_lowercase[:11]:
    _register_variant(_letter)
