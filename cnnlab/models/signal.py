"""Models for 1-D signals [B, C, L]: the two-stage paper's convolutional autoencoder and a 1-D CNN (Sec. 3).

Builders take ``length`` (samples per signal) where image models take ``image_size``; the trainer
passes it for signal data sets (:func:`cnnlab.models.registry.size_options`). The paper's DNN on
signals or on codes is ``dnn`` (:mod:`cnnlab.models.code_classifiers`), which flattens any input.

``cae1d`` -- the convolutional autoencoder of Fig. 4 with tied weights, trained with Adam on the
sum of squared errors (``--objective reconstruct``). The paper gives its size (315 parameters) but
its Fig. 4 is a picture that our copy of the paper does not contain, so the layout is ours, chosen
to have exactly 315 parameters with the paper's ingredients (convolutions, pooling, tied weights,
leaky ReLU)::

    encoder  conv 1->2 (k7) LReLU pool4 | conv 2->4 (k7) LReLU pool4 | conv 4->8 (k7) LReLU pool4
    code     8 channels x ceil(L / 64)                  (4000 points -> 8 x 63 = 504 values, 8x smaller)
    decoder  up4 convT 8->4 LReLU | up4 convT 4->2 LReLU | up4 convT 2->1 (linear) -> crop to L

    weights  1*2*7 + 2*4*7 + 4*8*7 = 294, owned by the encoder and used again, transposed, by the decoder
    biases   encoder 2 + 4 + 8 = 14, decoder 4 + 2 + 1 = 7                      total 294 + 21 = 315

"Tied" for a convolution: decoder layer i is the transposed convolution with the *same weight
tensor* as encoder layer n-1-i (``conv_transpose1d(h, encoder[n-1-i].weight)``), the adjoint of
that convolution, as the transposed matrix is for a dense autoencoder; only biases are separate.
Without tying (``tied=false``) the decoder owns its own 294 weights (609 parameters). The input is
padded at the right end (its last value repeated) to a multiple of the total pooling factor and the
reconstruction cropped back, so any length works. ``encode`` returns the code as a signal
[B, 8, L/64]: a ``--features-from`` run trains ``cnn1d`` or ``dnn`` on it (:mod:`cnnlab.two_stage`).

``cnn1d`` -- a 1-D CNN classifier: blocks of convolution (kernel 7, "same" padding), batch norm,
activation and max pooling by 4 (a block whose input is shorter than 8 does not pool), then
flatten, one hidden layer and the classifier. Default (16, 32, 64) channels and 128 hidden
units: 0.52M parameters (2.1 MB) on 1x4000 spectra, the order of the paper's 3 MB CNN (Table 3,
whose layout is not given). Pooling makes it tolerant of the small shifts and stretches between
densitograms; the flatten keeps where along the strip a peak is, which tells sorts apart.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import CnnlabError
from .activations import channel_multiplier, make_activation
from .layers import TiedLayer
from .registry import register_model

DEFAULT_LENGTH = 4000  # the paper's densitograms (Sec. 3)


def _ints(value, option: str, model: str) -> tuple[int, ...]:
    if isinstance(value, str):
        value = [v for v in value.replace("x", ",").replace("-", ",").split(",") if v.strip()]
    if isinstance(value, int):
        value = (value,)
    try:
        out = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise CnnlabError(f"model {model!r}: {option} must be integers like 2,4,8, got {value!r}") from None
    if not out or min(out) < 1:
        raise CnnlabError(f"model {model!r}: {option} needs at least one value >= 1, got {value!r}")
    return out


def _check_act(spec: str, model: str) -> None:
    if channel_multiplier(spec) != 1:
        raise CnnlabError(f"model {model!r}: activation {spec!r} changes the channel count; use one that keeps it")


class ConvAutoencoder1d(nn.Module):
    """Convolutional autoencoder for signals with optionally tied weights (see the module docstring)."""

    def __init__(self, in_channels: int, length: int, channels=(2, 4, 8), kernel: int = 7, pool: int = 4,
                 act: str = "lrelu", tied: bool = True):
        super().__init__()
        _check_act(act, "cae1d")
        if kernel < 1 or kernel % 2 == 0:
            raise CnnlabError(f"model 'cae1d': kernel must be odd (same-length convolutions), got {kernel}")
        if pool < 1:
            raise CnnlabError(f"model 'cae1d': pool must be >= 1, got {pool}")
        self.in_channels, self.length, self.kernel, self.pool = in_channels, int(length), kernel, pool
        widths = (in_channels, *channels)
        self.encoder = nn.ModuleList(nn.Conv1d(a, b, kernel, padding=kernel // 2) for a, b in zip(widths, widths[1:]))
        self.encoder_acts = nn.ModuleList(make_activation(act, w) for w in channels)
        back = widths[::-1]
        self.tied = bool(tied)
        if self.tied:  # biases only: the weights are the encoder's, used by the transposed convolutions
            self.decoder_biases = nn.ParameterList(nn.Parameter(torch.zeros(b)) for b in back[1:])
            # the transposed convolution as the plain one with the kernel flipped (see decode); no parameters
            self.tied_layers = nn.ModuleList(TiedLayer(F.conv1d, padding=kernel - 1 - kernel // 2) for _ in back[1:])
        else:
            self.decoder = nn.ModuleList(nn.ConvTranspose1d(a, b, kernel, padding=kernel // 2)
                                         for a, b in zip(back, back[1:]))
        self.decoder_acts = nn.ModuleList(make_activation(act, w) for w in back[1:-1])
        self.factor = pool ** len(channels)
        self.code_shape = (channels[-1], math.ceil(self.length / self.factor))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Signals [B, C, L] -> codes [B, channels[-1], ceil(L / pool^layers)]."""
        n = x.shape[-1]
        padded = math.ceil(n / self.factor) * self.factor
        h = F.pad(x, (0, padded - n), mode="replicate") if padded != n else x
        for conv, act in zip(self.encoder, self.encoder_acts):
            h = F.max_pool1d(act(conv(h)), self.pool) if self.pool > 1 else act(conv(h))
        return h

    def decoder_weight(self, i: int) -> torch.Tensor:
        """Decoder layer i's kernel: with tied weights encoder layer n-1-i's own tensor (shared storage)."""
        return self.encoder[len(self.encoder) - 1 - i].weight if self.tied else self.decoder[i].weight

    def decode(self, z: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """Codes -> signals [B, C, length] (default: the model's length); the last layer is linear."""
        h = z
        n = len(self.encoder)
        for i in range(n):
            if self.pool > 1:
                h = F.interpolate(h, scale_factor=self.pool, mode="nearest")
            if self.tied:  # the transposed convolution, computed as the plain convolution with the kernel
                # flipped and its in/out channels swapped (same result; PyTorch's CPU conv_transpose1d is ~10x slower)
                w = self.decoder_weight(i).flip(-1).transpose(0, 1)
                h = self.tied_layers[i](h, w, self.decoder_biases[i])  # a module call: models --info counts it
            else:
                h = self.decoder[i](h)
            if i < n - 1:
                h = self.decoder_acts[i](h)
        return h[..., : (length or self.length)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x), x.shape[-1])


