"""cnnlab.metrics against scikit-learn, plus hand-checked break-even points and the plot."""
import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from cnnlab import metrics as M
from cnnlab.errors import CnnlabError


def _random_case(seed, n=300, c=7, never_predicted=(2, 5), absent=(6,)):
    """Random logits and labels where some classes are never predicted and one is absent from the labels."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, c)) * 2
    logits[:, list(never_predicted)] -= 100.0  # these classes never win the argmax
    labels = rng.integers(0, c, size=n)
    labels[np.isin(labels, absent)] = 0
    # make predictions correlate with labels so P/R are not all tiny
    hit = rng.random(n) < 0.4
    logits[hit, labels[hit]] += 5.0
    return logits, labels


SEEDS = [0, 1, 2, 3]


@pytest.mark.parametrize("seed", SEEDS)
def test_against_sklearn(seed):
    logits, labels = _random_case(seed)
    c = logits.shape[1]
    probs = torch.softmax(torch.tensor(logits), 1).numpy()
    pred = logits.argmax(1)
    classes = list(range(c))
    out = M.evaluate_predictions(torch.tensor(logits, dtype=torch.float32), torch.tensor(labels), c)

    assert out["acc"] == pytest.approx(skm.accuracy_score(labels, pred))
    assert out["top5"] == pytest.approx(skm.top_k_accuracy_score(labels, probs, k=5, labels=classes))
    assert M.top_k_accuracy(logits, labels, k=3) == pytest.approx(
        skm.top_k_accuracy_score(labels, probs, k=3, labels=classes))
    # log-loss on scores whose probabilities are all far above the 1e-12 clip (scikit-learn clips at
    # float eps instead, so the -100 logits of the never-predicted classes would compare unequally)
    mild = np.random.default_rng(seed).normal(size=logits.shape)
    mild_probs = torch.softmax(torch.tensor(mild), 1).numpy()
    want = skm.log_loss(labels, mild_probs, labels=classes)
    assert M.log_loss(mild, labels) == pytest.approx(want, rel=1e-9)
    assert M.log_loss(mild_probs, labels) == pytest.approx(want, rel=1e-9)
    assert M.evaluate_predictions(mild, labels, c)["nll"] == pytest.approx(want, rel=1e-9)
    np.testing.assert_array_equal(np.array(out["confusion"]), skm.confusion_matrix(labels, pred, labels=classes))

    p, r, f, s = skm.precision_recall_fscore_support(labels, pred, labels=classes, average=None, zero_division=0)
    got = out["per_class"]
    np.testing.assert_allclose([d["precision"] for d in got], p)
    np.testing.assert_allclose([d["recall"] for d in got], r)
    np.testing.assert_allclose([d["f1"] for d in got], f)
    np.testing.assert_array_equal([d["support"] for d in got], s)
    mp, mr, mf, _ = skm.precision_recall_fscore_support(labels, pred, labels=classes, average="macro",
                                                        zero_division=0)
    assert (out["precision"], out["recall"], out["f1"]) == pytest.approx((mp, mr, mf))
    # the case really exercises the zero-division paths
    assert got[2]["precision"] == 0 and got[6]["support"] == 0 and got[6]["recall"] == 0


def test_types_and_keys():
    logits, labels = _random_case(0, n=50)
    out = M.evaluate_predictions(logits, labels, 7, class_names=list("abcdefg"))
    assert set(out) >= {"acc", "top5", "nll", "precision", "recall", "f1", "bep", "per_class", "confusion"}
    for k in ("acc", "top5", "nll", "precision", "recall", "f1", "bep"):
        assert type(out[k]) is float
    assert [d["name"] for d in out["per_class"]] == list("abcdefg")
    assert all(type(v) is int for row in out["confusion"] for v in row)
    assert all(type(d["support"]) is int and type(d["f1"]) is float for d in out["per_class"])


def test_logits_and_probabilities_agree():
    logits, labels = _random_case(1)
    probs = torch.softmax(torch.tensor(logits), 1)
    a = M.evaluate_predictions(logits, labels, 7)
    b = M.evaluate_predictions(probs, labels, 7)
    for k in ("acc", "top5", "nll", "precision", "recall", "f1", "bep"):
        assert a[k] == pytest.approx(b[k], rel=1e-6), k


def test_top5_clipped_and_nll_clip():
    labels = np.array([0, 1, 2])
    probs = np.eye(3)[[1, 2, 0]]  # every sample confidently wrong: p_true = 0
    assert M.top_k_accuracy(probs, labels, k=5) == 1.0  # k clipped to 3 classes
    assert M.log_loss(probs, labels) == pytest.approx(-np.log(1e-12))


def test_confusion_keeps_absent_classes():
    cm = M.confusion_matrix([0, 0, 1], [0, 1, 1], num_classes=4)
    assert cm.shape == (4, 4) and cm.tolist()[:2] == [[1, 1, 0, 0], [0, 1, 0, 0]] and cm[2:].sum() == 0


def test_bep_known_cases():
    # 3 positives; ranking: + + - + - -. Top 3 = (+, +, -) -> P = R = 2/3 at threshold 3rd score.
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    pos = [1, 1, 0, 1, 0, 0]
    assert M.break_even_point(scores, pos) == pytest.approx(2 / 3)
    # perfect ranking -> 1, reversed ranking -> 0
    assert M.break_even_point([3, 2, 1, 0], [1, 1, 0, 0]) == 1.0
    assert M.break_even_point([3, 2, 1, 0], [0, 0, 1, 1]) == 0.0
    # tie straddling n_pos = 2: thresholds give (n_pred=1, TP=1) then (n_pred=3, TP=2);
    # P - R goes from 1/2 to -1/3, interpolating to n_pred = 2 gives TP = 1.5 -> BEP = 0.75
    assert M.break_even_point([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0]) == pytest.approx(0.75)
    # no positives -> 0 (zero_division=0)
    assert M.break_even_point([0.3, 0.2], [0, 0]) == 0.0


def _pr_over_thresholds(scores, pos):
    scores, pos = np.asarray(scores), np.asarray(pos, bool)
    ps, rs = [], []
    for t in np.unique(scores):
        sel = scores >= t
        tp = (sel & pos).sum()
        ps.append(tp / sel.sum())
        rs.append(tp / pos.sum())
    return np.array(ps), np.array(rs)


@pytest.mark.parametrize("seed", SEEDS)
def test_bep_between_threshold_extremes(seed):
    rng = np.random.default_rng(seed)
    scores = np.round(rng.random(200), 1)  # coarse scores: many ties
    pos = rng.random(200) < scores  # informative
    bep = M.break_even_point(scores, pos)
    ps, rs = _pr_over_thresholds(scores, pos)
    assert ps.min() <= bep <= ps.max() and rs.min() <= bep <= rs.max()
    # and between the P (and R) values of the two thresholds that bracket the sign change of P - R
    d = ps - rs  # thresholds ascending: d <= 0 at low thresholds, >= 0 at high ones
    i = np.flatnonzero(d > 0)[0]  # lowest threshold with P > R
    lo, hi = sorted([ps[i - 1], ps[i]])
    assert lo - 1e-12 <= bep <= hi + 1e-12


def test_macro_bep():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    out = M.evaluate_predictions(probs, [0, 0, 1, 1], 2)
    assert out["bep"] == 1.0 and [d["bep"] for d in out["per_class"]] == [1.0, 1.0]
    out = M.evaluate_predictions(probs, [0, 1, 0, 1], 2)
    # class 0 ranked (0.9 +, 0.6 -, ...) -> top-2 has 1 positive -> 0.5; class 1 same -> 0.5
    assert out["bep"] == pytest.approx(0.5)


def test_errors_name_the_argument():
    with pytest.raises(CnnlabError, match="labels"):
        M.evaluate_predictions(np.zeros((3, 2)), [0, 1, 2], 2)
    with pytest.raises(CnnlabError, match="logits_or_probs"):
        M.evaluate_predictions(np.zeros((3, 3)), [0, 1, 1], 2)
    with pytest.raises(CnnlabError, match="class_names"):
        M.evaluate_predictions(np.zeros((3, 2)), [0, 1, 1], 2, class_names=["a"])
    with pytest.raises(CnnlabError, match="num_classes"):
        M.evaluate_predictions(np.zeros((3, 2)), [0, 1, 1], 0)


def test_format_report_and_plot(tmp_path):
    logits, labels = _random_case(2, n=80)
    names = ["zero", "one", "two", "three", "four", "five", "six"]
    out = M.evaluate_predictions(logits, labels, 7, class_names=names)
    text = M.format_report(out)
    for word in names + ["macro avg", "accuracy", "confusion matrix", "precision", "bep"]:
        assert word in text
    path = M.plot_confusion(out["confusion"], names, tmp_path / "sub" / "cm.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
