"""Hostile-user findings, one test each, most severe first (the promises are in docs/reliability.md).

Each was a traceback, a hang or a silent wrong result; each must now be a one-line CnnlabError
naming the flag, field or file (CLI exit 2) or a clean recovery. Crash consistency under SIGKILL
and signals is tested in test_faults.py, hostile inputs in test_security.py and test_fuzz.py.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import stat
from pathlib import Path

import pytest
import torch

from cnnlab import cli, runs
from cnnlab.checkpoint import load_checkpoint
from cnnlab.config import TrainConfig
from cnnlab.errors import CnnlabError
from cnnlab.lock import LOCK, RunLock

SMALL = dict(data="synthetic", data_options={"train_size": 128, "test_size": 64, "size": 8}, model="mlp",
             model_options={"hidden": [16]}, epochs=2, batch_size=32, lr=0.05, progress=False, threads=1,
             precision="fp32")


def small(out: Path, name: str = "run", **changes) -> TrainConfig:
    return TrainConfig.from_dict({**SMALL, "out": str(out), "name": name, **changes})


@pytest.fixture(autouse=True)
def quick_plots(monkeypatch):
    from cnnlab import files, plots

    def save_figure(fig, path, dpi=100, tight=False):
        files.atomic_write_bytes(path, b"\x89PNG stand-in")
        plots.pyplot().close(fig)

    monkeypatch.setattr(plots, "save_figure", save_figure)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished 2-epoch run, trained once; tests work on copies."""
    from cnnlab.train import train

    out = tmp_path_factory.mktemp("reliability")
    with pytest.MonkeyPatch.context() as mp:
        from cnnlab import files, plots

        mp.setattr(plots, "save_figure", lambda fig, path, dpi=100, tight=False: (
            files.atomic_write_bytes(path, b"\x89PNG stand-in"), plots.pyplot().close(fig)))
        train(small(out, "finished"))
    return out / "finished"


def copy_of(run: Path, tmp_path: Path, unfinish: bool = True) -> Path:
    """A copy of ``run``, made unfinished (as if stopped after its last checkpoint) by default."""
    dest = tmp_path / "runs" / "copy"
    shutil.copytree(run, dest)
    if unfinish:
        (dest / runs.SUMMARY).unlink()
    return dest


def cli_error(capsys, *argv) -> str:
    """Run the CLI, expect exit 2 and exactly one error line (no traceback); return that line."""
    assert cli.main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and err.count("\n") == 0, err
    return err


# --------------------------------------------------------------------- 1. two runs, one folder


def test_a_second_run_given_the_same_name_is_refused_while_the_first_holds_the_folder(tmp_path):
    from cnnlab.train import train

    folder = tmp_path / "runs" / "run"
    folder.mkdir(parents=True)
    with RunLock.acquire(folder):  # the first run, still training
        with pytest.raises(CnnlabError, match=r"in use by another cnnlab process \(pid \d+"):
            train(small(tmp_path / "runs"))
        with pytest.raises(CnnlabError, match="in use"):
            train(small(tmp_path / "runs"), resume=True)
    assert sorted(os.listdir(folder)) == []  # the refused runs wrote nothing, the lock went with its owner


def test_a_dead_owners_lock_is_stale_and_taken_over(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / LOCK).write_text("pid 999999 on elsewhere since 2026-01-01 00:00:00\n")  # no live flock behind it
    lock = RunLock.acquire(folder)
    assert lock.stale_owner.startswith("pid 999999") and str(os.getpid()) in (folder / LOCK).read_text()
    lock.release()
    assert not (folder / LOCK).exists()


def test_the_lock_holds_across_processes(tmp_path):
    """A child process holds the lock; this process is refused until the child exits (even by SIGKILL)."""
    folder = tmp_path / "run"
    folder.mkdir()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            RunLock.acquire(folder)
            os.write(w, b"x")
            signal.pause()  # held until killed
        finally:
            os._exit(0)
    os.read(r, 1)
    with pytest.raises(CnnlabError, match=f"pid {pid} "):
        RunLock.acquire(folder)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    RunLock.acquire(folder).release()  # the kernel dropped the dead child's lock


# --------------------------------------------------------------------- 2. and 7. metrics rows and resume


