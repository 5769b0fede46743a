"""The deep belief net of the two-stage paper (Sec. 2.2): stacked RBMs, then a softmax layer.

``dbn`` (hidden 300, 100 by default: the paper's grid-search result) is, as a network, a
multi-layer perceptron with sigmoid units whose layers are RBMs (:class:`cnnlab.models.rbm.RBM`):
layer l computes p(h_l = 1 | h_{l-1}) = sigmoid(W_l h_{l-1} + c_l), and a linear layer on top
gives the class scores. Trained with ``--pretrain-epochs N`` (> 0), the engine first pre-trains
the RBMs greedily, one layer at a time, by contrastive divergence (``--cd-k``,
:mod:`cnnlab.pretrain`): RBM l learns the distribution of the hidden probabilities of layer l-1
on the training data. Then the whole net is fine-tuned by backpropagation on the labels, as any
classifier. With ``--pretrain-epochs 0`` the same net is trained from its random initialization
(the "random init" baseline).

``visible`` sets the first RBM's visible units: ``gaussian`` (default: real-valued inputs such as
standardized autoencoder codes; the RBM assumes unit variance, so use the default
``--input-scaling standard``) or ``bernoulli`` (inputs in [0, 1], e.g. pixels with
``--input-scaling minmax``). Higher RBMs are always Bernoulli-Bernoulli.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import CnnlabError
from ..sizes import as_hw
from .rbm import RBM, VISIBLE_KINDS
from .registry import register_model


class DBN(nn.Module):
    def __init__(self, n_inputs: int, hidden: tuple[int, ...], num_classes: int, visible: str = "gaussian"):
        super().__init__()
        widths = (n_inputs, *hidden)
        self.rbms = nn.ModuleList(RBM(a, b, visible if i == 0 else "bernoulli")
                                  for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])))
        self.classifier = nn.Linear(widths[-1], num_classes)

    def propagate(self, x: torch.Tensor, layers: int) -> torch.Tensor:
        """The hidden probabilities of RBM ``layers`` (0: the flattened input) -- what RBM ``layers``
        + 1 is pre-trained on."""
        h = x.flatten(1)
        for rbm in self.rbms[:layers]:
            h = rbm.hidden_probs(h)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.propagate(x, len(self.rbms)))


@register_model("dbn", "deep belief net: RBMs 300-100 (pre-trained by CD-k, --pretrain-epochs) + softmax layer",
                source="two-stage paper Sec. 2.2", native_size=1, native_channels=64)
def dbn(num_classes: int, in_channels: int, image_size: int = 1, hidden: tuple[int, ...] | str = (300, 100),
        visible: str = "gaussian") -> nn.Module:
    if isinstance(hidden, str):
        hidden = [h for h in hidden.replace("x", ",").split(",") if h.strip()]
    if isinstance(hidden, int):
        hidden = (hidden,)
    sizes = tuple(int(h) for h in hidden)
    if not sizes:
        raise CnnlabError("model 'dbn': hidden needs at least one layer width, e.g. hidden=300,100")
    if visible not in VISIBLE_KINDS:
        raise CnnlabError(f"model 'dbn': visible must be one of {', '.join(VISIBLE_KINDS)}, got {visible!r}")
    h, w = as_hw(image_size)
    return DBN(in_channels * h * w, sizes, num_classes, visible)
