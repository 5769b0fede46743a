"""`cnnlab models`: the table of every registered model, and the cost figures of one."""
from __future__ import annotations

import torch

from ..errors import CnnlabError
from .registry import MODELS, count_parameters, create_model


def default_input(name: str) -> tuple[int, int]:
    """(channels, side) at which a model is listed: its declared native size, else 28 (MNIST)."""
    meta = MODELS.entry(name).meta
    side = meta.get("native_size") or (meta["sizes"][0] if meta.get("sizes") else max(28, meta.get("min_size", 1)))
    return meta.get("native_channels", 3 if side >= 32 else 1), side


def parse_input(text: str | None, name: str) -> tuple[int, int]:
    if text is None:
        return default_input(name)
    try:
        c, h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise CnnlabError(f"--input must look like 3x32x32 (channels x height x width), got {text!r}") from None
    if h != w:
        raise CnnlabError(f"--input {text}: models take square inputs")
    return c, h


def print_model_table() -> None:
    rows = [("name", "input", "params", "MB", "source", "description")]
    for e in MODELS:
        c, side = default_input(e.name)
        with torch.device("meta"):  # count parameters without allocating (VGG-19 has 144M)
            model = create_model(e.name, 10, c, image_size=side)
        n = count_parameters(model)
        rows.append((e.name, f"{c}x{side}x{side}", f"{n:,}", f"{4 * n / 1e6:.2f}", e.meta.get("source", ""),
                     e.description))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])


def print_model_info(name: str, input_shape: str | None, num_classes: int = 10, batch_size: int = 128,
                     options: dict | None = None) -> None:
    from .info import format_report, model_report

    c, side = parse_input(input_shape, name)
    print(format_report(model_report(name, c, side, num_classes=num_classes, batch_size=batch_size, **(options or {}))))
