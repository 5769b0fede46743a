"""Optimizers by name through one factory: ``create_optimizer(name, model, lr=..., **options)``.

PyTorch's own implementations are used where they match the papers' equations:
SGD with momentum is thesis eq. 2.14-2.15 (PyTorch folds the learning rate in after
the velocity, which is the same trajectory for a constant rate), Nesterov is eq. 2.16-2.17
in the Sutskever reformulation, and ``weight_decay`` adds lambda*theta to the gradient
(eq. 2.20-2.22, L2 regularization); AdamW decouples it instead.
"""
from __future__ import annotations

import inspect
from typing import Callable, Iterable

import torch
import torch.nn as nn

from ..errors import CnnlabError
from ..registry import Registry

OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optimizer")


def register_optimizer(name: str, description: str = "", **meta):
    return OPTIMIZERS.register(name, description, **meta)


OPTIMIZERS.add("sgd", torch.optim.SGD, "mini-batch SGD; momentum (eq. 2.14-2.15) and nesterov (eq. 2.16-2.17) options")
OPTIMIZERS.add("adam", torch.optim.Adam, "Adam with bias correction (Kingma & Ba 2015)")
OPTIMIZERS.add("adamw", torch.optim.AdamW, "Adam with decoupled weight decay (Loshchilov & Hutter 2019)")
OPTIMIZERS.add("rmsprop", torch.optim.RMSprop, "RMSprop (Tieleman & Hinton 2012)")
OPTIMIZERS.add("adagrad", torch.optim.Adagrad, "Adagrad (Duchi et al. 2011)")
OPTIMIZERS.add("adadelta", torch.optim.Adadelta, "Adadelta (Zeiler 2012)")


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
    bad = [k for k in options if k not in accepted]
    if bad:
        known = [k for k in accepted if k not in ("params", "lr", "weight_decay")]
        raise CnnlabError(f"optimizer {name!r} has no option {', '.join(map(repr, bad))} (its options: {', '.join(known)})")
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


def momentum_options(name: str, momentum: float | None, nesterov: bool | None) -> dict:
    """Map the CLI's --momentum/--nesterov onto what each optimizer calls them."""
    name = name.lower()
    if name == "sgd":
        return {"momentum": momentum or 0.0, "nesterov": bool(nesterov) and bool(momentum)}
    if name == "rmsprop":
        return {"momentum": momentum or 0.0}
    return {}
