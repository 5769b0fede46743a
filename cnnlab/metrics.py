"""Classification metrics: accuracy, top-k, log-loss, confusion, P/R/F1 and break-even point.

Everything here works on a finished set of predictions (scores for N samples and
C classes plus N integer labels), given as torch tensors, numpy arrays or lists.
Scores may be raw logits or probabilities (see :func:`to_probabilities`).

The precision/recall definitions follow the SADIE paper (Section 4, "Define the
following performance indicators"), whose names map onto the usual confusion
counts of one class ``c`` treated one-vs-rest:

* ``CRAB`` - correct output labels: samples of class c predicted as c (true positives, TP),
* ``FLAB`` - labels output that do not match the image: predicted c but not c (false positives, FP),
* ``NOBEL`` - labels that should have been output but were not: class c predicted as
  something else (false negatives, FN).

| Eq. 4.1  ``P  = CRAB / (CRAB + FLAB)``
| Eq. 4.2  ``R  = CRAB / (CRAB + NOBEL)``
| Eq. 4.3  ``F1 = 2 P R / (P + R)``
| Eq. 4.4  ``BEP = F1 = P = R`` - the value at the operating point where precision equals recall.

A ratio whose denominator is zero is reported as 0 (scikit-learn's
``zero_division=0``), so a class that is never predicted, or absent from the
labels, scores 0 instead of NaN and still counts in the macro averages. The
macro averages are plain means over all ``num_classes`` classes, as scikit-learn's
``average="macro"``; in particular macro F1 is the mean of per-class F1 values.
(The paper's Table 3 F1 numbers are instead the harmonic mean of its averaged P
and R - e.g. 2*99.37*98.30/(99.37+98.30) = 98.83 - :func:`format_report` prints
that value too, labelled as such.)

Why not micro averages: with one label per sample and argmax predictions, micro
precision = micro recall = accuracy, which would make P, R and F1 redundant.

See ``docs/metrics.md`` for the equations and the exact BEP procedure.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .errors import CnnlabError

PROB_CLIP = 1e-12  # probabilities are clipped at this before the log in the log-loss


# --------------------------------------------------------------------------- inputs
def _as_numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu")
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        return x.numpy()
    try:
        return np.asarray(x)
    except Exception:  # pragma: no cover - exotic inputs
        raise CnnlabError(f"{name}: expected a tensor, array or list, got {type(x).__name__}") from None


def _check_labels(labels: Any, num_classes: int, n: int | None = None) -> np.ndarray:
    y = _as_numpy(labels, "labels")
    if y.ndim != 1:
        raise CnnlabError(f"labels: expected a 1-d array of class indices, got shape {tuple(y.shape)}")
    if n is not None and len(y) != n:
        raise CnnlabError(f"labels: expected {n} labels (one per row of scores), got {len(y)}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.mod(y, 1) == 0):
            raise CnnlabError(f"labels: expected integer class indices, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise CnnlabError(f"labels: class indices must be in [0, {num_classes}), got range [{y.min()}, {y.max()}]")
    return y


def _check_scores(scores: Any, num_classes: int) -> np.ndarray:
    s = _as_numpy(scores, "logits_or_probs")
    if s.ndim != 2 or s.shape[1] != num_classes:
        raise CnnlabError(f"logits_or_probs: expected shape [N, {num_classes}] (num_classes={num_classes}), "
                          f"got {tuple(s.shape)}")
    s = s.astype(np.float64)
    if not np.all(np.isfinite(s)):
        raise CnnlabError("logits_or_probs: contains NaN or infinite values")
    return s


def _check_num_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise CnnlabError(f"num_classes: expected a positive integer, got {num_classes!r}")
    return int(num_classes)


def looks_like_probabilities(scores: np.ndarray, atol: float = 1e-4) -> bool:
    """True when every row is in [0, 1] and sums to 1 (within ``atol``).

    Logits almost never satisfy this by accident, so it is a safe way to accept
    either form: the model's raw output or the probabilities of e.g. :func:`predict_tta`.
    """
    if scores.size == 0:
        return True
    return bool(scores.min() >= 0 and scores.max() <= 1 and np.allclose(scores.sum(1), 1.0, atol=atol))


def _log_probabilities(scores: np.ndarray) -> np.ndarray:
    """Per-class log-probabilities: log-softmax of logits, or log of given probabilities (clipped)."""
    if looks_like_probabilities(scores):
        return np.log(np.clip(scores, PROB_CLIP, 1.0))
    shifted = scores - scores.max(1, keepdims=True)  # stable log-softmax
    return shifted - np.log(np.exp(shifted).sum(1, keepdims=True))


def _scores_matrix(logits_or_probs: Any) -> np.ndarray:
    """Scores as a float64 [N, C] array, or a clear error."""
    s = _as_numpy(logits_or_probs, "logits_or_probs").astype(np.float64)
    if s.ndim != 2:
        raise CnnlabError(f"logits_or_probs: expected shape [N, C], got {tuple(s.shape)}")
    return s


def _scores_and_labels(logits_or_probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    s = _scores_matrix(logits_or_probs)
    return s, _check_labels(labels, s.shape[1], len(s))


def to_probabilities(logits_or_probs: Any) -> np.ndarray:
    """Class probabilities [N, C] as float64: rows that already are probabilities pass through, logits get softmax."""
    s = _scores_matrix(logits_or_probs)
    return s if looks_like_probabilities(s) else np.exp(_log_probabilities(s))


# --------------------------------------------------------------------------- metrics
def accuracy(logits_or_probs: Any, labels: Any) -> float:
    """Fraction of samples whose highest-scoring class is the label (ties: lowest index wins)."""
    s, y = _scores_and_labels(logits_or_probs, labels)
    return float((s.argmax(1) == y).mean()) if len(y) else 0.0


def top_k_accuracy(logits_or_probs: Any, labels: Any, k: int = 5) -> float:
    """Fraction of samples whose label is among the ``k`` highest scores; ``k`` is clipped to C.

    A sample counts as a hit when fewer than ``k`` classes score strictly higher
    than the true class, which is how scikit-learn's ``top_k_accuracy_score``
    treats ties.
    """
    if k < 1:
        raise CnnlabError(f"k: top-k accuracy needs k >= 1, got {k}")
    s, y = _scores_and_labels(logits_or_probs, labels)
    if not len(y):
        return 0.0
    k = min(k, s.shape[1])
    true_score = s[np.arange(len(y)), y]
    higher = (s > true_score[:, None]).sum(1)
    return float((higher < k).mean())


def log_loss(logits_or_probs: Any, labels: Any) -> float:
    """Mean negative log-likelihood of the true class, ``mean(-log p_true)``.

    Probabilities are clipped to ``[1e-12, 1]`` before the log so that a single
    confident mistake gives a large but finite loss (-log 1e-12 ~ 27.6) instead of
    infinity. For logits the log-softmax is computed directly (no precision is
    lost through exp/log) and clipped at log(1e-12) to match.
    """
    s, y = _scores_and_labels(logits_or_probs, labels)
    if not len(y):
        return 0.0
    logp = np.maximum(_log_probabilities(s)[np.arange(len(y)), y], np.log(PROB_CLIP))
    return float(-logp.mean())


def confusion_matrix(labels: Any, predictions: Any, num_classes: int) -> np.ndarray:
    """Counts [C, C]: row = true class, column = predicted class.

    ``num_classes`` is explicit so that classes missing from both labels and
    predictions still get their (all-zero) row and column.
    """
    num_classes = _check_num_classes(num_classes)
    y = _check_labels(labels, num_classes)
    p = _check_labels(predictions, num_classes, len(y))
    return np.bincount(y * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den == 0 (scikit-learn's zero_division=0)."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den != 0)


def precision_recall_f1(confusion: Any) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1 (SADIE eq. 4.1-4.3) and support from a confusion matrix.

    For class c: CRAB = confusion[c, c], CRAB + FLAB = column sum (all outputs c),
    CRAB + NOBEL = row sum (all true c = support). Undefined ratios are 0.
    """
    cm = np.asarray(confusion, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise CnnlabError(f"confusion: expected a square matrix, got shape {tuple(cm.shape)}")
    crab = np.diag(cm)
    predicted = cm.sum(0)  # CRAB + FLAB
    support = cm.sum(1)  # CRAB + NOBEL
    precision = _safe_div(crab, predicted)  # eq. 4.1
    recall = _safe_div(crab, support)  # eq. 4.2
    f1 = _safe_div(2 * precision * recall, precision + recall)  # eq. 4.3
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64)}


