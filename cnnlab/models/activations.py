"""The activation family, selectable by name for every model (``--act``).

``make_activation(name, channels)`` returns a fresh module; ``channel_multiplier(name)``
says how many output channels one input channel becomes (2 for CReLU).
"""
from __future__ import annotations

import torch.nn as nn

from ..errors import CnnlabError
from ..registry import Registry

ACTIVATIONS: Registry = Registry("activation")

ACTIVATIONS.add("relu", lambda c: nn.ReLU(inplace=True), "ReLU, thesis eq. 5.1")
ACTIVATIONS.add("tanh", lambda c: nn.Tanh(), "hyperbolic tangent")
ACTIVATIONS.add("sigmoid", lambda c: nn.Sigmoid(), "logistic sigmoid, thesis eq. 2.6")
ACTIVATIONS.add("gelu", lambda c: nn.GELU(), "Gaussian error linear unit")
ACTIVATIONS.add("silu", lambda c: nn.SiLU(inplace=True), "x*sigmoid(x) (Swish with beta=1)")
ACTIVATIONS.add("elu", lambda c: nn.ELU(inplace=True), "exponential linear unit")


def make_activation(name: str, channels: int | None = None) -> nn.Module:
    """A new activation module; ``channels`` is used by per-channel learned activations (PReLU)."""
    return ACTIVATIONS.get(name)(channels)


def channel_multiplier(name: str) -> int:
    """Output channels per input channel (CReLU concatenates relu(x), relu(-x) and doubles them)."""
    return ACTIVATIONS.entry(name).meta.get("channel_multiplier", 1)


def check_activation(name: str) -> str:
    if name not in ACTIVATIONS:
        ACTIVATIONS.get(name)  # raises the standard "unknown activation" error
    return name.lower()


__all__ = ["ACTIVATIONS", "make_activation", "channel_multiplier", "check_activation", "CnnlabError"]
