"""The `cnnlab` command through a subprocess: every subcommand, config files, resume and error paths."""
import json
import subprocess
import sys

import pytest
from PIL import Image

from cnnlab.errors import CnnlabError


def cnnlab(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "cnnlab", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


TINY = ["--data", "synthetic", "--model", "fastnet", "--model-options", "widths=[8,8,16]", "-b", "64",
        "--threads", "1", "--precision", "fp32"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    r = cnnlab("train", *TINY, "--epochs", "2", "--out", out, "--name", "tiny", "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["epochs"] == 2
    return out / "tiny"


@pytest.mark.parametrize("command", ["train", "eval", "predict", "models", "datasets", "lr-find"])
def test_help(command):
    r = cnnlab(command, "--help")
    assert r.returncode == 0 and "usage" in r.stdout


def test_eval_prints_all_metrics(trained_run):
    r = cnnlab("eval", trained_run, "--json")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    for key in ("acc", "top5", "nll", "precision", "recall", "f1", "bep", "per_class", "confusion"):
        assert key in m
    assert (trained_run / "eval.json").is_file() and (trained_run / "eval-confusion.png").is_file()
    r = cnnlab("eval", trained_run, "--tta", "flip")
    assert r.returncode == 0 and "confusion" in r.stdout


def test_predict_files_and_folders(trained_run, tmp_path):
    from cnnlab.data import load_dataset

    ds = load_dataset("synthetic")
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(ds.test_images[i, 0].numpy()).save(folder / f"{i}.png")
    r = cnnlab("predict", trained_run, folder / "0.png", folder, "-k", "2", "--json")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(lines) == 4 and all(len(x["top"]) == 2 for x in lines)
    assert all(abs(sum(p["probability"] for p in x["top"])) <= 1.0001 for x in lines)
    ok = sum(x["top"][0]["class"] == ds.classes[int(ds.test_labels[int(x["file"][-5])])] for x in lines[1:])
    assert ok >= 2


def test_config_file_with_flag_override(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: synthetic\nmodel: mlp\nepochs: 5\nlr: 0.01\nthreads: 1\nmodel_options: {hidden: [32]}\n")
    r = cnnlab("train", "--config", cfg, "--epochs", "1", "--out", tmp_path, "--name", "c", "--no-progress")
    assert r.returncode == 0, r.stderr
    import yaml

    saved = yaml.safe_load((tmp_path / "c" / "config.yaml").read_text())
    assert saved["epochs"] == 1 and saved["lr"] == 0.01 and saved["model"] == "mlp"


def test_resume_continues_interrupted_run(tmp_path):
    r = cnnlab("train", *TINY, "--epochs", "1", "--out", tmp_path, "--name", "r", "--no-progress")
    assert r.returncode == 0, r.stderr
    (tmp_path / "r" / "summary.json").unlink()  # as if killed before finishing
    r = cnnlab("train", "--resume", tmp_path / "r", "--epochs", "2")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["epochs"] == 2
    r = cnnlab("train", "--resume", tmp_path / "r", "--lr", "9")
    assert r.returncode == 2 and "--lr" in r.stderr


@pytest.mark.parametrize("args, expected", [
    (["train", "--bogus"], "unrecognized arguments: --bogus"),
    (["train", "--model", "resnet9000"], "unknown model 'resnet9000'"),
    (["train", "--data", "imagenet22k"], "unknown dataset 'imagenet22k'"),
    (["train", "--epochs", "-1"], "epochs must be > 0"),
    (["train", "--batch-size", "many"], "invalid int value"),
    (["train", "--opt", "adamm"], "unknown optimizer 'adamm'"),
    (["train", "--sched", "zigzag"], "unknown schedule 'zigzag'"),
    (["train", "--config", "no/such.yaml"], "no/such.yaml: config file not found"),
    (["train", "--data", "folder", "--data-dir", "no/such/dir"], "no/such/dir"),
    (["train", "--data", "mnist", "--data-dir", "{tmp}", "--no-download"], "mnist"),
    (["train", "--data", "synthetic", "--model", "mlp", "--model-options", "colour=1"], "no option 'colour'"),
    (["train", "--data", "digits", "--model", "lenet5"], "needs each input side >= 16, got 8"),
    (["train", "--data", "digits", "--precision", "fp8"], "precision must be one of"),
    (["eval", "no/such/run"], "no/such/run: run folder not found"),
    (["predict", "no/such/run", "x.png"], "no/such/run: run folder not found"),
    (["models", "--info", "nonet"], "unknown model 'nonet'"),
])
def test_errors_are_one_clear_line(tmp_path, args, expected):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    r = cnnlab(*args, "--out", tmp_path) if args[0] == "train" else cnnlab(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert expected in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_wrong_channels_for_eval(trained_run):
    r = cnnlab("eval", trained_run, "--data", "digits")
    assert r.returncode == 2 and "takes" in r.stderr


def test_predict_unreadable_image(trained_run, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    r = cnnlab("predict", trained_run, bad)
    assert r.returncode == 2 and "bad.png" in r.stderr and "Traceback" not in r.stderr


def test_models_and_datasets_listings():
    r = cnnlab("models")
    assert r.returncode == 0 and "fastnet" in r.stdout and "mnist-example" in r.stdout
    r = cnnlab("models", "--info", "lenet5", "--input", "1x28x28")
    assert r.returncode == 0 and ("431,080" in r.stdout or "431080" in r.stdout)
    r = cnnlab("datasets")
    assert r.returncode == 0
    for name in ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "folder", "synthetic"):
        assert name in r.stdout


def test_predict_skips_unreadable_images_found_in_folders(trained_run, tmp_path):
    from cnnlab.data import load_dataset

    ds = load_dataset("synthetic")
    Image.fromarray(ds.test_images[0, 0].numpy()).save(tmp_path / "good.png")
    (tmp_path / "broken.png").write_text("not an image")
    r = cnnlab("predict", trained_run, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "good.png" in r.stdout and "broken.png" not in r.stdout
    assert "warning: skipped" in r.stderr and "broken.png" in r.stderr


def test_config_file_options_merge_with_flags_whatever_the_key_spelling(tmp_path):
    from cnnlab.cli import _config_from_args, build_parser

    (tmp_path / "c.yaml").write_text("model-options:\n  widths: [8, 8]\nbatch-size: 32\n")
    args = build_parser().parse_args(["train", "--config", str(tmp_path / "c.yaml"), "--model-options", "stem=conv"])
    cfg = _config_from_args(args)
    assert cfg.model_options == {"widths": [8, 8], "stem": "conv"} and cfg.batch_size == 32


def test_resume_refuses_a_second_config_file(tmp_path):
    from cnnlab.cli import _config_from_args, build_parser

    args = build_parser().parse_args(["train", "--resume", str(tmp_path), "--config", str(tmp_path / "c.yaml")])
    with pytest.raises(CnnlabError, match="--config cannot be combined with --resume"):
        _config_from_args(args)
