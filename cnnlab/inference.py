"""Using a finished (or interrupted) run: reload its model, evaluate it, predict image files."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import runs
from .checkpoint import load_checkpoint, load_weights
from .config import TrainConfig
from .data.prepare import prepare_data
from .device import Runtime
from .errors import CnnlabError
from .models import create_model
from .predict import predict_probs


@dataclass
class LoadedRun:
    run_dir: Path
    config: TrainConfig
    meta: dict[str, Any]
    model: torch.nn.Module
    runtime: Runtime

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    @property
    def precision(self) -> str:
        return self.runtime.precision


def load_run(run_dir: str | Path, device: str = "auto") -> LoadedRun:
    """Rebuild a run's model from its config and weights (final weights, else the last checkpoint)."""
    run_dir = runs.check_run_dir(run_dir)
    cfg = TrainConfig.from_yaml(run_dir / runs.CONFIG)
    meta = runs.read_json(run_dir / runs.META)
    model = create_model(meta["model"], len(meta["classes"]), meta["in_channels"], image_size=meta["image_size"],
                         **meta["model_options"])
    if (run_dir / runs.WEIGHTS).exists():
        state = load_weights(run_dir / runs.WEIGHTS)
    elif (run_dir / runs.CHECKPOINT).exists():
        ckpt = load_checkpoint(run_dir / runs.CHECKPOINT)
        state = ckpt["model"] if ckpt.get("ema") is None else _ema_weights(ckpt["ema"])
    else:
        raise CnnlabError(f"{run_dir}: no {runs.WEIGHTS} or {runs.CHECKPOINT} to load")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CnnlabError(f"{run_dir}: weights do not match model {meta['model']!r} ({str(e).splitlines()[0]})") from None
    runtime = Runtime.resolve(device, cfg.precision, cfg.channels_last, training=False)
    model.to(runtime.device).eval()
    return LoadedRun(run_dir, cfg, meta, model, runtime)


def _ema_weights(ema_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len("module."):]: v for k, v in ema_state.items() if k.startswith("module.")}


def evaluate_run(run_dir: str | Path, data: str | None = None, data_dir: str | None = None, tta: str | None = None,
                 device: str = "auto", batch_size: int = 1024, as_json: bool = False) -> dict[str, Any]:
    """All metrics of a run's model on the test split; printed, and saved as eval.json + confusion.png."""
    from .metrics import evaluate_predictions, format_report, plot_confusion
    run = load_run(run_dir, device)
    cfg = run.config.replace(data=data or run.config.data, data_dir=data_dir or run.config.data_dir,
                             train_subset=None, test_subset=None)
    ds = prepare_data(cfg)
    want = (run.meta["in_channels"], run.meta["image_size"])
    got = (ds.in_channels, ds.image_size[0])
    if got != want or ds.image_size[0] != ds.image_size[1]:
        raise CnnlabError(f"--data {cfg.data}: images are {got[0]}x{ds.image_size[0]}x{ds.image_size[1]} but the model "
                          f"takes {want[0]}x{want[1]}x{want[1]}")
    if len(ds.classes) != len(run.meta["classes"]):
        raise CnnlabError(f"--data {cfg.data}: {len(ds.classes)} classes but the model has {len(run.meta['classes'])}")
    tta = tta or run.config.tta
    probs = predict_probs(run.model, ds.test_images, run.meta["mean"], run.meta["std"], run.runtime, tta, batch_size)
    m = evaluate_predictions(probs, ds.test_labels, ds.num_classes, run.meta["classes"])
    m["tta"], m["dataset"] = tta, cfg.data
    runs.write_json(run.run_dir / "eval.json", m)
    plot_confusion(m["confusion"], run.meta["classes"], run.run_dir / runs.CONFUSION)
    print(json.dumps(m) if as_json else format_report(m))
    return m


def collect_images(paths: list[str]) -> list[tuple[Path, bool]]:
    """Expand folders (recursively) into image files, each paired with "named explicitly by the user".

    A missing path is an error naming it.
    """
    from .data.folder import IMAGE_EXTENSIONS

    files: list[tuple[Path, bool]] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file())
            if not found:
                raise CnnlabError(f"{p}: folder holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
            files += [(f, False) for f in found]
        elif p.is_file():
            files.append((p, True))
        else:
            raise CnnlabError(f"{p}: no such file or folder")
    return files


def read_images(files: list[tuple[Path, bool]], size: int, channels: int) -> tuple[list[Path], torch.Tensor]:
    """Decode images as the training data was; an unreadable file found in a folder is skipped with a
    warning naming it, one the user named explicitly is an error."""
    import warnings

    from .data.folder import load_image

    kept, images = [], []
    for f, explicit in files:
        try:
            images.append(load_image(f, size, channels))
        except CnnlabError as e:
            if explicit:
                raise
            warnings.warn(f"skipped {e}")
            continue
        kept.append(f)
    if not images:
        raise CnnlabError("no readable images among the given paths")
    return kept, torch.stack(images)


def predict_files(run_dir: str | Path, paths: list[str], top_k: int = 5, tta: str = "none", device: str = "auto",
                  as_json: bool = False) -> list[dict[str, Any]]:
    """Top-k classes with probabilities for each image, preprocessed exactly as the run's training data."""
    if top_k < 1:
        raise CnnlabError(f"--top-k must be >= 1, got {top_k}")
    run = load_run(run_dir, device)
    files, images = read_images(collect_images(paths), run.meta["image_size"], run.meta["in_channels"])
    probs = predict_probs(run.model, images, run.meta["mean"], run.meta["std"], run.runtime, tta)
    classes = run.meta["classes"]
    k = min(top_k, len(classes))
    results = []
    for f, p in zip(files, probs):
        top = torch.topk(p, k)
        preds = [{"class": classes[i], "probability": round(float(v), 6)} for v, i in zip(top.values, top.indices)]
        results.append({"file": str(f), "top": preds})
        if as_json:
            print(json.dumps(results[-1]))
        else:
            print(f"{f}: " + ", ".join(f"{r['class']} {100 * r['probability']:.1f}%" for r in preds))
    return results
