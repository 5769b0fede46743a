"""Batched prediction with optional test-time augmentation (TTA).

One function turns uint8 images into class probabilities the same way everywhere:
evaluation during training, ``cnnlab eval``, ``cnnlab predict`` (and later serving),
so preprocessing can never differ between them. Below both :mod:`cnnlab.train` and
:mod:`cnnlab.inference`.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .data.augment import predict_tta
from .data.loader import to_model_input
from .device import Runtime


@torch.no_grad()
def predict_probs(model: torch.nn.Module, images: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                  runtime: Runtime, tta: str = "none", batch_size: int = 1024) -> torch.Tensor:
    """Softmax probabilities [N, classes] (float32, CPU) for uint8 images [N, C, H, W].

    The model is put in eval mode for the call and restored afterwards. With ``tta`` the
    probabilities are averaged over the views of :func:`cnnlab.data.augment.tta_views`.
    """
    if tta != "none" and images.dim() == 3:
        from .errors import CnnlabError

        raise CnnlabError(f"--tta {tta}: test-time augmentation (flips, shifts) is for images, not 1-D signals")
    was_training = model.training
    model.eval()
    device = runtime.device
    shape = (1, -1, 1, 1)
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=device).view(shape)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=device).view(shape)

    def forward(x: torch.Tensor) -> torch.Tensor:
        with runtime.autocast():
            return model(x).float()

    out = []
    try:
        for chunk in images.split(batch_size):
            x = to_model_input(chunk.to(device), mean_t, std_t, runtime.channels_last)
            if tta == "none":
                out.append(torch.softmax(forward(x), dim=1).cpu())
            else:
                out.append(predict_tta(forward, x, tta).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)
