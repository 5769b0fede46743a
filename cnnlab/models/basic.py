"""Small reference networks: an MLP, LeNet-5 (thesis Table 4.1) and the PyTorch-examples MNIST net."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..sizes import as_hw
from .activations import channel_multiplier, make_activation
from .layers import out_hw
from .registry import register_model


def _act_linear(in_f: int, out_f: int, act: str) -> list[nn.Module]:
    """Linear layer + activation, with the linear width divided for channel-doubling activations."""
    mult = channel_multiplier(act)
    return [nn.Linear(in_f, out_f // mult), make_activation(act, out_f // mult)]


@register_model("mlp", "multi-layer perceptron (thesis Section 2.1.4)", source="thesis 2.1.4", native_size=28,
                native_channels=1)
def mlp(num_classes: int, in_channels: int, image_size: int = 28, hidden: tuple[int, ...] | str = (256, 128),
        act: str = "relu", dropout: float = 0.0, length: int | None = None) -> nn.Module:
    """``length``: 1-D signals [C, length] instead of images (the input is flattened either way)."""
    if isinstance(hidden, str):
        hidden = tuple(int(h) for h in hidden.replace("x", ",").split(",") if h.strip())
    if isinstance(hidden, int):
        hidden = (hidden,)
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_channels * (int(length) if length else math.prod(as_hw(image_size)))
    for h in hidden:
        layers += _act_linear(width, int(h), act)
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = int(h)
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


@register_model("lenet5", "LeNet-5: conv20-pool-tanh, conv50-pool-tanh, fc500 (thesis Table 4.1)",
                source="thesis Table 4.1", min_size=16, native_size=28, native_channels=1)
def lenet5(num_classes: int, in_channels: int, image_size: int = 28, act: str = "tanh",
           dropout: float = 0.0) -> nn.Module:
    mult = channel_multiplier(act)
    hw = image_size
    for _ in range(2):  # two valid 5x5 convs, each followed by 2x2/2 max pooling
        hw = out_hw(out_hw(hw, 5), 2, 2)
    return nn.Sequential(
        nn.Conv2d(in_channels, 20 // mult, 5), nn.MaxPool2d(2, 2), make_activation(act, 20 // mult),
        nn.Conv2d(20, 50 // mult, 5), nn.MaxPool2d(2, 2), make_activation(act, 50 // mult),
        nn.Flatten(),
        *_act_linear(50 * hw[0] * hw[1], 500, act),
        nn.Dropout(dropout) if dropout else nn.Identity(),
        nn.Linear(500, num_classes),
    )


class MnistExample(nn.Module):
    """The two-conv network of pytorch/examples mnist/main.py (conv32, conv64, maxpool, fc128)."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int | tuple[int, int]):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        h, w = out_hw(out_hw(out_hw(image_size, 3), 3), 2, 2)  # two valid 3x3 convs, 2x2/2 max pooling
        self.fc1 = nn.Linear(64 * h * w, 128)
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = self.dropout1(torch.max_pool2d(x, 2))
        x = self.dropout2(torch.relu(self.fc1(torch.flatten(x, 1))))
        return self.fc2(x)  # logits; the reference's log_softmax + NLL equals our cross-entropy


@register_model("mnist-example", "the PyTorch examples repository's MNIST network (reference for benchmarks)",
                source="pytorch/examples mnist/main.py", min_size=6, native_size=28,
                native_channels=1)
def mnist_example(num_classes: int, in_channels: int, image_size: int = 28) -> nn.Module:
    return MnistExample(num_classes, in_channels, image_size)
