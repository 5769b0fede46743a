"""Checkpoints: written atomically, read back without unpickling arbitrary objects.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts only, so
``torch.load(weights_only=True)`` can read it; final weights also go to a
``.safetensors`` file for deployment. Both are written atomically (:mod:`cnnlab.files`):
a crash never leaves a half-written checkpoint in place of a good one.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .errors import CnnlabError, first_line
from .files import atomic_write

if TYPE_CHECKING:
    from .state import Progress, TrainingParts


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    atomic_write(path, lambda p: torch.save(state, p))


def save_training(path: str | Path, parts: "TrainingParts", progress: "Progress", config: dict[str, Any]) -> None:
    """Everything a resumed run needs: the parts' states, the counters, every RNG and the config."""
    from .state import CHECKPOINT_FORMAT

    save_checkpoint({"format": CHECKPOINT_FORMAT, **parts.state_dict(), "state": progress.state_dict(),
                     "rng": rng_state(), "config": config}, path)


def restore_training(path: str | Path, parts: "TrainingParts", progress: "Progress") -> None:
    """Load what :func:`save_training` wrote back into ``parts`` and ``progress`` and reset the RNGs."""
    ckpt = load_checkpoint(path)
    parts.load_state_dict(ckpt)
    progress.load_state_dict(ckpt["state"])
    set_rng_state(ckpt["rng"])


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CnnlabError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, or one holding objects we refuse to unpickle
        raise CnnlabError(f"{path}: not a readable cnnlab checkpoint ({type(e).__name__}: {first_line(e)})") from None


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
