"""Every registered optimizer against a hand-written implementation of its update equation.

float64, small tensors, 3 steps; gradients come from a fixed quadratic so trajectories can be
compared (needed for Nesterov, whose PyTorch form tracks a shifted iterate).
"""
import math

import pytest
import torch
import torch.nn as nn

from cnnlab.errors import CnnlabError
from cnnlab.optim import (OPTIMIZERS, create_optimizer, momentum_options, param_groups,
                          resolve_epoch_options)

A = torch.tensor([[3.0, 0.5, 0.0], [0.5, 1.0, -0.3], [0.0, -0.3, 2.0]], dtype=torch.float64)
B = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
THETA0 = torch.tensor([0.7, -0.4, 1.3], dtype=torch.float64)
STEPS = 3


def Z() -> torch.Tensor:
    return torch.zeros(3, dtype=torch.float64)


def grad_fn(theta: torch.Tensor) -> torch.Tensor:
    """Gradient of 0.5 theta'A theta - b'theta."""
    return A @ theta - B


def run_torch(name: str, steps: int = STEPS, lr: float = 0.1, weight_decay: float = 0.0, **options):
    """Trajectory of the registered optimizer: [theta_1, ..., theta_steps]."""
    p = nn.Parameter(THETA0.clone())
    opt = create_optimizer(name, [p], lr=lr, weight_decay=weight_decay, **options)
    out = []
    for _ in range(steps):
        opt.zero_grad()
        p.grad = grad_fn(p.detach())
        opt.step()
        out.append(p.detach().clone())
    return out


def check(traj, expected, atol: float = 1e-14):
    assert len(traj) == len(expected)
    for t, (a, b) in enumerate(zip(traj, expected), 1):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=atol, msg=f"step {t}")


def test_all_paper_optimizers_registered():
    for name in ("sgd", "momentum", "nag", "adagrad", "adadelta", "rmsprop", "adam", "adamax", "nadam", "adamw",
                 "lars", "adam-sgd-switch"):
        assert name in OPTIMIZERS


def test_sgd_minibatch_with_l2_weight_decay():
    # theta <- theta - eta * (g + lambda * theta)   (Algorithm 2; eq. 2.22 for the decay term)
    eta, lam = 0.1, 0.01
    theta, expected = THETA0.clone(), []
    for _ in range(STEPS):
        theta = theta - eta * (grad_fn(theta) + lam * theta)
        expected.append(theta)
    check(run_torch("sgd", lr=eta, weight_decay=lam, momentum=0.0), expected)


@pytest.mark.parametrize("name,opts", [("sgd", {"momentum": 0.9}), ("momentum", {})])
def test_momentum_eq_2_14_2_15(name, opts):
    # v_t = beta v_{t-1} - eta grad F(theta_{t-1});  theta_t = theta_{t-1} + v_t
    eta, beta = 0.1, 0.9
    theta, v, expected = THETA0.clone(), Z(), []
    for _ in range(STEPS):
        v = beta * v - eta * grad_fn(theta)
        theta = theta + v
        expected.append(theta)
    check(run_torch(name, lr=eta, **opts), expected)


@pytest.mark.parametrize("name,opts", [("sgd", {"momentum": 0.9, "nesterov": True}), ("nag", {})])
def test_nesterov_eq_2_16_2_17(name, opts):
    # v_t = beta v_{t-1} - eta grad F(theta_{t-1} + beta v_{t-1});  theta_t = theta_{t-1} + v_t.
    # PyTorch's nesterov=True (Sutskever/Bengio reformulation) stores the look-ahead point
    # phi_t = theta_t + beta v_t and evaluates the gradient there; same trajectory, shifted variable.
    eta, beta = 0.1, 0.9
    theta, v, expected = THETA0.clone(), Z(), []
    for _ in range(STEPS):
        v = beta * v - eta * grad_fn(theta + beta * v)
        theta = theta + v
        expected.append(theta + beta * v)
    check(run_torch(name, lr=eta, **opts), expected)


def test_adagrad():
    # G_t = G_{t-1} + g_t^2;  theta <- theta - eta g_t / (sqrt(G_t) + eps)
    eta, eps = 0.5, 1e-10
    theta, G, expected = THETA0.clone(), Z(), []
    for _ in range(STEPS):
        g = grad_fn(theta)
        G = G + g * g
        theta = theta - eta * g / (G.sqrt() + eps)
        expected.append(theta)
    check(run_torch("adagrad", lr=eta, eps=eps), expected)


