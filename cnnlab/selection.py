"""Honest model selection: run length, per-epoch validation, the best checkpoint and early stopping.

Every choice made while training looks at the validation split only (:mod:`cnnlab.data.split`):
which epoch's weights are "best" (``best.safetensors``), when to stop early (``--patience``,
``--min-delta``), when ``--target-acc`` is reached, and what the ``plateau`` schedule watches
(the validation loss). The test split is evaluated once, at the end, with the weights chosen on
validation (the best ones when there is a validation split, else the last), and the summary says so.

The per-epoch evaluation reuses the objective's ``evaluate`` (whose keys are ``test_*``, named for
the end-of-run report) and renames its keys to ``val_*`` (:func:`as_split`), so objectives need not
know which split they are shown.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import CnnlabError

if TYPE_CHECKING:
    import torch

    from .config import TrainConfig
    from .objectives import Objective
    from .state import Progress

DEFAULT_EPOCHS = 10
LOWER_IS_BETTER = ("loss", "mse", "error", "nll")  # a monitored key ending in one of these is minimised


# ------------------------------------------------------------------------------------------ run length


def run_length(cfg: "TrainConfig", steps_per_epoch: int) -> tuple[int, int, str]:
    """``(total optimizer steps, epochs, how it was chosen)``; ``steps_per_epoch`` counts optimizer steps.

    ``--steps`` and ``--epochs`` say it outright. With neither, a run takes :data:`DEFAULT_EPOCHS`
    epochs, or more when those would be fewer than ``--min-steps`` optimizer steps: a folder of 320
    images at batch 128 makes 3 steps an epoch, and 30 steps do not train a network.
    """
    spe = max(1, steps_per_epoch)
    if cfg.steps is not None:
        total, how = cfg.steps, f"{cfg.steps} optimizer steps (--steps)"
    elif cfg.epochs is not None:
        total, how = max(1, round(cfg.epochs * spe)), f"{cfg.epochs:g} epochs (--epochs)"
    elif DEFAULT_EPOCHS * spe >= cfg.min_steps:
        total, how = DEFAULT_EPOCHS * spe, f"{DEFAULT_EPOCHS} epochs (default)"
    else:
        epochs = math.ceil(cfg.min_steps / spe)
        total = epochs * spe
        how = (f"{epochs} epochs (auto: {DEFAULT_EPOCHS} epochs would be only {DEFAULT_EPOCHS * spe} optimizer steps, "
               f"fewer than --min-steps {cfg.min_steps})")
    epochs = math.ceil(total / spe)
    return total, epochs, f"{how} = {total} steps of {spe} per epoch"


def planned_epochs(cfg: "TrainConfig", train_images: int | None) -> float:
    """The epochs a run will take, for estimates made before the data is loaded (studies)."""
    if cfg.epochs is not None:
        return cfg.epochs
    if not train_images:
        return float(DEFAULT_EPOCHS)
    per_step = cfg.batch_size * cfg.accum_steps
    spe = max(1, math.ceil(train_images * (1 - cfg.val_split) / per_step))
    if cfg.steps is not None:
        return cfg.steps / spe
    return float(max(DEFAULT_EPOCHS, math.ceil(cfg.min_steps / spe)))


# ------------------------------------------------------------------------------------------ checks


def monitor_of(cfg: "TrainConfig", objective: "Objective") -> str:
    """The validation metric that chooses the best weights: ``--monitor``, else the objective's headline."""
    if cfg.monitor:
        return cfg.monitor
    return "val_" + objective.headline.removeprefix("test_") if objective.headline else "val_loss"


def lower_is_better(key: str) -> bool:
    return key.endswith(LOWER_IS_BETTER)


