"""Run folders: ``runs/<name>/`` with config, per-epoch metrics, summary, plots and checkpoints.

Layout::

    config.yaml        the full TrainConfig (repeat with ``cnnlab train --config``)
    meta.json          what predict/eval need without the data: classes, mean/std, input shape
    metrics.jsonl      one JSON object per epoch
    summary.json       final figures (written last: its presence marks a finished run)
    curves.png         loss and accuracy per epoch
    confusion.png      confusion matrix of the final evaluation (eval-confusion.png: `cnnlab eval`'s own)
    .lock              held by the process writing the run (cnnlab.lock); a dead owner's is taken over
    reconstructions.png  autoencoders: test images and their reconstructions (denoising.png: at 0-50% noise)
    pretrain.pt, pretrain.jsonl, pretrain.png  a pre-training stage (dbn): its checkpoint, metrics per epoch, curves
    evals/<name>.json  `cnnlab eval --corrupt/--denoiser/--output`: never the run's own eval.json
    checkpoint.pt      latest full training state (torch.load(weights_only=True))
    model.safetensors  final weights (EMA weights when EMA is on): the last epoch's
    best.safetensors   the weights of the best epoch on the validation split (cnnlab.selection)
    split.json         the validation split: fraction, seed, which training images (cnnlab.data.split)
    metrics.csv        metrics.jsonl as a table; tb/ TensorBoard event files when installed (cnnlab.logs)
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .files import atomic_write_text
from .errors import CnnlabError
from .sizes import as_hw, is_stored_size, size_value

CONFIG, META, METRICS, SUMMARY = "config.yaml", "meta.json", "metrics.jsonl", "summary.json"
CHECKPOINT, WEIGHTS, CURVES, CONFUSION = "checkpoint.pt", "model.safetensors", "curves.png", "confusion.png"
BEST_WEIGHTS, SPLIT, METRICS_CSV, TENSORBOARD = "best.safetensors", "split.json", "metrics.csv", "tb"
RECONSTRUCTIONS, DENOISING = "reconstructions.png", "denoising.png"  # reconstruct objective (autoencoders)
PRETRAIN_CHECKPOINT, PRETRAIN_METRICS, PRETRAIN_CURVES = "pretrain.pt", "pretrain.jsonl", "pretrain.png"
EVALS = "evals"  # named evaluations (cnnlab eval --corrupt/--denoiser/--output): evals/<name>.json


def default_run_name(data: str, model: str) -> str:
    return f"{data}-{model}-{time.strftime('%Y%m%d-%H%M%S')}"


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CnnlabError(f"{path}: not found") from None
    except ValueError as e:  # JSONDecodeError, or bytes that are not UTF-8
        raise CnnlabError(f"{path}: not valid JSON ({e})") from None


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=float) + "\n")


def write_meta(run_dir: Path, cfg: Any, ds: Any, extra: dict[str, Any] | None = None) -> None:
    """meta.json: what inference needs to rebuild the model and preprocess inputs exactly as in training.

    ``mean``/``std`` are the input scaling (cnnlab.data.scaling); ``extra`` adds facts of the run's kind,
    e.g. ``features``: the autoencoder a two-stage classifier depends on (cnnlab.two_stage).
    """
    write_json(Path(run_dir) / META, {
        "model": cfg.model, "model_options": cfg.model_kwargs(), "dataset": cfg.data, "classes": ds.classes,
        # image_size: S for square images (as every run folder before non-square inputs), else [H, W]
        "in_channels": ds.in_channels, "image_size": None if ds.is_signal else size_value(ds.image_size),
        **({"length": ds.length} if ds.is_signal else {}),  # 1-D signals [C, L]: length, no image_size
        "mean": list(ds.mean), "std": list(ds.std), "input_scaling": cfg.input_scaling, **(extra or {})})


# what every meta.json must hold, and of which type (a hand-edited or damaged file is named, not a KeyError)
META_FIELDS = {"model": str, "model_options": dict, "classes": list, "in_channels": int, "mean": list, "std": list}


def read_meta(run_dir: Path) -> dict[str, Any]:
    """``meta.json``, checked: its required fields present with the right types, classes a list of names."""
    path = Path(run_dir) / META
    meta = read_json(path)
    if not isinstance(meta, dict):
        raise CnnlabError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    for key, kind in META_FIELDS.items():
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            raise CnnlabError(f"{path}: field {key!r} must be a {kind.__name__}, got {meta.get(key)!r:.60}")
    if not meta["classes"] or not all(isinstance(c, str) for c in meta["classes"]):
        raise CnnlabError(f"{path}: field 'classes' must be a non-empty list of class names")
    if meta.get("length"):
        side = meta["length"]
        if not isinstance(side, int) or isinstance(side, bool) or side < 1:
            raise CnnlabError(f"{path}: field 'length' must be a positive integer, got {side!r}")
    elif not is_stored_size(meta.get("image_size")):
        raise CnnlabError(f"{path}: field 'image_size' must be a positive integer or [height, width], "
                          f"got {meta.get('image_size')!r}")
    return meta


def image_hw(meta: dict[str, Any]) -> tuple[int, int]:
    """(H, W) of the images a run's model takes (meta.json holds S for square, [H, W] otherwise)."""
    return as_hw(meta["image_size"])


