"""One call for a whole study, :func:`run_study`: plan it, then either print the plan (dry run) or
train what is unfinished, and write every output from the run folders.

The study folder gets ``spec.yaml`` and ``study.json`` (the spec as run and the plan) before any
training, and ``results.md``/``results.csv``, ``runs.csv``, ``plots/`` and ``report.html`` after.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from ..files import atomic_write_text
from .estimate import print_plan
from .execute import execute, run_evaluations
from .plan import Plan, PlannedRun, check_existing, plan_study
from .plots import make_plots
from .report import write_report
from .results import collect
from .spec import DEFAULT_BUDGET, StudySpec, load_spec
from .tables import markdown_table, table_rows, write_csv, write_markdown, write_runs_csv


def _write_study_files(plan: Plan, command: str) -> None:
    d = plan.study_dir
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_text(d / "spec.yaml", plan.spec.text)
    info = {"name": plan.spec.name, "source": plan.spec.source, "budget": plan.budget, "command": command,
            "overrides": plan.overrides, "jobs": plan.jobs, "threads_per_run": plan.threads,
            "runs": [{"variant": r.variant, "seed": r.seed, "run_dir": plan.relative(r.run_dir), "role": r.role,
                      **({"setting": r.setting} if r.role == "cv" else {})} for r in plan.all_runs]}
    atomic_write_text(d / "study.json", json.dumps(info, indent=2, default=str) + "\n")


def write_outputs(plan: Plan, command: str = "") -> dict[str, Any]:
    """Aggregate the run folders into results.md/.csv, runs.csv, plots and report.html."""
    variants = collect(plan)
    d = plan.study_dir
    d.mkdir(parents=True, exist_ok=True)
    header, rows = table_rows(plan, variants)
    write_markdown(plan, header, rows, d / "results.md", command)
    write_csv(plan, variants, d / "results.csv")
    write_runs_csv(plan, variants, d / "runs.csv")
    plots = make_plots(plan, variants)
    write_report(plan, variants, plots, d / "report.html", command)
    failed = [r for vr in variants for r in vr.results if r.status == "failed"]
    if plan.selection:
        atomic_write_text(d / "selection.json", json.dumps(plan.selection, indent=2, default=str) + "\n")
    return {"study_dir": d, "variants": variants, "table": (header, rows), "markdown": markdown_table(header, rows),
            "report": d / "report.html", "csv": d / "results.csv", "failed": failed, "plots": plots}


def run_study(spec: StudySpec | str | Path, budget: str = DEFAULT_BUDGET, out: str | Path = "runs", jobs: int = 1,
              overrides: dict[str, Any] | None = None, dry_run: bool = False, report_only: bool = False,
              threads: int | None = None, log: Callable[[str], None] = print, command: str = "",
              on_epoch: Callable[[PlannedRun, dict], None] | None = None,
              study_dir: str | Path | None = None) -> dict[str, Any]:
    """Plan, run (skipping finished runs, resuming interrupted ones) and report a study.

    Returns a dict with ``study_dir``, ``report``, ``csv``, ``markdown``, ``variants``,
    ``failed`` (runs that failed; the others still ran). ``on_epoch(run, row)`` is called
    after every epoch of runs trained in this process (``jobs == 1``).
    """
    if not isinstance(spec, StudySpec):
        spec = load_spec(spec)
    plan = plan_study(spec, budget, out, jobs, overrides, threads, study_dir)
    check_existing(plan)  # before anything is written: a changed spec must not mix with old runs
    if dry_run:
        info = print_plan(plan, log)
        return {"study_dir": plan.study_dir, "plan": plan, **info}
    _write_study_files(plan, command)
    eval_failures: list = []
    if not report_only:
        if any(sel["chosen"] is None for sel in plan.selection.values()):
            execute(plan, log, on_epoch, runs=plan.cv_runs)  # cross-validation first: it chooses settings
            plan = plan_study(spec, budget, out, jobs, overrides, threads, study_dir)
            check_existing(plan)
        pending = {v for v, sel in plan.selection.items() if sel["chosen"] is None}
        execute(plan, log, on_epoch, runs=[r for r in plan.all_runs if r.role == "cv" or r.variant not in pending])
        eval_failures = run_evaluations(plan, log)
    result = write_outputs(plan, command)
    result["failed_evaluations"] = eval_failures
    result["plan"] = plan
    return result
