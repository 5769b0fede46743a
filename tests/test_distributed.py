"""Data-parallel training through torchrun (gloo on CPU) equals one process on the global batch."""
import json
import subprocess
import sys

import pytest
import torch

from cnnlab import runs
from cnnlab.checkpoint import load_checkpoint

# no batch norm, dropout or augmentation: then averaging the gradients of two halves of a
# batch is exactly the gradient of the whole batch, and the two runs must agree
COMMON = ["--data", "synthetic", "--model", "mlp", "--model-options", "hidden=[32]", "--epochs", "2",
          "--precision", "fp32", "--no-channels-last", "--threads", "1", "--opt", "sgd", "--lr", "0.1",
          "--sched", "cosine", "--no-flip", "--no-progress"]


def test_ddp_two_processes_match_one_process_on_the_global_batch(tmp_path):
    one = subprocess.run([sys.executable, "-m", "cnnlab", "train", *COMMON, "-b", "64", "--out", tmp_path,
                          "--name", "single"], capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "cnnlab", "train", *COMMON, "-b", "32", "--out", tmp_path, "--name", "ddp", "--json"],
                         capture_output=True, text=True, timeout=300)
    if ddp.returncode != 0 and "errno" in ddp.stderr.lower() and "socket" in ddp.stderr.lower():
        pytest.skip(f"no local sockets for torchrun: {ddp.stderr[-300:]}")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    summary = json.loads(ddp.stdout.strip().splitlines()[-1])
    assert summary["world_size"] == 2
    assert ddp.stdout.count("test accuracy") == 1  # only process 0 reports

    a = runs.read_metrics(tmp_path / "single")
    b = runs.read_metrics(tmp_path / "ddp")
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-5)
        assert rb["val_acc"] == ra["val_acc"]
    wa = load_checkpoint(tmp_path / "single" / runs.CHECKPOINT)["model"]
    wb = load_checkpoint(tmp_path / "ddp" / runs.CHECKPOINT)["model"]
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-5, atol=1e-6)
