"""The study runner's two-stage features: runs that use other runs ("@VARIANT"), per-variant --set,
extra evaluations (acc@NAME), and settings chosen by k-fold cross-validation on the training split."""
import json

import pytest
import torch
import yaml

from cnnlab import runs
from cnnlab.config import TrainConfig
from cnnlab.data.prepare import prepare_data
from cnnlab.errors import CnnlabError
from cnnlab.study import load_spec, parse_overrides, parse_spec, plan_study, run_study

SPEC = {
    "name": "tiny-two-stage",
    "base": {"data": "digits", "opt": "adam", "lr": 0.01, "momentum": None, "sched": "constant",
             "weight_decay": 0.0, "batch_size": 64, "epochs": 2, "precision": "fp32", "progress": False},
    "variants": [
        {"name": "ae", "model": "autoencoder", "model_options": {"hidden": [24, 12]}, "objective": "reconstruct",
         "input_scaling": "minmax"},
        {"name": "dnn", "model": "dnn", "model_options": {"hidden": [16]}, "features_from": "@ae",
         "paper": {"acc@noise-0.3": 50.0}},
    ],
    "evaluations": {"noise": {"corrupt": "salt-pepper", "levels": [0, 0.3], "variants": ["dnn"]}},
    "report": {"metrics": ["test_acc", "acc@noise-0", "acc@noise-0.3"], "curves": []},
}


SELECT = {"variants": ["dnn"], "folds": 2, "grid": {"model_options.hidden": {"w16": [16], "w4": [4]}}}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    spec = parse_spec(SPEC, source="tiny.yaml")
    return run_study(spec, budget="full", out=out, overrides={"threads": 1}, log=lambda *a: None)


def test_a_two_stage_study_runs_the_autoencoder_first_and_evaluates_under_noise(study):
    plan = study["plan"]
    assert [r.variant for r in plan.runs] == ["ae", "dnn"] and not study["failed"]
    dnn = plan.runs[1]
    assert dnn.config.features_from == str(plan.runs[0].run_dir) and dnn.needs == [plan.runs[0].name]
    (dnn_result,) = [vr for vr in study["variants"] if vr.variant.name == "dnn"][0].results
    clean, noisy = dnn_result.value("acc@noise-0"), dnn_result.value("acc@noise-0.3")
    assert clean == pytest.approx(dnn_result.value("test_acc"))  # 0% noise is the clean test split
    assert noisy < clean
    assert (dnn.run_dir / runs.EVALS / "noise-0.3.json").is_file()
    text = (study["study_dir"] / "results.md").read_text()
    assert "Acc @ noise-0.3 (%)" in text and "50.00" in text  # the paper's value beside the measured one
    assert (study["study_dir"] / "plots" / "sweep_noise.png").is_file()


def test_cross_validation_chooses_on_the_training_split_then_tests_once(tmp_path):
    """The final runs of a selected variant wait for the k-fold runs, then take the setting with the best
    mean validation score (here written by hand: the real fold runs are tested below)."""
    spec = parse_spec({**SPEC, "select": SELECT}, source="tiny.yaml")
    plan = plan_study(spec, "full", tmp_path)
    assert [(r.setting, r.config.cv_fold) for r in plan.cv_runs] == [("w16", "1/2"), ("w16", "2/2"), ("w4", "1/2"),
                                                                       ("w4", "2/2")]
    assert all(r.needs == [plan.runs[0].name] for r in plan.cv_runs)  # they use the autoencoder too
    assert plan.selection["dnn"]["chosen"] is None  # nothing has run: the final dnn run waits
    for run, acc in zip(plan.cv_runs, (0.80, 0.70, 0.90, 0.85)):
        run.run_dir.mkdir(parents=True)
        (run.run_dir / runs.SUMMARY).write_text(json.dumps({"test_acc": acc}))
    plan = plan_study(spec, "full", tmp_path)
    selection = plan.selection["dnn"]
    assert selection["chosen"] == "w4" and selection["means"] == {"w16": pytest.approx(75.0), "w4": pytest.approx(87.5)}
    final = [r for r in plan.runs if r.variant == "dnn"][0]
    assert final.config.model_options["hidden"] == [4] and final.config.cv_fold is None


def test_a_cross_validation_run_is_scored_on_its_fold_not_the_test_split(tmp_path):
    from cnnlab.train import train

    cfg = TrainConfig(data="digits", model="mlp", model_options={"hidden": [16]}, epochs=1, cv_fold="2/3",
                      out=str(tmp_path), name="fold", progress=False, threads=1)
    summary = train(cfg)
    assert summary["evaluated_on"] == "validation fold 2/3 of the training split"
    assert json.loads((tmp_path / "fold" / runs.META).read_text())["dataset"] == "digits"


def test_cv_folds_partition_the_training_split_stratified():
    base = prepare_data(TrainConfig(data="digits", val_split=0))  # the whole training split
    folds = [prepare_data(TrainConfig(data="digits", cv_fold=f"{i}/3")) for i in (1, 2, 3)]
    held_out = torch.cat([f.test_images for f in folds])
    assert len(held_out) == len(base.train_images)  # every training image held out exactly once
    assert sorted(map(bytes, held_out.flatten(1).numpy())) == sorted(map(bytes, base.train_images.flatten(1).numpy()))
    for f in folds:
        assert len(f.train_labels) + len(f.test_labels) == len(base.train_labels)
        share = torch.bincount(f.test_labels, minlength=10).float() / torch.bincount(base.train_labels).float()
        assert share.min() > 0.3 and share.max() < 0.37  # stratified: a third of every class


def test_per_variant_set_and_reference_errors(tmp_path):
    spec = parse_spec(SPEC, source="tiny.yaml")
    overrides = parse_overrides(["lr=0.05", "d*:lr=0.2"])
    plan = plan_study(spec, "full", tmp_path, overrides=overrides)
    lrs = {r.variant: r.config.lr for r in plan.runs}
    assert lrs == {"ae": 0.05, "dnn": 0.2}
    with pytest.raises(CnnlabError, match=r"--set x\*:lr=\.\.\.: the pattern matches no variant"):
        plan_study(spec, "full", tmp_path, overrides=parse_overrides(["x*:lr=0.2"]))
    bad = {**SPEC, "variants": [SPEC["variants"][0], {**SPEC["variants"][1], "features_from": "@aee"}]}
    with pytest.raises(CnnlabError, match=r"features_from: unknown variant 'aee' \(did you mean ae\?\)"):
        parse_spec(bad, source="tiny.yaml")
    bad = {**SPEC, "report": {"metrics": ["acc@noise-0.7"]}}
    with pytest.raises(CnnlabError, match="metric 'acc@noise-0.7' names no evaluation"):
        parse_spec(bad, source="tiny.yaml")
    bad = {**SPEC, "evaluations": {"noise": {"corrupt": "salt-pepper", "levels": [2]}}}
    with pytest.raises(CnnlabError, match=r"evaluations.noise.levels 'salt-pepper:2'.*in \[0, 1\]"):
        parse_spec(bad, source="tiny.yaml")


@pytest.mark.parametrize("name", ["two-stage", "two-stage-noise", "autoencoder-design"])
def test_the_built_in_two_stage_studies_plan(name, tmp_path):
    spec = load_spec(name)
    plan = plan_study(spec, "small", tmp_path, overrides=parse_overrides(["data_dir=/nowhere"]))
    names = [r.name for r in plan.runs]
    for run in plan.runs:  # every run comes after the runs it uses
        assert all(names.index(n) < names.index(run.name) for n in run.needs if n in names)
    assert yaml.safe_load((spec.path).read_text())["name"] == name
