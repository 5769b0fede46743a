"""The maximum-depth design rule (thesis Section 4.3, eq. 4.2-4.6) and the network it builds.

A network of n stages, stage i being a_i stacked k x k convolutions followed by 2x2 max
pooling, is made as deep as two constraints allow:

1. the receptive field must not exceed the image (a filter spanning the whole image no
   longer has to learn patterns that generalize), eq. 4.4:
       sum_i a_i 2^(i-1) <= z / (k - 1)
2. the c-value = real filter size / receptive field size must stay >= t at every stage
   (a filter much smaller than the patterns it must relate loses its learning capability),
   eq. 4.3:  sum_{i<=l} a_i 2^(i-1) <= 2^(l-1) k / (t (k - 1))   for l = 1..n

A k x k filter after l-1 poolings spans k 2^(l-1) input pixels and the receptive field after
stage l is 1 + (k - 1) sum_{i<=l} a_i 2^(i-1), which gives the right-hand side of eq. 4.3.
(The thesis prints 2^l there and a_2..a_n = 1 / (2 a_1) in eq. 4.6; with 2^l the relaxed
optimum would not be eq. 4.5, and 1 / (2 a_1) would *grow* with t. The 2^(l-1) reading gives
exactly the stated solution, so we take both as typesetting slips.)

Objective eq. 4.2: maximize sum_i a_i. With z = 2^(m-1) k / t and real a_i the optimum is
eq. 4.5-4.6: n = m, a_1 = k / ((k - 1) t), a_2 = ... = a_n = a_1 / 2 (every constraint tight).
``relaxed_max_depth`` returns that; ``max_depth_layout`` solves the integer problem (a_i >= 1)
exactly by dynamic programming over the prefix sums, and among equally deep layouts picks the
one that puts layers as early as possible (lexicographically largest), like the relaxed optimum.

The default c_min = 0.3 gives a_1 = 5 for 3x3 kernels -- the five stacked 3x3 convolutions of
the first stage of the NDSB networks (thesis Tables 6.1, 6.2, "mainly based on eq. 4.5").
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch.nn as nn

from ..errors import CnnlabError
from .init import initialize, resolve_init
from .layers import ClassifierHead, ConvNormAct, check_norm, scale_width
from .registry import register_model

_EPS = 1e-9


def _check(image_size: int, kernel: int, c_min: float) -> None:
    if kernel < 2:
        raise CnnlabError(f"maxdepth: option kernel must be >= 2 (eq. 4.3 divides by k - 1), got {kernel}")
    if not c_min > 0:
        raise CnnlabError(f"maxdepth: option c_min must be > 0, got {c_min}")
    if image_size < kernel:
        raise CnnlabError(f"maxdepth: image size {image_size} is smaller than the kernel {kernel}")


def stage_bounds(image_size: int, kernel: int, c_min: float, stages: int) -> list[float]:
    """Right-hand sides of eq. 4.3 for l = 1..stages, each capped by eq. 4.4."""
    a1 = kernel / ((kernel - 1) * c_min)
    total = image_size / (kernel - 1)
    return [min(2 ** (l - 1) * a1, total) for l in range(1, stages + 1)]


def is_feasible(layout: list[int] | tuple[int, ...], image_size: int, kernel: int = 3, c_min: float = 0.3) -> bool:
    """Does ``layout`` (a_1..a_n, each >= 1) satisfy eq. 4.3 and eq. 4.4?"""
    if not layout or any(a < 1 for a in layout):
        return False
    bounds = stage_bounds(image_size, kernel, c_min, len(layout))
    s = 0
    for i, (a, b) in enumerate(zip(layout, bounds)):
        s += a * 2 ** i
        if s > b + _EPS:
            return False
    return True


def relaxed_max_depth(image_size: int, kernel: int = 3, c_min: float = 0.3) -> tuple[float, list[float]]:
    """Eq. 4.5-4.6 for real-valued a_i: (m, [a_1, a_2, ...]) with z = 2^(m-1) k / t.

    m is real in general; the list has ceil(m) entries.
    """
    _check(image_size, kernel, c_min)
    m = 1 + math.log2(image_size * c_min / kernel)
    a1 = kernel / ((kernel - 1) * c_min)
    return m, [a1] + [a1 / 2] * max(0, math.ceil(m - _EPS) - 1)


@lru_cache(maxsize=256)
def _solve(image_size: int, kernel: int, c_min: float) -> tuple[int, ...]:
    total = image_size / (kernel - 1)
    max_stages = max(1, int(math.log2(max(total, 1))) + 1)  # 2^(n-1) <= sum a_i 2^(i-1) <= total
    bounds = stage_bounds(image_size, kernel, c_min, max_stages)
    caps = [int(math.floor(b + _EPS)) for b in bounds]

    @lru_cache(maxsize=None)
    def best(stage: int, prefix: int) -> int:
        """Most layers addable from ``stage`` (0-based) on, given the prefix sum so far (stopping allowed)."""
        if stage == max_stages:
            return 0
        cost, result = 2 ** stage, 0
        for a in range(1, (caps[stage] - prefix) // cost + 1):
            result = max(result, a + best(stage + 1, prefix + a * cost))
        return result

    if caps[0] < 1:
        return ()
    layout, prefix, stage = [], 0, 0
    remaining = best(0, 0)
    while remaining > 0:  # reconstruct: the largest a_i that still reaches the optimum
        cost = 2 ** stage
        for a in range((caps[stage] - prefix) // cost, 0, -1):
            if a + best(stage + 1, prefix + a * cost) == remaining:
                break
        layout.append(a)
        prefix, remaining, stage = prefix + a * cost, remaining - a, stage + 1
    return tuple(layout)


def max_depth_layout(image_size: int, kernel: int = 3, c_min: float = 0.3) -> list[int]:
    """The deepest stage layout [a_1, ..., a_n] (integers >= 1) allowed by eq. 4.3-4.4 (objective eq. 4.2)."""
    _check(int(image_size), int(kernel), float(c_min))
    layout = _solve(int(image_size), int(kernel), float(c_min))
    if not layout:
        raise CnnlabError(f"maxdepth: no layer fits: with kernel {kernel} and c_min {c_min} eq. 4.3 allows "
                          f"{kernel / ((kernel - 1) * c_min):.2f} < 1 layers in the first stage (lower c_min)")
    return list(layout)


class MaxDepthNet(nn.Module):
    """Stages of a_i k x k conv-norm-act layers + 2x2 max pooling; widths 64, 128, 256, 512, 512, ..."""

    def __init__(self, layout: list[int], num_classes: int, in_channels: int, kernel: int = 3, act: str = "relu",
                 norm: str = "batch", dropout: float = 0.0, width: float = 1.0):
        super().__init__()
        check_norm(norm)
        self.layout = list(layout)
        layers: list[nn.Module] = []
        c = in_channels
        for i, a in enumerate(layout):
            w = scale_width(min(64 * 2 ** i, 512), width)
            for _ in range(a):
                layers.append(ConvNormAct(c, w, kernel, padding="same", act=act, norm=norm))
                c = w
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
        self.features = nn.Sequential(*layers)
        self.head = ClassifierHead(c, num_classes, "avg", dropout)

    def forward(self, x):
        return self.head(self.features(x))


# square_only: eq. 4.4 bounds the receptive field by *the* image side z, and the layout (the network's
# depth) is solved from that one number. A H x W image has two sides; the thesis does not say which
# one the rule means (the smaller would stop the receptive field at the short side and waste the long
# one, the larger would let it outgrow the short side), so the model refuses to guess: resize with
# --image-size S. (The NDSB nets, whose layouts the rule chose once for a fixed side, take H x W.)
@register_model("maxdepth", "deepest VGG-style net allowed by the max-depth rule (options kernel, c_min)",
                source="thesis Sec. 4.3, eq. 4.2-4.6", min_size=4, native_size=32, native_channels=3,
                square_only=True)
def maxdepth(num_classes: int, in_channels: int, image_size: int = 32, kernel: int = 3, c_min: float = 0.3,
             act: str = "relu", norm: str = "batch", dropout: float = 0.0, width: float = 1.0,
             init: str = "auto") -> nn.Module:
    """Builds ``max_depth_layout(image_size, kernel, c_min)``; the layout is kept in ``model.layout``."""
    layout = max_depth_layout(int(image_size), int(kernel), float(c_min))
    model = MaxDepthNet(layout, num_classes, in_channels, int(kernel), act, norm, dropout, width)
    return initialize(model, resolve_init(init, norm))
