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
``model.set_survival_probs``).

**Dirichlet survival** (sadie eq. 3.3-3.4, option ``survival="dirichlet"``): eq. 3.3 puts a draw
from a Dirichlet prior where the linear rule has its constant p_L. As printed it uses the
density value, which is not a probability; our reading (docs/sadie.md) draws, once per
mini-batch, the final survival probability from a Dirichlet over K = 2 outcomes, i.e. a Beta,
with concentration ``dirichlet_lambda`` (lambda; the paper settles on 50) and mean the
configured p_L: D ~ Beta(lambda p_L, lambda (1 - p_L)), then p_l = 1 - (l / L)(1 - D) for every
block of that batch. E[D] = p_L, so each block's average survival is the linear rule's, and
Var[D] = p_L (1 - p_L) / (lambda + 1): lambda -> infinity is exactly the linear rule (Huang et
al.), small lambda makes whole batches run much shallower or deeper than average (the drops
of different blocks become positively correlated). At test time every residual branch is
scaled by its expected survival probability, the linear rule.

**CIFAR-style ResNet-152** (``resnet152-cifar``): 6n + 2 with basic blocks, n = 25 (75 blocks,
16-32-64 filters); 9n + 2 bottlenecks cannot give 152 (n would be 16.7). It runs on 28x28
(MNIST: 28 -> 14 -> 7) and 32x32 inputs. Option ``conv_dropout`` puts dropout after every
convolution inside a residual branch that is followed by an activation (between the two 3x3
convolutions of a basic block, as in wide ResNets), never on the identity path (sadie
Sec. 4.1: "a dropout layer after the convolutional layer").

**The paper's networks**: ``stochasticnet110/152`` are Huang et al.'s stochastic-depth ResNets
(p_L = 0.5, linear rule, softmax classifier); ``sadie110/152`` add Dirichlet survival
(lambda = 50), dropout after the convolutions (0.1; the paper gives no rate) and the energy
head (:mod:`cnnlab.models.energy`).

The activation follows each convolution inside the residual branch; the activation after
the addition must keep the width for the next identity shortcut, so for channel-doubling
activations (CReLU) ReLU is used there. Weights start from He et al.'s initialization
(``kaiming-normal``, thesis eq. 5.32).
"""
from __future__ import annotations

import math

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

    def forward(self, x: torch.Tensor, survival_prob: float | None = None) -> torch.Tensor:
        """``survival_prob``: this mini-batch's p_l in training (a Dirichlet draw); default ``self.survival_prob``."""
        identity = self.shortcut(x)
        p = self.survival_prob
        if self.training:
            p = p if survival_prob is None else survival_prob
            if p < 1.0 and torch.rand(()).item() >= p:  # dropped for this whole mini-batch: act(shortcut(x))
                return self.act(identity.clone() if identity is x else identity)  # (the act may be in place)
            return self.act(identity + self.residual(x))
        out = self.residual(x)
        return self.act(identity + (out * p if p != 1.0 else out))

    def extra_repr(self) -> str:
        return f"survival_prob={self.survival_prob:g}"


def _after_conv_dropout(conv_dropout: float) -> list[nn.Module]:
    """sadie Sec. 4.1's dropout after a convolution (and its norm and activation); nothing when 0."""
    return [nn.Dropout(conv_dropout)] if conv_dropout else []


def basic_block(cin: int, cout: int, stride: int, act: str, norm: str, shortcut: str,
                conv_dropout: float = 0.0) -> ResidualBlock:
    """Two 3x3 convolutions (He et al. 2015 Fig. 2 left), optionally with dropout between them."""
    residual = nn.Sequential(ConvNormAct(cin, cout, 3, stride, act=act, norm=norm), *_after_conv_dropout(conv_dropout),
                             _conv_norm(cout, cout, 3, 1, norm))
    return ResidualBlock(residual, _shortcut(cin, cout, stride, norm, shortcut), cout, act)


