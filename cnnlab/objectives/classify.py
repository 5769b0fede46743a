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

    def __init__(self, label_smoothing: float = 0.0):
        self.label_smoothing = float(label_smoothing)

    @classmethod
    def from_config(cls, cfg) -> "Classify":
        return cls(cfg.label_smoothing)

    def bind(self, model: torch.nn.Module) -> None:
        # a model that outputs its input (an autoencoder) has no class scores to take a softmax of;
        # without this check PyTorch fails on the first batch with a message about "spatial targets"
        if hasattr(model, "encode") and hasattr(model, "decode"):
            from ..errors import CnnlabError

            raise CnnlabError(f"--objective {self.name}: model {type(model).__name__} reconstructs its input and "
                              "has no class scores; train it with --objective reconstruct, then classify its "
                              "codes with --features-from RUN (docs/two-stage.md)")

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output.float(), target, label_smoothing=self.label_smoothing)

    def batch_sums(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"correct": (output.detach().argmax(1) == target).sum()}

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
        return {"test_acc": m["acc"], "top5": m["top5"], "nll": m["nll"], "precision": p, "recall": r,
                "f1": m["f1"], "f1_of_macro": f1_of_macro(p, r), "bep": m["bep"]}

    def describe(self, summary: dict[str, Any]) -> str:
        return f"test accuracy {100 * summary['test_acc']:.2f}% (best {100 * summary['best_test_acc']:.2f}%)"

    @staticmethod
    def probabilities(model, images, setup: EvalSetup) -> torch.Tensor:
        return predict_probs(model, images, setup.mean, setup.std, setup.runtime, setup.tta, setup.batch_size)


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