def f1_of_macro(precision: float, recall: float) -> float:
    """Eq. 4.3 applied to the macro-averaged precision and recall (SADIE Table 3's F1); 0 when both are 0.

    Not the macro F1 (the mean of per-class F1 values, ``evaluate_predictions``' ``f1``), which
    is never larger.
    """
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def break_even_point(scores: Any, is_positive: Any) -> float:
    """Precision-recall break-even point (SADIE eq. 4.4) of one binary scoring.

    Thresholding at t (predict positive when score >= t) gives
    ``P = TP / n_pred`` and ``R = TP / n_pos``, so ``P - R = TP (n_pos - n_pred) / (n_pred n_pos)``:
    apart from the trivial P = R = 0 (no true positive yet), precision equals
    recall exactly where the number of predicted positives equals the number of
    actual positives. Sweeping t down over the distinct scores, P - R changes sign
    between the two consecutive thresholds that bracket ``n_pred = n_pos``; in
    between, TP and n_pred are interpolated linearly (the tied samples admitted
    fractionally, i.e. the expectation over random tie-breaking) up to
    ``n_pred = n_pos``, where ``BEP = P = R = TP_interp / n_pos``. Without a tie at
    that rank this is just the precision of the top ``n_pos`` scores
    ("R-precision"). It always lies between the precision (and recall) values of
    the two bracketing thresholds.

    Returns 0 when there are no positives (recall undefined; zero_division=0).
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    pos = np.asarray(is_positive, dtype=bool).ravel()
    if s.shape != pos.shape:
        raise CnnlabError(f"is_positive: expected {s.shape[0]} values, got {pos.shape[0]}")
    n_pos = int(pos.sum())
    if n_pos == 0:
        return 0.0
    order = np.argsort(-s, kind="stable")
    s, pos = s[order], pos[order]
    # one step per distinct threshold: cumulative counts at the end of each tie group
    group_end = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]
    n_pred = group_end + 1
    tp = np.cumsum(pos)[group_end]
    k = int(np.searchsorted(n_pred, n_pos))  # first threshold with n_pred >= n_pos
    prev_pred = n_pred[k - 1] if k > 0 else 0
    prev_tp = tp[k - 1] if k > 0 else 0
    frac = (n_pos - prev_pred) / (n_pred[k] - prev_pred)  # 1.0 when n_pred hits n_pos exactly
    tp_at_bep = prev_tp + frac * (tp[k] - prev_tp)
    return float(tp_at_bep / n_pos)


def break_even_points(probs: Any, labels: Any, num_classes: int) -> np.ndarray:
    """Per-class one-vs-rest BEP: class c's probability column as the score, ``labels == c`` as positives."""
    p = _check_scores(probs, num_classes)
    y = _check_labels(labels, num_classes, len(p))
    return np.array([break_even_point(p[:, c], y == c) for c in range(num_classes)])


