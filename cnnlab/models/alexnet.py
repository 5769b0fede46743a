"""AlexNet (Krizhevsky et al. 2012), as tabulated in thesis Table 4.2.

Five convolutions (96 11x11/4, 256 5x5, 384, 384, 256 3x3), three 3x3/2 max poolings
and three fully connected layers (4096, 4096, classifier) with dropout -- about 60M
parameters at 224x224 with 1000 classes (thesis Section 4.2.2).

Each of the first two stages is convolution -> max pooling -> activation -> local response
normalization (thesis eq. 4.1), in Table 4.2's order (pooling and ReLU commute, so this is
the original network at a quarter of the activation cost). ``norm="batch"`` instead puts batch
norm after every convolution and hidden FC layer, ``norm="none"`` drops normalization.

``groups=2`` restores the original two-GPU split ("group", Section 4.2.2): conv2, conv4 and
conv5 see only the half of the previous layer's maps that lives on their GPU, which is what
brings the parameter count from 62.4M down to the paper's 61M.
"""
from __future__ import annotations

import torch.nn as nn

from ..errors import CnnlabError
from .activations import channel_multiplier, make_activation
from .init import initialize, resolve_init
from .layers import check_norm, linear_act, make_norm, out_hw, scale_width
from .registry import register_model


def _stage(cin: int, cout: int, kernel: int, stride: int, padding: int, groups: int, pool: bool, lrn_here: bool,
           act: str, norm: str) -> list[nn.Module]:
    """conv [-> BN] [-> max pool] -> act [-> LRN], with the conv producing cout / multiplier maps."""
    conv_out = cout // channel_multiplier(act)
    layers: list[nn.Module] = [nn.Conv2d(cin, conv_out, kernel, stride, padding, groups=groups, bias=norm != "batch")]
    if norm == "batch":
        layers.append(nn.BatchNorm2d(conv_out))
    if pool:
        layers.append(nn.MaxPool2d(3, 2))
    layers.append(make_activation(act, conv_out))
    if norm == "lrn" and lrn_here:
        layers.append(make_norm("lrn", cout))
    return layers


class AlexNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, image_size: int | tuple[int, int] = 224,
                 act: str = "relu", norm: str = "lrn", dropout: float = 0.5, width: float = 1.0, groups: int = 1):
        super().__init__()
        check_norm(norm)
        if groups not in (1, 2):
            raise CnnlabError(f"alexnet: option groups must be 1 or 2, got {groups}")
        c1, c2, c3, c4, c5 = (scale_width(c, width, 2 * groups) for c in (96, 256, 384, 384, 256))
        fc = scale_width(4096, width)
        self.features = nn.Sequential(
            *_stage(in_channels, c1, 11, 4, 2, 1, True, True, act, norm),
            *_stage(c1, c2, 5, 1, 2, groups, True, True, act, norm),
            *_stage(c2, c3, 3, 1, 1, 1, False, False, act, norm),
            *_stage(c3, c4, 3, 1, 1, groups, False, False, act, norm),
            *_stage(c4, c5, 3, 1, 1, groups, False, False, act, norm),
            nn.MaxPool2d(3, 2),
        )
        h, w = out_hw(image_size, 11, 4, 2)
        for _ in range(3):
            h, w = out_hw((h, w), 3, 2)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            *linear_act(c5 * h * w, fc, act, dropout, norm),
            *linear_act(fc, fc, act, dropout, norm),
            nn.Linear(fc, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


@register_model("alexnet", "AlexNet: 5 conv + 3 FC, LRN, dropout (~60M params at 224)",
                source="thesis Table 4.2, eq. 4.1", min_size=63, native_size=224, native_channels=3)
def alexnet(num_classes: int, in_channels: int, image_size: int = 224, act: str = "relu", norm: str = "lrn",
            dropout: float = 0.5, width: float = 1.0, groups: int = 1, init: str = "auto") -> nn.Module:
    """AlexNet (thesis Table 4.2). ``groups=2``: the original two-group split; ``width`` scales all layers."""
    model = AlexNet(num_classes, in_channels, image_size, act, norm, dropout, width, int(groups))
    return initialize(model, resolve_init(init, norm))
