"""Crash consistency by fault injection: SIGKILL a training run (or a study) at many points, then resume.

Each case forks the test process (torch is imported already, so a child starts in milliseconds),
arms one kill point in the child and trains there; the child dies by SIGKILL exactly at that point:

- ``step:N``           before the N-th optimizer step (the loop's step-boundary check);
- ``torn:FILE:N``      inside the N-th write of FILE: half of the new contents written, not renamed;
- ``written:FILE:N``   the N-th FILE complete and fsynced, not yet renamed over the old one;
- ``renamed:FILE:N``   just after the rename (e.g. the checkpoint of an epoch saved, its metrics not).

Then, in this process: every file left must be readable (no torn checkpoint, JSON or weights), and
``--resume`` must finish the run with metrics rows, summary and weights *equal* to an uninterrupted
run's (the cadence is per epoch and resuming is exact, so a kill anywhere loses at most the epoch in
progress and changes nothing). No temporary file and no lock may be left behind.

The default runs a short list of kill points chosen to cover every kind and file; the full sweep
(every step, and every write of every file x every kind) runs with ``CNNLAB_FAULT_SWEEP=1`` (or
``pytest -m faults_sweep``); docs/reliability.md quotes its figures.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest

from cnnlab import files, runs
from cnnlab.checkpoint import load_checkpoint, load_weights
from cnnlab.config import TrainConfig

posix_only = pytest.mark.skipif(not hasattr(os, "fork"), reason="fault injection forks")
SWEEP = os.environ.get("CNNLAB_FAULT_SWEEP") == "1"
TIMING = {"images_per_second", "epoch_seconds", "elapsed", "train_seconds", "run_dir", "encode_seconds",
          "pretrain_seconds", "seconds"}


def config(out: Path, name: str) -> TrainConfig:
    """Seconds-long: 3 epochs of 4 steps of a small MLP on 8x8 generated images."""
    return TrainConfig.from_dict(dict(
        data="synthetic", data_options={"train_size": 128, "test_size": 64, "size": 8}, model="mlp",
        model_options={"hidden": [16]}, epochs=3, batch_size=32, lr=0.05, dropout=0.1, out=str(out), name=name,
        progress=False, threads=1, precision="fp32"))


@pytest.fixture(autouse=True)
def quick_plots(monkeypatch):
    """PNG drawing is most of a tiny run's time; the write itself (atomic, killable) is kept."""
    from cnnlab import plots

    def save_figure(fig, path, dpi=100, tight=False):
        try:
            files.atomic_write_bytes(path, b"\x89PNG stand-in")
        finally:
            plots.pyplot().close(fig)

    monkeypatch.setattr(plots, "save_figure", save_figure)


