"""Batched data augmentation and test-time augmentation (TTA) with tensor ops only.

Why batched: the datasets live in memory as whole tensors (see :mod:`cnnlab.data.base`)
and the images are small, so a per-sample Python loop (the torchvision way) would
cost more than the forward pass. Every transform here draws one random parameter
*per sample* as a tensor and applies all samples at once with indexing,
``torch.where`` masks or one ``grid_sample`` call. A 512x1x28x28 batch with
crop + flip takes about 1 ms on one CPU core.

Randomness comes from torch's global generator of the batch's device
(``torch.rand(..., device=x.device)``), so ``torch.manual_seed`` makes a run
repeatable and saving/restoring ``torch.get_rng_state()`` (and
``torch.cuda.get_rng_state()`` for CUDA batches) makes a resumed run draw exactly
the augmentations the uninterrupted run would have.

Inputs are float batches ``[B, C, H, W]`` with values in [0, 1], on any device;
augmentation happens before normalization (:func:`normalize`), so that zero
padding / cutout mean black and the [0, 1] clamp is meaningful.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from ..config import TTA_MODES, check_value, is_tta_mode
from ..errors import CnnlabError



# --------------------------------------------------------------------------- config
@dataclass
class AugmentConfig:
    """Which training augmentations to apply and how strongly (all off by default).

    crop_padding: pad each side with this many zero pixels, then crop back to H x W at a random offset.
    flip:         mirror each sample horizontally with probability 1/2 (only for mirror-symmetric classes).
    translate:    max shift as a fraction of the side, per axis, uniform in [-translate, translate].
    rotate:       max rotation in degrees, uniform in [-rotate, rotate].
    scale:        max relative zoom, uniform in [1 - scale, 1 + scale].
    shear:        max shear angle in degrees, uniform in [-shear, shear] (x += tan(angle) y; thesis Ch. 6).
    vflip:        also flip each sample upside down with probability 1/2 (plankton has no "up", thesis Ch. 6).
    noise:        std of additive Gaussian noise.
    salt_pepper:  expected fraction of pixels set to white (half) or black (half), all channels together.
    cutout:       side in pixels of a zeroed square per sample, centred anywhere (clipped at the border).
    color_jitter, resized_crop, erase, policy: see :mod:`cnnlab.data.policies`.
    """

    crop_padding: int = 0
    flip: bool = False
    translate: float = 0.0
    rotate: float = 0.0
    scale: float = 0.0
    noise: float = 0.0
    salt_pepper: float = 0.0
    cutout: int = 0
    color_jitter: float = 0.0
    resized_crop: float = 0.0
    erase: float = 0.0
    policy: str | None = None
    shear: float = 0.0
    vflip: bool = False

    def __post_init__(self) -> None:
        # the same rules as the TrainConfig fields of the same names (one home: cnnlab.config)
        for f in fields(self):
            setattr(self, f.name, check_value(f.name, getattr(self, f.name), "augmentation", str(f.type)))

    @property
    def enabled(self) -> bool:
        """True when at least one transform is on (otherwise :func:`augment_batch` is a no-op)."""
        return any(bool(getattr(self, f.name)) and getattr(self, f.name) != "none" for f in fields(self))

    @property
    def affine(self) -> bool:
        return bool(self.translate or self.rotate or self.scale or self.shear)

    @classmethod
    def from_config(cls, cfg: Any, flip: bool | None = None) -> "AugmentConfig":
        """Read the augmentation fields of a :class:`cnnlab.config.TrainConfig`.

        ``TrainConfig.flip`` may be ``None`` ("the dataset's default"), which only
        the caller can resolve (``ArrayDataset.flip_ok``); pass the resolved value
        as ``flip``. Without it, ``cfg.flip`` is used and ``None`` means off.
        """
        if flip is None:
            flip = bool(cfg.flip) if cfg.flip is not None else False
        return cls(crop_padding=int(cfg.crop_padding), flip=bool(flip), translate=float(cfg.translate),
                   rotate=float(cfg.rotate), scale=float(cfg.scale), noise=float(cfg.noise),
                   salt_pepper=float(cfg.salt_pepper), cutout=int(cfg.cutout),
                   # the policies' fields (cnnlab.data.policies); objects that predate them read as off
                   color_jitter=float(getattr(cfg, "color_jitter", 0.0)),
                   resized_crop=float(getattr(cfg, "resized_crop", 0.0)), erase=float(getattr(cfg, "erase", 0.0)),
                   policy=getattr(cfg, "policy", None), shear=float(getattr(cfg, "shear", 0.0)),
                   vflip=bool(getattr(cfg, "vflip", False)))

    def describe(self) -> str:
        """Short human-readable summary for logs, e.g. ``"crop 4, flip, cutout 8"``."""
        parts = []
        if self.crop_padding:
            parts.append(f"crop {self.crop_padding}")
        if self.flip:
            parts.append("flip")
        if self.vflip:
            parts.append("vertical flip")
        if self.policy and self.policy != "none":
            parts.append(self.policy)
        for k in ("translate", "rotate", "scale", "shear", "noise", "salt_pepper", "cutout", "color_jitter", "resized_crop",
                  "erase"):
            if getattr(self, k):
                parts.append(f"{k.replace('_', '-')} {getattr(self, k):g}")
        return ", ".join(parts) or "none"


# --------------------------------------------------------------------------- single transforms
def _check_batch(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        what = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"augment: expected a float batch [B, C, H, W], got {what}")


def _uniform(n: int, bound: float, device: torch.device) -> torch.Tensor:
    """n draws from U(-bound, bound) in float32."""
    return (torch.rand(n, device=device) * 2 - 1) * bound


def random_crop(x: torch.Tensor, padding: int, flip: bool = False) -> torch.Tensor:
    """Zero-pad by ``padding`` on every side, then take an H x W crop at a random offset per sample.

    Equivalent to shifting each image by (dy, dx) in [-padding, padding]^2 with
    zero fill. Vectorized: pad once, then one ``gather`` over flattened pixels.
    With ``flip=True`` a random half of the samples is also mirrored by reading
    their columns in reverse order in the same gather, which makes the flip free
    (the crop + flip pair is the common CIFAR recipe).
    """
    if padding <= 0:
        return random_flip(x) if flip else x
    b, c, h, w = x.shape
    p = padding
    dev = x.device
    padded = F.pad(x, (p, p, p, p))
    wp = w + 2 * p
    oy = torch.randint(0, 2 * p + 1, (b, 1), device=dev)
    ox = torch.randint(0, 2 * p + 1, (b, 1), device=dev)
    rows = oy + torch.arange(h, device=dev)  # [B, H] source rows in the padded image
    cols = torch.arange(w, device=dev).expand(b, w)
    if flip:
        mirrored = torch.rand(b, 1, device=dev) < 0.5
        cols = torch.where(mirrored, w - 1 - cols, cols)
    cols = ox + cols  # [B, W] source columns
    index = (rows[:, :, None] * wp + cols[:, None, :]).reshape(b, 1, h * w).expand(b, c, h * w)
    return padded.reshape(b, c, -1).gather(2, index).reshape(b, c, h, w)


def random_flip(x: torch.Tensor, p: float = 0.5) -> torch.Tensor:
    """Mirror each sample left-right with probability ``p`` (a per-sample mask, one ``torch.where``)."""
    mask = torch.rand(x.shape[0], device=x.device) < p
    return torch.where(mask[:, None, None, None], x.flip(3), x)


def random_vflip(x: torch.Tensor, p: float = 0.5) -> torch.Tensor:
    """Flip each sample upside down with probability ``p``."""
    mask = torch.rand(x.shape[0], device=x.device) < p
    return torch.where(mask[:, None, None, None], x.flip(2), x)


def random_affine(x: torch.Tensor, translate: float = 0.0, rotate: float = 0.0, scale: float = 0.0,
                  shear: float = 0.0) -> torch.Tensor:
    """One random rotation + zoom + translation (+ shear) per sample, resampled bilinearly with zero fill.

    All three are combined into a single 2x3 matrix per sample so the image is
    interpolated once (``F.affine_grid`` + ``F.grid_sample``). The matrix maps
    output to input coordinates in grid_sample's normalized [-1, 1] frame; the
    H/W factors keep rotations rigid on non-square images. With all parameters 0
    it is the identity.
    """
    if not (translate or rotate or scale or shear):
        return x
    b, _, h, w = x.shape
    dev = x.device
    angle = _uniform(b, math.radians(rotate), dev)
    zoom = 1 + _uniform(b, scale, dev)  # > 1 magnifies
    tx = _uniform(b, 2 * translate, dev)  # normalized units: the side spans 2
    ty = _uniform(b, 2 * translate, dev)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([cos, -sin * (h / w), tx, sin * (w / h), cos, ty], 1).view(b, 2, 3)
    if shear:  # drawn only when asked for, so runs without shear keep their random sequence
        k = torch.tan(_uniform(b, math.radians(shear), dev)) * (h / w)  # x += k y, in normalized units
        theta = theta.clone()
        theta[:, :, 1] = theta[:, :, 0] * k[:, None] + theta[:, :, 1]  # theta @ [[1, k], [0, 1]]
    work = x if x.dtype in (torch.float32, torch.float64) else x.float()  # grid_sample lacks half on CPU
    grid = F.affine_grid(theta.to(work.dtype), list(work.shape), align_corners=False)
    out = F.grid_sample(work, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.to(x.dtype)


def gaussian_noise(x: torch.Tensor, std: float) -> torch.Tensor:
    """Add N(0, std^2) noise independently to every value."""
    return x + torch.randn_like(x) * std if std > 0 else x


def salt_and_pepper(x: torch.Tensor, fraction: float) -> torch.Tensor:
    """Set a random ``fraction`` of pixel positions to 1 (half of them) or 0 (the other half).

    One uniform draw per pixel position, shared by the channels, so a hit pixel is
    pure white/black rather than a coloured speck.
    """
    if fraction <= 0:
        return x
    b, _, h, w = x.shape
    u = torch.rand(b, 1, h, w, device=x.device)
    keep = (u >= fraction).to(x.dtype)  # 1 = untouched pixel
    salt = (u < fraction / 2).to(x.dtype)  # 1 = white pixel; [fraction/2, fraction) stays 0 = black
    return torch.addcmul(salt, x, keep)  # x * keep + salt; broadcast multiply beats masked_fill on CPU


def cutout(x: torch.Tensor, size: int) -> torch.Tensor:
    """Zero a ``size`` x ``size`` square per sample (DeVries & Taylor, 2017).

    The centre is uniform over the image, so squares near the border are clipped
    (the image is never fully masked and the border is not under-sampled). The
    mask is built by broadcasting row and column comparisons, no loops.
    """
    if size <= 0:
        return x
    b, _, h, w = x.shape
    dev = x.device
    top = torch.randint(0, h, (b, 1), device=dev) - size // 2
    left = torch.randint(0, w, (b, 1), device=dev) - size // 2
    ys, xs = torch.arange(h, device=dev), torch.arange(w, device=dev)
    in_rows = (ys >= top) & (ys < top + size)  # [B, H]
    in_cols = (xs >= left) & (xs < left + size)  # [B, W]
    inside = in_rows[:, None, :, None] & in_cols[:, None, None, :]  # [B, 1, H, W]
    return x * (~inside).to(x.dtype)  # broadcast multiply: several times faster than masked_fill on CPU


# --------------------------------------------------------------------------- pipeline
def augment_batch(x: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """Apply the enabled transforms of ``cfg`` to a float batch in [0, 1].

    Order: random-resized crop, random crop, flip, affine (translate/rotate/scale), policy, colour
    jitter, Gaussian noise, salt-and-pepper, cutout, random erasing, then clamp to [0, 1]. Geometry comes first so noise
    is not interpolated, and cutout last so its square stays exactly zero. The
    result has the input's shape, dtype and device; a disabled config returns
    ``x`` itself untouched.
    """
    _check_batch(x)
    if not cfg.enabled:
        return x
    from . import policies  # colour jitter, random-resized crop, policies, random erasing

    x = policies.random_resized_crop(x, cfg.resized_crop)
    x = random_crop(x, cfg.crop_padding, flip=cfg.flip)  # also flips when crop_padding is 0
    if cfg.vflip:
        x = random_vflip(x)
    x = random_affine(x, cfg.translate, cfg.rotate, cfg.scale, cfg.shear)
    if cfg.policy and cfg.policy != "none":
        x = policies.apply_policy(x, policies.parse_policy(cfg.policy))
    x = policies.color_jitter(x, cfg.color_jitter)
    x = gaussian_noise(x, cfg.noise)
    x = salt_and_pepper(x, cfg.salt_pepper)
    x = cutout(x, cfg.cutout)
    x = policies.random_erasing(x, cfg.erase)
    return x.clamp(0.0, 1.0)


# --------------------------------------------------------------------------- normalization
def _channel_stats(values: float | Sequence[float], x: torch.Tensor, name: str) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=x.dtype, device=x.device).flatten()
    if t.numel() not in (1, x.shape[1]):
        raise CnnlabError(f"normalize: {name} needs 1 or {x.shape[1]} values (one per channel), got {t.numel()}")
    return t.view(1, -1, 1, 1)


def normalize(x: torch.Tensor, mean: float | Sequence[float], std: float | Sequence[float]) -> torch.Tensor:
    """Per-channel ``(x - mean) / std`` (scalars apply to every channel)."""
    if any(float(s) <= 0 for s in torch.as_tensor(std).flatten().tolist()):
        raise CnnlabError(f"normalize: std must be > 0, got {std}")
    return (x - _channel_stats(mean, x, "mean")) / _channel_stats(std, x, "std")


# --------------------------------------------------------------------------- test-time augmentation
def shift_image(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Move the content of every image down by ``dy`` and right by ``dx`` pixels, filling with zeros."""
    b, c, h, w = x.shape
    out = torch.zeros_like(x)
    if abs(dy) >= h or abs(dx) >= w:
        return out
    out[:, :, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[:, :, max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


def tta_shift(h: int, w: int) -> int:
    """TTA shift in pixels: about 1/16 of the shorter side, at least 1 (2 px for 28-32 px images)."""
    return max(1, round(min(h, w) / 16))


def _check_tta_mode(mode: str) -> None:
    if not is_tta_mode(mode):
        raise CnnlabError(f"tta must be one of {', '.join(TTA_MODES)} or random:N (N >= 1), got {mode!r}")


# thesis Ch. 6's multi-view test: "for a single image, I performed 100 random augmentations then averaged the
# 100 prediction results" -- rotation, translation, rescaling, flips and shear (a fixed set: the thesis gives no
# magnitudes). Views are drawn from their own generator state seeded with TTA_SEED (torch.random.fork_rng), so
# `--tta random:N` gives the same probabilities every time and leaves the training run's random sequence alone.
RANDOM_VIEWS = {"rotate": 180.0, "translate": 0.05, "scale": 0.1, "shear": 10.0}
TTA_SEED = 0


def _random_views(x: torch.Tensor, n: int) -> Iterator[torch.Tensor]:
    devices = [x.device.index or 0] if x.is_cuda else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(TTA_SEED)
        for _ in range(n):
            # x is in pixel space (cnnlab.predict), so the fill is training's augmentation fill
            yield random_affine(random_vflip(random_flip(x)), **RANDOM_VIEWS)


def _iter_tta_views(x: torch.Tensor, mode: str) -> Iterator[torch.Tensor]:
    _check_tta_mode(mode)
    if mode.startswith("random:"):
        yield from _random_views(x, int(mode.partition(":")[2]))
        return
    bases = [x, x.flip(3)] if mode in ("flip", "flip-shift") else [x]
    s = tta_shift(x.shape[2], x.shape[3])
    for base in bases:
        yield base
        if mode in ("shift", "flip-shift"):
            for dy, dx in ((s, 0), (-s, 0), (0, s), (0, -s)):
                yield shift_image(base, dy, dx)


def tta_views(x: torch.Tensor, mode: str) -> list[torch.Tensor]:
    """The deterministic views of a batch that TTA averages over.

    none: [x] (1 view). flip: x and its mirror (2). shift: x and x shifted by
    +-s pixels vertically and horizontally with zero fill, s = :func:`tta_shift`
    (5). flip-shift: the shift views of x and of its mirror (10). random:N: N random
    flips/rotations/shifts/zooms/shears (:data:`RANDOM_VIEWS`), the same N for every call (seeded).
    """
    return list(_iter_tta_views(x, mode))


def predict_tta(model_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, mode: str) -> torch.Tensor:
    """Class probabilities [B, K] (float32) averaged over the TTA views of ``x``.

    ``x`` is the batch in pixel space ([0, 1], as :func:`augment_batch` takes it), so a view's
    fill (zeros: black) is the fill of training's augmentation; ``model_fn`` normalizes a view and
    maps it to logits (:func:`cnnlab.predict.predict_probs`).
    Probabilities, not logits, are averaged: the result is then itself a
    probability distribution (valid for log-loss and calibration) and one
    over-confident view cannot dominate through a huge logit. Views are run one
    at a time under ``torch.no_grad`` so memory stays that of a single batch.
    """
    _check_tta_mode(mode)
    total, n = None, 0
    with torch.no_grad():
        for view in _iter_tta_views(x, mode):
            probs = model_fn(view).float().softmax(-1)
            total = probs if total is None else total + probs
            n += 1
    return total / n


__all__ = ["AugmentConfig", "TTA_MODES", "augment_batch", "cutout", "gaussian_noise", "normalize",
           "predict_tta", "random_affine", "random_crop", "random_flip", "salt_and_pepper", "shift_image",
           "tta_shift", "tta_views"]
