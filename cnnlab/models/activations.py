"""The activation family, selectable by name for every model (``--act``).

``make_activation(spec, channels)`` returns a fresh module. A spec is a registered name,
optionally followed by ``:`` and comma-separated numeric parameters, e.g. ``lrelu:7.5``
(Leaky ReLU with a = 7.5, the setting of thesis Table 5.2), ``rrelu:0.125,0.333`` or
``swish:1.5``. ``channel_multiplier(spec)`` says how many output channels one input
channel becomes (2 for CReLU, which every builder accounts for).

The functions and where they come from (thesis = deep-conv-nets-tinynet-rrelu-thesis.md,
efficient = efficient-cnn-training-methods.md):

=================  ==========================================================  ==================
name               definition                                                  source
=================  ==========================================================  ==================
relu               max(x, 0)                                                   thesis eq. 5.1
lrelu[:a]          x if x >= 0 else x / a, fixed a in (1, inf), default 5.5    thesis eq. 5.2
prelu              x if x >= 0 else a_c x, a_c learned per channel (init .25)  thesis eq. 5.3-5.5
rrelu[:l,u]        train: x if x >= 0 else a x, a ~ U(l, u) per element;       thesis eq. 5.6-5.7
                   test: a = (l + u) / 2; default l, u = 1/8, 1/3
sigmoid-star       4 sigmoid(x) - 2 (alias ``sigmoid*``)                       thesis eq. 5.36
sigmoid            1 / (1 + exp(-x))                                           thesis eq. 2.6
tanh               tanh(x)                                                     thesis Section 5.2
swish[:beta]       x sigmoid(beta x), fixed beta (default 1)                   efficient Sec. V a
swish-learned      x sigmoid(beta_c x), beta_c learned per channel (init 1)    efficient Sec. V a
silu               x sigmoid(x) (= swish:1)                                    efficient Sec. V a
elu[:alpha]        x if x > 0 else alpha (exp(x) - 1), default alpha 1         efficient Sec. V b
crelu              concat(relu(x), relu(-x)) on channels: doubles them         efficient Sec. V c
gelu               x Phi(x)                                                    Hendrycks & Gimpel
identity           x (no non-linearity: thesis Table 5.2's "batch norm" row)   thesis Table 5.2
=================  ==========================================================  ==================
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import CnnlabError
from ..registry import Registry

ACTIVATIONS: Registry[Callable[..., nn.Module]] = Registry("activation")


# ----------------------------------------------------------------------------- modules

class LeakyReLU(nn.Module):
    """Leaky ReLU in the thesis's form (eq. 5.2): the negative part is divided by a fixed a > 1."""

    def __init__(self, a: float = 5.5):
        super().__init__()
        if not a > 1:
            raise CnnlabError(f"--act lrelu:a needs a > 1 (thesis eq. 5.2: a in (1, inf)), got {a}")
        self.a = float(a)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, 1.0 / self.a)

    def extra_repr(self) -> str:
        return f"a={self.a:g}"


class SigmoidStar(nn.Module):
    """Sigmoid* = 4 sigmoid(x) - 2 (thesis eq. 5.36).

    Scaled so that its slope at 0 is 1 like tanh: the plain sigmoid's slope 1/4 (eq. 5.34)
    shrinks the variance 16-fold per layer (eq. 5.35), breaking the premise of Xavier's and
    Kaiming's initializations.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 4.0 * torch.sigmoid(x) - 2.0


class Swish(nn.Module):
    """Swish x * sigmoid(beta x) (efficient-cnn-training-methods.md Section V a).

    beta is a constant, or with ``learnable`` a parameter per channel (one scalar when
    ``channels`` is None). beta = 0 gives x/2; beta -> inf approaches ReLU.
    """

    def __init__(self, beta: float = 1.0, learnable: bool = False, channels: int | None = None):
        super().__init__()
        if learnable:
            self.beta = nn.Parameter(torch.full((channels or 1,), float(beta)))
        else:
            self.register_buffer("beta", torch.tensor(float(beta)), persistent=False)
        self.learnable = learnable

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        beta = self.beta
        if self.learnable and beta.numel() > 1 and x.dim() > 2:  # per channel of [N, C, H, W]
            beta = beta.view(1, -1, *([1] * (x.dim() - 2)))
        return x * torch.sigmoid(beta * x)

    def extra_repr(self) -> str:
        return f"learnable={self.learnable}" + ("" if self.learnable else f", beta={float(self.beta):g}")


class CReLU(nn.Module):
    """Concatenated ReLU: [relu(x), relu(-x)] along the channel dimension (doubles the channels).

    Keeps the negative phase that ReLU throws away (efficient-cnn-training-methods.md Section
    V c). Builders give the layer before it half the channels so the block's width is unchanged.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.relu(x), F.relu(-x)], dim=1)