# --------------------------------------------------------------------------- summary
def evaluate_predictions(logits_or_probs: Any, labels: Any, num_classes: int,
                         class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """All metrics of one evaluation as plain python values (JSON/YAML friendly).

    Keys: ``acc``, ``top5`` (k clipped to num_classes), ``nll`` (log-loss),
    ``precision``, ``recall``, ``f1`` (macro averages of eq. 4.1-4.3), ``bep``
    (macro average of per-class one-vs-rest BEP, eq. 4.4), ``per_class`` (one dict
    per class: name, precision, recall, f1, bep, support) and ``confusion``
    (list of rows, true class x predicted class).

    Scores may be logits or probabilities; BEP thresholds the softmax
    probabilities (a class's logit alone is not comparable across samples).
    """
    num_classes = _check_num_classes(num_classes)
    s = _check_scores(logits_or_probs, num_classes)
    y = _check_labels(labels, num_classes, len(s))
    if class_names is None:
        names = [str(i) for i in range(num_classes)]
    else:
        names = [str(n) for n in class_names]
        if len(names) != num_classes:
            raise CnnlabError(f"class_names: expected {num_classes} names, got {len(names)}")
    probs = to_probabilities(s)
    cm = confusion_matrix(y, s.argmax(1), num_classes)
    prf = precision_recall_f1(cm)
    bep = break_even_points(probs, y, num_classes)
    per_class = [
        {"name": names[c], "precision": float(prf["precision"][c]), "recall": float(prf["recall"][c]),
         "f1": float(prf["f1"][c]), "bep": float(bep[c]), "support": int(prf["support"][c])}
        for c in range(num_classes)
    ]
    return {
        "acc": accuracy(s, y),
        "top5": top_k_accuracy(s, y, 5),
        "nll": log_loss(s, y),
        "precision": float(prf["precision"].mean()),
        "recall": float(prf["recall"].mean()),
        "f1": float(prf["f1"].mean()),
        "bep": float(bep.mean()),
        "per_class": per_class,
        "confusion": cm.tolist(),
    }


def format_report(metrics: dict[str, Any]) -> str:
    """A text report: per-class P/R/F1/BEP/support table, macro and accuracy lines, confusion matrix."""
    per_class = metrics.get("per_class", [])
    names = [str(r["name"]) for r in per_class]
    w = max([len("macro avg"), *map(len, names)]) + 2
    has_bep = all("bep" in r for r in per_class)
    cols = ["precision", "recall", "f1"] + (["bep"] if has_bep else [])
    head = f"{'class':<{w}}" + "".join(f"{c:>10}" for c in cols) + f"{'support':>10}"
    lines = [head, "-" * len(head)]
    total = 0
    for r in per_class:
        lines.append(f"{r['name']:<{w}}" + "".join(f"{r[c]:>10.4f}" for c in cols) + f"{r['support']:>10d}")
        total += int(r["support"])
    lines.append("-" * len(head))
    macro = [metrics.get(c, float("nan")) for c in cols]
    lines.append(f"{'macro avg':<{w}}" + "".join(f"{v:>10.4f}" for v in macro) + f"{total:>10d}")
    p, r = metrics.get("precision"), metrics.get("recall")
    lines.append("")
    if "acc" in metrics:
        lines.append(f"accuracy        {metrics['acc']:.4f}")
    if "top5" in metrics:
        lines.append(f"top-5 accuracy  {metrics['top5']:.4f}")
    if "nll" in metrics:
        lines.append(f"log-loss (NLL)  {metrics['nll']:.4f}")
    if p is not None and r is not None:
        lines.append(f"F1 of macro P,R {f1_of_macro(p, r):.4f}  (harmonic mean of the macro P and R, as in SADIE Table 3)")
    cm = metrics.get("confusion")
    if cm:
        lines += ["", "confusion matrix (rows = true, columns = predicted):", _format_confusion(cm, names)]
    return "\n".join(lines)


def _format_confusion(cm: list[list[int]], names: list[str]) -> str:
    n = len(cm)
    names = names if len(names) == n else [str(i) for i in range(n)]
    cw = max(max((len(str(v)) for row in cm for v in row), default=1), *(len(x) for x in names)) + 1
    rw = max(len(x) for x in names) + 1
    rows = [" " * rw + "".join(f"{x:>{cw}}" for x in names)]
    rows += [f"{names[i]:<{rw}}" + "".join(f"{v:>{cw}}" for v in cm[i]) for i in range(n)]
    return "\n".join(rows)


def plot_confusion(confusion: Any, class_names: Sequence[str] | None, path: str | Path,
                   normalize: bool = False, title: str | None = None) -> Path:
    """Save the confusion matrix as a PNG heat map (rows = true, columns = predicted).

    matplotlib is imported here (:mod:`cnnlab.plots`), so that importing cnnlab
    stays light and plotting works on headless machines. Counts
    are written in the cells when there are at most 20 classes (more would not
    be readable). ``normalize=True`` colours by row fraction (per-class recall).
    """
    from .plots import pyplot, save_figure

    plt = pyplot()
    cm = np.asarray(confusion, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise CnnlabError(f"confusion: expected a square matrix, got shape {tuple(cm.shape)}")
    n = cm.shape[0]
    names = [str(i) for i in range(n)] if class_names is None else [str(x) for x in class_names]
    if len(names) != n:
        raise CnnlabError(f"class_names: expected {n} names, got {len(names)}")
    shown = _safe_div(cm, cm.sum(1, keepdims=True)) if normalize else cm
    side = min(max(4.0, 0.45 * n + 2.0), 30.0)
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    try:
        im = ax.imshow(shown, cmap="Blues", interpolation="nearest")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        ticks = np.arange(n)
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
        ax.set_xticklabels(names, rotation=45 if max(map(len, names)) > 2 else 0, ha="right" if max(map(len, names)) > 2 else "center")
        ax.set_yticklabels(names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title or ("confusion matrix (row-normalized)" if normalize else "confusion matrix"))
        if n <= 20:
            hi = shown.max() if shown.size else 0
            for i in range(n):
                for j in range(n):
                    text = f"{int(cm[i, j])}"
                    ax.text(j, i, text, ha="center", va="center", fontsize=8,
                            color="white" if hi and shown[i, j] > hi / 2 else "black")
        fig.tight_layout()
    except BaseException:
        plt.close(fig)
        raise
    save_figure(fig, path)
    return Path(path)


__all__ = ["PROB_CLIP", "accuracy", "break_even_point", "break_even_points", "confusion_matrix",
           "evaluate_predictions", "format_report", "log_loss", "looks_like_probabilities", "plot_confusion",
           "precision_recall_f1", "to_probabilities", "top_k_accuracy"]
