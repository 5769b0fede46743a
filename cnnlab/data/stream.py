"""The streaming data path: training images decoded and augmented by DataLoader worker processes.

For data that does not fit in memory (the in-memory path, :mod:`cnnlab.data.loader`, stays the
default where it fits: see :func:`choose_data_path`). The training split is read from record
shards (``cnnlab pack``, :mod:`cnnlab.data.shards`) or straight from an image folder; the test
split is decoded once into memory at the training size (fitted, as in the in-memory path).

One epoch, for process ``rank`` of ``world`` (thesis Ch. 3's data iterator with a prefetcher, and
what timm / torchvision's references do with DataLoader workers):

1. **order** (main process, from the sample index only, no pixels): shards are dealt to processes
   once (shard ``i`` to rank ``i mod world``: each node reads only its own subset), visited in a
   per-epoch random order, and their samples pass a shuffle buffer of :data:`SHUFFLE_BUFFER`
   (reads stay sequential within a window of shards); a folder, randomly accessible, gets a full
   permutation dealt round-robin. Seeds: ``(seed, epoch, rank)``.
2. **batches**: batch ``j`` is samples ``order[j*B:(j+1)*B]``; worker ``w`` of ``W`` decodes batches
   ``skip + w, skip + w + W, ...`` and DataLoader returns them in order with ``prefetch_factor``
   batches per worker in flight. Each batch's random-resized crop and flip use a generator seeded
   by ``(seed, epoch, rank, j)``, so what a run sees does not depend on the number of workers.
3. **resume**: a run restarted ``skip`` batches into an epoch rebuilds the same order and starts at
   batch ``skip``: each remaining sample of the epoch is seen once (and no sample twice).

Memory stays that of the batches in flight plus the shuffle buffer's indices, whatever the dataset's
size; the sample index (shard, offset, size, label: 28 bytes per image; a folder: its path list)
is the only part that grows with it.
"""
from __future__ import annotations

import io
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch

from ..errors import CnnlabError
from ..sizes import as_hw, size_value
from .augment import AugmentConfig
from .base import ArrayDataset
from .loader import to_model_input

if TYPE_CHECKING:
    from ..config import TrainConfig
    from ..distributed import DistInfo

SHUFFLE_BUFFER = 4096  # samples; WebDataset's examples use 1000-5000
MEMORY_FRACTION = 0.25  # auto: stream when the decoded splits would take more than this share of RAM
STATS_SAMPLE = 512  # folder streaming: the mean/std come from this many seeded training images
STREAMABLE = ("folder", "shards")
RATIO = (3 / 4, 4 / 3)  # random-resized crop aspect ratios (torchvision's RandomResizedCrop)


# --------------------------------------------------------------------------- listing a folder


@dataclass
class FolderListing:
    classes: list[str]
    splits: dict[str, tuple[list[Path], np.ndarray]]
    split_info: str


def list_folder(root: Path, test_split: float = 0.2, seed: int = 0) -> FolderListing:
    """The files of an image folder and their split, without decoding: the same stratified seeded split
    as the in-memory ``folder`` dataset (:func:`cnnlab.data.folder.load_folder`) when every file is
    readable (that one splits the readable images)."""
    from .folder import _check_root, _class_folders, _list_files, _presplit_folders, _split_indices, presplit_classes

    root = _check_root(root)
    presplit = _presplit_folders(root)
    listed = _list_files(root, presplit)  # class folder -> its image files, as the in-memory loader lists them
    out: dict[str, tuple[list[Path], list[int]]] = {"train": ([], []), "test": ([], [])}
    if presplit:
        train_dirs, eval_dirs, classes = presplit_classes(presplit)
        for label, name in enumerate(classes):
            for split, dirs in (("train", train_dirs), ("test", eval_dirs)):
                if name in dirs:
                    files = listed[dirs[name]]
                    out[split][0].extend(files)
                    out[split][1].extend([label] * len(files))
        info = f"folders {presplit[0].name}/ and {presplit[1].name}/"
    else:
        class_dirs = _class_folders(root)
        classes = sorted(class_dirs)
        rng = np.random.default_rng(seed)
        for label, name in enumerate(classes):
            files = listed[class_dirs[name]]
            if len(files) < 2:
                raise CnnlabError(f"folder dataset: class folder {class_dirs[name]} has {len(files)} image(s); "
                                  "splitting off a test set needs at least 2 per class")
            for split, idx in zip(("train", "test"), _split_indices(len(files), test_split, rng)):
                out[split][0].extend(files[i] for i in idx)
                out[split][1].extend([label] * len(idx))
        info = f"test_split={test_split}, seed={seed}"
    return FolderListing(classes, {s: (p, np.asarray(y, dtype=np.int64)) for s, (p, y) in out.items()}, info)


