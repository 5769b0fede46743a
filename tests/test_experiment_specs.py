"""The paper experiments shipped as built-in study specs (docs/experiments.md) and the switch marker
of a run's curves plot. Nothing here trains or reads a dataset: specs are parsed and planned only."""
from __future__ import annotations

from pathlib import Path

import pytest

from cnnlab import runs, study

EXPERIMENTS = ["optimizers", "adam-vs-momentum", "lars-large-batch", "adam-sgd-switch"]
MNIST = {"data_dir": "/nonexistent/mnist"}  # planning never opens the data


def plan(name: str, budget: str, tmp_path: Path) -> study.Plan:
    return study.plan_study(study.load_spec(name), budget, out=tmp_path, overrides=MNIST, threads=2)


def configs(p: study.Plan) -> dict[str, list]:
    out: dict[str, list] = {}
    for r in p.runs:
        out.setdefault(r.variant, []).append(r.config)
    return out


@pytest.mark.parametrize("name", EXPERIMENTS)
@pytest.mark.parametrize("budget", study.BUDGETS)
def test_spec_parses_and_plans_at_every_budget(name, budget, tmp_path):
    spec = study.load_spec(name)
    assert spec.name == name and name in study.builtin_specs()
    assert spec.description and spec.reproduces and spec.paper_source and spec.notes
    p = plan(name, budget, tmp_path)
    assert p.study_dir == tmp_path / "studies" / f"{name}-{budget}"
    assert {r.variant for r in p.runs} == {v.name for v in spec.variants}
    for r in p.runs:
        cfg = r.config
        # at the full budget adam-vs-momentum (efficient-cnn) and adam-sgd-switch (SADIE Fig. 9) run on CIFAR-10
        on_cifar = budget == "full" and name in ("adam-vs-momentum", "adam-sgd-switch")
        assert cfg.data == ("cifar10" if on_cifar else "mnist")
        assert cfg.data_dir == MNIST["data_dir"]
        if budget == "smoke":
            assert cfg.epochs <= 1 and cfg.train_subset is not None and cfg.train_subset <= 1000
        if budget == "full":
            assert cfg.train_subset is None and cfg.test_subset is None
    if budget == "smoke":
        assert len({r.seed for r in p.runs}) == 1
    assert study.print_plan(p, log=lambda s: None, measure=False)["problems"] == []


def test_specs_are_listed(capsys):
    lines = []
    study.list_studies(log=lines.append)
    listed = {ln.split()[0] for ln in lines}
    assert set(EXPERIMENTS) <= listed
    assert not any("invalid spec" in ln for ln in lines)


def test_lars_compares_at_batch_8192_for_the_same_epochs(tmp_path):
    for budget in study.BUDGETS:
        cfgs = configs(plan("lars-large-batch", budget, tmp_path))
        assert {"sgd", "lars", "sgd-b256"} <= set(cfgs)
        sgd, lars, ref = cfgs["sgd"][0], cfgs["lars"][0], cfgs["sgd-b256"][0]
        assert sgd.opt == "sgd" and lars.opt == "lars" and ref.opt == "sgd"
        assert "trust_coef" in lars.opt_options
        assert sgd.batch_size == lars.batch_size == 8192 and ref.batch_size == 256
        assert sgd.epochs == lars.epochs == ref.epochs
        assert sgd.train_subset == lars.train_subset == ref.train_subset
        assert sgd.sched == lars.sched == "poly" and sgd.warmup_epochs == lars.warmup_epochs > 0
        # linear scaling: the large-batch SGD rate is the batch-256 rate times 8192 / 256
        assert sgd.lr == pytest.approx(ref.lr * 8192 / 256)
    small = configs(plan("lars-large-batch", "small", tmp_path))
    assert small["lars"][0].train_subset is None  # batch 8192 needs the whole training set
    assert 10 <= small["lars"][0].epochs <= 20


