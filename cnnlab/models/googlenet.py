"""GoogLeNet 2014 with its auxiliary classifiers, and the naive Inception module (thesis Section 4.4).

**GoogLeNet** (``googlenet``, Szegedy et al. 2014 Table 1, the "GoogLeNet" row of thesis Table
4.7): 7x7/2 conv, 3x3/2 max pool, LRN, 1x1 64, 3x3 192, LRN, 3x3/2 max pool, then nine Inception
modules with dimension reduction (thesis Figure 4.4: 1x1 | 1x1 reduce -> 3x3 | 1x1 reduce -> 5x5 |
3x3 max pool -> 1x1 projection), max pools after 3b and 4e, 7x7 average pooling, dropout 0.4 and
a linear classifier. Two auxiliary classifiers sit on the outputs of 4a and 4d (5x5/3 average
pool, 1x1 conv 128, FC 1024, dropout 0.7, linear) and their losses are added with weight 0.3
in training (``aux_weight``; 0 builds the network without them). They run only in training:
evaluation and export see the main output alone (:mod:`cnnlab.models.auxiliary`). The 2015
differences (thesis Section 4.4: BN after every conv, 5x5 -> double 3x3, average pooling inside
the modules) are ``inception-bn``; ``norm="batch"`` here adds only the first of them.

For small images (``stem="cifar"``, the default below 112 pixels on the smaller side:
:func:`cnnlab.models.layers.auto_stem`) the stem keeps the resolution (3x3 64, 1x1 64, 3x3 192),
as ``inception-bn`` does.

**Naive Inception** (``inception-naive``, thesis Figure 4.3): 1x1, 3x3 and 5x5 convolutions and
3x3 max pooling side by side on the same input, concatenated -- no 1x1 reductions, so the
pooling path passes every input channel through and the width grows module after module
(the cost problem Figure 4.4's reductions solve). It is put in the base network of the module
study (``inception-a`` ... ``inception-k``: 96-filter stem, 2 + 4 + 2 modules at path widths
32, 64, 128) so ``cnnlab models --info`` compares it with those directly.
"""
from __future__ import annotations

import torch.nn as nn

from ..errors import CnnlabError
from .auxiliary import googlenet_aux
from .init import initialize, resolve_init
from .layers import Branches, ClassifierHead, ConvNormAct, auto_stem, check_norm, make_norm, scale_width
from .registry import register_model

# Szegedy et al. 2014 Table 1: name, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj
TABLE_1 = [
    ("3a", 64, 96, 128, 16, 32, 32), ("3b", 128, 128, 192, 32, 96, 64), "M",
    ("4a", 192, 96, 208, 16, 48, 64), ("4b", 160, 112, 224, 24, 64, 64), ("4c", 128, 128, 256, 24, 64, 64),
    ("4d", 112, 144, 288, 32, 64, 64), ("4e", 256, 160, 320, 32, 128, 128), "M",
    ("5a", 256, 160, 320, 32, 128, 128), ("5b", 384, 192, 384, 48, 128, 128),
]
AUX_AFTER = ("4a", "4d")


def inception_module(cin: int, row: tuple, act: str, norm: str, width: float) -> Branches:
    """Thesis Figure 4.4: 1x1 | reduce -> 3x3 | reduce -> 5x5 | 3x3 max pool -> 1x1 projection."""
    n1, n3r, n3, n5r, n5, proj = (scale_width(c, width) for c in row[1:])
    conv = lambda ci, co, k: ConvNormAct(ci, co, k, act=act, norm=norm)  # noqa: E731
    return Branches(conv(cin, n1, 1), nn.Sequential(conv(cin, n3r, 1), conv(n3r, n3, 3)),
                    nn.Sequential(conv(cin, n5r, 1), conv(n5r, n5, 5)),
                    nn.Sequential(nn.MaxPool2d(3, 1, 1), conv(cin, proj, 1)), out_channels=n1 + n3 + n5 + proj)


class GoogLeNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, image_size: int | tuple[int, int] = 224, stem: str = "auto",
                 act: str = "relu", norm: str = "lrn", dropout: float = 0.4, width: float = 1.0,
                 aux_weight: float = 0.3, aux_dropout: float = 0.7):
        super().__init__()
        check_norm(norm)
        if stem == "auto":
            stem = auto_stem(image_size)  # by the smaller side of a non-square input
        if stem not in ("imagenet", "cifar"):
            raise CnnlabError(f"googlenet: option stem must be 'auto', 'imagenet' or 'cifar', got {stem!r}")
        if aux_weight < 0:
            raise CnnlabError(f"googlenet: option aux_weight must be >= 0 (0: no auxiliary classifiers), "
                              f"got {aux_weight}")
        conv_norm = "batch" if norm == "batch" else "none"  # the 2014 net normalizes only in the stem (LRN)
        lrn = (lambda c: make_norm("lrn", c)) if norm == "lrn" else (lambda c: nn.Identity())  # noqa: E731
        conv = lambda ci, co, k, s=1: ConvNormAct(ci, co, k, s, act=act, norm=conv_norm)  # noqa: E731
        c64, c192 = scale_width(64, width), scale_width(192, width)
        if stem == "imagenet":
            self.stem = nn.Sequential(conv(in_channels, c64, 7, 2), nn.MaxPool2d(3, 2, 1), lrn(c64), conv(c64, c64, 1),
                                      conv(c64, c192, 3), lrn(c192), nn.MaxPool2d(3, 2, 1))
        else:
            self.stem = nn.Sequential(conv(in_channels, c64, 3), conv(c64, c64, 1), conv(c64, c192, 3))
        self.blocks = nn.ModuleDict()
        c, aux = c192, {}
        for row in TABLE_1:
            if row == "M":
                self.blocks[f"pool{len(self.blocks)}"] = nn.MaxPool2d(3, 2, 1)
                continue
            module = inception_module(c, row, act, conv_norm, width)
            self.blocks[row[0]] = module
            c = module.out_channels
            if row[0] in AUX_AFTER and aux_weight > 0:
                aux[row[0]] = googlenet_aux(c, num_classes, aux_weight, aux_dropout, scale_width(1024, width),
                                            scale_width(128, width))
        # registered before the main head: initialization treats the last linear layer as the output layer
        self.aux = nn.ModuleDict(aux)
        self.head = ClassifierHead(c, num_classes, "avg", dropout)

    def forward(self, x):
        x = self.stem(x)
        for name, block in self.blocks.items():
            x = block(x)
            if self.training and name in self.aux:
                self.aux[name](x)  # captured by the classify objective's hooks; not part of the output
        return self.head(x)


@register_model("googlenet", "GoogLeNet 2014: 9 Inception modules (1x1/3x3/5x5/pool-proj), two auxiliary "
                "classifiers weighted 0.3 in training", source="thesis Sec. 4.4, Table 4.7 (Szegedy et al. 2014)",
                min_size=16, native_size=224, native_channels=3)
def googlenet(num_classes: int, in_channels: int, image_size: int = 224, stem: str = "auto", act: str = "relu",
              norm: str = "lrn", dropout: float = 0.4, width: float = 1.0, aux_weight: float = 0.3,
              aux_dropout: float = 0.7, init: str = "auto") -> nn.Module:
    """GoogLeNet 2014; ``aux_weight`` weights each auxiliary loss (0: none built), ``norm`` lrn|batch|none."""
    model = GoogLeNet(num_classes, in_channels, image_size, stem, act, norm, dropout, width, float(aux_weight),
                      float(aux_dropout))
    return initialize(model, resolve_init(init, norm))


# ----------------------------------------------------------------------------- Figure 4.3

def naive_module(cin: int, w: int, act: str, norm: str) -> Branches:
    """Thesis Figure 4.3: 1x1, 3x3 and 5x5 convolutions (w filters each) and a 3x3 max pool, concatenated."""
    conv = lambda k: ConvNormAct(cin, w, k, act=act, norm=norm)  # noqa: E731
    return Branches(conv(1), conv(3), conv(5), nn.MaxPool2d(3, 1, 1), out_channels=3 * w + cin)


def naive_inception_net(num_classes: int, in_channels: int, act: str = "relu", norm: str = "batch",
                        dropout: float = 0.0, width: float = 1.0) -> nn.Module:
    """The module study's base network (:class:`cnnlab.models.inception.InceptionFamily`) with naive modules."""
    from .inception import InceptionFamily

    return InceptionFamily("naive", num_classes, in_channels, act, norm, dropout, width, make_module=naive_module)


@register_model("inception-naive", "Naive Inception module (1x1 + 3x3 + 5x5 + max pool, no reductions) in the "
                "module study's base network", source="thesis Figure 4.3", min_size=8, native_size=32,
                native_channels=3)
def inception_naive(num_classes: int, in_channels: int, image_size: int = 32, act: str = "relu", norm: str = "batch",
                    dropout: float = 0.0, width: float = 1.0, init: str = "auto") -> nn.Module:
    model = naive_inception_net(num_classes, in_channels, act, norm, dropout, width)
    return initialize(model, resolve_init(init, norm))
