"""Batched augmentation of 1-D signals [B, C, L]: shift, stretch and noise, with tensor ops only.

The same flags as for images, read in a signal's terms (one random draw per sample, all samples at
once, from torch's global generator, so seeding and resuming behave as for images):

* ``--translate T``: shift each signal by a uniform U(-T, T) fraction of its length;
* ``--scale S``: stretch it about its centre by a factor U(1 - S, 1 + S) (> 1 widens the peaks
  and spreads them apart), in the same resampling as the shift (linear interpolation; beyond
  the ends the end values continue, as a baseline does);
* ``--noise N``: add Gaussian noise of std N times the sample's own standard deviation (signals
  come in their files' units, so a fraction of the signal's spread is what means the same on
  every data set; for images the std is in pixel units 0..1).

Transforms that assume a 2-D picture (crop padding, flip, rotate, salt-and-pepper, cutout) are
refused with a clear error (:func:`check_signal_augment`) rather than silently ignored.
"""
from __future__ import annotations

import torch

from ..errors import CnnlabError

IMAGE_ONLY = {"crop_padding": "--crop-padding", "flip": "--flip", "rotate": "--rotate",
              "salt_pepper": "--salt-pepper", "cutout": "--cutout"}


def check_signal_augment(cfg) -> None:
    """Refuse the image-only augmentations of an :class:`~cnnlab.data.augment.AugmentConfig` for signals."""
    used = [flag for name, flag in IMAGE_ONLY.items() if getattr(cfg, name, None)]
    if used:
        raise CnnlabError(f"{', '.join(used)}: image augmentations; 1-D signals take --translate (shift), --scale "
                          f"(stretch) and --noise")


def shift_stretch(x: torch.Tensor, translate: float = 0.0, scale: float = 0.0) -> torch.Tensor:
    """Each signal of [B, C, L] shifted by U(-translate, translate) * L and stretched by U(1 - scale, 1 + scale)
    about its centre, by linear interpolation (one gather for the whole batch)."""
    if not (translate or scale):
        return x
    b, c, n = x.shape
    dev = x.device
    shift = (torch.rand(b, 1, device=dev) * 2 - 1) * translate * n
    zoom = 1 + (torch.rand(b, 1, device=dev) * 2 - 1) * scale
    centre = (n - 1) / 2
    # output point i shows the input at u = centre + (i - centre) / zoom - shift
    u = (centre + (torch.arange(n, device=dev, dtype=torch.float32) - centre) / zoom - shift).clamp(0, n - 1)
    left = u.floor().long().clamp(max=n - 2) if n > 1 else u.floor().long()
    w = (u - left).unsqueeze(1).to(x.dtype)
    left = left.unsqueeze(1).expand(b, c, n)
    a = x.gather(2, left)
    b_ = x.gather(2, (left + 1).clamp(max=n - 1))
    return torch.lerp(a, b_, w)


def relative_noise(x: torch.Tensor, fraction: float) -> torch.Tensor:
    """Add N(0, (fraction * std of the sample)^2) to every value of each sample."""
    if fraction <= 0:
        return x
    spread = x.flatten(1).std(1, keepdim=True).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
    return x + torch.randn_like(x) * spread * fraction


def augment_signals(x: torch.Tensor, cfg) -> torch.Tensor:
    """Shift + stretch (one resampling), then noise, on a float batch of signals [B, C, L]."""
    if x.dim() != 3 or not x.is_floating_point():
        raise ValueError(f"augment_signals: expected a float batch [B, C, L], got {x.dtype} {tuple(x.shape)}")
    check_signal_augment(cfg)
    x = shift_stretch(x, float(cfg.translate), float(cfg.scale))
    return relative_noise(x, float(cfg.noise))
