"""Learning-rate schedules by name, as multiplicative factors of the base rate per optimizer step.

Every schedule is a pure function of the global step, wrapped in ``LambdaLR`` so its
state (the step counter) is saved with checkpoints and a resumed run continues the
same curve. ``warmup_steps`` composes a warm-up with any schedule (linear, or polynomial
with the ``warmup_power`` option). The option ``interval="epoch"`` evaluates a schedule only
at epoch boundaries (``floor(t / steps_per_epoch) * steps_per_epoch``) so the rate is constant
within an epoch; the default ``"step"`` changes it every iteration.

``plateau`` (reduce-on-plateau) is the one schedule that is not a function of the step:
:class:`ReduceOnPlateau` is a ``LambdaLR`` whose factor is multiplied by ``factor`` whenever
the value passed to :meth:`ReduceOnPlateau.observe` (the trainer passes each epoch's mean
training loss) has not improved for ``patience`` epochs; its best value, bad-epoch count and
scale are part of its ``state_dict``, so a resumed run continues exactly.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from ..errors import CnnlabError
from ..registry import Registry, check_options

# factory(total_steps, steps_per_epoch, **options) -> factor(step)
SCHEDULES: Registry[Callable[..., Callable[[int], float]]] = Registry("schedule")


def register_schedule(name: str, description: str = ""):
    return SCHEDULES.register(name, description)


@register_schedule("constant", "fixed learning rate")
def constant(total_steps: int, steps_per_epoch: int) -> Callable[[int], float]:
    return lambda step: 1.0


@register_schedule("step", "factor schedule eta_0 * gamma^floor(t / step), thesis eq. 2.19 (step_size in epochs)")
def step(total_steps: int, steps_per_epoch: int, step_size: float = 1.0, gamma: float = 0.1):
    every = max(1, round(step_size * steps_per_epoch))
    return lambda t: gamma ** (t // every)


@register_schedule("multistep", "manual step function: multiply by gamma at each milestone epoch (thesis 2.1.9)")
def multistep(total_steps: int, steps_per_epoch: int, milestones: tuple[float, ...] = (0.5, 0.75),
              gamma: float = 0.1):
    # milestones below 1 are fractions of the run, otherwise epochs
    marks = sorted(round(m * total_steps) if m < 1 else round(m * steps_per_epoch) for m in milestones)
    return lambda t: gamma ** sum(t >= m for m in marks)


@register_schedule("exponential", "eta_0 * gamma^(t / step), thesis eq. 2.18 (step_size in epochs)")
def exponential(total_steps: int, steps_per_epoch: int, step_size: float = 1.0, gamma: float = 0.9):
    every = max(1e-9, step_size * steps_per_epoch)
    return lambda t: gamma ** (t / every)


@register_schedule("cosine", "cosine annealing from the base rate to min_factor over the run")
def cosine(total_steps: int, steps_per_epoch: int, min_factor: float = 0.0):
    return lambda t: min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * min(t, total_steps) / total_steps))


@register_schedule("linear", "linear decay from the base rate to min_factor over the run")
def linear(total_steps: int, steps_per_epoch: int, min_factor: float = 0.0):
    return lambda t: 1 - (1 - min_factor) * min(t, total_steps) / total_steps


@register_schedule("onecycle", "one-cycle: linear rise from start_factor to 1 over pct_start, then linear to end_factor")
def onecycle(total_steps: int, steps_per_epoch: int, pct_start: float = 0.25, start_factor: float = 0.1,
             end_factor: float = 0.0):
    peak = max(1, round(pct_start * total_steps))

    def factor(t: int) -> float:
        if t < peak:
            return start_factor + (1 - start_factor) * t / peak
        return 1 - (1 - end_factor) * min(1.0, (t - peak) / max(1, total_steps - peak))

    return factor


@register_schedule("poly", "polynomial decay min_factor + (1 - min_factor) * (1 - t/T)^power (LARS: power 2)")
def poly(total_steps: int, steps_per_epoch: int, power: float = 2.0, min_factor: float = 0.0):
    if power <= 0:
        raise CnnlabError(f"schedule 'poly': power must be > 0, got {power}")
    return lambda t: min_factor + (1 - min_factor) * (1 - min(t, total_steps) / total_steps) ** power


PLATEAU_MODES = ("min", "max")


@register_schedule("plateau", "reduce-on-plateau: multiply by factor after patience epochs without improvement")
def plateau(total_steps: int, steps_per_epoch: int, mode: str = "min", factor: float = 0.1, patience: int = 10,
            threshold: float = 1e-4, threshold_mode: str = "rel", cooldown: int = 0, min_factor: float = 0.0):
    """The step-dependent part of ``plateau`` is constant; :class:`ReduceOnPlateau` does the rest."""
    if mode not in PLATEAU_MODES:
        raise CnnlabError(f"schedule 'plateau': mode must be min or max, got {mode!r}")
    if threshold_mode not in ("rel", "abs"):
        raise CnnlabError(f"schedule 'plateau': threshold_mode must be rel or abs, got {threshold_mode!r}")
    if not 0 < factor < 1:
        raise CnnlabError(f"schedule 'plateau': factor must be in (0, 1), got {factor}")
    if patience < 0 or cooldown < 0 or threshold < 0 or min_factor < 0:
        raise CnnlabError("schedule 'plateau': patience, cooldown, threshold and min_factor must be >= 0")
    return lambda t: 1.0


SCHEDULES.entry("plateau").meta["observes"] = True

INTERVALS = ("step", "epoch")


def with_warmup(factor: Callable[[int], float], warmup_steps: int, power: float = 1.0) -> Callable[[int], float]:
    """Warm-up from ~0 to the schedule's value over ``warmup_steps`` optimizer steps:
    ``factor(t) * min(1, (t + 1) / warmup_steps) ** power`` (power 1 = linear, Goyal et al. 2017)."""
    if warmup_steps <= 0:
        return factor
    if power <= 0:
        raise CnnlabError(f"warmup_power must be > 0, got {power}")
    return lambda t: factor(t) * min(1.0, (t + 1) / warmup_steps) ** power


def per_epoch(factor: Callable[[int], float], steps_per_epoch: int) -> Callable[[int], float]:
    """Evaluate ``factor`` only at epoch starts: constant within each epoch."""
    return lambda t: factor((t // steps_per_epoch) * steps_per_epoch)


def _split_options(options: dict) -> tuple[dict, str, float]:
    options = {k: v for k, v in options.items() if v is not None}
    interval = str(options.pop("interval", "step")).lower()
    if interval not in INTERVALS:
        raise CnnlabError(f"schedule option interval must be step or epoch, got {interval!r}")
    power = float(options.pop("warmup_power", 1.0))
    return options, interval, power


def schedule_factor(name: str, total_steps: int, steps_per_epoch: int, warmup_steps: int = 0,
                    **options) -> Callable[[int], float]:
    """The factor function of a registered schedule, with optional warm-up.

    Options besides the schedule's own: ``interval`` ("step" or "epoch") and ``warmup_power``."""
    make = SCHEDULES.get(name)
    options, interval, power = _split_options(options)
    spe = max(1, steps_per_epoch)
    check_options(make, options, f"schedule {name!r}", skip=("total_steps", "steps_per_epoch"),
                  extra=("interval", "warmup_power"))
    try:
        factor = make(max(1, total_steps), spe, **options)
        for t in (0, max(1, total_steps) - 1):  # the factor is lazy: a wrong-typed option (gamma=abc) fails here
            float(factor(t))
    except (TypeError, ValueError, OverflowError, ZeroDivisionError) as e:
        raise CnnlabError(f"schedule {name!r}: bad options {options}: {e}") from None
    if interval == "epoch":
        factor = per_epoch(factor, spe)
    return with_warmup(factor, warmup_steps, power)


