"""``cnnlab pack SOURCE --out DIR``: an image folder or a built-in dataset as record shards.

SOURCE is a folder (``DIR/<class>/*`` or ``DIR/train|test/<class>/*``, split exactly as the
``folder`` dataset splits it: stratified ``test_split`` with ``seed``) or a registered dataset
name (``mnist``, ``cifar10``, ``digits``, ...). Each split is shuffled once with ``seed`` (so a
shard holds every class, and a small shuffle buffer mixes well when streaming), then cut into
shards of about ``shard_size_mb`` (:mod:`cnnlab.data.shards` describes the layout).

What is stored:
- ``image_size=S`` (or ``HxW``): every image decoded, fitted to S x S (H x W) exactly as the in-memory folder path does
  (shorter side to S, centre crop) and stored as PNG (lossless: unpacking gives those pixels back);
- ``keep_size`` (the default for folders): the source file's own bytes, untouched, for decoding
  and augmenting at native resolution when streaming; only the header is read at pack time, so an
  unreadable file is skipped (named in a warning and in the manifest) without decoding every image;
- a built-in dataset: its uint8 images as PNG (at ``image_size`` if given).

Packing is resumable: after each shard ``pack.partial.json`` records what is done (atomically), so
running the same command again continues after the last complete shard. A shard is written under a
temporary name and renamed when complete (:mod:`cnnlab.files`), so no half-written shard ever has a
final name. ``manifest.json`` is written last: its presence means the pack is complete.
"""
from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from .errors import CnnlabError, suggest
from .sizes import as_hw, size_text, size_value
from .files import atomic_write_text, clean_stale_temp_files
from .data.shards import FORMAT, MANIFEST, SPLITS, Sample, file_sha256, shard_name, write_manifest, write_shard

PARTIAL = "pack.partial.json"
DEFAULT_SHARD_MB = 128.0  # WebDataset suggests 100 MB - 1 GB: large sequential reads, few files
STATS_SAMPLE = 1000  # keep_size: the mean/std come from this many seeded training images
MAX_LISTED = 20


def pack(source: str | Path, out: str | Path, shard_size_mb: float = DEFAULT_SHARD_MB,
         image_size: int | tuple[int, int] | str | None = None,
         keep_size: bool = False, data_dir: str | Path | None = None, test_split: float = 0.2, seed: int = 0,
         log: Callable[[str], None] = print) -> dict:
    """Pack ``source`` into shards under ``out``; returns the manifest (see the module docstring)."""
    if image_size is not None and keep_size:
        raise CnnlabError("pack: give --image-size S or --keep-size, not both")
    if image_size is not None:  # S or HxW (cnnlab.sizes); the manifest stores S, or [H, W]
        if min(as_hw(image_size, "pack: --image-size")) < 4:
            raise CnnlabError(f"pack: --image-size must be >= 4 on each side, got {size_text(image_size)}")
        image_size = size_value(image_size)
    if not shard_size_mb > 0:
        raise CnnlabError(f"pack: --shard-size must be > 0 (MB), got {shard_size_mb}")
    if not 0 < test_split < 1:
        raise CnnlabError(f"pack: test_split must be in (0, 1), got {test_split}")
    out = Path(out).expanduser()
    folder = Path(source).expanduser()
    if folder.is_dir():
        plan = _FolderSource(folder, image_size, test_split, seed)
    else:
        from .data import DATASETS

        if str(source) not in DATASETS.names():
            hint = suggest(source, DATASETS.names())
            raise CnnlabError(f"pack: SOURCE {source!r} is neither a folder nor a dataset name"
                              f"{' (' + hint + ')' if hint else ''}; see `cnnlab datasets`")
        plan = _BuiltinSource(str(source), data_dir, image_size, seed)
    options = {"source": str(source), "image_size": image_size, "keep_size": image_size is None,
               "shard_size_mb": shard_size_mb, "test_split": test_split if plan.kind == "folder" else None,
               "seed": seed}

    if (out / MANIFEST).exists():
        done = json.loads((out / MANIFEST).read_text())
        if done.get("options") != options:
            raise CnnlabError(f"pack: {out} already holds a pack made with other options ({done.get('options')}); "
                              "choose another --out")
        log(f"{out}: already packed ({MANIFEST} present)")
        return done
    state = _resume_state(out, options, log)
    bytes_per_shard = int(shard_size_mb * 1e6)
    for split in SPLITS:
        entries = state["splits"][split]
        position = entries[-1]["end"] if entries else 0
        items = plan.items(split)
        while position < len(items):
            batch, end, size = [], position, 0
            while end < len(items) and (not batch or size < bytes_per_shard):
                sample = plan.sample(split, end)
                end += 1
                if isinstance(sample, str):  # unreadable: named in the manifest, never packed
                    state["skipped"].append(sample)
                    continue
                batch.append(sample)
                size += len(sample.data) + 1536  # + the two tar headers and padding
            entry = write_shard(out / shard_name(split, len(entries)), batch) if batch else None
            if entry:
                entry["end"] = end
                entries.append(entry)
            elif entries:
                entries[-1]["end"] = end
            position = end
            atomic_write_text(out / PARTIAL, json.dumps(state))  # after the shard: resume continues from here
            if entry:
                log(f"{split}: {entry['name']} {entry['count']} samples, {entry['bytes'] / 1e6:.1f} MB "
                    f"({position}/{len(items)})")
    if state["skipped"]:
        listed = "; ".join(state["skipped"][:MAX_LISTED])
        warnings.warn(f"pack: skipped {len(state['skipped'])} unreadable image(s): {listed}", stacklevel=2)

    manifest = {"format": FORMAT, "options": options, "source": str(source), "classes": plan.classes,
                "channels": plan.channels(), "image_size": plan.image_size, "flip_ok": plan.flip_ok,
                "split_info": plan.split_info, "skipped": state["skipped"], "splits": {}}
    for split in SPLITS:
        shards = [{k: e[k] for k in ("name", "count", "bytes", "sha256")} for e in state["splits"][split]]
        manifest["splits"][split] = {"count": sum(e["count"] for e in shards), "shards": shards,
                                     "class_counts": plan.class_counts(split, state["skipped"])}
    manifest["mean"], manifest["std"] = plan.stats(manifest["channels"])
    write_manifest(out, manifest)
    (out / PARTIAL).unlink(missing_ok=True)
    tr, te = manifest["splits"]["train"], manifest["splits"]["test"]
    log(f"packed {source} -> {out}: {tr['count']} train in {len(tr['shards'])} shards, {te['count']} test in "
        f"{len(te['shards'])} shards, {len(plan.classes)} classes")
    return manifest


