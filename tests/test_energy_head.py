"""SADIE's energy head (eq. 3.5-3.11 read as a discriminative RBM) and the energy-hybrid objective (PCD).

Every closed form is checked against a brute-force sum or integral on a tiny head (3 visible,
4 hidden units, 3 classes), gradients with gradcheck in float64, and the Gibbs sampler of the
hybrid objective against the exact gradient of log Z of the same tiny model.
"""
import itertools
import math

import pytest
import torch
import torch.nn as nn

from cnnlab import runs
from cnnlab.cli import main
from cnnlab.config import TrainConfig
from cnnlab.errors import CnnlabError
from cnnlab.models import create_model
from cnnlab.models.energy import EnergyHead, hidden_log_partition, hidden_mean, sample_rectified_gaussian
from cnnlab.objectives import create_objective
from cnnlab.objectives.hybrid import EnergyHybrid
from cnnlab.train import train

N_V, N_H, K = 3, 4, 3


def tiny_head(units="binary", dtype=torch.float64, seed=0) -> EnergyHead:
    torch.manual_seed(seed)
    head = EnergyHead(N_V, K, hidden=N_H, units=units).to(dtype)
    with torch.no_grad():  # every parameter away from its initial zero, so each term of eq. 3.5 matters
        for p in head.parameters():
            p.copy_(torch.randn_like(p) * 0.7)
    return head


def energy(head: EnergyHead, x, y: int, h) -> torch.Tensor:
    """Eq. 3.5 (standard signs, hidden bias c): E = -h W x - h U e_y - b_y - a x - c h."""
    W, c = head.visible_to_hidden.weight, head.visible_to_hidden.bias
    return -(h @ W @ x) - h @ head.class_to_hidden[:, y] - head.class_bias[y] - head.visible_bias @ x - c @ h


# ----------------------------------------------------------------------------- the free energy


def test_binary_free_energy_is_minus_log_of_the_brute_force_sum_over_h():
    head = tiny_head()
    x = torch.randn(5, N_V, dtype=torch.float64)
    F = head.free_energy(x)
    hs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=N_H)), dtype=torch.float64)
    assert len(hs) == 2 ** N_H
    for n in range(len(x)):
        for y in range(K):
            brute = -torch.logsumexp(torch.stack([-energy(head, x[n], y, h) for h in hs]), 0)
            torch.testing.assert_close(F[n, y], brute, rtol=1e-10, atol=1e-10)


def test_relu_free_energy_is_minus_log_of_the_integral_over_h():
    """Rectified Gaussian units (h >= 0, extra energy h^2/2): a 2-D grid integral over two hidden units."""
    torch.manual_seed(1)
    head = EnergyHead(N_V, 2, hidden=2, units="relu").double()
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(torch.randn_like(p) * 0.7)
    x = torch.randn(2, N_V, dtype=torch.float64)
    grid = torch.linspace(0, 10, 1001, dtype=torch.float64)
    h1, h2 = torch.meshgrid(grid, grid, indexing="ij")
    h = torch.stack([h1, h2], -1)  # [G, G, 2]
    F = head.free_energy(x)
    W, c, U = head.visible_to_hidden.weight, head.visible_to_hidden.bias, head.class_to_hidden
    for n in range(2):
        for y in range(2):
            E = (-(h @ (W @ x[n])) - h @ U[:, y] - head.class_bias[y] - head.visible_bias @ x[n] - h @ c
                 + 0.5 * (h * h).sum(-1))
            integral = torch.trapezoid(torch.trapezoid(torch.exp(-E), grid, dim=1), grid)
            torch.testing.assert_close(F[n, y], -torch.log(integral), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("units", ["binary", "relu"])
def test_mean_activation_is_the_derivative_of_the_log_partition(units):
    t = torch.linspace(-12, 12, 97, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(hidden_log_partition(t, units).sum(), t)
    torch.testing.assert_close(hidden_mean(t.detach(), units), grad)


def test_relu_units_mean_is_a_smooth_relu():
    """Eq. 3.7 read as E[h | x, y] = f(t) with f ~ ReLU: far from 0 the rectified Gaussian's mean is max(0, t)."""
    t = torch.tensor([-20.0, -8.0, 8.0, 20.0], dtype=torch.float64)
    torch.testing.assert_close(hidden_mean(t, "relu"), torch.relu(t), atol=0.13, rtol=0)
    assert (hidden_mean(torch.linspace(-5, 5, 11), "relu") > 0).all()


@pytest.mark.parametrize("units", ["binary", "relu"])
def test_gradcheck_in_float64(units):
    head = tiny_head(units)
    x = torch.randn(4, N_V, dtype=torch.float64, requires_grad=True)
    names, params = zip(*head.named_parameters())

    def logits(x, *ps):  # the head's output as a function of its input and of every parameter
        return torch.func.functional_call(head, dict(zip(names, ps)), (x,))

    assert torch.autograd.gradcheck(logits, (x, *[p.detach().clone().requires_grad_(True) for p in params]))


@pytest.mark.parametrize("units", ["binary", "relu"])
def test_class_probabilities_sum_to_one_and_prediction_is_argmin_F(units):
    head = tiny_head(units, torch.float32)
    x = torch.randn(16, N_V)
    p = torch.softmax(head(x), 1)
    torch.testing.assert_close(p.sum(1), torch.ones(16))
    assert torch.equal(head(x).argmax(1), head.free_energy(x).argmin(1))  # eq. 3.11


def test_energies_are_float32_under_bf16_autocast():
    head = tiny_head(dtype=torch.float32)
    x = torch.randn(4, N_V)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(x.bfloat16())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, head(x.bfloat16().float()))


def test_rectified_gaussian_sampler_has_the_right_mean():
    torch.manual_seed(0)
    t = torch.tensor([-3.0, 0.0, 2.0]).repeat(40000, 1)
    h = sample_rectified_gaussian(t)
    assert (h >= 0).all() and torch.isfinite(h).all()
    torch.testing.assert_close(h.mean(0), hidden_mean(t[0], "relu"), atol=0.02, rtol=0)


# ----------------------------------------------------------------------------- any model takes the head


def test_head_replaces_the_final_linear_of_any_model():
    model = create_model("resnet20", 5, 3, image_size=16, width=0.25, head="energy", head_options={"hidden": 8})
    assert isinstance(model.fc, EnergyHead) and model.fc.hidden == 8 and model.fc.in_features == 16
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 5)
    plain = create_model("fastnet", 5, 1, image_size=16, widths=[8, 8, 16], head="linear")
    assert type(plain.head) is nn.Linear
    back = create_model("sadie110", 5, 1, image_size=16, width=0.125, head="linear")  # SADIE without its head
    assert type(back.fc) is nn.Linear


