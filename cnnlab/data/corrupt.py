"""Corrupted inputs: the denoising autoencoder's training noise (``--denoise``) and test-time
corruption (``cnnlab eval RUN --corrupt KIND:LEVEL``).

A corruption is written ``KIND:LEVEL`` and acts on pixels in [0, 1], before the input scaling
(so "X% noise" means the same thing whatever ``--input-scaling`` a run uses):

=================  ===========================================================================
``salt-pepper:p``  every pixel position is hit independently with probability p (so a fraction p
                   of the pixels on average) and set to black or white with equal probability;
                   all channels of a position together (a hit pixel is pure black/white)
``replace:p``      every pixel position is hit with probability p and replaced by a value drawn
                   uniformly from [0, 1] (per channel)
``gaussian:s``     N(0, s^2) noise added to every value, then clipped to [0, 1]
=================  ===========================================================================

The two-stage paper's "X% noise" (Sec. 2.5, Table 2, Fig. 2) is not defined there; cnnlab reads
it as ``salt-pepper:X/100``, the fraction of pixels destroyed (docs/two-stage.md).

Training noise draws from torch's global RNG (saved in checkpoints, so a resumed run draws the
same noise); test-time corruption (:func:`corrupt_images`) draws from a forked RNG seeded with
``--corrupt-seed``, so the same corruption and seed always give the same corrupted test set and
the caller's RNG is left alone.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import CnnlabError, suggest
from .augment import gaussian_noise, salt_and_pepper

KINDS = ("salt-pepper", "replace", "gaussian")
CHUNK = 8192


@dataclass(frozen=True)
class Corruption:
    kind: str
    level: float

    @property
    def label(self) -> str:
        """A file-name-safe name, e.g. ``salt-pepper-0.3``."""
        return f"{self.kind}-{self.level:g}"

    def __str__(self) -> str:
        return f"{self.kind}:{self.level:g}"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Corrupt a float batch [B, C, H, W] of pixels in [0, 1] (a new tensor; ``x`` is not changed).

        Draws from torch's global RNG. Salt-and-pepper and Gaussian noise are the augmentation
        module's transforms (the same as ``--salt-pepper`` / ``--noise``), clipped to [0, 1].
        """
        if self.level == 0:
            return x.clone()
        if self.kind == "salt-pepper":
            return salt_and_pepper(x, self.level)
        if self.kind == "gaussian":
            return gaussian_noise(x, self.level).clamp(0.0, 1.0)
        b, _, h, w = x.shape
        hit = torch.rand((b, 1, h, w), device=x.device) < self.level
        return torch.where(hit, torch.rand(x.shape, device=x.device, dtype=x.dtype), x)


def parse_corruption(spec: str, flag: str = "--corrupt") -> Corruption:
    """``"salt-pepper:0.3"`` -> ``Corruption("salt-pepper", 0.3)``, or a :class:`CnnlabError` naming ``flag``."""
    kind, sep, level = str(spec).strip().lower().partition(":")
    if kind not in KINDS:
        hint = suggest(kind, KINDS)
        raise CnnlabError(f"{flag} {spec!r}: unknown kind {kind!r}{'; ' + hint if hint else ''} "
                          f"(expected KIND:LEVEL with KIND one of {', '.join(KINDS)})")
    if not sep:
        raise CnnlabError(f"{flag} {spec!r}: expected KIND:LEVEL, e.g. {kind}:0.2")
    try:
        value = float(level)
    except ValueError:
        raise CnnlabError(f"{flag} {spec!r}: the level after ':' must be a number") from None
    if kind == "gaussian":
        if not 0 <= value <= 1:
            raise CnnlabError(f"{flag} {spec!r}: a Gaussian noise std must be in [0, 1] (pixels span [0, 1])")
    elif not 0 <= value <= 1:
        raise CnnlabError(f"{flag} {spec!r}: the fraction of pixels must be in [0, 1] (0.3 = 30%)")
    return Corruption(kind, value)


def corrupt_images(images: torch.Tensor, corruption: Corruption, seed: int = 0) -> torch.Tensor:
    """Corrupted copy of uint8 images [N, C, H, W] (rounded back to uint8): the same for the same seed.

    The noise is drawn from a forked, seeded CPU generator, so the caller's RNG state is untouched.
    """
    out = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        for chunk in images.cpu().split(CHUNK):
            x = corruption(chunk.float().div_(255))
            out.append(x.mul_(255).round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out) if out else images.clone()
