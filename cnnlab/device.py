"""Where and how tensors run: device, numeric precision, autocast, seeding.

Below both the trainer (:mod:`cnnlab.train`) and inference (:mod:`cnnlab.inference`):
the same rules choose the precision of a training run and of a later ``cnnlab eval``.
``precision=auto`` is chosen by measurement, not by hope: bf16 autocast is only faster
on CPUs with native bf16 (AVX512-BF16 or AMX); on AVX2-only CPUs it is slower than fp32.
"""
from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import CnnlabError


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise CnnlabError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    """True on CPUs with AVX512-BF16 or AMX, where bf16 autocast is both fast and correct."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 on recent GPUs and bf16-capable CPUs, fp16 on older GPUs, fp32 otherwise."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def autocast(precision: str, device: torch.device):
    """The autocast context for ``precision`` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True


@dataclass(frozen=True)
class Runtime:
    """How a model runs: the device, the resolved precision and the memory layout of its inputs."""

    device: torch.device
    precision: str = "fp32"
    channels_last: bool = False

    @classmethod
    def resolve(cls, device: str, precision: str, channels_last: bool, training: bool = True) -> "Runtime":
        """Resolve ``auto`` choices. fp16 on a CPU is an error when training and falls back to fp32
        when only evaluating a run trained elsewhere (e.g. on a GPU)."""
        dev = resolve_device(device) if isinstance(device, str) else device
        prec = resolve_precision(precision, dev)
        if prec == "fp16" and dev.type == "cpu":
            if training:
                raise CnnlabError("--precision fp16 is not supported on CPU (use bf16, fp32 or auto)")
            prec = "fp32"
        return cls(dev, prec, channels_last)

    def autocast(self):
        return autocast(self.precision, self.device)
