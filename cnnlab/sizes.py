"""Image sizes: one home for "a side S, or a height and a width".

An image size is written three ways, all meaning the same thing:

- an ``int`` S: a square S x S (what every run folder before non-square inputs holds);
- a pair ``(H, W)`` / ``[H, W]``: H rows by W columns;
- text ``"S"``, ``"HxW"`` or ``"H W"`` (a flag or a YAML value).

:func:`as_hw` turns any of them into ``(H, W)``; :func:`size_value` turns ``(H, W)`` back into the
stored form, an ``int`` when square (so square configs, run folders and exported metadata keep
the form they always had) and ``[H, W]`` otherwise. Everything that stores or compares a size goes
through these two. This module imports no torch: the config and ``cnnlab --help`` use it.
"""
from __future__ import annotations

import numbers
from typing import Any

from .errors import CnnlabError

EXPECTED = "a side S or a height and width HxW (e.g. 32, 48x64 or [48, 64]) of positive integers"


def as_hw(size: Any, what: str = "image size") -> tuple[int, int]:
    """``(H, W)`` of ``size`` (int, pair or text); a clear error naming ``what`` otherwise."""
    parts: list[Any]
    if isinstance(size, bool):
        parts = []
    elif isinstance(size, numbers.Integral):
        parts = [int(size), int(size)]
    elif isinstance(size, str):
        text = size.strip().lower()
        parts = text.replace("x", " ").replace(",", " ").split()
        if len(parts) == 1 and text == parts[0]:  # "32", but not "32x"
            parts = parts * 2
    elif isinstance(size, (tuple, list)) and len(size) in (1, 2):
        parts = list(size) * (2 if len(size) == 1 else 1)
    else:
        parts = []
    try:
        if len(parts) != 2 or any(isinstance(p, (bool, float)) or not isinstance(p, (str, numbers.Integral))
                                  for p in parts):
            raise ValueError
        h, w = (int(p) for p in parts)
    except (TypeError, ValueError):
        raise CnnlabError(f"{what} must be {EXPECTED}, got {size!r}") from None
    if h < 1 or w < 1:
        raise CnnlabError(f"{what} must be {EXPECTED}, got {size!r}")
    return h, w


def size_value(size: Any) -> int | list[int]:
    """The stored form of ``size``: ``S`` when square, ``[H, W]`` otherwise."""
    h, w = as_hw(size)
    return h if h == w else [h, w]


def is_stored_size(value: Any) -> bool:
    """Is ``value`` a size as a file stores it (meta.json, a manifest): a positive int S or [H, W] of
    positive ints? Stricter than :func:`as_hw`, which also reads text."""
    sides = value if isinstance(value, list) and len(value) == 2 else [value]
    return all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in sides)


def size_text(size: Any) -> str:
    """``"HxW"`` of ``size`` (``"32x32"`` for 32)."""
    h, w = as_hw(size)
    return f"{h}x{w}"


def loader_size(size: Any) -> int | tuple[int, int]:
    """The ``size`` option a dataset loader or model builder gets: ``S`` when square (what they have always
    taken), ``(H, W)`` otherwise."""
    h, w = as_hw(size)
    return h if h == w else (h, w)
