"""Checkpoints: written atomically, read back without unpickling arbitrary objects.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts only, so
``torch.load(weights_only=True)`` can read it; final weights also go to a
``.safetensors`` file for deployment. Both are written atomically (:mod:`cnnlab.files`):
a crash never leaves a half-written checkpoint in place of a good one. The previous
checkpoint stays in place until the new one is complete and fsynced; only then does the
rename replace it (and the folder is fsynced, so the rename itself survives a power cut).

A checkpoint carries a SHA-256 ``checksum`` of its contents (:func:`state_checksum`):
torch.load does not check the zip's CRCs, so without it a flipped byte in a tensor would
load silently. A training checkpoint also holds the epoch's metrics rows (``metrics``,
JSON): metrics.jsonl is rewritten from them on resume, so a crash between the checkpoint
and the metrics append loses no row.
"""
from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .errors import CnnlabError, first_line
from .files import atomic_write

if TYPE_CHECKING:
    from .state import Progress, TrainingParts


CHECKSUM = "checksum"
TRAINING_KEYS = ("model", "optimizer", "scheduler", "state", "rng", "config")  # what restore_training needs


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    state = {**state, CHECKSUM: state_checksum(state)}
    atomic_write(path, lambda p: torch.save(state, p))


def save_training(path: str | Path, parts: "TrainingParts", progress: "Progress", config: dict[str, Any],
                  rows: list[dict[str, Any]] | None = None) -> None:
    """Everything a resumed run needs: the parts' states, the counters, every RNG, the config and
    the metrics rows of the epochs done (``rows``), so the checkpoint and its metrics are one write."""
    from .state import CHECKPOINT_FORMAT

    state = {"format": CHECKPOINT_FORMAT, **parts.state_dict(), "state": progress.state_dict(),
             "rng": rng_state(), "config": config}
    if rows is not None:
        state["metrics"] = json.dumps(rows, default=float)
    save_checkpoint(state, path)


def restore_training(ckpt: str | Path | dict[str, Any], parts: "TrainingParts", progress: "Progress",
                     path: str | Path = "checkpoint") -> list[dict[str, Any]] | None:
    """Load what :func:`save_training` wrote (a path, or the dict :func:`load_training_checkpoint` read
    from ``path``) back into ``parts`` and ``progress`` and reset the RNGs. Returns the metrics rows
    the checkpoint holds (``None``: written before checkpoints held them)."""
    if not isinstance(ckpt, dict):
        path, ckpt = ckpt, load_training_checkpoint(ckpt)
    try:
        parts.load_state_dict(ckpt)
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        raise CnnlabError(f"{path}: does not fit this run's model or optimizer ({mismatch(e)}); was it copied "
                          "from another run?") from None
    try:
        progress.load_state_dict(ckpt["state"])
        set_rng_state(ckpt["rng"])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        raise CnnlabError(f"{path}: damaged training state ({type(e).__name__}: {first_line(e)})") from None
    return checkpoint_rows(ckpt, path)


def checkpoint_rows(ckpt: dict[str, Any], path: str | Path = "checkpoint") -> list[dict[str, Any]] | None:
    """The metrics rows saved with a training checkpoint, or ``None`` when it holds none."""
    if "metrics" not in ckpt:
        return None
    try:
        rows = json.loads(ckpt["metrics"])
        if not isinstance(rows, list) or not all(isinstance(r, dict) and isinstance(r.get("epoch"), int) for r in rows):
            raise ValueError("expected a list of rows with an integer epoch")
    except (TypeError, ValueError) as e:
        raise CnnlabError(f"{path}: damaged metrics rows ({first_line(e)})") from None
    return rows


