"""Objectives by name: ``--objective classify`` (the default). See :mod:`cnnlab.objectives.base`.

Add one by subclassing :class:`Objective` in a new module, decorating it with
``@register_objective("name")`` and importing the module below.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import Registry
from .base import EvalSetup, Objective

if TYPE_CHECKING:
    from ..config import TrainConfig

OBJECTIVES: Registry[type[Objective]] = Registry("objective")


def register_objective(name: str, description: str = ""):
    return OBJECTIVES.register(name, description)


def create_objective(cfg: "TrainConfig") -> Objective:
    """The objective named by ``cfg.objective``, built from the config fields it reads."""
    return OBJECTIVES.get(cfg.objective).from_config(cfg)


from . import classify  # noqa: E402,F401  (registers "classify")

__all__ = ["OBJECTIVES", "EvalSetup", "Objective", "create_objective", "register_objective"]
