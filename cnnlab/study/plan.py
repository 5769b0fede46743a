"""Planning a study: the runs of a spec at a budget (variant x seed), each a validated
:class:`~cnnlab.config.TrainConfig` with its own run folder, and where each run stands on disk.

The study folder ``<out>/studies/<name>-<budget>/`` holds ``runs/`` (ordinary run folders),
``errors/`` (one file per failed run), ``logs/`` (worker output) and ``plots/``. A run's state
is read from its folder alone (summary written last, checkpoint, error file), so re-running a
study continues it.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from ..config import ENGINE_KEYS, TrainConfig, field_default, parse_key_value
from ..errors import CnnlabError
from ..files import atomic_write_text
from ..runs import CHECKPOINT, CONFIG, SUMMARY
from .spec import BUDGETS, DEFAULT_BUDGET, StudySpec
from .variants import check_config_keys

# Built-in scaling of each budget: upper limits applied to every run unless the spec's
# ``budgets.<budget>`` (or ``--set``) names the key itself. ``full`` is the spec as written.
BUDGET_CAPS: dict[str, dict[str, float]] = {
    "smoke": {"epochs": 1, "train_subset": 512, "test_subset": 512},
    "small": {"epochs": 3, "train_subset": 10000},
    "full": {},
}
RUNS_DIR, LOGS_DIR, ERRORS_DIR, PLOTS_DIR = "runs", "logs", "errors", "plots"


@dataclass
class PlannedRun:
    variant: str
    seed: int
    config: TrainConfig

    @property
    def name(self) -> str:
        return str(self.config.name)

    @property
    def run_dir(self) -> Path:
        return Path(self.config.out) / str(self.config.name)


@dataclass
class Plan:
    spec: StudySpec
    budget: str
    study_dir: Path
    runs: list[PlannedRun]
    jobs: int
    threads: int  # per run
    overrides: dict[str, Any] = field(default_factory=dict)

    def runs_of(self, variant: str) -> list[PlannedRun]:
        return [r for r in self.runs if r.variant == variant]

    def relative(self, path: Path) -> str:
        """``path`` relative to the study folder, as the tables and the report show it."""
        try:
            return os.path.relpath(path, self.study_dir)
        except ValueError:  # another drive (Windows)
            return str(path)

    def command(self) -> str:
        """The command line that runs this plan, for outputs whose caller did not give its own."""
        return f"cnnlab study {self.spec.name} --budget {self.budget}"


# ------------------------------------------------------------------------------------ planning


def cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def parse_overrides(items: Sequence[str] | None) -> dict[str, Any]:
    """``--set KEY=VALUE`` items (values parsed as YAML) -> a dict of config keys."""
    out: dict[str, Any] = {}
    for item in items or []:
        try:
            key, value = parse_key_value(item)
        except CnnlabError as e:
            raise CnnlabError(f"--set: {e}") from None
        out[key] = value
    return check_config_keys(out, "--set")


def _set(d: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` in a config dict; ``a.b`` sets option ``b`` of the mapping ``a``."""
    if "." in key:
        head, rest = key.split(".", 1)
        d[head] = dict(d.get(head) or {})
        d[head][rest] = copy.deepcopy(value)
    else:
        d[key] = copy.deepcopy(value)


def plan_study(spec: StudySpec, budget: str = DEFAULT_BUDGET, out: str | Path = "runs", jobs: int = 1,
               overrides: dict[str, Any] | None = None, threads: int | None = None,
               study_dir: str | Path | None = None) -> Plan:
    """The runs of a study at a budget: variant x seed, each a validated :class:`TrainConfig`.

    Each config is built as: spec ``base`` -> ``budgets.<budget>`` -> ``--set`` overrides ->
    the variant's values -> the budget's built-in caps (``BUDGET_CAPS``, only for keys the
    spec's budget and ``--set`` leave alone) -> seed, run folder, threads.
    """
    if budget not in BUDGETS:
        raise CnnlabError(f"--budget must be one of {', '.join(BUDGETS)}, got {budget!r}")
    if jobs < 1:
        raise CnnlabError(f"--jobs must be >= 1, got {jobs}")
    overrides = dict(overrides or {})
    for k in ("name", "out"):
        if k in overrides:
            raise CnnlabError(f"--set {k}: the study names its run folders; use --out")
    study_dir = Path(study_dir) if study_dir is not None else Path(out) / "studies" / f"{spec.name}-{budget}"
    budget_over = dict(spec.budgets.get(budget, {}))
    seeds = budget_over.pop("seeds", None) or (spec.seeds[:1] if budget == "smoke" else spec.seeds)
    per_run = max(1, (threads or cpu_count()) // jobs)  # the jobs split the CPU threads
    set_threads = "threads" in spec.base or "threads" in overrides or "threads" in budget_over
    planned = []
    for v in spec.variants:
        for seed in seeds:
            d: dict[str, Any] = {}
            for layer in (spec.base, budget_over, overrides, v.values):
                for k, val in layer.items():
                    _set(d, k, val)
            for k, cap in BUDGET_CAPS[budget].items():
                if k in budget_over or k in overrides:
                    continue
                cur = d.get(k, field_default(k))
                d[k] = cap if cur is None else min(cur, cap)
            d.update(seed=seed, out=str(study_dir / RUNS_DIR), name=f"{v.folder}-seed{seed}")
            if not set_threads:
                d["threads"] = per_run
            if "progress" not in overrides:  # progress bars of parallel workers would interleave
                d["progress"] = bool(d.get("progress", True)) and jobs == 1
            cfg = TrainConfig.from_dict(d, f"{spec.source}: variant {v.name!r}")
            planned.append(PlannedRun(v.name, seed, cfg))
    return Plan(spec, budget, study_dir, planned, jobs, per_run, overrides)


# ------------------------------------------------------------------------------- run state on disk


def error_file(plan: Plan, run: PlannedRun) -> Path:
    return plan.study_dir / ERRORS_DIR / f"{run.name}.txt"


def record_failure(plan: Plan, run: PlannedRun, message: str) -> None:
    atomic_write_text(error_file(plan, run), message if message.endswith("\n") else message + "\n")


def run_status(plan: Plan, run: PlannedRun) -> str:
    """done | partial (interrupted, has a checkpoint) | failed | pending."""
    if (run.run_dir / SUMMARY).is_file():
        return "done"
    if error_file(plan, run).is_file():
        return "failed"
    if (run.run_dir / CHECKPOINT).is_file():
        return "partial"
    return "pending"


def _comparable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in ENGINE_KEYS}


def check_existing(plan: Plan) -> None:
    """Refuse to mix results: an existing run folder must hold the same config as planned.

    Engine settings (:data:`cnnlab.config.ENGINE_KEYS`: threads, device, where files go) may differ.
    """
    for run in plan.runs:
        path = run.run_dir / CONFIG
        if not path.is_file():
            continue
        try:
            stored = TrainConfig.from_dict(yaml.safe_load(path.read_text()) or {}, str(path)).to_dict()
        except (CnnlabError, yaml.YAMLError, TypeError):
            stored = {}
        want, have = _comparable(run.config.to_dict()), _comparable(stored)
        diff = [k for k in want if want[k] != have.get(k)]
        if diff:
            changes = ", ".join(f"{k}: {have.get(k)!r} -> {want[k]!r}" for k in diff[:4])
            raise CnnlabError(f"{run.run_dir} was trained with a different config ({changes}); the spec or "
                              f"--set changed since. Delete that folder to re-run it, or pass another --out")
