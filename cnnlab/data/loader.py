"""Shuffled mini-batches straight from in-memory uint8 tensors.

This is the thesis's data iterator (Section 3.2.1) for data that fits in memory:
no worker processes and no per-sample Python. Each step gathers a batch of uint8
images by index, converts it to float in [0, 1], augments the whole batch
(:mod:`cnnlab.data.augment`), normalizes with the dataset's mean/std and hands it
to the model in the requested memory format and dtype.
"""
from __future__ import annotations

import math
from typing import Iterator

import torch

from .augment import AugmentConfig, augment_batch


def to_model_input(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                   channels_last: bool = False, augment: AugmentConfig | None = None) -> torch.Tensor:
    """uint8 [B,C,H,W] -> normalized float32 batch (augmented first if ``augment`` is enabled).

    Float inputs are features (an encoder's codes [B,D,1,1], :mod:`cnnlab.two_stage`), taken as they
    are instead of as pixels / 255. ``mean``/``std`` hold one value per channel or one per element
    (``--input-scaling minmax``, :mod:`cnnlab.data.scaling`), in any shape with that many values.
    """
    x = images.float().div_(255) if images.dtype == torch.uint8 else images.float()
    if augment is not None and augment.enabled:
        if x.dim() == 3:  # 1-D signals [B, C, L]: shift, stretch, noise (cnnlab.data.signal_augment)
            from .signal_augment import augment_signals

            x = augment_signals(x, augment)
        else:
            x = augment_batch(x, augment)
    x = (x - per_channel_or_element(mean, x)) / per_channel_or_element(std, x)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def per_channel_or_element(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``values`` viewed to broadcast over batch ``x``: [1,C,1,1] per channel, [1,C,H,W] per element
    (for signals [B,C,L]: [1,C,1] and [1,C,L])."""
    if values.numel() == x[0].numel() and values.numel() != x.shape[1]:
        return values.view(1, *x.shape[1:])
    return values.reshape(1, -1, *[1] * (x.dim() - 2)) if values.dim() != x.dim() else values


class BatchLoader:
    """Iterate over (inputs, labels) batches of an in-memory split, reshuffled every epoch.

    Shuffling and augmentation use torch's global RNG, so seeding torch and saving its
    state in checkpoints makes every epoch (and a resumed run) reproducible. A last
    batch of a single image is dropped in training because batch norm cannot use it.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, mean, std,
                 device: torch.device | str = "cpu", shuffle: bool = True, augment: AugmentConfig | None = None,
                 channels_last: bool = False, rank: int = 0, world_size: int = 1, balanced: bool = False):
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        # --balanced-sampler: each epoch draws N images with every class equally likely (with replacement)
        self.balanced = balanced
        self.augment = augment
        if augment is not None and augment.enabled and images.dim() == 3:  # signals: refuse image-only ones now
            from .signal_augment import check_signal_augment

            check_signal_augment(augment)
        self.channels_last = channels_last
        shape = (1, -1, 1, 1)
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=self.device).view(shape)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=self.device).view(shape)
        # Data-parallel: each global batch of batch_size * world_size images is dealt out
        # round-robin, process `rank` taking every world_size-th one (cnnlab.distributed).
        self.rank, self.world_size = rank, world_size
        self.global_batch = self.batch_size * world_size
        n = len(self.labels)
        tail = n % self.global_batch
        # drop a last batch that would leave some process fewer than 2 images (batch norm needs 2)
        self.num_samples = n - tail if (shuffle and 0 < tail < 2 * world_size and n > tail) else n

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.global_batch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        order = torch.randperm(n, device=self.device) if self.shuffle else torch.arange(n, device=self.device)
        if self.balanced and n:
            counts = torch.bincount(self.labels)
            order = torch.multinomial((1.0 / counts.float())[self.labels], n, replacement=True)
        for start in range(0, self.num_samples, self.global_batch):
            idx = order[start:min(start + self.global_batch, self.num_samples)]
            if self.world_size > 1:
                idx = idx[self.rank::self.world_size]
            x, y = self.images[idx], self.labels[idx]
            yield to_model_input(x, self.mean, self.std, self.channels_last, self.augment), y
