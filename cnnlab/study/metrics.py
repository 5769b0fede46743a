"""The figures a study can report: how each is read from a run folder and how it is shown.

A :class:`Metric` reads its raw value from a run's ``summary.json`` (final figures) or the
last line of its ``metrics.jsonl`` (per-epoch figures) and converts it to display units:
fractions become percentages, so the paper's numbers in a spec are written as the paper
prints them. Spec parsing, the tables, the plots and the report all look metrics up here.
"""
from __future__ import annotations

from typing import Sequence

import math
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import CnnlabError, suggest
from ..runs import switch_epoch


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


def _mean_of(rows: list[dict], key: str) -> float | None:
    values = [v for r in rows if (v := _num(r.get(key))) is not None]
    return sum(values) / len(values) if values else None


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

    def format(self, value: float | None) -> str:
        if value is None:
            return "n/a"
        if self.key == "params":
            return f"{value:,.0f}"
        return f"{value:.{self.digits}f}"


def _m(key, label, raw, convert=_num, better="", digits=2, per_epoch=None) -> Metric:
    return Metric(key, label, raw, convert, better, digits, per_epoch)


_S = _summary_or_last
METRICS: dict[str, Metric] = {m.key: m for m in (
    # the split of every figure is in its name: test_* come from the test split, evaluated once at the end with the
    # weights chosen on validation; val_* from the validation split (per epoch, and the selection's best)
    _m("test_acc", "Test acc (%)", _S("test_acc"), _pct, "higher", 2),
    _m("test_error", "Test error (%)", _S("test_acc"), _err, "lower", 2),
    _m("val_acc", "Val acc (%)", lambda s, r: _last(r, "val_acc"), _pct, "higher", 2, "val_acc"),
    _m("val_error", "Val error (%)", lambda s, r: _last(r, "val_acc"), _err, "lower", 2, "val_acc"),
    _m("best_val_acc", "Best val acc (%)", _S("best_val_acc"), _pct, "higher"),
    _m("best_val_error", "Best val error (%)", _S("best_val_acc"), _err, "lower"),
    _m("best_epoch", "Best epoch (val)", _S("best_epoch"), _num, "", 0),
    _m("train_acc", "Train acc (%)", lambda s, r: _last(r, "train_acc"), _pct, "higher", 2, "train_acc"),
    _m("train_error", "Train error (%)", lambda s, r: _last(r, "train_acc"), _err, "lower", 2, "train_acc"),
    _m("train_loss", "Train loss", lambda s, r: _last(r, "train_loss"), _num, "lower", 4, "train_loss"),
    _m("test_loss", "Test loss", _S("test_loss"), _num, "lower", 4),
    _m("val_loss", "Val loss", lambda s, r: _last(r, "val_loss"), _num, "lower", 4, "val_loss"),
    _m("nll", "Test NLL", _S("nll"), _num, "lower", 4),
    _m("top5", "Test top-5 acc (%)", _S("top5"), _pct, "higher"),
    # macro P and R (SADIE eq. 4.1-4.2), also per epoch for the precision curves of its Figs. 4, 5, 7, 9a
    _m("precision", "Test precision (%)", _S("precision"), _pct, "higher", 2),
    _m("recall", "Test recall (%)", _S("recall"), _pct, "higher", 2),
    _m("val_precision", "Val precision (%)", lambda s, r: _last(r, "val_precision"), _pct, "higher", 2,
       "val_precision"),
    _m("val_recall", "Val recall (%)", lambda s, r: _last(r, "val_recall"), _pct, "higher", 2, "val_recall"),
    _m("f1", "Test F1 (%)", _S("f1"), _pct, "higher"),  # the mean of per-class F1
    # SADIE Table 3's F1: eq. 4.3 applied to the macro P and R (not the mean of per-class F1 above)
    _m("f1_of_macro", "Test F1 of macro P,R (%)", _S("f1_of_macro"), _pct, "higher", 2),
    _m("val_f1_of_macro", "Val F1 of macro P,R (%)", lambda s, r: _last(r, "val_f1_of_macro"), _pct, "higher", 2,
       "val_f1_of_macro"),
    _m("bep", "Test BEP (%)", _S("bep"), _pct, "higher"),
    _m("train_seconds", "Train time (s)", _S("train_seconds"), _num, "lower", 1, "elapsed"),
    _m("pretrain_seconds", "Pre-train time (s)", _S("pretrain_seconds"), _num, "lower", 1),  # a DBN's RBM stage
    _m("images_per_second", "Images/s", _S("images_per_second"), _num, "higher", 0, "images_per_second"),
    _m("params", "Params", _S("params"), _num, "", 0),
    _m("epochs", "Epochs", _S("epochs"), _num, "", 0),
    _m("size_mb", "Model size (MB)", _S("size_mb"), _num, "", 2),  # fp32 parameters + buffers, 10^6 bytes
    _m("epoch_seconds", "Epoch time (s)", lambda s, r: _mean_of(r, "epoch_seconds"), _num, "lower", 2,
       "epoch_seconds"),  # the mean over the run's epochs (two-stage paper Table 3)
    _m("lr", "Final lr", lambda s, r: _last(r, "lr"), _num, "", 5, "lr"),
    # the Adam->SGD switch (SADIE Sec. 3.3): where it fired and the learned SGD rate Lambda
    _m("switch_epoch", "Switch epoch", lambda s, r: (switch_epoch(r) or {}).get("epoch"), _num, "", 0),
    _m("switch_step", "Switch step", lambda s, r: _last(r, "switch_step"), _num, "", 0),
    _m("sgd_lr", "Learned SGD lr", lambda s, r: _last(r, "sgd_lr"), _num, "", 4, "sgd_lr_now"),
)}
CURVE_METRICS = [k for k, m in METRICS.items() if m.per_epoch and k != "train_seconds"]
CURVE_X = {"epoch": "epoch", "step": "optimizer step", "elapsed": "training seconds"}
DEFAULT_METRICS = ["test_acc", "best_val_acc", "f1", "train_seconds", "images_per_second", "params"]
DEFAULT_CURVES = ["val_acc", "train_loss"]
# names of figures that were chosen on the test split before selection moved to validation
RETIRED = {"best_test_acc": "best_val_acc", "best_test_error": "best_val_error"}


