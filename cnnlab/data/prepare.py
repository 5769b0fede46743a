"""The dataset a run trains on: loaded once, then resized / converted and subset as configured.

Used by the trainer and by ``cnnlab eval``, so both see exactly the same pixels.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ..errors import CnnlabError
from ..registry import accepted_options, check_options
from ..sizes import as_hw, loader_size, size_text
from .base import DATASETS, ArrayDataset, channel_stats, load_dataset
from .scaling import fit_scaling, parse_scaling
from .split import split_validation

if TYPE_CHECKING:
    from ..config import TrainConfig


def prepare_data(cfg: "TrainConfig") -> ArrayDataset:
    """Load the configured dataset once, then resize / convert channels / take subsets if the config asks."""
    from .stream import choose_data_path, open_stream

    if choose_data_path(cfg) == "stream":  # larger than memory: only its test split is decoded (eval, export)
        return open_stream(cfg).dataset
    spec = DATASETS.get(cfg.data)
    check_options(spec.load, cfg.data_options, f"dataset {cfg.data!r}", skip=("data_dir", "download"))
    accepted = accepted_options(spec.load)
    # The run's seed picks the folder dataset's validation split (as in a seeded random split),
    # but never regenerates `synthetic`, whose images stay fixed across seeds.
    size = None if cfg.image_size is None else loader_size(cfg.image_size)  # S, or (H, W) when not square
    wanted = {"size": size, "channels": cfg.channels, "test_split": cfg.test_split, "strict": cfg.strict, "seed": cfg.seed if cfg.data == "folder" else None}
    options = {k: v for k, v in wanted.items() if v is not None and (accepted is None or k in accepted)}
    options.update(cfg.data_options)
    if cfg.image_size and spec.train_size and spec.test_size:  # before a loader generates or resizes anything
        n = options.get("train_size", spec.train_size) + options.get("test_size", spec.test_size)
        if isinstance(n, int):
            check_fits_in_memory(n, cfg.channels or spec.channels or 3, cfg.image_size, cfg.data)
    ds = load_dataset(cfg.data, cfg.data_dir, cfg.download, **options)
    ds = convert_dataset(ds, cfg.image_size, cfg.channels)
    if ds.is_signal and cfg.tta != "none":  # refused now, not after the first epoch
        raise CnnlabError(f"--tta {cfg.tta}: test-time augmentation (flips, shifts) is for images, not 1-D signals")
    if cfg.train_subset is not None and cfg.train_subset < len(ds.train_labels):
        ds.train_images = ds.train_images[: cfg.train_subset]
        ds.train_labels = ds.train_labels[: cfg.train_subset]
    if cfg.test_subset is not None and cfg.test_subset < len(ds.test_labels):
        ds.test_images = ds.test_images[: cfg.test_subset]
        ds.test_labels = ds.test_labels[: cfg.test_subset]
    if cfg.cv_fold:  # cross-validation: a fold of the training split stands in for the test split; the fold's
        ds = cross_validation_fold(ds, cfg.cv_fold)  # score is of the last weights (nothing chosen on it)
    elif cfg.val_split > 0:  # the validation split every choice made while training looks at
        ds = split_validation(ds, cfg.val_split, cfg.seed)
    # --input-scaling: standard keeps the loader's per-channel statistics; minmax is fitted on the training
    # images used. A two-stage run scales its codes instead (cnnlab.two_stage), the images by its autoencoder's.
    # Signals (float, no pixel statistics refitted by the split) refit `standard` too, on what trains.
    if (parse_scaling(cfg.input_scaling)[0] != "standard" or ds.is_signal) and not cfg.features_from:
        ds.mean, ds.std = fit_scaling(cfg.input_scaling, ds.train_images)
    return ds


def convert_images(x: torch.Tensor, size, channels: int | None) -> torch.Tensor:
    """Resize to ``size`` (S or (H, W); bilinear, antialiased) and convert grey<->RGB a uint8 batch, once,
    in chunks."""
    if channels is not None and x.shape[1] != channels:
        if channels == 3:
            x = x.expand(-1, 3, -1, -1).contiguous()
        else:  # ITU-R 601 luma, as Pillow's convert("L")
            luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            x = (x.float() * luma).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    h, w = as_hw(size) if size is not None else x.shape[2:]
    if (h, w) != tuple(x.shape[2:]):
        per_image = 4 * x.shape[1] * max(h * w, x.shape[2] * x.shape[3])  # float bytes, in or out
        chunk = max(1, min(4096, (256 << 20) // per_image))  # float work space stays near 256 MB
        out = [F.interpolate(c.float(), size=(h, w), mode="bilinear", antialias=True, align_corners=False)
               for c in x.split(chunk)]
        x = torch.cat(out).round().clamp(0, 255).to(torch.uint8)
    return x


def convert_dataset(ds: ArrayDataset, size, channels: int | None) -> ArrayDataset:
    if ds.is_signal:  # 1-D signals are resampled by their loader (length=N), never resized as images
        if size is not None or (channels is not None and channels != ds.in_channels):
            raise CnnlabError(f"{ds.name}: --image-size and --channels apply to images; {ds.name} holds 1-D signals "
                              f"({ds.in_channels}x{ds.length}): resample them with --data-options length=N")
        return ds
    if (size is None or ds.image_size == as_hw(size)) and (channels is None or ds.in_channels == channels):
        return ds
    check_fits_in_memory(len(ds.train_labels) + len(ds.test_labels), channels or ds.in_channels,
                         ds.image_size if size is None else size, ds.name)
    ds.train_images = convert_images(ds.train_images, size, channels)
    ds.test_images = convert_images(ds.test_images, size, channels)
    ds.mean, ds.std = channel_stats(ds.train_images)
    return ds


def check_fits_in_memory(n: int, channels: int, size, name: str) -> None:
    """Refuse a resize whose uint8 result alone would fill this machine's memory (``--image-size
    4096`` on 70,000 digits asks for 1.2 TB) with one line, instead of a failed allocation mid-way."""
    h, w = as_hw(size)
    need = n * channels * h * w
    try:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: no figure to compare with
        return
    if need > 0.5 * have:  # half: training needs room besides the images (batches, the model, a float copy)
        shown = h if h == w else size_text(size)
        raise CnnlabError(f"--image-size {shown}: {name}'s {n:,} images would take {need / 1e9:.1f} GB as {channels}x"
                          f"{h}x{w} bytes, more than half this machine's memory ({have / 1e9:.1f} GB); choose a "
                          "smaller --image-size")


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
