"""Weight initialization by name (``--init``): Xavier/Glorot, Kaiming, or the framework default.

All schemes draw zero-mean weights whose variance keeps the signal's variance constant
from layer to layer (thesis Section 5.5.1, eq. 5.18-5.22); they differ in the assumption
about the activation:

* ``xavier-uniform`` / ``xavier-normal``: Var[w] = 2 / (n_in + n_out) (thesis eq. 5.27,
  the compromise between the forward condition eq. 5.25 and the backward eq. 5.26). The
  uniform form is W ~ U[-sqrt(6 / (n_in + n_out)), +sqrt(6 / (n_in + n_out))]
  (two-stage-autoencoder-classifiers.md eq. 1). Assumes f'(0) = 1 (tanh, Sigmoid*).
* ``kaiming-uniform``: Var[w] = 2 / n_in, keeping the forward variance for ReLU
  (thesis eq. 5.28-5.31: ReLU halves E[x^2], eq. 5.29, so (1/2) n_l Var[w_l] = 1).
* ``kaiming-normal``: Var[w] = 2 / n_out, the backward condition (1/2) n^_l Var[w_l] = 1
  of eq. 5.32, as He et al. and torchvision's ResNets use.
* ``default``: leave PyTorch's initialization as the layers created it.

Here n_in = fan_in = in_channels / groups * k * k and n_out = out_channels / groups * k * k
for a convolution. Biases are set to zero; normalization layers keep gamma = 1, beta = 0.
The factor 2 of the Kaiming schemes is eq. 5.29's ReLU halving E[x^2]; the output layer (the
last convolution or linear layer, which produces the logits) has no ReLU after it, so under
both Kaiming schemes it gets Var[w] = 1 / n_in -- otherwise a 10-way classifier initialized
with 2 / n_out starts with logits of standard deviation ~5 and a loss near 10.

The zoo's builders default to ``init="auto"`` (:func:`resolve_init`): Kaiming when no batch
norm rescales the activations -- deep plain stacks (VGG, NiN, the NDSB nets) barely pass a
signal with PyTorch's default Var[w] = 1 / (3 n_in), the reason the VGG paper needed
pre-training (thesis Section 4.2.3) -- and the framework default with batch norm.
"""
from __future__ import annotations

import torch.nn as nn

from ..errors import CnnlabError

INITS = ("default", "xavier-uniform", "xavier-normal", "kaiming-uniform", "kaiming-normal")


def check_init(scheme: str) -> str:
    scheme = str(scheme).lower()
    if scheme not in INITS:
        raise CnnlabError(f"unknown --init {scheme!r} (choose from {', '.join(INITS)})")
    return scheme


def resolve_init(init: str, norm: str) -> str:
    """``"auto"`` -> Kaiming uniform without batch norm (``norm`` "none" or "lrn"), else the framework default."""
    if str(init).lower() == "auto":
        return "default" if norm == "batch" else "kaiming-uniform"
    return init


def initialize(model: nn.Module, scheme: str) -> nn.Module:
    """Re-initialize every conv/linear weight with ``scheme``; biases to zero (norm layers untouched)."""
    scheme = check_init(scheme)
    if scheme == "default":
        return model
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]
    for m in layers:
        if scheme == "xavier-uniform":
            nn.init.xavier_uniform_(m.weight)  # eq. 5.27, uniform form (two-stage paper eq. 1)
        elif scheme == "xavier-normal":
            nn.init.xavier_normal_(m.weight)  # eq. 5.27
        elif m is layers[-1]:  # the output layer: no ReLU follows, Var = 1 / n_in
            init_fn = nn.init.kaiming_uniform_ if scheme == "kaiming-uniform" else nn.init.kaiming_normal_
            init_fn(m.weight, mode="fan_in", nonlinearity="linear")
        elif scheme == "kaiming-uniform":
            nn.init.kaiming_uniform_(m.weight, mode="fan_in", nonlinearity="relu")  # eq. 5.30-5.31
        else:
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")  # eq. 5.32
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    return model