class ReduceOnPlateau(torch.optim.lr_scheduler.LambdaLR):
    """``LambdaLR`` (warm-up etc.) times a scale reduced by ``factor`` when :meth:`observe` sees a plateau.

    Call :meth:`step` after every optimizer step and :meth:`observe` once per epoch with the
    monitored value; the new rate applies from the next optimizer step. Follows
    ``torch.optim.lr_scheduler.ReduceLROnPlateau``'s rule: a value improves on ``best`` when it is
    lower by more than ``threshold`` (relative, or absolute with ``threshold_mode="abs"``; higher
    for ``mode="max"``); after more than ``patience`` epochs without improvement the scale is
    multiplied by ``factor`` (not below ``min_factor``) and ``cooldown`` epochs are skipped.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, base_factor: Callable[[int], float] | None = None,
                 mode: str = "min", factor: float = 0.1, patience: int = 10, threshold: float = 1e-4,
                 threshold_mode: str = "rel", cooldown: int = 0, min_factor: float = 0.0, last_epoch: int = -1):
        plateau(1, 1, mode, factor, patience, threshold, threshold_mode, cooldown, min_factor)  # validate
        self.mode, self.factor, self.patience = mode, float(factor), int(patience)
        self.threshold, self.threshold_mode = float(threshold), threshold_mode
        self.cooldown, self.min_factor = int(cooldown), float(min_factor)
        self.scale = 1.0
        self.best: float | None = None
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.num_reductions = 0
        base = base_factor or (lambda t: 1.0)
        super().__init__(optimizer, lambda t: base(t) * self.scale, last_epoch)

    def is_better(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        sign = 1.0 if self.mode == "min" else -1.0
        if self.threshold_mode == "rel":
            margin = abs(best) * self.threshold
        else:
            margin = self.threshold
        return sign * (best - value) > margin

    def observe(self, value: float) -> None:
        """End of an epoch: record the monitored value and reduce the rate on a plateau."""
        value = float(value)
        if math.isfinite(value) and self.is_better(value, self.best):
            self.best = value
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            new = max(self.scale * self.factor, self.min_factor)
            if self.scale - new > 1e-12:
                self.scale = new
                self.num_reductions += 1
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        # apply now, so the next optimizer step already uses the new rate
        lrs = [base_lr * lam(self.last_epoch) for lam, base_lr in zip(self.lr_lambdas, self.base_lrs)]
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = lrs


def create_scheduler(name: str, optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int,
                     warmup_steps: int = 0, **options) -> torch.optim.lr_scheduler.LRScheduler:
    """A ``LambdaLR`` stepping once per optimizer step with the named schedule
    (a :class:`ReduceOnPlateau`, which also has ``observe(value)``, for ``plateau``)."""
    entry = SCHEDULES.entry(name)
    if entry.meta.get("observes"):
        opts, _, power = _split_options(options)
        schedule_factor(name, total_steps, steps_per_epoch, warmup_steps, **options)  # validates the options
        return ReduceOnPlateau(optimizer, with_warmup(lambda t: 1.0, warmup_steps, power), **opts)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, schedule_factor(name, total_steps, steps_per_epoch, warmup_steps, **options))
