"""``classify``: softmax cross-entropy on class labels, optionally label-smoothed.

The loss is the negative log-likelihood of the softmax (thesis eq. 2.2 and 2.8); with
``--label-smoothing e`` the target puts 1 - e + e/K on the true class and e/K on every other
one (``torch.nn.functional.cross_entropy``'s definition). Evaluation reports, each epoch, the
test NLL of the predicted probabilities, accuracy, and the macro precision and recall of the
argmax predictions (sadie eq. 4.1-4.2, the quantities of its Figs. 4, 5, 7 and 9a) with
``test_f1_of_macro`` = 2 P R / (P + R) of those two macro averages, which is how sadie's
Table 3 F1 is computed (not the mean of per-class F1, which is the summary's ``f1``); and
every metric of :func:`cnnlab.metrics.evaluate_predictions` (top-5, precision/recall/F1, BEP,
confusion matrix) at the end.

The softmax is over whatever the model outputs, so a model with SADIE's energy head
(outputs -F(x, y), :mod:`cnnlab.models.energy`) is trained by exactly -log p(y | x).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..predict import predict_probs
from . import register_objective
from .base import EvalSetup, Objective


@register_objective("classify")
class Classify(Objective):
    """Softmax cross-entropy on class labels (label smoothing optional); accuracy per epoch."""

    name = "classify"
    headline = "test_acc"
    # training-only options, set by from_config and prepare: MixUp/CutMix (soft targets) and per-class weights
    mixer = None  # cnnlab.data.mix.Mixer
    class_weight: torch.Tensor | None = None  # --class-weights (not `weight`: energy-hybrid's term weight)
    mix_options: dict[str, float] = {}
    class_weights_spec: str | None = None

    def __init__(self, label_smoothing: float = 0.0):
        self.label_smoothing = float(label_smoothing)
        self.aux = None  # AuxCapture of a model with auxiliary classifiers (GoogLeNet 2014, DSN), set by bind

    @classmethod
    def from_config(cls, cfg) -> "Classify":
        obj = cls(cfg.label_smoothing)
        obj.mix_options = {"mixup": cfg.mixup, "cutmix": cfg.cutmix}
        obj.class_weights_spec = cfg.class_weights
        return obj

    def prepare(self, ds) -> None:
        from ..data.mix import Mixer

        mixer = Mixer(ds.num_classes, **self.mix_options)
        self.mixer = mixer if mixer.enabled else None
        if self.class_weights_spec:
            self.class_weight = class_weights(self.class_weights_spec, ds.train_labels, ds.num_classes)

    def inputs_and_targets(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # called for training batches only: MixUp/CutMix mix them and make the targets class probabilities
        return self.mixer(x, y) if self.mixer is not None else (x, y)

    def bind(self, model: torch.nn.Module) -> None:
        # a model that outputs its input (an autoencoder) has no class scores to take a softmax of;
        # without this check PyTorch fails on the first batch with a message about "spatial targets"
        if hasattr(model, "encode") and hasattr(model, "decode"):
            from ..errors import CnnlabError

            raise CnnlabError(f"--objective {self.name}: model {type(model).__name__} reconstructs its input and "
                              "has no class scores; train it with --objective reconstruct, then classify its "
                              "codes with --features-from RUN (docs/two-stage.md)")
        from ..models.auxiliary import AuxCapture, find_auxiliaries

        # auxiliary classifiers (models/auxiliary.py) run only in training; their weighted losses join the main one
        self.aux = AuxCapture(model) if find_auxiliaries(model) else None

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        weight = None if self.class_weight is None else self.class_weight.to(output.device)
        loss = F.cross_entropy(output.float(), target, weight=weight, label_smoothing=self.label_smoothing)
        if self.aux is not None:
            from ..models.auxiliary import auxiliary_loss

            extra = auxiliary_loss(self.aux.take(), target, self.label_smoothing, weight)
            if extra is not None:
                loss = loss + extra
        return loss

    def batch_sums(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        hard = target if target.dim() == 1 else target.argmax(1)  # mixed targets: their larger share
        return {"correct": (output.detach().argmax(1) == hard).sum()}

    def train_metrics(self, sums: dict[str, float], seen: int) -> dict[str, float]:
        return {"train_acc": sums["correct"] / max(seen, 1)}

    def evaluate(self, model, images, labels, setup: EvalSetup) -> dict[str, float]:
        probs = self.probabilities(model, images, setup)
        return probability_metrics(probs, labels)

    def final_report(self, model, ds, setup: EvalSetup, run_dir: Path) -> dict[str, Any]:
        from .. import runs
        from ..metrics import evaluate_predictions, f1_of_macro, plot_confusion

        probs = self.probabilities(model, ds.test_images, setup)
        m = evaluate_predictions(probs, ds.test_labels, ds.num_classes, ds.classes)
        plot_confusion(m["confusion"], ds.classes, run_dir / runs.CONFUSION)
        p, r = m["precision"], m["recall"]
        return {"test_acc": m["acc"], "test_loss": m["nll"], "top5": m["top5"], "nll": m["nll"], "precision": p,
                "recall": r, "f1": m["f1"], "f1_of_macro": f1_of_macro(p, r), "bep": m["bep"]}

    def describe(self, summary: dict[str, Any]) -> str:
        sel = summary.get("selection") or {}
        if sel.get("tested_weights") == "best":
            best = _shown(sel["monitor"], sel["best_value"])
            chosen = f"weights of epoch {sel['best_epoch']}, chosen by {sel['monitor']} {best}"
        else:
            chosen = "last weights, nothing selected"
        return f"test accuracy {100 * summary['test_acc']:.2f}% ({chosen})"

    @staticmethod
    def probabilities(model, images, setup: EvalSetup) -> torch.Tensor:
        return predict_probs(model, images, setup.mean, setup.std, setup.runtime, setup.tta, setup.batch_size)


def class_weights(spec: str, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``--class-weights``: ``auto`` = N / (K n_c), inverse class frequency with mean 1 over the samples (the
    weighting of scikit-learn's ``class_weight="balanced"``), or one weight per class, comma-separated."""
    from ..errors import CnnlabError

    if spec == "auto":
        counts = torch.bincount(labels.cpu(), minlength=num_classes).float()
        return torch.where(counts > 0, len(labels) / (num_classes * counts.clamp_min(1)), torch.zeros(()))
    values = parse_class_weights(spec)
    if len(values) != num_classes:
        raise CnnlabError(f"--class-weights: {len(values)} weights given for {num_classes} classes")
    return torch.tensor(values, dtype=torch.float32)


