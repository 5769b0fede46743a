"""Auxiliary classifiers: extra softmax heads at intermediate depths whose losses are added in training.

GoogLeNet 2014 (thesis Section 4.4, Szegedy et al. 2014) attaches two auxiliary classifiers to
the outputs of modules 4a and 4d and adds their losses to the main one with weight 0.3; a
deeply supervised net (thesis Section 4.4, Lee et al. 2014, "multiple linear classifiers at
different depths") puts one after every stage. Either way the training loss is

    L = CE(main(x), y) + sum_i  w_i * CE(aux_i(h_i(x)), y)

and at test time only the main output counts.

How it travels through the objective seam without changing the model's interface: a model
calls its :class:`AuxClassifier` modules only in training mode (``self.training``) and still
returns only the main logits, so evaluation, prediction, export and the cost figures
(``cnnlab models --info`` probes in eval mode) see an ordinary classifier. The ``classify``
objective's ``bind`` finds the auxiliary heads and captures their outputs with forward hooks;
its ``loss`` adds ``weight * cross_entropy`` of each captured output (:func:`auxiliary_loss`).
A model that is trained by some other loop (a plain ``model(x)`` in train mode) just computes
the extra heads and ignores them.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import CnnlabError


class AuxClassifier(nn.Module):
    """A classifier on an intermediate feature map, weighted by ``weight`` in the training loss.

    ``body`` maps the feature map [B, C, H, W] to logits [B, K]; see :func:`googlenet_aux` and
    :func:`pooled_linear` for the two shapes the papers use.
    """

    def __init__(self, body: nn.Module, weight: float):
        super().__init__()
        if not weight > 0:
            raise CnnlabError(f"auxiliary classifier weight must be > 0, got {weight}")
        self.body = body
        self.weight = float(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def googlenet_aux(in_channels: int, num_classes: int, weight: float = 0.3, dropout: float = 0.7,
                  hidden: int = 1024, reduce: int = 128) -> AuxClassifier:
    """Szegedy et al. 2014's auxiliary head: 5x5/3 average pool (14x14 -> 4x4 at 224 input), 1x1 conv
    with 128 filters + ReLU, FC 1024 + ReLU, dropout 0.7, linear. The pool is adaptive to 4x4 so the
    head fits any input size; at 224x224 it is exactly the paper's 5x5/3."""
    body = nn.Sequential(
        nn.AdaptiveAvgPool2d(4), nn.Conv2d(in_channels, reduce, 1), nn.ReLU(inplace=True), nn.Flatten(),
        nn.Linear(reduce * 16, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, num_classes))
    return AuxClassifier(body, weight)


def pooled_linear(in_channels: int, num_classes: int, weight: float) -> AuxClassifier:
    """A deeply supervised net's companion classifier: global average pooling + a linear layer."""
    return AuxClassifier(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_channels, num_classes)),
                         weight)


def find_auxiliaries(model: nn.Module) -> list[AuxClassifier]:
    return [m for m in model.modules() if isinstance(m, AuxClassifier)]


class AuxCapture:
    """Forward hooks on a model's auxiliary heads; :meth:`take` returns (and forgets) what the last
    training forward pass produced, so a loss never sees a stale output twice."""

    def __init__(self, model: nn.Module):
        self.heads = find_auxiliaries(model)
        self.outputs: dict[int, tuple[float, torch.Tensor]] = {}
        for i, head in enumerate(self.heads):
            head.register_forward_hook(self._hook(i))

    def _hook(self, i: int):
        def capture(module: AuxClassifier, inputs, output: torch.Tensor) -> None:
            self.outputs[i] = (module.weight, output)
        return capture

    def take(self) -> list[tuple[float, torch.Tensor]]:
        out, self.outputs = list(self.outputs.values()), {}
        return out


def auxiliary_loss(captured: list[tuple[float, torch.Tensor]], target: torch.Tensor, label_smoothing: float = 0.0,
                   class_weight: torch.Tensor | None = None) -> torch.Tensor | None:
    """sum_i w_i * CE(aux_i, y) over the captured heads whose batch matches ``target`` (None if there are none).

    ``target`` may be class indices or class probabilities (MixUp/CutMix); ``class_weight`` is the main
    loss's per-class weighting, applied alike."""
    terms = [w * F.cross_entropy(out.float(), target, weight=class_weight, label_smoothing=label_smoothing)
             for w, out in captured if out.shape[0] == target.shape[0]]
    return torch.stack(terms).sum() if terms else None