# ------------------------------------------------------------------------------- the harness


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def arm(point: str) -> None:
    """In the child: make the process SIGKILL itself at ``point`` (module docstring)."""
    kind, _, rest = point.partition(":")
    counts: Counter = Counter()
    if kind == "step":
        import cnnlab.train as train_module

        real_check, n = train_module.stop_requested, int(rest)

        def check():
            counts["step"] += 1
            if counts["step"] == n:
                _kill()
            return real_check()

        train_module.stop_requested = check
        return
    target, n = rest.rsplit(":", 1)
    n = int(n)
    real_replace, real_atomic_path = os.replace, files.atomic_path

    def replace(src, dst, *a, **k):
        if Path(dst).name == target:
            counts[target] += 1
            if counts[target] == n and kind == "written":
                _kill()
            real_replace(src, dst, *a, **k)
            if counts[target] == n and kind == "renamed":
                _kill()
            return
        real_replace(src, dst, *a, **k)

    @contextmanager
    def atomic_path(path):
        with real_atomic_path(path) as tmp:
            yield tmp
            if kind == "torn" and Path(path).name == target and counts[target] == n - 1:
                size = tmp.stat().st_size  # a write cut off half way
                with open(tmp, "r+b") as f:
                    f.truncate(size // 2)
                _kill()

    os.replace = replace
    files.atomic_path = atomic_path


def in_child(body) -> int:
    """Run ``body()`` in a forked child; returns the signal that ended it (negative) or its exit status."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            body()
        except BaseException:  # noqa: BLE001
            traceback.print_exc()
            code = 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def train_killed(cfg: TrainConfig, point: str) -> int:
    from cnnlab.train import train

    def body():
        arm(point)
        train(cfg)

    return in_child(body)


def check_readable(run_dir: Path) -> None:
    """Whatever a kill left must read back whole: JSON, checkpoints (checksum), weights."""
    for p in run_dir.iterdir():
        if p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".pt":
            load_checkpoint(p)
        elif p.suffix == ".safetensors":
            load_weights(p)
        elif p.name == runs.METRICS:
            assert all(isinstance(json.loads(line), dict) for line in p.read_text().splitlines())


def strip(rows_or_summary):
    if isinstance(rows_or_summary, list):
        return [strip(r) for r in rows_or_summary]
    return {k: v for k, v in rows_or_summary.items() if k not in TIMING}


def outcome(run_dir: Path) -> tuple:
    """What must be equal after resume: metrics rows, summary and final weights (timing aside)."""
    weights = load_weights(run_dir / runs.WEIGHTS)
    return (strip(runs.read_metrics(run_dir)), strip(runs.read_json(run_dir / runs.SUMMARY)),
            {k: v.tolist() for k, v in weights.items()})


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run, and the names of the files it writes, in order (os.replace targets)."""
    from cnnlab.train import train

    out = tmp_path_factory.mktemp("faults")
    writes: list[str] = []
    real_replace = os.replace

    def replace(src, dst, *a, **k):
        writes.append(Path(dst).name)
        return real_replace(src, dst, *a, **k)

    os.replace = replace
    try:
        with pytest.MonkeyPatch.context() as mp:
            from cnnlab import plots

            mp.setattr(plots, "save_figure", lambda fig, path, dpi=100, tight=False: (
                files.atomic_write_bytes(path, b"\x89PNG stand-in"), plots.pyplot().close(fig)))
            train(config(out, "reference"))
    finally:
        os.replace = real_replace
    return out, writes, outcome(out / "reference")


def kill_points(writes: list[str], steps: int) -> list[str]:
    if SWEEP:
        seen: Counter = Counter()
        points = [f"step:{i}" for i in range(1, steps + 1)]
        for name in writes:
            seen[name] += 1
            points += [f"{kind}:{name}:{seen[name]}" for kind in ("torn", "written", "renamed")]
        return points
    # the short default: one point of each kind, on the files that matter most
    return ["step:6", "torn:checkpoint.pt:2", "renamed:checkpoint.pt:2", "written:model.safetensors:1",
            "torn:summary.json:1"]


DEFAULT_POINTS = 5


@posix_only
@pytest.mark.parametrize("case", range(DEFAULT_POINTS))
def test_killed_run_resumes_to_the_uninterrupted_result(reference, case):
    from cnnlab.train import train

    out, writes, expected = reference
    point = kill_points(writes, 12)[case]
    name = f"killed-{case}"
    cfg = config(out, name)
    status = train_killed(cfg, point)
    assert status == -signal.SIGKILL, f"{point}: the kill point was never reached (exit {status})"
    run_dir = out / name
    check_readable(run_dir)
    train(cfg, resume=True)
    assert outcome(run_dir) == expected, point
    left = [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp") or p.name == ".lock"]
    assert not left, f"{point}: left behind {left}"


@posix_only
@pytest.mark.faults_sweep
@pytest.mark.skipif(not SWEEP, reason="the full kill sweep runs with CNNLAB_FAULT_SWEEP=1")
def test_kill_sweep(reference, capsys):
    """Every step and every write of every file, each x torn/written/renamed (docs/reliability.md)."""
    from cnnlab.train import train

    out, writes, expected = reference
    points = kill_points(writes, 12)
    equal, unreached = 0, []
    for i, point in enumerate(points):
        cfg = config(out, f"sweep-{i}")
        if train_killed(cfg, point) != -signal.SIGKILL:
            unreached.append(point)
            continue
        check_readable(out / cfg.name)
        train(cfg, resume=True)
        assert outcome(out / cfg.name) == expected, point
        equal += 1
    with capsys.disabled():
        print(f"\nkill sweep: {len(points)} kill points, {equal} killed and equal after resume, "
              f"unreached: {unreached}")
    assert not unreached


@posix_only
def test_a_study_killed_mid_run_finishes_as_if_uninterrupted(tmp_path):
    """A study killed while its second run writes a checkpoint: rerunning it resumes that run, keeps the
    finished one, and every run ends as in an uninterrupted study."""
    from cnnlab import study

    def spec():
        base = config(tmp_path, "x").to_dict()
        base = {k: base[k] for k in ("data", "data_options", "model", "model_options", "epochs", "batch_size",
                                      "lr", "dropout", "threads", "precision", "progress")}
        return study.parse_spec({"name": "faults", "base": base, "grid": {"lr": [0.05, 0.1]}})

    def run(out):
        return study.run_study(spec(), "full", out=out, log=lambda *a: None)

    whole = run(tmp_path / "whole")
    status = in_child(lambda: (arm("renamed:checkpoint.pt:5"), run(tmp_path / "killed")))
    assert status == -signal.SIGKILL
    resumed = run(tmp_path / "killed")
    plan_runs = sorted(p.name for p in (tmp_path / "whole").rglob(runs.SUMMARY))
    assert plan_runs and plan_runs == sorted(p.name for p in (tmp_path / "killed").rglob(runs.SUMMARY))
    for a in (tmp_path / "whole").rglob(runs.SUMMARY):
        b = tmp_path / "killed" / a.relative_to(tmp_path / "whole")
        assert outcome(a.parent) == outcome(b.parent), a.parent.name
    assert type(whole) is type(resumed)


# ------------------------------------------------------------------------------- signals


@posix_only
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_sigterm_and_ctrl_c_stop_at_a_step_boundary_with_a_resume_hint(reference, tmp_path, capfd, signum, code):
    """The signal arrives in epoch 2 (step 6): the run stops before the next step, keeps the epoch-1
    checkpoint, says how to resume and exits 130 (Ctrl-C) or 143 (SIGTERM); the resumed run equals an
    uninterrupted one."""
    from cnnlab import cli
    from cnnlab.train import train

    cfg = config(tmp_path, "signalled")
    argv = ["train", "--data", "synthetic", "--data-options", "train_size=128", "test_size=64", "size=8",
            "--model", "mlp", "--model-options", "hidden=[16]", "--epochs", "3", "-b", "32", "--lr", "0.05",
            "--dropout", "0.1", "--out", str(tmp_path), "--name", "signalled", "--no-progress", "--threads", "1",
            "--precision", "fp32"]

    def body():
        import cnnlab.train as train_module

        real_check, count = train_module.stop_requested, Counter()

        def check():
            count["step"] += 1
            if count["step"] == 6:
                os.kill(os.getpid(), signum)
            return real_check()

        train_module.stop_requested = check
        os._exit(cli.main(argv))

    assert in_child(body) == code
    err = capfd.readouterr().err
    assert f"stopped by {signal.Signals(signum).name} during epoch 2; the checkpoint after epoch 1 is kept" in err
    assert f"cnnlab train --resume {tmp_path / 'signalled'}" in err and "Traceback" not in err
    assert load_checkpoint(tmp_path / "signalled" / runs.CHECKPOINT)["state"]["epoch"] == 1
    train(cfg, resume=True)
    assert outcome(tmp_path / "signalled") == reference[2]  # as if never signalled
