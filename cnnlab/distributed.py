"""Data-parallel training with torch.distributed (DDP), launched by ``torchrun``.

The thesis's data parallelism (Section 3.2.2): every process holds the whole model,
takes its own slice of each global mini-batch, and gradients are averaged across
processes after every backward pass (DDP's all-reduce). Launch with::

    torchrun --nproc-per-node 2 -m cnnlab train --data mnist --batch-size 128 ...

``--batch-size`` is per process, so the global batch is ``batch_size * world_size``.
Every process seeds its RNG identically: they draw the same permutation (and hence
disjoint slices of it) and the same augmentation parameters (applied to different
images). Batch-norm statistics stay per process (SyncBatchNorm does not run on CPU).
Process 0 writes the run folder; all processes evaluate, so early stopping agrees.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group torchrun set up (gloo on CPU, nccl on CUDA); a no-op otherwise."""
    if not launched_by_torchrun():
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj, info: DistInfo):
    """Process 0's value of ``obj`` on every process (e.g. the run name it chose)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shutdown(info: DistInfo, clean: bool = True) -> None:
    """Leave the process group: together after a clean run (a process leaving early can abort
    its peers' gloo), at once after an error (waiting would hang on peers that never arrive)."""
    if info.enabled and dist.is_initialized():
        try:
            if clean:
                dist.barrier()
        finally:
            dist.destroy_process_group()
