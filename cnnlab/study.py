"""Studies: one command runs a paper's comparison and writes its table, plots and report.

A study spec (YAML) names a base training config and the axes to vary, either as a
full grid or as a list of named variants (or both), the seeds, what to report and,
optionally, the paper's own numbers and figures. ``cnnlab study SPEC`` then

1. plans the runs (variant x seed), scaled by ``--budget`` (smoke / small / full);
2. runs each one as an ordinary run (same :func:`cnnlab.train.train` as
   ``cnnlab train``) into ``<out>/studies/<name>-<budget>/runs/<variant>-seed<N>/``,
   in this process or in ``--jobs N`` worker processes that split the CPU threads;
   finished runs are skipped, interrupted ones resumed from their checkpoint and
   failed ones retried, so re-running the same command continues a study;
3. aggregates the run folders into ``results.md`` / ``results.csv`` (mean ± std over
   seeds, paper-vs-measured columns), ``runs.csv``, PNG plots in ``plots/`` and one
   self-contained ``report.html`` (images embedded) to open in a browser.

The spec format is documented in ``docs/studies.md``; the built-in specs live in
``cnnlab/studies/*.yaml`` (``cnnlab study --list``).
"""
from __future__ import annotations

import argparse
import base64
import copy
import csv
import dataclasses
import datetime
import difflib
import html
import io
import itertools
import json
import math
import os
import platform
import re
import shlex
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from .config import TrainConfig
from .errors import CnnlabError
from .runs import switch_epoch

BUDGETS = ("smoke", "small", "full")
DEFAULT_BUDGET = "small"
# Built-in scaling of each budget: upper limits applied to every run unless the spec's
# ``budgets.<budget>`` (or ``--set``) names the key itself. ``full`` is the spec as written.
BUDGET_CAPS: dict[str, dict[str, float]] = {
    "smoke": {"epochs": 1, "train_subset": 512, "test_subset": 512},
    "small": {"epochs": 3, "train_subset": 10000},
    "full": {},
}
SPEC_KEYS = ("name", "description", "reproduces", "source", "base", "grid", "variants", "combine", "seeds",
             "budgets", "report", "paper", "figures", "claims", "notes")
REPORT_KEYS = ("metrics", "headline", "curves", "curve_x")
VARIANT_RESERVED = ("name", "paper", "figure", "description")
# Config keys that say how (not what) to run: they may differ between a study's invocations.
ENGINE_KEYS = frozenset({"threads", "progress", "out", "name", "data_dir", "download", "device",
                         "eval_batch_size", "save_every"})
NAME_OK = re.compile(r"^[A-Za-z0-9._+=,-]+$")
RUNS_DIR, LOGS_DIR, ERRORS_DIR, PLOTS_DIR = "runs", "logs", "errors", "plots"
SUMMARY, CONFIG, CHECKPOINT = "summary.json", "config.yaml", "checkpoint.pt"  # as in cnnlab.runs


# =========================================================================== metrics


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def _pct(value: Any) -> float | None:
    v = _num(value)
    return None if v is None else 100.0 * v


def _err(value: Any) -> float | None:
    v = _num(value)
    return None if v is None else 100.0 * (1.0 - v)


def _last(rows: list[dict], key: str) -> Any:
    for r in reversed(rows):
        if r.get(key) is not None:
            return r[key]
    return None


def _summary_or_last(key: str) -> Callable[[dict, list[dict]], Any]:
    return lambda s, rows: s.get(key) if s.get(key) is not None else _last(rows, key)


@dataclass(frozen=True)
class Metric:
    """A reportable figure, in display units (fractions are shown as percentages)."""

    key: str
    label: str
    raw: Callable[[dict, list[dict]], Any]  # (summary, metrics rows) -> raw value
    convert: Callable[[Any], float | None] = _num
    better: str = ""  # "higher", "lower" or "" (no best to mark)
    digits: int = 2
    per_epoch: str | None = None  # metrics.jsonl key for learning curves

    def value(self, summary: dict, rows: list[dict]) -> float | None:
        return self.convert(self.raw(summary, rows))

    def epoch_value(self, row: dict) -> float | None:
        return self.convert(row.get(self.per_epoch)) if self.per_epoch else None


def _m(key, label, raw, convert=_num, better="", digits=2, per_epoch=None) -> Metric:
    return Metric(key, label, raw, convert, better, digits, per_epoch)


_S = _summary_or_last
METRICS: dict[str, Metric] = {m.key: m for m in (
    _m("test_acc", "Test acc (%)", _S("test_acc"), _pct, "higher", 2, "test_acc"),
    _m("test_error", "Test error (%)", _S("test_acc"), _err, "lower", 2, "test_acc"),
    _m("best_test_acc", "Best test acc (%)", _S("best_test_acc"), _pct, "higher"),
    _m("best_test_error", "Best test error (%)", _S("best_test_acc"), _err, "lower"),
    _m("train_acc", "Train acc (%)", lambda s, r: _last(r, "train_acc"), _pct, "higher", 2, "train_acc"),
    _m("train_error", "Train error (%)", lambda s, r: _last(r, "train_acc"), _err, "lower", 2, "train_acc"),
    _m("train_loss", "Train loss", lambda s, r: _last(r, "train_loss"), _num, "lower", 4, "train_loss"),
    _m("test_loss", "Test loss", lambda s, r: _last(r, "test_loss"), _num, "lower", 4, "test_loss"),
    _m("nll", "Test NLL", _S("nll"), _num, "lower", 4),
    _m("top5", "Top-5 acc (%)", _S("top5"), _pct, "higher"),
    _m("precision", "Precision (%)", _S("precision"), _pct, "higher"),
    _m("recall", "Recall (%)", _S("recall"), _pct, "higher"),
    _m("f1", "F1 (%)", _S("f1"), _pct, "higher"),
    _m("bep", "BEP (%)", _S("bep"), _pct, "higher"),
    _m("train_seconds", "Train time (s)", _S("train_seconds"), _num, "lower", 1, "elapsed"),
    _m("images_per_second", "Images/s", _S("images_per_second"), _num, "higher", 0, "images_per_second"),
    _m("params", "Params", _S("params"), _num, "", 0),
    _m("epochs", "Epochs", _S("epochs"), _num, "", 0),
    _m("lr", "Final lr", lambda s, r: _last(r, "lr"), _num, "", 5, "lr"),
    # the Adam->SGD switch (SADIE Sec. 3.3): where it fired and the learned SGD rate Lambda
    _m("switch_epoch", "Switch epoch", lambda s, r: (switch_epoch(r) or {}).get("epoch"), _num, "", 0),
    _m("switch_step", "Switch step", lambda s, r: _last(r, "switch_step"), _num, "", 0),
    _m("sgd_lr", "Learned SGD lr", lambda s, r: _last(r, "sgd_lr"), _num, "", 4, "sgd_lr_now"),
)}
CURVE_METRICS = [k for k, m in METRICS.items() if m.per_epoch and k != "train_seconds"]
CURVE_X = {"epoch": "epoch", "step": "optimizer step", "elapsed": "training seconds"}
DEFAULT_METRICS = ["test_acc", "best_test_acc", "f1", "train_seconds", "images_per_second", "params"]
DEFAULT_CURVES = ["test_acc", "train_loss"]