# KIND@NAME: a figure of the named evaluation evals/NAME.json (a spec's evaluations:, cnnlab eval --output NAME)
EVALUATION_FIGURES = {"acc": ("acc", "Acc", _pct, "higher", 2), "f1": ("f1", "F1", _pct, "higher", 2),
                      "mse": ("test_mse", "MSE", _num, "lower", 5)}


def evaluation_metric(name: str) -> Metric | None:
    """``acc@NAME`` (or ``f1@``, ``mse@``) as a :class:`Metric` reading ``summary["evals"][NAME]``, which
    :func:`cnnlab.study.results.collect` fills from the run's ``evals/NAME.json``; None for other names."""
    kind, at, evaluation = name.partition("@")
    if not at or kind not in EVALUATION_FIGURES or not evaluation:
        return None
    field, label, convert, better, digits = EVALUATION_FIGURES[kind]
    unit = " (%)" if convert is _pct else ""
    return Metric(name, f"{label} @ {evaluation}{unit}",
                  lambda s, r: (s.get("evals") or {}).get(evaluation, {}).get(field), convert, better, digits)


def metric(name: str, where: str = "metric") -> Metric:
    """The metric called ``name``, or an error naming ``where`` it was asked for."""
    if name not in METRICS and (m := evaluation_metric(name)) is not None:
        METRICS[name] = m  # made once, then looked up like the others
    if name in RETIRED:
        raise CnnlabError(f"{where}: {name!r} was the best epoch chosen on the test split, which cnnlab no longer "
                          f"reports; use {RETIRED[name]} (chosen on validation) or {name.replace('best_', '')} (the "
                          f"test split, once, with the weights chosen on validation)")
    if name not in METRICS:
        hint = suggest(name, METRICS)
        raise CnnlabError(f"{where}: unknown metric {name!r}{f' ({hint})' if hint else ''}; "
                          f"choose from {', '.join(k for k in METRICS if '@' not in k)}, or "
                          f"{'/'.join(EVALUATION_FIGURES)}@EVALUATION for a spec's evaluations")
    return METRICS[name]


def format_seconds(s: float | None) -> str:
    """A duration for log lines and the dry-run plan: seconds, minutes or hours, whichever reads best."""
    if s is None:
        return "?"
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n-1); std is None for a single value."""
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
