"""Honest model selection: the validation split, run length, best checkpoint, early stopping,
--weights, and the summary naming the split of every figure."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab import runs
from cnnlab.config import TrainConfig
from cnnlab.data.prepare import prepare_data
from cnnlab.data.split import validation_indices
from cnnlab.errors import CnnlabError
from cnnlab.objectives import register_objective
from cnnlab.objectives.classify import Classify
from cnnlab.selection import Selector, run_length
from cnnlab.state import Progress
from cnnlab.train import train

# validation accuracies the scripted objective reports, epoch by epoch: best at epoch 2, then no improvement
SCRIPT = [0.5, 0.9, 0.6, 0.7, 0.8, 0.85]


@register_objective("test-scripted-val")
class ScriptedVal(Classify):
    """Classify, but the per-epoch accuracy follows SCRIPT (the test split at the end is measured)."""

    calls = 0

    def evaluate(self, model, images, labels, setup):
        metrics = super().evaluate(model, images, labels, setup)
        metrics["test_acc"] = SCRIPT[min(self.calls, len(SCRIPT) - 1)]
        self.calls += 1
        return metrics


def make_folder(root, classes=3, per_class=10, side=8, seed=0):
    rng = np.random.default_rng(seed)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(60 + 70 * c, 20, (side, side)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"c{c}" / f"{i}.png")
    return root


def test_validation_split_is_stratified_seeded_and_never_overlaps_test(tmp_path):
    root = make_folder(tmp_path / "imgs")
    cfg = dict(data="folder", data_dir=str(root), image_size=8, channels=1, val_split=0.25, seed=1)
    ds = prepare_data(TrainConfig.from_dict(cfg))
    val = set(ds.extra["validation"]["files"])
    train_files, test_files = set(ds.extra["train_files"]), set(ds.extra["test_files"])
    assert val and not val & test_files and not val & train_files and not train_files & test_files
    assert len(val) + len(train_files) + len(test_files) == 30
    assert sorted(ds.val_labels.tolist()) == [0, 0, 1, 1, 2, 2]  # 8 training images a class -> round(2.0)
    again = prepare_data(TrainConfig.from_dict(cfg))
    other = prepare_data(TrainConfig.from_dict({**cfg, "seed": 2}))
    assert set(again.extra["validation"]["files"]) == val and set(other.extra["validation"]["files"]) != val
    # a class with a single image keeps it for training; two images give one to validation
    labels = torch.tensor([0, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2])
    idx = validation_indices(labels, 0.1, seed=0)
    assert sorted(labels[idx].tolist()) == [1, 2]


def test_small_folder_trains_with_the_defaults_and_the_start_line_says_the_length(tmp_path, capsys):
    root = make_folder(tmp_path / "imgs", classes=2, per_class=4)  # 1 test, 1 val and 2 train images a class
    summary = train(TrainConfig.from_dict(dict(data="folder", data_dir=str(root), image_size=8, channels=1,
                                               model="fastnet", model_options={"widths": [4, 4, 8]}, min_steps=12,
                                               out=str(tmp_path / "runs"), name="small", threads=1, save_every=50,
                                               progress=False)))
    out = capsys.readouterr().out
    assert "run length: 12 epochs (auto: 10 epochs would be only 10 optimizer steps" in out
    assert summary["steps"] == 12 and summary["epochs"] == 12
    record = json.loads((tmp_path / "runs" / "small" / runs.SPLIT).read_text())
    assert record["sizes"] == {"train": 4, "val": 2, "test": 2}


def test_run_length_by_steps_epochs_or_minimum():
    cfg = TrainConfig()
    assert run_length(cfg.replace(steps=25), 10)[:2] == (25, 3)
    assert run_length(cfg.replace(epochs=2.5), 10)[:2] == (25, 3)
    assert run_length(cfg, 100)[:2] == (1000, 10)  # 10 epochs are already more than --min-steps
    total, epochs, text = run_length(cfg, 3)
    assert (total, epochs) == (501, 167) and "auto" in text
    with pytest.raises(CnnlabError, match="--steps and --epochs"):
        train(cfg.replace(steps=5, epochs=1))


def test_best_checkpoint_early_stopping_and_weights_choice(tiny_config, capsys):
    ScriptedVal.calls = 0
    summary = train(tiny_config(objective="test-scripted-val", epochs=6, patience=3))
    run_dir = runs.Path(summary["run_dir"])
    rows = runs.read_metrics(run_dir)
    assert [r["val_acc"] for r in rows] == SCRIPT[:5]  # epoch 5 is the third without improvement: stop
    sel = summary["selection"]
    assert (sel["best_epoch"], sel["stopped_early_at"], sel["tested_weights"]) == (2, 5, "best")
    assert summary["best_val_acc"] == 0.9 and summary["epochs"] == 5
    assert "test split, evaluated once, weights of epoch 2" in " ".join(summary["splits"].values())
    best = runs.Path(run_dir / runs.BEST_WEIGHTS)
    from cnnlab.checkpoint import load_weights

    a, b = load_weights(best), load_weights(run_dir / runs.WEIGHTS)
    assert any(not torch.equal(a[k], b[k]) for k in a)  # best (epoch 2) differs from last (epoch 5)
    assert (run_dir / runs.METRICS_CSV).read_text().splitlines()[0].startswith("epoch,")
    # eval: auto = best (what the summary's test figures come from); last/final = the last epoch
    from cnnlab.inference import evaluate_run

    capsys.readouterr()
    assert evaluate_run(run_dir, device="cpu")["acc"] == pytest.approx(summary["test_acc"])
    last = evaluate_run(run_dir, device="cpu", weights="final", output="final")
    assert "acc" in last


def test_selection_state_survives_a_resume():
    sel, progress = Selector("val_loss", patience=2, min_delta=0.01), Progress()
    for epoch, loss in enumerate([1.0, 0.995, 0.8], 1):
        sel.observe({"epoch": epoch, "val_loss": loss}, progress)
    assert (progress.best_epoch, progress.best_value, progress.bad_evals) == (3, 0.8, 0)
    restored = Progress()
    restored.load_state_dict(progress.state_dict())
    assert restored == progress


def test_without_a_validation_split_nothing_is_selected(tiny_config):
    summary = train(tiny_config(val_split=0, epochs=1))
    run_dir = runs.Path(summary["run_dir"])
    assert not (run_dir / runs.BEST_WEIGHTS).exists() and "selection" not in summary
    assert not any(k.startswith("val_") for r in runs.read_metrics(run_dir) for k in r)
    from cnnlab.inference import evaluate_run

    with pytest.raises(CnnlabError, match="--weights best: .* has no best.safetensors"):
        evaluate_run(run_dir, device="cpu", weights="best")
    for bad, flag in ((dict(target_acc=90), "--target-acc"), (dict(patience=2), "--patience"),
                      (dict(sched="plateau"), "plateau")):
        with pytest.raises(CnnlabError, match=flag):
            train(tiny_config(val_split=0, name="bad", **bad))
    with pytest.raises(CnnlabError, match="--monitor val_nope: .*no such validation metric"):
        train(tiny_config(monitor="val_nope", name="bad2", epochs=1))


def test_the_cli_flags_end_to_end(tmp_path, capsys):
    from cnnlab.cli import main

    out = str(tmp_path / "runs")
    tiny = ["--data", "synthetic", "--model-options", "widths=4,4,8", "--threads", "1", "--precision", "fp32",
            "--out", out, "--no-progress"]
    assert main(["train", *tiny, "--name", "a", "--steps", "12", "--batch-size", "32", "--accum-steps", "2",
                 "--patience", "2", "--mixup", "0.2", "--policy", "trivialaugment", "--class-weights", "auto",
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 12 and summary["selection"]["monitor"] == "val_acc"
    assert main(["train", *tiny, "--name", "b", "--epochs", "1", "--init-from", f"{out}/a", "--lr-mult", "head=2",
                 "--freeze", "features"]) == 0
    assert "init from" in capsys.readouterr().out
    assert main(["eval", f"{out}/b", "--weights", "best", "--json"]) == 0
    assert main(["lr-find", *tiny, "--num-steps", "20", "--plot", str(tmp_path / "lr.png"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["suggested_lr"] > 0
    assert main(["train", *tiny, "--name", "c", "--steps", "3", "--epochs", "1"]) == 2
    assert "--steps and --epochs both set" in capsys.readouterr().err