def input_shape(meta: dict[str, Any]) -> tuple[int, ...]:
    """The shape (no batch) a run's model takes, from its meta.json: (C, H, W) images or (C, L) signals."""
    if meta.get("length"):
        return meta["in_channels"], meta["length"]
    return (meta["in_channels"], *image_hw(meta))


def load_model(run_dir: Path, meta: dict[str, Any] | None = None):
    """Rebuild a run's model (on the CPU) from ``meta.json`` and its weights: the final weights, else the
    last checkpoint's (its EMA weights when the run keeps an average)."""
    from .checkpoint import load_checkpoint, load_weights
    from .models import create_model

    run_dir = Path(run_dir)
    meta = meta if meta is not None else read_meta(run_dir)
    from .models.registry import size_options

    model = create_model(meta["model"], len(meta["classes"]), meta["in_channels"], **size_options(input_shape(meta)),
                         **meta["model_options"])
    if (run_dir / WEIGHTS).exists():
        state = load_weights(run_dir / WEIGHTS)
    elif (run_dir / CHECKPOINT).exists():
        ckpt = load_checkpoint(run_dir / CHECKPOINT)
        state = ckpt["model"] if ckpt.get("ema") is None else _ema_weights(ckpt["ema"])
    else:
        raise CnnlabError(f"{run_dir}: no {WEIGHTS} or {CHECKPOINT} to load")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        from .checkpoint import mismatch

        raise CnnlabError(f"{run_dir}: weights do not match model {meta['model']!r} ({mismatch(e)})") from None
    return model


def _ema_weights(ema_state: dict[str, Any]) -> dict[str, Any]:
    return {k[len("module."):]: v for k, v in ema_state.items() if k.startswith("module.")}


