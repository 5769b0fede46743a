"""Logs beside metrics.jsonl (which stays the source of truth): ``metrics.csv`` always, and TensorBoard
event files in ``tb/`` when ``torch.utils.tensorboard`` can be imported (``pip install cnnlab[tensorboard]``),
so ``tensorboard --logdir runs/`` shows every run, and every study's runs, side by side.

Scalars are logged per epoch with the optimizer step as x (so runs of other batch sizes line up by
update count) under ``train/``, ``val/``, ``test/`` and ``other/`` by their key's split; the test figures
appear once, at the end.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from .files import atomic_write_text


def csv_text(rows: list[dict[str, Any]]) -> str:
    """The rows as CSV: every key that appears, in order of first appearance; numbers and strings only."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k, v in r.items() if k not in keys and not isinstance(v, (dict, list))]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(path, csv_text(rows))


def tensorboard_available() -> bool:
    import importlib

    try:
        importlib.import_module("torch.utils.tensorboard")  # needs the tensorboard package
    except Exception:  # ImportError, or a tensorboard too old/new for this torch
        return False
    return True


def _tag(key: str) -> str:
    for split in ("train", "val", "test"):
        if key.startswith(split + "_"):
            return f"{split}/{key[len(split) + 1:]}"
    return f"other/{key}"


class RunLogger:
    """Per-epoch rows to metrics.csv and, when enabled and installed, TensorBoard (``tb/`` in the run folder)."""

    def __init__(self, run_dir: Path, csv_name: str, tb_dir: str, tensorboard: bool = True):
        self.csv_path = Path(run_dir) / csv_name
        self.writer = None
        if tensorboard and tensorboard_available():
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(Path(run_dir) / tb_dir))

    def epoch(self, rows: list[dict[str, Any]]) -> None:
        """After each epoch: the CSV rewritten from all rows, the newest row to TensorBoard."""
        write_csv(self.csv_path, rows)
        if self.writer is not None and rows:
            row = rows[-1]
            step = int(row.get("step", row["epoch"]))
            for k, v in row.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("epoch", "step"):
                    self.writer.add_scalar(_tag(k), v, step)
            self.writer.flush()

    def finish(self, summary: dict[str, Any]) -> None:
        """The end-of-run figures (the test split's, once) and close."""
        if self.writer is None:
            return
        step = int(summary.get("steps") or 0)
        for k in ("test_acc", "test_loss", "top5", "f1", "best_val_acc", "best_val_loss"):
            v = summary.get(k)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                self.writer.add_scalar(_tag(k if k.startswith(("test_", "best_")) else f"test_{k}"), v, step)
        self.writer.close()
        self.writer = None
