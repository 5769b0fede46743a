"""The two-stage paper's autoencoder (Sec. 2.1): fully connected (m, 256, 64, 256, m), leaky ReLU,
optionally with tied weights.

``autoencoder`` maps an image [B, C, H, W] to a reconstruction of the same shape; train it with
``--objective reconstruct`` (sum of squared errors, :mod:`cnnlab.objectives.reconstruct`). Its
``encode`` gives the bottleneck codes [B, 64] that the second stage classifies
(``--features-from``, :mod:`cnnlab.two_stage`).

* Layer sizes: ``m`` = C*H*W, then ``hidden`` down to the bottleneck (default 256, 64: the
  paper's (m, 256, 64, 256, m)); the decoder mirrors the encoder.
* Activation ``act`` on every hidden layer (default ``lrelu``: f(x) = x for x >= 0, x / a
  otherwise, the paper's LReLU with slope parameter a; ``lrelu:a`` picks a, default 5.5 -- the
  paper chooses a per data set and does not report it). The bottleneck uses ``code_act``
  (default: the same as ``act``); the output layer is linear, since its target is the scaled
  input, which takes values on both sides of 0.
* ``tied=True``: decoder layer i uses the transposed weight matrix of encoder layer n-1-i
  (the paper's "tied weights"); only the biases are separate. The decoder then owns no weight
  matrix at all: the encoder's parameters are used twice and their gradients add up. The weight
  matrices (m*256 + 256*64 entries) are stored once instead of twice, so the weight count halves
  exactly (:func:`weight_count`); the biases stay separate, so the total is a little over half.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import CnnlabError
from ..sizes import as_hw
from .activations import channel_multiplier, make_activation
from .layers import TiedLayer
from .registry import register_model


def _sizes(hidden) -> tuple[int, ...]:
    if isinstance(hidden, str):
        hidden = [h for h in hidden.replace("x", ",").split(",") if h.strip()]
    if isinstance(hidden, int):
        hidden = (hidden,)
    try:
        sizes = tuple(int(h) for h in hidden)
    except (TypeError, ValueError):
        raise CnnlabError(f"model 'autoencoder': hidden must be layer widths like 256,64, got {hidden!r}") from None
    if not sizes or min(sizes) < 1:
        raise CnnlabError(f"model 'autoencoder': hidden needs at least one width >= 1, got {hidden!r}")
    return sizes


class Autoencoder(nn.Module):
    """Fully connected autoencoder: ``encode`` (input -> code) and ``decode`` (code -> input shape)."""

    def __init__(self, input_shape: tuple[int, int, int], hidden: tuple[int, ...] = (256, 64), act: str = "lrelu",
                 code_act: str | None = None, tied: bool = False):
        super().__init__()
        for spec in (act, code_act or act):
            if channel_multiplier(spec) != 1:
                raise CnnlabError(f"model 'autoencoder': activation {spec!r} changes the layer width; "
                                  f"use one that keeps it (lrelu, relu, sigmoid, tanh, ...)")
        self.input_shape = tuple(input_shape)
        m = input_shape[0] * input_shape[1] * input_shape[2]
        widths = (m, *hidden)
        self.tied = bool(tied)
        self.encoder = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        acts = [make_activation(act, w) for w in hidden[:-1]] + [make_activation(code_act or act, hidden[-1])]
        self.encoder_acts = nn.ModuleList(acts)
        back = widths[::-1]  # (code, ..., m)
        if self.tied:  # only biases of its own: weights are the encoder's, transposed
            self.decoder_biases = nn.ParameterList(nn.Parameter(torch.zeros(b)) for b in back[1:])
            self.tied_layers = nn.ModuleList(TiedLayer(F.linear) for _ in back[1:])  # no parameters
        else:
            self.decoder = nn.ModuleList(nn.Linear(a, b) for a, b in zip(back[:-1], back[1:]))
        self.decoder_acts = nn.ModuleList(make_activation(act, w) for w in back[1:-1])
        self.code_size = hidden[-1]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images [B, C, H, W] (or flat [B, m]) -> codes [B, code_size]."""
        h = x.flatten(1)
        for layer, act in zip(self.encoder, self.encoder_acts):
            h = act(layer(h))
        return h

    def decoder_weight(self, i: int) -> torch.Tensor:
        """The weight matrix of decoder layer i: with tied weights, encoder layer n-1-i's transposed (a view)."""
        if self.tied:
            return self.encoder[len(self.encoder) - 1 - i].weight.t()
        return self.decoder[i].weight

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Codes [B, code_size] -> reconstructions [B, C, H, W] (the last layer is linear)."""
        h = z
        n = len(self.encoder)
        for i in range(n):
            # module calls either way, so per-layer hooks (models --info's cost count) see the decoder too
            if self.tied:
                h = self.tied_layers[i](h, self.decoder_weight(i), self.decoder_biases[i])
            else:
                h = self.decoder[i](h)
            if i < n - 1:
                h = self.decoder_acts[i](h)
        return h.view(-1, *self.input_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def weight_count(model: Autoencoder) -> int:
    """Entries of the weight matrices the model owns (biases excluded): halved by ``tied=True``."""
    return sum(p.numel() for name, p in model.named_parameters() if name.endswith("weight"))


@register_model("autoencoder", "fully connected autoencoder (m, 256, 64, 256, m), leaky ReLU, tied weights optional "
                "(output = input shape; --objective reconstruct)", source="two-stage paper Sec. 2.1",
                native_size=28, native_channels=1)
def autoencoder(num_classes: int, in_channels: int, image_size: int = 28, hidden: tuple[int, ...] | str = (256, 64),
                act: str = "lrelu", code_act: str | None = None, tied: bool = False) -> nn.Module:
    """``num_classes`` is not used: the output has the input's shape."""
    h, w = as_hw(image_size)  # a non-square image reconstructs to its own (C, H, W)
    return Autoencoder((in_channels, h, w), _sizes(hidden), act, code_act, bool(tied))
