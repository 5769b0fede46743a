"""VGGNet (Simonyan & Zisserman 2014): configurations A, B, D, E (thesis Section 4.2.3,
Table 4.3 is E), their CIFAR-sized variants, and the kernel-size variants of
efficient-cnn-training-methods.md Section VII a.

Stacks of 3x3 convolutions (stride 1, padding 1) separated by 2x2/2 max pooling; two
stacked 3x3 layers see a 5x5 field with fewer weights and one more non-linearity.

* ``vgg11/13/16/19`` (A/B/D/E): the ImageNet networks, 224x224 input, classifier
  FC 4096 - FC 4096 - linear with dropout 0.5 on the flattened 7x7x512 map. VGG-16 has
  138M parameters (thesis Table 4.7). No normalization by default, as in the paper; the
  weights start from Kaiming's initialization (``init="auto"``, thesis eq. 5.28-5.31), which lets
  these depths train without the layer-wise pre-training of the original (Section 4.2.3).
* ``vgg11-cifar`` ... ``vgg19-cifar``: the same convolution stacks for 32x32 inputs with
  batch norm (also on the hidden FC layers), a global average pool and a 512 - 512 - linear
  classifier (3 FC layers, so VGG-19 keeps 19 weight layers). Pooling rounds up, so 28x28
  (MNIST) works too.
* ``vgg19-k3``, ``vgg19-k5``, ``vgg14-mixed``: the efficient-methods paper's CIFAR-10
  experiment ("19 layer using only 3x3 convolution", "19 layer using only 5x5 convolution",
  "14 layer that mixes various convolutions"), with its dropout 0.2 and no normalization
  (its Section VII d adds BN/LRN: ``--norm``). The paper does not tabulate the mixed network;
  ours keeps VGG's five stages with 11 convolutions -- 7x7 and 5x5 in the first stages, 3x3
  and one 1x1 later -- plus the 3 FC layers.
"""
from __future__ import annotations

import torch.nn as nn

from .init import initialize, resolve_init
from .layers import ConvNormAct, check_norm, linear_act, out_hw, scale_width
from .registry import register_model

M = "M"  # 2x2/2 max pooling
CONFIGS = {  # Simonyan & Zisserman Table 1; "e" is thesis Table 4.3
    "a": [64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M],
    "b": [64, 64, M, 128, 128, M, 256, 256, M, 512, 512, M, 512, 512, M],
    "d": [64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512, M],
    "e": [64, 64, M, 128, 128, M, 256, 256, 256, 256, M, 512, 512, 512, 512, M, 512, 512, 512, 512, M],
}
MIXED_14 = [(64, 7), (64, 5), M, (128, 5), (128, 5), M, (256, 3), (256, 3), (256, 1), M, (512, 3), (512, 3), M,
            (512, 3), (512, 3), M]  # (channels, kernel): 11 conv + 3 FC = 14 weight layers