@pytest.mark.parametrize("options, message", [
    ({"model": "nin", "head": "energy"}, "final nn.Linear classifier, but its output comes from Conv2d"),
    ({"head": "energy", "head_options": {"hiden": 8}}, "no option 'hiden' .did you mean hidden"),
    ({"head": "energy", "head_options": {"units": "gaussian"}}, "units must be one of binary, relu"),
    ({"head": "energy", "head_options": {"hidden": 0}}, "hidden .* must be an integer >= 1"),
    ({"head": "linear", "head_options": {"hidden": 8}}, "head 'linear' takes no head_options"),
    ({"head": "softmax"}, "option head must be one of linear, energy"),
])
def test_bad_head_options_are_clear_errors(options, message):
    options = {"model": "fastnet", "widths": [8, 8, 16], **options}
    name = options.pop("model")
    if name == "nin":
        options.pop("widths")
    with pytest.raises(CnnlabError, match=message):
        create_model(name, 5, 1, image_size=16, **options)


def test_config_fields_reach_the_model_and_bad_values_name_the_flag():
    cfg = TrainConfig.from_dict({"head": "energy", "head_options": {"hidden": 64}})
    assert cfg.model_kwargs() == {"head": "energy", "head_options": {"hidden": 64}}
    with pytest.raises(CnnlabError, match="head must be one of linear, energy, got 'enrgy'"):
        TrainConfig.from_dict({"head": "enrgy"})


def test_a_model_with_the_head_learns_digits(tiny_config):
    summary = train(tiny_config(data="digits", model_options={"widths": [16, 24, 32]}, head="energy",
                                head_options={"hidden": 64}, epochs=4, lr=0.05))
    assert summary["test_acc"] >= 0.9, summary
    rows = runs.read_metrics(runs.Path(summary["run_dir"]))
    for key in ("val_precision", "val_recall", "val_f1_of_macro"):  # per epoch: the validation split
        assert 0.9 <= rows[-1][key] <= 1, key


def test_cli_head_flags(tmp_path, capsys):
    code = main(["train", "--data", "synthetic", "--model", "fastnet", "--model-options", "widths=[8,8,16]",
                 "--head", "energy", "--head-options", "hidden=16", "units=relu", "--epochs", "1", "-b", "64",
                 "--threads", "1", "--precision", "fp32", "--out", str(tmp_path), "--name", "cli"])
    assert code == 0
    meta = runs.read_json(tmp_path / "cli" / runs.META)
    assert meta["model_options"] == {"widths": [8, 8, 16], "head": "energy",
                                     "head_options": {"hidden": 16, "units": "relu"}}
    from cnnlab.inference import load_run

    assert isinstance(load_run(tmp_path / "cli").model.head, EnergyHead)  # eval/predict rebuild the head


# ----------------------------------------------------------------------------- the hybrid objective (PCD)


