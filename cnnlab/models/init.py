"""Weight initialization by name (``--init``): Xavier/Glorot and Kaiming, or the framework default."""
from __future__ import annotations

import torch.nn as nn

from ..errors import CnnlabError

INITS = ("default", "xavier-uniform", "xavier-normal", "kaiming-uniform", "kaiming-normal")


def initialize(model: nn.Module, scheme: str) -> nn.Module:
    """Re-initialize every conv/linear weight with ``scheme``; biases to zero (norm layers untouched)."""
    scheme = scheme.lower()
    if scheme not in INITS:
        raise CnnlabError(f"unknown --init {scheme!r} (choose from {', '.join(INITS)})")
    if scheme == "default":
        return model
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            if scheme == "xavier-uniform":
                nn.init.xavier_uniform_(m.weight)
            elif scheme == "xavier-normal":
                nn.init.xavier_normal_(m.weight)
            elif scheme == "kaiming-uniform":
                nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
            else:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model
