"""Input scaling (``--input-scaling``): the affine map from pixels (or codes) to model inputs.

Every scaling is ``x' = (x - mean) / std`` applied to ``x = pixel / 255`` (or to an encoder's
code vector), fitted on the training split and saved in the run's ``meta.json`` as ``mean``
and ``std``; the loader, evaluation and ``cnnlab predict`` apply that same map
(:func:`cnnlab.data.loader.to_model_input`), so what a run was trained on is what it is used on.

``standard``
    per channel: ``mean`` and ``std`` of the channel over the training split (the default;
    ``mean``/``std`` hold one value per channel).
``none``
    the values as they are: pixels / 255 in [0, 1] (``mean`` 0, ``std`` 1 per channel), what a
    Bernoulli RBM on pixels expects (their probabilities of being "on").
``minmax[:lo,hi]``
    the two-stage paper's scaling (Sec. 2.1, improvement 2: "centering the training data by
    subtracting mean data value from each sample and then ... MinMax"): subtract the training
    mean of every input element (the mean image ``mu``), then map the centred training data
    linearly onto ``[lo, hi]`` (default ``[0, 1]``) using ONE minimum ``m`` and maximum ``M``
    over all its elements::

        x'_j = lo + (hi - lo) * (x_j - mu_j - m) / (M - m)

    i.e. ``mean_j = mu_j + m - lo (M - m) / (hi - lo)`` (one value per element) and
    ``std = (M - m) / (hi - lo)`` (one value per channel, all equal). Training data then spans
    exactly ``[lo, hi]``; test data may fall slightly outside and is not clipped.

Why one global minimum and maximum: a MinMax per element is invariant to a shift of that
element, so it would undo the centring the paper asks for (and divide by zero for pixels that
never change, e.g. MNIST's corners). docs/two-stage.md lists this and the other open choices.
"""
from __future__ import annotations

import torch

from ..errors import CnnlabError

SCALINGS = ("standard", "minmax", "none")
CHUNK = 8192  # images per step when fitting: MNIST's 60000 x 784 floats never exist at once


def parse_scaling(spec: str, flag: str = "--input-scaling") -> tuple[str, tuple[float, float]]:
    """``"minmax:-1,1"`` -> ``("minmax", (-1.0, 1.0))``; ``"standard"`` -> ``("standard", ())``."""
    name, _, args = str(spec).strip().lower().partition(":")
    if name not in SCALINGS:
        raise CnnlabError(f"{flag} {spec!r}: expected standard, minmax[:lo,hi] or none")
    if name in ("standard", "none"):
        if args:
            raise CnnlabError(f"{flag} {spec!r}: {name} takes no parameters")
        return name, ()
    try:
        values = tuple(float(v) for v in args.split(",")) if args else (0.0, 1.0)
    except ValueError:
        raise CnnlabError(f"{flag} {spec!r}: the range after ':' must be two numbers lo,hi") from None
    if len(values) != 2 or not values[0] < values[1]:
        raise CnnlabError(f"{flag} {spec!r}: the range must be two numbers lo,hi with lo < hi")
    return name, values  # type: ignore[return-value]


def as_unit_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float in [0, 1]; float features (codes) as they are."""
    return x.float().div_(255) if x.dtype == torch.uint8 else x.float()


def fit_scaling(spec: str, train: torch.Tensor, flag: str = "--input-scaling"
                ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` of scaling ``spec`` fitted on the training inputs ``train`` [N, C, H, W]
    (uint8 images or float features)."""
    name, bounds = parse_scaling(spec, flag)
    n, c = train.shape[0], train.shape[1]
    if name == "none":
        return (0.0,) * c, (1.0,) * c
    if n == 0:
        raise CnnlabError(f"{flag} {spec}: the training split is empty")
    # sums in float64: 60000 x 784 values summed in float32 lose digits
    total = torch.zeros(train.shape[1:], dtype=torch.float64)
    for chunk in train.split(CHUNK):
        total += as_unit_float(chunk).sum(0, dtype=torch.float64)
    mu = total / n  # the mean image (per element)
    if name == "standard":
        mean_c = mu.view(c, -1).mean(1)
        sq = torch.zeros(c, dtype=torch.float64)
        for chunk in train.split(CHUNK):
            d = as_unit_float(chunk).double() - mean_c.view(1, c, *([1] * (train.dim() - 2)))
            sq += d.pow(2).transpose(0, 1).reshape(c, -1).sum(1)
        count = n * mu[0].numel()
        std = (sq / max(count - 1, 1)).sqrt().clamp_min(1e-3)  # as channel_stats: a flat channel stays finite
        return tuple(mean_c.tolist()), tuple(std.tolist())
    lo, hi = bounds
    low, high = float("inf"), float("-inf")
    mu32 = mu.float()
    for chunk in train.split(CHUNK):
        centred = as_unit_float(chunk) - mu32
        low, high = min(low, centred.min().item()), max(high, centred.max().item())
    spread = max(high - low, 1e-6)  # constant data: any scale maps it onto lo
    scale = spread / (hi - lo)
    mean = mu + low - lo * scale
    return tuple(mean.flatten().tolist()), (scale,) * c

