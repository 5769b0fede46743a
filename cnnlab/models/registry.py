"""The model registry: every network is built by ``create_model(name, num_classes, in_channels, **options)``.

Every builder has the same signature ``builder(num_classes, in_channels, **options)``
(as in timm's ``create_model``) so any study can swap any model. Options common to
many builders: ``image_size`` (the input size, always passed by the trainer: an ``int`` side for a
square input, a ``(H, W)`` tuple otherwise; :mod:`cnnlab.sizes`; a builder whose design needs H = W
registers ``square_only=True``), ``act`` (activation name), ``norm`` ("batch", "lrn", "none"),
``dropout``, ``width`` (channel multiplier), ``init`` (weight initialization name).

Options every model takes, handled here unless the builder declares them itself:
``init`` (applied after building) and ``head`` / ``head_options``, which replace the
model's final classifier (its last ``nn.Linear``) by another output head: ``"linear"``
or ``"energy"``, SADIE's discriminative-RBM free-energy head (:mod:`cnnlab.models.energy`).
"""
from __future__ import annotations

import inspect
from typing import Callable

import torch
import torch.nn as nn

from ..errors import CnnlabError
from ..registry import Registry, check_options
from ..sizes import as_hw, loader_size, size_text

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


def check_input_size(name: str, image_size) -> None:
    """``image_size`` (a side or ``(H, W)``) against what model ``name`` declares: ``sizes`` (the only
    square sides it takes), ``min_size``/``max_size`` (bounds on each side) and ``square_only``
    (a design that needs H = W, e.g. the max-depth rule of one image side)."""
    meta = MODELS.entry(name).meta
    h, w = as_hw(image_size)
    sizes, lo, hi = meta.get("sizes"), meta.get("min_size", 1), meta.get("max_size")
    shown = size_text(image_size) if h != w else str(h)
    if sizes and (h != w or h not in sizes):
        raise CnnlabError(f"model {name!r} takes inputs of side {'/'.join(map(str, sizes))}, got {shown} "
                          f"(use --image-size to resize the data)")
    if meta.get("square_only") and h != w:
        raise CnnlabError(f"model {name!r} takes square inputs only, got {shown} (use --image-size S)")
    for side in (h, w):
        if side < lo or (hi is not None and side > hi):
            rng = f"{lo}..{hi}" if hi else f">= {lo}"
            raise CnnlabError(f"model {name!r} needs each input side {rng}, got {shown} (use --image-size)")


def size_options(shape: tuple[int, ...]) -> dict[str, int]:
    """The size option a builder gets for inputs of ``shape`` (no batch): images (C, H, W) ->
    ``image_size=H`` (square) or ``(H, W)``; 1-D signals (C, L) -> ``length=L`` (:mod:`cnnlab.models.signal`)."""
    return {"length": int(shape[1])} if len(shape) == 2 else {"image_size": loader_size(tuple(shape[1:3]))}


def signal_models() -> list[str]:
    """Models that take 1-D signals [C, L] (their builder has a ``length`` option)."""
    return [e.name for e in MODELS if "length" in inspect.signature(e.obj).parameters]


def is_signal_model(name: str) -> bool:
    """A model for 1-D signals only (registered with ``signal=True``: cae1d, cnn1d)."""
    return bool(MODELS.entry(name).meta.get("signal"))


def _check_input_kind(name: str, params, options: dict) -> None:
    """Images to an image model, signals to a signal model: a mismatch is one clear error."""
    if options.get("length") is not None and "length" not in params:
        raise CnnlabError(f"model {name!r} takes images [C, H, W]; 1-D signals need a model that takes them: "
                          f"{', '.join(signal_models())}")
    if options.get("image_size") is not None and "image_size" not in params and "length" in params:
        raise CnnlabError(f"model {name!r} takes 1-D signals [C, L], not images (a signal data set such as "
                          f"--data spectra or --data signals)")


