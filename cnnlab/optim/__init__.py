"""Optimizer and learning-rate schedule factories; custom optimizers live one per file.

See docs/optimizers.md for every registered name, its options and its equation.
"""
from .adam_sgd_switch import AdamSGDSwitch
from .factory import (OPTIMIZERS, create_optimizer, momentum_options, param_groups, register_optimizer,
                      resolve_epoch_options)
from .lars import LARS
from .schedules import SCHEDULES, ReduceOnPlateau, create_scheduler, register_schedule, schedule_factor

__all__ = ["OPTIMIZERS", "SCHEDULES", "AdamSGDSwitch", "LARS", "ReduceOnPlateau", "create_optimizer",
           "create_scheduler", "momentum_options", "param_groups", "register_optimizer", "register_schedule",
           "resolve_epoch_options", "schedule_factor"]
