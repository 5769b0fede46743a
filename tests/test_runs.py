"""Run folders: layout, meta.json, metrics.jsonl tolerance of a torn line, clear errors."""
import json

import pytest

from cnnlab import runs
from cnnlab.config import TrainConfig
from cnnlab.errors import CnnlabError


def test_check_run_dir_errors_name_the_folder(tmp_path):
    with pytest.raises(CnnlabError, match="run folder not found"):
        runs.check_run_dir(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CnnlabError, match="not a cnnlab run folder"):
        runs.check_run_dir(tmp_path / "empty")


def test_metrics_round_trip_and_a_torn_last_line_is_ignored(tmp_path):
    rows = [{"epoch": 1, "train_loss": 0.5}, {"epoch": 2, "train_loss": 0.25}]
    runs.write_metrics(tmp_path, rows)
    assert runs.read_metrics(tmp_path) == rows
    with open(tmp_path / runs.METRICS, "a") as f:
        f.write('{"epoch": 3, "train_lo')  # a crash mid-append
    assert runs.read_metrics(tmp_path) == rows


def test_read_json_errors_name_the_file(tmp_path):
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(CnnlabError, match="bad.json: not valid JSON"):
        runs.read_json(tmp_path / "bad.json")
    with pytest.raises(CnnlabError, match="missing.json: not found"):
        runs.read_json(tmp_path / "missing.json")


def test_write_meta_records_what_inference_needs(tmp_path):
    from cnnlab.data import load_dataset

    ds = load_dataset("synthetic")
    runs.write_meta(tmp_path, TrainConfig(data="synthetic", model="mlp", act="tanh"), ds)
    meta = json.loads((tmp_path / runs.META).read_text())
    assert meta["model"] == "mlp" and meta["model_options"] == {"act": "tanh"}
    assert meta["classes"] == ds.classes and meta["in_channels"] == 1 and meta["image_size"] == 16
    assert len(meta["mean"]) == len(meta["std"]) == 1


def test_switch_epoch_locates_the_adam_sgd_switch_within_its_epoch():
    rows = [{"epoch": 1, "step": 10}, {"epoch": 2, "step": 20, "switched": True, "switch_step": 15, "sgd_lr": 0.2}]
    assert runs.switch_epoch(rows) == {"epoch": 2, "x": 1.5, "step": 15, "sgd_lr": 0.2}
    assert runs.switch_epoch(rows[:1]) is None
