"""Divergence: a non-finite training loss stops the run before anything of that epoch is saved.

With a learning rate far too high (``--lr 1e6``) the loss becomes inf, then NaN, and stays so;
training on would evaluate NaN weights every epoch, overwrite the last good checkpoint with
them and write a NaN model as "finished". The loop checks each epoch's training loss (the
epoch's sums are read back once per epoch anyway, so the check costs no synchronisation per
step) before evaluating or saving: at most one epoch is spent on NaN, the checkpoint of the
last good epoch stays the newest, and the message says what to change.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .errors import CnnlabError


def check_finite_loss(row: dict[str, Any], last_saved_epoch: int | None, run_dir: Path, lr: float) -> None:
    """Raise a CnnlabError when the epoch's ``train_loss`` is inf or NaN (``last_saved_epoch``: the epoch
    of the newest checkpoint, ``None`` when none was written)."""
    loss = row.get("train_loss")
    if loss is None or math.isfinite(loss):
        return
    kept = (f"the checkpoint after epoch {last_saved_epoch} is kept (cnnlab train --resume {run_dir} would "
            "repeat the divergence with the same settings)" if last_saved_epoch else "no checkpoint was written")
    raise CnnlabError(f"training diverged: the loss of epoch {row['epoch']} is {loss} (not finite); stopped before "
                      f"saving anything of it: {kept}; lower --lr (it is {lr:g}), set --clip-grad, or add warm-up "
                      f"(--warmup-epochs), and train again")
