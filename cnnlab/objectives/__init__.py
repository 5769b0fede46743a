"""Objectives by name: ``--objective classify`` (the default). See :mod:`cnnlab.objectives.base`.

Add one by subclassing :class:`Objective` in a new module, decorating it with
``@register_objective("name")`` and importing the module below. An objective's own options
(keyword arguments of its ``from_config``) follow the name: ``--objective energy-hybrid:weight=0.1,chains=64``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..config import parse_key_value
from ..errors import CnnlabError
from ..registry import Registry, check_options
from .base import EvalSetup, Objective

if TYPE_CHECKING:
    from ..config import TrainConfig

OBJECTIVES: Registry[type[Objective]] = Registry("objective")


def register_objective(name: str, description: str = ""):
    return OBJECTIVES.register(name, description)


def parse_objective(spec: str) -> tuple[str, dict[str, Any]]:
    """``"name:key=value,key=value"`` -> ``("name", {key: value})``; values are read as YAML (``0.1``, ``64``)."""
    name, _, rest = str(spec).partition(":")
    options: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        try:
            key, value = parse_key_value(item)
        except CnnlabError:
            raise CnnlabError(f"--objective {spec!r}: options must look like NAME:KEY=VALUE,KEY=VALUE, "
                              f"got {item!r}") from None
        options[key] = value
    return name.strip(), options


def create_objective(cfg: "TrainConfig") -> Objective:
    """The objective named by ``cfg.objective``, built from the config fields it reads and its own options."""
    name, options = parse_objective(cfg.objective)
    cls = OBJECTIVES.get(name)
    check_options(cls.from_config, options, f"objective {name!r}", skip=("cfg",))
    return cls.from_config(cfg, **options)


from . import classify, hybrid  # noqa: E402,F401  (register "classify", "energy-hybrid")
from . import reconstruct  # noqa: E402,F401  (registers "reconstruct": autoencoders)

__all__ = ["OBJECTIVES", "EvalSetup", "Objective", "create_objective", "register_objective"]
