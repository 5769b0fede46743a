"""The constrained-time rules (thesis Section 4.5, He & Sun 2014) as networks whose costs can be compared.

Thesis eq. 4.7 measures a network's time as sum_l n_{l-1} s_l^2 n_l m_l^2. Its rules: depth is
important, so at equal cost replace a 5x5 convolution by two 3x3 (or a 3x3 by two 2x2); fewer
filters are a fair price for more depth. ``cnnlab models --info NAME`` prints each network's
eq. 4.7 complexity against AlexNet's (the Table 4.7 column), parameters, size and the
activation memory of a training batch -- the figures the rules trade against each other.

* ``rf-stack`` (efficient-cnn Section VII a's argument, and VGG's): ``kernels=7`` is one 7x7
  convolution with C filters, ``kernels=3,3,3`` three stacked 3x3 ones -- the same 7x7 receptive
  field -- behind the same 1x1 stem and classifier. Three 3x3 layers cost 27 C^2 multiply-adds
  per pixel and weights against 49 C^2 for the 7x7, and add two non-linearities
  (tests/test_zoo_constrained.py checks the figures, docs/models.md shows them).
* ``alexnet-3x3`` (rule 1): AlexNet (thesis Table 4.2) with its 5x5 convolution replaced by two
  3x3 convolutions at the same eq. 4.7 cost: the middle layer gets
  m = 25 n_in n_out / (9 (n_in + n_out)) filters (194 for 96 -> 256) so 9 n_in m + 9 m n_out
  equals the 5x5 layer's 25 n_in n_out.
* ``alexnet-2x2`` (the thesis's own modification, Section 4.5: "one 7x7 convolutional layer
  and 10 2x2 convolutional layers without increasing complexity"): 7x7/4 conv 96 (56x56),
  3x3/2 max pool (27x27), four 2x2 convolutions with 192 filters, 3x3/2 max pool (13x13), six
  2x2 convolutions with 384 filters, 3x3/2 max pool (6x6), then AlexNet's FC 4096 - FC 4096 -
  classifier. The thesis gives only the layer counts; the widths are chosen so that eq. 4.7 stays
  below the single-GPU AlexNet of Table 4.2 (0.9x), which reproduces what it reports next: more
  parameters (the wider last map feeds FC 4096) and much more activation memory than AlexNet.
  2x2 convolutions alternate padding 0 and 1 so each pair keeps the map size.
"""
from __future__ import annotations

import torch.nn as nn

from ..errors import CnnlabError
from .activations import channel_multiplier
from .alexnet import AlexNet
from .init import initialize, resolve_init
from .layers import (ClassifierHead, ConvNormAct, check_norm, linear_act, make_norm, out_hw, parse_floats,
                     scale_width)
from .registry import register_model


# ----------------------------------------------------------------------------- receptive-field stacks

class ReceptiveFieldStack(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, kernels: tuple[int, ...], channels: int = 64,
                 act: str = "relu", norm: str = "batch", dropout: float = 0.0):
        super().__init__()
        check_norm(norm)
        layers = [ConvNormAct(in_channels, channels, 1, act=act, norm=norm)]  # the same cheap stem for every stack
        layers += [ConvNormAct(channels, channels, k, act=act, norm=norm) for k in kernels]
        self.features = nn.Sequential(*layers)
        self.head = ClassifierHead(channels, num_classes, "avg", dropout)

    def forward(self, x):
        return self.head(self.features(x))


@register_model("rf-stack", "Stacked convolutions with one receptive field: kernels=7 (one 7x7) vs kernels=3,3,3",
                source="efficient-cnn Sec. VII a; thesis Sec. 4.5 rule 1", min_size=8, native_size=32,
                native_channels=3)
def rf_stack(num_classes: int, in_channels: int, image_size: int = 32, kernels="3,3,3", channels: int = 64,
             act: str = "relu", norm: str = "batch", dropout: float = 0.0, init: str = "auto") -> nn.Module:
    """``kernels``: the odd kernel sizes of the stacked C -> C convolutions (receptive field 1 + sum(k - 1))."""
    ks = parse_floats(kernels, "kernels")
    if not ks or any(k < 1 or k % 2 == 0 or not float(k).is_integer() for k in ks):
        raise CnnlabError(f"model 'rf-stack': option kernels must be odd sizes like 3,3,3 or 7, got {kernels!r}")
    model = ReceptiveFieldStack(num_classes, in_channels, tuple(int(k) for k in ks), int(channels), act, norm,
                               dropout)
    return initialize(model, resolve_init(init, norm))


