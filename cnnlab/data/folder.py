"""A user's own images: one sub-folder per class, decoded and resized once into memory.

Layout: ``DIR/<class>/*.png`` (sub-folders of a class folder are included; hidden
files and folders are ignored). Class names are the sorted folder names. A
stratified, seeded ``test_split`` of each class becomes the test split (the
validation split is then taken from what remains, :mod:`cnnlab.data.split`), unless ``DIR`` holds exactly ``train/`` and ``test/`` (or ``val/``)
folders, each with the class sub-folders, which are then used as given.

Preprocessing (shared with ``cnnlab predict`` through :func:`load_image`):
1. decode with Pillow, apply the EXIF orientation;
2. convert to 8 bits: grey sources (1-bit, L, 16-bit integer taken as 0..65535,
   float taken as 0..1) to L, everything else to RGB; transparent pixels are
   composited over white;
3. resize to cover ``size`` (a side S, or H x W: :mod:`cnnlab.sizes`) and centre-crop to it
   (bilinear, antialiased: the aspect ratio is kept, the borders of the longer side
   are cut);
4. convert to the requested channels (grey to RGB repeats the plane; RGB to grey
   uses ITU-R 601 luma). With ``channels=None`` the dataset is RGB if any image is
   colour, else grey.
"""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from ..errors import CnnlabError
from ..sizes import as_hw, size_value
from .base import ArrayDataset, DatasetSpec, channel_stats, register_dataset

IMAGE_EXTENSIONS = frozenset({".bmp", ".jpeg", ".jpg", ".pbm", ".pgm", ".png", ".pnm", ".ppm", ".tif", ".tiff"})
DEFAULT_SIZE = 32
RESAMPLE = Image.Resampling.BILINEAR
SPLIT_FOLDERS = ("train", "test", "val")  # a DIR holding only these is already split
MAX_LISTED = 20  # skipped files named in the warning; all of them are in dataset.extra["skipped"]


def load_image(path: str | Path, size: int | tuple[int, int] = DEFAULT_SIZE, channels: int = 3) -> torch.Tensor:
    """One image file as a uint8 tensor [channels, H, W] (``size`` S or (H, W)), preprocessed exactly as in
    training."""
    try:
        array = _decode(Path(path), size, channels)
    except Exception as e:  # noqa: BLE001  Pillow's decoders raise many types for a bad file
        raise CnnlabError(f"{path}: cannot read image ({_describe(e)})") from e
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _decode(path: Path, size, channels: int | None) -> np.ndarray:
    """Steps 1-4 of the module docstring; returns uint8 [H, W, C] (C natural when channels is None)."""
    h, w = as_hw(size)
    with Image.open(path) as img:
        img.draft(img.mode, (w, h))  # JPEG only: decode at 1/2..1/8 scale, never below size (Pillow: width first)
        img.load()  # decode now, inside the caller's error handling (truncated files fail here)
        return fit_image(img, (h, w), channels)


def fit_image(img: Image.Image, size, channels: int | None) -> np.ndarray:
    """Steps 1-4 on a decoded Pillow image (EXIF orientation, 8 bits, fit to ``size``, channels):
    uint8 [H, W, C]. The one preprocessing of training, ``cnnlab predict`` and the Python API."""
    h, w = as_hw(size)
    img = ImageOps.fit(_to_l_or_rgb(ImageOps.exif_transpose(img)), (w, h), RESAMPLE)  # Pillow sizes: width first
    if channels is not None:
        img = img.convert("L" if channels == 1 else "RGB")
    array = np.array(img)  # a writable copy, so torch can share it
    return array[:, :, None] if array.ndim == 2 else array


