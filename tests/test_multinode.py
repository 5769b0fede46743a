"""Two "nodes" on 127.0.0.1 (two torchrun launches, --nnodes 2, c10d rendezvous, gloo) equal one process on
the global batch, only rank 0 writes the run folder, and a run whose node died resumes to the uninterrupted
result (docs/distributed.md).

Slow on a loaded 2-core machine (up to three training runs of two torchrun agents each, about a minute for
the longest test): opt in with CNNLAB_MULTINODE_TEST=1 (the lead's full runs and CI set it).
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cnnlab import runs
from cnnlab.checkpoint import load_checkpoint, load_weights

pytestmark = pytest.mark.skipif(os.environ.get("CNNLAB_MULTINODE_TEST") != "1",
                                reason="multi-node torchrun tests: set CNNLAB_MULTINODE_TEST=1 (a few minutes)")

# no batch norm, dropout or augmentation: averaging the gradients of the two halves of a batch is then
# exactly the gradient of the whole batch (as in tests/test_distributed.py)
COMMON = ["--data", "synthetic", "--model", "mlp", "--model-options", "hidden=[32]", "--epochs", "2",
          "--precision", "fp32", "--no-channels-last", "--threads", "1", "--opt", "sgd", "--lr", "0.1",
          "--sched", "cosine", "--no-flip", "--no-progress", "--name", "run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_match_one_process_and_only_rank_0_writes(tmp_path):
    one = subprocess.run([sys.executable, "-m", "cnnlab", "train", *COMMON, "-b", "64", "--out", tmp_path / "single"],
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    port = free_port()
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                               "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "t",
                               "-m", "cnnlab", "train", *COMMON, "-b", "32", "--out", tmp_path / f"node{i}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=300) for p in nodes]
    for p, (_, err) in zip(nodes, outputs):
        if p.returncode != 0 and "socket" in err.lower() and "errno" in err.lower():
            pytest.skip(f"no local sockets for torchrun: {err[-300:]}")
        assert p.returncode == 0, err[-3000:]
    written = [d for d in (tmp_path / "node0", tmp_path / "node1") if (d / "run").exists()]
    assert len(written) == 1  # rank 0's node wrote the run folder, the other node nothing
    assert sum(out.count("test accuracy") for out, _ in outputs) == 1

    a, b = runs.read_metrics(tmp_path / "single" / "run"), runs.read_metrics(written[0] / "run")
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-5)
    wa = load_checkpoint(tmp_path / "single" / "run" / runs.CHECKPOINT)["model"]
    wb = load_checkpoint(written[0] / "run" / runs.CHECKPOINT)["model"]
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-5, atol=1e-6)


def test_two_nodes_stream_their_own_shards(tmp_path):
    from cnnlab.data.shards import read_manifest
    from cnnlab.pack import pack

    pack("synthetic", tmp_path / "shards", shard_size_mb=0.1, log=lambda s: None)
    counts = [e["count"] for e in read_manifest(tmp_path / "shards")["splits"]["train"]["shards"]]
    args = ["--data", "shards", "--data-dir", tmp_path / "shards", "--data-path", "stream", "--model", "mlp",
            "--epochs", "1", "-b", "16", "--precision", "fp32", "--threads", "1", "--data-workers", "1",
            "--no-progress", "--name", "run"]
    port = free_port()
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                               "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "s",
                               "-m", "cnnlab", "train", *args, "--out", tmp_path / f"node{i}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=300) for p in nodes]
    for p, (_, err) in zip(nodes, outputs):
        assert p.returncode == 0, err[-3000:]
    written = [d for d in (tmp_path / "node0", tmp_path / "node1") if (d / "run").exists()]
    assert len(written) == 1
    # shard i is rank i mod 2's; both take the steps of the smaller share
    share = min(sum(counts[0::2]), sum(counts[1::2]))
    assert runs.read_metrics(written[0] / "run")[-1]["step"] == share // 16


def node(port: int, rdzv_id: str, args: list, **popen) -> subprocess.Popen:
    """One "node": a torchrun agent with one training process, in a session of its own (killable as one)."""
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                             "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", rdzv_id,
                             "-m", "cnnlab", "train", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, **popen)


def two_nodes(rdzv_id: str, args: list) -> None:
    port = free_port()
    nodes = [node(port, rdzv_id, args) for _ in range(2)]
    for p, (_, err) in zip(nodes, [p.communicate(timeout=300) for p in nodes]):
        assert p.returncode == 0, err[-3000:]


def parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def outcome(run_dir: Path) -> tuple:
    """What must be equal after the resume: metrics rows, summary and final weights (timing aside)."""
    timing = {"images_per_second", "epoch_seconds", "elapsed", "train_seconds", "run_dir"}
    rows = [{k: v for k, v in r.items() if k not in timing} for r in runs.read_metrics(run_dir)]
    summary = {k: v for k, v in runs.read_json(run_dir / runs.SUMMARY).items() if k not in timing}
    return rows, summary, {k: v.tolist() for k, v in load_weights(run_dir / runs.WEIGHTS).items()}


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the training process's node in /proc")
def test_a_run_whose_node_died_resumes_on_two_nodes_to_the_uninterrupted_result(tmp_path):
    """The node of rank 0 (the writer) goes silent after the first checkpoint, as a lost machine does: its
    training process is frozen, its connections open. The other node must fail after --dist-timeout instead
    of waiting for ever; then the silent node is SIGKILLed. Relaunched with --resume, the two nodes finish
    the run exactly as an uninterrupted one (same processes, same reduction order: equal, not close)."""
    args = [*COMMON, "--epochs", "20", "-b", "32"]  # 8 steps an epoch: the freeze lands well before the end
    two_nodes("whole", [*args, "--out", tmp_path / "whole"])

    port, timeout = free_port(), 20
    nodes = [node(port, "died", [*args, "--out", tmp_path / "died", "--dist-timeout", str(timeout)])
             for _ in range(2)]
    run_dir, writer = tmp_path / "died" / "run", None
    try:
        while not (run_dir / runs.CHECKPOINT).exists():
            assert all(p.poll() is None for p in nodes), [p.communicate()[1][-3000:] for p in nodes]
            time.sleep(0.02)
        writer = int((run_dir / ".lock").read_text().split()[1])  # "pid N on HOST since ..." (cnnlab.lock)
        os.killpg(writer, signal.SIGSTOP)  # torchrun starts each training process in a session of its own
        frozen = next(p for p in nodes if p.pid == parent_pid(writer))
        survivor = next(p for p in nodes if p is not frozen)
        start = time.monotonic()
        _, err = survivor.communicate(timeout=timeout + 120)
        waited = time.monotonic() - start
    finally:
        for p in nodes:  # the silent node dies: its torchrun agent's process group, then its training process
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        if writer is not None:
            os.killpg(writer, signal.SIGKILL)
        for p in nodes:
            p.communicate(timeout=60)
    assert survivor.returncode != 0 and "timed out" in err.lower(), err[-3000:]
    assert waited < timeout + 60, f"the surviving node took {waited:.0f}s to end"

    # the last good checkpoint is intact (its checksum) with the rows it vouches for, the run is unfinished, and
    # metrics.jsonl reads back whole (it may lack the checkpoint's last row: the freeze can land between the two)
    ckpt = load_checkpoint(run_dir / runs.CHECKPOINT)
    epoch = ckpt["state"]["epoch"]
    assert 1 <= epoch < 20 and not (run_dir / runs.SUMMARY).exists()
    assert [r["epoch"] for r in json.loads(ckpt["metrics"])] == list(range(1, epoch + 1))
    on_disk = [r["epoch"] for r in runs.read_metrics(run_dir)]
    assert on_disk == list(range(1, len(on_disk) + 1)) and len(on_disk) <= epoch + 1

    two_nodes("resumed", ["--resume", run_dir, "--dist-timeout", "600"])
    assert outcome(run_dir) == outcome(tmp_path / "whole" / "run")