def test_rows_lost_after_the_checkpoint_come_back_on_resume(finished, tmp_path):
    from cnnlab.train import train

    run = copy_of(finished, tmp_path)
    rows = runs.read_metrics(run)
    (run / runs.METRICS).write_text(json.dumps(rows[0]) + "\n")  # a crash before epoch 2's row was appended
    with pytest.warns(UserWarning, match="rewritten from the checkpoint"):
        train(small(tmp_path / "runs", "copy"), resume=True)
    assert runs.read_metrics(run) == rows


def test_a_deleted_or_damaged_metrics_file_is_restored_from_the_checkpoint(finished, tmp_path):
    from cnnlab.train import train

    run = copy_of(finished, tmp_path)
    rows = runs.read_metrics(run)
    (run / runs.METRICS).write_text("{not json\n" + "".join(json.dumps(r) + "\n" for r in rows[1:]))
    with pytest.warns(UserWarning):
        train(small(tmp_path / "runs", "copy"), resume=True)
    assert runs.read_metrics(run) == rows
    (run / runs.SUMMARY).unlink()
    (run / runs.METRICS).unlink()
    with pytest.warns(UserWarning, match="held 0 of the 2 rows"):
        train(small(tmp_path / "runs", "copy"), resume=True)
    assert runs.read_metrics(run) == rows


# --------------------------------------------------------------------- 3. --clip-grad -1


@pytest.mark.parametrize("flag", [["--clip-grad", "-1"], ["--clip-grad", "0"]])
def test_a_negative_or_zero_clip_grad_is_refused(capsys, tmp_path, flag):
    err = cli_error(capsys, "train", "--out", tmp_path, *flag)
    assert "clip_grad must be > 0" in err
    assert not (tmp_path / "runs").exists() and os.listdir(tmp_path) == []


# --------------------------------------------------------------------- 4. config.yaml on resume


@pytest.mark.parametrize("edit, expected", [
    (lambda text: "", "empty"),
    (lambda text: text.replace("lr: 0.05", "lr: 0.3"), "lr 0.3 (checkpoint: 0.05)"),
    (lambda text: text.replace("batch_size: 32", "batch_size: 100000"), "batch_size 100000 (checkpoint: 32)"),
    (lambda text: text.replace("model: mlp", "model: lenet5"), "model 'lenet5'"),
])
def test_resume_checks_config_yaml_against_the_checkpoint(finished, tmp_path, capsys, edit, expected):
    run = copy_of(finished, tmp_path)
    config = run / runs.CONFIG
    config.write_text(edit(config.read_text()))
    err = cli_error(capsys, "train", "--resume", run)
    assert str(config) in err and expected in err


def test_config_yaml_is_written_atomically_with_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        small(tmp_path).to_yaml(tmp_path / "config.yaml")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "config.yaml").stat().st_mode) == 0o640
    assert os.listdir(tmp_path) == ["config.yaml"]


# --------------------------------------------------------------------- 5. symlink loops in a folder dataset


def test_symlink_loops_and_duplicates_in_a_folder_dataset(tmp_path):
    from PIL import Image

    from cnnlab.data.folder import load_folder

    for c in "ab":
        (tmp_path / c).mkdir()
        for i in range(6):
            Image.new("L", (8, 8), 40 * i).save(tmp_path / c / f"{i}.png")
    (tmp_path / "a" / "loop").symlink_to("..")  # the whole dataset again, inside class a
    (tmp_path / "a" / "self").symlink_to(".")
    (tmp_path / "b" / "other").symlink_to("../a")  # class a's images filed under b
    (tmp_path / "a" / "twice.png").symlink_to("../b/0.png")  # one image in two classes
    ds = load_folder(tmp_path, size=8)  # used to hang (two loops) or make 394 images of 12
    assert len(ds.train_labels) + len(ds.test_labels) == 12 and ds.classes == ["a", "b"]
    files = ds.extra["train_files"] + ds.extra["test_files"]
    assert len({os.path.realpath(f) for f in files}) == 12


def test_a_class_folder_name_that_is_not_utf8_is_a_clear_error(tmp_path):
    from PIL import Image

    from cnnlab.data.folder import load_folder

    for name in (b"ok", b"caf\xe9"):
        d = os.path.join(os.fsencode(tmp_path), name)
        os.mkdir(d)
        for i in range(2):
            Image.new("L", (8, 8), 0).save(os.fsdecode(os.path.join(d, f"{i}.png".encode())))
    with pytest.raises(CnnlabError, match="not UTF-8"):
        load_folder(tmp_path, size=8)


