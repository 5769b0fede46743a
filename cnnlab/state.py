"""What training changes and a checkpoint saves: the parts trained together and the counters.

:class:`TrainingParts` holds the objects whose state moves with every step (model,
optimizer, schedule, gradient scaler, EMA weights); its ``state_dict()`` /
``load_state_dict()`` are the only place that lists them, so saving and restoring a
checkpoint cannot drift apart. :class:`Progress` is the counters that persist. The
objective's own state (e.g. persistent Markov chains; most objectives have none) is saved
with the parts under ``"objective"``; a checkpoint written before that key existed restores
as an empty state. The loader needs no state of its own: its shuffling and augmentation
draw from torch's global RNG, which the checkpoint saves (:func:`cnnlab.checkpoint.rng_state`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

CHECKPOINT_FORMAT = "cnnlab-checkpoint-1"


SELECTION_COUNTERS = ("best_value", "best_epoch", "bad_evals", "stopped_early")  # absent from older checkpoints


@dataclass
class Progress:
    """Counters that survive a restart (``checkpoint["state"]``)."""

    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps taken
    train_seconds: float = 0.0  # time spent in training steps (evaluation excluded)
    images_seen: int = 0
    # model selection on the validation split (cnnlab.selection): the monitored metric's best value,
    # its epoch, evaluations since it last improved, and the epoch early stopping fired at
    best_value: float | None = None
    best_epoch: int = 0
    bad_evals: int = 0
    stopped_early: int | None = None
    reached_target_at: dict[str, float] | None = None  # {"epoch", "seconds"} once --target-acc was reached

    def state_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for f in dataclasses.fields(self):  # a selection counter newer than the checkpoint keeps its default
            if f.name in state or f.name not in SELECTION_COUNTERS:
                setattr(self, f.name, state[f.name])


@dataclass
class TrainingParts:
    """The objects trained and saved together. ``ema`` and ``scaler`` are ``None`` when unused."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any  # a torch LR scheduler (LambdaLR or cnnlab's ReduceOnPlateau)
    scaler: torch.amp.GradScaler | None = None
    ema: torch.optim.swa_utils.AveragedModel | None = None
    # what the loop calls: the model itself, or its DDP / torch.compile wrapper (not saved: it
    # shares the model's parameters)
    forward: torch.nn.Module | None = None
    # the objective, for the state some objectives keep between steps (Objective.state_dict: e.g.
    # persistent Markov chains); None: nothing of the objective is saved
    objective: Any = None

    def __post_init__(self) -> None:
        if self.forward is None:
            self.forward = self.model

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights to evaluate and deploy: the EMA average when kept, else the model."""
        return self.ema.module if self.ema is not None else self.model

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "objective": self.objective.state_dict() if self.objective is not None else {}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.objective is not None:  # checkpoints written before objectives had state hold none
            self.objective.load_state_dict(state.get("objective") or {})
