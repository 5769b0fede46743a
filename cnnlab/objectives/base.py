"""The objective seam: what the model's output is compared with, the loss, and the metrics.

The training loop (:mod:`cnnlab.train`) knows nothing about classes or labels. For every
batch it asks the objective for the model's inputs and targets, the loss to minimize and
a few batch sums (e.g. correct predictions); per epoch it asks for the train metrics from
those sums and for the evaluation metrics on the test split; at the end, for the full
report. A new method (a reconstruction loss for autoencoders, an energy-model head with
its own likelihood, a pre-training stage) is a new :class:`Objective` registered by name
and chosen with ``--objective``; the loop does not change. docs/design.md shows an example.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch

from ..device import Runtime

if TYPE_CHECKING:
    from ..config import TrainConfig
    from ..data.base import ArrayDataset


@dataclass(frozen=True)
class EvalSetup:
    """How evaluation runs: the runtime, the input normalization, TTA and batch size."""

    runtime: Runtime
    mean: Sequence[float]
    std: Sequence[float]
    tta: str = "none"
    batch_size: int = 1024


class Objective:
    """Base class of every objective; subclasses register with :func:`cnnlab.objectives.register_objective`.

    ``headline`` names the per-epoch evaluation metric that ``best_*`` and ``--target-acc`` follow
    (a key of :meth:`evaluate`'s result); ``None`` when the objective has no such metric.
    """

    name = ""
    headline: str | None = None

    @classmethod
    def from_config(cls, cfg: "TrainConfig") -> "Objective":
        """Build from a run's config (each objective reads the fields it needs).

        Objectives with options of their own take them as keyword arguments here, given on the
        command line as ``--objective NAME:KEY=VALUE,KEY=VALUE`` (:func:`cnnlab.objectives.create_objective`).
        """
        return cls()

    def bind(self, model: torch.nn.Module) -> None:
        """Called once with the model to be trained, before a checkpoint is restored. Objectives whose
        loss needs more than the model's output (e.g. a head's input features) find it here."""

    def state_dict(self) -> dict[str, Any]:
        """What the objective itself must carry across a resume (e.g. persistent Markov chains); saved in
        every checkpoint next to the model's and optimizer's state. Tensors, numbers and strings only."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (an empty dict for checkpoints written without it)."""

    def prepare(self, ds: "ArrayDataset") -> None:
        """Called once the training data is loaded, before the first batch: an objective that needs
        the data's facts (e.g. its input scaling, to corrupt pixels rather than scaled values) reads
        them here. The default needs none."""

    def inputs_and_targets(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's input and the loss target for a batch of normalized images ``x`` and labels ``y``."""
        return x, y

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The scalar to minimize (mean over the batch), computed in float32."""
        raise NotImplementedError

    def batch_sums(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-batch sums (tensors, not synchronised: the loop adds them up on the device)."""
        return {}

    def train_metrics(self, sums: dict[str, float], seen: int) -> dict[str, float]:
        """The epoch's train metrics (``train_*`` keys) from the summed :meth:`batch_sums`."""
        return {}

    def evaluate(self, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 setup: EvalSetup) -> dict[str, float]:
        """Per-epoch evaluation metrics (``test_*`` keys) on uint8 ``images`` and their ``labels``."""
        raise NotImplementedError

    def final_report(self, model: torch.nn.Module, ds: "ArrayDataset", setup: EvalSetup,
                     run_dir: Path) -> dict[str, Any]:
        """All end-of-run metrics on the test split for summary.json; may write plots into ``run_dir``."""
        return self.evaluate(model, ds.test_images, ds.test_labels, setup)

    def describe(self, summary: dict[str, Any]) -> str:
        """One line for the end of a run, e.g. ``"test accuracy 98.1%"``."""
        return ", ".join(f"{k} {v:.4g}" for k, v in summary.items() if k.startswith("test_") and
                         isinstance(v, float))
