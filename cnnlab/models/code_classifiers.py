"""The two-stage paper's shallow and deep classifiers of autoencoder codes (Sec. 2.2).

Both are the project's multi-layer perceptron (:func:`cnnlab.models.basic.mlp`) in the paper's
configuration; they take any input (it is flattened; 1-D signals [C, L] with ``length``), natively the 64-d codes of
``--features-from`` runs ([B, 64, 1, 1], :mod:`cnnlab.two_stage`). The third classifier of the
paper, the deep belief net, is :mod:`cnnlab.models.dbn`.

* ``perceptron``: one hidden layer with sigmoid activations. The paper does not give its width;
  cnnlab uses 100 (``hidden=N`` changes it).
* ``dnn``: hidden layers of 300 and 100 units (the paper's grid-search result, Sec. 2.3), leaky
  ReLU (``act``, default ``lrelu``: x / a for x < 0 with a = 5.5, the activation the paper uses
  for its networks; it does not report a), every weight matrix drawn from Glorot's normalized
  uniform distribution, eq. 1: W ~ U[-sqrt(6) / sqrt(n_j + n_{j+1}), +sqrt(6) / sqrt(n_j + n_{j+1})],
  biases zero (:func:`cnnlab.models.init.initialize` with ``xavier-uniform``).
"""
from __future__ import annotations

import torch.nn as nn

from .basic import mlp
from .init import initialize
from .registry import register_model


@register_model("perceptron", "shallow perceptron: one sigmoid hidden layer (100), for autoencoder codes",
                source="two-stage paper Sec. 2.2", native_size=1, native_channels=64)
def perceptron(num_classes: int, in_channels: int, image_size: int = 1, hidden: int = 100,
               act: str = "sigmoid", length: int | None = None) -> nn.Module:
    return mlp(num_classes, in_channels, image_size, hidden=(int(hidden),), act=act, length=length)


@register_model("dnn", "deep net 300-100, leaky ReLU, Glorot-uniform init (eq. 1), for autoencoder codes",
                source="two-stage paper Sec. 2.2", native_size=1, native_channels=64)
def dnn(num_classes: int, in_channels: int, image_size: int = 1, hidden: tuple[int, ...] | str = (300, 100),
        act: str = "lrelu", dropout: float = 0.0, length: int | None = None) -> nn.Module:
    return initialize(mlp(num_classes, in_channels, image_size, hidden=hidden, act=act, dropout=dropout,
                          length=length), "xavier-uniform")
