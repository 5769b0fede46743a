"""Issue 17's built-in studies (thesis Tables 4.1, 4.5, 5.3; efficient-cnn Sec. VII a/c/d; LARS batch sweep;
optimizer paper Table 2 ensembles): every spec parses and plans at every budget with the paper's setting at
full and MNIST at small, and a study's ensemble evaluation averages the seeds of a variant."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cnnlab import study

SPECS = {  # name -> the data set of the paper's (full) setting
    "inception-modules": "cifar10", "activations-cifar100": "cifar100", "lenet-mnist": "mnist",
    "kernel-sizes": "cifar10", "activations-vgg19": "cifar10", "normalization-vgg19": "cifar10",
    "lars-batch-sweep": "folder", "ensembles": "folder", "ndsb": "folder",
}
SMALL_DATA = {"ndsb": "folder"}  # a generated plankton-like folder (python -m cnnlab.data.plankton DIR)
MNIST = {"data_dir": "/nonexistent/mnist"}  # planning never opens the data


def plan(name: str, budget: str, tmp_path: Path) -> study.Plan:
    return study.plan_study(study.load_spec(name), budget, out=tmp_path, overrides=MNIST, threads=2)


@pytest.mark.parametrize("name", sorted(SPECS))
@pytest.mark.parametrize("budget", study.BUDGETS)
def test_spec_parses_and_plans_at_every_budget(name, budget, tmp_path):
    spec = study.load_spec(name)
    assert spec.name == name and name in study.builtin_specs()
    assert spec.description and spec.reproduces and spec.paper_source and spec.notes and spec.claims
    p = plan(name, budget, tmp_path)
    assert {r.variant for r in p.runs} == {v.name for v in spec.variants}
    for r in p.runs:
        assert r.config.data == (SPECS[name] if budget == "full" else SMALL_DATA.get(name, "mnist")), (name, budget)
        if budget == "full":
            assert r.config.train_subset is None and r.config.test_subset is None
    assert study.print_plan(p, log=lambda s: None, measure=False)["problems"] == []


def test_paper_settings_where_the_papers_state_them(tmp_path):
    full = {r.variant: r.config for r in plan("kernel-sizes", "full", tmp_path).runs}
    assert {c.model for c in full.values()} == {"vgg19-k3", "vgg19-k5", "vgg14-mixed"}
    assert all(c.steps == 20000 and c.epochs is None and c.opt == "adam" and c.lr == 2e-4 and c.dropout == 0.2
               for c in full.values())
    small = plan("kernel-sizes", "small", tmp_path).runs
    assert all(r.config.steps and r.config.epochs is None for r in small)
    c100 = {r.variant: r.config for r in plan("activations-cifar100", "full", tmp_path).runs}
    assert set(c100) == {"relu", "sigmoid-star", "tanh", "rrelu", "sigmoid"}
    assert all(c.model == "inception-bn" and c.norm == "none" and c.init == "xavier-uniform" and c.dropout == 0
               and c.epochs * c.sched_options["milestones"][0] == pytest.approx(40, abs=0.1) for c in c100.values())
    lars = {r.variant: r.config for r in plan("lars-batch-sweep", "full", tmp_path).runs}
    assert lars["b32k+lars"].batch_size * lars["b32k+lars"].accum_steps == 32768 and lars["b32k+lars"].opt == "lars"
    assert lars["b256+sgd"].model == "alexnet" and lars["b256+sgd"].norm == "batch"
    ndsb = {r.variant: r.config for r in plan("ndsb", "full", tmp_path).runs}
    assert ndsb["ndsb1"].tta == "random:100" and ndsb["ndsb1-single-view"].tta == "none"
    assert all(c.vflip and c.flip and c.shear > 0 and c.rotate == 180 for c in ndsb.values())
    incep = {r.variant: r.config.model for r in plan("inception-modules", "full", tmp_path).runs}
    assert set(incep.values()) == {f"inception-{c}" for c in "abcdefghijk"} | {"inception-naive"}


def test_ensemble_study_plans_one_evaluation_over_the_seeds(tmp_path):
    p = plan("ensembles", "small", tmp_path)
    assert len(p.runs) == 5
    members = {str(r.run_dir) for r in p.runs}
    for r in p.runs:
        (e,) = r.evaluations
        assert e["name"] == "ensemble" and set(e["ensemble"]) == members


def test_a_study_reports_single_runs_against_their_ensemble(tmp_path):
    spec = tmp_path / "ens.yaml"
    spec.write_text("""
name: ens
base: {data: synthetic, model: fastnet, model_options: {widths: [8, 8, 16]}, epochs: 1, batch_size: 64,
       precision: fp32, train_subset: 128}
variants: [{name: cnn}]
seeds: [0, 1]
evaluations: {ensemble: {ensemble: true}}
report: {metrics: [test_acc, acc@ensemble], headline: test_acc}
""")
    result = study.run_study(str(spec), budget="full", out=tmp_path / "out", jobs=1, threads=1, log=lambda s: None)
    assert not result["failed"]
    runs_dir = tmp_path / "out" / "studies" / "ens-full" / "runs"
    accs = {json.loads((runs_dir / f"cnn-seed{s}" / "evals" / "ensemble.json").read_text())["acc"] for s in (0, 1)}
    assert len(accs) == 1  # one ensemble, written into both members
    assert "acc@ensemble" in (tmp_path / "out" / "studies" / "ens-full" / "results.csv").read_text()