# ----------------------------------------------------------------------------- registry

def _add(name: str, factory: Callable[..., nn.Module], description: str, params: tuple[str, ...] = (),
         channel_multiplier: int = 1) -> None:
    """Register ``factory(channels, *params)``; ``params`` names the numeric spec parameters."""
    ACTIVATIONS.add(name, factory, description, params=params, channel_multiplier=channel_multiplier)


def _rrelu(c, lower=1 / 8, upper=1 / 3):
    if not 0 <= lower < upper < 1:
        raise CnnlabError(f"--act rrelu:l,u needs 0 <= l < u < 1 (thesis eq. 5.7), got l={lower}, u={upper}")
    return nn.RReLU(lower, upper)  # train: slope ~ U(l, u) per element; eval: (l + u) / 2


_add("relu", lambda c: nn.ReLU(inplace=True), "ReLU max(x, 0) (thesis eq. 5.1)")
_add("lrelu", lambda c, a=5.5: LeakyReLU(a), "Leaky ReLU, negative part x/a, a fixed (thesis eq. 5.2)", ("a",))
_add("prelu", lambda c: nn.PReLU(c or 1, init=0.25), "Parametric ReLU, slope learned per channel (thesis eq. 5.3)")
_add("rrelu", _rrelu, "Randomized leaky ReLU, slope ~ U(l, u) in training (thesis eq. 5.6-5.7)", ("l", "u"))
_add("sigmoid-star", lambda c: SigmoidStar(), "Sigmoid* = 4 sigmoid(x) - 2 (thesis eq. 5.36)")
_add("sigmoid*", lambda c: SigmoidStar(), "alias of sigmoid-star (thesis eq. 5.36)")
_add("sigmoid", lambda c: nn.Sigmoid(), "logistic sigmoid (thesis eq. 2.6)")
_add("tanh", lambda c: nn.Tanh(), "hyperbolic tangent (thesis Section 5.2)")
_add("swish", lambda c, beta=1.0: Swish(beta), "Swish x sigmoid(beta x), fixed beta (efficient Sec. V a)",
     ("beta",))
_add("swish-learned", lambda c, beta=1.0: Swish(beta, learnable=True, channels=c),
     "Swish with beta learned per channel (efficient Sec. V a)", ("beta",))
_add("silu", lambda c: nn.SiLU(), "x sigmoid(x), Swish with beta = 1")
_add("elu", lambda c, alpha=1.0: nn.ELU(alpha), "exponential linear unit (efficient Sec. V b)", ("alpha",))
_add("crelu", lambda c: CReLU(), "concatenated ReLU [relu(x), relu(-x)], doubles channels (efficient Sec. V c)",
     channel_multiplier=2)
_add("gelu", lambda c: nn.GELU(), "Gaussian error linear unit x Phi(x)")
_add("identity", lambda c: nn.Identity(), "no non-linearity (thesis Table 5.2, 'batch norm' alone)")


def parse_activation(spec: str) -> tuple[str, tuple[float, ...]]:
    """``"lrelu:7.5"`` -> ``("lrelu", (7.5,))``; raises :class:`CnnlabError` naming ``--act``."""
    name, _, args = str(spec).strip().partition(":")
    entry = ACTIVATIONS.entry(name.strip())
    try:
        values = tuple(float(v) for v in args.split(",") if v.strip()) if args else ()
    except ValueError:
        raise CnnlabError(f"--act {spec!r}: parameters after ':' must be numbers") from None
    params = entry.meta["params"]
    if len(values) > len(params):
        takes = f"parameters ({', '.join(params)})" if params else "no parameters"
        raise CnnlabError(f"--act {spec!r}: {entry.name} takes {takes}")
    return entry.name, values


def make_activation(spec: str, channels: int | None = None) -> nn.Module:
    """A new activation module; ``channels`` sizes per-channel parameters (PReLU, learned Swish)."""
    name, values = parse_activation(spec)
    return ACTIVATIONS.get(name)(channels, *values)


def channel_multiplier(spec: str) -> int:
    """Output channels per input channel (CReLU concatenates relu(x), relu(-x) and doubles them)."""
    return ACTIVATIONS.entry(parse_activation(spec)[0]).meta.get("channel_multiplier", 1)


def check_activation(spec: str) -> str:
    """Validate a spec (name and parameters) early, e.g. when a config is read; returns it lowercased."""
    make_activation(spec, 1)
    return str(spec).strip().lower()


__all__ = ["ACTIVATIONS", "CReLU", "LeakyReLU", "SigmoidStar", "Swish", "channel_multiplier", "check_activation",
           "make_activation", "parse_activation"]
