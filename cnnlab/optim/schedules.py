"""Learning-rate schedules by name, as multiplicative factors of the base rate per optimizer step.

Every schedule is a pure function of the global step, wrapped in ``LambdaLR`` so its
state (the step counter) is saved with checkpoints and a resumed run continues the
same curve. ``warmup_steps`` composes a linear warm-up with any schedule.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from ..errors import CnnlabError
from ..registry import Registry

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


def with_warmup(factor: Callable[[int], float], warmup_steps: int) -> Callable[[int], float]:
    """Linear warm-up from ~0 to the schedule's value over ``warmup_steps`` optimizer steps."""
    if warmup_steps <= 0:
        return factor
    return lambda t: factor(t) * min(1.0, (t + 1) / warmup_steps)


def schedule_factor(name: str, total_steps: int, steps_per_epoch: int, warmup_steps: int = 0,
                    **options) -> Callable[[int], float]:
    """The factor function of a registered schedule, with optional warm-up."""
    make = SCHEDULES.get(name)
    options = {k: v for k, v in options.items() if v is not None}
    try:
        factor = make(max(1, total_steps), max(1, steps_per_epoch), **options)
    except TypeError as e:
        raise CnnlabError(f"schedule {name!r}: bad options {options}: {e}") from e
    return with_warmup(factor, warmup_steps)


def create_scheduler(name: str, optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int,
                     warmup_steps: int = 0, **options) -> torch.optim.lr_scheduler.LRScheduler:
    """A ``LambdaLR`` stepping once per optimizer step with the named schedule."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, schedule_factor(name, total_steps, steps_per_epoch, warmup_steps, **options))
