"""Two "nodes" on 127.0.0.1 (two torchrun launches, --nnodes 2, c10d rendezvous, gloo) equal one process on
the global batch, and only rank 0 writes the run folder (docs/distributed.md).

Slow on a loaded 2-core machine (three training processes and two torchrun agents): opt in with
CNNLAB_MULTINODE_TEST=1 (the lead's full runs and CI set it).
"""
import os
import socket
import subprocess
import sys

import pytest
import torch

from cnnlab import runs
from cnnlab.checkpoint import load_checkpoint

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
