"""Blocks shared by the model families.

* ``make_norm``: normalization by name: batch norm (thesis eq. 5.8-5.11), local response
  normalization (thesis eq. 4.1) or none -- the papers compare with and without BN.
* ``ConvNormAct``: conv -> norm -> activation, CReLU-aware.
* ``linear_act``: a fully connected layer + activation (+ dropout), CReLU-aware.
* ``Branches``: parallel paths concatenated on channels (Inception modules, TinyNet).
* ``ClassifierHead``: global pooling + dropout + linear classifier (NiN's global average pooling).
* ``scale_width`` / ``out_side`` / ``out_hw``: width multipliers and feature-map arithmetic (``out_hw``
  applies ``out_side`` to the height and the width of a (H, W) input: non-square images).
* ``auto_stem``: the ImageNet-or-CIFAR stem rule of GoogLeNet and Inception-BN.

CReLU (``channel_multiplier(act) == 2``) doubles the channels its input has, so every block
asks its convolution or linear layer for ``out // 2`` outputs: the block's output width --
and therefore the next layer's shape, the parameter count's meaning and the cost
comparison between activations -- stays what the paper's table says.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..errors import CnnlabError
from ..sizes import as_hw
from .activations import channel_multiplier, make_activation

NORMS = ("batch", "lrn", "none")


def make_norm(norm: str, channels: int) -> nn.Module:
    """Normalization after a convolution: batch norm (thesis eq. 5.8-5.11), LRN (eq. 4.1) or none.

    LRN uses AlexNet's constants n = 5, alpha = 1e-4, beta = 0.75, k = 2 in eq. 4.1,
    b = a / (k + alpha * sum_j a_j^2)^beta. PyTorch divides its ``alpha`` by n, so it is given
    n * alpha to compute eq. 4.1 exactly.
    """
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "lrn":
        return nn.LocalResponseNorm(5, alpha=5 * 1e-4, beta=0.75, k=2.0)
    if norm == "none":
        return nn.Identity()
    raise CnnlabError(f"unknown norm {norm!r} for --norm (choose from {', '.join(NORMS)})")


def check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise CnnlabError(f"unknown norm {norm!r} for --norm (choose from {', '.join(NORMS)})")
    return norm


def scale_width(channels: int, width: float, multiple: int = 2) -> int:
    """``channels * width`` rounded to a multiple of ``multiple`` (at least ``multiple``).

    The default multiple of 2 keeps every width valid for CReLU; grouped layers pass
    ``2 * groups``. With ``width == 1`` the papers' widths (all even) are unchanged.
    """
    if width <= 0:
        raise CnnlabError(f"model option width must be > 0, got {width}")
    return max(multiple, int(round(channels * width / multiple)) * multiple)


def out_side(side: int, kernel: int, stride: int = 1, padding: int = 0, ceil_mode: bool = False) -> int:
    """Output side of a convolution or pooling layer (PyTorch's formula)."""
    span = side + 2 * padding - kernel
    n = (math.ceil(span / stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (n - 1) * stride >= side + padding:  # last window must start inside the input
        n -= 1
    return n


def out_hw(size, kernel: int, stride: int = 1, padding: int = 0, ceil_mode: bool = False) -> tuple[int, int]:
    """Output (H, W) of a square-kernel convolution or pooling layer on an input of ``size`` (a side or
    (H, W)): :func:`out_side` on each dimension, so a flatten-to-FC head sizes its first layer for
    non-square inputs as well (C * H * W, not C * side^2)."""
    h, w = as_hw(size)
    return out_side(h, kernel, stride, padding, ceil_mode), out_side(w, kernel, stride, padding, ceil_mode)


IMAGENET_STEM_MIN = 112  # smallest side for the downsampling (7x7/2 + pools) stem under stem="auto"


def auto_stem(size) -> str:
    """``"imagenet"`` (7x7/2 conv + two 3x3/2 pools: 16x downsampling) when the input's *smaller* side is
    at least :data:`IMAGENET_STEM_MIN`, else ``"cifar"`` (no downsampling). The smaller side decides
    because it is the one the downsampling would shrink first to a map too small for the later
    modules: a 64x320 strip gets the CIFAR stem, as a 64x64 image does."""
    return "imagenet" if min(as_hw(size)) >= IMAGENET_STEM_MIN else "cifar"


class ConvNormAct(nn.Sequential):
    """conv -> norm -> activation; ``out_channels`` is the activation's output (CReLU-aware).

    With CReLU the convolution produces ``out_channels // 2`` maps so the block's output
    width is what the caller asked for, keeping the next layer's shape unchanged. ``groups``
    applies to the convolution's output count, so a depthwise block passes
    ``groups = out_channels // channel_multiplier(act)``. No bias before batch norm (its
    shift beta, eq. 5.11, plays that role).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int | str | None = None, act: str = "relu", norm: str = "batch", groups: int = 1):
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
        self.out_channels = out_channels


def linear_act(in_features: int, out_features: int, act: str, dropout: float = 0.0,
               norm: str = "none") -> list[nn.Module]:
    """Fully connected layer [+ batch norm] + activation (+ dropout after it, AlexNet/VGG style), CReLU-aware.

    With ``norm="batch"`` the hidden FC layers are normalized like the convolutions; without it a
    deep BN network's unnormalized 4096/512-wide head is what diverges first at high learning rates.
    """
    mult = channel_multiplier(act)
    layers: list[nn.Module] = [nn.Linear(in_features, out_features // mult, bias=norm != "batch")]
    if norm == "batch":
        layers.append(nn.BatchNorm1d(out_features // mult))
    layers.append(make_activation(act, out_features // mult))
    if dropout:
        layers.append(nn.Dropout(dropout))
    return layers


class TiedLayer(nn.Module):
    """A layer computed with weights another layer owns (a tied autoencoder's decoder): ``op(x, weight, bias)``
    as a module call, so per-layer forward hooks -- ``models --info``'s multiply-add count -- see it.

    It holds no parameters (the caller passes the shared weight and its own bias), so tying changes neither
    the state_dict keys nor the parameter count. ``op`` is ``F.linear`` or ``F.conv1d``; ``options`` its
    keyword arguments (e.g. ``padding``)."""

    def __init__(self, op, **options):
        super().__init__()
        self.op, self.options = op, options

    def forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return self.op(x, weight, bias, **self.options)


class Branches(nn.Module):
    """Parallel paths on one input, concatenated along channels (Inception, thesis Figure 4.3-4.5)."""

    def __init__(self, *branches: nn.Module, out_channels: int):
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(x) for b in self.branches], dim=1)


class ClassifierHead(nn.Module):
    """Global pooling -> dropout -> linear classifier.

    Global average pooling replaces the flatten + multi-layer perceptron of LeNet/AlexNet
    (Network in Network, thesis Section 4.4), so the network accepts any input size.
    """

    def __init__(self, in_features: int, num_classes: int, pool: str = "avg", dropout: float = 0.0):
        super().__init__()
        if pool not in ("avg", "max"):
            raise CnnlabError(f"model option pool must be 'avg' or 'max', got {pool!r}")
        self.pool = nn.AdaptiveAvgPool2d(1) if pool == "avg" else nn.AdaptiveMaxPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.pool(x).flatten(1)))


def parse_floats(value, option: str) -> tuple[float, ...]:
    """A tuple of floats from a list/tuple or from a CLI string like ``"0.9,0.8"``."""
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    elif isinstance(value, (int, float)):
        value = [value]
    try:
        return tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise CnnlabError(f"model option {option} must be numbers like 0.9,0.8, got {value!r}") from None
