"""Adam -> SGD switching with a buffered transition (SADIE paper Section 3.3, eq. 3.12-3.17).

Phases (``optimizer.phase``):

``"adam"``
    Adam with bias correction (eq. 3.12-3.14; the same arithmetic as ``torch.optim.Adam``)::

        m_t = b1 m_{t-1} + (1 - b1) g_t          v_t = b2 v_{t-1} + (1 - b2) g_t^2
        p_t = -alpha * m_hat_t / (sqrt(v_hat_t) + eps)          theta_t = theta_{t-1} + p_t

    After every Adam step the projection of the step on the gradient (Keskar & Socher 2017)
    and its exponential average are updated (eq. 3.15), over all parameters together::

        gamma_t = p_t.p_t / (-p_t.g_t)
        lambda_t = b2 lambda_{t-1} + (1 - b2) gamma_t
        Lambda_t = lambda_t / (1 - b2^t)

    The switch condition is eq. 3.16, ``|Lambda_t - gamma_t| < switch_eps``, checked from step
    ``min_adam_steps`` on (default 2: at t = 1 the bias-corrected average equals gamma_1, so the
    condition would always hold; Keskar & Socher also require k > 1), and only when
    ``Lambda_t > 0``. A step with ``p.g = 0`` gives no gamma and is skipped (the bias correction
    counts only steps that gave one). When the condition holds at step ``t``, ``switch_step = t``
    and the learned SGD rate is ``Lambda = Lambda_t``.

``"blend"`` (``blend_steps = k > 0``)
    The buffer of eq. 3.17: in the i-th step after the switch (i = 1..k) the parameter change is
    ``(k - i)/k * adam_step + i/k * sgd_step``. Adam's moments keep being updated. The SGD part
    is, by default (``blend_sgd_lr="learned"``), the momentum-SGD step at the learned rate, so the
    blend ends exactly on the step pure SGD takes next. With ``blend_sgd_lr="adam"`` it is eq. 3.17
    as printed: ``alpha * G`` (Adam's rate, plain gradient, no momentum), i.e.
    ``theta -= alpha * [i/k * G + (k - i)/k * m_hat / (sqrt(v_hat) + eps)]``.

``"sgd"``
    SGD with momentum at the learned rate (PyTorch's form: ``b = mu b + (1 - dampening) g``,
    ``theta -= lr_sgd * b``; Nesterov optional). ``blend_steps = 0`` switches to this phase
    immediately (the unbuffered switch of Keskar & Socher).

Learning rate after the switch. ``lr_sgd = Lambda * lr_mult * lr(t) / lr(switch)`` per group,
where ``lr(t)`` is the group's current ``lr`` (set by the scheduler): the schedule keeps shaping
the curve relative to the switch point, and at the switch the SGD rate is exactly Lambda. Pass
``sgd_lr_follows_schedule=False`` for a constant ``Lambda * lr_mult``, or ``sgd_lr`` to replace the
learned rate (ablations).

Forced switch. ``force_switch_step = n`` switches after the n-th optimizer step regardless of the
condition (which is then not checked); Lambda is whatever the average holds at that step (the
group's Adam rate if there is none yet). The trainer converts ``force_switch_epoch`` to
``force_switch_step = round(force_switch_epoch * steps_per_epoch)`` (see
:func:`cnnlab.optim.factory.resolve_epoch_options`).

Differences from Keskar & Socher (SWATS): they run SGD as ``v = b1 v + g``,
``w -= (1 - b1) Lambda v`` (``sgd_momentum=b1, sgd_dampening=b1`` here reproduces that) and switch
without a buffer (``blend_steps=0``); we follow the SADIE paper's eq. 3.15-3.17 and use one Lambda
for the whole network.

The extra state (phase, step counts, lambda, Lambda, blend index) is saved under the
``"switch"`` key of :meth:`state_dict` and restored by :meth:`load_state_dict`; Adam moments and
SGD momentum buffers are ordinary per-parameter state. :meth:`metrics` reports the switch for the
trainer's per-epoch metrics line (``sgd_lr`` is Lambda; ``sgd_lr_now`` the first group's SGD rate at
present, after the schedule: the group's logged ``lr`` stays Adam's alpha times the schedule).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch

PHASES = ("adam", "blend", "sgd")
BLEND_SGD_LR = ("learned", "adam")


class AdamSGDSwitch(torch.optim.Optimizer):
    """Adam, then a k-step blend (eq. 3.17), then momentum SGD at the learned rate Lambda (eq. 3.15-3.16)."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, switch_eps: float = 1e-9, blend_steps: int = 0,
                 sgd_momentum: float = 0.9, sgd_dampening: float = 0.0, sgd_nesterov: bool = False,
                 sgd_lr: float | None = None, sgd_lr_follows_schedule: bool = True,
                 blend_sgd_lr: str = "learned", min_adam_steps: int = 2, force_switch_step: int | None = None):
        betas = tuple(betas)
        if lr < 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas}")
        if eps < 0 or weight_decay < 0 or switch_eps < 0:
            raise ValueError("eps, weight_decay and switch_eps must be >= 0")
        if int(blend_steps) != blend_steps or blend_steps < 0:
            raise ValueError(f"blend_steps (k) must be an integer >= 0, got {blend_steps}")
        if not 0 <= sgd_momentum < 1:
            raise ValueError(f"sgd_momentum must be in [0, 1), got {sgd_momentum}")
        if sgd_nesterov and (sgd_momentum <= 0 or sgd_dampening != 0):
            raise ValueError("sgd_nesterov needs sgd_momentum > 0 and sgd_dampening = 0")
        if sgd_lr is not None and sgd_lr <= 0:
            raise ValueError(f"sgd_lr must be > 0, got {sgd_lr}")
        if blend_sgd_lr not in BLEND_SGD_LR:
            raise ValueError(f"blend_sgd_lr must be one of {', '.join(BLEND_SGD_LR)}, got {blend_sgd_lr!r}")
        if min_adam_steps < 1:
            raise ValueError(f"min_adam_steps must be >= 1, got {min_adam_steps}")
        if force_switch_step is not None and (int(force_switch_step) != force_switch_step or force_switch_step < 1):
            raise ValueError(f"force_switch_step must be an integer >= 1, got {force_switch_step}")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, sgd_momentum=sgd_momentum,
                        sgd_dampening=sgd_dampening, sgd_nesterov=sgd_nesterov)
        super().__init__(params, defaults)
        self.switch_eps = float(switch_eps)
        self.blend_steps = int(blend_steps)
        self.fixed_sgd_lr = None if sgd_lr is None else float(sgd_lr)
        self.sgd_lr_follows_schedule = bool(sgd_lr_follows_schedule)
        self.blend_sgd_lr = blend_sgd_lr
        self.min_adam_steps = int(min_adam_steps)
        self.force_switch_step = None if force_switch_step is None else int(force_switch_step)
        self.switch: dict[str, Any] = dict(
            step=0,  # optimizer steps taken
            adam_t=0,  # Adam steps taken (bias correction), Adam and blend phases
            n_gamma=0,  # gamma samples in lambda (its bias correction)
            lam=0.0,  # lambda_t, eq. 3.15
            gamma=None,  # last gamma_t
            Lambda=None,  # last lambda_t / (1 - b2^n)
            gap=None,  # last |Lambda_t - gamma_t|, eq. 3.16
            phase="adam",
            switch_step=None,
            sgd_lr=None,  # the learned rate Lambda used after the switch
            blend_i=0,
        )

    # ------------------------------------------------------------ properties
    @property
    def phase(self) -> str:
        return self.switch["phase"]

    @property
    def switch_step(self) -> int | None:
        return self.switch["switch_step"]

    @property
    def sgd_lr(self) -> float | None:
        return self.switch["sgd_lr"]

    def metrics(self) -> dict[str, Any]:
        """For the trainer's per-epoch metrics line."""
        s = self.switch
        switched = s["phase"] != "adam"
        return {"switched": switched, "switch_step": s["switch_step"], "sgd_lr": s["sgd_lr"],
                "sgd_lr_now": self._group_sgd_lr(self.param_groups[0]) if switched else None,
                "phase": s["phase"], "switch_gap": None if switched else s["gap"], "switch_lambda": s["Lambda"]}

    def blend_weights(self, i: int | None = None) -> tuple[float, float]:
        """(Adam weight, SGD weight) = ((k - i)/k, i/k) of eq. 3.17 for blend step i (1..k)."""
        k = self.blend_steps
        i = self.switch["blend_i"] if i is None else i
        return (k - i) / k, i / k

    # ---------------------------------------------------------- state dict
    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["switch"] = dict(self.switch)
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        switch = state_dict.pop("switch", None)
        super().load_state_dict(state_dict)
        if switch is not None:
            self.switch.update(switch)

    # ---------------------------------------------------------------- step
    def _group_sgd_lr(self, group: dict) -> float:
        lr = self.switch["sgd_lr"] * group.get("lr_mult", 1.0)
        switch_lr = group.get("switch_lr")
        if self.sgd_lr_follows_schedule and switch_lr:
            lr *= group["lr"] / switch_lr
        return lr

    def _sgd_direction(self, group: dict, p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        mu, damp = group["sgd_momentum"], group["sgd_dampening"]
        if mu == 0:
            return g
        state = self.state[p]
        buf = state.get("momentum_buffer")
        if buf is None:
            state["momentum_buffer"] = buf = g.clone()
        else:
            buf.mul_(mu).add_(g, alpha=1 - damp)
        return g.add(buf, alpha=mu) if group["sgd_nesterov"] else buf

    @staticmethod
    def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.device.type in ("cpu", "cuda"):
            return (a.double() * b.double()).sum()
        return (a * b).sum()

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        s = self.switch
        s["step"] += 1
        phase = s["phase"]
        use_adam = phase in ("adam", "blend")
        if use_adam:
            s["adam_t"] += 1
        if phase == "blend":
            s["blend_i"] += 1
            w_adam, w_sgd = self.blend_weights()
        pp: list[torch.Tensor] = []
        pg: list[torch.Tensor] = []
        t = s["adam_t"]
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            if phase != "adam":
                sgd_lr = self._group_sgd_lr(group)
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("AdamSGDSwitch does not support sparse gradients")
                g = p.grad.add(p, alpha=wd) if wd != 0 else p.grad
                if use_adam:  # eq. 3.12-3.14
                    state = self.state[p]
                    if "exp_avg" not in state:
                        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    m, v = state["exp_avg"], state["exp_avg_sq"]
                    m.lerp_(g, 1 - b1)
                    v.mul_(b2).addcmul_(g, g, value=1 - b2)
                    denom = (v.sqrt() / math.sqrt(1 - b2 ** t)).add_(eps)
                    adam_step = (m / denom).mul_(lr / (1 - b1 ** t))  # alpha * m_hat / (sqrt(v_hat) + eps)
                if phase == "adam":
                    pp.append(self._dot(adam_step, adam_step))
                    pg.append(self._dot(adam_step, g))  # = -p.g with p = -adam_step
                    p.sub_(adam_step)
                    continue
                if phase == "blend" and self.blend_sgd_lr == "adam":
                    sgd_step = g * lr  # eq. 3.17 as printed: alpha * G
                else:
                    sgd_step = self._sgd_direction(group, p, g) * sgd_lr
                if phase == "blend":
                    p.sub_(adam_step * w_adam + sgd_step * w_sgd)
                else:
                    p.sub_(sgd_step)
        if phase == "adam":
            self._observe_gamma(pp, pg)
            forced = self.force_switch_step is not None and s["step"] >= self.force_switch_step
            auto = (self.force_switch_step is None and t >= self.min_adam_steps and s["gap"] is not None
                    and s["Lambda"] is not None and math.isfinite(s["Lambda"]) and s["Lambda"] > 0
                    and s["gap"] < self.switch_eps)
            if forced or auto:
                self._switch()
        elif phase == "blend" and s["blend_i"] >= self.blend_steps:
            self._enter_sgd()
        return loss

    def _observe_gamma(self, pp: list[torch.Tensor], pg: list[torch.Tensor]) -> None:
        s = self.switch
        if not pp:
            return
        dev = pp[0].device
        num = float(torch.stack([x.to(dev) for x in pp]).sum())
        den = float(torch.stack([x.to(dev) for x in pg]).sum())
        if den == 0 or not math.isfinite(num / den):
            return
        b2 = self.defaults["betas"][1]
        gamma = num / den  # gamma_t = p.p / (-p.g)
        s["n_gamma"] += 1
        s["lam"] = b2 * s["lam"] + (1 - b2) * gamma  # eq. 3.15
        s["gamma"] = gamma
        s["Lambda"] = s["lam"] / (1 - b2 ** s["n_gamma"])
        s["gap"] = abs(s["Lambda"] - gamma)  # eq. 3.16

    def _switch(self) -> None:
        s = self.switch
        s["switch_step"] = s["step"]
        if self.fixed_sgd_lr is not None:
            s["sgd_lr"] = self.fixed_sgd_lr
        elif s["Lambda"] is not None and math.isfinite(s["Lambda"]) and s["Lambda"] > 0:
            s["sgd_lr"] = float(s["Lambda"])
        else:  # forced switch before any usable gamma: keep Adam's rate
            g0 = self.param_groups[0]
            s["sgd_lr"] = float(g0["lr"] / g0.get("lr_mult", 1.0))
        for group in self.param_groups:
            group["switch_lr"] = group["lr"]
        s["blend_i"] = 0
        if self.blend_steps > 0:
            s["phase"] = "blend"
        else:
            self._enter_sgd()

    def _enter_sgd(self) -> None:
        self.switch["phase"] = "sgd"
        for state in self.state.values():  # Adam's moments are no longer needed
            state.pop("exp_avg", None)
            state.pop("exp_avg_sq", None)
