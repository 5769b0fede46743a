"""Residual networks (He et al. 2015/2016) with optional stochastic depth (Huang et al. 2016).

A residual block computes h = act(shortcut(x) + F(x)) (sadie-stochastic-depth-energy-model.md
eq. 3.1): the identity path lets gradients reach early layers undiminished, so depth stops
hurting optimization.

* CIFAR-style ``resnet20/32/56/110``: depth 6n + 2, three stages of n basic blocks (two 3x3
  convolutions) with 16, 32, 64 filters on 32x32 inputs; when a stage halves the resolution
  the shortcut subsamples and zero-pads the channels (He et al.'s option A, no parameters),
  giving their 0.27M / 0.46M / 0.85M / 1.7M parameters. ``resnet164``: depth 9n + 2 with
  bottleneck blocks (1x1 reduce, 3x3, 1x1 x4 expand) and projection shortcuts, 1.7M parameters
  (He et al. 2016). ``shortcut="A"|"B"`` overrides the shortcut type.
* ImageNet-style ``resnet18/34`` (basic blocks) and ``resnet50/101/152`` (bottlenecks, stride
  on the 3x3 as in torchvision): 7x7/2 stem + 3x3/2 max pooling, stages of 64-512 filters,
  projection shortcuts (option B), global average pooling.

**Stochastic depth** (option ``stochastic_depth``, the drop probability of the last block
1 - p_L; Huang et al. use p_L = 0.5): during training block l keeps its residual branch with
survival probability p_l = 1 - (l / L)(1 - p_L), decaying linearly with depth (sadie eq. 3.2);
a dropped block is the identity (its shortcut) for the whole mini-batch and costs no compute.
At test time every block runs and its residual branch is scaled by p_l, the expected value
(sadie Section 3.1: "we keep the output of all neurons active in the process of testing").
The per-block probabilities can be set directly (option ``survival_probs``, or
``model.set_survival_probs``) so a prior such as sadie's Dirichlet rule (eq. 3.3) can replace the
linear one.

The activation follows each convolution inside the residual branch; the activation after
the addition must keep the width for the next identity shortcut, so for channel-doubling
activations (CReLU) ReLU is used there. Weights start from He et al.'s initialization
(``kaiming-normal``, thesis eq. 5.32).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import CnnlabError
from .activations import channel_multiplier, make_activation
from .init import initialize
from .layers import ConvNormAct, check_norm, make_norm, parse_floats, scale_width
from .registry import register_model


def _conv_norm(cin: int, cout: int, kernel: int, stride: int, norm: str) -> nn.Sequential:
    """conv -> norm without activation (the last layer of a residual branch)."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=norm != "batch"), make_norm(norm, cout))


class PadShortcut(nn.Module):
    """He et al.'s option A: subsample by ``stride`` and zero-pad the new channels (no parameters)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.pad, self.stride = cout - cin, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.pad))


class ResidualBlock(nn.Module):
    """act(shortcut(x) + scale * F(x)) with stochastic depth (Huang et al. 2016).

    ``survival_prob`` p: in training F runs with probability p (for the whole batch), else the
    block is its shortcut; in evaluation F always runs and is scaled by p.
    """

    def __init__(self, residual: nn.Module, shortcut: nn.Module, out_channels: int, act: str):
        super().__init__()
        self.residual, self.shortcut = residual, shortcut
        self.act = make_activation(act if channel_multiplier(act) == 1 else "relu", out_channels)
        self.survival_prob = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = self.shortcut(x)
        p = self.survival_prob
        if self.training:
            if p < 1.0 and torch.rand(()).item() >= p:  # dropped for this whole mini-batch: act(shortcut(x))
                return self.act(identity.clone() if identity is x else identity)  # (the act may be in place)
            return self.act(identity + self.residual(x))
        out = self.residual(x)
        return self.act(identity + (out * p if p != 1.0 else out))

    def extra_repr(self) -> str:
        return f"survival_prob={self.survival_prob:g}"


def basic_block(cin: int, cout: int, stride: int, act: str, norm: str, shortcut: str) -> ResidualBlock:
    """Two 3x3 convolutions (He et al. 2015 Fig. 2 left)."""
    residual = nn.Sequential(ConvNormAct(cin, cout, 3, stride, act=act, norm=norm), _conv_norm(cout, cout, 3, 1, norm))
    return ResidualBlock(residual, _shortcut(cin, cout, stride, norm, shortcut), cout, act)


def bottleneck_block(cin: int, mid: int, stride: int, act: str, norm: str, shortcut: str) -> ResidualBlock:
    """1x1 reduce -> 3x3 (carrying the stride) -> 1x1 expand to 4 * mid (He et al. 2015 Fig. 5 right)."""
    cout = 4 * mid
    residual = nn.Sequential(ConvNormAct(cin, mid, 1, act=act, norm=norm),
                             ConvNormAct(mid, mid, 3, stride, act=act, norm=norm),
                             _conv_norm(mid, cout, 1, 1, norm))
    return ResidualBlock(residual, _shortcut(cin, cout, stride, norm, shortcut), cout, act)


def _shortcut(cin: int, cout: int, stride: int, norm: str, kind: str) -> nn.Module:
    if cin == cout and stride == 1:
        return nn.Identity()
    if kind == "A" and cout >= cin:
        return PadShortcut(cin, cout, stride)
    return _conv_norm(cin, cout, 1, stride, norm)  # option B: 1x1 projection


class ResNet(nn.Module):
    def __init__(self, block: str, stage_blocks: list[int], stage_widths: list[int], num_classes: int,
                 in_channels: int, stem: str, act: str = "relu", norm: str = "batch", dropout: float = 0.0,
                 shortcut: str = "B"):
        super().__init__()
        check_norm(norm)
        if shortcut not in ("A", "B"):
            raise CnnlabError(f"resnet: option shortcut must be 'A' (zero-pad) or 'B' (projection), got {shortcut!r}")
        c = stage_widths[0]
        if stem == "imagenet":
            self.stem = nn.Sequential(ConvNormAct(in_channels, c, 7, 2, act=act, norm=norm), nn.MaxPool2d(3, 2, 1))
        else:
            self.stem = ConvNormAct(in_channels, c, 3, act=act, norm=norm)
        blocks: list[ResidualBlock] = []
        for i, (n, w) in enumerate(zip(stage_blocks, stage_widths)):
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                if block == "basic":
                    blocks.append(basic_block(c, w, stride, act, norm, shortcut))
                    c = w
                else:
                    blocks.append(bottleneck_block(c, w, stride, act, norm, shortcut))
                    c = 4 * w
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.fc(self.dropout(self.pool(x).flatten(1)))

    # --- stochastic depth: one survival probability per residual block, in ``self.blocks`` order
    @property
    def survival_probs(self) -> list[float]:
        return [b.survival_prob for b in self.blocks]

    def set_survival_probs(self, probs) -> None:
        """Set p_l for every residual block (a list with one probability in (0, 1] per block)."""
        probs = parse_floats(probs, "survival_probs")
        if len(probs) != len(self.blocks):
            raise CnnlabError(f"survival_probs needs one probability per residual block ({len(self.blocks)}), "
                              f"got {len(probs)}")
        if any(not 0 < p <= 1 for p in probs):
            raise CnnlabError(f"survival_probs must be in (0, 1], got {list(probs)}")
        for b, p in zip(self.blocks, probs):
            b.survival_prob = float(p)


def linear_decay(num_blocks: int, drop_last: float) -> list[float]:
    """Huang et al.'s rule p_l = 1 - (l / L)(1 - p_L), l = 1..L, with 1 - p_L = ``drop_last``."""
    if not 0 <= drop_last < 1:
        raise CnnlabError(f"resnet: option stochastic_depth (1 - p_L) must be in [0, 1), got {drop_last}")
    return [1 - (l / num_blocks) * drop_last for l in range(1, num_blocks + 1)]