# --------------------------------------------------------------------- 6. divergence


def test_a_diverging_run_stops_with_its_last_good_checkpoint(tmp_path):
    from cnnlab.train import train

    with pytest.raises(CnnlabError, match=r"training diverged: the loss of epoch \d+ is (nan|inf)"):
        train(small(tmp_path, lr=1e12, epochs=4, sched="constant", weight_decay=0))
    run = tmp_path / "run"
    assert not (run / runs.SUMMARY).exists() and not (run / runs.WEIGHTS).exists()  # never "finished" on NaN
    if (run / runs.CHECKPOINT).exists():  # the last good epoch's: finite weights, its rows finite
        ckpt = load_checkpoint(run / runs.CHECKPOINT)
        assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
        assert all(r["train_loss"] < float("inf") for r in runs.read_metrics(run))


# --------------------------------------------------------------------- 8. a study spec's figure


@pytest.mark.parametrize("image", ["/etc/passwd", "../outside.png", "link.png", "notes.txt"])
def test_a_spec_figure_must_be_an_image_inside_the_spec_folder(tmp_path, image):
    from cnnlab import study

    (tmp_path / "outside.png").write_bytes(b"secret")
    spec_dir = tmp_path / "spec"
    spec_dir.mkdir()
    (spec_dir / "link.png").symlink_to(tmp_path / "outside.png")
    (spec_dir / "notes.txt").write_text("x")
    (spec_dir / "s.yaml").write_text(f"name: s\nfigures:\n  - title: t\n    image: {image}\n")
    with pytest.raises(CnnlabError, match="figures\\[0\\].image"):
        study.load_spec(spec_dir / "s.yaml")


def test_a_spec_figure_inside_the_spec_folder_is_kept(tmp_path):
    from cnnlab import study

    (tmp_path / "fig.png").write_bytes(b"\x89PNG")
    (tmp_path / "s.yaml").write_text("name: s\nfigures:\n  - title: t\n    image: fig.png\n")
    assert study.load_spec(tmp_path / "s.yaml").figures[0].image == tmp_path / "fig.png"


# --------------------------------------------------------------------- 9. silent wrong results


def test_resume_of_a_finished_run_with_more_epochs_continues(finished, tmp_path):
    from cnnlab.train import train

    run = copy_of(finished, tmp_path, unfinish=False)
    same = train(small(tmp_path / "runs", "copy"), resume=True)  # nothing asked: its summary, nothing trained
    assert same["epochs"] == 2
    more = train(small(tmp_path / "runs", "copy", epochs=3), resume=True)
    assert more["epochs"] == 3 and [r["epoch"] for r in runs.read_metrics(run)] == [1, 2, 3]
    assert TrainConfig.from_yaml(run / runs.CONFIG).epochs == 3


def test_a_checkpoint_claiming_more_epochs_than_it_ran_is_refused(finished, tmp_path, capsys):
    run = copy_of(finished, tmp_path)
    ckpt = torch.load(run / runs.CHECKPOINT, weights_only=True)
    ckpt.pop("checksum")  # an edit that also dropped the checksum (with it, the file is named as damaged)
    ckpt["state"]["epoch"] = 99
    torch.save(ckpt, run / runs.CHECKPOINT)
    assert "inconsistent checkpoint (epoch 99 after 8 optimizer steps" in cli_error(capsys, "train", "--resume", run)


def test_eval_checks_class_names_and_keeps_the_runs_confusion_png(finished, tmp_path, capsys):
    run = copy_of(finished, tmp_path, unfinish=False)
    before = (run / runs.CONFUSION).read_bytes()
    assert cli.main(["eval", str(run)]) == 0
    assert (run / runs.CONFUSION).read_bytes() == before and (run / "eval-confusion.png").is_file()
    capsys.readouterr()
    meta = json.loads((run / runs.META).read_text())
    meta["classes"] = ["cat", "dog", "class2", "class3"]  # as many classes, other names
    (run / runs.META).write_text(json.dumps(meta))
    err = cli_error(capsys, "eval", run)
    assert "class 0 is 'class0' in the data, 'cat' in the model" in err