def bottleneck_block(cin: int, mid: int, stride: int, act: str, norm: str, shortcut: str,
                     conv_dropout: float = 0.0) -> ResidualBlock:
    """1x1 reduce -> 3x3 (carrying the stride) -> 1x1 expand to 4 * mid (He et al. 2015 Fig. 5 right)."""
    cout = 4 * mid
    residual = nn.Sequential(ConvNormAct(cin, mid, 1, act=act, norm=norm), *_after_conv_dropout(conv_dropout),
                             ConvNormAct(mid, mid, 3, stride, act=act, norm=norm), *_after_conv_dropout(conv_dropout),
                             _conv_norm(mid, cout, 1, 1, norm))
    return ResidualBlock(residual, _shortcut(cin, cout, stride, norm, shortcut), cout, act)


def _shortcut(cin: int, cout: int, stride: int, norm: str, kind: str) -> nn.Module:
    if cin == cout and stride == 1:
        return nn.Identity()
    if kind == "A" and cout >= cin:
        return PadShortcut(cin, cout, stride)
    return _conv_norm(cin, cout, 1, stride, norm)  # option B: 1x1 projection


class DirichletSurvival:
    """sadie eq. 3.3 read as a Beta (two-outcome Dirichlet) draw of p_L per mini-batch (module docstring).

    ``draw()`` returns this batch's [p_1 .. p_L]; ``mean()`` their expectation, the linear rule.
    Draws use torch's global RNG (seeded and saved in checkpoints), so resumed runs repeat them.
    """

    def __init__(self, num_blocks: int, last_survival: float, concentration: float):
        if not 0 < last_survival < 1:
            raise CnnlabError("resnet: survival='dirichlet' needs stochastic_depth (1 - p_L) in (0, 1), "
                              f"got {1 - last_survival:g}")
        if isinstance(concentration, bool) or not isinstance(concentration, (int, float)) or not concentration > 0:
            raise CnnlabError(f"resnet: option dirichlet_lambda must be a number > 0 (inf = the linear rule), "
                              f"got {concentration!r}")
        self.num_blocks, self.last_survival, self.concentration = num_blocks, float(last_survival), float(concentration)
        # on the CPU even when the model is built on another device (or `meta`): one scalar per batch
        self._beta = None if math.isinf(self.concentration) else torch.distributions.Beta(
            torch.tensor(self.concentration * self.last_survival, dtype=torch.float64, device="cpu"),
            torch.tensor(self.concentration * (1 - self.last_survival), dtype=torch.float64, device="cpu"))

    def draw_last(self) -> float:
        """D ~ Beta(lambda p_L, lambda (1 - p_L)); exactly p_L in the limit lambda = inf."""
        return self.last_survival if self._beta is None else float(self._beta.sample())

    def draw(self) -> list[float]:
        return linear_decay(self.num_blocks, 1 - self.draw_last(), check=False)

    def mean(self) -> list[float]:
        return linear_decay(self.num_blocks, 1 - self.last_survival)

    def __repr__(self) -> str:
        return f"DirichletSurvival(blocks={self.num_blocks}, p_L={self.last_survival:g}, lambda={self.concentration:g})"