# --------------------------------------------------------------------------- the sample index


@dataclass
class SampleIndex:
    """Where each training sample's bytes are: shard files + offsets, or one file per sample."""

    kind: str  # "shards" or "folder"
    files: list[Path]
    labels: np.ndarray  # int64 [N]
    file_of: np.ndarray | None = None  # shards: int32 [N], the shard holding each sample
    offset: np.ndarray | None = None  # shards: int64 [N]
    size: np.ndarray | None = None  # shards: int64 [N]
    shard_samples: list[np.ndarray] = field(default_factory=list)  # shards: sample ids per shard, file order
    shard_counts: list[int] = field(default_factory=list)  # shards: samples per shard (also those not indexed)

    def __len__(self) -> int:
        return len(self.labels)

    def read(self, i: int, handles: dict) -> bytes:
        if self.kind == "folder":
            return self.files[i].read_bytes()
        s = int(self.file_of[i])  # type: ignore[index]
        f = handles.get(s)
        if f is None:
            f = handles[s] = open(self.files[s], "rb")
        f.seek(int(self.offset[i]))  # type: ignore[index]
        return f.read(int(self.size[i]))  # type: ignore[index]

    def name(self, i: int) -> str:
        if self.kind == "folder":
            return str(self.files[i])
        return f"{self.files[int(self.file_of[i])]} at byte {int(self.offset[i])}"  # type: ignore[index]

    def rank_count(self, rank: int, world: int) -> int:
        """Samples process ``rank`` reads per epoch."""
        if self.kind == "folder":
            return len(range(rank, len(self), world))
        return sum(self.shard_counts[s] for s in range(rank, len(self.shard_counts), world))


def index_shards(root: Path, entries: list[dict], limit: int | None = None, rank: int = 0,
                 world: int = 1) -> SampleIndex:
    """The sample index of the shards process ``rank`` of ``world`` reads (shard ``s`` if ``s mod world ==
    rank``): only their tar headers are read; the others are counted from the manifest. ``limit``: the
    first ``limit`` samples of the split in shard order (``--train-subset``)."""
    from .shards import index_shard

    files, file_of, offset, size, labels, per_shard, counts = [], [], [], [], [], [], []
    n = before = 0
    for s, entry in enumerate(entries):
        path = root / entry["name"]
        wanted = entry["count"] if limit is None else min(entry["count"], max(0, limit - before))
        before += entry["count"]
        files.append(path)
        counts.append(wanted)
        refs = index_shard(path)[:wanted] if s % world == rank and wanted else []
        per_shard.append(np.arange(n, n + len(refs)))
        file_of += [s] * len(refs)
        offset += [r.offset for r in refs]
        size += [r.size for r in refs]
        labels += [r.label for r in refs]
        n += len(refs)
    return SampleIndex("shards", files, np.asarray(labels, dtype=np.int64), np.asarray(file_of, dtype=np.int32),
                       np.asarray(offset, dtype=np.int64), np.asarray(size, dtype=np.int64), per_shard, counts)


def epoch_order(index: SampleIndex, seed: int, epoch: int, rank: int = 0, world: int = 1,
                buffer: int = SHUFFLE_BUFFER) -> np.ndarray:
    """The sample ids process ``rank`` reads in ``epoch``, in order (see the module docstring, step 1)."""
    if index.kind == "folder":
        return np.random.default_rng([seed, epoch]).permutation(len(index))[rank::world]
    rng = np.random.default_rng([seed, epoch, rank])
    mine = list(range(rank, len(index.shard_samples), world))
    stream = [index.shard_samples[mine[k]] for k in rng.permutation(len(mine))]
    return buffer_shuffle(np.concatenate(stream) if stream else np.zeros(0, np.int64), buffer, rng)


