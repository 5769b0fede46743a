"""Choosing a setting by k-fold cross-validation on the training split (a spec's ``select:``;
the two-stage paper's grid search, Sec. 2.3).

For every variant named in ``select.variants`` and every point g of ``select.grid``, K runs are
planned (in ``<study>/cv/``): run i trains on the training split minus its fold i and is
evaluated on fold i (``--cv-fold i/K``, :func:`cnnlab.data.prepare.cross_validation_fold`), so
the test split is never looked at. The score of g is the mean over its K folds of
``select.metric`` (measured on the held-out fold); the best g -- ties go to the one listed first
-- is applied to the variant's ordinary runs, which train on the whole training split and are
scored once on the test split. The cross-validation runs use the first seed of the study.
"""
from __future__ import annotations

from .metrics import METRICS
from .plan import Plan


def selection_table(plan: Plan) -> tuple[list[str], list[list[str]]]:
    """Header and rows: per selected variant and setting, the fold scores, their mean ± std, the choice."""
    if not plan.selection:
        return [], []
    select = plan.spec.select
    m = METRICS[select.metric]
    held_out = m.label.replace("Test ", "validation ").replace("test ", "validation ")  # scored on the folds
    header = ["Variant", "Setting"] + [f"fold {i}" for i in range(1, select.folds + 1)] + \
        [f"mean {held_out}", "chosen"]
    rows = []
    for name, sel in plan.selection.items():
        for g in select.grid:
            folds = [m.format(x) for x in sel["scores"][g.name]]
            mean, std = sel["means"][g.name], sel["stds"][g.name]
            text = "n/a" if mean is None else m.format(mean) + (f" ± {m.format(std)}" if std is not None else "")
            mark = "yes" if sel["chosen"] == g.name else ("pending" if sel["chosen"] is None else "")
            rows.append([name, f"{g.name} ({g.settings()})"] + folds + [text, mark])
    return header, rows


def selection_note(plan: Plan) -> str:
    select = plan.spec.select
    return (f"Selected by {select.folds}-fold cross-validation on the training split (the first seed): each "
            f"setting trained on {select.folds - 1} folds and scored on the held-out one ({select.metric} of "
            f"the run, measured on that fold); the test split was not used. The chosen setting is then trained "
            f"on the whole training split and tested once (the results table).")
