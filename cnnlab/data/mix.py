"""MixUp and CutMix on whole batches, with soft targets.

MixUp (Zhang et al. 2018, eq. 1): x = l x_i + (1 - l) x_j and y = l y_i + (1 - l) y_j with
l ~ Beta(alpha, alpha) and j a shuffled partner in the same batch. CutMix (Yun et al. 2019, eq. 1-2):
a box of area (1 - l) from x_j is pasted into x_i, and l is recomputed from the box actually pasted
(clipped at the border). With both on, each batch uses one of the two with equal chance (as timm).

Targets become class probabilities [B, K]; the cross-entropy takes them directly, and label
smoothing composes by smoothing them again (``torch.nn.functional.cross_entropy`` applies
smoothing to probability targets too). One lambda per batch, drawn from torch's global RNG, so a
resumed run draws the same (the checkpoint saves that RNG).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


class Mixer:
    """``mixer(x, y) -> (x_mixed, soft_targets)`` for normalized images ``x`` [B,C,H,W] and labels ``y`` [B]."""

    def __init__(self, num_classes: int, mixup: float = 0.0, cutmix: float = 0.0):
        self.num_classes, self.mixup, self.cutmix = num_classes, float(mixup), float(cutmix)

    @property
    def enabled(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0

    def describe(self) -> str:
        return " + ".join(f"{n} alpha {a:g}" for n, a in (("mixup", self.mixup), ("cutmix", self.cutmix)) if a > 0)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        target = F.one_hot(y, self.num_classes).to(torch.float32)
        if not self.enabled or len(y) < 2:
            return x, target
        use_cutmix = self.cutmix > 0 and (self.mixup <= 0 or bool(torch.rand(()) < 0.5))
        alpha = self.cutmix if use_cutmix else self.mixup
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        perm = torch.randperm(len(y), device=y.device)
        if use_cutmix:
            x, lam = _paste_box(x, perm, lam)
        else:
            x = lam * x + (1 - lam) * x[perm]
        return x, lam * target + (1 - lam) * target[perm]


def _paste_box(x: torch.Tensor, perm: torch.Tensor, lam: float) -> tuple[torch.Tensor, float]:
    """CutMix's box: side ratio sqrt(1 - lam), centre uniform, clipped; lam from the pasted area."""
    h, w = x.shape[-2:]
    cut = (1.0 - lam) ** 0.5
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    x = x.clone()
    x[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
    return x, 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