def parse_class_weights(spec: str) -> list[float]:
    from ..errors import CnnlabError

    try:
        values = [float(v) for v in str(spec).split(",")]
    except ValueError:
        values = []
    if not values or any(not v >= 0 for v in values) or not any(values):
        raise CnnlabError(f"--class-weights must be auto or a comma-separated list of weights >= 0, got {spec!r}")
    return values


def _shown(key: str, value: float) -> str:
    return f"{100 * value:.2f}%" if key.endswith("acc") else f"{value:.4g}"


def probability_metrics(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Per-epoch metrics of predicted probabilities [N, K] against labels [N].

    ``test_loss`` (NLL), ``test_acc``, ``test_precision`` and ``test_recall`` (macro averages of
    sadie eq. 4.1-4.2 over all K classes) and ``test_f1_of_macro`` (eq. 4.3 applied to those two
    averages, sadie Table 3's F1).
    """
    from ..metrics import confusion_matrix, f1_of_macro, precision_recall_f1

    labels = labels.cpu()
    nll = -torch.log(probs.gather(1, labels[:, None]).clamp_min(1e-12)).mean().item()
    predicted = probs.argmax(1)
    acc = (predicted == labels).float().mean().item()
    prf = precision_recall_f1(confusion_matrix(labels, predicted, probs.shape[1]))
    p, r = float(prf["precision"].mean()), float(prf["recall"].mean())
    return {"test_loss": nll, "test_acc": acc, "test_precision": p, "test_recall": r,
            "test_f1_of_macro": f1_of_macro(p, r)}
