"""Gradient accumulation (``--accum-steps k``): k batches' gradients summed into one optimizer step.

The trainer weights each batch's mean loss by its share of the step's images, so k batches of B
images give the gradient of one batch of kB (exactly, for a model without batch norm, whose
statistics are per batch); a short last group of an epoch is rescaled here to stay a mean. Under
DDP the k - 1 inner backward passes skip the all-reduce (``DistributedDataParallel.no_sync``):
gradients are averaged across processes once per optimizer step, not once per batch.
"""
from __future__ import annotations

import contextlib

import torch


def no_sync(model: torch.nn.Module, inner: bool):
    """``model.no_sync()`` for an inner batch of a DDP model; otherwise nothing."""
    if inner and hasattr(model, "no_sync"):
        return model.no_sync()
    return contextlib.nullcontext()


@torch.no_grad()
def rescale_grads(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Multiply every gradient by ``factor`` (a short last group: its weights summed to less than 1)."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is not None:
                p.grad.mul_(factor)