def _to_l_or_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit L (grey sources) or RGB (colour sources)."""
    mode = img.mode
    if mode in ("L", "RGB"):
        return img
    if mode == "F":
        return _grey_from_array(np.asarray(img, np.float32) * 255)
    if mode.startswith("I"):  # I;16, I;16B, I (16-bit PGM): 0..65535
        return _grey_from_array(np.asarray(img, np.float32) / 257)
    if mode == "1":
        return img.convert("L")
    if mode in ("LA", "La", "PA", "RGBA", "RGBa", "P"):  # P: its palette may hold transparency
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        flat = Image.alpha_composite(white, img.convert("RGBA"))
        return flat.convert("L" if mode in ("LA", "La") else "RGB")
    return img.convert("RGB")  # CMYK, YCbCr, HSV, ...


def _grey_from_array(values: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))


def _describe(e: Exception) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _try_decode(path: Path, size, channels: int | None) -> np.ndarray | str:
    """The decoded image, or the reason it could not be read."""
    try:
        return _decode(path, size, channels)
    except Exception as e:  # noqa: BLE001  any decoder failure means "this file is unreadable"
        return _describe(e)


def _visible_subdirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


class _Walker:
    """Lists the image files of class folders (recursively, following links, sorted, hidden entries
    skipped), each folder and each file at most once in the whole dataset.

    Links are followed (a class folder may gather images from elsewhere), so a link loop
    (``cat/again -> ..``) would otherwise be walked forever, and a link into the dataset root or
    another class folder would file that class's images (or the test split's) under this one.
    A folder reached again, the root, or another class's folder is skipped; a file reached again (a
    second link to it, a hard link) is kept once, where it was first met.
    """

    def __init__(self, root: Path, class_dirs: list[Path]):
        self.reserved = {_key(root)} | {_key(d) for d in class_dirs}
        self.visited: set[tuple[int, int]] = set()
        self.files_seen: set[tuple[int, int]] = set()

    def files(self, class_dir: Path) -> list[Path]:
        own = _key(class_dir)
        found = []
        for root, dirs, files in os.walk(class_dir, followlinks=True):
            key = _key(Path(root))
            if key is None or key in self.visited or (key in self.reserved and key != own):
                dirs[:] = []
                continue
            self.visited.add(key)
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for f in sorted(files):
                path = Path(root) / f
                if f.startswith(".") or path.suffix.lower() not in IMAGE_EXTENSIONS:
                    continue
                fkey = _key(path)
                if fkey is not None and fkey in self.files_seen:
                    continue
                self.files_seen.add(fkey)
                found.append(path)
        return found


def _key(path: Path) -> tuple[int, int] | None:
    """The (device, inode) a path leads to; ``None`` for a broken link."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _check_name(class_dir: Path) -> None:
    """A class name is shown, plotted and saved in meta.json: it must be text (a folder name that is
    not UTF-8 decodes to lone surrogates, which crash the plots after training)."""
    try:
        class_dir.name.encode("utf-8")
    except UnicodeEncodeError:
        raise CnnlabError(f"folder dataset: class folder {os.fsencode(class_dir)!r} has a name that is not UTF-8 "
                          "text; rename it") from None


def _class_folders(root: Path) -> dict[str, Path]:
    subdirs = _visible_subdirs(root)
    if len(subdirs) < 2:
        loose = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
        hint = f"; found {len(loose)} images directly in it: move them into class folders" if loose else ""
        raise CnnlabError(f"folder dataset: --data-dir {root} must contain at least 2 class sub-folders "
                          f"(one per class, e.g. {root}/cat/, {root}/dog/), found {len(subdirs)}{hint}")
    return {d.name: d for d in subdirs}