class VGG(nn.Module):
    """Conv stacks from ``layout`` (channels or (channels, kernel) or "M"), then the classifier.

    ``head="imagenet"``: flatten the final map into FC 4096 - FC 4096 (floor pooling, as the paper).
    ``head="cifar"``: round-up pooling, global average pool, FC 512 - FC 512.
    """

    def __init__(self, layout: list, num_classes: int, in_channels: int, image_size: int | tuple[int, int], head: str,
                 kernel: int = 3, act: str = "relu", norm: str = "none", dropout: float = 0.5, width: float = 1.0):
        super().__init__()
        check_norm(norm)
        ceil = head == "cifar"
        layers: list[nn.Module] = []
        c, hw = in_channels, image_size
        for item in layout:
            if item == M:
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=ceil))
                hw = out_hw(hw, 2, 2, ceil_mode=ceil)
                continue
            out, k = item if isinstance(item, tuple) else (item, kernel)
            out = scale_width(out, width)
            layers.append(ConvNormAct(c, out, k, act=act, norm=norm))
            c = out
        self.features = nn.Sequential(*layers)
        if head == "imagenet":
            fc, flat = scale_width(4096, width), c * hw[0] * hw[1]
            pool: nn.Module = nn.Flatten()
        else:
            fc, flat = scale_width(512, width), c
            pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Sequential(
            pool,
            *linear_act(flat, fc, act, dropout, norm),
            *linear_act(fc, fc, act, dropout, norm),
            nn.Linear(fc, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


def _build(layout, head, num_classes, in_channels, image_size, act, norm, dropout, width, init, kernel=3):
    model = VGG(layout, num_classes, in_channels, image_size, head, kernel, act, norm, dropout, width)
    return initialize(model, resolve_init(init, norm))


def _register_imagenet(depth: int, cfg: str, table: str) -> None:
    @register_model(f"vgg{depth}", f"VGG-{depth} (configuration {cfg.upper()}), ImageNet head FC4096-FC4096",
                    source=table, min_size=32, native_size=224, native_channels=3)
    def builder(num_classes: int, in_channels: int, image_size: int = 224, act: str = "relu", norm: str = "none",
                dropout: float = 0.5, width: float = 1.0, init: str = "auto") -> nn.Module:
        return _build(CONFIGS[cfg], "imagenet", num_classes, in_channels, image_size, act, norm, dropout, width, init)

    @register_model(f"vgg{depth}-cifar", f"VGG-{depth} convolutions with BN for 32x32 inputs, GAP + FC512-FC512",
                    source=f"{table} (CIFAR-sized)", min_size=16, native_size=32, native_channels=3)
    def builder_cifar(num_classes: int, in_channels: int, image_size: int = 32, act: str = "relu",
                      norm: str = "batch", dropout: float = 0.5, width: float = 1.0,
                      init: str = "auto") -> nn.Module:
        return _build(CONFIGS[cfg], "cifar", num_classes, in_channels, image_size, act, norm, dropout, width, init)


for _depth, _cfg in ((11, "a"), (13, "b"), (16, "d"), (19, "e")):
    _register_imagenet(_depth, _cfg, "thesis Table 4.3" if _cfg == "e" else "thesis Sec. 4.2.3 (VGG config "
                       f"{_cfg.upper()})")


@register_model("vgg19-k3", "VGG-19 (16 conv 3x3 + 3 FC) for CIFAR, dropout 0.2, no BN",
                source="efficient-cnn Sec. VII a, exp. 1", min_size=16, native_size=32, native_channels=3)
def vgg19_k3(num_classes: int, in_channels: int, image_size: int = 32, act: str = "relu", norm: str = "none",
             dropout: float = 0.2, width: float = 1.0, init: str = "auto") -> nn.Module:
    return _build(CONFIGS["e"], "cifar", num_classes, in_channels, image_size, act, norm, dropout, width, init, 3)


@register_model("vgg19-k5", "VGG-19 with every convolution 5x5, for CIFAR, dropout 0.2, no BN",
                source="efficient-cnn Sec. VII a, exp. 2", min_size=16, native_size=32, native_channels=3)
def vgg19_k5(num_classes: int, in_channels: int, image_size: int = 32, act: str = "relu", norm: str = "none",
             dropout: float = 0.2, width: float = 1.0, init: str = "auto") -> nn.Module:
    return _build(CONFIGS["e"], "cifar", num_classes, in_channels, image_size, act, norm, dropout, width, init, 5)


@register_model("vgg14-mixed", "14-layer VGG mixing 7x7/5x5/3x3/1x1 convolutions, for CIFAR",
                source="efficient-cnn Sec. VII a, exp. 3", min_size=16, native_size=32, native_channels=3)
def vgg14_mixed(num_classes: int, in_channels: int, image_size: int = 32, act: str = "relu", norm: str = "none",
                dropout: float = 0.2, width: float = 1.0, init: str = "auto") -> nn.Module:
    return _build(MIXED_14, "cifar", num_classes, in_channels, image_size, act, norm, dropout, width, init)
