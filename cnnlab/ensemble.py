"""Ensembles: ``cnnlab eval RUN1 RUN2 ...`` averages the predicted probabilities of several runs.

The optimizer paper's Table 2 (AlexNet, ILSVRC-2012: "averaging the predictions of five similar
CNNs gives an error rate of 16.4%" against 18.2% for one) is the reason: the members are trained
alike with different seeds, and the ensemble's class probabilities are the arithmetic mean of
theirs, p(y | x) = (1/M) sum_m p_m(y | x). Probabilities, not logits, are averaged -- as test-time
augmentation does (:func:`cnnlab.data.augment.predict_tta`) -- so the result is itself a
distribution and its log-loss is meaningful.

Each member is evaluated on its own run's test split (its own image size and normalization, so
members may differ in architecture); the members must agree on the class names and on the test
labels, which is checked before anything is averaged. Nothing is written unless ``output`` names
the evaluation: then ``evals/NAME.json`` goes into every member's folder (a study reads it from
there as ``acc@NAME``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from . import runs
from .errors import CnnlabError


def evaluate_ensemble(run_dirs: list[str | Path], data: str | None = None, data_dir: str | None = None,
                      tta: str | None = None, device: str = "auto", batch_size: int = 1024, as_json: bool = False,
                      corrupt: str | None = None, corrupt_seed: int = 0, output: str | None = None,
                      overwrite: bool = False, weights: str = "auto", quiet: bool = False) -> dict[str, Any]:
    """Metrics of the averaged probabilities of ``run_dirs`` on the test split, plus each member's accuracy."""
    from .data.corrupt import corrupt_images, parse_corruption
    from .data.prepare import prepare_data
    from .inference import is_autoencoder, load_run
    from .metrics import evaluate_predictions
    from .predict import predict_probs

    if len(run_dirs) < 2:
        raise CnnlabError("an ensemble needs at least two run folders")
    dirs = [runs.check_run_dir(d) for d in run_dirs]
    if len({d.resolve() for d in dirs}) != len(dirs):
        raise CnnlabError("an ensemble lists the same run folder twice: " + " ".join(map(str, dirs)))
    corruption = parse_corruption(corrupt) if corrupt else None
    paths = [d / runs.EVALS / f"{output}.json" for d in dirs] if output else []
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        raise CnnlabError(f"{existing[0]} exists (an earlier evaluation); choose another --output NAME, or replace "
                          f"it with --overwrite")
    members, total, labels, classes = [], None, None, None
    datasets: dict[str, Any] = {}  # members trained on the same data share one loaded copy
    for d in dirs:
        run = load_run(d, device, weights=weights)
        if is_autoencoder(run.config) or (run.meta.get("features") or {}):
            raise CnnlabError(f"{d}: only image classifiers can be ensembled (this run is an autoencoder or a "
                              f"two-stage classifier)")
        if classes is None:
            classes = list(run.meta["classes"])
        elif list(run.meta["classes"]) != classes:
            raise CnnlabError(f"{d}: its classes {_short(run.meta['classes'])} differ from {dirs[0]}'s "
                              f"{_short(classes)}; ensemble members must predict the same classes in the same order")
        cfg = run.config.replace(data=data or run.config.data, data_dir=data_dir or run.config.data_dir,
                                 train_subset=None, test_subset=None, features_from=None, denoiser=None,
                                 input_scaling="standard")
        key = json.dumps({k: v for k, v in cfg.to_dict().items() if k in ("data", "data_dir", "image_size")},
                         sort_keys=True, default=str)
        if key not in datasets:
            datasets[key] = prepare_data(cfg)
        ds = datasets[key]
        if (ds.in_channels, *ds.image_size) != runs.input_shape(run.meta):
            raise CnnlabError(f"{d}: the test images are {ds.in_channels}x{ds.image_size[0]}x{ds.image_size[1]} but "
                              f"the model takes {'x'.join(map(str, runs.input_shape(run.meta)))}")
        if labels is None:
            labels = ds.test_labels
        elif not torch.equal(ds.test_labels, labels):
            raise CnnlabError(f"{d}: its test split ({len(ds.test_labels)} labels) is not {dirs[0]}'s "
                              f"({len(labels)}); ensemble members must be evaluated on the same images")
        images = corrupt_images(ds.test_images, corruption, corrupt_seed) if corruption else ds.test_images
        probs = predict_probs(run.model, images, run.meta["mean"], run.meta["std"], run.runtime,
                              tta or run.config.tta, batch_size)
        m = evaluate_predictions(probs, labels, len(classes), classes)
        members.append({"run": str(d), "acc": m["acc"], "top5": m["top5"], "nll": m["nll"]})
        total = probs if total is None else total + probs
    assert total is not None and labels is not None and classes is not None
    m = evaluate_predictions(total / len(dirs), labels, len(classes), classes)
    m.update(ensemble=len(dirs), members=members, tta=tta, corrupt=str(corruption) if corruption else None,
             corrupt_seed=corrupt_seed if corruption else None,
             member_mean_acc=sum(x["acc"] for x in members) / len(members))
    for p in paths:
        runs.write_json(p, m)
    if not quiet:
        print(json.dumps(m) if as_json else format_ensemble(m))
    return m


def _short(names: list) -> str:
    names = [str(n) for n in names]
    return ", ".join(names[:5]) + (f", ... ({len(names)} classes)" if len(names) > 5 else "")


def format_ensemble(m: dict[str, Any]) -> str:
    lines = [f"{'run':<50} {'acc':>8} {'top-5':>8} {'log-loss':>9}"]
    for x in m["members"]:
        lines.append(f"{Path(x['run']).name:<50} {100 * x['acc']:7.2f}% {100 * x['top5']:7.2f}% {x['nll']:9.4f}")
    label = f"ensemble of {m['ensemble']} (mean probabilities)"
    lines.append(f"{label:<50} {100 * m['acc']:7.2f}% "
                 f"{100 * m['top5']:7.2f}% {m['nll']:9.4f}")
    lines.append(f"single runs on average: {100 * m['member_mean_acc']:.2f}% -> ensemble {100 * m['acc']:.2f}%")
    return "\n".join(lines)
