"""Optimizer and learning-rate schedule factories; custom optimizers live one per file."""
from .factory import OPTIMIZERS, create_optimizer, momentum_options, param_groups, register_optimizer
from .schedules import SCHEDULES, create_scheduler, register_schedule, schedule_factor

__all__ = ["OPTIMIZERS", "SCHEDULES", "create_optimizer", "create_scheduler", "momentum_options", "param_groups",
           "register_optimizer", "register_schedule", "schedule_factor"]
