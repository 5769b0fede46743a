"""Planning a study: the runs of a spec at a budget (variant x seed), each a validated
:class:`~cnnlab.config.TrainConfig` with its own run folder, and where each run stands on disk.

The study folder ``<out>/studies/<name>-<budget>/`` holds ``runs/`` (ordinary run folders),
``errors/`` (one file per failed run), ``logs/`` (worker output) and ``plots/``. A run's state
is read from its folder alone (summary written last, checkpoint, error file), so re-running a
study continues it.
"""
from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from ..config import ENGINE_KEYS, TrainConfig, field_default, parse_key_value
from ..errors import CnnlabError
from ..files import atomic_write_text
from ..runs import CHECKPOINT, CONFIG, SUMMARY, read_metrics
from .metrics import METRICS, mean_std
from .spec import BUDGETS, DEFAULT_BUDGET, StudySpec
from .variants import check_config_keys

# Built-in scaling of each budget: upper limits applied to every run unless the spec's
# ``budgets.<budget>`` (or ``--set``) names the key itself. ``full`` is the spec as written.
BUDGET_CAPS: dict[str, dict[str, float]] = {
    "smoke": {"epochs": 1, "train_subset": 512, "test_subset": 512},
    "small": {"epochs": 3, "train_subset": 10000},
    "full": {},
}
RUNS_DIR, LOGS_DIR, ERRORS_DIR, PLOTS_DIR, CV_DIR = "runs", "logs", "errors", "plots", "cv"


@dataclass
class PlannedRun:
    variant: str
    seed: int
    config: TrainConfig
    needs: list[str] = field(default_factory=list)  # runs (names) that must finish first: "@VARIANT" values
    evaluations: list[dict[str, Any]] = field(default_factory=list)  # {name, corrupt, denoiser} after training
    role: str = "run"  # "run", or "cv": a cross-validation run of the select: section (fold i of k)
    setting: str = ""  # cv runs: the grid point of select: it tries

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
    cv_runs: list[PlannedRun] = field(default_factory=list)  # select: the k-fold runs per variant and setting
    selection: dict[str, dict[str, Any]] = field(default_factory=dict)  # variant -> cnnlab.study.select result

    @property
    def all_runs(self) -> list[PlannedRun]:
        """Cross-validation runs first (the final runs of a selected variant wait for them), then the runs."""
        return self.cv_runs + self.runs

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
    """``--set KEY=VALUE`` items (values parsed as YAML) -> a dict of config keys.

    ``--set VARIANTS:KEY=VALUE`` sets the key only for the variants whose names match the glob
    VARIANTS, after the variants' own values (e.g. ``--set '*-faces:data_dir=~/faces'``); its key in
    the dict keeps the ``VARIANTS:`` prefix.
    """
    plain: dict[str, Any] = {}
    scoped: dict[str, Any] = {}
    for item in items or []:
        head = item.split("=", 1)[0]
        pattern, _, rest = item.partition(":") if ":" in head else ("", "", item)
        if ":" in head and not pattern.strip():
            raise CnnlabError(f"--set {item}: the variant pattern before ':' is empty")
        try:
            key, value = parse_key_value(rest)
        except CnnlabError as e:
            raise CnnlabError(f"--set: {e}") from None
        if pattern:
            key = next(iter(check_config_keys({key: value}, f"--set {pattern}:")))
            scoped[f"{pattern.strip()}:{key}"] = value
        else:
            plain[key] = value
    return {**check_config_keys(plain, "--set"), **scoped}


