"""Batched augmentations users expect from timm/torchvision: colour jitter, random-resized crop, random
erasing, and RandAugment / TrivialAugment-style policies -- per-sample parameters, whole-batch tensor ops.

Like :mod:`cnnlab.data.augment` (whose conventions hold: float batches in [0, 1] before normalization,
torch's global RNG, so a resumed run draws the same), every op draws one parameter per sample and
applies the batch at once: colour ops are arithmetic on [B,1,1,1] factors, geometric ops one
``affine_grid`` + ``grid_sample`` for the whole batch. kornia (a maintained library with the same ops)
was measured against these on this CPU (docs/training.md, benchmarks/augment_policies.py): faster on RGB
colour ops by a few ms a batch, slower on crops, and its RandAugment takes no grey images, so it is not
a dependency.

Policies (``--policy``):

* ``randaugment[:N,M]`` (Cubuk et al. 2020, Sec. 3): each image gets N ops (default 2) drawn uniformly from
  :data:`OPS`, all at magnitude M of 30 (default 9);
* ``trivialaugment`` (Mueller & Hutter 2021, Sec. 3): one op per image, its magnitude uniform in [0, 30].

Ops whose signed strength makes sense (rotate, shear, translate, brightness, ...) take a random sign.
Colour ops on grey images act on the grey level (saturation is the identity there).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import CnnlabError

MAX_MAGNITUDE = 30.0
# op -> strength at magnitude 30 (RandAugment's ranges, Cubuk et al. 2020 Table and timm's defaults)
OPS = {
    "identity": 0.0, "rotate": 30.0, "shear_x": 0.3, "shear_y": 0.3, "translate_x": 0.45, "translate_y": 0.45,
    "brightness": 0.9, "contrast": 0.9, "saturation": 0.9, "sharpness": 0.9, "solarize": 1.0, "posterize": 4.0,
    "autocontrast": 1.0, "equalize_mean": 1.0,
}
GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")


def parse_policy(text: str | None) -> tuple[str, int, float] | None:
    """``"randaugment:2,9"`` -> ("randaugment", 2, 9.0); ``"trivialaugment"`` -> ("trivialaugment", 1, -1)."""
    if not text or text == "none":
        return None
    name, _, args = str(text).partition(":")
    if name == "trivialaugment" and not args:
        return name, 1, -1.0
    if name == "randaugment":
        try:
            n, m = (args.split(",") + ["9"])[:2] if args else ("2", "9")
            n, m = int(n), float(m)
        except ValueError:
            n, m = -1, -1.0
        if n >= 1 and 0 <= m <= MAX_MAGNITUDE:
            return name, n, m
    raise CnnlabError(f"--policy must be none, trivialaugment or randaugment[:N,M] (N >= 1 ops, magnitude M in "
                      f"[0, 30]), got {text!r}")


# --------------------------------------------------------------------------- colour


def _grey(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    w = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def _blend(a: torch.Tensor, b: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """b + factor (a - b): factor 1 keeps a, 0 gives b (PIL ImageEnhance's rule)."""
    return (b + factor.view(-1, 1, 1, 1) * (a - b)).clamp(0, 1)


def brightness(x, f):
    return _blend(x, torch.zeros_like(x), f)


def contrast(x, f):
    return _blend(x, _grey(x).mean((1, 2, 3), keepdim=True).expand_as(x), f)


def saturation(x, f):
    return x if x.shape[1] == 1 else _blend(x, _grey(x).expand_as(x), f)


def sharpness(x, f):
    k = torch.tensor([[1, 1, 1], [1, 5, 1], [1, 1, 1]], dtype=x.dtype, device=x.device) / 13
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k.expand(x.shape[1], 1, 3, 3), groups=x.shape[1])
    return _blend(x, blurred, f)


def color_jitter(x: torch.Tensor, strength: float) -> torch.Tensor:
    """Brightness, contrast and saturation factors each uniform in [1 - s, 1 + s], per sample, in that order."""
    if strength <= 0:
        return x
    b = x.shape[0]
    for op in (brightness, contrast, saturation):
        x = op(x, 1 + (torch.rand(b, device=x.device) * 2 - 1) * strength)
    return x


