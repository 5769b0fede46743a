"""``spectra``: a generated stand-in for the two-stage paper's wheat densitograms (Sec. 3, Fig. 3).

The real data -- 3225 electrophoretic densitograms of gliadin, about 4000 points each, from 50
sorts of durum wheat -- are not public. This generator makes a data set of the same shape so that
the paper's pipeline (CAE codes, then a 1-D CNN or a DNN; Table 3, Fig. 5) can be run end to end. It
is a stand-in, not wheat: numbers measured on it say how the methods rank on a problem built to
have the densitograms' difficulties, not what they would score on the real spectra.

How a data set is drawn (everything from ``numpy.random.default_rng(seed)``, default seed 0, so the
same options always give the same signals; ``python -m cnnlab.data.spectra OUT.npz`` writes them):

1. **A common backbone** of ``BACKBONE_PEAKS`` Gaussian peaks (position uniform over the middle
   90% of the strip, width sigma 4..14 points, height 0.2..1.0): what all sorts share, as gliadin
   spectra of one species do.
2. **50 sort templates**: each sort rescales every backbone peak's height by a factor in 0.5..1.5,
   moves each peak by N(0, 3 points), drops ``DROPPED`` peaks and adds ``SORT_PEAKS`` peaks of its own
   (its "allelic" components). Sorts therefore differ by a few peaks and by relative heights.
3. **Per-sample variation**, as between gels and densitometer runs: the strip is shifted
   (uniform +-``SHIFT`` of the length) and stretched about its centre (factor 1 +- ``STRETCH``),
   every peak's height varies by +-``PEAK_JITTER`` and the whole sample by a gain 0.8..1.2, a
   smooth baseline drift is added (a random quadratic plus a slow sine, up to about 0.3), and
   white noise (std ``NOISE``).
4. **Sample counts like the paper's**: 3225 signals over 50 sorts, per-sort counts drawn around
   64.5 (about 40..90); a stratified 20% of each sort is the test split (646 signals).

The shift (up to 60 points) is several peak widths, so two samples of one sort do not line up
point by point, and sorts share most peaks: a classifier that compares raw values (a DNN on the
4000 points, nearest template) has a hard time; features that tolerate misalignment (convolutions
with pooling) find the sort's own peaks. ``classes=N`` keeps the first N sorts (Fig. 5's efficiency
against the number of sorts).
"""
from __future__ import annotations

import argparse
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ..errors import CnnlabError
from .base import DatasetSpec, register_dataset
from .signals import signal_dataset

SORTS, SAMPLES, LENGTH, TEST_FRACTION = 50, 3225, 4000, 0.2  # the paper's data set (Sec. 3)
BACKBONE_PEAKS, FAMILIES, FAMILY_PEAKS, DROPPED, SORT_PEAKS = 36, 10, 4, 4, 1
SHIFT, STRETCH, PEAK_JITTER, NOISE = 0.015, 0.02, 0.15, 0.02
CHUNK = 128  # signals rendered at once: [CHUNK, peaks, length] floats


def _peaks(rng: np.random.Generator, n: int, lo: float, hi: float, scale: float, height: tuple[float, float]
           ) -> np.ndarray:
    """``n`` random peaks as rows (position, sigma, height), in points."""
    return np.stack([rng.uniform(lo, hi, n), rng.uniform(4, 14, n) * scale, rng.uniform(*height, n)], 1)


def _vary(rng: np.random.Generator, peaks: np.ndarray, height: tuple[float, float], move: float, drop: int,
          own: np.ndarray) -> np.ndarray:
    """``peaks`` with heights rescaled in ``height``, positions moved by N(0, move), ``drop`` removed, ``own`` added."""
    peaks = peaks.copy()
    peaks[:, 0] += rng.normal(0, move, len(peaks))
    peaks[:, 2] *= rng.uniform(*height, len(peaks))
    peaks = np.delete(peaks, rng.choice(len(peaks), drop, replace=False), axis=0)
    return np.concatenate([peaks, own])


