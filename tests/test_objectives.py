"""The objective seam: classify matches its equation, and a new objective trains without touching the loop."""
import pytest
import torch
import torch.nn.functional as F

from cnnlab import runs
from cnnlab.config import TrainConfig
from cnnlab.device import Runtime
from cnnlab.errors import CnnlabError
from cnnlab.objectives import OBJECTIVES, EvalSetup, Objective, create_objective, register_objective
from cnnlab.objectives.classify import Classify, probability_metrics
from cnnlab.train import train


def test_classify_loss_is_label_smoothed_cross_entropy():
    logits, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    obj = create_objective(TrainConfig(label_smoothing=0.1))
    assert isinstance(obj, Classify)
    # eq.: target 1 - e + e/K on the true class, e/K elsewhere; loss = -sum target * log softmax
    target = torch.full((6, 4), 0.1 / 4)
    target[torch.arange(6), y] += 0.9
    expected = -(target * torch.log_softmax(logits, 1)).sum(1).mean()
    assert obj.loss(logits, y).item() == pytest.approx(expected.item(), rel=1e-6)
    assert obj.loss(logits.bfloat16(), y).dtype == torch.float32  # computed in float32 under autocast


def test_classify_train_metrics_count_correct_predictions():
    obj = Classify()
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    sums = obj.batch_sums(logits, torch.tensor([0, 1, 1]))
    assert obj.train_metrics({k: v.item() for k, v in sums.items()}, 3) == {"train_acc": pytest.approx(2 / 3)}


def test_probability_metrics_nll_and_accuracy():
    probs = torch.tensor([[0.8, 0.2], [0.4, 0.6]])
    m = probability_metrics(probs, torch.tensor([0, 0]))
    assert m["test_acc"] == 0.5
    assert m["test_loss"] == pytest.approx(-(torch.log(torch.tensor(0.8)) + torch.log(torch.tensor(0.4))).item() / 2)


def test_per_epoch_precision_recall_and_f1_of_macro_are_sadie_eq_4_1_to_4_3():
    """Macro P and R over all classes (a never-predicted class counts as 0), F1 = 2PR/(P+R) of those averages."""
    from cnnlab.metrics import evaluate_predictions

    probs = torch.tensor([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1]])
    labels = torch.tensor([0, 0, 1, 1, 2])
    m = probability_metrics(probs, labels)
    # class 0: predicted 3x, 2 right -> P 2/3, R 1; class 1: predicted 2x, 1 right -> P 1/2, R 1/2; class 2: 0, 0
    p, r = (2 / 3 + 1 / 2 + 0) / 3, (1 + 1 / 2 + 0) / 3
    assert m["test_precision"] == pytest.approx(p) and m["test_recall"] == pytest.approx(r)
    assert m["test_f1_of_macro"] == pytest.approx(2 * p * r / (p + r))
    full = evaluate_predictions(probs, labels, 3)
    assert (full["precision"], full["recall"]) == pytest.approx((p, r))
    assert full["f1"] < m["test_f1_of_macro"]  # the mean of per-class F1 is another (smaller) number


def test_objective_options_follow_the_name(tiny_config):
    from cnnlab.objectives import parse_objective

    assert parse_objective("energy-hybrid:weight=0.5,chains=7") == ("energy-hybrid", {"weight": 0.5, "chains": 7})
    assert parse_objective("classify") == ("classify", {})
    with pytest.raises(CnnlabError, match="objective 'classify' has no option 'smoothing'"):
        create_objective(tiny_config(objective="classify:smoothing=0.1"))


def test_classify_evaluate_restores_training_mode():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(4, 3)).train()
    setup = EvalSetup(Runtime(torch.device("cpu")), mean=(0.5,), std=(0.5,))
    m = Classify().evaluate(model, torch.randint(0, 256, (5, 1, 2, 2), dtype=torch.uint8), torch.zeros(5).long(), setup)
    assert set(m) == {"test_loss", "test_acc", "test_precision", "test_recall", "test_f1_of_macro"} and model.training


def test_unknown_objective_is_a_clear_error(tiny_config):
    with pytest.raises(CnnlabError, match="unknown objective 'clasify'; did you mean classify"):
        train(tiny_config(objective="clasify"))


class _Regress(Objective):
    """A toy objective the loop has never heard of: regress the logits onto one-hot labels."""

    name, headline = "test-regress", None

    @classmethod
    def from_config(cls, cfg):
        return cls()

    def inputs_and_targets(self, x, y):
        return x, F.one_hot(y, 4).float()

    def loss(self, output, target):
        return F.mse_loss(output.float(), target)

    def batch_sums(self, output, target):
        return {"sq_err": (output.detach().float() - target).pow(2).sum()}

    def train_metrics(self, sums, seen):
        return {"train_sq_err": sums["sq_err"] / seen}

    def evaluate(self, model, images, labels, setup):
        from cnnlab.predict import predict_probs

        return {"test_acc_argmax": (predict_probs(model, images, setup.mean, setup.std, setup.runtime).argmax(1)
                                    == labels).float().mean().item()}


if "test-regress" not in OBJECTIVES:
    register_objective("test-regress")(_Regress)


def test_a_new_objective_trains_through_the_unchanged_loop(tiny_config):
    summary = train(tiny_config(objective="test-regress", epochs=2))
    rows = runs.read_metrics(runs.Path(summary["run_dir"]))
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all("train_sq_err" in r and "val_acc_argmax" in r and "train_acc" not in r for r in rows)  # validation
    assert rows[1]["train_loss"] < rows[0]["train_loss"]
    assert "best_test_acc" not in summary and "test_acc_argmax" in summary  # no headline and no loss: no "best"
    assert "selection" not in summary and "best_epoch" not in summary


def test_target_acc_needs_an_accuracy_objective(tiny_config):
    with pytest.raises(CnnlabError, match="--target-acc"):
        train(tiny_config(objective="test-regress", target_acc=90))
