"""1-D signals (spectra, densitograms, sensor traces) as an in-memory dataset, and the files they come from.

A signal dataset is an :class:`~cnnlab.data.base.ArrayDataset` whose splits are float32 tensors
[N, C, L] (C channels of L samples) instead of uint8 images [N, C, H, W]; everything downstream
(the loader, scaling, objectives, metrics, two-stage codes) takes them as they are. Values are kept
in the file's own units (no /255); the run's input scaling (``--input-scaling``, default: standardized
per channel on the training split) maps them to model inputs.

Layouts read from ``--data-dir DIR`` (``--data signals``; docs/signals.md):

* **NPZ**: ``DIR/train.npz`` + ``DIR/test.npz``, or one ``DIR/signals.npz`` split by ``test_split``.
  Keys: ``x`` (numbers, [N, L] or [N, C, L]) and ``y`` ([N] integer or string labels); optional
  ``classes`` (the names of integer labels 0..K-1).
* **NPY**: ``DIR/train_x.npy`` + ``DIR/train_y.npy`` (+ ``test_x.npy``/``test_y.npy``), or ``x.npy`` +
  ``y.npy`` split by ``test_split``; the same arrays as the NPZ keys.
* **CSV**: ``DIR/train.csv`` + ``DIR/test.csv``, or one ``DIR/signals.csv``: one signal per line, the
  label in the first column (``label_column=-1``: the last), the values in the others. A first line
  whose label field is ``label`` (any case) is a header and skipped. A ragged line (another number
  of values than the first signal) or a value that is not a finite number is an error naming the
  file, line and column -- unless ``length=N`` is given, which resamples every signal (each at its
  own length) to N values by linear interpolation.

Labels: string labels become class names in sorted order (numerically when all are integers);
integer labels index ``classes`` when given, else are named ``"0"``, ``"1"``, ... A single file is
split per class, stratified: ``round(n * test_split)`` signals of each class (at least 1, at most
n - 1) go to the test split, chosen with ``seed`` (fixed: 0 unless set).
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import CnnlabError
from .base import ArrayDataset, DatasetSpec, register_dataset

SIGNAL_SUFFIXES = (".npz", ".npy", ".csv")
MAX_LENGTH = 1 << 24  # values per signal: beyond this a file is not a signal set


# --------------------------------------------------------------------------- resampling and labels
def resample(x: torch.Tensor, length: int) -> torch.Tensor:
    """Signals [N, C, L] -> [N, C, length] by linear interpolation (end points kept)."""
    if x.shape[-1] == length:
        return x
    if x.shape[-1] == 1:
        return x.expand(*x.shape[:-1], length).contiguous()
    return F.interpolate(x.float(), size=length, mode="linear", align_corners=True)


def check_length(length: Any, what: str = "signals") -> int | None:
    if length is None:
        return None
    if isinstance(length, bool) or not isinstance(length, int) or not 2 <= length <= MAX_LENGTH:
        raise CnnlabError(f"{what}: length (the resampled signal length) must be an integer >= 2, got {length!r}")
    return length


def class_names(labels: list[str]) -> list[str]:
    """Sorted distinct labels; numerically when every label is an integer ("2" before "10")."""
    names = sorted(set(labels))
    try:
        return sorted(names, key=int)
    except ValueError:
        return names


def _label_strings(y: np.ndarray, classes: list[str] | None, where: str) -> list[str]:
    """Labels of any dtype as class-name strings (integer labels index ``classes`` when given)."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise CnnlabError(f"{where}: labels y must be one-dimensional [N], got shape {list(y.shape)}")
    if y.dtype.kind in "iu":
        if classes is not None:
            if len(y) and (y.min() < 0 or y.max() >= len(classes)):
                raise CnnlabError(f"{where}: integer labels must be in [0, {len(classes)}) (the given classes), "
                                  f"found {int(y.min())}..{int(y.max())}")
            return [classes[int(v)] for v in y]
        return [str(int(v)) for v in y]
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise CnnlabError(f"{where}: labels y must be integers or strings, got non-integer numbers")
        return _label_strings(y.astype(np.int64), classes, where)
    if y.dtype.kind in "US":
        return [v.decode() if isinstance(v, bytes) else str(v) for v in y.tolist()]
    raise CnnlabError(f"{where}: labels y must be integers or strings, got dtype {y.dtype}")