def _read_class(class_dir: Path, size, channels: int | None, strict: bool, pool: ThreadPoolExecutor,
                listed: dict[Path, list[Path]]) -> tuple[list[np.ndarray], list[Path], list[tuple[Path, str]]]:
    """Decode one class folder (its files as ``listed``): (images, their paths, (path, reason) of unreadable
    files)."""
    paths = listed[class_dir]
    if not paths:
        raise CnnlabError(f"folder dataset: class folder {class_dir} contains no images "
                          f"({', '.join(sorted(IMAGE_EXTENSIONS))})")
    images, kept, skipped = [], [], []
    for path, result in zip(paths, pool.map(partial(_try_decode, size=size, channels=channels), paths)):
        if isinstance(result, str):
            if strict:
                raise CnnlabError(f"{path}: cannot read image ({result}); fix or remove it, or turn strict off "
                                  "to skip unreadable images")
            skipped.append((path, result))
        else:
            images.append(result)
            kept.append(path)
    if not images:
        raise CnnlabError(f"folder dataset: class folder {class_dir} has no readable images "
                          f"({len(skipped)} unreadable, e.g. {skipped[0][0]}: {skipped[0][1]})")
    return images, kept, skipped


def _split_indices(n: int, test_split: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of one class: round(n * test_split) images, at least 1 and at most n - 1, for testing."""
    n_val = min(n - 1, max(1, int(n * test_split + 0.5)))
    order = rng.permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


@dataclass
class _Split:
    """Decoded images of one split with their labels and source files, in class order."""

    images: list[np.ndarray] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)

    def add(self, images: list[np.ndarray], paths: list[Path], label: int) -> None:
        self.images += images
        self.paths += paths
        self.labels += [label] * len(images)

    def tensors(self, channels: int, size) -> tuple[torch.Tensor, torch.Tensor]:
        """[N, C, H, W] uint8 and [N] int64; grey images are repeated to 3 channels in a colour dataset."""
        if not self.images:
            return torch.empty(0, channels, *as_hw(size), dtype=torch.uint8), torch.empty(0, dtype=torch.int64)
        arrays = [np.repeat(a, channels, axis=2) if a.shape[2] != channels else a for a in self.images]
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
        return x, torch.tensor(self.labels, dtype=torch.int64)


def _check_root(data_dir: str | Path | None) -> Path:
    if data_dir is None:
        raise CnnlabError("folder dataset: needs --data-dir DIR, a folder with one sub-folder of images per class")
    root = Path(data_dir).expanduser()
    if not root.exists():
        raise CnnlabError(f"folder dataset: --data-dir {root} does not exist")
    if not root.is_dir():
        raise CnnlabError(f"folder dataset: --data-dir {root} is not a directory")
    return root


def _list_files(root: Path, presplit: tuple[Path, Path] | None) -> dict[Path, list[Path]]:
    """Every class folder's image files, listed in the order the loader reads them (train before test:
    a file linked into both splits stays in training only)."""
    if presplit:
        train_dirs, eval_dirs = (_class_folders(d) for d in presplit)
        order = [dirs[name] for name in sorted(train_dirs) for dirs in (train_dirs, eval_dirs) if name in dirs]
        walker = _Walker(root, order + list(presplit))
    else:
        class_dirs = _class_folders(root)
        order = [class_dirs[name] for name in sorted(class_dirs)]
        walker = _Walker(root, order)
    for d in order:
        _check_name(d)
    return {d: walker.files(d) for d in order}


def _presplit_folders(root: Path) -> tuple[Path, Path] | None:
    """(train, eval) folders when ``root`` holds only train/ and test/ (or val/), else None."""
    top = {d.name for d in _visible_subdirs(root)}
    if "train" not in top or not top & {"test", "val"} or not top <= set(SPLIT_FOLDERS):
        return None
    return root / "train", root / ("test" if "test" in top else "val")


def presplit_classes(presplit: tuple[Path, Path]) -> tuple[dict[str, Path], dict[str, Path], list[str]]:
    """(train class folders, test class folders, class names) of a DIR/train + DIR/test layout; a test
    class the training folder lacks is an error (it could never be predicted)."""
    train_dirs, eval_dirs = (_class_folders(d) for d in presplit)
    unknown = sorted(set(eval_dirs) - set(train_dirs))
    if unknown:
        raise CnnlabError(f"folder dataset: {presplit[1]} has classes that {presplit[0]} lacks: {', '.join(unknown)}")
    return train_dirs, eval_dirs, sorted(train_dirs)


def load_folder(data_dir: str | Path | None, download: bool = True, size: int | tuple[int, int] | None = DEFAULT_SIZE,
                channels: int | None = None, test_split: float = 0.2, strict: bool = False,
                seed: int = 0) -> ArrayDataset:
    """Load ``DIR/<class>/<images>`` into memory (see the module docstring for layout and preprocessing).

    ``size``: side S of square images or (H, W) (None: 32). ``channels``: 1, 3 or None
    (RGB if any image is colour). ``test_split``: fraction of each class held out as
    the test split, chosen with ``seed`` (unused for a DIR with train/ and test/).
    ``strict``: raise on an unreadable image instead of skipping it with a warning.
    ``download`` is ignored: there is nothing to download.
    """
    root = _check_root(data_dir)
    size = DEFAULT_SIZE if size is None else size
    size = size_value(as_hw(size, "folder dataset: size (--image-size)"))
    if channels not in (None, 1, 3):
        raise CnnlabError(f"folder dataset: channels must be 1, 3 or None, got {channels!r}")
    presplit = _presplit_folders(root)
    if presplit is None and not 0 < test_split < 1:
        raise CnnlabError(f"folder dataset: test_split must be in (0, 1), got {test_split}")

    train, test, skipped = _Split(), _Split(), []
    listed = _list_files(root, presplit)
    from .prepare import check_fits_in_memory

    check_fits_in_memory(sum(map(len, listed.values())), channels or 3, size, f"folder dataset {root}")
    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        read = partial(_read_class, size=size, channels=channels, strict=strict, pool=pool, listed=listed)
        if presplit:
            train_dirs, eval_dirs, classes = presplit_classes(presplit)
            for label, name in enumerate(classes):
                for split, dirs in ((train, train_dirs), (test, eval_dirs)):
                    if name in dirs:
                        images, paths, bad = read(dirs[name])
                        split.add(images, paths, label)
                        skipped += bad
            split_info = f"folders {presplit[0].name}/ and {presplit[1].name}/"
        else:
            class_dirs = _class_folders(root)
            classes = sorted(class_dirs)
            rng = np.random.default_rng(seed)
            for label, name in enumerate(classes):
                images, paths, bad = read(class_dirs[name])
                skipped += bad
                if len(images) < 2:
                    raise CnnlabError(f"folder dataset: class folder {class_dirs[name]} has only {len(images)} "
                                      "readable image; splitting off a test set needs at least 2 per class")
                for split, idx in zip((train, test), _split_indices(len(images), test_split, rng)):
                    split.add([images[i] for i in idx], [paths[i] for i in idx], label)
            split_info = f"test_split={test_split}, seed={seed}"

    if skipped:
        listed = "; ".join(f"{path} ({why})" for path, why in skipped[:MAX_LISTED])
        more = f"; and {len(skipped) - MAX_LISTED} more" if len(skipped) > MAX_LISTED else ""
        warnings.warn(f"folder dataset: skipped {len(skipped)} unreadable image(s): {listed}{more}", stacklevel=2)
    out_channels = channels or (3 if any(a.shape[2] == 3 for a in train.images + test.images) else 1)
    (tr_x, tr_y), (te_x, te_y) = train.tensors(out_channels, size), test.tensors(out_channels, size)
    mean, std = channel_stats(tr_x)
    extra = {"root": str(root), "image_size": size, "channels": out_channels, "split": split_info,
             "skipped": [str(p) for p, _ in skipped],
             "train_files": [str(p) for p in train.paths], "test_files": [str(p) for p in test.paths]}
    return ArrayDataset("folder", tr_x, tr_y, te_x, te_y, classes, mean, std, flip_ok=True, extra=extra)


register_dataset(DatasetSpec(
    "folder", load_folder, "your own images: --data-dir DIR with one sub-folder per class",
    notes={"classes": "one per sub-folder", "splits": "stratified test_split (default 0.2) or DIR/train + DIR/test"},
    source="--data-dir"))
