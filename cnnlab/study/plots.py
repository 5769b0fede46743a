"""The study's plots in ``plots/``: the headline metric per variant as bars (± std, paper values
hatched beside them), learning curves of every variant overlaid (mean over seeds, ± std band),
and the measured curves of each paper figure the spec names.

Matplotlib set-up, colours and atomic saving come from :mod:`cnnlab.plots`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ..plots import colors, pyplot, save_figure
from .metrics import CURVE_X, METRICS
from .plan import PLOTS_DIR, Plan
from .results import VariantResult, mean_std


def _curve(vr: VariantResult, key: str, x_key: str) -> tuple[list[float], list[float], list[float | None]]:
    """Mean (and std) over the seeds of a per-epoch metric, against epoch / step / elapsed seconds."""
    m = METRICS[key]
    by_epoch: dict[int, list[tuple[float, float]]] = {}
    for r in vr.results:
        for row in r.rows:
            y = m.epoch_value(row)
            x = row.get(x_key)
            if y is None or x is None or row.get("epoch") is None:
                continue
            by_epoch.setdefault(int(row["epoch"]), []).append((float(x), y))
    xs, ys, sds = [], [], []
    for e in sorted(by_epoch):  # seeds are averaged epoch by epoch (their steps/seconds may differ a little)
        pts = by_epoch[e]
        xs.append(sum(p[0] for p in pts) / len(pts))
        mean, std = mean_std([p[1] for p in pts])
        ys.append(mean)  # type: ignore[arg-type]
        sds.append(std)
    return xs, ys, sds


def plot_curves(plan: Plan, variants: list[VariantResult], key: str, path: Path, title: str = "",
                only: Sequence[str] | None = None) -> bool:
    """One metric's learning curves, a line per variant (``only``: a subset); False when there is none."""
    chosen = [vr for vr in variants if only is None or vr.variant.name in only]
    curves = [(vr, _curve(vr, key, plan.spec.curve_x)) for vr in chosen]
    curves = [(vr, c) for vr, c in curves if c[0]]
    if not curves:
        return False
    fig, ax = pyplot().subplots(figsize=(7.5, 4.5))
    palette = colors(len(variants))  # indexed over all variants: a variant keeps its colour in every plot
    index = {vr.variant.name: i for i, vr in enumerate(variants)}
    for vr, (xs, ys, sds) in curves:
        color = palette[index[vr.variant.name]]
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
    save_figure(fig, path, dpi=100, tight=True)
    return True


def plot_bars(plan: Plan, variants: list[VariantResult], key: str, path: Path) -> bool:
    """One metric per variant as bars with ± std error bars, and the paper's values hatched beside them."""
    m = METRICS[key]
    vals = [vr.stats[key] for vr in variants]
    if all(s[0] is None for s in vals):
        return False
    names = [vr.variant.name for vr in variants]
    paper = [vr.variant.paper.get(key) for vr in variants]
    has_paper = any(isinstance(p, (int, float)) for p in paper)
    fig, ax = pyplot().subplots(figsize=(max(6.0, 0.75 * len(names) + 2), 4.5))
    xs = list(range(len(names)))
    width = 0.4 if has_paper else 0.7
    shift = width / 2 if has_paper else 0.0
    means = [s[0] if s[0] is not None else 0.0 for s in vals]
    errs = [s[1] or 0.0 for s in vals]
    bars = ax.bar([x - shift for x in xs], means, width, yerr=errs if any(errs) else None, capsize=4,
                  color=colors(len(names)), edgecolor="black", linewidth=0.5, label="measured (mean ± std)")
    for b, s in zip(bars, vals):
        if s[0] is None:  # no finished run: keep its slot, draw nothing
            b.set_alpha(0.0)
    if has_paper:
        ax.bar([x + shift for x in xs], [p if isinstance(p, (int, float)) else 0 for p in paper], width,
               color="white", edgecolor="black", hatch="//", linewidth=0.5, label="paper")
        ax.legend(fontsize=8)
    ax.set_xticks(xs)
    ax.set_xticklabels(names, rotation=35 if len(names) > 4 else 0, ha="right" if len(names) > 4 else "center")
    ax.set(ylabel=m.label, title=f"{m.label} — {plan.spec.name} ({plan.budget})")
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path, dpi=100, tight=True)
    return True


def plot_sweep(plan: Plan, variants: list[VariantResult], group: str, path: Path) -> bool:
    """Accuracy against the corruption level of one ``evaluations:`` entry with ``levels``: a line per
    variant (mean ± std over seeds), the paper's values dashed in the same colour; one panel per data
    set the variants train on."""
    from .metrics import metric

    evals = [e for e in plan.spec.evaluations if e.group == group and e.level is not None]
    chosen = [vr for vr in variants if evals and vr.variant.name in evals[0].variants]
    keys = [metric(f"acc@{e.name}").key for e in evals]
    chosen = [vr for vr in chosen if any(vr.stats.get(k, (None,))[0] is not None for k in keys)]
    if not chosen:
        return False
    panels: dict[str, list[VariantResult]] = {}
    for vr in chosen:
        panels.setdefault(plan.runs_of(vr.variant.name)[0].config.data, []).append(vr)
    fig, axes = pyplot().subplots(1, len(panels), figsize=(6.5 * len(panels) + 1.5, 4.8), squeeze=False)
    kind = evals[0].corrupt.split(":")[0] if evals[0].corrupt else "noise"
    for ax, (data, members) in zip(axes[0], panels.items()):
        for vr, color in zip(members, colors(len(members))):
            pts = [(100 * e.level, vr.stats[k]) for e, k in zip(evals, keys)
                   if vr.stats.get(k, (None,))[0] is not None]
            ax.errorbar([x for x, _ in pts], [st[0] for _, st in pts], yerr=[st[1] or 0 for _, st in pts],
                        marker="o", markersize=3, capsize=3, color=color, label=vr.variant.name)
            paper = [(100 * e.level, vr.variant.paper.get(k)) for e, k in zip(evals, keys)]
            paper = [(x, p) for x, p in paper if isinstance(p, (int, float))]
            if paper:
                ax.plot(*zip(*paper), linestyle="--", color=color, alpha=0.7, label=f"{vr.variant.name} (paper)")
        ax.set(xlabel=f"{kind} level (%)", ylabel="test accuracy (%)", title=f"{data}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"accuracy against {kind} — {plan.spec.name} ({plan.budget})")
    save_figure(fig, path, dpi=100, tight=True)
    return True


def make_plots(plan: Plan, variants: list[VariantResult]) -> dict[str, Any]:
    """All PNGs of the report; returns {"headline": path, "curves": [...], "figures": [(FigureSpec, path)]}."""
    out_dir = plan.study_dir / PLOTS_DIR
    made: dict[str, Any] = {"headline": None, "curves": [], "figures": [], "sweeps": []}
    p = out_dir / f"bar_{plan.spec.headline}.png"
    if plot_bars(plan, variants, plan.spec.headline, p):
        made["headline"] = p
    for group in dict.fromkeys(e.group for e in plan.spec.evaluations if e.level is not None):
        p = out_dir / f"sweep_{group}.png"
        if plot_sweep(plan, variants, group, p):
            made["sweeps"].append(p)
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
