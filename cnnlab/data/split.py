"""The validation split: a stratified, seeded part of the training split that selection looks at.

Every dataset gets one (``--val-split FRACTION``, default :data:`DEFAULT_VAL_SPLIT`): the trainer
evaluates it every epoch and chooses the best checkpoint, stops early, stops at ``--target-acc``
and drives the ``plateau`` schedule on it, so the test split is looked at once, at the end.

Per class with ``n`` training images, ``round(n * fraction)`` go to validation, at least one and at
most ``n - 1`` (a class with a single image keeps it for training). That rule is what lets a small
folder (ten photos a class) use the default without tripping: every class is seen in training and,
where it can be, in validation. The images are drawn with the run's seed; which ones were drawn is
recorded in the run folder (``split.json``) so the split can be checked against the test split.
"""
from __future__ import annotations

from typing import Any

import torch

from .base import ArrayDataset, channel_stats

DEFAULT_VAL_SPLIT = 0.1


def validation_indices(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Sorted positions (into ``labels``) of the validation images: stratified, seeded (see the module doc)."""
    if fraction <= 0 or len(labels) == 0:
        return torch.zeros(0, dtype=torch.long)
    g = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(len(labels), generator=g)
    chosen = []
    for c in labels.unique().tolist():
        members = order[labels[order] == c]  # this class, in the seeded order
        n = len(members)
        n_val = 0 if n < 2 else min(n - 1, max(1, int(n * fraction + 0.5)))
        chosen.append(members[:n_val])
    return torch.cat(chosen).sort().values


def split_validation(ds: ArrayDataset, fraction: float, seed: int) -> ArrayDataset:
    """Move a validation split out of ``ds``'s training split (in place; also returned).

    The per-channel statistics are refitted on what remains for training (pixels only: features keep
    theirs), so nothing about the validation images reaches the model's input scaling.
    """
    idx = validation_indices(ds.train_labels, fraction, seed)
    keep = torch.ones(len(ds.train_labels), dtype=torch.bool)
    keep[idx] = False
    ds.val_images, ds.val_labels = ds.train_images[idx], ds.train_labels[idx]
    ds.train_images, ds.train_labels = ds.train_images[keep], ds.train_labels[keep]
    if len(idx) and ds.train_images.dtype == torch.uint8:
        ds.mean, ds.std = channel_stats(ds.train_images)
    ds.extra["validation"] = {"fraction": fraction, "seed": seed, "images": len(idx),
                              "indices": idx.tolist(), "of": "the training split as loaded (after --train-subset)"}
    files = ds.extra.get("train_files")
    if files and len(files) == len(keep):  # a folder dataset: name the files, too
        ds.extra["validation"]["files"] = [files[i] for i in idx.tolist()]
        ds.extra["train_files"] = [f for f, k in zip(files, keep.tolist()) if k]
    return ds


def split_record(ds: ArrayDataset) -> dict[str, Any]:
    """What ``split.json`` holds: the validation rule, its images, and the split sizes."""
    record = dict(ds.extra.get("validation") or {"fraction": 0.0, "images": 0, "indices": []})
    record["sizes"] = {"train": len(ds.train_labels), "val": ds.num_val, "test": len(ds.test_labels)}
    record["evaluated_on"] = ds.extra.get("evaluated_on", "test split")
    return record