def test_an_empty_idx_test_split_is_an_error_not_zero_accuracy(tmp_path):
    import gzip
    import struct

    from cnnlab.data.idx import load_idx_dataset

    def idx(*dims, data=b""):
        return gzip.compress(struct.pack(f">HBB{len(dims)}I", 0, 8, len(dims), *dims) + data)

    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(idx(2, 28, 28, data=bytes(2 * 784)))
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(idx(2, data=b"\x00\x01"))
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(idx(0, 28, 28))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(idx(0))
    with pytest.raises(CnnlabError, match="t10k-images-idx3-ubyte.gz: contains no images"):
        load_idx_dataset("mnist", tmp_path, download=False)


# --------------------------------------------------------------------- 10. a huge study


def test_a_study_of_a_million_variants_is_refused_at_once():
    from cnnlab import study

    with pytest.raises(CnnlabError, match="1,000,000 variants; a study takes at most"):
        study.parse_spec({"grid": {"lr": list(range(1, 1001)), "seed": list(range(1000))}})
    with pytest.raises(CnnlabError, match="seed count"):
        study.parse_spec({"seeds": 10**9})


def test_the_dry_run_lists_and_measures_a_bounded_number_of_runs(tmp_path, monkeypatch):
    from cnnlab import study
    from cnnlab.study import estimate

    monkeypatch.setattr(estimate, "MAX_LISTED_RUNS", 3)
    spec = study.parse_spec({"base": {"data": "digits", "model": "mlp", "model_options": {"hidden": [8]}},
                             "grid": {"lr": [0.1, 0.2, 0.3, 0.4, 0.5]}})
    plan = study.plan_study(spec, "full", out=tmp_path, threads=1)
    lines: list[str] = []
    study.print_plan(plan, log=lines.append, measure=False)
    assert sum(ln.strip().startswith("lr=") for ln in lines) == 3
    assert any("and 2 more runs (not listed" in ln for ln in lines)


# --------------------------------------------------------------------- 11. tracebacks that are now one line


@pytest.mark.parametrize("damage, expected", [
    (lambda p: p.write_bytes(b""), "not a readable cnnlab checkpoint"),
    (lambda p: torch.save(torch.zeros(3), p), "holds a Tensor, not a dict"),
    (lambda p: torch.save({"model": {}}, p), "not a cnnlab training checkpoint (missing optimizer"),
    (lambda p: _edit(p, lambda c: c["model"].update(x=torch.zeros(1))), "unexpected: x"),
    (lambda p: _edit(p, lambda c: c["model"].pop(next(iter(c["model"])))), "missing: "),
    (lambda p: _flip_a_byte(p), "damaged checkpoint (checksum mismatch"),
])
def test_a_damaged_or_foreign_checkpoint_is_named(finished, tmp_path, capsys, damage, expected):
    run = copy_of(finished, tmp_path)
    damage(run / runs.CHECKPOINT)
    err = cli_error(capsys, "train", "--resume", run)
    assert str(run / runs.CHECKPOINT) in err and expected in err, err


def _edit(path: Path, change) -> None:
    ckpt = torch.load(path, weights_only=True)
    ckpt.pop("checksum")
    change(ckpt)
    torch.save(ckpt, path)


def _flip_a_byte(path: Path) -> None:
    """One bit of a weight changed in place: torch.load reads it without complaint; the checksum does not."""
    ckpt = torch.load(path, weights_only=True)
    name = next(iter(ckpt["model"]))
    ckpt["model"][name].view(-1)[0] += 1.0
    torch.save(ckpt, path)  # keeps the old checksum


@pytest.mark.parametrize("argv, expected", [
    (["--sched", "step", "--sched-options", "gamma=abc"], "schedule 'step': bad options"),
    (["--epochs", "inf"], "epochs: expected float, got inf"),
    (["--threads", "-1"], "threads must be >= 1"),
    (["--eval-batch-size", "0"], "eval_batch_size must be >= 1"),
    (["--seed", "-1"], "seed must be in [0, 2**32)"),
    (["--seed", str(2**66)], "seed must be in [0, 2**32)"),
    (["--image-size", "1000000"], "--image-size 1000000: synthetic's 96 images would take"),
])
def test_bad_train_flags_are_one_line_and_leave_no_run_folder(tmp_path, capsys, argv, expected):
    quick = ["--data", "synthetic", "--data-options", "train_size=64", "test_size=32", "size=8", "--model", "mlp",
             "--model-options", "hidden=[8]"]
    err = cli_error(capsys, "train", "--out", tmp_path / "runs", "--name", "x", "--no-progress", *quick, *argv)
    assert expected in err
    assert not (tmp_path / "runs" / "x").exists()


