"""Collecting a study's results: each planned run's folder read back (status, summary, per-epoch
rows, error) and every reported metric's mean and sample std over the finished seeds of a variant.

The tables, plots and report are all drawn from what :func:`collect` returns, never from the
trainer's return values, so ``--report-only`` rebuilds them from the run folders alone.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..runs import EVALS, SUMMARY, read_metrics
from .metrics import METRICS, mean_std, metric
from .plan import Plan, PlannedRun, error_file, record_failure, run_status
from .variants import Variant


@dataclass
class RunResult:
    run: PlannedRun
    status: str
    summary: dict[str, Any]
    rows: list[dict[str, Any]]
    error: str = ""

    def value(self, key: str) -> float | None:
        return METRICS[key].value(self.summary, self.rows) if self.status == "done" else None


@dataclass
class VariantResult:
    variant: Variant
    results: list[RunResult]
    stats: dict[str, tuple[float | None, float | None, int]]  # metric -> (mean, std, n)

    @property
    def done(self) -> int:
        return sum(r.status == "done" for r in self.results)

    @property
    def status(self) -> str:
        n = len(self.results)
        failed = [r for r in self.results if r.status == "failed"]
        if failed:
            return f"failed: {failed[0].error}"
        if self.done == n:
            return "done"
        partial = sum(r.status == "partial" for r in self.results)
        return f"{self.done}/{n} done" + (f", {partial} interrupted" if partial else "")


def _read_run(plan: Plan, run: PlannedRun) -> RunResult:
    status = run_status(plan, run)
    summary: dict[str, Any] = {}
    if status == "done":
        try:
            summary = json.loads((run.run_dir / SUMMARY).read_text())
        except (OSError, ValueError) as e:
            status, summary = "failed", {}
            record_failure(plan, run, f"unreadable {run.run_dir / SUMMARY}: {e}")
    error = ""
    if status == "failed":
        path = error_file(plan, run)
        error = path.read_text().strip().splitlines()[0] if path.is_file() else "failed"
    if status == "done":  # named evaluations (a spec's evaluations:), read by the KIND@NAME metrics
        summary["evals"] = _evaluations(run.run_dir / EVALS)
    return RunResult(run, status, summary, read_metrics(run.run_dir), error)


def _evaluations(folder) -> dict[str, Any]:
    out = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            out[path.stem] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # a damaged file reads as a missing evaluation (n/a); the study redoes none by itself
    return out


def collect(plan: Plan) -> list[VariantResult]:
    """Every variant's runs as they stand on disk, with the mean ± std of each reported metric."""
    out = []
    for v in plan.spec.variants:
        results = [_read_run(plan, run) for run in plan.runs_of(v.name)]
        stats = {}
        evaluated = {metric(f"acc@{e.name}").key for e in plan.spec.evaluations}  # the accuracy-vs-level plots
        for key in set(plan.spec.metrics) | {plan.spec.headline} | evaluated:
            vals = [x for r in results if (x := r.value(key)) is not None]
            mean, std = mean_std(vals)
            stats[key] = (mean, std, len(vals))
        out.append(VariantResult(v, results, stats))
    return out