def metric(name: str, where: str = "metric") -> Metric:
    if name not in METRICS:
        close = difflib.get_close_matches(str(name), METRICS, 1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise CnnlabError(f"{where}: unknown metric {name!r}{hint}; choose from {', '.join(METRICS)}")
    return METRICS[name]


# =========================================================================== the spec


@dataclass
class Variant:
    name: str  # display name, used by paper:/figures: and the tables
    values: dict[str, Any]  # config overrides; dotted keys set nested options
    paper: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def folder(self) -> str:
        return re.sub(r"[^A-Za-z0-9._+=,-]", "_", self.name)


@dataclass
class FigureSpec:
    title: str
    variants: list[str]
    metric: str | None = None
    image: Path | None = None  # the paper's own figure, if the spec ships one
    caption: str = ""


@dataclass
class StudySpec:
    name: str
    source: str  # the spec file (or "built-in NAME")
    path: Path | None
    text: str  # the spec as written, for the report
    description: str = ""
    reproduces: str = ""
    paper_source: str = ""
    base: dict[str, Any] = field(default_factory=dict)
    variants: list[Variant] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    budgets: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    headline: str = "test_acc"
    curves: list[str] = field(default_factory=lambda: list(DEFAULT_CURVES))
    curve_x: str = "epoch"
    figures: list[FigureSpec] = field(default_factory=list)
    claims: list[str] = field(default_factory=list)
    notes: str = ""

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)

    def axes(self) -> list[str]:
        """The config keys that vary between variants, in first-seen order."""
        keys: list[str] = []
        for v in self.variants:
            keys += [k for k in v.values if k not in keys]
        return keys


def builtin_dir() -> Path:
    return Path(__file__).resolve().parent / "studies"


def builtin_specs() -> dict[str, Path]:
    d = builtin_dir()
    return {p.stem: p for p in sorted(d.glob("*.yaml"))} if d.is_dir() else {}


def resolve_spec_path(spec: str | Path) -> Path:
    """A spec file path, or the name of a built-in spec."""
    p = Path(spec)
    if p.is_file():
        return p
    builtins = builtin_specs()
    if str(spec) in builtins:
        return builtins[str(spec)]
    if p.suffix in (".yaml", ".yml") or "/" in str(spec):
        raise CnnlabError(f"{spec}: study spec not found")
    close = difflib.get_close_matches(str(spec), builtins, 1)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise CnnlabError(f"{spec}: no such spec file or built-in study{hint} (built-in: {', '.join(builtins)}; "
                      f"see cnnlab study --list)")