# --------------------------------------------------------------------------- geometry


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_resized_crop(x: torch.Tensor, min_area: float, ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """A crop of area fraction U(min_area, 1) and aspect log-U(ratio), anywhere inside, resized to H x W
    (torchvision's RandomResizedCrop rule, clipped to fit instead of retried)."""
    if min_area <= 0 or min_area >= 1:
        return x
    b, dev = x.shape[0], x.device
    area = min_area + torch.rand(b, device=dev) * (1 - min_area)
    log_r = math.log(ratio[0]) + torch.rand(b, device=dev) * (math.log(ratio[1]) - math.log(ratio[0]))
    r = log_r.exp()
    sx, sy = (area * r).sqrt().clamp(max=1), (area / r).sqrt().clamp(max=1)  # crop size / side
    tx, ty = (torch.rand(b, device=dev) * 2 - 1) * (1 - sx), (torch.rand(b, device=dev) * 2 - 1) * (1 - sy)
    theta = torch.zeros(b, 2, 3, device=dev, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, 0, 2], theta[:, 1, 2] = sx, sy, tx, ty
    return _affine(x, theta)


def random_erasing(x: torch.Tensor, p: float, area: tuple[float, float] = (0.02, 1 / 3),
                   ratio: tuple[float, float] = (0.3, 3.3)) -> torch.Tensor:
    """With probability p per sample, fill a rectangle (area fraction U(area), aspect log-U(ratio)) with
    uniform noise (Zhong et al. 2020, Alg. 1)."""
    if p <= 0:
        return x
    b, _, h, w = x.shape
    dev = x.device
    frac = area[0] + torch.rand(b, device=dev) * (area[1] - area[0])
    r = (math.log(ratio[0]) + torch.rand(b, device=dev) * (math.log(ratio[1]) - math.log(ratio[0]))).exp()
    eh = (frac * h * w / r).sqrt().clamp(max=h)
    ew = (frac * h * w * r).sqrt().clamp(max=w)
    y0 = torch.rand(b, device=dev) * (h - eh)
    x0 = torch.rand(b, device=dev) * (w - ew)
    ys = torch.arange(h, device=dev).view(1, h, 1)
    xs = torch.arange(w, device=dev).view(1, 1, w)
    box = (ys >= y0.view(-1, 1, 1)) & (ys < (y0 + eh).view(-1, 1, 1)) & \
          (xs >= x0.view(-1, 1, 1)) & (xs < (x0 + ew).view(-1, 1, 1))
    box &= (torch.rand(b, device=dev) < p).view(-1, 1, 1)
    return torch.where(box[:, None], torch.rand_like(x), x)


# --------------------------------------------------------------------------- policies


def _geometry(op: str, s: torch.Tensor) -> torch.Tensor:
    """An affine matrix per sample for geometric ``op`` at signed strengths ``s`` [n]."""
    theta = torch.zeros(len(s), 2, 3, device=s.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    if op == "rotate":
        a = s * math.pi / 180
        theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = a.cos(), -a.sin(), a.sin(), a.cos()
    elif op == "shear_x":
        theta[:, 0, 1] = s
    elif op == "shear_y":
        theta[:, 1, 0] = s
    elif op == "translate_x":
        theta[:, 0, 2] = 2 * s  # normalized coordinates span 2
    elif op == "translate_y":
        theta[:, 1, 2] = 2 * s
    return theta


def _colour(op: str, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    if op in ("brightness", "contrast", "saturation", "sharpness"):
        return {"brightness": brightness, "contrast": contrast, "saturation": saturation,
                "sharpness": sharpness}[op](x, 1 + s)
    m = s.abs().view(-1, 1, 1, 1)
    if op == "solarize":  # invert pixels above a threshold that falls with the magnitude
        return torch.where(x >= 1 - m, 1 - x, x)
    if op == "posterize":  # keep 8 - round(bits) bits
        levels = (2 ** (8 - m.round())).clamp(min=2)
        return (x * (levels - 1)).round() / (levels - 1)
    if op == "autocontrast":
        lo, hi = x.amin((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
        return torch.where(hi > lo, (x - lo) / (hi - lo).clamp_min(1e-6), x)
    if op == "equalize_mean":  # a cheap stand-in for histogram equalisation: per-channel standardisation
        mean, std = x.mean((2, 3), keepdim=True), x.std((2, 3), keepdim=True).clamp_min(1e-3)
        return ((x - mean) / (4 * std) + 0.5).clamp(0, 1)
    return x


def apply_policy(x: torch.Tensor, policy: tuple[str, int, float]) -> torch.Tensor:
    """RandAugment (N ops at magnitude M) or TrivialAugment (1 op, random magnitude), per sample."""
    name, n_ops, magnitude = policy
    b, dev = x.shape[0], x.device
    names = list(OPS)
    for _ in range(n_ops):
        choice = torch.randint(len(names), (b,), device=dev)
        mag = torch.rand(b, device=dev) * MAX_MAGNITUDE if magnitude < 0 else torch.full((b,), magnitude, device=dev)
        sign = torch.where(torch.rand(b, device=dev) < 0.5, -1.0, 1.0)
        theta = _geometry("identity", torch.zeros(b, device=dev))
        geometric = torch.zeros(b, dtype=torch.bool, device=dev)
        out = x.clone()
        for k, op in enumerate(names):
            chosen = choice == k
            if op == "identity" or not bool(chosen.any()):
                continue
            s = sign[chosen] * mag[chosen] / MAX_MAGNITUDE * OPS[op]
            if op in GEOMETRIC:
                theta[chosen] = _geometry(op, s)
                geometric |= chosen
            else:
                out[chosen] = _colour(op, x[chosen], s)
        if bool(geometric.any()):
            out[geometric] = _affine(x[geometric], theta[geometric])
        x = out
    return x