def create_model(name: str, num_classes: int, in_channels: int, **options) -> nn.Module:
    """Build a registered model. Unknown names and unknown options raise :class:`CnnlabError`."""
    builder = MODELS.get(name)
    if "image_size" in options and options["image_size"] is not None:
        check_input_size(name, options["image_size"])
        options["image_size"] = loader_size(options["image_size"])  # builders get S when square (as always), else (H, W)
    params = inspect.signature(builder).parameters
    _check_input_kind(name, params, options)
    init = options.pop("init", None) if "init" not in params else None  # applied after building
    head = options.pop("head", None) if "head" not in params else None  # replaces the classifier after that
    head_options = options.pop("head_options", None) if "head_options" not in params else None
    check_options(builder, options, f"model {name!r}", skip=("num_classes", "in_channels"),
                  extra=("init", "head", "head_options"))
    try:
        model = builder(num_classes=num_classes, in_channels=in_channels, **options)
    except (TypeError, ValueError) as e:
        if isinstance(e, CnnlabError):
            raise
        raise CnnlabError(f"model {name!r}: bad options {options}: {e}") from e
    if init:
        from .init import initialize

        initialize(model, init)
    if head is not None or head_options:
        model = replace_head(model, name, head or "linear", head_options or {}, num_classes, in_channels,
                             options.get("image_size"), options.get("length"))
    return model


def replace_head(model: nn.Module, name: str, head: str, head_options: dict, num_classes: int, in_channels: int,
                 image_size=None, length: int | None = None) -> nn.Module:
    """Replace ``model``'s final classifier by the output head ``head`` built with ``head_options``.

    The final classifier is found by running the model once (on the device its weights are on,
    the ``meta`` device included, in eval mode) and taking the last layer with weights that
    ran: it must be an ``nn.Linear`` (or an energy head) whose output has the model's output
    shape. Looking for "the last nn.Linear in the module tree" alone would be fooled by a
    model that registers its classifier before a Linear used elsewhere, or ends in a
    convolution (NiN's global-average-pooled conv).
    """
    from .energy import HEADS, make_head

    if not isinstance(head, str) or head not in HEADS:
        raise CnnlabError(f"model {name!r}: option head must be one of {', '.join(HEADS)}, got {head!r}")
    if not isinstance(head_options, dict):
        raise CnnlabError(f"model {name!r}: option head_options must be a mapping like {{hidden: 64}}, "
                          f"got {head_options!r}")
    classifier_name, classifier = find_classifier(model, name, in_channels, image_size, length)
    if head == "linear" and not head_options and isinstance(classifier, nn.Linear):
        return model  # already the plain classifier
    ref = next(classifier.parameters())
    with torch.device(ref.device):
        new = make_head(head, classifier.in_features, num_classes, **head_options).to(ref.dtype)
    model.set_submodule(classifier_name, new)
    return model


def find_classifier(model: nn.Module, name: str, in_channels: int, image_size=None,
                    length: int | None = None) -> tuple[str, nn.Module]:
    """(qualified name, module) of the layer that computes ``model``'s output: a final Linear or energy head."""
    from .energy import EnergyHead

    if image_size is None and length is None and is_signal_model(name):
        length = MODELS.entry(name).meta.get("native_length")
    if image_size is None and length is None:
        from .catalog import default_input

        image_size = default_input(name)[1]
    names = {m: n for n, m in model.named_modules()}
    ran: list[tuple[nn.Module, object]] = []  # layers with weights of their own, in the order they finished

    def record(m: nn.Module, inputs, output) -> None:
        ran.append((m, output))

    hooks = [m.register_forward_hook(record) for m in model.modules()
             if isinstance(m, EnergyHead) or next(m.parameters(recurse=False), None) is not None]
    device = next(iter(model.parameters()), torch.empty(0)).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            shape = (length,) if length is not None else as_hw(image_size)
            out = model(torch.zeros(2, in_channels, *shape, device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    # an energy head's own nn.Linear finishes before the head does, so the head is the last entry
    last, last_out = ran[-1] if ran else (None, None)
    if (not isinstance(last, (nn.Linear, EnergyHead)) or not isinstance(out, torch.Tensor)
            or not isinstance(last_out, torch.Tensor) or last_out.shape != out.shape):
        what = f"{type(last).__name__} {names.get(last, '?')!r}" if last is not None else "no layer with weights"
        raise CnnlabError(f"model {name!r}: option head needs a model whose output comes from a final nn.Linear "
                          f"classifier, but its output comes from {what}")
    return names[last], last


def list_models() -> list[str]:
    return MODELS.names()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_size_mb(model: nn.Module) -> float:
    """Size of parameters and buffers in MB (10^6 bytes) at their stored precision (fp32 normally)."""
    n = sum(p.numel() * p.element_size() for p in model.parameters())
    n += sum(b.numel() * b.element_size() for b in model.buffers())
    return n / 1e6