def load_spec(spec: str | Path) -> StudySpec:
    """Read and validate a spec file (or built-in spec name). Every mistake names the file and key."""
    path = resolve_spec_path(spec)
    try:
        text = path.read_text()
    except OSError as e:
        raise CnnlabError(f"{path}: cannot read study spec ({e.strerror or e})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise CnnlabError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
    return parse_spec(data, source=str(path), text=text, path=path)


def _fields() -> set[str]:
    return set(TrainConfig.field_names())


def _check_config_keys(values: dict[str, Any], where: str) -> dict[str, Any]:
    """Normalize dashes, reject unknown config keys (with a hint); dotted keys must start at a dict field."""
    fields = _fields()
    dict_fields = {f.name for f in dataclasses.fields(TrainConfig) if str(f.type).startswith("dict")}
    out = {}
    for key, value in values.items():
        k = str(key).replace("-", "_")
        head = k.split(".", 1)[0]
        if head not in fields:
            close = difflib.get_close_matches(head, fields, 1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise CnnlabError(f"{where}: unknown config key {key!r}{hint}")
        if "." in k and head not in dict_fields:
            raise CnnlabError(f"{where}: {key!r}: only option mappings ({', '.join(sorted(dict_fields))}) "
                              f"take dotted keys")
        out[k] = value
    return out


def _mapping(value: Any, where: str, allow_none: bool = True) -> dict:
    if value is None and allow_none:
        return {}
    if not isinstance(value, dict):
        raise CnnlabError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _label(key: str, value: Any) -> str:
    if isinstance(value, dict):
        text = ",".join(f"{k}={_label_value(v)}" for k, v in value.items())
    else:
        text = _label_value(value)
    return f"{key.split('.')[-1]}={text}"


def _label_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    if isinstance(v, (list, tuple)):
        return ",".join(map(_label_value, v))
    return str(v)


def _grid_variants(grid: Any, where: str) -> list[Variant]:
    grid = _mapping(grid, where)
    grid = _check_config_keys(grid, where)
    axes: list[list[tuple[str, str, Any]]] = []
    for key, values in grid.items():
        w = f"{where}.{key}"
        if isinstance(values, dict):  # label -> value
            if not values:
                raise CnnlabError(f"{w}: needs at least one value")
            axes.append([(key, "" if lab is None else str(lab), val) for lab, val in values.items()])
        elif isinstance(values, list):
            if not values:
                raise CnnlabError(f"{w}: needs at least one value")
            axes.append([(key, _label(key, val), val) for val in values])
        else:
            raise CnnlabError(f"{w}: expected a list of values or a mapping label: value, got {values!r}")
    out = []
    for combo in itertools.product(*axes):
        labels = [lab for _, lab, _ in combo if lab]
        out.append(Variant("+".join(labels) or "base", {k: v for k, _, v in combo}))
    return out


def _listed_variants(items: Any, where: str) -> list[Variant]:
    if not isinstance(items, list) or not items:
        raise CnnlabError(f"{where}: expected a non-empty list of variants (each a mapping with a name)")
    out = []
    for i, item in enumerate(items):
        w = f"{where}[{i}]"
        item = _mapping(item, w, allow_none=False)
        name = item.get("name")
        if name is None or str(name).strip() == "":
            raise CnnlabError(f"{w}: every variant needs a name")
        w = f"{where}[{name}]"
        values = {k: v for k, v in item.items() if k not in VARIANT_RESERVED}
        values = _check_config_keys(values, w)
        paper = _mapping(item.get("paper"), f"{w}.paper")
        v = Variant(str(name), values, dict(paper), str(item.get("description") or ""))
        if item.get("figure") is not None:
            v.paper = {**v.paper, "__figure__": item["figure"]}
        out.append(v)
    return out


def _seeds(value: Any, where: str) -> list[int]:
    if isinstance(value, bool):
        raise CnnlabError(f"{where}: expected a list of seeds or a count, got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise CnnlabError(f"{where}: a seed count must be >= 1, got {value}")
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) for s in value):
        if len(set(value)) != len(value):
            raise CnnlabError(f"{where}: seeds repeat: {value}")
        return list(value)
    raise CnnlabError(f"{where}: expected a list of integer seeds or a count, got {value!r}")


def parse_spec(data: Any, source: str = "spec", text: str | None = None, path: Path | None = None) -> StudySpec:
    """Validate a spec mapping (as loaded from YAML) into a :class:`StudySpec`."""
    if not isinstance(data, dict):
        raise CnnlabError(f"{source}: a study spec must be a mapping (name, base, grid/variants, ...)")
    unknown = [k for k in data if k not in SPEC_KEYS]
    if unknown:
        hints = [f"{k} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(str(k), SPEC_KEYS, 1)) else str(k)
                 for k in unknown]
        raise CnnlabError(f"{source}: unknown key {', '.join(hints)} (spec keys: {', '.join(SPEC_KEYS)})")
    default_name = path.stem if path is not None else "study"
    name = str(data.get("name") or default_name)
    if not NAME_OK.match(name):
        raise CnnlabError(f"{source}: name: {name!r} must be a plain folder name (letters, digits, . _ + = , -)")
    spec = StudySpec(name=name, source=source, path=path,
                     text=text if text is not None else yaml.safe_dump(data, sort_keys=False),
                     description=str(data.get("description") or "").strip(),
                     reproduces=str(data.get("reproduces") or "").strip(),
                     paper_source=str(data.get("source") or "").strip(),
                     notes=str(data.get("notes") or "").strip())

    base = _check_config_keys(_mapping(data.get("base"), f"{source}: base"), f"{source}: base")
    for k in ("name", "out"):
        if k in base:
            raise CnnlabError(f"{source}: base.{k}: set by the study (runs go to <out>/studies/<name>-<budget>/runs); "
                              f"use --out instead")
    spec.base = base

    grid = _grid_variants(data["grid"], f"{source}: grid") if data.get("grid") is not None else []
    listed = _listed_variants(data["variants"], f"{source}: variants") if data.get("variants") is not None else []
    combine = str(data.get("combine", "union"))
    if combine not in ("union", "product"):
        raise CnnlabError(f"{source}: combine: must be union or product, got {combine!r}")
    if combine == "product" and grid and listed:
        variants = [Variant(f"{v.name}+{g.name}", {**g.values, **v.values}, dict(v.paper), v.description)
                    for v in listed for g in grid]
    else:
        variants = grid + listed
    if not variants:
        variants = [Variant("base", {})]
    seen: dict[str, str] = {}
    for v in variants:
        if not NAME_OK.match(v.folder) or v.folder in (".", ".."):
            raise CnnlabError(f"{source}: variant name {v.name!r} cannot be a folder name")
        if v.folder in seen:
            raise CnnlabError(f"{source}: two variants are both named {v.name!r}" if seen[v.folder] == v.name else
                              f"{source}: variants {seen[v.folder]!r} and {v.name!r} map to the same folder {v.folder!r}")
        seen[v.folder] = v.name
    spec.variants = variants

    if "seeds" in data:
        spec.seeds = _seeds(data["seeds"], f"{source}: seeds")
    else:
        spec.seeds = _seeds([base.get("seed", 0)], f"{source}: base.seed")

    budgets = _mapping(data.get("budgets"), f"{source}: budgets")
    for b, over in budgets.items():
        if b not in BUDGETS:
            raise CnnlabError(f"{source}: budgets: unknown budget {b!r} (choose from {', '.join(BUDGETS)})")
        over = dict(_mapping(over, f"{source}: budgets.{b}"))
        seeds = over.pop("seeds", None)
        over = _check_config_keys(over, f"{source}: budgets.{b}")
        if seeds is not None:
            over["seeds"] = _seeds(seeds, f"{source}: budgets.{b}.seeds")
        spec.budgets[b] = over

    report = _mapping(data.get("report"), f"{source}: report")
    bad = [k for k in report if k not in REPORT_KEYS]
    if bad:
        raise CnnlabError(f"{source}: report: unknown key {', '.join(map(str, bad))} (report keys: {', '.join(REPORT_KEYS)})")
    if "metrics" in report:
        ms = report["metrics"]
        if not isinstance(ms, list) or not ms:
            raise CnnlabError(f"{source}: report.metrics: expected a non-empty list of metric names")
        spec.metrics = [metric(str(m), f"{source}: report.metrics").key for m in ms]
    spec.headline = metric(str(report.get("headline", spec.metrics[0])), f"{source}: report.headline").key
    if spec.headline not in spec.metrics:
        spec.metrics.insert(0, spec.headline)
    if "curves" in report:
        cs = report["curves"]
        if not isinstance(cs, list):
            raise CnnlabError(f"{source}: report.curves: expected a list of metric names")
        spec.curves = []
        for c in cs:
            m = metric(str(c), f"{source}: report.curves")
            if not m.per_epoch:
                raise CnnlabError(f"{source}: report.curves: {c!r} has no per-epoch values "
                                  f"(curves: {', '.join(CURVE_METRICS)})")
            spec.curves.append(m.key)
    spec.curve_x = str(report.get("curve_x", "epoch"))
    if spec.curve_x not in CURVE_X:
        raise CnnlabError(f"{source}: report.curve_x: must be one of {', '.join(CURVE_X)}, got {spec.curve_x!r}")

    names = [v.name for v in spec.variants]

    def known_variant(n: Any, where: str) -> str:
        if str(n) not in names:
            close = difflib.get_close_matches(str(n), names, 1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise CnnlabError(f"{where}: unknown variant {n!r}{hint}; the variants are {', '.join(names)}")
        return str(n)

    base_dir = path.parent if path is not None else Path(".")
    paper = _mapping(data.get("paper"), f"{source}: paper")
    for vname, values in paper.items():
        v = spec.variant(known_variant(vname, f"{source}: paper"))
        v.paper = {**_mapping(values, f"{source}: paper.{vname}", allow_none=False), **v.paper}
    for v in spec.variants:
        fig = v.paper.pop("__figure__", None)
        if fig is not None:
            spec.figures.append(FigureSpec(f"{v.name}: paper figure", [v.name], None, base_dir / str(fig)))
        for mk, val in v.paper.items():
            m = metric(str(mk), f"{source}: paper values of {v.name!r}")
            if m.key not in spec.metrics:
                spec.metrics.append(m.key)  # a paper figure is always shown next to its measurement
            if not isinstance(val, (int, float, str)) or isinstance(val, bool):
                raise CnnlabError(f"{source}: paper.{v.name}.{mk}: expected a number (or a short text), got {val!r}")

    figures = data.get("figures")
    if figures is not None:
        if not isinstance(figures, list):
            raise CnnlabError(f"{source}: figures: expected a list of {{title, variants, metric, image}}")
        for i, f in enumerate(figures):
            w = f"{source}: figures[{i}]"
            f = _mapping(f, w, allow_none=False)
            bad = [k for k in f if k not in ("title", "variants", "metric", "image", "caption")]
            if bad:
                raise CnnlabError(f"{w}: unknown key {', '.join(map(str, bad))} (title, variants, metric, image, caption)")
            vs = f.get("variants") or names
            if not isinstance(vs, list):
                raise CnnlabError(f"{w}.variants: expected a list of variant names")
            vs = [known_variant(n, f"{w}.variants") for n in vs]
            m = f.get("metric")
            if m is not None:
                mm = metric(str(m), f"{w}.metric")
                if not mm.per_epoch:
                    raise CnnlabError(f"{w}.metric: {m!r} has no per-epoch values (use one of {', '.join(CURVE_METRICS)})")
                m = mm.key
            image = base_dir / str(f["image"]) if f.get("image") else None
            spec.figures.append(FigureSpec(str(f.get("title") or f"Figure {i + 1}"), vs, m, image,
                                           str(f.get("caption") or "")))
    claims = data.get("claims") or []
    if isinstance(claims, str):
        claims = [claims]
    if not isinstance(claims, list):
        raise CnnlabError(f"{source}: claims: expected a list of sentences")
    spec.claims = [str(c) for c in claims]
    return spec


# =========================================================================== planning


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


def _set(d: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` in a config dict; ``a.b`` sets option ``b`` of the mapping ``a``."""
    if "." in key:
        head, rest = key.split(".", 1)
        d[head] = dict(d.get(head) or {})
        d[head][rest] = copy.deepcopy(value)
    else:
        d[key] = copy.deepcopy(value)


def _config_default(key: str) -> Any:
    for f in dataclasses.fields(TrainConfig):
        if f.name == key:
            if f.default is not dataclasses.MISSING:
                return f.default
            return f.default_factory()  # type: ignore[misc]
    raise KeyError(key)


def cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def parse_overrides(items: Sequence[str] | None) -> dict[str, Any]:
    """``--set KEY=VALUE`` items (values parsed as YAML) -> a dict of config keys."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise CnnlabError(f"--set: expected KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise CnnlabError(f"--set {key}: cannot parse value {value!r}") from None
    return _check_config_keys(out, "--set")


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
    total = threads or cpu_count()
    per_run = max(1, total // jobs)
    runs_dir = study_dir / RUNS_DIR
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
                cur = d.get(k, _config_default(k))
                d[k] = cap if cur is None else min(cur, cap)
            set_threads = "threads" in spec.base or "threads" in overrides or "threads" in budget_over
            d.update(seed=seed, out=str(runs_dir), name=f"{v.folder}-seed{seed}")
            if not set_threads:
                d["threads"] = per_run
            if "progress" not in overrides:
                d["progress"] = bool(d.get("progress", True)) and jobs == 1
            cfg = TrainConfig.from_dict(d, f"{spec.source}: variant {v.name!r}")
            planned.append(PlannedRun(v.name, seed, cfg))
    return Plan(spec, budget, study_dir, planned, jobs, per_run, overrides)


# =========================================================================== run state


def _error_file(plan: Plan, run: PlannedRun) -> Path:
    return plan.study_dir / ERRORS_DIR / f"{run.name}.txt"


def run_status(plan: Plan, run: PlannedRun) -> str:
    """done | partial (interrupted, has a checkpoint) | failed | pending."""
    if (run.run_dir / SUMMARY).is_file():
        return "done"
    if _error_file(plan, run).is_file():
        return "failed"
    if (run.run_dir / CHECKPOINT).is_file():
        return "partial"
    return "pending"


def _comparable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in ENGINE_KEYS}


def check_existing(plan: Plan) -> None:
    """Refuse to mix results: an existing run folder must hold the same config as planned."""
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


# =========================================================================== running


def _is_interrupt(e: BaseException) -> bool:
    """The trainer turns Ctrl-C into a CnnlabError("interrupted ..."); a study must stop, not go on."""
    return isinstance(e, KeyboardInterrupt) or isinstance(e.__context__, KeyboardInterrupt)


def _call_train(config: TrainConfig, on_epoch: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """One ordinary run: the same trainer as ``cnnlab train`` (resume=True continues or skips)."""
    from .train import train

    return train(config, resume=True, on_epoch=on_epoch)


def _record_failure(plan: Plan, run: PlannedRun, message: str) -> None:
    path = _error_file(plan, run)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(message if message.endswith("\n") else message + "\n")


def _first_line(text: str) -> str:
    """The message of a worker's log: its ``error:`` line, else the last line (a traceback's exception)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith("error: "):
            return ln[len("error: "):]
    return lines[-1] if lines else "failed"


def _fmt_seconds(s: float | None) -> str:
    if s is None:
        return "?"
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def _done_line(run: PlannedRun, summary: dict[str, Any], seconds: float) -> str:
    acc = _pct(summary.get("test_acc"))
    acc_text = f"test acc {acc:.2f}%" if acc is not None else "done"
    return f"{run.variant} seed {run.seed}: {acc_text} ({_fmt_seconds(seconds)})"


def execute(plan: Plan, log: Callable[[str], None] = print,
            on_epoch: Callable[[PlannedRun, dict], None] | None = None) -> list[PlannedRun]:
    """Run every unfinished run of the plan; returns the runs that failed (others keep going)."""
    todo = [r for r in plan.runs if run_status(plan, r) != "done"]
    if not todo:
        return []
    n_done = len(plan.runs) - len(todo)
    log(f"study {plan.spec.name} ({plan.budget}): {len(todo)} of {len(plan.runs)} runs to do"
        f"{f', {n_done} already finished' if n_done else ''}; {plan.jobs} job(s) x {plan.threads} thread(s) "
        f"-> {plan.study_dir}")
    if plan.jobs == 1:
        return _execute_inline(plan, todo, log, on_epoch)
    return _execute_parallel(plan, todo, log)


def _execute_inline(plan: Plan, todo: list[PlannedRun], log, on_epoch) -> list[PlannedRun]:
    failed = []
    for i, run in enumerate(todo, 1):
        status = run_status(plan, run)
        log(f"[{i}/{len(todo)}] {'resuming' if status == 'partial' else 'running'} {run.variant} seed {run.seed}")
        t0 = time.perf_counter()
        hook = (lambda row, _r=run: on_epoch(_r, row)) if on_epoch is not None else None
        try:
            summary = _call_train(copy.deepcopy(run.config), hook)
        except BaseException as e:  # noqa: BLE001 - a failed variant must not stop the others
            if _is_interrupt(e):
                raise KeyboardInterrupt from e
            if not isinstance(e, Exception):
                raise
            message = str(e) if isinstance(e, CnnlabError) else f"{type(e).__name__}: {e}"
            _record_failure(plan, run, message + "\n\n" + traceback.format_exc())
            failed.append(run)
            log(f"[{i}/{len(todo)}] FAILED {run.variant} seed {run.seed}: {message}")
            continue
        _error_file(plan, run).unlink(missing_ok=True)
        log(f"[{i}/{len(todo)}] {_done_line(run, summary, time.perf_counter() - t0)}")
    return failed


def _execute_parallel(plan: Plan, todo: list[PlannedRun], log) -> list[PlannedRun]:
    logs = plan.study_dir / LOGS_DIR
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[k] = str(plan.threads)
    pkg_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    queue = list(enumerate(todo, 1))
    running: dict[int, tuple[subprocess.Popen, PlannedRun, float, Any]] = {}
    failed: list[PlannedRun] = []
    try:
        while queue or running:
            while queue and len(running) < plan.jobs:
                i, run = queue.pop(0)
                cfg_path = logs / f"{run.name}.config.yaml"
                run.config.to_yaml(cfg_path)
                out = open(logs / f"{run.name}.log", "w")
                proc = subprocess.Popen([sys.executable, "-m", "cnnlab.study", "--worker", str(cfg_path)],
                                        stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
                running[i] = (proc, run, time.perf_counter(), out)
                log(f"[{i}/{len(todo)}] started {run.variant} seed {run.seed}")
            time.sleep(0.2)
            for i in list(running):
                proc, run, t0, out = running[i]
                if proc.poll() is None:
                    continue
                out.close()
                del running[i]
                summary_path = run.run_dir / SUMMARY
                if proc.returncode == 0 and summary_path.is_file():
                    _error_file(plan, run).unlink(missing_ok=True)
                    summary = json.loads(summary_path.read_text())
                    log(f"[{i}/{len(todo)}] {_done_line(run, summary, time.perf_counter() - t0)}")
                else:
                    text = (logs / f"{run.name}.log").read_text(errors="replace")
                    message = _first_line(text) if text.strip() else f"worker exited with status {proc.returncode}"
                    _record_failure(plan, run, f"{message}\n\n(exit status {proc.returncode}; full log: "
                                               f"{logs / (run.name + '.log')})\n\n{text[-4000:]}")
                    failed.append(run)
                    log(f"[{i}/{len(todo)}] FAILED {run.variant} seed {run.seed}: {message}")
    except BaseException:
        for proc, *_ in running.values():
            if proc.poll() is None:
                proc.terminate()
        for proc, _run, _t0, out in running.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            out.close()
        raise
    return failed


def worker_main(config_path: str) -> int:
    """``python -m cnnlab.study --worker CONFIG.yaml``: one run of a parallel study."""
    try:
        cfg = TrainConfig.from_yaml(config_path)
        _call_train(cfg)
    except KeyboardInterrupt:
        return 130
    except CnnlabError as e:
        traceback.print_exc()
        print(f"error: {e}", flush=True)
        return 2 if not _is_interrupt(e) else 130
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        return 1
    return 0


# =========================================================================== estimates (dry run)


def _dataset_facts(cfg: TrainConfig) -> tuple[int | None, int | None, int, int, int]:
    """(train images, test images, channels, side, classes) from the dataset registry, without loading."""
    from .data import DATASETS

    spec = DATASETS.get(cfg.data)
    n_train = n_test = None
    if m := re.search(r"([\d,_]+)\s*train", spec.splits):
        n_train = int(re.sub(r"[,_]", "", m.group(1)))
    if m := re.search(r"([\d,_]+)\s*test", spec.splits):
        n_test = int(re.sub(r"[,_]", "", m.group(1)))
    c, side = 3, 32
    if m := re.search(r"(\d+)\s*x\s*(\d+)\s*x\s*(\d+)", spec.shape):
        c, side = int(m.group(1)), int(m.group(2))
    classes = int(m.group(1)) if (m := re.match(r"\s*(\d+)", str(spec.num_classes))) else 10
    if cfg.image_size:
        side = cfg.image_size
    if cfg.channels:
        c = cfg.channels
    if n_train is not None and cfg.train_subset:
        n_train = min(n_train, cfg.train_subset)
    return n_train, n_test, c, side, classes


def _seconds_per_image(cfg: TrainConfig, c: int, side: int, classes: int, threads: int,
                       cache: dict[Any, float]) -> float:
    """Measure a few CPU/GPU training steps of the model at the run's input size (cached per model)."""
    import torch

    from .models import create_model

    # the activation, initialization and dropout hardly change the cost: measure once per architecture
    shape_kwargs = {k: v for k, v in cfg.model_kwargs().items() if k not in ("act", "init", "dropout")}
    key = (cfg.model, json.dumps(shape_kwargs, sort_keys=True, default=str), c, side, classes, threads, cfg.device)
    if key in cache:
        return cache[key]
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        device = torch.device("cuda" if cfg.device != "cpu" and torch.cuda.is_available() else "cpu")
        model = create_model(cfg.model, classes, c, image_size=side, **cfg.model_kwargs()).to(device)
        model.train()
        b = max(2, min(cfg.batch_size, 16))
        x = torch.randn(b, c, side, side, device=device)
        y = torch.randint(0, classes, (b,), device=device)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)

        def step():
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()

        step()
        t0 = time.perf_counter()
        n = 1
        for _ in range(n):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        per = (time.perf_counter() - t0) / (n * b)
    except CnnlabError:
        raise
    except Exception as e:  # noqa: BLE001 - a bad shape is a config problem of that variant
        raise CnnlabError(f"model {cfg.model!r} with {cfg.model_kwargs()} on {c}x{side}x{side}: "
                          f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    finally:
        torch.set_num_threads(old)
    cache[key] = per
    return per


def estimate_run(cfg: TrainConfig, threads: int, cache: dict[Any, float]) -> float | None:
    n_train, n_test, c, side, classes = _dataset_facts(cfg)
    per = _seconds_per_image(cfg, c, side, classes, threads, cache)
    if n_train is None:
        return None
    seconds = cfg.epochs * n_train * per
    if n_test:
        evals = math.ceil(cfg.epochs) // cfg.eval_every + 1
        seconds += evals * n_test * per / 3  # a forward pass costs about a third of a training step
    return seconds


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    return _label_value(value)


def print_plan(plan: Plan, log: Callable[[str], None] = print, measure: bool = True) -> dict[str, Any]:
    """The dry run: variants, seeds, key settings, status and estimated cost of each run."""
    spec = plan.spec
    cfg0 = plan.runs[0].config
    log(f"study {spec.name} ({plan.budget} budget): {len(spec.variants)} variants x "
        f"{len(plan.runs) // max(1, len(spec.variants))} seed(s) = {len(plan.runs)} runs -> {plan.study_dir}")
    if spec.reproduces:
        log(f"reproduces: {spec.reproduces}")
    log(f"base: data {cfg0.data}, model {cfg0.model}, epochs {cfg0.epochs:g}, batch {cfg0.batch_size}, "
        f"train_subset {cfg0.train_subset or 'all'}, opt {cfg0.opt} lr {cfg0.lr:g}, sched {cfg0.sched}; "
        f"{plan.jobs} job(s) x {plan.threads} thread(s)")
    rows = [("variant", "seed", "settings", "epochs", "train imgs", "status", "est. time")]
    cache: dict[Any, float] = {}
    total, unknown, problems = 0.0, 0, []
    for run in plan.runs:
        status = run_status(plan, run)
        v = spec.variant(run.variant)
        settings = ", ".join(f"{k}={_short(val)}" for k, val in v.values.items()) or "-"
        est: float | None = None
        if status == "done":
            try:
                est = float(json.loads((run.run_dir / SUMMARY).read_text()).get("train_seconds") or 0)
            except (OSError, ValueError):
                est = None
            cost = f"{_fmt_seconds(est)} (ran)"
        elif measure:
            try:
                est = estimate_run(run.config, plan.threads, cache)
                cost = _fmt_seconds(est)
                total += est or 0
                unknown += est is None
            except CnnlabError as e:
                cost = "error"
                problems.append(f"{run.variant}: {e}")
        else:
            cost = "-"
        try:
            n_train = _dataset_facts(run.config)[0]
        except CnnlabError as e:
            n_train = None
            problems.append(f"{run.variant}: {e}")
        rows.append((run.variant, str(run.seed), settings, f"{run.config.epochs:g}",
                     str(n_train if n_train is not None else "?"), status, cost))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        log("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    if measure:
        wall = total / plan.jobs
        more = f" (+{unknown} runs of unknown size)" if unknown else ""
        log(f"estimated cost of the runs to do: {_fmt_seconds(total)} of compute, about {_fmt_seconds(wall)} "
            f"wall time with --jobs {plan.jobs}{more} (measured from a few training steps; rough)")
    for p in dict.fromkeys(problems):
        log(f"problem: {p}")
    return {"total_seconds": total, "problems": problems}


# =========================================================================== aggregation


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


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n-1); std is None for a single value."""
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def collect(plan: Plan) -> list[VariantResult]:
    from .runs import read_metrics

    out = []
    for v in plan.spec.variants:
        results = []
        for run in plan.runs_of(v.name):
            status = run_status(plan, run)
            summary: dict[str, Any] = {}
            if status == "done":
                try:
                    summary = json.loads((run.run_dir / SUMMARY).read_text())
                except (OSError, ValueError) as e:
                    status, summary = "failed", {}
                    _record_failure(plan, run, f"unreadable {run.run_dir / SUMMARY}: {e}")
            error = ""
            if status == "failed":
                error = _error_file(plan, run).read_text().strip().splitlines()[0] if _error_file(plan, run).is_file() else "failed"
            results.append(RunResult(run, status, summary, read_metrics(run.run_dir), error))
        stats = {}
        for key in set(plan.spec.metrics) | {plan.spec.headline}:
            vals = [x for r in results if (x := r.value(key)) is not None]
            mean, std = mean_std(vals)
            stats[key] = (mean, std, len(vals))
        out.append(VariantResult(v, results, stats))
    return out


def _fmt(value: float | None, m: Metric) -> str:
    if value is None:
        return "n/a"
    if m.key == "params":
        return f"{value:,.0f}"
    return f"{value:.{m.digits}f}"


def fmt_stat(stat: tuple[float | None, float | None, int], m: Metric) -> str:
    mean, std, n = stat
    if mean is None:
        return "n/a"
    if std is None or m.key in ("params", "epochs"):
        return _fmt(mean, m)
    return f"{_fmt(mean, m)} ± {_fmt(std, m)}"


def _paper(v: Variant, key: str) -> Any:
    return v.paper.get(key)


def _paper_metrics(spec: StudySpec) -> set[str]:
    return {k for v in spec.variants for k in v.paper}


def _best(variants: list[VariantResult], key: str) -> float | None:
    m = METRICS[key]
    vals = [vr.stats[key][0] for vr in variants if vr.stats[key][0] is not None]
    if not vals or not m.better or len(vals) < 2:
        return None
    return max(vals) if m.better == "higher" else min(vals)


def table_rows(plan: Plan, variants: list[VariantResult], markup: Callable[[str], str] = lambda s: f"**{s}**"
               ) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the results table (strings), paper columns next to their measurement."""
    spec = plan.spec
    axes = spec.axes()
    with_paper = _paper_metrics(spec)
    n_seeds = len(plan.runs_of(spec.variants[0].name)) if spec.variants else 1
    header = ["Variant"] + axes + (["Seeds"] if n_seeds > 1 else [])
    for key in spec.metrics:
        m = METRICS[key]
        header.append(m.label)
        if key in with_paper:
            header += ["Paper", "Δ"]
    header.append("Status")
    rows = []
    for vr in variants:
        v = vr.variant
        row = [v.name] + [_short(v.values[a]) if a in v.values else "" for a in axes]
        if n_seeds > 1:
            row.append(f"{vr.done}/{len(vr.results)}")
        for key in spec.metrics:
            m = METRICS[key]
            text = fmt_stat(vr.stats[key], m)
            best = _best(variants, key)
            if best is not None and vr.stats[key][0] == best:
                text = markup(text)
            row.append(text)
            if key in with_paper:
                p = _paper(v, key)
                row.append("" if p is None else (_fmt(float(p), m) if isinstance(p, (int, float)) else str(p)))
                mean = vr.stats[key][0]
                row.append(f"{mean - p:+.{m.digits}f}" if isinstance(p, (int, float)) and mean is not None else "")
        row.append(vr.status)
        rows.append(row)
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    def cell(s: str) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |",
             "|" + "|".join("---" if i < 1 else "---:" if _numeric_col(rows, i) else "---" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _numeric_col(rows: list[list[str]], i: int) -> bool:
    vals = [r[i].strip("*") for r in rows if r[i] not in ("", "n/a")]
    return bool(vals) and all(re.match(r"^[+-]?[\d,]+(\.\d+)?( ± [\d,.]+)?$", v) for v in vals)


def write_csv(plan: Plan, variants: list[VariantResult], path: Path) -> None:
    spec = plan.spec
    axes = spec.axes()
    with_paper = _paper_metrics(spec)
    header = ["variant"] + axes + ["seeds_done", "seeds_planned"]
    for key in spec.metrics:
        header += [f"{key}_mean", f"{key}_std", f"{key}_n"] + ([f"paper_{key}"] if key in with_paper else [])
    header.append("status")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for vr in variants:
        v = vr.variant
        row: list[Any] = [v.name] + [_short(v.values[a]) if a in v.values else "" for a in axes]
        row += [vr.done, len(vr.results)]
        for key in spec.metrics:
            mean, std, n = vr.stats[key]
            row += [_csv_num(mean), _csv_num(std), n]
            if key in with_paper:
                row.append(_paper(v, key) if _paper(v, key) is not None else "")
        row.append(vr.status)
        w.writerow(row)
    _write_text(path, buf.getvalue())


def write_runs_csv(plan: Plan, variants: list[VariantResult], path: Path) -> None:
    keys = list(dict.fromkeys(plan.spec.metrics + [plan.spec.headline]))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["variant", "seed", "status", "run_dir"] + keys + ["error"])
    for vr in variants:
        for r in vr.results:
            w.writerow([vr.variant.name, r.run.seed, r.status, _rel(r.run.run_dir, plan.study_dir)]
                       + [_csv_num(r.value(k)) for k in keys] + [r.error])
    _write_text(path, buf.getvalue())


def _csv_num(x: float | None) -> str:
    return "" if x is None else repr(float(x))


def _rel(path: Path, start: Path) -> str:
    try:
        return os.path.relpath(path, start)
    except ValueError:
        return str(path)


def _write_text(path: Path, text: str) -> None:
    from .files import atomic_write_text

    atomic_write_text(path, text)
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)  # the atomic temp file is private; a report is for reading


# =========================================================================== plots


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colors(n: int) -> list:
    plt = _plt()
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=100, bbox_inches="tight")
    _plt().close(fig)
    tmp.replace(path)


def _curve(vr: VariantResult, key: str, x_key: str) -> tuple[list[float], list[float], list[float | None]]:
    """Mean (and std) over the seeds of a per-epoch metric, against epoch / step / elapsed seconds."""
    m = METRICS[key]
    by_epoch: dict[int, list[tuple[float, float]]] = {}
    for r in vr.results:
        for row in r.rows:
            y = m.epoch_value(row)
            x = row.get(x_key) if x_key != "epoch" else row.get("epoch")
            if y is None or x is None or row.get("epoch") is None:
                continue
            by_epoch.setdefault(int(row["epoch"]), []).append((float(x), y))
    xs, ys, sds = [], [], []
    for e in sorted(by_epoch):
        pts = by_epoch[e]
        xs.append(sum(p[0] for p in pts) / len(pts))
        mean, std = mean_std([p[1] for p in pts])
        ys.append(mean)  # type: ignore[arg-type]
        sds.append(std)
    return xs, ys, sds


def plot_curves(plan: Plan, variants: list[VariantResult], key: str, path: Path, title: str = "",
                only: Sequence[str] | None = None) -> bool:
    chosen = [vr for vr in variants if only is None or vr.variant.name in only]
    curves = [(vr, _curve(vr, key, plan.spec.curve_x)) for vr in chosen]
    curves = [(vr, c) for vr, c in curves if c[0]]
    if not curves:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    colors = _colors(len(variants))
    index = {vr.variant.name: i for i, vr in enumerate(variants)}
    for vr, (xs, ys, sds) in curves:
        color = colors[index[vr.variant.name]]
        ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, color=color, label=vr.variant.name)
        if any(s is not None for s in sds):
            lo = [y - (s or 0) for y, s in zip(ys, sds)]
            hi = [y + (s or 0) for y, s in zip(ys, sds)]
            ax.fill_between(xs, lo, hi, color=color, alpha=0.15, linewidth=0)
    if plan.spec.curve_x in ("epoch", "step"):
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel=CURVE_X[plan.spec.curve_x], ylabel=METRICS[key].label,
           title=title or f"{METRICS[key].label} — {plan.spec.name} ({plan.budget})")
    ax.grid(alpha=0.3)
    if len(curves) > 6:
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    else:
        ax.legend(fontsize=8)
    _save(fig, path)
    return True


def plot_bars(plan: Plan, variants: list[VariantResult], key: str, path: Path) -> bool:
    m = METRICS[key]
    vals = [vr.stats[key] for vr in variants]
    if all(s[0] is None for s in vals):
        return False
    plt = _plt()
    names = [vr.variant.name for vr in variants]
    paper = [_paper(vr.variant, key) for vr in variants]
    has_paper = any(isinstance(p, (int, float)) for p in paper)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.75 * len(names) + 2), 4.5))
    xs = list(range(len(names)))
    width = 0.4 if has_paper else 0.7
    shift = width / 2 if has_paper else 0.0
    means = [s[0] if s[0] is not None else 0.0 for s in vals]
    errs = [s[1] or 0.0 for s in vals]
    bars = ax.bar([x - shift for x in xs], means, width, yerr=errs if any(errs) else None, capsize=4, color=_colors(len(names)),
                  edgecolor="black", linewidth=0.5, label="measured (mean ± std)")
    for b, s in zip(bars, vals):
        if s[0] is None:
            b.set_alpha(0.0)
    if has_paper:
        ax.bar([x + shift for x in xs], [p if isinstance(p, (int, float)) else 0 for p in paper], width,
               color="white", edgecolor="black", hatch="//", linewidth=0.5, label="paper")
        ax.legend(fontsize=8)
    ax.set_xticks(xs)
    ax.set_xticklabels(names, rotation=35 if len(names) > 4 else 0, ha="right" if len(names) > 4 else "center")
    ax.set(ylabel=m.label, title=f"{m.label} — {plan.spec.name} ({plan.budget})")
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)
    return True


def make_plots(plan: Plan, variants: list[VariantResult]) -> dict[str, Any]:
    """All PNGs of the report; returns {"headline": path, "curves": [...], "figures": [(FigureSpec, path)]}."""
    out_dir = plan.study_dir / PLOTS_DIR
    made: dict[str, Any] = {"headline": None, "curves": [], "figures": []}
    p = out_dir / f"bar_{plan.spec.headline}.png"
    if plot_bars(plan, variants, plan.spec.headline, p):
        made["headline"] = p
    for key in plan.spec.curves:
        p = out_dir / f"curves_{key}.png"
        if plot_curves(plan, variants, key, p):
            made["curves"].append(p)
    for i, f in enumerate(plan.spec.figures, 1):
        key = f.metric or (plan.spec.curves[0] if plan.spec.curves else "test_acc")
        p = out_dir / f"figure_{i}.png"
        ok = plot_curves(plan, variants, key, p, title=f"measured: {', '.join(f.variants)}", only=f.variants)
        made["figures"].append((f, p if ok else None))
    return made


# =========================================================================== report


def _img(path: Path | None, alt: str) -> str:
    if path is None or not Path(path).is_file():
        return f'<div class="missing">{html.escape(alt)}: not available</div>'
    mime = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
            ".svg": "image/svg+xml", ".webp": "image/webp"}.get(Path(path).suffix.lower(), "image/png")
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:{mime};base64,{data}">'


def _html_table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    out = [f'<table class="{cls}"><thead><tr>' + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead><tbody>"]
    for r in rows:
        cells = []
        for c in r:
            text = html.escape(str(c))
            text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
            num = bool(re.match(r"^[+-]?[\d,]+(\.\d+)?( ± [\d,.]+)?$", str(c).strip("*")))
            cells.append(f'<td class="{"num" if num else ""}">{text}</td>')
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.3em .6em}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}tbody tr:nth-child(even){background:#fafafa}
table.meta td:first-child{font-weight:bold;background:#f7f7f7}
pre{background:#f6f8fa;border:1px solid #ddd;padding:.8em;overflow:auto;font-size:.85em}
img{max-width:100%;border:1px solid #eee}.pair{display:flex;gap:1em;flex-wrap:wrap;align-items:flex-start}
.pair>div{flex:1 1 45%;min-width:320px}.missing{border:1px dashed #aaa;padding:2em;color:#777;text-align:center}
.note{color:#555;font-size:.9em}.fail{color:#a00}
"""


def write_report(plan: Plan, variants: list[VariantResult], plots: dict[str, Any], path: Path,
                 command: str = "") -> None:
    spec = plan.spec
    header, rows = table_rows(plan, variants)
    n_done = sum(r.status == "done" for vr in variants for r in vr.results)
    n_failed = sum(r.status == "failed" for vr in variants for r in vr.results)
    import torch

    from . import __version__

    cfg0 = plan.runs[0].config
    meta = [
        ("Study", f"{spec.name} ({spec.source})"),
        ("Budget", f"{plan.budget}: epochs {cfg0.epochs:g}, train images "
                   f"{cfg0.train_subset if cfg0.train_subset else 'all'}, seeds {sorted({r.seed for r in plan.runs})}"),
        ("Runs", f"{n_done} of {len(plan.runs)} finished" + (f", {n_failed} failed" if n_failed else "")),
        ("Command", command or f"cnnlab study {spec.name} --budget {plan.budget}"),
        ("Written", datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")),
        ("Machine", f"{platform.machine()} {cpu_count()} CPU threads, Python {platform.python_version()}, "
                    f"torch {torch.__version__}, cnnlab {__version__}"),
    ]
    if spec.reproduces:
        meta.insert(1, ("Reproduces", spec.reproduces))
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(spec.name)} study "
             f"({html.escape(plan.budget)})</title><style>{CSS}</style></head><body>",
             f"<h1>Study: {html.escape(spec.name)} <small>({html.escape(plan.budget)} budget)</small></h1>"]
    if spec.description:
        parts.append(f"<p>{html.escape(spec.description)}</p>")
    parts.append("<table class='meta'><tbody>" + "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in meta) + "</tbody></table>")
    if spec.notes:
        parts.append(f"<p class='note'>{html.escape(spec.notes)}</p>")
    parts.append("<h2>Results</h2>")
    parts.append(_html_table(header, rows))
    parts.append(f"<p class='note'>Measured values are the mean ± sample standard deviation over the finished "
                 f"seeds of each variant; <b>bold</b> marks the best measured value of a column. “Paper” columns "
                 f"are the paper's figures as given in the spec, Δ = measured − paper. Headline metric: "
                 f"{html.escape(METRICS[spec.headline].label)}. A {html.escape(plan.budget)} budget is not the "
                 f"paper's setting unless it is <i>full</i>.</p>")
    if spec.claims:
        parts.append("<h2>The paper's observations</h2><ul>" +
                     "".join(f"<li>{html.escape(c)}</li>" for c in spec.claims) + "</ul>")
    if plots.get("headline"):
        parts.append(f"<h2>{html.escape(METRICS[spec.headline].label)}</h2>" + _img(plots["headline"], "headline"))
    if plots.get("curves"):
        parts.append("<h2>Learning curves</h2>")
        parts.append("<div class='pair'>" + "".join(f"<div>{_img(p, p.stem)}</div>" for p in plots["curves"])
                     + "</div>")
    if plots.get("figures"):
        parts.append("<h2>Paper figures and measured curves</h2>")
        for f, p in plots["figures"]:
            parts.append(f"<h3>{html.escape(f.title)}</h3>")
            if f.caption:
                parts.append(f"<p class='note'>{html.escape(f.caption)}</p>")
            paper_img = _img(f.image, "paper figure") if f.image else \
                '<div class="missing">the paper\'s figure is not shipped with this spec</div>'
            parts.append(f"<div class='pair'><div><b>Paper</b><br>{paper_img}</div>"
                         f"<div><b>Measured</b><br>{_img(p, 'measured curves')}</div></div>")
    run_rows = []
    for vr in variants:
        for r in vr.results:
            run_rows.append([vr.variant.name, str(r.run.seed), r.status,
                             _fmt(r.value(spec.headline), METRICS[spec.headline]),
                             _fmt(r.value("train_seconds"), METRICS["train_seconds"]),
                             _rel(r.run.run_dir, plan.study_dir), r.error])
    parts.append("<h2>Runs</h2>")
    parts.append(_html_table(["Variant", "Seed", "Status", METRICS[spec.headline].label, "Train time (s)",
                              "Run folder", "Error"], run_rows))
    failures = [r for vr in variants for r in vr.results if r.status == "failed"]
    if failures:
        parts.append("<h2 class='fail'>Failures</h2>")
        for r in failures:
            text = _error_file(plan, r.run).read_text() if _error_file(plan, r.run).is_file() else r.error
            parts.append(f"<h3>{html.escape(r.run.variant)} seed {r.run.seed}</h3><pre>{html.escape(text[-3000:])}</pre>")
    parts.append("<h2>Variants</h2>")
    parts.append(_html_table(["Variant", "Config changes", "Config of its first run"],
                             [[v.name, ", ".join(f"{k}={_short(x)}" for k, x in v.values.items()) or "-",
                               _rel(plan.runs_of(v.name)[0].run_dir / CONFIG, plan.study_dir)] for v in spec.variants]))
    parts.append("<h2>Spec</h2>")
    parts.append(f"<pre>{html.escape(spec.text)}</pre>")
    if plan.overrides:
        parts.append(f"<p>--set overrides: <code>{html.escape(json.dumps(plan.overrides))}</code></p>")
    parts.append("</body></html>")
    _write_text(path, "\n".join(parts))


def write_outputs(plan: Plan, command: str = "") -> dict[str, Any]:
    """Aggregate the run folders into results.md/.csv, runs.csv, plots and report.html."""
    variants = collect(plan)
    d = plan.study_dir
    d.mkdir(parents=True, exist_ok=True)
    header, rows = table_rows(plan, variants)
    spec = plan.spec
    md = [f"# {spec.name} ({plan.budget} budget)", ""]
    if spec.reproduces:
        md += [f"Reproduces: {spec.reproduces}", ""]
    md += [f"Command: `{command or f'cnnlab study {spec.name} --budget {plan.budget}'}`", "",
           markdown_table(header, rows), "",
           "Mean ± sample std over the finished seeds; bold = best measured; Paper = the paper's value, "
           "Δ = measured − paper.", ""]
    _write_text(d / "results.md", "\n".join(md))
    write_csv(plan, variants, d / "results.csv")
    write_runs_csv(plan, variants, d / "runs.csv")
    plots = make_plots(plan, variants)
    write_report(plan, variants, plots, d / "report.html", command)
    failed = [r for vr in variants for r in vr.results if r.status == "failed"]
    return {"study_dir": d, "variants": variants, "table": (header, rows), "markdown": markdown_table(header, rows),
            "report": d / "report.html", "csv": d / "results.csv", "failed": failed, "plots": plots}


def _write_study_files(plan: Plan, command: str) -> None:
    d = plan.study_dir
    d.mkdir(parents=True, exist_ok=True)
    _write_text(d / "spec.yaml", plan.spec.text)
    info = {"name": plan.spec.name, "source": plan.spec.source, "budget": plan.budget, "command": command,
            "overrides": plan.overrides, "jobs": plan.jobs, "threads_per_run": plan.threads,
            "runs": [{"variant": r.variant, "seed": r.seed, "run_dir": _rel(r.run_dir, d)} for r in plan.runs]}
    _write_text(d / "study.json", json.dumps(info, indent=2, default=str) + "\n")


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
    check_existing(plan)
    if dry_run:
        info = print_plan(plan, log)
        return {"study_dir": plan.study_dir, "plan": plan, **info}
    _write_study_files(plan, command)
    if not report_only:
        execute(plan, log, on_epoch)
    result = write_outputs(plan, command)
    result["plan"] = plan
    return result


# =========================================================================== command line


def list_studies(log: Callable[[str], None] = print) -> None:
    rows = [("name", "reproduces", "description")]
    for name, path in builtin_specs().items():
        try:
            spec = load_spec(path)
            rows.append((name, spec.reproduces or "-", spec.description.splitlines()[0] if spec.description else ""))
        except CnnlabError as e:
            rows.append((name, "-", f"(invalid spec: {e})"))
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    for r in rows:
        log(f"{r[0].ljust(widths[0])}  {r[1].ljust(widths[1])}  {r[2]}")
    log("run one with: cnnlab study NAME [--budget smoke|small|full] [--jobs N] [--dry-run]")


def add_study_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", nargs="?", metavar="SPEC", help="study spec YAML file, or the name of a built-in study "
                                                            "(see --list)")
    p.add_argument("--list", action="store_true", help="list the built-in studies and the paper tables they reproduce")
    p.add_argument("--budget", choices=BUDGETS, default=DEFAULT_BUDGET,
                   help="smoke: ~1 minute check; small: a CPU-sized run (minutes); full: the paper's setting "
                        f"(default: {DEFAULT_BUDGET})")
    p.add_argument("-j", "--jobs", type=int, default=1, help="run this many variants in parallel processes, "
                                                            "splitting the CPU threads between them (default 1)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads to split between the jobs (default: all)")
    p.add_argument("--dry-run", action="store_true", help="print the plan (variants, settings, estimated cost); "
                                                          "train nothing")
    p.add_argument("--out", default="runs", help="parent folder; the study goes to OUT/studies/<name>-<budget>/ "
                                                 "(default: runs)")
    p.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE", default=[],
                   help="override a base config key for every variant, e.g. --set data_dir=~/data (repeatable)")
    p.add_argument("--report-only", action="store_true", help="rebuild the tables, plots and report from the "
                                                              "run folders without training")


def add_study_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``cnnlab study`` on the CLI's subparsers (sets ``func=run_study_command``)."""
    p = subparsers.add_parser("study", help="run a paper's comparison: a grid of runs -> table, plots, report",
                              description="Run a study spec: every variant as an ordinary run, then a table "
                                          "(Markdown + CSV), plots and a self-contained HTML report. Re-running "
                                          "continues where it stopped. See docs/studies.md.")
    add_study_arguments(p)
    p.set_defaults(func=run_study_command)
    return p


def run_study_command(args: argparse.Namespace) -> int:
    """The ``cnnlab study`` command; returns the exit status (1 when some runs failed)."""
    if args.list:
        list_studies()
        return 0
    if not args.spec:
        raise CnnlabError("name a study spec file or a built-in study (cnnlab study --list shows them)")
    command = "cnnlab study " + " ".join(shlex.quote(a) for a in _command_args(args))
    result = run_study(args.spec, budget=args.budget, out=args.out, jobs=args.jobs,
                       overrides=parse_overrides(args.overrides), dry_run=args.dry_run,
                       report_only=args.report_only, threads=args.threads, command=command)
    if args.dry_run:
        return 0
    print()
    print(result["markdown"])
    print(f"\ntable: {result['study_dir'] / 'results.md'} (and results.csv); report: {result['report']}")
    if result["failed"]:
        names = ", ".join(f"{r.run.variant} seed {r.run.seed}" for r in result["failed"])
        print(f"{len(result['failed'])} run(s) failed: {names}; re-run the same command to retry them",
              file=sys.stderr)
        return 1
    return 0


def _command_args(args: argparse.Namespace) -> list[str]:
    out = [str(args.spec), "--budget", args.budget]
    if args.jobs != 1:
        out += ["--jobs", str(args.jobs)]
    if args.out != "runs":
        out += ["--out", str(args.out)]
    for o in args.overrides:
        out += ["--set", o]
    return out


def study_main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point (``python -m cnnlab.study ...``); same flags as ``cnnlab study``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--worker"]:
        if len(argv) != 2:
            print("usage: python -m cnnlab.study --worker CONFIG.yaml", file=sys.stderr)
            return 2
        return worker_main(argv[1])
    p = argparse.ArgumentParser(prog="cnnlab study", description="Run a study spec (see docs/studies.md).")
    add_study_arguments(p)
    args = p.parse_args(argv)
    try:
        return run_study_command(args)
    except CnnlabError as e:
        print(f"cnnlab study: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cnnlab study: interrupted; re-run the same command to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(study_main())