# --------------------------------------------------------------------------- readers
class _Part:
    """One file's signals: float32 [N, C, L] (or a list of [C, L_i] when lengths differ) and labels."""

    def __init__(self, signals: list[np.ndarray] | np.ndarray, labels: list[str], source: str):
        self.signals, self.labels, self.source = signals, labels, source

    def tensor(self, length: int | None) -> torch.Tensor:
        if isinstance(self.signals, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(self.signals, dtype=np.float32))
            return resample(x, length) if length else x
        # ragged CSV lines, allowed because length= resamples each one on its own
        return torch.cat([resample(torch.from_numpy(s)[None].float(), length) for s in self.signals]) \
            if self.signals else torch.empty(0, 1, length)


def _as_signals(x: np.ndarray, where: str) -> np.ndarray:
    """A numeric array [N, L] or [N, C, L] as float32 [N, C, L], finite, or a clear error."""
    x = np.asarray(x)
    if x.dtype.kind not in "iuf" or x.dtype == np.bool_:
        raise CnnlabError(f"{where}: signals x must be numbers, got dtype {x.dtype}")
    if x.ndim == 2:
        x = x[:, None, :]
    if x.ndim != 3 or x.shape[2] < 1:
        raise CnnlabError(f"{where}: signals x must have shape [N, L] or [N, C, L], got {list(x.shape)}")
    x = x.astype(np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        n, c, i = (int(v) for v in np.argwhere(bad)[0])
        raise CnnlabError(f"{where}: signal {n} (channel {c}, value {i}) is {x[n, c, i]}; every value must be a "
                          f"finite number")
    return x


def _load_numpy(path: Path, what: str) -> Any:
    try:
        return np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001  numpy raises many types for damaged or pickled files
        raise CnnlabError(f"{path}: cannot read {what} ({type(e).__name__}: {e})") from None


def read_npz(path: Path) -> _Part:
    with _load_numpy(path, "an NPZ archive") as z:
        missing = [k for k in ("x", "y") if k not in z.files]
        if missing:
            raise CnnlabError(f"{path}: needs arrays 'x' (signals) and 'y' (labels); missing "
                              f"{', '.join(missing)} (has {', '.join(z.files) or 'none'})")
        classes = [str(c) for c in z["classes"].tolist()] if "classes" in z.files else None
        x, y = _as_signals(z["x"], str(path)), _label_strings(z["y"], classes, str(path))
    if len(y) != len(x):
        raise CnnlabError(f"{path}: {len(x)} signals but {len(y)} labels")
    return _Part(x, y, str(path))


def read_npy_pair(x_path: Path, y_path: Path) -> _Part:
    x = _as_signals(_load_numpy(x_path, "an NPY array"), str(x_path))
    y = _label_strings(_load_numpy(y_path, "an NPY array"), None, str(y_path))
    if len(y) != len(x):
        raise CnnlabError(f"{x_path}: {len(x)} signals but {y_path} has {len(y)} labels")
    return _Part(x, y, str(x_path))


def read_csv(path: Path, label_column: int = 0, ragged_ok: bool = False) -> _Part:
    """One signal per line, the label in ``label_column`` (0 or -1). Errors name the line and column."""
    if label_column not in (0, -1):
        raise CnnlabError(f"signals: label_column must be 0 (first column) or -1 (last), got {label_column!r}")
    signals: list[np.ndarray] = []
    labels: list[str] = []
    first_length, first_line = None, 0
    try:
        handle = open(path, newline="", encoding="utf-8")
    except OSError as e:
        raise CnnlabError(f"{path}: cannot read ({e.strerror or e})") from None
    with handle:
        try:
            for number, row in enumerate(csv.reader(handle), start=1):
                if not row or all(not f.strip() for f in row):
                    continue  # blank lines (e.g. a trailing newline) carry no signal
                label = row[label_column].strip()
                values = row[1:] if label_column == 0 else row[:-1]
                if not signals and not labels and label.lower() == "label":
                    continue  # a header line
                if not values:
                    raise CnnlabError(f"{path} line {number}: a label and no values; each line is label,v1,v2,...")
                signal = _numbers(values, path, number, lambda col: col + (2 if label_column == 0 else 1))
                if first_length is None:
                    first_length, first_line = len(signal), number
                elif len(signal) != first_length and not ragged_ok:
                    raise CnnlabError(f"{path} line {number}: {len(signal)} values, but line {first_line} has "
                                      f"{first_length}; every signal must have the same length (or resample them "
                                      f"all with --data-options length=N)")
                signals.append(signal.astype(np.float32)[None])
                labels.append(label)
        except UnicodeDecodeError:
            raise CnnlabError(f"{path}: not a text (UTF-8) CSV file") from None
        except csv.Error as e:
            raise CnnlabError(f"{path}: malformed CSV ({e})") from None
    if not signals:
        raise CnnlabError(f"{path}: no signals (expected one line per signal: label,v1,v2,...)")
    if any(not lab for lab in labels):
        number = next(i for i, lab in enumerate(labels) if not lab)
        raise CnnlabError(f"{path}: signal {number + 1} has an empty label")
    if ragged_ok and len({s.shape[1] for s in signals}) > 1:
        return _Part(signals, labels, str(path))
    return _Part(np.stack(signals), labels, str(path))


def _numbers(values: list[str], path: Path, number: int, column_of, dtype=np.float64) -> np.ndarray:
    """One CSV line's values as ``dtype`` (finite in it), or an error naming the file, the line and the (1-based) column of
    the first value that is not a finite number; ``column_of`` maps an index in ``values`` to that column."""
    try:
        signal = np.array(values, dtype=dtype)
    except ValueError:
        signal = None
    if signal is None or not np.all(np.isfinite(signal)):
        col, text = _first_bad(values)
        raise CnnlabError(f"{path} line {number}, column {column_of(col)}: {text!r} is not a finite number")
    return signal


def _first_bad(values: list[str]) -> tuple[int, str]:
    for i, v in enumerate(values):
        try:
            if math.isfinite(float(v)):
                continue
        except ValueError:
            pass
        return i, v
    return 0, values[0]


def find_parts(root: Path, label_column: int, ragged_ok: bool) -> tuple[_Part, _Part | None, str]:
    """(train part, test part or None when one file must be split, the layout found) in ``root``."""
    layouts = [
        ("train.npz + test.npz", ("train.npz", "test.npz"), lambda p: read_npz(p[0]), lambda p: read_npz(p[1])),
        ("train_x/y.npy + test_x/y.npy", ("train_x.npy", "train_y.npy", "test_x.npy", "test_y.npy"),
         lambda p: read_npy_pair(p[0], p[1]), lambda p: read_npy_pair(p[2], p[3])),
        ("train.csv + test.csv", ("train.csv", "test.csv"), lambda p: read_csv(p[0], label_column, ragged_ok),
         lambda p: read_csv(p[1], label_column, ragged_ok)),
        ("signals.npz", ("signals.npz",), lambda p: read_npz(p[0]), None),
        ("x.npy + y.npy", ("x.npy", "y.npy"), lambda p: read_npy_pair(p[0], p[1]), None),
        ("signals.csv", ("signals.csv",), lambda p: read_csv(p[0], label_column, ragged_ok), None),
    ]
    for name, files, read_train, read_test in layouts:
        paths = [root / f for f in files]
        if all(p.is_file() for p in paths):
            return read_train(paths), (read_test(paths) if read_test else None), name
    found = sorted(p.name for p in root.iterdir() if p.suffix.lower() in SIGNAL_SUFFIXES)
    raise CnnlabError(f"signals: --data-dir {root} holds none of the layouts train.npz + test.npz, "
                      f"train_x.npy/train_y.npy + test_x.npy/test_y.npy, train.csv + test.csv, signals.npz, "
                      f"x.npy + y.npy, signals.csv (found: {', '.join(found) or 'no .npz/.npy/.csv files'}; "
                      f"see docs/signals.md)")


def stratified_split(labels: torch.Tensor, test_split: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, test indices): ``round(n * test_split)`` of each class (1..n-1) to the test split."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).flatten().numpy()
        if len(members) < 2:
            raise CnnlabError(f"signals: class {c} has {len(members)} signal; splitting off a test set needs at "
                              f"least 2 per class (or give train and test files)")
        n_test = min(len(members) - 1, max(1, int(len(members) * test_split + 0.5)))
        order = rng.permutation(members)
        test.append(np.sort(order[:n_test]))
        train.append(np.sort(order[n_test:]))
    return torch.from_numpy(np.concatenate(train)), torch.from_numpy(np.concatenate(test))


def signal_dataset(name: str, train_x: torch.Tensor, train_labels: list[str], test_x: torch.Tensor,
                   test_labels: list[str], classes: list[str] | None = None, extra: dict | None = None) -> ArrayDataset:
    """An ArrayDataset of float32 signals [N, C, L] with class names, its scaling standardized per channel."""
    from .scaling import fit_scaling

    classes = classes or class_names(train_labels)
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(test_labels) - set(index))
    if unknown:
        raise CnnlabError(f"{name}: the test split has labels the training split lacks: {', '.join(unknown[:10])}")
    if train_x.shape[1:] != test_x.shape[1:]:
        raise CnnlabError(f"{name}: train signals are {'x'.join(map(str, train_x.shape[1:]))} but test signals "
                          f"{'x'.join(map(str, test_x.shape[1:]))}; give both the same length (or length=N)")
    ytr = torch.tensor([index[v] for v in train_labels], dtype=torch.int64)
    yte = torch.tensor([index[v] for v in test_labels], dtype=torch.int64)
    mean, std = fit_scaling("standard", train_x)
    return ArrayDataset(name, train_x.float().contiguous(), ytr, test_x.float().contiguous(), yte, list(classes),
                        mean, std, flip_ok=False, extra=extra or {})