def test_switch_spec_variants(tmp_path):
    cfgs = configs(plan("adam-sgd-switch", "small", tmp_path))
    assert cfgs["adam"][0].opt == "adam" and cfgs["momentum"][0].opt == "sgd"
    switch = {n: c[0] for n, c in cfgs.items() if c[0].opt == "adam-sgd-switch"}
    blends = sorted(c.opt_options.get("blend_steps", 0) for c in switch.values()
                    if "force_switch_epoch" not in c.opt_options)
    assert blends[0] == 0 and blends[-1] > 0  # unbuffered and buffered automatic switch
    forced = [c for c in switch.values() if "force_switch_epoch" in c.opt_options]
    assert len(forced) == 1 and 0 < forced[0].opt_options["force_switch_epoch"] < forced[0].epochs
    for c in switch.values():  # the automatic switch needs an eps on the scale of Lambda (default 1e-9 never fires)
        if "force_switch_epoch" not in c.opt_options:
            assert c.opt_options["switch_eps"] > 1e-6
    # every variant of one study sees the same data for the same epochs
    assert len({(c[0].epochs, c[0].train_subset, c[0].batch_size) for c in cfgs.values()}) == 1


def test_adam_vs_momentum_uses_one_rate(tmp_path):
    """The paper trains both optimizers at learning rate 0.005."""
    for budget in study.BUDGETS:
        cfgs = configs(plan("adam-vs-momentum", budget, tmp_path))
        assert cfgs["adam"][0].opt == "adam" and cfgs["momentum"][0].opt == "sgd"
        assert cfgs["adam"][0].lr == cfgs["momentum"][0].lr == 0.005
        assert cfgs["momentum"][0].momentum == 0.9 and all(c[0].model == "alexnet" for c in cfgs.values())


# ------------------------------------------------------------------------------ the switch marker


def rows_with_switch(switch_step: int | None, steps_per_epoch: int = 10, epochs: int = 4) -> list[dict]:
    """Per-epoch rows as the trainer writes them for an adam-sgd-switch run."""
    rows = []
    for e in range(1, epochs + 1):
        step = e * steps_per_epoch
        switched = switch_step is not None and switch_step <= step
        rows.append({"epoch": e, "step": step, "train_loss": 1.0 / e, "train_acc": 0.5 + 0.1 * e,
                     "test_loss": 1.1 / e, "test_acc": 0.5 + 0.09 * e, "lr": 1e-3,
                     "switched": switched, "switch_step": switch_step if switched else None,
                     "sgd_lr": 0.25 if switched else None, "sgd_lr_now": 0.25 if switched else None,
                     "phase": "sgd" if switched else "adam"})
    return rows


def test_switch_epoch_locates_the_switch():
    assert runs.switch_epoch([]) is None
    assert runs.switch_epoch(rows_with_switch(None)) is None
    assert runs.switch_epoch([{"epoch": 1, "step": 5, "lr": 0.1}]) is None  # another optimizer
    sw = runs.switch_epoch(rows_with_switch(23))  # step 23 of 40: in epoch 3 (steps 21..30)
    assert sw == {"epoch": 3, "x": pytest.approx(2.3), "step": 23, "sgd_lr": 0.25}
    sw = runs.switch_epoch(rows_with_switch(20))  # after the last step of epoch 2 (force_switch_epoch=2)
    assert sw["epoch"] == 2 and sw["x"] == pytest.approx(2.0)
    sw = runs.switch_epoch(rows_with_switch(1))
    assert sw["epoch"] == 1 and sw["x"] == pytest.approx(0.1)


def test_plot_curves_draws_the_switch(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    saved = []
    monkeypatch.setattr(plt, "close", lambda fig: saved.append(fig))  # keep the figure to inspect it
    path = tmp_path / "curves.png"
    runs.plot_curves(rows_with_switch(23), path, "switch")
    assert path.is_file() and path.stat().st_size > 0
    fig = saved[-1]
    assert len(fig.axes) == 3  # loss, accuracy, learning rate
    for ax in fig.axes:  # the vertical switch line at epoch 2.3 in every panel
        assert any(list(line.get_xdata()) == [2.3, 2.3] for line in ax.get_lines())
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert "Adam→SGD switch (step 23, lr 0.25)" in labels
    assert "SGD lr after switch" in fig.axes[2].get_legend_handles_labels()[1]
    assert fig.axes[2].get_yscale() == "log"  # 1e-3 (Adam) and 0.25 (SGD) on one axis

    # without a switch and without lr: the old two panels, no marker
    rows = [{k: v for k, v in r.items() if k not in ("lr",)} for r in rows_with_switch(None)]
    runs.plot_curves(rows, path)
    fig = saved[-1]
    assert len(fig.axes) == 2
    assert not any(len(set(line.get_xdata())) == 1 and len(line.get_xdata()) == 2
                   for ax in fig.axes for line in ax.get_lines())
