"""``report.html``: one self-contained page (images embedded, no links out) to open in a browser.

It reads top to bottom like a short paper: what was run, the results table, the paper's
claims, the plots, the paper's figures beside the measured curves, then every run, its
failures, the variants and the spec itself. One function per section.
"""
from __future__ import annotations

import base64
import datetime
import html
import json
import platform
import re
from pathlib import Path
from typing import Any

from ..files import atomic_write_text
from ..runs import CONFIG
from .metrics import METRICS
from .plan import Plan, cpu_count, error_file
from .results import VariantResult
from .tables import NUMBER, table_rows

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
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
               ".svg": "image/svg+xml", ".webp": "image/webp"}


def _img(path: Path | None, alt: str) -> str:
    """The image embedded as a data: URL, so the page stands alone."""
    if path is None or not Path(path).is_file():
        return f'<div class="missing">{html.escape(alt)}: not available</div>'
    mime = IMAGE_TYPES.get(Path(path).suffix.lower(), "image/png")
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:{mime};base64,{data}">'


def _html_table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    out = [f'<table class="{cls}"><thead><tr>' + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead><tbody>"]
    for r in rows:
        cells = []
        for c in r:
            text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(str(c)))  # the tables' Markdown bold
            num = bool(NUMBER.match(str(c).strip("*")))
            cells.append(f'<td class="{"num" if num else ""}">{text}</td>')
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


# ------------------------------------------------------------------------------------ sections


def _head(plan: Plan) -> str:
    spec, name, budget = plan.spec, html.escape(plan.spec.name), html.escape(plan.budget)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{name} study ({budget})</title>"
             f"<style>{CSS}</style></head><body>",
             f"<h1>Study: {name} <small>({budget} budget)</small></h1>"]
    if spec.description:
        parts.append(f"<p>{html.escape(spec.description)}</p>")
    return "\n".join(parts)