def buffer_shuffle(ids: np.ndarray, buffer: int, rng: np.random.Generator) -> np.ndarray:
    """WebDataset's shuffle: fill a buffer; then each incoming sample replaces a random one, which is emitted."""
    out = np.empty_like(ids)
    buf = list(ids[:buffer])
    picks = rng.integers(0, max(len(buf), 1), size=max(len(ids) - len(buf), 0))
    for k, incoming in enumerate(ids[len(buf):]):
        j = picks[k]
        out[k] = buf[j]
        buf[j] = incoming
    tail = np.asarray(buf, dtype=ids.dtype)
    out[len(ids) - len(tail):] = tail[rng.permutation(len(tail))]
    return out


# --------------------------------------------------------------------------- decoding in the workers


def random_resized_crop_box(w: int, h: int, scale_min: float, rng: np.random.Generator,
                            out_aspect: float = 1.0) -> tuple[float, ...]:
    """torchvision's RandomResizedCrop parameters: an area fraction in [scale_min, 1] and an aspect ratio
    in [3/4, 4/3] (log-uniform) times the output's width/height ``out_aspect`` (so a non-square output is
    not squashed on average; for a square output this is torchvision's rule), 10 tries, else the largest
    central crop of the output's aspect. ``scale_min >= 1``: that central crop (the in-memory path's
    fit, no randomness)."""
    if scale_min < 1:
        area = w * h
        for _ in range(10):
            target = area * rng.uniform(scale_min, 1.0)
            aspect = out_aspect * math.exp(rng.uniform(math.log(RATIO[0]), math.log(RATIO[1])))
            cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
            if 0 < cw <= w and 0 < ch <= h:
                top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
                return left, top, left + cw, top + ch
    cw, ch = (h * out_aspect, h) if w > h * out_aspect else (w, w / out_aspect)
    left, top = (w - cw) / 2, (h - ch) / 2
    return left, top, left + cw, top + ch


def decode_augment(data: bytes, size: tuple[int, int], channels: int, scale_min: float, flip: bool,
                   rng: np.random.Generator) -> np.ndarray:
    """Encoded bytes -> uint8 [H, W, C] (``size`` = (H, W)): decode at native resolution, random-resized
    crop, flip."""
    from PIL import Image, ImageOps

    from .folder import RESAMPLE, _to_l_or_rgb

    with Image.open(io.BytesIO(data)) as img:
        img.load()
        img = _to_l_or_rgb(ImageOps.exif_transpose(img))
    img = img.convert("L" if channels == 1 else "RGB")
    out_h, out_w = size
    box = random_resized_crop_box(img.width, img.height, scale_min, rng, out_w / out_h)
    img = img.resize((out_w, out_h), RESAMPLE, box=box)  # crop + antialiased resize in one pass (Pillow: w, h)
    if flip and rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    a = np.asarray(img)
    return a[:, :, None] if a.ndim == 2 else a


class StreamBatches(torch.utils.data.IterableDataset):
    """What a DataLoader worker runs: the batches of one epoch assigned to it, decoded and augmented."""

    def __init__(self, index: SampleIndex, order: np.ndarray, batch_size: int, num_batches: int, skip: int,
                 size: tuple[int, int], channels: int, scale_min: float, flip: bool, seed: tuple[int, ...]):
        self.index, self.order, self.batch_size = index, order, batch_size
        self.num_batches, self.skip = num_batches, skip
        self.size, self.channels, self.scale_min, self.flip, self.seed = size, channels, scale_min, flip, seed

    def batch_ids(self, j: int) -> np.ndarray:
        return self.order[j * self.batch_size:(j + 1) * self.batch_size]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        w, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        handles: dict = {}
        try:
            for j in range(self.skip + w, self.num_batches, workers):
                yield self.decode_batch(j, handles)
        finally:
            for f in handles.values():
                f.close()

    def decode_batch(self, j: int, handles: dict) -> tuple[torch.Tensor, torch.Tensor]:
        ids = self.batch_ids(j)
        rng = np.random.default_rng([*self.seed, j])
        x = np.empty((len(ids), *self.size, self.channels), dtype=np.uint8)
        for k, i in enumerate(ids):
            try:
                x[k] = decode_augment(self.index.read(int(i), handles), self.size, self.channels, self.scale_min,
                                      self.flip, rng)
            except Exception as e:  # noqa: BLE001  any decoder failure names the sample
                raise CnnlabError(f"{self.index.name(int(i))}: cannot read image ({type(e).__name__}: {e}); "
                                  "remove it, or `cnnlab pack` the folder (which skips unreadable images)") from None
        return torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(self.index.labels[ids])


