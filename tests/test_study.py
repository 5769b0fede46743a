"""Studies: spec parsing, planning, budgets, running/resuming, aggregation and the report."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml

from cnnlab import study
from cnnlab.study import execute
from cnnlab.config import TrainConfig
from cnnlab.errors import CnnlabError


def write_spec(tmp_path: Path, data: dict, name: str = "spec.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


TINY = {  # two tiny variants on the offline digits data: seconds per run on CPU
    "name": "tiny",
    "description": "two tiny MLPs on digits",
    "base": {"data": "digits", "model": "mlp", "model_options": {"hidden": [16]}, "epochs": 1,
             "batch_size": 64, "sched": "constant", "lr": 0.05},
    "grid": {"opt": {"sgd": "sgd", "adam": "adam"}},
    "report": {"metrics": ["test_acc", "train_error", "f1", "train_seconds", "params"], "headline": "test_acc",
               "curves": ["val_acc", "train_loss"]},
    "paper": {"sgd": {"test_acc": 90.0}},
}


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------------- spec + plan


def test_grid_product_names_and_listed_variants():
    spec = study.parse_spec({
        "base": {"data": "digits"},
        "grid": {"act": {"relu": "relu", "tanh": "tanh"}, "norm": {"": "none", "bn": "batch"}},
        "variants": [{"name": "bn", "act": "identity", "norm": "batch", "paper": {"test_error": 17.2}}],
        "seeds": 2,
    })
    assert [v.name for v in spec.variants] == ["relu", "relu+bn", "tanh", "tanh+bn", "bn"]
    assert spec.variant("tanh+bn").values == {"act": "tanh", "norm": "batch"}
    assert spec.seeds == [0, 1]
    assert spec.axes() == ["act", "norm"]
    assert "test_error" in spec.metrics  # paper values are always reported
    # list grid values get key=value labels; dotted keys set one option of a mapping
    spec = study.parse_spec({"grid": {"lr": [0.1, 0.01], "model_options.widths": ["8,16"]}})
    assert [v.name for v in spec.variants] == ["lr=0.1+widths=8,16", "lr=0.01+widths=8,16"]
    plan = study.plan_study(spec, "full", out="/tmp/x", threads=2)
    assert plan.runs[1].config.lr == 0.01 and plan.runs[1].config.model_options == {"widths": "8,16"}
    # product: every listed variant crossed with every grid point
    spec = study.parse_spec({"grid": {"lr": [0.1, 0.2]}, "variants": [{"name": "a", "opt": "adam"}],
                             "combine": "product"})
    assert [v.name for v in spec.variants] == ["a+lr=0.1", "a+lr=0.2"]


@pytest.mark.parametrize("data, message", [
    ({"grdi": {"lr": [1]}}, "unknown key grdi (did you mean grid?)"),
    ({"grid": {"lrr": [0.1]}}, "grid: unknown config key 'lrr' (did you mean lr?)"),
    ({"grid": {"lr": []}}, "grid.lr: needs at least one value"),
    ({"grid": {"lr": 0.1}}, "grid.lr: expected a list of values"),
    ({"variants": [{"name": "a", "epoch": 2}]}, "variants[a]: unknown config key 'epoch' (did you mean epochs?)"),
    ({"variants": [{"opt": "adam"}]}, "variants[0]: every variant needs a name"),
    ({"variants": [{"name": "a"}, {"name": "a"}]}, "two variants are both named 'a'"),
    ({"variants": [{"name": "a", "lr": "fast"}]}, "variant 'a': lr: expected float"),
    ({"seeds": 0}, "seeds: a seed count must be >= 1"),
    ({"budgets": {"tiny": {"epochs": 1}}}, "budgets: unknown budget 'tiny'"),
    ({"budgets": {"smoke": {"epoch": 1}}}, "budgets.smoke: unknown config key 'epoch'"),
    ({"report": {"metrics": ["accuracy"]}}, "report.metrics: unknown metric 'accuracy'"),
    ({"report": {"curves": ["params"]}}, "report.curves: 'params' has no per-epoch values"),
    ({"paper": {"nope": {"test_acc": 1}}}, "paper: unknown variant 'nope'"),
    ({"variants": [{"name": "a", "paper": {"acc": 1}}]}, "paper values of 'a': unknown metric 'acc'"),
    ({"figures": [{"title": "x", "variants": ["zz"]}]}, "figures[0].variants: unknown variant 'zz'"),
    ({"base": {"out": "elsewhere"}}, "base.out: set by the study"),
    ({"name": "a/b"}, "name: 'a/b' must be a plain folder name"),
])
def test_spec_errors_name_the_file_and_key(tmp_path, data, message):
    path = write_spec(tmp_path, data)
    with pytest.raises(CnnlabError) as e:
        study.plan_study(study.load_spec(path), "full", out=tmp_path)
    assert str(path) in str(e.value)
    assert message in str(e.value)


def test_spec_file_problems(tmp_path):
    with pytest.raises(CnnlabError, match="no such spec file or built-in study; did you mean activations"):
        study.load_spec("activation")
    with pytest.raises(CnnlabError, match="missing.yaml: study spec not found"):
        study.load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("grid: [unclosed\n")
    with pytest.raises(CnnlabError, match="bad.yaml: not valid YAML"):
        study.load_spec(bad)


def test_budgets_scale_epochs_data_and_seeds():
    spec = study.parse_spec({"base": {"data": "digits", "epochs": 20, "train_subset": None},
                             "variants": [{"name": "a"}, {"name": "long", "epochs": 40}], "seeds": [3, 4, 5],
                             "budgets": {"small": {"epochs": 2, "seeds": [3, 4]}}})
    smoke = study.plan_study(spec, "smoke", out="o", threads=4, jobs=2)
    assert [(r.variant, r.seed) for r in smoke.runs] == [("a", 3), ("long", 3)]  # smoke: first seed only
    assert all(r.config.epochs == 1 and r.config.train_subset == 512 for r in smoke.runs)
    assert all(r.config.threads == 2 and r.config.progress is False for r in smoke.runs)  # 4 threads / 2 jobs
    assert smoke.runs[0].run_dir == Path("o/studies/a-smoke/runs/a-seed3".replace("a-smoke", f"{spec.name}-smoke"))
    small = study.plan_study(spec, "small", out="o", threads=1)
    # the spec's budget sets epochs (an axis value still wins), the built-in cap limits the data
    assert [(r.variant, r.seed, r.config.epochs, r.config.train_subset) for r in small.runs] == [
        ("a", 3, 2, 10000), ("a", 4, 2, 10000), ("long", 3, 40, 10000), ("long", 4, 40, 10000)]
    full = study.plan_study(spec, "full", out="o", threads=1, overrides=study.parse_overrides(["lr=0.2"]))
    assert [(r.config.epochs, r.config.train_subset, r.config.lr) for r in full.runs[::3]] == [
        (20, None, 0.2), (40, None, 0.2)]
    assert len(full.runs) == 6 and full.runs[0].config.progress is True
    with pytest.raises(CnnlabError, match="--set: unknown config key 'lrate'"):
        study.parse_overrides(["lrate=1"])
    with pytest.raises(CnnlabError, match="--budget must be one of smoke, small, full"):
        study.plan_study(spec, "huge")


def test_builtin_specs_plan_at_every_budget(capsys):
    specs = study.builtin_specs()
    assert {"activations", "optimizers"} <= set(specs)
    for name in specs:
        spec = study.load_spec(name)
        for budget in study.BUDGETS:
            plan = study.plan_study(spec, budget, out="runs")
            assert plan.runs and all(isinstance(r.config, TrainConfig) for r in plan.runs)
    act = study.load_spec("activations")
    assert len(act.variants) == 13  # Table 5.2: 6 activations x {no BN, BN} + BN alone
    assert act.variant("rrelu+bn").values == {"act": "rrelu", "norm": "batch"}
    assert act.variant("lrelu7.5").values["act"] == "lrelu:7.5"
    assert act.variant("rrelu+bn").paper == {"train_error": 0.63, "test_error": 7.98}
    assert all(v.paper for v in act.variants)
    opt = study.load_spec("optimizers")
    assert [v.name for v in opt.variants] == ["sgd", "momentum", "rmsprop", "adam"]
    assert study.study_main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "activations" in out and "Table 5.2" in out and "optimizers" in out


# ------------------------------------------------------------------------ aggregation (fake trainer)


def fake_trainer(fail: set[str] | None = None, calls: list | None = None):
    """Writes a run folder like the real trainer, with known numbers; fails for variants in ``fail``."""
    fail = fail if fail is not None else set()

    def train(cfg: TrainConfig, on_epoch=None):
        if calls is not None:
            calls.append(cfg.name)
        variant = cfg.name.rsplit("-seed", 1)[0]
        if variant in fail:
            raise CnnlabError(f"model 'broken' exploded in {variant}")
        run_dir = Path(cfg.out) / cfg.name
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.to_yaml(run_dir / "config.yaml")
        acc = {"a": 0.80, "b": 0.90}.get(variant, 0.5) + 0.01 * cfg.seed
        rows = [{"epoch": e, "step": 10 * e, "train_loss": 1.0 / e, "train_acc": acc - 0.1 / e,
                 "val_loss": 1.5 / e, "val_acc": acc - 0.05 / e, "lr": 0.1, "images_per_second": 1000.0,
                 "elapsed": 1.0 * e} for e in (1, 2)]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        summary = {"test_acc": acc, "best_val_acc": acc, "best_epoch": 2, "precision": acc, "recall": acc, "f1": acc - 0.02,
                   "nll": 0.3, "top5": 1.0, "epochs": 2, "train_seconds": 2.0 + cfg.seed,
                   "images_per_second": 1000.0, "params": 1234, "run_dir": str(run_dir)}
        (run_dir / "summary.json").write_text(json.dumps(summary))
        return summary

    return train


def test_aggregation_mean_std_paper_columns_and_report(tmp_path, monkeypatch):
    spec = study.parse_spec({"name": "agg", "base": {"data": "digits"},
                             "variants": [{"name": "a", "lr": 0.1}, {"name": "b", "lr": 0.2}], "seeds": [0, 1, 2],
                             "report": {"metrics": ["test_acc", "f1", "train_seconds"], "headline": "test_acc"},
                             "paper": {"a": {"test_acc": 79.5, "train_error": 3.0}},
                             "figures": [{"title": "Fig 1", "variants": ["a", "b"], "metric": "val_error"}],
                             "claims": ["b beats a"]})
    monkeypatch.setattr(execute, "_call_train", fake_trainer())
    result = study.run_study(spec, "full", out=tmp_path, log=lambda *a: None)
    rows = {r["variant"]: r for r in read_csv(result["csv"])}
    a_vals = [80.0, 81.0, 82.0]
    assert float(rows["a"]["test_acc_mean"]) == pytest.approx(81.0)
    assert float(rows["a"]["test_acc_std"]) == pytest.approx(1.0)  # sample std of 80, 81, 82
    assert float(rows["b"]["test_acc_mean"]) == pytest.approx(91.0)
    assert float(rows["a"]["train_seconds_mean"]) == pytest.approx(3.0)
    assert rows["a"]["paper_test_acc"] == "79.5" and rows["b"]["paper_test_acc"] == ""
    assert float(rows["a"]["train_error_mean"]) == pytest.approx(100 - (sum(a_vals) / 3 - 5))  # last train_acc
    assert rows["a"]["status"] == "done" and rows["a"]["seeds_done"] == "3"
    md = (result["study_dir"] / "results.md").read_text()
    assert "| a | 0.1 | 3/3 | 81.00 ± 1.00 | 79.50 | +1.50 |" in md
    assert "**91.00 ± 1.00**" in md  # best headline value in bold
    assert len(read_csv(result["study_dir"] / "runs.csv")) == 6
    plots = result["study_dir"] / "plots"
    assert {p.name for p in plots.glob("*.png")} == {"bar_test_acc.png", "curves_val_acc.png",
                                                      "curves_train_loss.png", "figure_1.png"}
    report = result["report"].read_text()
    assert report.count("data:image/png;base64,") == 4  # bar, 2 curve plots, Fig 1
    assert "b beats a" in report and "Fig 1" in report and "79.50" in report
    assert "variants:" in report  # the spec itself


def test_failed_variant_is_reported_and_retried(tmp_path, monkeypatch):
    spec = study.parse_spec({"name": "flaky", "base": {"data": "digits"},
                             "variants": [{"name": "a"}, {"name": "broken"}, {"name": "b"}]})
    calls: list[str] = []
    monkeypatch.setattr(execute, "_call_train", fake_trainer(fail={"broken"}, calls=calls))
    result = study.run_study(spec, "full", out=tmp_path, log=lambda *a: None)
    assert calls == ["a-seed0", "broken-seed0", "b-seed0"]  # the others still ran
    assert [r.run.variant for r in result["failed"]] == ["broken"]
    rows = {r["variant"]: r for r in read_csv(result["csv"])}
    assert rows["broken"]["status"] == "failed: model 'broken' exploded in broken"
    assert rows["broken"]["test_acc_mean"] == "" and rows["b"]["status"] == "done"
    assert "exploded in broken" in result["report"].read_text()
    # re-running retries only the failed run; once it works the error is gone
    calls.clear()
    monkeypatch.setattr(execute, "_call_train", fake_trainer(calls=calls))
    result = study.run_study(spec, "full", out=tmp_path, log=lambda *a: None)
    assert calls == ["broken-seed0"] and not result["failed"]
    assert {r["status"] for r in read_csv(result["csv"])} == {"done"}


def test_changed_config_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(execute, "_call_train", fake_trainer())
    spec = study.parse_spec({"name": "chg", "base": {"data": "digits", "lr": 0.1}, "variants": [{"name": "a"}]})
    study.run_study(spec, "full", out=tmp_path, log=lambda *a: None)
    spec.base["lr"] = 0.3
    with pytest.raises(CnnlabError, match=r"a-seed0 was trained with a different config \(lr: 0.1 -> 0.3\)"):
        study.run_study(spec, "full", out=tmp_path, log=lambda *a: None)
    # engine settings (threads, jobs) may change between invocations
    study.run_study(study.parse_spec({"name": "chg", "base": {"data": "digits", "lr": 0.1},
                                      "variants": [{"name": "a"}]}), "full", out=tmp_path, threads=1,
                    log=lambda *a: None)


def test_cli_errors_exit_2(tmp_path, capsys):
    from cnnlab.cli import main

    assert main(["study", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: study spec not found" in capsys.readouterr().err
    bad = write_spec(tmp_path, {"grid": {"lrr": [1]}})
    assert study.study_main([str(bad)]) == 2
    assert "unknown config key 'lrr' (did you mean lr?)" in capsys.readouterr().err
    assert main(["study"]) == 2


def test_dry_run_prints_plan_and_trains_nothing(tmp_path, capsys):
    spec = write_spec(tmp_path, TINY)
    assert study.study_main([str(spec), "--budget", "smoke", "--dry-run", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "2 variants x 1 seed(s) = 2 runs" in out
    assert "sgd" in out and "adam" in out and "pending" in out and "estimated cost" in out
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- the real trainer


def test_smoke_study_end_to_end_on_digits(tmp_path, capsys):
    spec = write_spec(tmp_path, TINY)
    out = tmp_path / "out"
    assert study.study_main([str(spec), "--budget", "smoke", "--out", str(out), "--threads", "1"]) == 0
    d = out / "studies" / "tiny-smoke"
    printed = capsys.readouterr().out
    assert "| Variant | opt | Test acc (%) | Paper | Δ |" in printed
    rows = {r["variant"]: r for r in read_csv(d / "results.csv")}
    assert set(rows) == {"sgd", "adam"}
    for name, row in rows.items():
        run_dir = d / "runs" / f"{name}-seed0"
        summary = json.loads((run_dir / "summary.json").read_text())
        metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        config = TrainConfig.from_yaml(run_dir / "config.yaml")
        assert config.epochs == 1 and config.train_subset == 512 and config.opt == name
        assert float(row["test_acc_mean"]) == pytest.approx(100 * summary["test_acc"])
        assert float(row["f1_mean"]) == pytest.approx(100 * summary["f1"])
        assert float(row["train_error_mean"]) == pytest.approx(100 * (1 - metrics[-1]["train_acc"]))
        assert float(row["train_seconds_mean"]) == pytest.approx(summary["train_seconds"])
        assert float(row["params_mean"]) == summary["params"]
        assert row["test_acc_std"] == "" and row["status"] == "done"
    assert rows["sgd"]["paper_test_acc"] == "90.0"
    report = (d / "report.html").read_text()
    assert report.startswith("<!doctype html>") and "data:image/png;base64," in report
    assert "src=\"http" not in report and "<link" not in report  # self-contained
    assert (d / "plots" / "bar_test_acc.png").stat().st_size > 1000
    # re-running a finished study trains nothing and rewrites the same table
    before = (d / "results.csv").read_text()
    mtime = (d / "runs" / "sgd-seed0" / "summary.json").stat().st_mtime_ns
    assert study.study_main([str(spec), "--budget", "smoke", "--out", str(out), "--threads", "1"]) == 0
    assert (d / "runs" / "sgd-seed0" / "summary.json").stat().st_mtime_ns == mtime
    assert (d / "results.csv").read_text() == before


def test_interrupted_variant_resumes_from_its_checkpoint(tmp_path):
    spec = study.parse_spec({**TINY, "name": "resume", "base": {**TINY["base"], "epochs": 2}})

    def interrupt(run, row):
        if run.variant == "adam" and row["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        study.run_study(spec, "full", out=tmp_path, threads=1, log=lambda *a: None, on_epoch=interrupt)
    runs = tmp_path / "studies" / "resume-full" / "runs"
    assert (runs / "sgd-seed0" / "summary.json").is_file()
    assert (runs / "adam-seed0" / "checkpoint.pt").is_file() and not (runs / "adam-seed0" / "summary.json").exists()
    first = json.loads((runs / "adam-seed0" / "metrics.jsonl").read_text().splitlines()[0])
    sgd_mtime = (runs / "sgd-seed0" / "summary.json").stat().st_mtime_ns

    seen: list[tuple[str, int]] = []
    result = study.run_study(spec, "full", out=tmp_path, threads=1, log=lambda *a: None,
                             on_epoch=lambda run, row: seen.append((run.variant, row["epoch"])))
    assert seen == [("adam", 2)]  # sgd skipped, adam continued after its first epoch
    assert (runs / "sgd-seed0" / "summary.json").stat().st_mtime_ns == sgd_mtime
    rows = [json.loads(line) for line in (runs / "adam-seed0" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[0] == first  # epoch 1 kept, not retrained
    summary = json.loads((runs / "adam-seed0" / "summary.json").read_text())
    assert summary["epochs"] == 2
    csv_rows = {r["variant"]: r for r in read_csv(result["csv"])}
    assert float(csv_rows["adam"]["test_acc_mean"]) == pytest.approx(100 * summary["test_acc"])


def test_parallel_jobs_split_threads_and_isolate_failures(tmp_path):
    spec = study.parse_spec({**TINY, "name": "par", "grid": None,
                             "variants": [{"name": "sgd", "opt": "sgd"},
                                          {"name": "broken", "model_options": {"hidden": [16], "bogus": 1}}],
                             "paper": None})
    result = study.run_study(spec, "smoke", out=tmp_path, jobs=2, threads=2, log=lambda *a: None)
    d = tmp_path / "studies" / "par-smoke"
    assert [r.run.variant for r in result["failed"]] == ["broken"]
    assert TrainConfig.from_yaml(d / "runs" / "sgd-seed0" / "config.yaml").threads == 1
    rows = {r["variant"]: r for r in read_csv(result["csv"])}
    assert rows["sgd"]["status"] == "done" and not math.isnan(float(rows["sgd"]["test_acc_mean"]))
    assert "has no option 'bogus'" in rows["broken"]["status"]
    assert (d / "logs" / "broken-seed0.log").is_file()
