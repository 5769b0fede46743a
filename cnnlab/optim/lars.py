"""LARS: layer-wise adaptive rate scaling (You, Gitman & Ginsburg 2017), as a ``torch.optim.Optimizer``.

For every layer (parameter tensor) ``l`` with weights ``w`` and gradient ``g`` the local
learning rate is the trust ratio

    lambda_l = eta * ||w|| / (||g|| + beta * ||w||)

(``eta`` = ``trust_coef``, ``beta`` = the group's ``weight_decay``), and the update is the
paper's Algorithm 1, momentum in the thesis' form (eq. 2.14-2.15, learning rate inside the
velocity)::

    v <- m * v + gamma_t * lambda_l * (g + beta * w)
    w <- w - v

where ``gamma_t`` is the global learning rate (the group's ``lr``, normally following a
polynomial schedule with warm-up: ``--sched poly --sched-options power=2 --warmup-epochs 5``).

Biases and normalization parameters (1-D tensors) are excluded from the adaptation when
``exclude_bias_norm`` is true (the default): they take plain momentum-SGD steps with
``lambda_l = 1``. A parameter group may override this with the key ``lars_exclude`` (True/False).
"""
from __future__ import annotations

from typing import Callable

import torch


class LARS(torch.optim.Optimizer):
    """SGD with momentum and a layer-wise trust ratio ||w|| / (||g|| + beta ||w||) (You et al. 2017)."""

    def __init__(self, params, lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coef: float = 0.001, exclude_bias_norm: bool = True, eps: float = 0.0):
        if lr < 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if trust_coef <= 0:
            raise ValueError(f"trust_coef must be > 0, got {trust_coef}")
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coef=trust_coef,
                        exclude_bias_norm=exclude_bias_norm, eps=eps)
        super().__init__(params, defaults)

    @staticmethod
    def trust_ratio(w: torch.Tensor, g: torch.Tensor, trust_coef: float, weight_decay: float,
                    eps: float = 0.0) -> torch.Tensor:
        """eta * ||w|| / (||g|| + beta ||w|| + eps); 1 where ||w|| or the denominator is zero."""
        w_norm = torch.linalg.vector_norm(w)
        g_norm = torch.linalg.vector_norm(g)
        denom = g_norm + weight_decay * w_norm + eps
        ratio = trust_coef * w_norm / denom.clamp_min(torch.finfo(w_norm.dtype).tiny)
        return torch.where((w_norm > 0) & (denom > 0), ratio, torch.ones_like(ratio))

    def _excluded(self, group: dict, p: torch.Tensor) -> bool:
        flag = group.get("lars_exclude")
        if flag is not None:
            return bool(flag)
        return bool(group["exclude_bias_norm"]) and p.ndim <= 1

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mom, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("LARS does not support sparse gradients")
                g = p.grad
                if self._excluded(group, p):
                    local = 1.0
                else:
                    local = self.trust_ratio(p, g, group["trust_coef"], wd, group["eps"])
                d = g.add(p, alpha=wd) if wd != 0 else g.clone()
                d.mul_(local).mul_(lr)  # gamma_t * lambda_l * (g + beta w)
                if mom != 0:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        state["momentum_buffer"] = buf = d
                    else:
                        buf.mul_(mom).add_(d)
                    d = buf
                p.sub_(d)
        return loss
