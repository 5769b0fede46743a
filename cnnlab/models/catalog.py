"""`cnnlab models`: the table of every registered model, and the cost figures of one."""
from __future__ import annotations

import torch

from ..errors import CnnlabError
from ..sizes import loader_size
from .registry import MODELS, count_parameters, create_model


def default_input(name: str) -> tuple[int, int]:
    """(channels, side) at which a model is listed: its declared native size, else 28 (MNIST).
    For a 1-D signal model (cnnlab.models.signal): (channels, length)."""
    meta = MODELS.entry(name).meta
    if meta.get("signal"):
        return meta.get("native_channels", 1), meta["native_length"]
    side = meta.get("native_size") or (meta["sizes"][0] if meta.get("sizes") else max(28, meta.get("min_size", 1)))
    return meta.get("native_channels", 3 if side >= 32 else 1), side


def parse_input(text: str | None, name: str) -> tuple[int, int | tuple[int, int]]:
    """``--input`` as (channels, size): ``CxHxW`` gives H (square) or (H, W); ``CxL`` (two numbers) is a
    1-D signal: (channels, length). No ``--input``: the model's listed input (:func:`default_input`)."""
    if text is None:
        return default_input(name)
    parts = text.lower().split("x")
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        c, *size = (int(v) for v in parts)
        if min(c, *size) < 1:
            raise ValueError
    except ValueError:
        raise CnnlabError(f"--input must look like 3x32x32 or 1x28x36 (channels x height x width) or 1x4000 "
                          f"(channels x length of a 1-D signal), got {text!r}") from None
    return c, size[0] if len(size) == 1 else loader_size(tuple(size))


def print_model_table() -> None:
    rows = [("name", "input", "params", "MB", "source", "description")]
    for e in MODELS:
        c, side = default_input(e.name)
        signal = e.meta.get("signal")
        with torch.device("meta"):  # count parameters without allocating (VGG-19 has 144M)
            model = create_model(e.name, 10, c, **({"length": side} if signal else {"image_size": side}))
        n = count_parameters(model)
        shape = f"{c}x{side}" if signal else f"{c}x{side}x{side}"
        rows.append((e.name, shape, f"{n:,}", f"{4 * n / 1e6:.2f}", e.meta.get("source", ""),
                     e.description))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])


def print_model_info(name: str, input_shape: str | None, num_classes: int = 10, batch_size: int = 128,
                     options: dict | None = None) -> None:
    from .info import format_report, model_report

    c, size = parse_input(input_shape, name)
    options = dict(options or {})
    if input_shape is not None and len(input_shape.split("x")) == 2:  # CxL: a 1-D signal of length `size`
        options["length"] = size
    print(format_report(model_report(name, c, size, num_classes=num_classes, batch_size=batch_size, **options)))
