"""The dry run's time estimate (cnnlab.study.estimate): dataset sizes come from the registry's
numbers (DatasetSpec), nothing is loaded, and a dataset of unknown size gets no estimate."""
from __future__ import annotations

import pytest

from cnnlab import study
from cnnlab.config import TrainConfig
from cnnlab.study import estimate


def test_dataset_facts_read_the_registry_numbers():
    assert estimate.dataset_facts(TrainConfig.from_dict({"data": "digits"})) == (1347, 450, 1, (8, 8), 10)
    # the run's own subset, size and channels win over the dataset's
    cfg = TrainConfig.from_dict({"data": "digits", "train_subset": 100, "image_size": 16, "channels": 3})
    assert estimate.dataset_facts(cfg) == (100, 450, 3, (16, 16), 10)
    assert estimate.dataset_facts(cfg.replace(image_size=[16, 24]))[3] == (16, 24)  # (H, W)


def test_folder_dataset_has_no_size_and_no_estimate(tmp_path):
    facts = estimate.dataset_facts(TrainConfig.from_dict({"data": "folder", "train_subset": 50}))
    assert facts == (None, None, estimate.FALLBACK_CHANNELS, (estimate.FALLBACK_SIZE,) * 2, estimate.FALLBACK_CLASSES)
    spec = study.parse_spec({"base": {"data": "folder", "model": "mlp", "model_options": {"hidden": [8]}}})
    plan = study.plan_study(spec, "smoke", out=tmp_path, threads=1)
    lines: list[str] = []
    info = study.print_plan(plan, log=lines.append)
    assert info == {"total_seconds": 0.0, "problems": []}
    run_line = next(ln for ln in lines if ln.strip().startswith("base "))
    assert run_line.split()[-2:] == ["pending", "?"]  # train images unknown, time unknown
    assert "(+1 runs of unknown size)" in lines[-1]


def test_estimate_scales_with_epochs_and_images(tmp_path):
    spec = study.parse_spec({"base": {"data": "digits", "model": "mlp", "model_options": {"hidden": [8]},
                                      "eval_every": 1},
                             "variants": [{"name": "one", "epochs": 1}, {"name": "two", "epochs": 2}]})
    plan = study.plan_study(spec, "full", out=tmp_path, threads=1)
    cache: dict = {}
    one, two = (estimate.estimate_run(r.config, 1, cache) for r in plan.runs)
    assert len(cache) == 1  # the model was measured once for both runs
    per = next(iter(cache.values()))
    # training images x epochs, plus ceil(epochs) // eval_every + 1 passes over the test images at a third
    assert one == pytest.approx(per * (1 * 1347 + 2 * 450 / 3))
    assert two == pytest.approx(per * (2 * 1347 + 3 * 450 / 3))