def test_eval_and_predict_batch_size_must_be_positive(finished, capsys):
    for command in (["eval", finished], ["predict", finished, finished]):
        with pytest.raises(SystemExit) as e:
            cli.main([str(a) for a in command] + ["-b", "0"])
        assert e.value.code == 2 and "must be >= 1, got 0" in capsys.readouterr().err


def test_meta_json_without_classes_is_named(finished, tmp_path, capsys):
    run = copy_of(finished, tmp_path, unfinish=False)
    meta = json.loads((run / runs.META).read_text())
    del meta["classes"]
    (run / runs.META).write_text(json.dumps(meta))
    assert f"{run / runs.META}: field 'classes'" in cli_error(capsys, "eval", run)
    assert f"{run / runs.META}: field 'classes'" in cli_error(capsys, "predict", run, run / runs.CONFUSION)


def test_disk_full_while_saving_a_checkpoint_is_one_line_and_keeps_the_last_good_one(finished, tmp_path, capfd):
    """A real refused write: the file size limit (RLIMIT_FSIZE) makes the kernel fail torch.save's writes
    with EFBIG, as a full disk fails them with ENOSPC."""
    import resource

    run = copy_of(finished, tmp_path)
    (run / runs.METRICS).unlink()  # the resume rewrites it first: a small file, under the limit
    before = (run / runs.CHECKPOINT).read_bytes()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 3
        try:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an error return instead of a killing signal
            limit = len(before) // 2
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
            code = cli.main(["train", "--resume", str(run), "--epochs", "3"])
        except BaseException:  # noqa: BLE001
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    err = capfd.readouterr().err.strip().splitlines()
    assert os.WEXITSTATUS(status) == 2, err
    assert err[-1].startswith(f"cnnlab train: error: {run / runs.CHECKPOINT}: cannot write (") and \
        "Traceback" not in "\n".join(err)
    assert (run / runs.CHECKPOINT).read_bytes() == before
    assert not [p for p in os.listdir(run) if p.endswith(".tmp")]


def test_out_pointing_at_a_file_is_refused_before_training(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    err = cli_error(capsys, "train", "--out", tmp_path / "file", "--no-progress")
    assert f"--out {tmp_path / 'file'}: {tmp_path / 'file'} is a file, not a folder" in err
    err = cli_error(capsys, "train", "--out", tmp_path / "file" / "sub", "--no-progress")
    assert "is a file, not a folder" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_out_in_an_unwritable_folder_is_refused_before_training(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    assert "is not writable by this user" in cli_error(capsys, "train", "--out", ro / "runs", "--no-progress")


def test_predict_prints_file_names_that_are_not_utf8(finished, tmp_path, capsys):
    from PIL import Image

    from cnnlab.inference import predict_files

    folder = os.fsencode(tmp_path / "imgs")
    os.mkdir(folder)
    Image.new("L", (8, 8), 0).save(os.fsdecode(folder + b"/caf\xe9.png"))
    rows = predict_files(finished, [os.fsdecode(folder)], top_k=1, collect=True)
    assert rows[0]["file"].endswith("caf\\xe9.png")
    rows[0]["file"].encode("utf-8")  # printable under a strict UTF-8 stdout


# --------------------------------------------------------------------- 12. minor


def test_every_run_file_follows_the_umask(tmp_path):
    from cnnlab.train import train

    old = os.umask(0o027)
    try:
        train(small(tmp_path))
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "run").iterdir() if p.is_file()}
    odd = {name: oct(m) for name, m in modes.items() if m != 0o640}
    assert modes and not odd, odd


def test_weights_that_do_not_match_say_which(finished, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    run = copy_of(finished, tmp_path, unfinish=False)
    weights = load_file(run / runs.WEIGHTS)
    weights["extra.weight"] = torch.zeros(1)
    save_file(weights, run / runs.WEIGHTS)
    assert "unexpected: extra.weight" in cli_error(capsys, "eval", run)