def _finish(model: ResNet, stochastic_depth: float, survival_probs, init: str) -> ResNet:
    if survival_probs is not None:
        if stochastic_depth:
            raise CnnlabError("resnet: give either stochastic_depth or survival_probs, not both")
        model.set_survival_probs(survival_probs)
    else:
        model.set_survival_probs(linear_decay(len(model.blocks), float(stochastic_depth)))
    return initialize(model, init)


def _register_cifar(depth: int) -> None:
    bottleneck = depth == 164
    n = (depth - 2) // 9 if bottleneck else (depth - 2) // 6
    kind = "bottleneck, 9n+2" if bottleneck else "basic blocks, 6n+2"

    @register_model(f"resnet{depth}", f"CIFAR ResNet-{depth} ({kind}, n={n}; 16-32-64 filters)",
                    source="He et al. 2015/2016; sadie Sec. 3.1", min_size=8, native_size=32, native_channels=3)
    def builder(num_classes: int, in_channels: int, image_size: int = 32, act: str = "relu", norm: str = "batch",
                dropout: float = 0.0, width: float = 1.0, stochastic_depth: float = 0.0, survival_probs=None,
                shortcut: str = "B" if bottleneck else "A", init: str = "kaiming-normal") -> nn.Module:
        widths = [scale_width(w, width) for w in (16, 32, 64)]
        model = ResNet("bottleneck" if bottleneck else "basic", [n] * 3, widths, num_classes, in_channels, "cifar",
                       act, norm, dropout, str(shortcut).upper())
        return _finish(model, stochastic_depth, survival_probs, init)


def _register_imagenet(depth: int, block: str, stages: list[int]) -> None:
    @register_model(f"resnet{depth}", f"ImageNet ResNet-{depth} ({block} blocks {'-'.join(map(str, stages))})",
                    source="He et al. 2015 Table 1", min_size=32, native_size=224, native_channels=3)
    def builder(num_classes: int, in_channels: int, image_size: int = 224, act: str = "relu", norm: str = "batch",
                dropout: float = 0.0, width: float = 1.0, stochastic_depth: float = 0.0, survival_probs=None,
                shortcut: str = "B", init: str = "kaiming-normal") -> nn.Module:
        widths = [scale_width(w, width) for w in (64, 128, 256, 512)]
        model = ResNet(block, stages, widths, num_classes, in_channels, "imagenet", act, norm, dropout,
                       str(shortcut).upper())
        return _finish(model, stochastic_depth, survival_probs, init)


for _depth in (20, 32, 56, 110, 164):
    _register_cifar(_depth)
for _depth, _block, _stages in ((18, "basic", [2, 2, 2, 2]), (34, "basic", [3, 4, 6, 3]),
                                (50, "bottleneck", [3, 4, 6, 3]), (101, "bottleneck", [3, 4, 23, 3]),
                                (152, "bottleneck", [3, 8, 36, 3])):
    _register_imagenet(_depth, _block, _stages)