def _scoped(overrides: dict[str, Any], variant: str) -> dict[str, Any]:
    """The ``VARIANTS:KEY`` overrides whose glob matches ``variant``, as plain keys."""
    import fnmatch

    return {k.split(":", 1)[1]: v for k, v in overrides.items()
            if ":" in k and fnmatch.fnmatchcase(variant, k.split(":", 1)[0])}


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
    for k in overrides:
        if k.split(":", 1)[-1] in ("name", "out"):
            raise CnnlabError(f"--set {k}: the study names its run folders; use --out")
        if ":" in k and not any(_scoped({k: 0}, v.name) for v in spec.variants):
            raise CnnlabError(f"--set {k}=...: the pattern matches no variant of {spec.name} "
                              f"({', '.join(v.name for v in spec.variants)})")
    plain = {k: v for k, v in overrides.items() if ":" not in k}
    study_dir = Path(study_dir) if study_dir is not None else Path(out) / "studies" / f"{spec.name}-{budget}"
    budget_over = dict(spec.budgets.get(budget, {}))
    seeds = budget_over.pop("seeds", None) or (spec.seeds[:1] if budget == "smoke" else spec.seeds)
    per_run = max(1, (threads or cpu_count()) // jobs)  # the jobs split the CPU threads
    set_threads = "threads" in spec.base or "threads" in overrides or "threads" in budget_over
    def config(v, seed: int, extra: dict[str, Any], folder: str, name: str) -> tuple[TrainConfig, list[str]]:
        d: dict[str, Any] = {}
        scoped = _scoped(overrides, v.name)
        for layer in (spec.base, budget_over, plain, v.values, extra, scoped):
            for k, val in layer.items():
                _set(d, k, val)
        for k, cap in BUDGET_CAPS[budget].items():
            if k in budget_over or k in plain or k in scoped:
                continue
            cur = d.get(k, field_default(k))
            d[k] = cap if cur is None else min(cur, cap)
        needs = _resolve_references(spec, d, seed, study_dir, v.name)
        d.update(seed=seed, out=str(study_dir / folder), name=name)
        if not set_threads:
            d["threads"] = per_run
        if "progress" not in overrides:  # progress bars of parallel workers would interleave
            d["progress"] = bool(d.get("progress", True)) and jobs == 1
        return TrainConfig.from_dict(d, f"{spec.source}: variant {v.name!r}"), needs

    plan = Plan(spec, budget, study_dir, [], jobs, per_run, overrides)
    if spec.select is not None:  # cross-validation runs first; their choice applies to the runs below
        plan_selection(plan, seeds[0], config)
    for v in spec.variants:
        chosen = plan.selection.get(v.name, {}).get("values", {})  # the setting cross-validation chose
        for seed in seeds:
            cfg, needs = config(v, seed, chosen, RUNS_DIR, f"{v.folder}-seed{seed}")
            members = [str(study_dir / RUNS_DIR / f"{v.folder}-seed{s}") for s in seeds]  # ensemble evaluations
            evaluations = [_planned_evaluation(spec, e, seed, study_dir, needs, members) for e in spec.evaluations
                           if v.name in e.variants]
            plan.runs.append(PlannedRun(v.name, seed, cfg, needs, evaluations))
    plan.runs = _dependency_order(plan.runs)
    return plan


def _run_name(spec: StudySpec, variant: str, seed: int) -> str:
    return f"{spec.variant(variant).folder}-seed{seed}"


def _resolve_references(spec: StudySpec, d: dict[str, Any], seed: int, study_dir: Path, variant: str) -> list[str]:
    """Replace ``"@VARIANT"`` values (``features_from``, ``denoiser``) by that variant's run folder of the
    same seed; returns the names of the runs referred to (they must finish first)."""
    from .spec import REFERENCE_KEYS

    needs = []
    for key in REFERENCE_KEYS:
        value = d.get(key)
        if isinstance(value, str) and value.startswith("@"):
            name = _run_name(spec, value[1:], seed)
            d[key] = str(study_dir / RUNS_DIR / name)
            needs.append(name)
    return needs


def _planned_evaluation(spec: StudySpec, e, seed: int, study_dir: Path, needs: list[str],
                        members: list[str] | None = None) -> dict[str, Any]:
    denoiser = e.denoiser
    if isinstance(denoiser, str) and denoiser.startswith("@"):
        name = _run_name(spec, denoiser[1:], seed)
        denoiser = str(study_dir / RUNS_DIR / name)
        if name not in needs:
            needs.append(name)
    return {"name": e.name, "corrupt": e.corrupt, "denoiser": denoiser,
            "ensemble": members if getattr(e, "ensemble", False) else None}


def _dependency_order(runs: list[PlannedRun]) -> list[PlannedRun]:
    """The runs with every run after the runs it needs (otherwise in planned order)."""
    by_name = {r.name: r for r in runs}
    done: set[str] = set()
    ordered: list[PlannedRun] = []

    def visit(run: PlannedRun, path: tuple[str, ...]) -> None:
        if run.name in done:
            return
        if run.name in path:
            raise CnnlabError(f"study runs depend on each other in a circle: {' -> '.join(path + (run.name,))}")
        for n in run.needs:
            if n in by_name:
                visit(by_name[n], path + (run.name,))
        done.add(run.name)
        ordered.append(run)

    for r in runs:
        visit(r, ())
    return ordered


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
    The final runs of a variant whose setting cross-validation has not chosen yet are checked once it has.
    """
    pending = {v for v, sel in plan.selection.items() if sel.get("chosen") is None}
    for run in plan.all_runs:
        if run.role == "run" and run.variant in pending:
            continue
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


# ---------------------------------------------------------------- k-fold selection (a spec's select:)
# (docs: cnnlab/study/select.py, which reports the choice)


def plan_selection(plan: Plan, seed: int, config: Callable[..., tuple[Any, list[str]]]) -> None:
    """Add the cross-validation runs to ``plan`` and, where all of a variant's have finished, its choice."""
    select = plan.spec.select
    m = METRICS[select.metric]
    for name in select.variants:
        v = plan.spec.variant(name)
        scores: dict[str, list[float | None]] = {}
        for g in select.grid:
            scores[g.name] = []
            for i in range(1, select.folds + 1):
                run_name = f"{v.folder}+{g.folder}-fold{i}of{select.folds}-seed{seed}"
                cfg, needs = config(v, seed, {**g.values, "cv_fold": f"{i}/{select.folds}"}, CV_DIR, run_name)
                run = PlannedRun(name, seed, cfg, needs, [], "cv", g.name)
                plan.cv_runs.append(run)
                scores[g.name].append(_score(run, select.metric))
        means = {g: mean_std([x for x in xs if x is not None]) for g, xs in scores.items()}
        complete = all(x is not None for xs in scores.values() for x in xs)
        chosen = None
        if complete:
            pick = max if m.better == "higher" else min
            best = pick(means[g.name][0] for g in select.grid)
            chosen = next(g for g in select.grid if means[g.name][0] == best)
        plan.selection[name] = {"metric": select.metric, "folds": select.folds, "scores": scores,
                                "means": {g: ms[0] for g, ms in means.items()},
                                "stds": {g: ms[1] for g, ms in means.items()},
                                "chosen": chosen.name if chosen else None,
                                "values": dict(chosen.values) if chosen else {}}


def _score(run: PlannedRun, key: str) -> float | None:
    path = run.run_dir / SUMMARY
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return METRICS[key].value(summary, read_metrics(run.run_dir))