def read_metrics(run_dir: Path, name: str = METRICS) -> list[dict[str, Any]]:
    """The per-epoch rows (of ``name``: metrics.jsonl, or pretrain.jsonl). A torn or damaged line (a
    crash mid-write, an edit) is skipped, never the valid rows after it; a row is a JSON object with
    an integer ``epoch``."""
    path = Path(run_dir) / name
    if not path.exists():
        return []
    rows = []
    for line in path.read_bytes().decode("utf-8", "replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:  # a torn or damaged line: skip it, keep the rows around it
            continue
        if isinstance(row, dict) and isinstance(row.get("epoch"), int):
            rows.append(row)
    return rows


def write_metrics(run_dir: Path, rows: list[dict[str, Any]], name: str = METRICS) -> None:
    """Rewrite metrics.jsonl (or ``name``) atomically (keeps it consistent with the checkpoint on resume)."""
    atomic_write_text(Path(run_dir) / name, "".join(json.dumps(r, default=float) + "\n" for r in rows))


def resume_rows(run_dir: Path, saved: list[dict[str, Any]] | None, epoch: int) -> list[dict[str, Any]]:
    """The metrics rows a resumed run continues with, written back to metrics.jsonl.

    ``saved``: the rows the checkpoint holds (``None`` for checkpoints older than that); they are the
    truth, so a row lost between the checkpoint write and the metrics append, a deleted
    metrics.jsonl or a damaged line comes back. Without them the file's rows up to ``epoch`` are kept,
    and a missing file is said, not passed over in silence."""
    import warnings

    on_disk = [r for r in read_metrics(run_dir) if r["epoch"] <= epoch]
    if saved is None:
        if epoch and not on_disk:
            warnings.warn(f"{Path(run_dir) / METRICS}: missing or empty; the rows of epochs 1-{epoch} are lost "
                          "(the checkpoint is older than checkpoints that keep them)", stacklevel=2)
        rows = on_disk
    else:
        rows = saved
        if on_disk != saved:
            warnings.warn(f"{Path(run_dir) / METRICS}: held {len(on_disk)} of the {len(saved)} rows the checkpoint "
                          "vouches for (a crash after the checkpoint, or an edit); rewritten from the checkpoint",
                          stacklevel=2)
    write_metrics(run_dir, rows)
    return rows


def finished_summary(run_dir: Path, epochs: float | None) -> dict[str, Any] | None:
    """A finished run's summary when ``--resume`` asks for no more epochs than it was trained for; else
    ``None``: not finished, or asked to go on (``--epochs`` above its config.yaml's), in which case
    the summary is removed, since the run is unfinished again until the new last epoch ends. Under DDP only
    process 0 calls it (cnnlab.train tells the others its answer)."""
    path = Path(run_dir) / SUMMARY
    if not path.exists():
        return None
    summary = read_json(path)
    from .config import read_yaml

    saved = read_yaml(Path(run_dir) / CONFIG)
    trained = saved.get("epochs") if isinstance(saved, dict) else None
    # epochs None: the resume names no length of its own (it runs by --steps or the default), so it asks for no more
    if epochs is None or not isinstance(trained, (int, float)) or isinstance(trained, bool) or epochs <= trained:
        return summary
    path.unlink()
    return None


def check_run_dir(path: str | Path) -> Path:
    """A folder that holds a cnnlab run, or a clear error."""
    p = Path(path)
    if not p.is_dir():
        raise CnnlabError(f"{p}: run folder not found")
    if not (p / CONFIG).is_file():
        raise CnnlabError(f"{p}: not a cnnlab run folder (no {CONFIG})")
    if (p / CONFIG).stat().st_size == 0:
        raise CnnlabError(f"{p / CONFIG}: empty (damaged); restore it from the checkpoint's config or a copy")
    return p


def switch_epoch(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Where the Adam->SGD switch (``adam-sgd-switch``) fired, from a run's per-epoch rows.

    ``None`` when no row says ``switched`` (another optimizer, or the switch never fired).
    Otherwise ``{"epoch": E, "x": X, "step": N, "sgd_lr": L}``: the switch came after optimizer
    step N (``switch_step``), which falls in epoch E (1-based, the first row that reports the
    switch); X is that point on an epoch axis whose point e is the end of epoch e:
    ``X = E - 1 + (N - S[E-1]) / (S[E] - S[E-1])`` with S[e] the step count at the end of epoch e
    (the rows' ``step``), so X = E when it fired after the last step of epoch E; L is the learned
    SGD rate (``sgd_lr``, Lambda).
    """
    prev_step = 0
    for r in rows:
        if r.get("switched") and r.get("switch_step") is not None:
            n, end, e = int(r["switch_step"]), r.get("step"), int(r["epoch"])
            x = float(e)
            if end is not None and end > prev_step:
                x = e - 1 + min(max((n - prev_step) / (end - prev_step), 0.0), 1.0)
            return {"epoch": e, "x": x, "step": n, "sgd_lr": r.get("sgd_lr")}
        prev_step = r.get("step") or prev_step
    return None


def plot_curves(rows: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Loss, accuracy (train and test) and, when logged, the learning rate per epoch, side by side.

    For an ``adam-sgd-switch`` run that switched, every panel gets a vertical line where the
    switch fired (:func:`switch_epoch`) and the rate panel also shows the SGD rate after it
    (``sgd_lr_now``; the logged ``lr`` stays Adam's alpha times the schedule).
    """
    if not rows:
        return
    from matplotlib.ticker import MaxNLocator

    from .plots import pyplot, save_figure

    plt = pyplot()

    def series(key: str, scale: float = 1.0) -> list[tuple[float, float]]:
        return [(r["epoch"], scale * r[key]) for r in rows if r.get(key) is not None]

    has_lr = bool(series("lr"))
    fig, axes = plt.subplots(1, 3 if has_lr else 2, figsize=(14, 4) if has_lr else (10, 4),
                             gridspec_kw={"width_ratios": [1, 1, 0.7] if has_lr else [1, 1]})
    ax_loss, ax_metric = axes[0], axes[1]
    for key in ("train_loss", "val_loss"):  # per-epoch figures are on the validation split
        if pts := series(key):
            ax_loss.plot(*zip(*pts), marker="o", label=key.split("_")[0])  # "train" / "val"
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    if any("train_acc" in r or "val_acc" in r for r in rows):  # classification: accuracy in percent
        for key in ("train_acc", "val_acc"):
            if pts := series(key, 100):
                ax_metric.plot(*zip(*pts), marker="o", label=key.split("_")[0])
        ax_metric.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    else:  # another objective: its own train_*/val_* metrics as logged
        keys = sorted({k for r in rows for k, v in r.items() if k.startswith(("train_", "val_"))
                       and k not in ("train_loss", "val_loss") and isinstance(v, (int, float))})
        for key in keys:
            ax_metric.plot(*zip(*series(key)), marker="o", label=key)
        ax_metric.set(xlabel="epoch", title="metrics")
    if has_lr:
        ax_lr = axes[2]
        ax_lr.plot(*zip(*series("lr")), marker=".", label="lr")
        if pts := series("sgd_lr_now"):
            ax_lr.plot(*zip(*pts), marker=".", label="SGD lr after switch")
        values = [y for k in ("lr", "sgd_lr_now") for _, y in series(k)]
        if min(values) > 0 and max(values) / min(values) > 50:
            ax_lr.set_yscale("log")
        ax_lr.set(xlabel="epoch", ylabel="learning rate", title="learning rate (end of epoch)")
    sw = switch_epoch(rows)
    for i, ax in enumerate(axes):
        if sw is not None:
            lr = f", lr {sw['sgd_lr']:.3g}" if sw["sgd_lr"] is not None else ""
            ax.axvline(sw["x"], color="tab:red", linestyle="--", linewidth=1,
                       label=f"Adam→SGD switch (step {sw['step']}{lr})" if i == 0 else None)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
