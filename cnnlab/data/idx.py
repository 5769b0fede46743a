"""MNIST and Fashion-MNIST from their four IDX files (gzipped or not).

The files are looked for in ``--data-dir``, ``--data-dir/<name>`` and the cache
(the first folder holding all four wins, so the two splits never come from
different copies); only when none has them are they downloaded into the cache.
Both datasets use the same file names, so a ``.gz`` found locally is checksummed
to catch the easy mistake of pointing ``fashion-mnist`` at MNIST's files (or the
reverse). Parsing uses ``np.frombuffer`` on the decompressed bytes: loading all
70000 images takes well under a second.
"""
from __future__ import annotations

import gzip
import math
import zlib
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ..errors import CnnlabError
from .base import ArrayDataset, DatasetSpec, candidate_dirs, channel_stats, register_dataset
from .download import Resource, fetch_resources, md5sum, where_to_put

IDX_UBYTE = 0x08  # the IDX type code for unsigned bytes, the only one these datasets use
SPLIT_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
               "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
FILES = [name for pair in SPLIT_FILES.values() for name in pair]

MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)


def _resources(mirrors: tuple[str, ...], md5s_sizes: dict[str, tuple[str, int]]) -> list[Resource]:
    return [Resource(name, md5, size, tuple(m + name for m in mirrors)) for name, (md5, size) in md5s_sizes.items()]


RESOURCES: dict[str, list[Resource]] = {
    "mnist": _resources(MNIST_MIRRORS, {
        "train-images-idx3-ubyte.gz": ("f68b3c2dcbeaaa9fbdd348bbdeb94873", 9912422),
        "train-labels-idx1-ubyte.gz": ("d53e105ee54ea40749a09fcbcd1e9432", 28881),
        "t10k-images-idx3-ubyte.gz": ("9fb629c4189551a2d022fa330f9573f3", 1648877),
        "t10k-labels-idx1-ubyte.gz": ("ec29112dd5afa0611ce80d1b7f02629c", 4542),
    }),
    "fashion-mnist": _resources(FASHION_MIRRORS, {
        "train-images-idx3-ubyte.gz": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", 26421880),
        "train-labels-idx1-ubyte.gz": ("25c81989df183df01b3e8a0aad5dffbe", 29515),
        "t10k-images-idx3-ubyte.gz": ("bef4ecab320f06d8554ea6380940ec79", 4422102),
        "t10k-labels-idx1-ubyte.gz": ("bb300cfdad3c16e7a12a480ee83cd310", 5148),
    }),
}