def load_signals(data_dir: Path | None, download: bool = True, length: int | None = None, test_split: float = 0.2,
                 seed: int = 0, label_column: int = 0) -> ArrayDataset:
    """A user's signal files (see the module docstring for the layouts)."""
    if data_dir is None:
        raise CnnlabError("signals dataset: needs --data-dir DIR holding train.npz + test.npz, signals.csv, ... "
                          "(docs/signals.md)")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise CnnlabError(f"signals dataset: --data-dir {root} is not a folder")
    length = check_length(length)
    if not 0 < float(test_split) < 1:
        raise CnnlabError(f"signals dataset: test_split must be in (0, 1), got {test_split!r}")
    train, test, layout = find_parts(root, label_column, ragged_ok=length is not None)
    lengths = {p.tensor(None).shape[1:] for p in (train, test) if p is not None and isinstance(p.signals, np.ndarray)}
    if len(lengths) > 1 and length is None:
        shapes = " and ".join("x".join(map(str, s)) for s in lengths)
        raise CnnlabError(f"signals dataset: {root} holds signals of shapes {shapes}; resample them to one length "
                          f"with --data-options length=N")
    extra = {"root": str(root), "layout": layout}
    if test is None:
        x = train.tensor(length)
        classes = class_names(train.labels)
        labels = torch.tensor([classes.index(v) for v in train.labels])
        tr, te = stratified_split(labels, float(test_split), int(seed))
        extra["split"] = f"test_split={test_split}, seed={seed}"
        return signal_dataset("signals", x[tr], [train.labels[i] for i in tr.tolist()], x[te],
                              [train.labels[i] for i in te.tolist()], classes, extra)
    extra["split"] = "files"
    return signal_dataset("signals", train.tensor(length), train.labels, test.tensor(length), test.labels, None, extra)