def log_partition(head: EnergyHead) -> torch.Tensor:
    """log Z of p(x, y) = exp(-F_gen) / Z, Gaussian visible units: the x integral in closed form, h and y summed."""
    W, c, U, b, a = (head.visible_to_hidden.weight, head.visible_to_hidden.bias, head.class_to_hidden,
                     head.class_bias, head.visible_bias)
    hs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=head.hidden)), dtype=W.dtype)  # [2^n_h, n_h]
    mean = a + hs @ W  # [H, n_v]: integral over x of exp(-|x|^2/2 + x.(a + W^T h)) = (2 pi)^(n_v/2) e^(|mean|^2/2)
    terms = 0.5 * (mean * mean).sum(1, keepdim=True) + (hs @ c)[:, None] + hs @ U + b  # [H, K]
    return torch.logsumexp(terms.flatten(), 0) + 0.5 * head.in_features * math.log(2 * math.pi)


def test_gibbs_chains_estimate_the_exact_gradient_of_log_Z():
    """At equilibrium, -mean dF_gen(chains)/dtheta -> d log Z / dtheta: checks every Gibbs conditional."""
    head = tiny_head()
    with torch.no_grad():
        for p in head.parameters():
            p.mul_(0.5)  # a well-mixing chain
    torch.manual_seed(0)
    objective = EnergyHybrid(chains=20000, gibbs_steps=60)
    objective.head = head
    xs, ys = objective.advance_chains(torch.zeros(1, N_V, dtype=torch.float64))
    estimate = torch.autograd.grad(-head.generative_free_energy(xs, ys).mean(), list(head.parameters()))
    exact = torch.autograd.grad(log_partition(head), list(head.parameters()))
    for e, g in zip(estimate, exact):
        torch.testing.assert_close(e, g, atol=0.02, rtol=0.02)


def test_hybrid_loss_is_classification_plus_weighted_free_energy_gap(tiny_config):
    model = create_model("fastnet", 4, 1, image_size=16, widths=[8, 8, 16], head="energy", head_options={"hidden": 8})
    objective = create_objective(tiny_config(objective="energy-hybrid:weight=0.5,chains=7"))
    objective.bind(model)
    model.train()
    x, y = torch.randn(6, 1, 16, 16), torch.tensor([0, 1, 2, 3, 0, 1])
    torch.manual_seed(3)
    loss = objective.loss(model(x), y)
    assert objective.chain_x.shape == (7, 16) and objective.chain_y.shape == (7,)
    ce = torch.nn.functional.cross_entropy(model(x), y)
    torch.testing.assert_close(objective._last["ce"], ce.detach())
    torch.testing.assert_close(loss, ce + 0.5 * objective._last["gap"])
    state = objective.state_dict()
    assert set(state) == {"chain_x", "chain_y"}
    fresh = EnergyHybrid()
    fresh.load_state_dict(state)
    assert torch.equal(fresh.chain_x, objective.chain_x)


@pytest.mark.parametrize("objective, model_extra, message", [
    ("energy-hybrid:weigth=1", {"head": "energy"}, "no option 'weigth' .did you mean weight"),
    ("energy-hybrid:chains=0", {"head": "energy"}, "option chains must be an integer >= 1"),
    ("energy-hybrid:weight", {"head": "energy"}, "NAME:KEY=VALUE"),
    ("energy-hybrid", {}, "needs a model with an energy head: add --head energy"),
    ("energy-hybrid", {"head": "energy", "head_options": {"units": "relu"}}, "units=binary"),
    ("classify:weight=1", {}, "objective 'classify' has no option 'weight'"),
])
def test_hybrid_errors_name_the_option(tiny_config, objective, model_extra, message):
    with pytest.raises(CnnlabError, match=message):
        train(tiny_config(objective=objective, epochs=1, **model_extra))


def test_hybrid_resume_after_crash_matches_uninterrupted_run(tiny_config):
    """The persistent chains are saved in the checkpoint: a resumed run repeats an uninterrupted one."""
    extra = dict(head="energy", head_options={"hidden": 8}, objective="energy-hybrid:weight=0.1,chains=16", epochs=3)
    full = train(tiny_config(name="full", **extra))

    def crash_after_epoch_1(row):
        if row["epoch"] == 1:
            raise KeyError("crash")

    with pytest.raises(KeyError):
        train(tiny_config(name="crashed", **extra), on_epoch=crash_after_epoch_1)
    resumed = train(tiny_config(name="crashed", **extra), resume=True)
    strip = {"images_per_second", "epoch_seconds", "elapsed"}
    a, b = (runs.read_metrics(runs.Path(s["run_dir"])) for s in (full, resumed))
    assert [{k: v for k, v in r.items() if k not in strip} for r in a] == \
        [{k: v for k, v in r.items() if k not in strip} for r in b]
    ca, cb = (torch.load(f"{s['run_dir']}/{runs.CHECKPOINT}", weights_only=True)["objective"] for s in (full, resumed))
    assert torch.equal(ca["chain_x"], cb["chain_x"]) and torch.equal(ca["chain_y"], cb["chain_y"])
    assert "train_ce" in a[0] and "train_free_energy_gap" in a[0]