class ResNet(nn.Module):
    def __init__(self, block: str, stage_blocks: list[int], stage_widths: list[int], num_classes: int,
                 in_channels: int, stem: str, act: str = "relu", norm: str = "batch", dropout: float = 0.0,
                 shortcut: str = "B", conv_dropout: float = 0.0):
        super().__init__()
        check_norm(norm)
        if shortcut not in ("A", "B"):
            raise CnnlabError(f"resnet: option shortcut must be 'A' (zero-pad) or 'B' (projection), got {shortcut!r}")
        if not 0 <= conv_dropout < 1:
            raise CnnlabError(f"resnet: option conv_dropout must be in [0, 1), got {conv_dropout!r}")
        self.survival_prior: DirichletSurvival | None = None  # None: the fixed survival_probs in training too
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
                    blocks.append(basic_block(c, w, stride, act, norm, shortcut, conv_dropout))
                    c = w
                else:
                    blocks.append(bottleneck_block(c, w, stride, act, norm, shortcut, conv_dropout))
                    c = 4 * w
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.training and self.survival_prior is not None:  # one draw of eq. 3.3 for the whole mini-batch
            for block, p in zip(self.blocks, self.survival_prior.draw()):
                x = block(x, p)
        else:
            x = self.blocks(x)
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

    def set_dirichlet_survival(self, drop_last: float, concentration: float) -> None:
        """Draw p_L per mini-batch from eq. 3.3's prior (mean 1 - ``drop_last``, ``concentration`` lambda)."""
        self.survival_prior = DirichletSurvival(len(self.blocks), 1 - float(drop_last), concentration)
        self.set_survival_probs(self.survival_prior.mean())  # what evaluation scales by

    def extra_repr(self) -> str:
        return f"survival_prior={self.survival_prior!r}" if self.survival_prior is not None else ""


def linear_decay(num_blocks: int, drop_last: float, check: bool = True) -> list[float]:
    """Huang et al.'s rule p_l = 1 - (l / L)(1 - p_L), l = 1..L, with 1 - p_L = ``drop_last``."""
    if check and not 0 <= drop_last < 1:
        raise CnnlabError(f"resnet: option stochastic_depth (1 - p_L) must be in [0, 1), got {drop_last}")
    return [1 - (l / num_blocks) * drop_last for l in range(1, num_blocks + 1)]


SURVIVAL_RULES = ("linear", "dirichlet")


def _finish(model: ResNet, stochastic_depth: float, survival_probs, init: str, survival: str = "linear",
            dirichlet_lambda: float = 50.0) -> ResNet:
    if survival not in SURVIVAL_RULES:
        raise CnnlabError(f"resnet: option survival must be one of {', '.join(SURVIVAL_RULES)}, got {survival!r}")
    if survival_probs is not None:
        if stochastic_depth:
            raise CnnlabError("resnet: give either stochastic_depth or survival_probs, not both")
        if survival == "dirichlet":
            raise CnnlabError("resnet: survival='dirichlet' draws the probabilities from stochastic_depth's "
                              "linear rule; it cannot be combined with survival_probs")
        model.set_survival_probs(survival_probs)
    elif survival == "dirichlet":
        model.set_dirichlet_survival(float(stochastic_depth), _as_number(dirichlet_lambda, "dirichlet_lambda"))
    else:
        model.set_survival_probs(linear_decay(len(model.blocks), float(stochastic_depth)))
    return initialize(model, init)


