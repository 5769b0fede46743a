"""Deeply supervised nets (thesis Section 4.4: "multiple linear classifiers at different depths",
Lee et al. 2014).

A plain stack of 3x3 convolution stages (VGG-like, ``stages`` = filters per stage, two
convolutions each, 2x2/2 max pooling between stages) with a companion classifier -- global
average pooling and a linear layer -- after every stage but the last, and the main classifier
after the last. In training the loss is the main cross-entropy plus ``aux_weight`` times each
companion's (:mod:`cnnlab.models.auxiliary`); at test time only the main classifier counts.

Lee et al. use squared hinge losses and let the companion weights decay to zero over training;
here the companions use the same softmax cross-entropy as the main output with a constant weight
(``aux_weight``, default 0.3 as GoogLeNet's), so the same ``classify`` objective trains both
``googlenet`` and ``dsn``. ``aux_weight=0`` builds the same network without companions: the
control of a "does deep supervision help" comparison.
"""
from __future__ import annotations

import torch.nn as nn

from ..errors import CnnlabError
from .auxiliary import pooled_linear
from .init import initialize, resolve_init
from .layers import ClassifierHead, ConvNormAct, check_norm, parse_floats, scale_width
from .registry import register_model


class DeeplySupervisedNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, stages: tuple[int, ...] = (64, 128, 256), convs: int = 2,
                 act: str = "relu", norm: str = "batch", dropout: float = 0.0, width: float = 1.0,
                 aux_weight: float = 0.3):
        super().__init__()
        check_norm(norm)
        if aux_weight < 0:
            raise CnnlabError(f"dsn: option aux_weight must be >= 0 (0: no companion classifiers), got {aux_weight}")
        blocks, aux = [], []
        c = in_channels
        for i, filters in enumerate(stages):
            out = scale_width(filters, width)
            layers: list[nn.Module] = [nn.MaxPool2d(2, 2, ceil_mode=True)] if i else []
            for _ in range(convs):
                layers.append(ConvNormAct(c, out, 3, act=act, norm=norm))
                c = out
            blocks.append(nn.Sequential(*layers))
            if i < len(stages) - 1 and aux_weight > 0:
                aux.append(pooled_linear(c, num_classes, aux_weight))
        self.blocks = nn.ModuleList(blocks)
        self.aux = nn.ModuleList(aux)  # before the main head: the last linear layer is the output layer for init
        self.head = ClassifierHead(c, num_classes, "avg", dropout)

    def forward(self, x):
        for i, block in enumerate(self.blocks):
            x = block(x)
            if self.training and i < len(self.aux):
                self.aux[i](x)  # captured by the classify objective's hooks
        return self.head(x)


@register_model("dsn", "Deeply supervised net: 3x3 conv stages with a companion classifier after each stage "
                "(weighted in training)", source="thesis Sec. 4.4 (Lee et al. 2014)", min_size=8, native_size=32,
                native_channels=3)
def dsn(num_classes: int, in_channels: int, image_size: int = 32, stages="64,128,256", convs: int = 2,
        act: str = "relu", norm: str = "batch", dropout: float = 0.0, width: float = 1.0, aux_weight: float = 0.3,
        init: str = "auto") -> nn.Module:
    """``stages``: filters per stage (e.g. 64,128,256); ``convs``: 3x3 convolutions per stage."""
    widths = parse_floats(stages, "stages")
    if not widths or any(w < 1 or not float(w).is_integer() for w in widths) or int(convs) < 1:
        raise CnnlabError(f"model 'dsn': option stages must be integers like 64,128,256 and convs >= 1, "
                          f"got stages={stages!r} convs={convs!r}")
    model = DeeplySupervisedNet(num_classes, in_channels, tuple(int(w) for w in widths), int(convs), act, norm,
                                dropout, width, float(aux_weight))
    return initialize(model, resolve_init(init, norm))
