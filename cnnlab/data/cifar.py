"""CIFAR-10 and CIFAR-100 from the official "python version" tarballs.

The batches are Python pickles, and unpickling can run arbitrary code, so two
rules apply: pickles are read only from an archive whose md5 matched the
published one (or from a folder the user extracted themselves), and every load
goes through :class:`RestrictedUnpickler`, which can only rebuild numpy arrays.
A tarball is checksummed and extracted into the cache once; later runs read the
extracted folder directly.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ..errors import CnnlabError, first_line
from .base import ArrayDataset, DatasetSpec, candidate_dirs, channel_stats, default_cache_dir, register_dataset
from .download import Resource, fetch_resources, safe_extract_tar, verify_md5, where_to_put

LABEL_MODES = ("fine", "coarse")


@dataclass(frozen=True)
class Layout:
    """Where things are inside an extracted CIFAR archive and which keys hold what."""

    folder: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_keys: dict[str, tuple[bytes, bytes]]  # label mode -> (label key in batches, class-name key in meta)


LAYOUTS = {
    "cifar10": Layout("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch",
                      "batches.meta", {"fine": (b"labels", b"label_names")}),
    "cifar100": Layout("cifar-100-python", ("train",), "test", "meta",
                       {"fine": (b"fine_labels", b"fine_label_names"),
                        "coarse": (b"coarse_labels", b"coarse_label_names")}),
}

RESOURCES: dict[str, Resource] = {
    "cifar10": Resource("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", 170498071,
                        ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",)),
    "cifar100": Resource("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85", 169001437,
                         ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",)),
}


def _numpy_rebuilders() -> dict[tuple[str, str], object]:
    """The callables numpy's own pickles reference, under their numpy 1.x and 2.x module names."""
    callables = {
        np.zeros(0).__reduce_ex__(2)[0],  # multiarray._reconstruct (protocols < 5)
        np.zeros(0).__reduce_ex__(5)[0],  # numeric._frombuffer (protocol 5)
        np.uint8(0).__reduce_ex__(2)[0],  # multiarray.scalar
    }
    allowed: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for fn in callables:
        private = fn.__module__  # e.g. numpy._core.multiarray on numpy 2, numpy.core.multiarray on 1.x
        for module in {private, private.replace("numpy._core", "numpy.core"),
                       private.replace("numpy.core", "numpy._core")}:
            allowed[(module, fn.__name__)] = fn
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can build dicts, lists, strings, numbers and numpy arrays, and nothing else.

    Dicts, lists, bytes and numbers are pickle opcodes and never reach
    :meth:`find_class`; numpy arrays need only the few rebuild functions allowed
    here. Any other global (``os.system``, ``builtins.eval``, ...) is refused, so a
    tampered pickle cannot run code.
    """

    ALLOWED = _numpy_rebuilders()

    def find_class(self, module: str, name: str):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: CIFAR files contain only "
                                         "numpy arrays, lists and dicts") from None


def read_pickle(path: Path) -> dict:
    """Unpickle one CIFAR batch or meta file (bytes keys) with :class:`RestrictedUnpickler`."""
    try:
        with open(path, "rb") as f:
            obj = RestrictedUnpickler(f, encoding="bytes").load()
    except (Exception, MemoryError) as e:  # noqa: BLE001 - any failure to unpickle means a foreign or damaged file
        # UnpicklingError also covers refused globals; the others (EOFError, OverflowError from a
        # forged frame length, MemoryError, ...) come from truncated, foreign or hostile files
        raise CnnlabError(f"{path}: not a valid CIFAR pickle ({type(e).__name__}: {first_line(e)})") from None
    if not isinstance(obj, dict):
        raise CnnlabError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return obj


def _field(batch: dict, key: bytes, path: Path):
    if key not in batch:
        raise CnnlabError(f"{path}: missing key {key!r} (has {list(batch)})")
    return batch[key]


def _read_batches(folder: Path, files: tuple[str, ...], label_key: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for name in files:
        path = folder / name
        batch = read_pickle(path)
        data = np.asarray(_field(batch, b"data", path))
        y = np.asarray(_field(batch, label_key, path), dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise CnnlabError(f"{path}: b'data' must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}")
        if y.shape != (len(data),):
            raise CnnlabError(f"{path}: {len(data)} images but {label_key!r} has shape {y.shape}")
        images.append(data.reshape(-1, 3, 32, 32))  # rows are stored channel-major: R plane, G plane, B plane
        labels.append(y)
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


def _is_complete(folder: Path, layout: Layout) -> bool:
    return all((folder / f).is_file() for f in (*layout.train_files, layout.test_file, layout.meta_file))


def locate_folder(name: str, data_dir: Path | None, download: bool) -> Path:
    """The extracted batch folder: found as is, extracted from a found tarball, or downloaded first.

    A folder counts only when it holds every batch file. Extracted batches
    (``<dir>/cifar-10-batches-py/`` or ``<dir>`` itself) anywhere are preferred to a
    tarball, so a tarball kept in ``--data-dir`` is extracted into the cache only once;
    tarballs are md5-checked before extraction.
    """
    layout, resource = LAYOUTS[name], RESOURCES[name]
    folders = candidate_dirs(name, data_dir)
    for folder in folders:
        for extracted in (folder / layout.folder, folder):
            if _is_complete(extracted, layout):
                return extracted
    for folder in folders:
        if (folder / resource.filename).is_file():
            return _extract(name, folder / resource.filename)
    if not download:
        raise CnnlabError(f"{name}: neither {resource.filename} nor an extracted {layout.folder}/ was found "
                          f"and downloading is disabled; {where_to_put(name, [resource], data_dir)}")
    return _extract(name, fetch_resources(name, [resource], data_dir) / resource.filename)


def _extract(name: str, archive: Path) -> Path:
    """Checksum ``archive`` and extract it into ``<cache>/<name>``; return the batch folder."""
    layout = LAYOUTS[name]
    verify_md5(archive, RESOURCES[name].md5)
    cache = default_cache_dir() / name
    safe_extract_tar(archive, cache)
    if not _is_complete(cache / layout.folder, layout):
        raise CnnlabError(f"{archive}: the archive does not contain the expected {layout.folder}/ batch files")
    return cache / layout.folder


def load_cifar(name: str, data_dir: Path | None = None, download: bool = True,
               label_mode: str = "fine") -> ArrayDataset:
    """Load ``cifar10`` or ``cifar100`` as uint8 [N, 3, 32, 32] images (50000 train / 10000 test).

    ``label_mode`` (CIFAR-100 only): ``"fine"`` for the 100 classes, ``"coarse"`` for the 20 superclasses.
    """
    layout = LAYOUTS[name]
    if label_mode not in layout.label_keys:
        raise CnnlabError(f"{name}: label_mode must be one of {', '.join(layout.label_keys)}, got {label_mode!r}")
    label_key, names_key = layout.label_keys[label_mode]
    folder = locate_folder(name, data_dir, download)
    meta_path = folder / layout.meta_file
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in _field(read_pickle(meta_path), names_key,
                                                                                meta_path)]
    tr_x, tr_y = _read_batches(folder, layout.train_files, label_key)
    te_x, te_y = _read_batches(folder, (layout.test_file,), label_key)
    mean, std = channel_stats(tr_x)
    return ArrayDataset(name, tr_x, tr_y, te_x, te_y, classes, mean, std, flip_ok=True,
                        extra={"folder": str(folder), "label_mode": label_mode})


load_cifar10 = partial(load_cifar, "cifar10")
load_cifar100 = partial(load_cifar, "cifar100")

register_dataset(DatasetSpec(
    "cifar10", load_cifar10, "CIFAR-10 32x32 colour images of 10 classes (Krizhevsky 2009)", channels=3, size=32,
    num_classes=10, train_size=50000, test_size=10000, files=[RESOURCES["cifar10"].filename], source=RESOURCES["cifar10"].urls[0]))
register_dataset(DatasetSpec(
    "cifar100", load_cifar100, "CIFAR-100 32x32 colour images of 100 classes (Krizhevsky 2009)", channels=3,
    size=32, num_classes=100, train_size=50000, test_size=10000, files=[RESOURCES["cifar100"].filename],
    notes={"classes": "label_mode=fine; 20 with coarse"},
    source=RESOURCES["cifar100"].urls[0]))