@register_model("cae1d", "convolutional autoencoder for 1-D signals, tied weights, 315 parameters "
                "(output = input; --objective reconstruct)", source="two-stage paper Sec. 3, Fig. 4",
                signal=True, native_length=DEFAULT_LENGTH, native_channels=1)
def cae1d(num_classes: int, in_channels: int, length: int = DEFAULT_LENGTH, channels: tuple[int, ...] | str = (2, 4, 8),
          kernel: int = 7, pool: int = 4, act: str = "lrelu", tied: bool = True) -> nn.Module:
    """``num_classes`` is not used: the output has the input's shape."""
    return ConvAutoencoder1d(in_channels, int(length), _ints(channels, "channels", "cae1d"), int(kernel), int(pool),
                             act, tied)


class CNN1d(nn.Module):
    """Conv-BN-act-pool blocks, flatten, one hidden layer, classifier (see the module docstring)."""

    def __init__(self, num_classes: int, in_channels: int, length: int, channels=(16, 32, 64), kernel: int = 7,
                 pool: int = 4, hidden: int = 128, act: str = "relu", dropout: float = 0.0, norm: bool = True):
        super().__init__()
        _check_act(act, "cnn1d")
        if kernel < 1 or kernel % 2 == 0:
            raise CnnlabError(f"model 'cnn1d': kernel must be odd (same-length convolutions), got {kernel}")
        layers: list[nn.Module] = []
        width, n = in_channels, int(length)
        for c in channels:
            layers += [nn.Conv1d(width, c, kernel, padding=kernel // 2, bias=not norm)]
            layers += [nn.BatchNorm1d(c)] if norm else []
            layers.append(make_activation(act, c))
            if pool > 1 and n >= 2 * pool:  # short inputs (codes) keep their length
                layers.append(nn.MaxPool1d(pool))
                n //= pool
            width = c
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = [nn.Flatten()]
        if hidden:
            head += [nn.Linear(width * n, int(hidden)), make_activation(act, int(hidden))]
            head += [nn.Dropout(dropout)] if dropout else []
        head.append(nn.Linear(int(hidden) or width * n, num_classes))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_model("cnn1d", "1-D CNN for signals: conv7-BN-ReLU-pool4 x (16, 32, 64), fc 128",
                source="two-stage paper Sec. 3, Table 3", signal=True, native_length=DEFAULT_LENGTH,
                native_channels=1)
def cnn1d(num_classes: int, in_channels: int, length: int = DEFAULT_LENGTH,
          channels: tuple[int, ...] | str = (16, 32, 64), kernel: int = 7, pool: int = 4, hidden: int = 128,
          act: str = "relu", dropout: float = 0.0, norm: bool = True) -> nn.Module:
    return CNN1d(num_classes, in_channels, int(length), _ints(channels, "channels", "cnn1d"), int(kernel), int(pool),
                 int(hidden), act, float(dropout), bool(norm))


def build_for_signals(name: str, num_classes: int, in_channels: int, length: int, options: dict,
                      device: torch.device | str = "cpu") -> nn.Module:
    """Model ``name`` for signals [C, length], checked with one tiny forward pass (a clear error on a
    shape mismatch), on ``device``. Used by the trainer for signal data sets."""
    from .registry import create_model

    model = create_model(name, num_classes, in_channels, length=int(length), **options)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(2, in_channels, int(length)))
    except RuntimeError as e:
        raise CnnlabError(f"model {name!r} cannot take {in_channels}x{length} signals ({str(e).splitlines()[0]}); "
                          f"try --data-options length=N") from None
    finally:
        model.train(was_training)
    return model.to(device)
