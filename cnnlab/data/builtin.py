"""Offline datasets: scikit-learn's 8x8 digits (the default) and a synthetic one for tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import CnnlabError
from ..sizes import as_hw, size_text
from .base import ArrayDataset, DatasetSpec, channel_stats, register_dataset

DIGITS_TEST_FRACTION = 0.25
DIGITS_SPLIT_SEED = 0


def load_digits(data_dir: Path | None = None, download: bool = True, size: int | tuple[int, int] = 8) -> ArrayDataset:
    """scikit-learn's 1797 8x8 handwritten digits (16 grey levels, scaled to 0..255).

    The split is fixed: a stratified 75/25 split with seed 0 (1347 train / 450 test),
    so every run and every test sees the same test images. ``size`` (S or (H, W)) upsamples with
    nearest-neighbour (e.g. 16 or 32 for networks that need larger inputs).
    """
    from sklearn.datasets import load_digits as sk_load
    from sklearn.model_selection import train_test_split

    bunch = sk_load()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # 0..16 -> 0..255
    labels = bunch.target.astype(np.int64)
    tr_x, te_x, tr_y, te_y = train_test_split(
        images, labels, test_size=DIGITS_TEST_FRACTION, random_state=DIGITS_SPLIT_SEED, stratify=labels)
    tr_x, te_x = torch.from_numpy(tr_x), torch.from_numpy(te_x)
    h, w = as_hw(size, "digits: --image-size")
    if (h, w) != (8, 8):
        if min(h, w) < 8:
            raise CnnlabError(f"digits: --image-size must be >= 8 on each side, got {size_text(size)}")
        tr_x, te_x = (torch.nn.functional.interpolate(t, size=(h, w), mode="nearest") for t in (tr_x, te_x))
    mean, std = channel_stats(tr_x)
    return ArrayDataset("digits", tr_x, torch.from_numpy(tr_y), te_x, torch.from_numpy(te_y),
                        [str(i) for i in range(10)], mean, std, flip_ok=False)


def load_synthetic(data_dir: Path | None = None, download: bool = True, size: int | tuple[int, int] = 16,
                   channels: int = 1,
                   num_classes: int = 4, train_size: int = 512, test_size: int = 256, seed: int = 0) -> ArrayDataset:
    """Learnable generated images: each class is a fixed smooth random pattern plus Gaussian noise.

    Deterministic for a given ``seed``; used by the tests because it needs no files.
    """
    h, w = as_hw(size, "synthetic: size")
    if num_classes < 2 or min(h, w) < 4 or channels not in (1, 3):
        raise CnnlabError("synthetic: needs num_classes >= 2, size >= 4 (each side) and channels 1 or 3")
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.rand(num_classes, channels, h, w, generator=g)
    prototypes = torch.nn.functional.avg_pool2d(prototypes, 3, 1, 1)  # smooth: shift-tolerant patterns
    prototypes = 0.5 + 0.2 * (prototypes - prototypes.mean()) / prototypes.std()  # contrast well above the noise

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % num_classes
        y = y[torch.randperm(n, generator=g)]
        x = prototypes[y] + 0.1 * torch.randn(n, channels, h, w, generator=g)
        return (x.clamp(0, 1) * 255).round().to(torch.uint8), y

    tr_x, tr_y = make(train_size)
    te_x, te_y = make(test_size)
    mean, std = channel_stats(tr_x)
    return ArrayDataset("synthetic", tr_x, tr_y, te_x, te_y, [f"class{i}" for i in range(num_classes)],
                        mean, std, flip_ok=True)


register_dataset(DatasetSpec(
    "digits", load_digits, "scikit-learn 8x8 handwritten digits (offline; default)", channels=1, size=8,
    num_classes=10, train_size=1347, test_size=450, source="scikit-learn (UCI optdigits test set)",
    notes={"splits": "stratified, seed 0"}))
register_dataset(DatasetSpec(
    "synthetic", load_synthetic, "generated class patterns + noise, for tests", channels=1, size=16,
    num_classes=4, train_size=512, test_size=256, notes={"shape": "options"}))
