"""The speed-run benchmark's recipes are valid configs and the reference is pytorch/examples' recipe."""
import importlib.util
from pathlib import Path

from cnnlab.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recipes_are_valid_configs_and_the_reference_is_unchanged():
    bench = _load("mnist_time_to_accuracy")
    for target, recipe in bench.RECIPES.items():
        cfg = TrainConfig.from_dict({**recipe, "data": "mnist", "val_split": 0})
        assert cfg.val_split == 0 and cfg.epochs > 0, target
    ref = bench.REFERENCE  # pytorch/examples mnist/main.py: Adadelta lr 1.0, batch 64, StepLR(1, 0.7), 14 epochs
    assert (ref["model"], ref["opt"], ref["lr"], ref["batch_size"], ref["epochs"], ref["sched"]) == \
        ("mnist-example", "adadelta", 1.0, 64, 14, "step")
    assert ref["sched_options"] == {"step_size": 1, "gamma": 0.7} and ref["precision"] == "fp32"


def test_thread_choice(monkeypatch):
    # the probe itself times real steps (seconds on a loaded machine): here only its no-choice path
    bench = _load("mnist_time_to_accuracy")
    recipe = bench.RECIPES[99.0]
    assert bench.choose_threads("3", recipe) == (3, {})
    monkeypatch.setattr(bench.os, "cpu_count", lambda: 1)
    assert bench.probe_threads(recipe) == (1, {})
