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
    probabilities are averaged over the views of :func:`cnnlab.data.augment.tta_views`, made from
    the pixels in [0, 1] before normalization, as training's augmentation is: a shifted or rotated
    view is filled the way training filled its shifted and rotated images, not with the mean colour.
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

    def normalized_forward(view: torch.Tensor) -> torch.Tensor:
        return forward(to_model_input(view, mean_t, std_t, runtime.channels_last))

    out = []
    try:
        for chunk in images.split(batch_size):
            chunk = chunk.to(device)
            if tta == "none":
                out.append(torch.softmax(forward(to_model_input(chunk, mean_t, std_t, runtime.channels_last)),
                                         dim=1).cpu())
            else:  # views made in pixel space, as training augments: their fill is the fill training showed
                pixels = chunk.float().div_(255) if chunk.dtype == torch.uint8 else chunk.float()
                out.append(predict_tta(normalized_forward, pixels, tta).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)
