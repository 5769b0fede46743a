"""The in-memory dataset every loader returns, and the dataset registry.

All datasets cnnlab trains on fit in memory, so each is loaded once into
uint8 tensors of shape [N, C, H, W] (the thesis's "data iterator" reduced to
its fastest form for small images). Augmentation and normalization happen later
on whole batches (see :mod:`cnnlab.data.augment`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..errors import CnnlabError
from ..registry import Registry


@dataclass
class ArrayDataset:
    """Train and test splits as uint8 image tensors [N, C, H, W] and int64 labels [N].

    A two-stage run trains on float32 features instead: an autoencoder's codes as [N, D, 1, 1]
    (:func:`cnnlab.two_stage.encode_dataset`); everything downstream treats D as channels.
    """

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: list[str]
    # the input scaling (x - mean) / std of x = pixel/255, fitted on the training split: one value per
    # channel (standard) or, for mean, one per element (--input-scaling minmax; cnnlab.data.scaling)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip_ok: bool = True  # is a horizontal flip label-preserving? (no for digits)
    extra: dict = field(default_factory=dict)
    # the validation split, taken out of the training split by cnnlab.data.split (None: none taken)
    val_images: torch.Tensor | None = None
    val_labels: torch.Tensor | None = None

    def __post_init__(self) -> None:
        for split in ("train", "test", "val"):
            x, y = getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")
            if split == "val" and x is None:
                continue
            signal = x.dtype == torch.float32 and x.dim() == 3  # 1-D signals [N,C,L] (cnnlab.data.signals)
            if x.dtype not in (torch.uint8, torch.float32) or (x.dim() != 4 and not signal):
                raise CnnlabError(f"{self.name}: {split} images must be uint8 [N,C,H,W] (or float32 features, "
                                  f"e.g. codes [N,D,1,1], or signals [N,C,L]), got {x.dtype} {tuple(x.shape)}")
            if y.shape != (x.shape[0],):
                raise CnnlabError(f"{self.name}: {split} labels must have shape ({x.shape[0]},), got {tuple(y.shape)}")
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(self.classes)):
                raise CnnlabError(f"{self.name}: {split} labels must be in [0, {len(self.classes)})")
        self.train_labels = self.train_labels.long()
        self.test_labels = self.test_labels.long()
        if self.val_labels is not None:
            self.val_labels = self.val_labels.long()

    @property
    def num_val(self) -> int:
        return 0 if self.val_labels is None else len(self.val_labels)

    @property
    def in_channels(self) -> int:
        return self.train_images.shape[1]

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.train_images.shape[2:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def is_signal(self) -> bool:
        """1-D signals [N, C, L] rather than images [N, C, H, W]"""
        return self.train_images.dim() == 3

    @property
    def length(self) -> int | None:
        """Samples per signal (None for images)."""
        return self.train_images.shape[2] if self.is_signal else None

    def describe(self) -> str:
        if self.is_signal:
            return (f"{self.name}: {len(self.train_labels)} train / {len(self.test_labels)} test signals, "
                    f"{self.in_channels}x{self.length}, {self.num_classes} classes")
        c, (h, w) = self.in_channels, self.image_size
        val = f"{self.num_val} validation / " if self.num_val else ""
        return (f"{self.name}: {len(self.train_labels)} train / {val}{len(self.test_labels)} test images, "
                f"{c}x{h}x{w}, {self.num_classes} classes")


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images scaled to [0, 1]."""
    x = images.float().div_(255).transpose(0, 1).reshape(images.shape[1], -1)
    std = x.std(dim=1).clamp_min(1e-3)
    return tuple(x.mean(dim=1).tolist()), tuple(std.tolist())


@dataclass
class DatasetSpec:
    """What the registry knows about a dataset before loading it: numbers, and the text shown for them.

    ``None`` means "depends on the files or options" (a user's folder). Display strings for
    ``cnnlab datasets`` are derived (:attr:`shape`, :attr:`classes`, :attr:`splits`); code that needs
    a figure (the study runner's time estimate) reads the numbers.
    """

    name: str
    load: Callable[..., ArrayDataset]  # load(data_dir: Path | None, download: bool, **options)
    description: str
    channels: int | None = None
    size: int | None = None  # square side in pixels
    length: int | None = None  # samples per 1-D signal (a signal dataset: shape C x L, size None)
    kind: str = "images"  # or "signals" (float32 [N, C, L], cnnlab.data.signals)
    num_classes: int | None = None
    train_size: int | None = None
    test_size: int | None = None
    files: list[str] = field(default_factory=list)  # files expected in --data-dir
    source: str = ""
    notes: dict[str, str] = field(default_factory=dict)  # shape / classes / splits: said after the figure

    @property
    def shape(self) -> str:
        text = f"{self.channels}x{self.size}x{self.size}" if self.channels and self.size else "any (resized)"
        if self.kind == "signals":
            text = f"{self.channels}x{self.length} signals" if self.channels and self.length else "signals"
        return _with_note(text, self.notes.get("shape"))

    @property
    def classes(self) -> str:
        return _with_note(str(self.num_classes) if self.num_classes else "", self.notes.get("classes"))

    @property
    def splits(self) -> str:
        text = f"{self.train_size} train / {self.test_size} test" if self.train_size and self.test_size else ""
        return _with_note(text, self.notes.get("splits"))

    def files_present(self, data_dir: Path | None) -> bool | None:
        """True/False when the dataset needs files; None when it needs none."""
        if not self.files:
            return None
        for root in candidate_dirs(self.name, data_dir):
            if all((root / f).exists() for f in self.files):
                return True
        return False


def _with_note(text: str, note: str | None) -> str:
    if not note:
        return text
    return f"{text} ({note})" if text else note


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def default_cache_dir() -> Path:
    """Where downloads are cached: $CNNLAB_DATA, else ~/.cache/cnnlab/data."""
    import os

    env = os.environ.get("CNNLAB_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cnnlab" / "data"


def candidate_dirs(name: str, data_dir: Path | str | None) -> list[Path]:
    """Folders searched for a dataset's files, in order: --data-dir, --data-dir/<name>, cache/<name>."""
    dirs = []
    if data_dir is not None:
        d = Path(data_dir).expanduser()
        dirs += [d, d / name]
    dirs.append(default_cache_dir() / name)
    return dirs


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    DATASETS.add(spec.name, spec, spec.description)
    return spec


def load_dataset(name: str, data_dir: str | Path | None = None, download: bool = True, **options) -> ArrayDataset:
    """Load a registered dataset by name into memory (see ``cnnlab datasets``)."""
    spec = DATASETS.get(name)
    return spec.load(Path(data_dir).expanduser() if data_dir else None, download, **options)


def list_datasets() -> list[DatasetSpec]:
    return [e.obj for e in DATASETS]