def _as_number(value, option: str) -> float:
    """A float from a number or a CLI string ("50", "inf")."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise CnnlabError(f"resnet: option {option} must be a number, got {value!r}") from None


def cifar_resnet(depth: int, num_classes: int, in_channels: int, act: str = "relu", norm: str = "batch",
                 dropout: float = 0.0, width: float = 1.0, stochastic_depth: float = 0.0, survival_probs=None,
                 shortcut: str | None = None, init: str = "kaiming-normal", survival: str = "linear",
                 dirichlet_lambda: float = 50.0, conv_dropout: float = 0.0) -> ResNet:
    """CIFAR-style ResNet-``depth``: 6n + 2 with basic blocks, or 9n + 2 with bottlenecks for depth 164."""
    bottleneck = depth == 164
    n = (depth - 2) // 9 if bottleneck else (depth - 2) // 6
    widths = [scale_width(w, width) for w in (16, 32, 64)]
    shortcut = ("B" if bottleneck else "A") if shortcut is None else str(shortcut).upper()
    model = ResNet("bottleneck" if bottleneck else "basic", [n] * 3, widths, num_classes, in_channels, "cifar",
                   act, norm, dropout, shortcut, float(conv_dropout))
    return _finish(model, stochastic_depth, survival_probs, init, survival, dirichlet_lambda)


def _register_cifar(depth: int, name: str | None = None) -> None:
    bottleneck = depth == 164
    n = (depth - 2) // 9 if bottleneck else (depth - 2) // 6
    kind = "bottleneck, 9n+2" if bottleneck else "basic blocks, 6n+2"

    @register_model(name or f"resnet{depth}", f"CIFAR ResNet-{depth} ({kind}, n={n}; 16-32-64 filters)",
                    source="He et al. 2015/2016; sadie Sec. 3.1", min_size=8, native_size=32, native_channels=3)
    def builder(num_classes: int, in_channels: int, image_size: int = 32, act: str = "relu", norm: str = "batch",
                dropout: float = 0.0, width: float = 1.0, stochastic_depth: float = 0.0, survival_probs=None,
                shortcut: str = "B" if bottleneck else "A", init: str = "kaiming-normal", survival: str = "linear",
                dirichlet_lambda: float = 50.0, conv_dropout: float = 0.0) -> nn.Module:
        return cifar_resnet(depth, num_classes, in_channels, act, norm, dropout, width, stochastic_depth,
                            survival_probs, shortcut, init, survival, dirichlet_lambda, conv_dropout)


def _register_stochasticnet(depth: int) -> None:
    @register_model(f"stochasticnet{depth}", f"StochasticNet-{depth}: CIFAR ResNet-{depth} with stochastic depth "
                    "(p_L = 0.5, linear rule), softmax classifier",
                    source="Huang et al. 2016; sadie Sec. 4 baseline", min_size=8, native_size=32, native_channels=3)
    def builder(num_classes: int, in_channels: int, image_size: int = 32, act: str = "relu", norm: str = "batch",
                dropout: float = 0.0, width: float = 1.0, stochastic_depth: float = 0.5, survival_probs=None,
                shortcut: str = "A", init: str = "kaiming-normal", survival: str = "linear",
                dirichlet_lambda: float = 50.0, conv_dropout: float = 0.0) -> nn.Module:
        return cifar_resnet(depth, num_classes, in_channels, act, norm, dropout, width, stochastic_depth,
                            survival_probs, shortcut, init, survival, dirichlet_lambda, conv_dropout)


SADIE_HEAD = {"hidden": 256, "units": "binary"}


def _register_sadie(depth: int) -> None:
    @register_model(f"sadie{depth}", f"SADIE-{depth}: stochastic-depth CIFAR ResNet-{depth}, Dirichlet survival "
                    "(lambda 50), dropout after the convolutions, energy head",
                    source="sadie Sec. 3, Algorithms 1-2", min_size=8, native_size=32, native_channels=3)
    def builder(num_classes: int, in_channels: int, image_size: int = 32, act: str = "relu", norm: str = "batch",
                dropout: float = 0.0, width: float = 1.0, stochastic_depth: float = 0.5, survival: str = "dirichlet",
                dirichlet_lambda: float = 50.0, conv_dropout: float = 0.1, shortcut: str = "A",
                init: str = "kaiming-normal", head: str = "energy", head_options: dict | None = None) -> nn.Module:
        from .energy import make_head

        model = cifar_resnet(depth, num_classes, in_channels, act, norm, dropout, width, stochastic_depth, None,
                             shortcut, init, survival, dirichlet_lambda, conv_dropout)
        options = {**SADIE_HEAD, **(head_options or {})} if head == "energy" else (head_options or {})
        model.fc = make_head(head, model.fc.in_features, num_classes, **options)  # a ResNet's classifier is fc
        return model


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
_register_cifar(152, "resnet152-cifar")  # "resnet152" is the ImageNet network
for _depth in (110, 152):
    _register_stochasticnet(_depth)
    _register_sadie(_depth)
for _depth, _block, _stages in ((18, "basic", [2, 2, 2, 2]), (34, "basic", [3, 4, 6, 3]),
                                (50, "bottleneck", [3, 4, 6, 3]), (101, "bottleneck", [3, 4, 23, 3]),
                                (152, "bottleneck", [3, 8, 36, 3])):
    _register_imagenet(_depth, _block, _stages)
