"""Optimizers by name through one factory: ``create_optimizer(name, model, lr=..., **options)``.

PyTorch's own implementations are used where they match the papers' equations:
SGD with momentum is thesis eq. 2.14-2.15 (PyTorch folds the learning rate in after
the velocity, which is the same trajectory for a constant rate), Nesterov is eq. 2.16-2.17
in the Sutskever reformulation, and ``weight_decay`` adds lambda*theta to the gradient
(eq. 2.20-2.22, L2 regularization); AdamW decouples it instead. LARS
(:mod:`cnnlab.optim.lars`) and the Adam->SGD switch (:mod:`cnnlab.optim.adam_sgd_switch`)
are our own. docs/optimizers.md lists every name, option and equation.
"""
from __future__ import annotations

import inspect
from typing import Callable, Iterable

import torch
import torch.nn as nn

from ..errors import CnnlabError
from ..registry import Registry, check_options
from .adam_sgd_switch import AdamSGDSwitch
from .lars import LARS

OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optimizer")


def register_optimizer(name: str, description: str = "", **meta):
    return OPTIMIZERS.register(name, description, **meta)


OPTIMIZERS.add("sgd", torch.optim.SGD, "mini-batch SGD; momentum (eq. 2.14-2.15) and nesterov (eq. 2.16-2.17) options")
OPTIMIZERS.add("adam", torch.optim.Adam, "Adam with bias correction (Kingma & Ba 2015)")
OPTIMIZERS.add("adamw", torch.optim.AdamW, "Adam with decoupled weight decay (Loshchilov & Hutter 2019)")
OPTIMIZERS.add("rmsprop", torch.optim.RMSprop, "RMSprop (Tieleman & Hinton 2012)")
OPTIMIZERS.add("adagrad", torch.optim.Adagrad, "Adagrad (Duchi et al. 2011)")
OPTIMIZERS.add("adadelta", torch.optim.Adadelta, "Adadelta (Zeiler 2012)")
OPTIMIZERS.add("adamax", torch.optim.Adamax, "AdaMax, Adam with the infinity norm (Kingma & Ba 2015, Sec. 7)")
OPTIMIZERS.add("nadam", torch.optim.NAdam, "Nadam, Adam with Nesterov momentum (Dozat 2016)")


class Momentum(torch.optim.SGD):
    """SGD with classical momentum, thesis eq. 2.14-2.15 (torch.optim.SGD, nesterov=False)."""

    def __init__(self, params, lr: float = 0.01, momentum: float = 0.9, dampening: float = 0.0,
                 weight_decay: float = 0.0):
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                         nesterov=False)


class NAG(torch.optim.SGD):
    """Nesterov accelerated gradient, thesis eq. 2.16-2.17 (torch.optim.SGD, nesterov=True)."""

    def __init__(self, params, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 0.0):
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=True)


OPTIMIZERS.add("momentum", Momentum)
OPTIMIZERS.add("nag", NAG)
OPTIMIZERS.add("lars", LARS, "LARS: momentum SGD with a layer-wise trust ratio (You, Gitman & Ginsburg 2017)")
OPTIMIZERS.add("adam-sgd-switch", AdamSGDSwitch,
               "Adam, then a k-step blend to momentum SGD at the learned rate (SADIE eq. 3.15-3.17)")

# options given in epochs that only the trainer (which knows steps_per_epoch) can turn into steps
EPOCH_OPTIONS = {"force_switch_epoch": "force_switch_step"}


def is_no_decay(name: str, param: torch.Tensor) -> bool:
    """Biases and normalization parameters (1-D tensors) are usually not weight-decayed."""
    return param.ndim <= 1 or name.endswith(".bias")