@pytest.mark.parametrize("lr", [1.0, 0.5])
def test_adadelta(lr):
    # E[g^2]_t = rho E[g^2] + (1-rho) g^2;  dx = -sqrt(E[dx^2] + eps) / sqrt(E[g^2]_t + eps) * g
    # theta += lr * dx;  E[dx^2]_t = rho E[dx^2] + (1-rho) dx^2   (Zeiler 2012, Algorithm 1; lr=1 is the paper)
    rho, eps = 0.9, 1e-6
    theta, Eg, Edx, expected = THETA0.clone(), Z(), Z(), []
    for _ in range(STEPS):
        g = grad_fn(theta)
        Eg = rho * Eg + (1 - rho) * g * g
        dx = -((Edx + eps).sqrt() / (Eg + eps).sqrt()) * g
        Edx = rho * Edx + (1 - rho) * dx * dx
        theta = theta + lr * dx
        expected.append(theta)
    check(run_torch("adadelta", lr=lr, rho=rho, eps=eps), expected)


def test_rmsprop():
    # E[g^2]_t = alpha E[g^2] + (1-alpha) g^2;  theta <- theta - eta g / (sqrt(E[g^2]_t) + eps)
    eta, alpha, eps = 0.01, 0.9, 1e-8
    theta, E, expected = THETA0.clone(), Z(), []
    for _ in range(STEPS):
        g = grad_fn(theta)
        E = alpha * E + (1 - alpha) * g * g
        theta = theta - eta * g / (E.sqrt() + eps)
        expected.append(theta)
    check(run_torch("rmsprop", lr=eta, alpha=alpha, eps=eps), expected)


def adam_reference(eta, b1, b2, eps, steps=STEPS, decoupled_wd=0.0):
    theta, m, v, expected = THETA0.clone(), Z(), Z(), []
    for t in range(1, steps + 1):
        g = grad_fn(theta)
        theta = theta * (1 - eta * decoupled_wd)  # AdamW: decay first, decoupled from the gradient
        m = b1 * m + (1 - b1) * g  # eq. 3.12
        v = b2 * v + (1 - b2) * g * g  # eq. 3.13
        m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)  # bias correction
        theta = theta - eta * m_hat / (v_hat.sqrt() + eps)  # eq. 3.14
        expected.append(theta)
    return expected


def test_adam_with_bias_correction_eq_3_12_3_14():
    check(run_torch("adam", lr=0.01, betas=(0.8, 0.95), eps=1e-8), adam_reference(0.01, 0.8, 0.95, 1e-8))


def test_adamw_decoupled_weight_decay():
    check(run_torch("adamw", lr=0.01, weight_decay=0.1, betas=(0.9, 0.99), eps=1e-8),
          adam_reference(0.01, 0.9, 0.99, 1e-8, decoupled_wd=0.1))


def test_adamax():
    # m_t = b1 m + (1-b1) g;  u_t = max(b2 u, |g|);  theta <- theta - (eta / (1 - b1^t)) m_t / u_t
    # (Kingma & Ba 2015, Algorithm 2; PyTorch adds eps inside the max, so eps=0 here)
    eta, b1, b2 = 0.02, 0.9, 0.999
    theta, m, u, expected = THETA0.clone(), Z(), Z(), []
    for t in range(1, STEPS + 1):
        g = grad_fn(theta)
        m = b1 * m + (1 - b1) * g
        u = torch.maximum(b2 * u, g.abs())
        theta = theta - eta / (1 - b1 ** t) * m / u
        expected.append(theta)
    check(run_torch("adamax", lr=eta, betas=(b1, b2), eps=0.0), expected)


def test_nadam_dozat():
    # Dozat 2016 with the momentum schedule mu_t = b1 (1 - 0.5 * 0.96^(t psi)):
    # m_hat = mu_{t+1} m_t / (1 - prod_{i<=t+1} mu_i) + (1 - mu_t) g_t / (1 - prod_{i<=t} mu_i)
    # theta <- theta - eta m_hat / (sqrt(v_t / (1 - b2^t)) + eps)
    eta, b1, b2, eps, psi = 0.01, 0.9, 0.999, 1e-8, 0.004
    theta, m, v, prod, expected = THETA0.clone(), Z(), Z(), 1.0, []
    for t in range(1, STEPS + 1):
        g = grad_fn(theta)
        mu = b1 * (1 - 0.5 * 0.96 ** (t * psi))
        mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * psi))
        prod *= mu
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = mu_next * m / (1 - prod * mu_next) + (1 - mu) * g / (1 - prod)
        theta = theta - eta * m_hat / ((v / (1 - b2 ** t)).sqrt() + eps)
        expected.append(theta)
    # PyTorch keeps the running product of mu in a float32 scalar: agreement to ~1e-9, not 1e-14
    check(run_torch("nadam", lr=eta, betas=(b1, b2), eps=eps, momentum_decay=psi), expected, atol=1e-8)


