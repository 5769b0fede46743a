"""cnnlab: train, compare and deploy deep image classifiers (PyTorch).

The public names below are loaded on first use (PEP 562), so ``import cnnlab`` and
``cnnlab --help`` stay fast: torch and the model zoo are imported only by what needs them.
"""
from __future__ import annotations

import importlib
from typing import Any

from .errors import CnnlabError

__version__ = "0.1.0"

# public name -> the module that defines it
_LAZY = {
    "TrainConfig": "config",
    "train": "api", "load_run": "api", "register_arrays": "api",
    "count_parameters": "models", "create_model": "models", "list_models": "models",
    "create_optimizer": "optim", "create_scheduler": "optim",
    "list_datasets": "data", "load_dataset": "data",
}

__all__ = ["CnnlabError", "TrainConfig", "train", "load_run", "register_arrays", "count_parameters", "create_model", "create_optimizer",
           "create_scheduler", "list_datasets", "list_models", "load_dataset", "__version__"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'cnnlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