def load_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by :func:`save_training`, or a CnnlabError saying what it lacks."""
    ckpt = load_checkpoint(path)
    missing = [k for k in TRAINING_KEYS if k not in ckpt]
    if missing:
        raise CnnlabError(f"{path}: not a cnnlab training checkpoint (missing {', '.join(missing)})")
    return ckpt


def check_progress(path: str | Path, progress: "Progress", rows: list[dict[str, Any]] | None,
                   steps_per_epoch: int | None = None) -> None:
    """The checkpoint's claims agree with each other: ``epoch`` epochs of at most ``steps_per_epoch``
    optimizer steps each (plus at most one epoch in progress), and (when it holds them) one metrics row per epoch, numbered 1..epoch.
    A hand-edited or foreign checkpoint claiming epoch 99 of a 3-epoch run is refused, not summarised."""
    e, s = progress.epoch, progress.step
    bad = None
    if not isinstance(e, int) or not isinstance(s, int) or e < 0 or s < 0:
        bad = f"epoch {e!r}, step {s!r}"
    # epochs done, plus at most one epoch in progress (a checkpoint taken mid-epoch, e.g. by a stream loader)
    elif steps_per_epoch and not ((e - 1) * steps_per_epoch < s <= (e + 1) * steps_per_epoch or e == s == 0):
        bad = f"epoch {e} after {s} optimizer steps, but an epoch has {steps_per_epoch}"
    elif rows is not None and [r["epoch"] for r in rows] != list(range(1, e + 1)):
        bad = f"epoch {e}, but metrics rows for epochs {[r['epoch'] for r in rows][:10]}"
    if bad:
        raise CnnlabError(f"{path}: inconsistent checkpoint ({bad}); it was edited or belongs to another run")


def mismatch(error: BaseException) -> str:
    """What a failed ``load_state_dict`` says, shortened to the names: missing/unexpected keys and the
    first size mismatch (torch's message runs to a line per tensor)."""
    text = str(error)
    parts = []
    for label in ("Missing key(s)", "Unexpected key(s)"):
        i = text.find(label)
        if i >= 0:
            names = text[i:].split(":", 1)[1].split(".\n", 1)[0].split(". ", 1)[0]
            names = [n.strip().strip('"') for n in names.split(",")]
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            parts.append(f"{label.split()[0].lower()}: {shown}")
    i = text.find("size mismatch for")
    if i >= 0:
        parts.append(text[i:].split("\n", 1)[0].rstrip("."))
    return "; ".join(parts) or first_line(error)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's dict, read without unpickling code; its checksum checked when it has one."""
    path = Path(path)
    if not path.is_file():
        raise CnnlabError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, or one holding objects we refuse to unpickle
        raise CnnlabError(f"{path}: not a readable cnnlab checkpoint ({type(e).__name__}: {first_line(e)})") from None
    if not isinstance(ckpt, dict):
        raise CnnlabError(f"{path}: not a cnnlab checkpoint (it holds a {type(ckpt).__name__}, not a dict)")
    if CHECKSUM in ckpt:
        saved = ckpt.pop(CHECKSUM)
        if saved != state_checksum(ckpt):
            raise CnnlabError(f"{path}: damaged checkpoint (checksum mismatch: its contents changed after it was "
                              "written); restore it from a copy or start the run again")
    return ckpt


def state_checksum(state: Any) -> str:
    """SHA-256 over a checkpoint's contents in a fixed order: every key, every tensor's dtype, shape and
    bytes, every number and string (the ``checksum`` key itself excluded)."""
    h = hashlib.sha256()
    _digest(h, {k: v for k, v in state.items() if k != CHECKSUM} if isinstance(state, dict) else state)
    return h.hexdigest()


def _digest(h: "hashlib._Hash", x: Any) -> None:
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(x, dict):
        h.update(f"D{len(x)}".encode())
        for k in sorted(x, key=repr):
            h.update(repr(k).encode())
            _digest(h, x[k])
    elif isinstance(x, (list, tuple)):
        h.update(f"L{len(x)}".encode())
        for v in x:
            _digest(h, v)
    else:
        h.update(f"S{x!r}".encode())


def save_weights(state_dict: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Model weights only, as safetensors (no code, no pickle)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    atomic_write(path, lambda p: save_file(tensors, str(p), metadata=metadata))


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as e:
        raise CnnlabError(f"{path}: not a readable safetensors weights file ({e})") from None


def rng_state() -> dict[str, Any]:
    """Every RNG the training loop touches, in weights_only-loadable types."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": list(_to_lists(random.getstate())),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    random.setstate(_to_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(x):
    return [_to_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def _to_tuples(x):
    return tuple(_to_tuples(v) for v in x) if isinstance(x, (tuple, list)) else x


# config fields that name other run folders: they move with copies of the runs, and cnnlab.two_stage
# checks what they hold (the autoencoder's fingerprint), so their path may differ on resume
RUN_PATHS = ("features_from", "denoiser")


def check_resume_config(path: str | Path, saved: dict[str, Any], current: dict[str, Any], may_differ: set[str],
                        config_file: str | Path) -> None:
    """``--resume`` reads ``config.yaml``; what it says must be what the checkpoint was trained with, for
    every field that changes the result and that ``--resume`` may not change (``may_differ`` lists the
    others). An edited or damaged config.yaml (an ``lr`` changed by hand, a 0-byte file read as the
    defaults) is refused instead of silently training on with other settings."""
    if not isinstance(saved, dict):
        raise CnnlabError(f"{path}: damaged checkpoint (its config is a {type(saved).__name__})")
    may_differ = set(may_differ) | set(RUN_PATHS)
    changed = sorted(k for k in saved if k in current and k not in may_differ and current[k] != saved[k])
    if changed:
        shown = ", ".join(f"{k} {current[k]!r} (checkpoint: {saved[k]!r})" for k in changed[:5])
        raise CnnlabError(f"{config_file}: does not match the run's checkpoint: {shown}; the file was edited or "
                          "damaged: restore those values (a changed recipe is a new run: cnnlab train --config "
                          f"{config_file} --name NEW)")