def _templates(rng: np.random.Generator, sorts: int, length: int) -> list[np.ndarray]:
    """Per sort: peaks as rows (position, sigma, height) in points (steps 1-2 of the module docstring)."""
    lo, hi = 0.05 * length, 0.95 * length
    scale = length / LENGTH  # widths and jitters are set for 4000 points
    backbone = _peaks(rng, BACKBONE_PEAKS, lo, hi, scale, (0.2, 1.0))
    families = [_vary(rng, backbone, (0.5, 1.5), 3 * scale, DROPPED,
                      _peaks(rng, FAMILY_PEAKS, lo, hi, scale, (0.3, 0.9))) for _ in range(FAMILIES)]
    return [_vary(rng, families[k % FAMILIES], (0.8, 1.2), 1 * scale, 1, _peaks(rng, SORT_PEAKS, lo, hi, scale,
                                                                                (0.15, 0.4)))
            for k in range(sorts)]


def _counts(rng: np.random.Generator, sorts: int, samples: int) -> np.ndarray:
    """Signals per sort, summing to ``samples``, spread like a real collection (about 0.6..1.4 x mean)."""
    w = rng.uniform(0.6, 1.4, sorts)
    counts = np.floor(w / w.sum() * samples).astype(np.int64)
    counts[np.argsort(-w)[: samples - counts.sum()]] += 1
    if counts.min() < 2:
        raise CnnlabError(f"spectra: {samples} samples are too few for {sorts} sorts (need >= 2 per sort)")
    return counts


