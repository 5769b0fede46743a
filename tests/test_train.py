"""The training engine end to end: accuracy on real data, run folder contents, resume equivalence."""
import json

import pytest
import torch

from cnnlab import runs
from cnnlab.checkpoint import load_checkpoint
from cnnlab.errors import CnnlabError
from cnnlab.device import resolve_precision
from cnnlab.train import train

TIMING_KEYS = {"images_per_second", "epoch_seconds", "elapsed"}


def _strip_timing(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def test_digits_reaches_95_percent(tiny_config):
    cfg = tiny_config(data="digits", model="fastnet", model_options={}, epochs=8, batch_size=64, lr=0.05,
                      precision="auto")
    summary = train(cfg)
    assert summary["test_acc"] >= 0.95, summary
    run_dir = runs.check_run_dir(summary["run_dir"])
    for name in (runs.CONFIG, runs.META, runs.METRICS, runs.SUMMARY, runs.CURVES, runs.CONFUSION, runs.CHECKPOINT,
                 runs.WEIGHTS, runs.BEST_WEIGHTS, runs.SPLIT):
        assert (run_dir / name).is_file(), name
    on_disk = json.loads((run_dir / runs.SUMMARY).read_text())
    for key in ("test_acc", "best_val_acc", "best_epoch", "splits", "epochs", "train_seconds", "images_per_second",
                "model", "dataset"):
        assert key in on_disk
    assert "best_test_acc" not in on_disk  # nothing called test is chosen on test
    rows = runs.read_metrics(run_dir)
    assert [r["epoch"] for r in rows] == list(range(1, 9))
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "images_per_second", "elapsed"):
        assert key in rows[0]
    assert not any(k.startswith("test_") for r in rows for k in r)  # the test split is not evaluated per epoch
    best = max(rows, key=lambda r: r["val_acc"])  # the first epoch reaching the best validation accuracy
    assert summary["best_epoch"] == best["epoch"] and summary["best_val_acc"] == best["val_acc"]


def test_checkpoint_loads_weights_only(tiny_config):
    summary = train(tiny_config(epochs=1))
    ckpt = load_checkpoint(f"{summary['run_dir']}/{runs.CHECKPOINT}")  # uses torch.load(weights_only=True)
    assert {"model", "optimizer", "scheduler", "ema", "state", "rng", "config"} <= set(ckpt)
    assert ckpt["state"]["epoch"] == 1 and ckpt["state"]["step"] > 0


class Crash(Exception):
    pass


@pytest.mark.parametrize("extra", [{}, {"ema": 0.9, "crop_padding": 2, "flip": True, "dropout": 0.1},
                                   {"mixup": 0.2, "cutmix": 1.0, "policy": "randaugment", "color_jitter": 0.2,
                                    "resized_crop": 0.5, "erase": 0.25, "accum_steps": 2, "patience": 5}])
def test_resume_after_crash_matches_uninterrupted_run(tiny_config, extra):
    full = train(tiny_config(name="full", epochs=4, **extra))

    def crash_after_epoch_2(row):
        if row["epoch"] == 2:
            raise Crash

    cfg = tiny_config(name="crashed", epochs=4, **extra)
    with pytest.raises(Crash):
        train(cfg, on_epoch=crash_after_epoch_2)
    assert not (runs.Path(cfg.out) / "crashed" / runs.SUMMARY).exists()
    resumed = train(tiny_config(name="crashed", epochs=4, **extra), resume=True)

    a = runs.read_metrics(runs.Path(full["run_dir"]))
    b = runs.read_metrics(runs.Path(resumed["run_dir"]))
    assert _strip_timing(a) == _strip_timing(b)
    assert resumed["test_acc"] == full["test_acc"] and resumed["nll"] == pytest.approx(full["nll"], abs=0)
    wa = torch.load(f"{full['run_dir']}/{runs.CHECKPOINT}", weights_only=True)["model"]
    wb = torch.load(f"{resumed['run_dir']}/{runs.CHECKPOINT}", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_existing_run_folder_is_never_overwritten(tiny_config):
    train(tiny_config(epochs=1))
    before = (runs.Path(tiny_config().out) / "run" / runs.SUMMARY).read_bytes()
    with pytest.raises(CnnlabError, match="already exists"):
        train(tiny_config(epochs=1))
    assert (runs.Path(tiny_config().out) / "run" / runs.SUMMARY).read_bytes() == before


def test_resume_of_finished_run_returns_its_summary(tiny_config):
    first = train(tiny_config(epochs=1))
    assert train(tiny_config(epochs=1), resume=True) == first


def test_target_accuracy_stops_early(tiny_config):
    summary = train(tiny_config(epochs=20, target_acc=50))
    assert summary["reached_target"] is not None
    assert summary["epochs"] < 20
    rows = runs.read_metrics(runs.Path(summary["run_dir"]))
    assert rows[-1]["val_acc"] >= 0.5 and all(r["val_acc"] < 0.5 for r in rows[:-1])  # followed validation


def test_seeded_runs_repeat(tiny_config):
    a = train(tiny_config(name="a", epochs=2))
    b = train(tiny_config(name="b", epochs=2))
    assert _strip_timing(runs.read_metrics(runs.Path(a["run_dir"]))) == \
        _strip_timing(runs.read_metrics(runs.Path(b["run_dir"])))


def test_fractional_epochs_and_options(tiny_config):
    summary = train(tiny_config(epochs=1.5, label_smoothing=0.1, clip_grad=1.0, opt="adamw", lr=1e-3, sched="cosine",
                                warmup_epochs=0.5, tta="flip"))
    assert summary["epochs"] == 2
    steps_per_epoch = 8  # 512 images / 64
    assert summary["steps"] == 12 == round(1.5 * steps_per_epoch)


def test_bf16_on_cpu_learns(tiny_config):
    summary = train(tiny_config(precision="bf16", epochs=3))
    assert summary["dtype"] == "bf16" and summary["test_acc"] > 0.5


def test_auto_precision_is_fp32_or_bf16_on_cpu():
    assert resolve_precision("auto", torch.device("cpu")) in ("fp32", "bf16")
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"


def test_model_that_cannot_take_the_input_is_a_clear_error(tiny_config):
    with pytest.raises(CnnlabError, match="lenet5"):
        train(tiny_config(model="lenet5", model_options={}, data="digits"))  # 8x8 is too small for two 5x5 convs


def test_image_size_resizes_once(tiny_config):
    summary = train(tiny_config(data="digits", image_size=16, epochs=1, model="mlp", model_options={}))
    meta = json.loads((runs.Path(summary["run_dir"]) / runs.META).read_text())
    assert meta["image_size"] == 16


def test_train_never_changes_its_config_argument(tiny_config):
    cfg = tiny_config(epochs=1, name=None)
    before = cfg.to_dict()
    summary = train(cfg)
    assert cfg.to_dict() == before and cfg.name is None
    assert runs.Path(summary["run_dir"]).name.startswith("synthetic-fastnet-")