def _meta(plan: Plan, variants: list[VariantResult], command: str) -> str:
    """What was run, how far it got, with what command, on which machine."""
    import torch

    from .. import __version__

    spec, cfg0 = plan.spec, plan.runs[0].config
    results = [r for vr in variants for r in vr.results]
    n_done = sum(r.status == "done" for r in results)
    n_failed = sum(r.status == "failed" for r in results)
    meta = [
        ("Study", f"{spec.name} ({spec.source})"),
        ("Budget", f"{plan.budget}: epochs {'auto' if cfg0.epochs is None else f'{cfg0.epochs:g}'}, train images "
                   f"{cfg0.train_subset if cfg0.train_subset else 'all'}, seeds {sorted({r.seed for r in plan.runs})}"),
        ("Runs", f"{n_done} of {len(plan.runs)} finished" + (f", {n_failed} failed" if n_failed else "")),
        ("Command", command or plan.command()),
        ("Written", datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")),
        ("Machine", f"{platform.machine()} {cpu_count()} CPU threads, Python {platform.python_version()}, "
                    f"torch {torch.__version__}, cnnlab {__version__}"),
    ]
    if spec.reproduces:
        meta.insert(1, ("Reproduces", spec.reproduces))
    parts = ["<table class='meta'><tbody>" + "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in meta) + "</tbody></table>"]
    if spec.notes:
        parts.append(f"<p class='note'>{html.escape(spec.notes)}</p>")
    return "\n".join(parts)


def _results(plan: Plan, variants: list[VariantResult]) -> str:
    header, rows = table_rows(plan, variants)
    headline = html.escape(METRICS[plan.spec.headline].label)
    return "\n".join([
        "<h2>Results</h2>", _html_table(header, rows),
        f"<p class='note'>Measured values are the mean ± sample standard deviation over the finished "
        f"seeds of each variant; <b>bold</b> marks the best measured value of a column. “Paper” columns "
        f"are the paper's figures as given in the spec, Δ = measured − paper. Headline metric: "
        f"{headline}. A {html.escape(plan.budget)} budget is not the "
        f"paper's setting unless it is <i>full</i>.</p>"])


def _selection(plan: Plan) -> str:
    if not plan.selection:
        return ""
    from .select import selection_note, selection_table

    return "\n".join(["<h2>Settings chosen by cross-validation</h2>", _html_table(*selection_table(plan)),
                      f"<p class='note'>{html.escape(selection_note(plan))}</p>"])


def _claims(plan: Plan) -> str:
    if not plan.spec.claims:
        return ""
    return ("<h2>The paper's observations</h2><ul>" +
            "".join(f"<li>{html.escape(c)}</li>" for c in plan.spec.claims) + "</ul>")


def _plots(plan: Plan, plots: dict[str, Any]) -> str:
    parts = []
    if plots.get("headline"):
        parts.append(f"<h2>{html.escape(METRICS[plan.spec.headline].label)}</h2>" + _img(plots["headline"], "headline"))
    if plots.get("sweeps"):
        parts.append("<h2>Evaluations at increasing corruption</h2>")
        parts.append("<div class='pair'>" + "".join(f"<div>{_img(p, p.stem)}</div>" for p in plots["sweeps"])
                     + "</div>")
    if plots.get("curves"):
        parts.append("<h2>Learning curves</h2>")
        parts.append("<div class='pair'>" + "".join(f"<div>{_img(p, p.stem)}</div>" for p in plots["curves"])
                     + "</div>")
    return "\n".join(parts)


def _figures(plots: dict[str, Any]) -> str:
    """Each paper figure (when the spec ships its image) beside the same curves measured."""
    if not plots.get("figures"):
        return ""
    parts = ["<h2>Paper figures and measured curves</h2>"]
    for f, p in plots["figures"]:
        parts.append(f"<h3>{html.escape(f.title)}</h3>")
        if f.caption:
            parts.append(f"<p class='note'>{html.escape(f.caption)}</p>")
        paper_img = _img(f.image, "paper figure") if f.image else \
            '<div class="missing">the paper\'s figure is not shipped with this spec</div>'
        parts.append(f"<div class='pair'><div><b>Paper</b><br>{paper_img}</div>"
                     f"<div><b>Measured</b><br>{_img(p, 'measured curves')}</div></div>")
    return "\n".join(parts)


def _runs(plan: Plan, variants: list[VariantResult]) -> str:
    headline, seconds = METRICS[plan.spec.headline], METRICS["train_seconds"]
    rows = [[vr.variant.name, str(r.run.seed), r.status, headline.format(r.value(headline.key)),
             seconds.format(r.value(seconds.key)), plan.relative(r.run.run_dir), r.error]
            for vr in variants for r in vr.results]
    return "\n".join(["<h2>Runs</h2>", _html_table(["Variant", "Seed", "Status", headline.label, "Train time (s)",
                                                    "Run folder", "Error"], rows)])


def _failures(plan: Plan, variants: list[VariantResult]) -> str:
    """The end of each failed run's error file (message and traceback, or the worker's log)."""
    failures = [r for vr in variants for r in vr.results if r.status == "failed"]
    if not failures:
        return ""
    parts = ["<h2 class='fail'>Failures</h2>"]
    for r in failures:
        path = error_file(plan, r.run)
        text = path.read_text() if path.is_file() else r.error
        parts.append(f"<h3>{html.escape(r.run.variant)} seed {r.run.seed}</h3><pre>{html.escape(text[-3000:])}</pre>")
    return "\n".join(parts)


def _variants(plan: Plan) -> str:
    rows = [[v.name, v.settings(), plan.relative(plan.runs_of(v.name)[0].run_dir / CONFIG)] for v in plan.spec.variants]
    return "\n".join(["<h2>Variants</h2>",
                      _html_table(["Variant", "Config changes", "Config of its first run"], rows)])


def _spec(plan: Plan) -> str:
    parts = ["<h2>Spec</h2>", f"<pre>{html.escape(plan.spec.text)}</pre>"]
    if plan.overrides:
        parts.append(f"<p>--set overrides: <code>{html.escape(json.dumps(plan.overrides))}</code></p>")
    return "\n".join(parts)


def write_report(plan: Plan, variants: list[VariantResult], plots: dict[str, Any], path: Path,
                 command: str = "") -> None:
    """Write ``report.html`` from the collected results and the plots :func:`make_plots` drew."""
    sections = [_head(plan), _meta(plan, variants, command), _results(plan, variants), _selection(plan), _claims(plan),
                _plots(plan, plots), _figures(plots), _runs(plan, variants), _failures(plan, variants),
                _variants(plan), _spec(plan), "</body></html>"]
    atomic_write_text(path, "\n".join(s for s in sections if s))
