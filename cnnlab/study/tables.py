"""The results tables: one row per variant (mean ± std, paper value and Δ next to each measured
metric) as ``results.md`` and ``results.csv``, and one row per run as ``runs.csv``.

The Markdown and HTML tables share :func:`table_rows`; the CSV files hold the same numbers
unrounded.
"""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any, Callable

from ..files import atomic_write_text
from .metrics import METRICS, Metric
from .plan import Plan
from .results import VariantResult
from .variants import short_value

# a cell that holds a number (right-aligned): 1,234 / -0.5 / 81.00 ± 1.00
NUMBER = re.compile(r"^[+-]?[\d,]+(\.\d+)?( ± [\d,.]+)?$")
TABLE_NOTE = ("Mean ± sample std over the finished seeds; bold = best measured; Paper = the paper's value, "
              "Δ = measured − paper. Test = the test split, evaluated once at the end of each run with the weights "
              "chosen on its validation split (nothing is chosen on test); Val = the validation split (held out of "
              "the training split); Train = the training batches.")


def fmt_stat(stat: tuple[float | None, float | None, int], m: Metric) -> str:
    mean, std, n = stat
    if mean is None:
        return "n/a"
    if std is None or m.key in ("params", "epochs"):
        return m.format(mean)
    return f"{m.format(mean)} ± {m.format(std)}"


def _best(variants: list[VariantResult], key: str) -> float | None:
    """The best mean of a column, when the metric has a direction and there is something to compare."""
    m = METRICS[key]
    vals = [vr.stats[key][0] for vr in variants if vr.stats[key][0] is not None]
    if not vals or not m.better or len(vals) < 2:
        return None
    return max(vals) if m.better == "higher" else min(vals)


def _axis_values(plan: Plan, vr: VariantResult) -> list[str]:
    return [short_value(vr.variant.values[a]) if a in vr.variant.values else "" for a in plan.spec.axes()]


def table_rows(plan: Plan, variants: list[VariantResult], markup: Callable[[str], str] = lambda s: f"**{s}**"
               ) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the results table (strings), paper columns next to their measurement."""
    spec = plan.spec
    with_paper = spec.paper_metrics()
    n_seeds = len(plan.runs_of(spec.variants[0].name)) if spec.variants else 1
    header = ["Variant"] + spec.axes() + (["Seeds"] if n_seeds > 1 else [])
    for key in spec.metrics:
        header += [METRICS[key].label] + (["Paper", "Δ"] if key in with_paper else [])
    header.append("Status")
    best = {key: _best(variants, key) for key in spec.metrics}
    rows = []
    for vr in variants:
        row = [vr.variant.name] + _axis_values(plan, vr)
        if n_seeds > 1:
            row.append(f"{vr.done}/{len(vr.results)}")
        for key in spec.metrics:
            m, mean = METRICS[key], vr.stats[key][0]
            text = fmt_stat(vr.stats[key], m)
            row.append(markup(text) if best[key] is not None and mean == best[key] else text)
            if key in with_paper:
                p = vr.variant.paper.get(key)
                row.append("" if p is None else (m.format(float(p)) if isinstance(p, (int, float)) else str(p)))
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
    return bool(vals) and all(NUMBER.match(v) for v in vals)


def write_markdown(plan: Plan, header: list[str], rows: list[list[str]], path: Path, command: str) -> None:
    """``results.md``: the table with the study's name, what it reproduces and the command that made it."""
    spec = plan.spec
    md = [f"# {spec.name} ({plan.budget} budget)", ""]
    if spec.reproduces:
        md += [f"Reproduces: {spec.reproduces}", ""]
    md += [f"Command: `{command or plan.command()}`", "", markdown_table(header, rows), "", TABLE_NOTE, ""]
    if plan.selection:
        from .select import selection_note, selection_table

        md += ["## Settings chosen by cross-validation", "", markdown_table(*selection_table(plan)), "",
               selection_note(plan), ""]
    atomic_write_text(path, "\n".join(md))


def write_csv(plan: Plan, variants: list[VariantResult], path: Path) -> None:
    """``results.csv``: per variant and metric ``<metric>_mean``, ``_std``, ``_n`` and ``paper_<metric>``."""
    spec = plan.spec
    with_paper = spec.paper_metrics()
    header = ["variant"] + spec.axes() + ["seeds_done", "seeds_planned"]
    for key in spec.metrics:
        header += [f"{key}_mean", f"{key}_std", f"{key}_n"] + ([f"paper_{key}"] if key in with_paper else [])
    header.append("status")
    table: list[list[Any]] = [header]
    for vr in variants:
        row: list[Any] = [vr.variant.name] + _axis_values(plan, vr) + [vr.done, len(vr.results)]
        for key in spec.metrics:
            mean, std, n = vr.stats[key]
            row += [_csv_num(mean), _csv_num(std), n]
            if key in with_paper:
                p = vr.variant.paper.get(key)
                row.append(p if p is not None else "")
        row.append(vr.status)
        table.append(row)
    atomic_write_text(path, _csv_text(table))


def write_runs_csv(plan: Plan, variants: list[VariantResult], path: Path) -> None:
    """``runs.csv``: one row per run with its status, folder, every reported metric and its error."""
    keys = list(dict.fromkeys(plan.spec.metrics + [plan.spec.headline]))
    table: list[list[Any]] = [["variant", "seed", "status", "run_dir"] + keys + ["error"]]
    for vr in variants:
        for r in vr.results:
            table.append([vr.variant.name, r.run.seed, r.status, plan.relative(r.run.run_dir)]
                         + [_csv_num(r.value(k)) for k in keys] + [r.error])
    atomic_write_text(path, _csv_text(table))


def _csv_num(x: float | None) -> str:
    return "" if x is None else repr(float(x))


def _csv_text(rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()