def _resume_state(out: Path, options: dict, log: Callable[[str], None]) -> dict:
    """What an interrupted pack into ``out`` finished (checked against the files), or a fresh state."""
    fresh = {"options": options, "splits": {s: [] for s in SPLITS}, "skipped": []}
    clean_stale_temp_files(out)  # temporary shards of a killed pack: never renamed, safe to drop
    partial = out / PARTIAL
    if not partial.exists():
        if out.exists() and any(out.glob("*.tar")):
            raise CnnlabError(f"pack: {out} holds shards but no {MANIFEST} or {PARTIAL}; choose another --out")
        return fresh
    state = json.loads(partial.read_text())
    if state.get("options") != options:
        raise CnnlabError(f"pack: {out} holds an unfinished pack made with other options ({state.get('options')}); "
                          "run that command again or choose another --out")
    for split in SPLITS:
        for entry in state["splits"][split]:
            f = out / entry["name"]
            if not f.is_file() or file_sha256(f) != (entry["sha256"], entry["bytes"]):
                raise CnnlabError(f"pack: {f} does not match {partial}; remove {out} and pack again")
    done = sum(len(v) for v in state["splits"].values())
    log(f"{out}: resuming an unfinished pack after {done} complete shard(s)")
    return state


# --------------------------------------------------------------------------- sources


class _BuiltinSource:
    """A registered dataset's in-memory splits, stored as PNG."""

    kind = "builtin"

    def __init__(self, name: str, data_dir, image_size: int | list[int] | None, seed: int):
        import torch

        from .data import load_dataset
        from .data.prepare import convert_dataset

        ds = load_dataset(name, data_dir)
        ds = convert_dataset(ds, image_size, None)
        if ds.train_images.dtype != torch.uint8:
            raise CnnlabError(f"pack: dataset {name!r} is not images")
        self.ds, self.classes, self.flip_ok = ds, list(ds.classes), ds.flip_ok
        self.image_size = size_value(ds.image_size)
        self.split_info = "the dataset's own train/test splits"
        rng = np.random.default_rng(seed)
        self.order = {s: rng.permutation(len(getattr(ds, f"{s}_labels"))) for s in SPLITS}

    def items(self, split: str) -> np.ndarray:
        return self.order[split]

    def sample(self, split: str, i: int) -> Sample:
        from PIL import Image

        j = int(self.order[split][i])
        x = getattr(self.ds, f"{split}_images")[j].permute(1, 2, 0).numpy()
        buf = io.BytesIO()
        Image.fromarray(x[:, :, 0] if x.shape[2] == 1 else x).save(buf, "PNG")
        return Sample(f"{i:09d}", "png", buf.getvalue(), int(getattr(self.ds, f"{split}_labels")[j]))

    def channels(self) -> int:
        return self.ds.in_channels

    def class_counts(self, split: str, skipped: list[str]) -> list[int]:
        return np.bincount(getattr(self.ds, f"{split}_labels").numpy(), minlength=len(self.classes)).tolist()

    def stats(self, channels: int) -> tuple[list[float], list[float]]:
        return list(self.ds.mean), list(self.ds.std)