# ----------------------------------------------------------------------------- AlexNet under the rules

def equal_cost_middle(n_in: int, n_out: int, multiple: int = 2) -> int:
    """Filters m of the first of two 3x3 layers so that 9 n_in m + 9 m n_out = 25 n_in n_out (one 5x5 layer)."""
    m = 25 * n_in * n_out / (9 * (n_in + n_out))
    return max(multiple, int(m // multiple) * multiple)


@register_model("alexnet-3x3", "AlexNet with the 5x5 convolution replaced by two 3x3 at equal cost (eq. 4.7)",
                source="thesis Sec. 4.5 rule 1 (He & Sun 2014)", min_size=63, native_size=224, native_channels=3)
def alexnet_3x3(num_classes: int, in_channels: int, image_size: int = 224, act: str = "relu", norm: str = "lrn",
                dropout: float = 0.5, width: float = 1.0, init: str = "auto") -> nn.Module:
    model = AlexNet(num_classes, in_channels, image_size, act, norm, dropout, width, 1)
    i, conv5 = next((i, m) for i, m in enumerate(model.features)
                    if isinstance(m, nn.Conv2d) and m.kernel_size == (5, 5))
    mult = channel_multiplier(act)
    c_in, c_out = conv5.in_channels, conv5.out_channels  # conv outputs (CReLU doubles them after the activation)
    mid = equal_cost_middle(c_in, c_out * mult) // mult
    model.features[i] = nn.Sequential(
        nn.Conv2d(c_in, mid, 3, 1, 1, bias=norm != "batch"), make_norm(norm if norm == "batch" else "none", mid),
        _act(act, mid), nn.Conv2d(mid * mult, c_out, 3, 1, 1, bias=conv5.bias is not None))
    return initialize(model, resolve_init(init, norm))


def _act(act: str, channels: int) -> nn.Module:
    from .activations import make_activation

    return make_activation(act, channels)


class AlexNet2x2(nn.Module):
    STAGES = ((192, 4), (384, 6))  # (filters, 2x2 convolutions) at 27x27 and 13x13

    def __init__(self, num_classes: int, in_channels: int, image_size: int | tuple[int, int] = 224,
                 act: str = "relu", norm: str = "lrn", dropout: float = 0.5, width: float = 1.0):
        super().__init__()
        check_norm(norm)
        conv_norm = "batch" if norm == "batch" else "none"
        lrn = (lambda c: make_norm("lrn", c)) if norm == "lrn" else (lambda c: nn.Identity())  # noqa: E731
        c = scale_width(96, width)
        layers: list[nn.Module] = [ConvNormAct(in_channels, c, 7, 4, 3, act=act, norm=conv_norm),
                                   nn.MaxPool2d(3, 2), lrn(c)]
        for filters, n in self.STAGES:
            out = scale_width(filters, width)
            for j in range(n):
                layers.append(ConvNormAct(c, out, 2, 1, j % 2, act=act, norm=conv_norm))
                c = out
            layers.append(nn.MaxPool2d(3, 2))
            if filters == self.STAGES[0][0]:
                layers.append(lrn(c))
        self.features = nn.Sequential(*layers)
        h, w = out_hw(image_size, 7, 4, 3)  # the 2x2 pairs keep the map size; three 3x3/2 max poolings
        for _ in range(3):
            h, w = out_hw((h, w), 3, 2)
        fc = scale_width(4096, width)
        self.classifier = nn.Sequential(nn.Flatten(), *linear_act(c * h * w, fc, act, dropout, norm),
                                        *linear_act(fc, fc, act, dropout, norm), nn.Linear(fc, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


@register_model("alexnet-2x2", "AlexNet remade as one 7x7 and ten 2x2 convolutions at <= AlexNet's eq. 4.7 cost",
                source="thesis Sec. 4.5, Table 4.7", min_size=63, native_size=224, native_channels=3)
def alexnet_2x2(num_classes: int, in_channels: int, image_size: int = 224, act: str = "relu", norm: str = "lrn",
                dropout: float = 0.5, width: float = 1.0, init: str = "auto") -> nn.Module:
    model = AlexNet2x2(num_classes, in_channels, image_size, act, norm, dropout, width)
    return initialize(model, resolve_init(init, norm))
