"""The model registry: every network is built by ``create_model(name, num_classes, in_channels, **options)``.

Every builder has the same signature ``builder(num_classes, in_channels, **options)``
(as in timm's ``create_model``) so any study can swap any model. Options common to
many builders: ``image_size`` (int, the square input side; always passed by the
trainer), ``act`` (activation name), ``norm`` ("batch", "lrn", "none"), ``dropout``,
``width`` (channel multiplier), ``init`` (weight initialization name).
"""
from __future__ import annotations

import inspect
from typing import Callable

import torch.nn as nn

from ..errors import CnnlabError
from ..registry import Registry, check_options

ModelBuilder = Callable[..., nn.Module]
MODELS: Registry[ModelBuilder] = Registry("model")


def register_model(name: str, description: str = "", source: str = "", min_size: int = 1,
                   max_size: int | None = None, sizes: tuple[int, ...] | None = None, **meta):
    """Decorator: register ``builder(num_classes, in_channels, **options)`` under ``name``.

    ``source`` names the paper table/figure the network comes from; ``min_size``/``max_size``
    /``sizes`` state the input sides it supports, checked before building.
    """
    return MODELS.register(name, description, source=source, min_size=min_size, max_size=max_size,
                           sizes=sizes, **meta)


def check_input_size(name: str, image_size: int) -> None:
    meta = MODELS.entry(name).meta
    sizes, lo, hi = meta.get("sizes"), meta.get("min_size", 1), meta.get("max_size")
    if sizes and image_size not in sizes:
        raise CnnlabError(f"model {name!r} takes inputs of side {'/'.join(map(str, sizes))}, got {image_size} "
                          f"(use --image-size to resize the data)")
    if image_size < lo or (hi is not None and image_size > hi):
        rng = f"{lo}..{hi}" if hi else f">= {lo}"
        raise CnnlabError(f"model {name!r} needs an input side {rng}, got {image_size} (use --image-size)")


def create_model(name: str, num_classes: int, in_channels: int, **options) -> nn.Module:
    """Build a registered model. Unknown names and unknown options raise :class:`CnnlabError`."""
    builder = MODELS.get(name)
    if "image_size" in options and options["image_size"] is not None:
        check_input_size(name, int(options["image_size"]))
    params = inspect.signature(builder).parameters
    init = options.pop("init", None) if "init" not in params else None  # applied after building
    check_options(builder, options, f"model {name!r}", skip=("num_classes", "in_channels"), extra=("init",))
    try:
        model = builder(num_classes=num_classes, in_channels=in_channels, **options)
    except (TypeError, ValueError) as e:
        if isinstance(e, CnnlabError):
            raise
        raise CnnlabError(f"model {name!r}: bad options {options}: {e}") from e
    if init:
        from .init import initialize

        initialize(model, init)
    return model


def list_models() -> list[str]:
    return MODELS.names()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_size_mb(model: nn.Module) -> float:
    """Size of parameters and buffers in MB (10^6 bytes) at their stored precision (fp32 normally)."""
    n = sum(p.numel() * p.element_size() for p in model.parameters())
    n += sum(b.numel() * b.element_size() for b in model.buffers())
    return n / 1e6