# ------------------------------------------------------------------ factory


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.bn = nn.BatchNorm2d(2)
        self.head = nn.Linear(2, 3)


def test_param_groups_no_decay_on_bias_and_norm_and_lr_mults():
    net = Net()
    groups = param_groups(net, 0.01, decay_norm_bias=False, lr_mults={"head": 0.1})
    by_param = {id(p): g for g in groups for p in g["params"]}
    assert by_param[id(net.conv.weight)]["weight_decay"] == 0.01
    assert by_param[id(net.conv.bias)]["weight_decay"] == 0.0
    assert by_param[id(net.bn.weight)]["weight_decay"] == 0.0
    assert by_param[id(net.head.weight)]["lr_mult"] == 0.1
    opt = create_optimizer("adam-sgd-switch", net, lr=0.5, weight_decay=0.01, lr_mults={"head": 0.1})
    lrs = {g["lr_mult"]: g["lr"] for g in opt.param_groups}
    assert lrs == {1.0: 0.5, 0.1: pytest.approx(0.05)}
    decayed = create_optimizer("lars", net, lr=0.5, weight_decay=0.01, decay_norm_bias=True)
    assert all(g["weight_decay"] == 0.01 for g in decayed.param_groups)


def test_every_optimizer_builds_and_steps_on_a_model():
    net = Net()
    for name in OPTIMIZERS.names():
        opt = create_optimizer(name, net, lr=0.01, weight_decay=1e-4, **momentum_options(name, 0.9, False))
        x = torch.randn(2, 1, 5, 5)
        loss = net.head(net.bn(net.conv(x)).mean((2, 3))).square().sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert all(torch.isfinite(p).all() for p in net.parameters()), name


def test_unknown_option_and_name_raise_cnnlab_error():
    with pytest.raises(CnnlabError, match="no option 'momentum'"):
        create_optimizer("adam", [nn.Parameter(torch.zeros(2))], lr=0.1, momentum=0.9)
    with pytest.raises(CnnlabError, match="did you mean"):
        create_optimizer("adamx", [nn.Parameter(torch.zeros(2))], lr=0.1)
    with pytest.raises(CnnlabError, match="trust_coef"):
        create_optimizer("lars", [nn.Parameter(torch.zeros(2))], lr=0.1, trust_coef=-1)


def test_momentum_options_mapping():
    assert momentum_options("sgd", 0.9, True) == {"momentum": 0.9, "nesterov": True}
    assert momentum_options("sgd", None, True) == {"momentum": 0.0, "nesterov": False}
    assert momentum_options("lars", 0.8, True) == {"momentum": 0.8}
    assert momentum_options("adam-sgd-switch", 0.8, True) == {"sgd_momentum": 0.8}
    assert momentum_options("adam-sgd-switch", None, True) == {}
    assert momentum_options("nag", 0.95, False) == {"momentum": 0.95}
    assert momentum_options("adam", 0.9, True) == {}


def test_force_switch_epoch_is_converted_by_the_trainer():
    params = [nn.Parameter(torch.zeros(2))]
    with pytest.raises(CnnlabError, match="resolve_epoch_options"):
        create_optimizer("adam-sgd-switch", params, lr=0.1, force_switch_epoch=2)
    opts = resolve_epoch_options({"force_switch_epoch": 2.5, "blend_steps": 4}, steps_per_epoch=10)
    assert opts == {"force_switch_step": 25, "blend_steps": 4}
    opt = create_optimizer("adam-sgd-switch", params, lr=0.1, **opts)
    assert opt.force_switch_step == 25
    assert resolve_epoch_options({"force_switch_epoch": None}, 10) == {}
    with pytest.raises(CnnlabError):
        resolve_epoch_options({"force_switch_epoch": 1, "force_switch_step": 3}, 10)
    assert math.isclose(0.1, opt.param_groups[0]["lr"])
