"""Run folders: ``runs/<name>/`` with config, per-epoch metrics, summary, plots and checkpoints.

Layout::

    config.yaml        the full TrainConfig (repeat with ``cnnlab train --config``)
    meta.json          what predict/eval need without the data: classes, mean/std, input shape
    metrics.jsonl      one JSON object per epoch
    summary.json       final figures (written last: its presence marks a finished run)
    curves.png         loss and accuracy per epoch
    confusion.png      confusion matrix of the final evaluation
    checkpoint.pt      latest full training state (torch.load(weights_only=True))
    model.safetensors  final weights (EMA weights when EMA is on)
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .checkpoint import atomic_write_text
from .errors import CnnlabError

CONFIG, META, METRICS, SUMMARY = "config.yaml", "meta.json", "metrics.jsonl", "summary.json"
CHECKPOINT, WEIGHTS, CURVES, CONFUSION = "checkpoint.pt", "model.safetensors", "curves.png", "confusion.png"


def default_run_name(data: str, model: str) -> str:
    return f"{data}-{model}-{time.strftime('%Y%m%d-%H%M%S')}"


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CnnlabError(f"{path}: not found") from None
    except json.JSONDecodeError as e:
        raise CnnlabError(f"{path}: not valid JSON ({e})") from None


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=float) + "\n")


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The per-epoch lines; a torn last line (crash mid-write) is ignored."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def write_metrics(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite metrics.jsonl atomically (keeps it consistent with the checkpoint on resume)."""
    atomic_write_text(Path(run_dir) / METRICS, "".join(json.dumps(r, default=float) + "\n" for r in rows))


def check_run_dir(path: str | Path) -> Path:
    """A folder that holds a cnnlab run, or a clear error."""
    p = Path(path)
    if not p.is_dir():
        raise CnnlabError(f"{p}: run folder not found")
    if not (p / CONFIG).is_file():
        raise CnnlabError(f"{p}: not a cnnlab run folder (no {CONFIG})")
    return p


def plot_curves(rows: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Loss and accuracy per epoch (train and test) side by side."""
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("train_loss", "train"), ("test_loss", "test")):
        pts = [(e, r[key]) for e, r in zip(epochs, rows) if r.get(key) is not None]
        if pts:
            ax_loss.plot(*zip(*pts), marker="o", label=label)
    for key, label in (("train_acc", "train"), ("test_acc", "test")):
        pts = [(e, 100 * r[key]) for e, r in zip(epochs, rows) if r.get(key) is not None]
        if pts:
            ax_acc.plot(*zip(*pts), marker="o", label=label)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