CLASSES = {
    "mnist": [str(i) for i in range(10)],
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
}
FLIP_OK = {"mnist": False, "fashion-mnist": True}  # mirrored digits change meaning; mirrored clothes do not


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse an IDX file of unsigned bytes with ``ndim`` dimensions (gzipped when named ``*.gz``).

    Checks the magic number, the dimension count and that the payload is exactly
    as long as the dimensions say, so a truncated or foreign file is reported
    instead of silently misread.
    """
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise CnnlabError(f"{path}: cannot read the file ({e}); it is corrupt or truncated, "
                          "delete it and download it again") from e
    header = 4 + 4 * ndim
    if len(data) < header or data[:2] != b"\x00\x00" or data[2] != IDX_UBYTE or data[3] != ndim:
        raise CnnlabError(f"{path}: not an IDX file of unsigned bytes with {ndim} dimension(s) "
                          f"(magic number {data[:4].hex() or 'missing'}, expected 0000{IDX_UBYTE:02x}{ndim:02x})")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    expected = header + math.prod(dims)  # Python ints: a hostile header cannot overflow int64
    if len(data) != expected:
        raise CnnlabError(f"{path}: the header announces dimensions {dims} ({expected} bytes) but the file has "
                          f"{len(data)} bytes; it is truncated or corrupt, delete it and download it again")
    try:
        return np.frombuffer(data, np.uint8, offset=header).reshape(dims).copy()  # copy: writable for torch
    except ValueError as e:  # e.g. dimensions (0, 3e9, 3e9): no bytes, but a shape numpy cannot hold
        raise CnnlabError(f"{path}: the header announces dimensions {dims}, which no IDX image file has "
                          f"({e}); it is truncated or corrupt, delete it and download it again") from None


def _find_file(folder: Path, name: str) -> Path | None:
    """``name`` (``*.gz``), its uncompressed form, or the ``train-images.idx3-ubyte`` spelling some copies use."""
    raw = name[: -len(".gz")]
    for candidate in (name, raw, raw.replace("-idx", ".idx")):
        if (folder / candidate).is_file():
            return folder / candidate
    return None


def locate_files(name: str, data_dir: Path | None, download: bool) -> dict[str, Path]:
    """Map each of the four official file names to a file on disk, downloading them if allowed."""
    partial_hits = []
    for folder in candidate_dirs(name, data_dir):
        found = {f: _find_file(folder, f) for f in FILES}
        if all(found.values()):
            _check_not_other_dataset(name, found)
            return found  # type: ignore[return-value]
        if any(found.values()):
            missing = [f for f, p in found.items() if p is None]
            partial_hits.append(f"{folder} lacks {', '.join(missing)}")
    hint = where_to_put(name, RESOURCES[name], data_dir)
    if not download:
        seen = f" ({'; '.join(partial_hits)})" if partial_hits else ""
        raise CnnlabError(f"{name}: dataset files not found{seen} and downloading is disabled; {hint}")
    cache = fetch_resources(name, RESOURCES[name], data_dir)
    return {f: cache / f for f in FILES}


def _check_not_other_dataset(name: str, found: dict[str, Path | None]) -> None:
    """Refuse gzipped files whose checksum is the official one of the *other* IDX dataset."""
    official = {(r.filename, r.md5): other for other, rs in RESOURCES.items() for r in rs}
    for filename, path in found.items():
        if path is not None and path.name == filename:
            other = official.get((filename, md5sum(path)))
            if other is not None and other != name:
                raise CnnlabError(f"{path} is the official {other} file, not {name}'s; "
                                  f"use --data {other} or point --data-dir at the {name} files")


def load_idx_dataset(name: str, data_dir: Path | None = None, download: bool = True) -> ArrayDataset:
    """Load ``mnist`` or ``fashion-mnist`` as uint8 [N, 1, 28, 28] images (60000 train / 10000 test)."""
    paths = locate_files(name, data_dir, download)
    splits = {}
    for split, (images_file, labels_file) in SPLIT_FILES.items():
        images = read_idx(paths[images_file], ndim=3)
        labels = read_idx(paths[labels_file], ndim=1)
        if len(images) != len(labels):
            raise CnnlabError(f"{paths[images_file]} has {len(images)} images but {paths[labels_file]} has "
                              f"{len(labels)} labels; the files do not belong together")
        if len(labels) and labels.max() >= len(CLASSES[name]):
            raise CnnlabError(f"{paths[labels_file]}: label {labels.max()} is out of range for {name} "
                              f"(expected 0..{len(CLASSES[name]) - 1})")
        splits[split] = torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))
    (tr_x, tr_y), (te_x, te_y) = splits["train"], splits["test"]
    for split, (x, _) in splits.items():  # an empty split would report "accuracy 0.00%" as if measured
        if len(x) == 0:
            raise CnnlabError(f"{paths[SPLIT_FILES[split][0]]}: contains no images")
    mean, std = channel_stats(tr_x)
    return ArrayDataset(name, tr_x, tr_y, te_x, te_y, list(CLASSES[name]), mean, std, flip_ok=FLIP_OK[name],
                        extra={"files": {f: str(p) for f, p in paths.items()}})


load_mnist = partial(load_idx_dataset, "mnist")
load_fashion_mnist = partial(load_idx_dataset, "fashion-mnist")

register_dataset(DatasetSpec(
    "mnist", load_mnist, "MNIST handwritten digits (LeCun et al. 1998)", channels=1, size=28, num_classes=10,
    train_size=60000, test_size=10000, files=list(FILES), source=MNIST_MIRRORS[0]))
register_dataset(DatasetSpec(
    "fashion-mnist", load_fashion_mnist, "Fashion-MNIST clothing images (Zalando, Xiao et al. 2017)", channels=1,
    size=28, num_classes=10, train_size=60000, test_size=10000, files=list(FILES), source=FASHION_MIRRORS[0]))