# --------------------------------------------------------------------------- the loader the trainer uses


class StreamLoader:
    """Batches of (inputs, labels) from a :class:`SampleIndex`, with the interface of
    :class:`cnnlab.data.loader.BatchLoader` plus :meth:`set_epoch` (which epoch, and where in it)."""

    def __init__(self, index: SampleIndex, batch_size: int, size: int | tuple[int, int], channels: int, mean, std,
                 device: torch.device | str = "cpu", augment: AugmentConfig | None = None, scale_min: float = 0.08,
                 channels_last: bool = False, rank: int = 0, world_size: int = 1, workers: int = 2, seed: int = 0,
                 prefetch: int = 2):
        self.index, self.batch_size, self.size, self.channels = index, int(batch_size), as_hw(size), channels
        self.device = torch.device(device)
        self.flip = bool(augment and augment.flip)
        # the flip happens in the workers; the rest of the batch augmentations (if any) after them
        self.augment = replace(augment, flip=False) if augment is not None else None
        self.scale_min, self.channels_last = scale_min, channels_last
        self.rank, self.world_size, self.workers, self.seed, self.prefetch = rank, world_size, workers, seed, prefetch
        self.global_batch = self.batch_size * world_size
        shape = (1, -1, 1, 1)
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=self.device).view(shape)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=self.device).view(shape)
        if world_size > 1:  # every process must take the same number of steps: the smallest share decides
            if index.kind == "shards" and len(index.shard_samples) < world_size:
                raise CnnlabError(f"stream: {len(index.shard_samples)} shard(s) for {world_size} processes; pack with "
                                  "a smaller --shard-size so that every process gets at least one")
            least = min(index.rank_count(r, world_size) for r in range(world_size))
            self.num_samples = (least // self.batch_size) * self.batch_size
        else:
            n = len(index)
            self.num_samples = n - 1 if n % self.batch_size == 1 and n > 1 else n  # batch norm needs 2
        if self.num_samples < 1:
            raise CnnlabError(f"stream: {len(index)} training images cannot make one batch of {batch_size} per "
                              f"process for {world_size} processes")
        self._next: tuple[int, int] | None = None
        self.epoch = 0

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """The next iteration yields epoch ``epoch`` (1-based) from batch ``skip`` on (a resumed run)."""
        if not 0 <= skip <= len(self):
            raise CnnlabError(f"stream: cannot resume {skip} batches into an epoch of {len(self)}")
        self._next = (epoch, skip)

    def batches(self, epoch: int, skip: int = 0) -> StreamBatches:
        order = epoch_order(self.index, self.seed, epoch, self.rank, self.world_size)[: self.num_samples]
        return StreamBatches(self.index, order, self.batch_size, len(self), skip, self.size, self.channels,
                             self.scale_min, self.flip, (self.seed, epoch, self.rank))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, skip = self._next or (self.epoch + 1, 0)
        self._next, self.epoch = None, epoch
        workers = min(self.workers, max(len(self) - skip, 0))
        loader = torch.utils.data.DataLoader(
            self.batches(epoch, skip), batch_size=None, num_workers=workers,
            prefetch_factor=self.prefetch if workers else None, pin_memory=self.device.type == "cuda")
        try:
            for x, y in loader:
                x = x.to(self.device, non_blocking=True)
                yield to_model_input(x, self.mean, self.std, self.channels_last, self.augment), \
                    y.to(self.device, non_blocking=True)
        except CnnlabError as e:  # from a worker: DataLoader appends the worker's traceback; keep our line
            raise CnnlabError(str(e).strip().splitlines()[-1].split("CnnlabError: ", 1)[-1]) from None


# --------------------------------------------------------------------------- choosing the path, opening a stream


def total_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def in_memory_bytes(num_images: int, channels: int, size) -> int:
    """Bytes of ``num_images`` decoded uint8 images of ``size`` (S or (H, W))."""
    h, w = as_hw(size)
    return num_images * channels * h * w


def choose_data_path(cfg: "TrainConfig") -> str:
    """``memory`` or ``stream``: ``--data-path`` when forced; else stream a folder or a packed dataset whose
    decoded uint8 splits would take more than :data:`MEMORY_FRACTION` of this machine's RAM."""
    forced = getattr(cfg, "data_path", "auto")
    if forced == "stream" and cfg.data not in STREAMABLE:
        raise CnnlabError(f"--data-path stream reads a folder or packed shards (--data folder|shards), not "
                          f"{cfg.data!r}; pack it first: cnnlab pack {cfg.data} --out DIR")
    if forced != "auto":
        return forced
    if cfg.data not in STREAMABLE or cfg.data_dir is None:
        return "memory"
    count, channels, size = _size_of(cfg)
    return "stream" if in_memory_bytes(count, channels, size) > MEMORY_FRACTION * total_memory() else "memory"


def _size_of(cfg: "TrainConfig") -> tuple[int, int, int | list[int]]:
    """(images in both splits, channels, size) the in-memory path would decode."""
    from .folder import DEFAULT_SIZE
    from .shards import read_manifest

    if cfg.data == "shards":
        m = read_manifest(cfg.data_dir)  # type: ignore[arg-type]
        n = m["splits"]["train"]["count"] + m["splits"]["test"]["count"]
        return n, cfg.channels or m["channels"], cfg.image_size or m.get("image_size") or DEFAULT_SIZE
    listing = list_folder(Path(cfg.data_dir).expanduser(), _test_split(cfg), cfg.seed)  # type: ignore[arg-type]
    n = sum(len(p) for p, _ in listing.splits.values())
    return n, cfg.channels or 3, cfg.image_size or DEFAULT_SIZE


def _test_split(cfg: "TrainConfig") -> float:
    return float(cfg.data_options.get("test_split", getattr(cfg, "test_split", 0.2)))


class StreamedDataset(ArrayDataset):
    """The in-memory side of a stream: no training images (they stay on disk), the test split decoded."""

    def describe(self) -> str:
        c, (h, w) = self.in_channels, self.image_size
        return (f"{self.name} (streamed from {self.extra['root']}): {self.extra['streamed']} train / "
                f"{len(self.test_labels)} test images, {c}x{h}x{w}, {self.num_classes} classes")


@dataclass
class Stream:
    """An opened stream: the in-memory side (classes, statistics, the test split) and the training index."""

    dataset: ArrayDataset
    index: SampleIndex
    size: tuple[int, int]  # (H, W)
    channels: int

    def loader(self, cfg: "TrainConfig", device, augment: AugmentConfig, dist_info: "DistInfo") -> StreamLoader:
        return StreamLoader(self.index, cfg.batch_size, self.size, self.channels, self.dataset.mean, self.dataset.std,
                            device, augment, getattr(cfg, "crop_scale", 0.08), cfg.channels_last, dist_info.rank,
                            dist_info.world_size, getattr(cfg, "data_workers", 2), cfg.seed)


def open_stream(cfg: "TrainConfig", rank: int = 0, world: int = 1) -> Stream:
    """Index the training split (of process ``rank`` of ``world``: a shard folder, only its own shards)
    and decode the test split of ``cfg.data`` (folder or shards)."""
    from .folder import DEFAULT_SIZE

    unsupported = [flag for flag, on in (("--cv-fold", cfg.cv_fold), ("--features-from", cfg.features_from),
                                         ("--denoiser", cfg.denoiser),
                                         ("--input-scaling", cfg.input_scaling != "standard")) if on]
    if unsupported:
        raise CnnlabError(f"the stream data path does not support {', '.join(unsupported)}; use --data-path memory")
    root = Path(cfg.data_dir or "").expanduser()
    if cfg.data_dir is None:
        raise CnnlabError(f"{cfg.data} dataset: the stream data path needs --data-dir")
    if cfg.data == "shards":
        from .shards import load_split, read_manifest

        m = read_manifest(root)
        size, channels = as_hw(cfg.image_size or m.get("image_size") or DEFAULT_SIZE), cfg.channels or m["channels"]
        index = index_shards(root, m["splits"]["train"]["shards"], cfg.train_subset, rank, world)
        te_x, te_y = load_split(root, m, "test", size, channels, cfg.test_subset)
        classes, mean, std, flip_ok = list(m["classes"]), tuple(m["mean"]), tuple(m["std"]), m.get("flip_ok", True)
        if len(mean) != channels:  # packed RGB, trained grey (or the reverse): fit the statistics again
            mean, std = _sample_stats(index, size, channels, cfg.seed)
    else:
        listing = list_folder(root, _test_split(cfg), cfg.seed)
        paths, labels = listing.splits["train"]
        if cfg.train_subset is not None:
            paths, labels = paths[: cfg.train_subset], labels[: cfg.train_subset]
        index = SampleIndex("folder", list(paths), labels)
        size = as_hw(cfg.image_size or DEFAULT_SIZE)
        channels = cfg.channels or _folder_channels(paths, cfg.seed)
        te_paths, te_y = listing.splits["test"]
        te_paths, te_y = te_paths[: cfg.test_subset], torch.from_numpy(te_y[: cfg.test_subset])
        te_x = _decode_files(te_paths, size, channels)
        classes, flip_ok = listing.classes, True
        mean, std = _sample_stats(index, size, channels, cfg.seed)
    total = sum(index.shard_counts) if index.kind == "shards" else len(index)
    if total == 0:
        raise CnnlabError(f"{root}: no training images to stream")
    c = channels
    empty = torch.empty(0, c, *size, dtype=torch.uint8)
    ds = StreamedDataset(cfg.data, empty, torch.empty(0, dtype=torch.int64), te_x, te_y, classes, mean, std,
                      flip_ok=bool(flip_ok), extra={"root": str(root), "image_size": size_value(size), "channels": c,
                                                    "streamed": total, "evaluated_on": "test split"})
    return Stream(ds, index, size, channels)


def _folder_channels(paths: list[Path], seed: int) -> int:
    """3 if any of a seeded sample of images is colour, else 1 (headers only)."""
    from PIL import Image

    grey = {"L", "LA", "La", "1", "F", "I", "I;16", "I;16B", "I;16L", "I;16N"}
    pick = np.random.default_rng(seed).permutation(len(paths))[:STATS_SAMPLE]
    for i in pick:
        try:
            with Image.open(paths[i]) as img:
                if img.mode not in grey:
                    return 3
        except Exception:  # noqa: BLE001  unreadable files are reported when read
            continue
    return 1


def _decode_files(paths: list[Path], size: tuple[int, int], channels: int) -> torch.Tensor:
    from .folder import load_image

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        images = list(pool.map(lambda p: load_image(p, size, channels), paths))
    return torch.stack(images) if images else torch.empty(0, channels, *size, dtype=torch.uint8)


def _sample_stats(index: SampleIndex, size: tuple[int, int], channels: int, seed: int) -> tuple[tuple, tuple]:
    """Per-channel mean/std of a seeded sample of training images, fitted (no augmentation)."""
    pick = np.random.default_rng(seed).permutation(len(index))[:STATS_SAMPLE]
    handles: dict = {}
    x = np.stack([decode_augment(index.read(int(i), handles), size, channels, 1.0, False, np.random.default_rng(0))
                  for i in pick])
    for f in handles.values():
        f.close()
    from .base import channel_stats

    return channel_stats(torch.from_numpy(x).permute(0, 3, 1, 2))