def param_groups(model: nn.Module | Iterable, weight_decay: float, decay_norm_bias: bool = False,
                 lr_mults: dict[str, float] | None = None) -> list[dict]:
    """Split parameters into groups: decayed, not decayed (bias/norm), and per-prefix lr multipliers.

    ``lr_mults`` maps a parameter-name prefix (e.g. ``"head"``) to a learning-rate multiplier,
    stored in the group as ``lr_mult`` and applied by the scheduler-independent factory below.
    """
    if not isinstance(model, nn.Module):
        return [{"params": list(model), "weight_decay": weight_decay}]
    groups: dict[tuple[float, float], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        wd = weight_decay if (decay_norm_bias or not is_no_decay(name, p)) else 0.0
        mult = 1.0
        for prefix, m in (lr_mults or {}).items():
            if name.startswith(prefix):
                mult = float(m)
        groups.setdefault((wd, mult), []).append(p)
    return [{"params": ps, "weight_decay": wd, "lr_mult": mult} for (wd, mult), ps in groups.items()]


def create_optimizer(name: str, model: nn.Module | Iterable, lr: float, weight_decay: float = 0.0,
                     decay_norm_bias: bool = False, lr_mults: dict[str, float] | None = None,
                     **options) -> torch.optim.Optimizer:
    """Build a registered optimizer. ``options`` are the optimizer's own keyword arguments
    (momentum, nesterov, betas, eps, alpha, rho, ...); unknown ones raise :class:`CnnlabError`."""
    cls = OPTIMIZERS.get(name)
    accepted = inspect.signature(cls).parameters
    options = {k: v for k, v in options.items() if v is not None}
    for k, to in EPOCH_OPTIONS.items():
        if k in options and to in accepted:
            raise CnnlabError(f"optimizer {name!r}: option {k!r} must be converted to {to!r} by the caller "
                              f"(cnnlab.optim.resolve_epoch_options(options, steps_per_epoch))")
    check_options(cls, options, f"optimizer {name!r}", skip=("params", "lr", "weight_decay"))
    if "betas" in options:
        options["betas"] = tuple(options["betas"])
    if lr <= 0:
        raise CnnlabError(f"--lr must be > 0, got {lr}")
    groups = param_groups(model, weight_decay, decay_norm_bias, lr_mults)
    for g in groups:
        g["lr"] = lr * g.get("lr_mult", 1.0)
    try:
        return cls(groups, lr=lr, **options)
    except (TypeError, ValueError) as e:
        raise CnnlabError(f"optimizer {name!r}: {e}") from e


def resolve_epoch_options(options: dict, steps_per_epoch: int) -> dict:
    """Turn options given in epochs into steps: ``force_switch_epoch=E`` becomes
    ``force_switch_step=round(E * steps_per_epoch)`` (the switch then happens after that many
    optimizer steps, i.e. epoch E, counted from 0, is the first without pure Adam).
    Returns a new dict; other options pass through unchanged."""
    out = dict(options)
    for k, to in EPOCH_OPTIONS.items():
        if out.get(k) is not None:
            if to in options and options[to] is not None:
                raise CnnlabError(f"give {k!r} or {to!r}, not both")
            epochs = float(out.pop(k))
            if epochs <= 0:
                raise CnnlabError(f"{k} must be > 0, got {epochs}")
            out[to] = max(1, round(epochs * steps_per_epoch))
        else:
            out.pop(k, None)
    return out


def momentum_options(name: str, momentum: float | None, nesterov: bool | None) -> dict:
    """Map the CLI's --momentum/--nesterov onto what each optimizer calls them.

    ``momentum=None`` leaves the optimizer's own default (0.9 for momentum, nag, lars and the
    switch's post-switch SGD). --nesterov only applies to ``sgd``."""
    name = name.lower()
    if name == "sgd":
        return {"momentum": momentum or 0.0, "nesterov": bool(nesterov) and bool(momentum)}
    if name == "rmsprop":
        return {"momentum": momentum or 0.0}
    if name in ("momentum", "nag", "lars"):
        return {} if momentum is None else {"momentum": momentum}
    if name == "adam-sgd-switch":
        return {} if momentum is None else {"sgd_momentum": momentum}
    return {}