def render(peaks: np.ndarray, n: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of one sort's template (step 3 of the module docstring) as float32 [n, length]."""
    out = np.empty((n, length), np.float32)
    centre = (length - 1) / 2
    for start in range(0, n, CHUNK):
        b = min(CHUNK, n - start)
        shift = rng.uniform(-SHIFT, SHIFT, (b, 1)) * length
        stretch = 1 + rng.uniform(-STRETCH, STRETCH, (b, 1))
        pos = torch.from_numpy(centre + (peaks[None, :, 0] - centre) * stretch + shift).float()
        sigma = torch.from_numpy(peaks[None, :, 1] * stretch).float()
        height = torch.from_numpy(peaks[None, :, 2] * rng.uniform(1 - PEAK_JITTER, 1 + PEAK_JITTER,
                                                                  (b, len(peaks)))).float()
        # each peak only where it is non-negligible (+-6 sigma): a window of points per peak, scatter-added
        half = int(np.ceil(6 * sigma.max().item()))
        idx = pos.round().long()[:, :, None] + torch.arange(-half, half + 1)  # [b, peaks, window]
        z = (idx - pos[:, :, None]) / sigma[:, :, None]
        vals = height[:, :, None] * torch.exp(-0.5 * z * z) * ((idx >= 0) & (idx < length))
        x = torch.zeros(b, length).scatter_add_(1, idx.clamp(0, length - 1).view(b, -1), vals.view(b, -1))
        gain = torch.from_numpy(rng.uniform(0.8, 1.2, (b, 1))).float()
        u = torch.linspace(-1, 1, length)[None]
        a = torch.from_numpy(rng.uniform(-0.1, 0.1, (b, 3))).float()
        phase = torch.from_numpy(rng.uniform(0, 2 * np.pi, (b, 1))).float()
        baseline = 0.1 + a[:, :1] + a[:, 1:2] * u + a[:, 2:] * u * u + 0.05 * torch.sin(2.5 * u + phase)
        noise = torch.from_numpy(rng.normal(0, NOISE, (b, length))).float()
        out[start:start + b] = (gain * x + baseline + noise).numpy()
    return out


def generate(classes: int = SORTS, samples: int | None = None, length: int = LENGTH, seed: int = 0
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train x [N, L], train y, test x, test y) for the first ``classes`` of the 50 sorts.

    The sorts' templates and counts are always those of the 50-sort set, so ``classes=10`` is the
    first 10 sorts of the full set with the same signals (``samples`` scales the full set's size).
    """
    if not 2 <= classes <= SORTS:
        raise CnnlabError(f"spectra: classes must be in 2..{SORTS}, got {classes!r}")
    if not isinstance(length, int) or length < 100:
        raise CnnlabError(f"spectra: length must be an integer >= 100, got {length!r}")
    signals = _sorts(SAMPLES if samples is None else int(samples), int(length), int(seed))[:classes]
    parts: dict[str, list[np.ndarray]] = {"train_x": [], "train_y": [], "test_x": [], "test_y": []}
    for k, x in enumerate(signals):
        n_test = min(len(x) - 1, max(1, int(len(x) * TEST_FRACTION + 0.5)))
        parts["test_x"].append(x[:n_test])
        parts["train_x"].append(x[n_test:])
        parts["test_y"].append(np.full(n_test, k))
        parts["train_y"].append(np.full(len(x) - n_test, k))
    out = []
    order_rng = np.random.default_rng([seed, SORTS])  # shuffled, so that --train-subset keeps every sort
    for split in ("train", "test"):
        x, y = np.concatenate(parts[f"{split}_x"]), np.concatenate(parts[f"{split}_y"])
        order = order_rng.permutation(len(y))
        out += [x[order], y[order]]
    return tuple(out)  # type: ignore[return-value]


@lru_cache(maxsize=1)  # a study trains many models on the same signals: draw them once per process
def _sorts(total: int, length: int, seed: int) -> tuple[np.ndarray, ...]:
    """The signals of each of the 50 sorts, [n_k, length] each (steps 1-3 of the module docstring)."""
    rng = np.random.default_rng(seed)
    templates = _templates(rng, SORTS, length)
    counts = _counts(rng, SORTS, total)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small ops: on a busy machine more threads were 4x slower (3.4 s vs 16 s here)
    try:  # each sort its own random stream, so the signals of a sort do not depend on the others
        return tuple(render(templates[k], int(counts[k]), length, np.random.default_rng([seed, k]))
                     for k in range(SORTS))
    finally:
        torch.set_num_threads(threads)


def load_spectra(data_dir: Path | None = None, download: bool = True, classes: int = SORTS, length: int = LENGTH,
                 samples: int | None = None, seed: int = 0):
    """The generated densitogram stand-in as an in-memory signal dataset (see the module docstring)."""
    tr_x, tr_y, te_x, te_y = generate(int(classes), samples, int(length), int(seed))
    names = [f"sort{k + 1:02d}" for k in range(int(classes))]
    extra = {"generator": "cnnlab.data.spectra", "seed": seed, "stand_in": True}
    return signal_dataset("spectra", torch.from_numpy(tr_x)[:, None], [names[i] for i in tr_y],
                          torch.from_numpy(te_x)[:, None], [names[i] for i in te_y], names, extra)


if __name__ != "__main__":  # `python -m cnnlab.data.spectra` runs a second copy of this module: register once
    register_dataset(DatasetSpec(
        "spectra", load_spectra, "generated stand-in for the wheat densitograms (50 sorts, 1x4000; docs/signals.md)",
        channels=1, length=LENGTH, num_classes=SORTS, train_size=2579, test_size=646, kind="signals",
        source="generated (cnnlab.data.spectra, seed 0)", notes={"classes": "classes=N keeps the first N",
                                                                 "splits": "stratified 20% per sort"}))


def main(argv: list[str] | None = None) -> None:
    """``python -m cnnlab.data.spectra OUT.npz [--classes N] [--seed S]``: the data set as train/test NPZ
    files (OUT-train.npz, OUT-test.npz in the layout ``--data signals`` reads)."""
    p = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    p.add_argument("out", help="folder to write train.npz and test.npz into")
    p.add_argument("--classes", type=int, default=SORTS)
    p.add_argument("--length", type=int, default=LENGTH)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    from ..files import atomic_path

    tr_x, tr_y, te_x, te_y = generate(a.classes, None, a.length, a.seed)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    names = np.array([f"sort{k + 1:02d}" for k in range(a.classes)])
    for split, x, y in (("train", tr_x, tr_y), ("test", te_x, te_y)):
        with atomic_path(out / f"{split}.npz") as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, x=x, y=y, classes=names)
    print(f"wrote {out}/train.npz ({len(tr_y)} signals) and {out}/test.npz ({len(te_y)}), {a.classes} sorts x "
          f"{a.length} points, seed {a.seed}")


if __name__ == "__main__":
    main()