def read_signal_file(path: str | Path, length: int, channels: int) -> tuple[list[str], torch.Tensor]:
    """Signals of one file for ``cnnlab predict``: (a name per signal, float32 [N, channels, length]).

    ``.npy`` (an array [N, L] / [N, C, L] or one signal [L]), ``.npz`` (its ``x``), ``.csv`` (one
    signal per line; a label column is not expected, but a first line starting with ``label`` is a header
    and a column named ``label`` is skipped). Signals of another length are resampled to ``length``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        arr = np.asarray(_load_numpy(path, "an NPY array"))
        x = _as_signals(arr[None] if arr.ndim == 1 else arr, str(path))
    elif suffix == ".npz":
        with _load_numpy(path, "an NPZ archive") as z:
            if "x" not in z.files:
                raise CnnlabError(f"{path}: needs an array 'x' of signals (has {', '.join(z.files) or 'none'})")
            x = _as_signals(z["x"], str(path))
    elif suffix == ".csv":
        part = _read_unlabelled_csv(path)
        return [f"{path}:{line}" for line in part[0]], torch.cat([resample(torch.from_numpy(s)[None, None], length)
                                                                  for s in part[1]])
    else:
        raise CnnlabError(f"{path}: a signal file must be .npy, .npz or .csv")
    t = torch.from_numpy(x)
    if t.shape[1] != channels:
        raise CnnlabError(f"{path}: signals have {t.shape[1]} channels but the model takes {channels}")
    return [f"{path}:{i}" for i in range(len(t))], resample(t, length)


def _read_unlabelled_csv(path: Path) -> tuple[list[int], list[np.ndarray]]:
    """(line numbers, float32 signals) of a CSV of values only; a 'label' column (by header) is dropped."""
    lines, signals, skip = [], [], None
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            for number, row in enumerate(csv.reader(handle), start=1):
                if not row or all(not f.strip() for f in row):
                    continue
                if skip is None and not lines and any(f.strip().lower() == "label" for f in row):
                    skip = [f.strip().lower() for f in row].index("label")
                    continue
                values = [f for i, f in enumerate(row) if i != skip]
                signal = _numbers(values, path, number, lambda col: col + 1 + (skip is not None and col >= skip),
                                  np.float32)
                lines.append(number)
                signals.append(signal)
    except OSError as e:
        raise CnnlabError(f"{path}: cannot read ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise CnnlabError(f"{path}: not a text (UTF-8) CSV file") from None
    if not signals:
        raise CnnlabError(f"{path}: no signals (one per line: v1,v2,...)")
    return lines, signals


register_dataset(DatasetSpec(
    "signals", load_signals, "your own 1-D signals: --data-dir DIR with NPZ/NPY/CSV files (docs/signals.md)",
    source="--data-dir", kind="signals", notes={"shape": "C x L from the files; length=N resamples",
                                "classes": "from the labels", "splits": "train/test files or stratified test_split"}))


def plot_signal_rows(rows: list[tuple[str, torch.Tensor]], path: Path, title: str = "", shown: int = 4) -> None:
    """Signals [N, C, L] of several labelled rows (e.g. originals, reconstructions) overlaid: one panel per
    signal (the first ``shown``), channel 0, a line per row."""
    from ..plots import colors, pyplot, save_figure

    plt = pyplot()
    n = min(shown, min(len(x) for _, x in rows))
    fig, axes = plt.subplots(n, 1, figsize=(10, 1.8 * n + 0.6), squeeze=False)
    palette = colors(len(rows))
    for i in range(n):
        ax = axes[i, 0]
        for (label, x), color in zip(rows, palette):
            ax.plot(x[i, 0].float().numpy(), lw=0.7, color=color, label=label if i == 0 else None)
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=8, loc="upper right")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