def check_config(cfg: "TrainConfig") -> None:
    """Combinations of fields that cannot work; called before the run folder is touched."""
    if cfg.steps is not None and cfg.epochs is not None:
        raise CnnlabError("--steps and --epochs both set: give the run length one way")
    if cfg.class_weights not in (None, "auto"):
        from .objectives.classify import parse_class_weights

        parse_class_weights(cfg.class_weights)
    if (cfg.mixup or cfg.cutmix or cfg.class_weights) and cfg.objective.split(":")[0] != "classify":
        raise CnnlabError(f"--mixup, --cutmix and --class-weights apply to --objective classify, not {cfg.objective!r}")
    if cfg.val_split == 0 or cfg.cv_fold:  # no validation split: the fold of --cv-fold is scored, never selected on
        why = "--cv-fold scores the last weights on its fold" if cfg.cv_fold else \
            "with --val-split 0 nothing is selected and the last weights are tested"
        for name, flag in (("patience", "--patience"), ("target_acc", "--target-acc"), ("monitor", "--monitor")):
            if getattr(cfg, name) is not None:
                raise CnnlabError(f"{flag} needs a validation split (--val-split > 0); {why}")
        if cfg.sched == "plateau":
            raise CnnlabError(f"--sched plateau watches the validation loss: it needs a validation split; {why}")


def check_monitor(key: str, probe: dict[str, Any], objective_name: str, given: bool = True) -> str | None:
    """``key`` if it is one of the per-epoch validation metrics (``probe``: a val_* row of the objective);
    an error when the user named it, else ``None``: an objective without accuracy or loss selects nothing."""
    if key in probe:
        return key
    if given:
        from .errors import suggest

        hint = suggest(key, probe)
        keys = ", ".join(sorted(k for k in probe if k.startswith("val_")))
        raise CnnlabError(f"--monitor {key}: objective {objective_name!r} reports no such validation metric"
                          f"{f' ({hint})' if hint else ''}; choose from {keys}")
    return None


def as_split(metrics: dict[str, Any], split: str) -> dict[str, Any]:
    """The objective's ``test_*`` keys renamed to ``<split>_*`` (the per-epoch rows are on validation)."""
    return {(split + k[4:] if k.startswith("test_") else f"{split}_{k}"): v for k, v in metrics.items()}


# ------------------------------------------------------------------------------------------ the choice


class Selector:
    """Follows the monitored validation metric; its state lives in :class:`cnnlab.state.Progress` so a
    resumed run continues with the same best, the same count of evaluations without improvement."""

    def __init__(self, key: str, patience: int | None = None, min_delta: float = 0.0):
        self.key, self.patience, self.min_delta = key, patience, float(min_delta)
        self.minimize = lower_is_better(key)

    def improved(self, value: float, best: float | None) -> bool:
        if best is None:
            return math.isfinite(value)
        return value < best - self.min_delta if self.minimize else value > best + self.min_delta

    def observe(self, row: dict[str, Any], progress: "Progress") -> bool:
        """Record an evaluated epoch; True when it is the new best (its weights are to be kept)."""
        value = float(row[self.key])
        if self.improved(value, progress.best_value):
            progress.best_value, progress.best_epoch, progress.bad_evals = value, row["epoch"], 0
            return True
        progress.bad_evals += 1
        if self.patience is not None and progress.bad_evals >= self.patience:
            progress.stopped_early = row["epoch"]
        return False

    def record(self, progress: "Progress", last_epoch: int, tested: str) -> dict[str, Any]:
        """What summary.json says about the choice."""
        return {"monitor": self.key, "mode": "min" if self.minimize else "max", "best_epoch": progress.best_epoch,
                "best_value": progress.best_value, "last_epoch": last_epoch, "tested_weights": tested,
                "patience": self.patience, "min_delta": self.min_delta, "stopped_early_at": progress.stopped_early}


def save_best(path: Path, model: "torch.nn.Module", cfg: "TrainConfig", epoch: int, value: float) -> None:
    """The best weights so far, atomically (a crash leaves the previous best in place)."""
    from .checkpoint import save_weights

    save_weights(model.state_dict(), path, {"model": cfg.model, "dataset": cfg.data, "epoch": str(epoch),
                                            "monitor": cfg.monitor or "", "value": repr(value)})


def load_into(model: "torch.nn.Module", path: Path) -> None:
    from .checkpoint import load_weights

    model.load_state_dict(load_weights(path))
