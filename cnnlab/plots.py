"""Matplotlib set-up and figure saving, once for every plot cnnlab draws.

Plots are written from training processes, worker processes and headless CI, so the
non-interactive Agg backend is selected before pyplot is first imported; figures are
saved atomically (:mod:`cnnlab.files`) and closed, so long studies do not leak memory.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (imported on first use: the CLI starts fast)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def colors(n: int) -> list[Any]:
    """``n`` distinguishable colours (tab10, or tab20 beyond ten series)."""
    cmap = pyplot().get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def save_figure(fig, path: str | Path, dpi: int = 100, tight: bool = False) -> None:
    """Write ``fig`` as a PNG at ``path`` atomically, then close it."""
    from .files import atomic_write

    try:
        atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=dpi,
                                                 **({"bbox_inches": "tight"} if tight else {})))
    finally:
        pyplot().close(fig)
