"""Data-parallel training with torch.distributed (DDP), launched by ``torchrun``.

The thesis's data parallelism (Section 3.2.2): every process holds the whole model,
takes its own slice of each global mini-batch, and gradients are averaged across
processes after every backward pass (DDP's all-reduce). Launch with::

    torchrun --nproc-per-node 2 -m cnnlab train --data mnist --batch-size 128 ...

``--batch-size`` is per process, so the global batch is ``batch_size * world_size``.
Every process seeds its RNG identically: they draw the same permutation (and hence
disjoint slices of it) and the same augmentation parameters (applied to different
images). Batch-norm statistics are those of the global batch on CUDA (SyncBatchNorm,
:func:`use_sync_batchnorm`) and stay per process on CPU, where SyncBatchNorm does not run.
Process 0 writes the run folder; all processes evaluate, so early stopping agrees.

A process whose peer died waits in its next collective: a dead peer's closed connections
fail it at once, a silent one (a machine lost, a network cut) after ``timeout`` seconds
(``--dist-timeout``); torchrun then stops the node's other processes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

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


def is_main_process() -> bool:
    """Process 0 of a torchrun launch (or a plain run): the one that writes and prints results. Reads
    torchrun's environment, so it holds before the process group exists and after it is shut down."""
    return int(os.environ.get("RANK", "0")) == 0


def init_distributed(device: torch.device, timeout: float) -> DistInfo:
    """Join the process group torchrun set up (gloo on CPU, nccl on CUDA); a no-op otherwise.

    ``timeout``: seconds one collective may wait for the other processes before it fails. torch's own
    default (30 minutes for gloo) would leave the survivors of a silently lost node idle that long."""
    if not launched_by_torchrun():
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(seconds=timeout))
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def use_sync_batchnorm(device: torch.device, info: DistInfo, wanted: bool = True) -> bool:
    """Batch norm over the global batch (``torch.nn.SyncBatchNorm``): under DDP on CUDA, unless ``--no-sync-bn``.
    Never on CPU: SyncBatchNorm has no CPU kernel, so under gloo each process normalizes with its own slice."""
    return wanted and info.enabled and device.type == "cuda"


def batchnorm_text(model: torch.nn.Module, synced: bool) -> str:
    """How a DDP run's batch norm is computed, for the start line ("" when the model has none)."""
    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return ""
    return "SyncBatchNorm over the global batch" if synced else "batch norm per process"


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
