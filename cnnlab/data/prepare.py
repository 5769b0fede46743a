"""The dataset a run trains on: loaded once, then resized / converted and subset as configured.

Used by the trainer and by ``cnnlab eval``, so both see exactly the same pixels.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ..registry import accepted_options, check_options
from .base import DATASETS, ArrayDataset, channel_stats, load_dataset
from .scaling import fit_scaling, parse_scaling

if TYPE_CHECKING:
    from ..config import TrainConfig


def prepare_data(cfg: "TrainConfig") -> ArrayDataset:
    """Load the configured dataset once, then resize / convert channels / take subsets if the config asks."""
    spec = DATASETS.get(cfg.data)
    check_options(spec.load, cfg.data_options, f"dataset {cfg.data!r}", skip=("data_dir", "download"))
    accepted = accepted_options(spec.load)
    # The run's seed picks the folder dataset's validation split (as in a seeded random split),
    # but never regenerates `synthetic`, whose images stay fixed across seeds.
    wanted = {"size": cfg.image_size, "channels": cfg.channels, "val_split": cfg.val_split,
              "strict": cfg.strict, "seed": cfg.seed if cfg.data == "folder" else None}
    options = {k: v for k, v in wanted.items() if v is not None and (accepted is None or k in accepted)}
    options.update(cfg.data_options)
    ds = load_dataset(cfg.data, cfg.data_dir, cfg.download, **options)
    ds = convert_dataset(ds, cfg.image_size, cfg.channels)
    if cfg.train_subset is not None and cfg.train_subset < len(ds.train_labels):
        ds.train_images = ds.train_images[: cfg.train_subset]
        ds.train_labels = ds.train_labels[: cfg.train_subset]
    if cfg.test_subset is not None and cfg.test_subset < len(ds.test_labels):
        ds.test_images = ds.test_images[: cfg.test_subset]
        ds.test_labels = ds.test_labels[: cfg.test_subset]
    if cfg.cv_fold:  # cross-validation: a fold of the training split stands in for the test split
        ds = cross_validation_fold(ds, cfg.cv_fold)
    # --input-scaling: standard keeps the loader's per-channel statistics; minmax is fitted on the training
    # images used. A two-stage run scales its codes instead (cnnlab.two_stage), the images by its autoencoder's.
    if parse_scaling(cfg.input_scaling)[0] != "standard" and not cfg.features_from:
        ds.mean, ds.std = fit_scaling(cfg.input_scaling, ds.train_images)
    return ds


def convert_images(x: torch.Tensor, size: int | None, channels: int | None) -> torch.Tensor:
    """Resize (bilinear, antialiased) and convert grey<->RGB a uint8 batch, once, in chunks."""
    if channels is not None and x.shape[1] != channels:
        if channels == 3:
            x = x.expand(-1, 3, -1, -1).contiguous()
        else:  # ITU-R 601 luma, as Pillow's convert("L")
            w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            x = (x.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    if size is not None and tuple(x.shape[2:]) != (size, size):
        out = [F.interpolate(c.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
               for c in x.split(4096)]
        x = torch.cat(out).round().clamp(0, 255).to(torch.uint8)
    return x


def convert_dataset(ds: ArrayDataset, size: int | None, channels: int | None) -> ArrayDataset:
    if (size is None or ds.image_size == (size, size)) and (channels is None or ds.in_channels == channels):
        return ds
    ds.train_images = convert_images(ds.train_images, size, channels)
    ds.test_images = convert_images(ds.test_images, size, channels)
    ds.mean, ds.std = channel_stats(ds.train_images)
    return ds


FOLD_SEED = 0  # the folds never change with the run's seed: every setting is scored on the same folds


def cross_validation_fold(ds: ArrayDataset, fold: str) -> ArrayDataset:
    """``--cv-fold I/K``: the training split minus its fold I becomes the training split, fold I the
    evaluation split; the test split is dropped (selection never looks at it).

    The K folds are stratified and fixed: the training images are shuffled once with a fixed seed,
    and the j-th image of each class goes to fold j mod K, so every class is spread evenly. The
    per-channel statistics are recomputed on what remains for training.
    """
    i, k = (int(v) for v in fold.split("/"))
    order = torch.randperm(len(ds.train_labels), generator=torch.Generator().manual_seed(FOLD_SEED))
    fold_of = torch.empty(len(order), dtype=torch.long)
    for c in ds.train_labels.unique():
        members = order[ds.train_labels[order] == c]
        fold_of[members] = torch.arange(len(members)) % k
    held_out = fold_of == i - 1
    ds.test_images, ds.test_labels = ds.train_images[held_out], ds.train_labels[held_out]
    ds.train_images, ds.train_labels = ds.train_images[~held_out], ds.train_labels[~held_out]
    if ds.train_images.dtype == torch.uint8:
        ds.mean, ds.std = channel_stats(ds.train_images)
    ds.extra["evaluated_on"] = f"validation fold {i}/{k} of the training split"
    return ds
