"""Data-parallel training through torchrun (gloo on CPU): it equals one process on the global batch, a finished
run resumes for more epochs on every process, and batch norm becomes SyncBatchNorm only under DDP on CUDA."""
import json
import subprocess
import sys

import pytest
import torch

from cnnlab import create_model, runs
from cnnlab.checkpoint import load_checkpoint
from cnnlab.distributed import DistInfo, batchnorm_text, use_sync_batchnorm

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
    printed = [line for line in ddp.stdout.splitlines() if line.startswith("{")]
    assert len(printed) == 1, ddp.stdout[-3000:]  # process 0 prints the summary; the others stay quiet
    summary = json.loads(printed[0])
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


# process 1 slow between finding summary.json and reading it, process 0 slow to remove it: a process 1
# that looked at the file itself (instead of being told by process 0) finds it gone
SLOW_SUMMARY = """
import os, pathlib, sys, time
from cnnlab import runs
from cnnlab.cli import main
if os.environ["RANK"] == "0":
    unlink = pathlib.Path.unlink
    pathlib.Path.unlink = lambda p, *a, **k: (time.sleep(1) if p.name == runs.SUMMARY else None, unlink(p, *a, **k))[1]
else:
    read_json = runs.read_json
    runs.read_json = lambda p: (time.sleep(2) if p.name == runs.SUMMARY else None, read_json(p))[1]
sys.exit(main())
"""


def test_resuming_a_finished_ddp_run_for_more_epochs_continues_on_every_process(tmp_path):
    """Process 0 decides whether the run is finished, and removes summary.json when asked for more epochs;
    the others are told, so they never race it for the file."""
    first = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                            "-m", "cnnlab", "train", *COMMON, "--epochs", "1", "-b", "32", "--out", tmp_path,
                            "--name", "ddp"], capture_output=True, text=True, timeout=300)
    if first.returncode != 0 and "errno" in first.stderr.lower() and "socket" in first.stderr.lower():
        pytest.skip(f"no local sockets for torchrun: {first.stderr[-300:]}")
    assert first.returncode == 0, first.stderr[-3000:]
    (tmp_path / "slow.py").write_text(SLOW_SUMMARY)
    more = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           tmp_path / "slow.py", "train", "--resume", tmp_path / "ddp", "--epochs", "2"],
                          capture_output=True, text=True, timeout=300)
    assert more.returncode == 0, more.stderr[-3000:]
    assert [r["epoch"] for r in runs.read_metrics(tmp_path / "ddp")] == [1, 2]
    assert runs.read_json(tmp_path / "ddp" / runs.SUMMARY)["epochs"] == 2


@pytest.mark.parametrize("device, world_size, wanted, synced", [
    ("cuda", 2, True, True), ("cuda", 2, False, False), ("cuda", 1, True, False), ("cpu", 2, True, False)])
def test_sync_batchnorm_only_under_ddp_on_cuda_unless_turned_off(device, world_size, wanted, synced):
    assert use_sync_batchnorm(torch.device(device), DistInfo(world_size=world_size), wanted) is synced


def test_sync_batchnorm_conversion_keeps_the_parameters_and_the_checkpoint_keys():
    """What build_parts does on CUDA, checked on CPU without running the model: each batch norm becomes a
    SyncBatchNorm in place, holding the same parameter objects (those the optimizer was given) under the same
    state_dict keys (so checkpoints and weights load into a single-process model)."""
    model = create_model("resnet20", 10, 3, image_size=32)
    params, keys = list(model.parameters()), list(model.state_dict())
    assert batchnorm_text(model, synced=False) == "batch norm per process"
    assert torch.nn.SyncBatchNorm.convert_sync_batchnorm(model) is model
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and all(type(m) is torch.nn.SyncBatchNorm for m in norms)
    assert all(a is b for a, b in zip(params, model.parameters(), strict=True))
    assert list(model.state_dict()) == keys
    assert batchnorm_text(model, synced=True) == "SyncBatchNorm over the global batch"
    assert batchnorm_text(create_model("mlp", 4, 1, image_size=8), synced=True) == ""  # no batch norm: nothing said
