"""MobileNet v1 (Howard et al. 2017) and its plain-convolution twin
(efficient-cnn-training-methods.md Section III).

A depthwise separable convolution factorizes a K x K convolution from N to M channels on an
F x F map into

* a depthwise K x K convolution, one filter per input channel: F^2 N K^2 multiply-adds,
  K^2 N parameters;
* a pointwise 1x1 convolution combining the channels: F^2 N M multiply-adds, N M parameters;

each followed by batch norm and the activation (the paper's Figure 4). Against the standard
convolution's F^2 N K^2 M this costs 1/M + 1/K^2 as much -- about 1/8 to 1/9 for 3x3 kernels
and hundreds of channels. ``mobilenet-plain`` is the same network with every separable block
replaced by a standard 3x3 convolution of the same shape (MobileNet paper Table 4's "Conv
MobileNet": 29.3M parameters, 4866M multiply-adds vs 4.2M and 569M), for the cost comparison.

The width multiplier ``alpha`` thins every layer (Howard et al. Section 3.3): cost and
parameters fall roughly as alpha^2.
"""
from __future__ import annotations

import torch.nn as nn

from .activations import channel_multiplier
from .init import initialize, resolve_init
from .layers import ClassifierHead, ConvNormAct, check_norm, scale_width
from .registry import register_model

# (output channels, stride) of the 13 separable blocks after the 3x3/2 stem (Howard et al. Table 1)
BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1), (512, 1),
          (512, 1), (1024, 2), (1024, 1)]


class DepthwiseSeparable(nn.Sequential):
    """3x3 depthwise conv-BN-act then 1x1 pointwise conv-BN-act (efficient Section III, Figure 4 right).

    With CReLU the depthwise layer makes N / 2 maps, each from 2 input channels, so its output
    after CReLU still has N channels at the same cost.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1, act: str = "relu", norm: str = "batch"):
        super().__init__(
            ConvNormAct(cin, cin, 3, stride, act=act, norm=norm, groups=cin // channel_multiplier(act)),
            ConvNormAct(cin, cout, 1, act=act, norm=norm),
        )
        self.out_channels = cout


class MobileNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, alpha: float = 1.0, separable: bool = True,
                 act: str = "relu", norm: str = "batch", dropout: float = 0.0):
        super().__init__()
        check_norm(norm)
        c = scale_width(32, alpha)
        layers: list[nn.Module] = [ConvNormAct(in_channels, c, 3, 2, act=act, norm=norm)]
        for out, stride in BLOCKS:
            out = scale_width(out, alpha)
            if separable:
                layers.append(DepthwiseSeparable(c, out, stride, act, norm))
            else:
                layers.append(ConvNormAct(c, out, 3, stride, act=act, norm=norm))
            c = out
        self.features = nn.Sequential(*layers)
        self.head = ClassifierHead(c, num_classes, "avg", dropout)

    def forward(self, x):
        return self.head(self.features(x))


@register_model("mobilenet", "MobileNet v1: depthwise separable convolutions, width multiplier alpha",
                source="efficient-cnn Sec. III (Howard et al. 2017)", min_size=32, native_size=224, native_channels=3)
def mobilenet(num_classes: int, in_channels: int, image_size: int = 224, alpha: float = 1.0, act: str = "relu",
              norm: str = "batch", dropout: float = 0.0, init: str = "auto") -> nn.Module:
    model = MobileNet(num_classes, in_channels, float(alpha), True, act, norm, dropout)
    return initialize(model, resolve_init(init, norm))


@register_model("mobilenet-plain", "MobileNet v1 layout with standard 3x3 convolutions (cost comparison)",
                source="efficient-cnn Sec. III (Howard et al. Table 4)", min_size=32, native_size=224,
                native_channels=3)
def mobilenet_plain(num_classes: int, in_channels: int, image_size: int = 224, alpha: float = 1.0,
                    act: str = "relu", norm: str = "batch", dropout: float = 0.0, init: str = "auto") -> nn.Module:
    model = MobileNet(num_classes, in_channels, float(alpha), False, act, norm, dropout)
    return initialize(model, resolve_init(init, norm))