class _FolderSource:
    """An image folder, split exactly as the in-memory ``folder`` dataset splits it."""

    kind = "folder"

    def __init__(self, root: Path, image_size: int | list[int] | None, test_split: float, seed: int):
        from .data.stream import list_folder

        self.root, self.image_size, self.seed = root, image_size, seed
        listing = list_folder(root, test_split, seed)
        self.classes, self.split_info = listing.classes, listing.split_info
        rng = np.random.default_rng(seed)
        self.files = {}
        for s in SPLITS:
            paths, labels = listing.splits[s]
            order = rng.permutation(len(paths))
            self.files[s] = [(paths[i], int(labels[i])) for i in order]
        self.modes: set[str] = set()
        self.flip_ok = True

    def items(self, split: str) -> list:
        return self.files[split]

    def sample(self, split: str, i: int) -> Sample | str:
        from PIL import Image

        from .data.folder import _decode, _describe

        path, label = self.files[split][i]
        try:
            if self.image_size is None:
                data = path.read_bytes()
                with Image.open(io.BytesIO(data)) as img:
                    self.modes.add(img.mode)
                    img.verify()  # header and structure only: no full decode
                ext = path.suffix.lower().lstrip(".")
            else:
                array = _decode(path, self.image_size, None)
                self.modes.add("L" if array.shape[2] == 1 else "RGB")
                buf = io.BytesIO()
                Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).save(buf, "PNG")
                data, ext = buf.getvalue(), "png"
        except Exception as e:  # noqa: BLE001  any decoder failure: skip the file, name it
            return f"{path} ({_describe(e)})"
        return Sample(f"{i:09d}", ext, data, label)

    def channels(self) -> int:
        if not self.modes:  # a resumed pack: look at the packed images' modes again (headers only)
            self.modes = {_mode(p) for s in SPLITS for p, _ in self.files[s][:STATS_SAMPLE]}
        grey = {"L", "LA", "La", "1", "F", "I", "I;16", "I;16B", "I;16L", "I;16N"}
        return 1 if self.modes and self.modes <= grey else 3

    def class_counts(self, split: str, skipped: list[str]) -> list[int]:
        bad = {s.rsplit(" (", 1)[0] for s in skipped}
        counts = [0] * len(self.classes)
        for p, label in self.files[split]:
            if str(p) not in bad:
                counts[label] += 1
        return counts

    def stats(self, channels: int) -> tuple[list[float], list[float]]:
        """Per-channel mean/std of up to STATS_SAMPLE seeded training images, fitted at 64 px (or the
        packed size): the statistics of a large set barely move with more images or pixels."""
        from .data.folder import _try_decode

        files = self.files["train"]
        rng = np.random.default_rng(self.seed)
        pick = rng.choice(len(files), size=min(STATS_SAMPLE, len(files)), replace=False)
        total = np.zeros(channels)
        squares = np.zeros(channels)
        n = 0
        for i in pick:
            a = _try_decode(files[i][0], self.image_size or 64, channels)
            if isinstance(a, str):
                continue
            a = a.reshape(-1, channels).astype(np.float64) / 255
            total += a.sum(0)
            squares += (a * a).sum(0)
            n += len(a)
        mean = total / max(n, 1)
        std = np.sqrt(np.maximum(squares / max(n, 1) - mean * mean, 1e-6))
        return mean.tolist(), np.maximum(std, 1e-3).tolist()


def _mode(path: Path) -> str:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.mode
    except Exception:  # noqa: BLE001
        return "L"


def iter_unpacked(root: str | Path, split: str) -> Iterator[tuple[str, str, bytes, int]]:
    """Every sample of one split of a packed folder, in stored order: (key, ext, bytes, label)."""
    from .data.shards import iter_shard, read_manifest

    manifest = read_manifest(root)
    for entry in manifest["splits"][split]["shards"]:
        yield from iter_shard(Path(root) / entry["name"])


def describe(manifest: dict[str, Any]) -> str:
    size = manifest["image_size"]
    return (f"{manifest['source']}: {manifest['splits']['train']['count']} train / "
            f"{manifest['splits']['test']['count']} test, {len(manifest['classes'])} classes, "
            f"{'native size' if size is None else size_text(size)}, {manifest['channels']} channel(s)")
