"""Adam -> SGD switch (SADIE Section 3.3, eq. 3.12-3.17): gamma/Lambda, the condition, the blend, the SGD phase."""
import copy
import io
import math

import pytest
import torch
import torch.nn as nn

from cnnlab.optim import AdamSGDSwitch, create_optimizer, create_scheduler

F64 = torch.float64
THETA0 = torch.tensor([0.8, -0.5, 0.3], dtype=F64)
GRADS = [torch.tensor(g, dtype=F64) for g in (
    [0.9, -0.4, 0.2], [0.5, 0.3, -0.6], [1.1, -0.2, 0.1], [0.7, 0.4, 0.3], [-0.2, 0.6, 0.5],
    [0.3, -0.9, 0.4], [0.6, 0.1, -0.2], [0.4, 0.5, 0.6], [-0.3, 0.2, 0.9], [0.8, -0.6, 0.1],
    [0.2, 0.2, -0.4], [0.5, -0.3, 0.7])]


def run(opt: AdamSGDSwitch, p: nn.Parameter, grads) -> list[torch.Tensor]:
    out = []
    for g in grads:
        p.grad = g.clone()
        opt.step()
        out.append(p.detach().clone())
    return out


def make(**kw) -> tuple[AdamSGDSwitch, nn.Parameter]:
    p = nn.Parameter(THETA0.clone())
    return AdamSGDSwitch([p], **kw), p


class Reference:
    """The paper's equations, written out independently of the optimizer."""

    def __init__(self, lr, b1, b2, eps):
        self.lr, self.b1, self.b2, self.eps = lr, b1, b2, eps
        self.m = torch.zeros(3, dtype=F64)
        self.v = torch.zeros(3, dtype=F64)
        self.t = 0
        self.lam = 0.0

    def adam_step(self, g):  # returns alpha * m_hat / (sqrt(v_hat) + eps), eq. 3.12-3.14
        self.t += 1
        self.m = self.b1 * self.m + (1 - self.b1) * g
        self.v = self.b2 * self.v + (1 - self.b2) * g * g
        m_hat, v_hat = self.m / (1 - self.b1 ** self.t), self.v / (1 - self.b2 ** self.t)
        return self.lr * m_hat / (v_hat.sqrt() + self.eps)

    def observe(self, step, g):  # gamma (Keskar & Socher), eq. 3.15, Lambda, the gap of eq. 3.16
        p = -step
        gamma = float(p @ p / (-(p @ g)))
        self.lam = self.b2 * self.lam + (1 - self.b2) * gamma
        Lam = self.lam / (1 - self.b2 ** self.t)
        return gamma, Lam, abs(Lam - gamma)


def adam_phase(ref, theta, grads):
    """Adam steps with monitoring: trajectory and (gamma, Lambda, gap) per step."""
    traj, mon = [], []
    for g in grads:
        s = ref.adam_step(g)
        mon.append(ref.observe(s, g))
        theta = theta - s
        traj.append(theta)
    return theta, traj, mon


# --------------------------------------------------------------- Adam phase


def test_adam_phase_is_torch_adam():
    torch.manual_seed(0)
    p1 = nn.Parameter(torch.randn(5, 4, dtype=F64))
    p2 = nn.Parameter(p1.detach().clone())
    ours = AdamSGDSwitch([p1], lr=0.01, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.01, switch_eps=0.0)
    ref = torch.optim.Adam([p2], lr=0.01, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.01)
    for _ in range(6):
        g = torch.randn(5, 4, dtype=F64)
        p1.grad, p2.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
        torch.testing.assert_close(p1, p2, rtol=1e-13, atol=1e-15)
    assert ours.phase == "adam" and ours.switch_step is None


def test_gamma_and_Lambda_hand_computed():
    # scalar parameter, eps=0, b1 = b2 = 0.5, alpha = 0.1; g1 = 2, g2 = 1
    p = nn.Parameter(torch.tensor([1.0], dtype=F64))
    opt = AdamSGDSwitch([p], lr=0.1, betas=(0.5, 0.5), eps=0.0, switch_eps=0.0)
    p.grad = torch.tensor([2.0], dtype=F64)
    opt.step()
    # m_hat = g1, v_hat = g1^2: p_1 = -alpha sign(g1), gamma_1 = alpha^2 / (alpha * 2) = 0.05; Lambda_1 = gamma_1
    assert opt.switch["gamma"] == pytest.approx(0.05, rel=1e-14)
    assert opt.switch["Lambda"] == pytest.approx(0.05, rel=1e-14)
    assert opt.phase == "adam"  # the condition is not checked at t = 1 (it would hold trivially)
    p.grad = torch.tensor([1.0], dtype=F64)
    opt.step()
    # m_2 = 0.5*1 + 0.5*1 = 1, m_hat = 1/0.75; v_2 = 0.5*2 + 0.5*1 = 1.5, v_hat = 2
    gamma2 = 0.1 * (4 / 3) / math.sqrt(2)  # |p_2| / g_2
    lam2 = 0.5 * (0.5 * 0.05) + 0.5 * gamma2  # eq. 3.15
    Lambda2 = lam2 / (1 - 0.5 ** 2)
    assert opt.switch["gamma"] == pytest.approx(gamma2, rel=1e-14)
    assert opt.switch["Lambda"] == pytest.approx(Lambda2, rel=1e-14)
    assert opt.switch["gap"] == pytest.approx(abs(Lambda2 - gamma2), rel=1e-12)
    torch.testing.assert_close(p.detach(), torch.tensor([1.0 - 0.1 - gamma2], dtype=F64))


def test_gamma_Lambda_match_reference_on_vectors():
    opt, p = make(lr=0.05, betas=(0.9, 0.99), eps=1e-8, switch_eps=0.0)
    ref = Reference(0.05, 0.9, 0.99, 1e-8)
    _, traj, mon = adam_phase(ref, THETA0.clone(), GRADS[:5])
    for g, want_theta, (gamma, Lam, gap) in zip(GRADS[:5], traj, mon):
        p.grad = g.clone()
        opt.step()
        torch.testing.assert_close(p.detach(), want_theta, rtol=1e-13, atol=1e-15)
        assert opt.switch["gamma"] == pytest.approx(gamma, rel=1e-12)
        assert opt.switch["Lambda"] == pytest.approx(Lam, rel=1e-12)
        assert opt.switch["gap"] == pytest.approx(gap, rel=1e-9, abs=1e-15)


# ---------------------------------------------------------- switch condition


def test_switch_fires_at_first_step_with_gap_below_eps():
    ref = Reference(0.05, 0.9, 0.99, 1e-8)
    _, _, mon = adam_phase(ref, THETA0.clone(), GRADS[:10])
    gaps = [m[2] for m in mon]
    # the smallest gap from t = 2 on; eps just above it: no earlier step qualifies
    t_star = min(range(2, 11), key=lambda t: gaps[t - 1])
    eps = gaps[t_star - 1] * (1 + 1e-6)
    assert all(gaps[t - 1] >= eps for t in range(2, t_star))
    opt, p = make(lr=0.05, betas=(0.9, 0.99), eps=1e-8, switch_eps=eps, sgd_momentum=0.0)
    for t, g in enumerate(GRADS[:t_star], 1):
        assert opt.phase == "adam"
        p.grad = g.clone()
        opt.step()
    assert opt.switch_step == t_star
    assert opt.phase == "sgd"  # blend_steps = 0
    assert opt.sgd_lr == pytest.approx(mon[t_star - 1][1], rel=1e-12)  # the learned rate Lambda


def test_constant_gradient_switches_at_step_2():
    # constant g: gamma_t is constant, so Lambda_2 = gamma_2 and |Lambda - gamma| ~ 0 < eps at t = 2
    opt, p = make(lr=0.01, switch_eps=1e-12)
    run(opt, p, [torch.tensor([0.5, -1.0, 2.0], dtype=F64)] * 3)
    assert opt.switch_step == 2


def test_min_adam_steps_and_no_switch_with_zero_eps():
    opt, p = make(lr=0.01, switch_eps=1e-12, min_adam_steps=5)
    run(opt, p, [torch.tensor([0.5, -1.0, 2.0], dtype=F64)] * 6)
    assert opt.switch_step == 5
    opt, p = make(lr=0.01, switch_eps=0.0)
    run(opt, p, [torch.tensor([0.5, -1.0, 2.0], dtype=F64)] * 6)
    assert opt.switch_step is None and opt.phase == "adam"


# ------------------------------------------------------------------- blend


@pytest.mark.parametrize("mu", [0.0, 0.9])
def test_blend_weights_over_k_steps_then_sgd(mu):
    k, s = 4, 3  # forced switch after step 3, blend in steps 4..7, SGD from step 8
    opt, p = make(lr=0.05, betas=(0.9, 0.99), eps=1e-8, blend_steps=k, sgd_momentum=mu, force_switch_step=s)
    ref = Reference(0.05, 0.9, 0.99, 1e-8)
    theta, traj, mon = adam_phase(ref, THETA0.clone(), GRADS[:s])
    Lam = mon[-1][1]
    buf = None
    phases = []
    for i, g in enumerate(GRADS[s:s + k + 3], 1):
        buf = g.clone() if buf is None else mu * buf + g
        sgd = Lam * buf
        if i <= k:  # eq. 3.17: (k - i)/k Adam + i/k SGD
            theta = theta - ((k - i) / k * ref.adam_step(g) + i / k * sgd)
        else:
            theta = theta - sgd
        traj.append(theta)
    got = []
    for t, g in enumerate(GRADS[:s + k + 3], 1):
        p.grad = g.clone()
        opt.step()
        got.append(p.detach().clone())
        phases.append(opt.phase)
        if s < t <= s + k:
            assert opt.switch["blend_i"] == t - s
            assert opt.blend_weights() == ((k - (t - s)) / k, (t - s) / k)
    for a, b in zip(got, traj):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    assert opt.switch_step == s and opt.sgd_lr == pytest.approx(Lam, rel=1e-12)
    assert phases == ["adam"] * (s - 1) + ["blend"] * k + ["sgd"] * 4
    assert all("exp_avg" not in st for st in opt.state.values())  # Adam's moments freed after the blend


def test_blend_as_printed_eq_3_17():
    # blend_sgd_lr="adam": theta -= alpha [i/k G + (k-i)/k m_hat/(sqrt(v_hat)+eps)], then SGD at Lambda
    k, s, mu, lr = 3, 2, 0.5, 0.05
    opt, p = make(lr=lr, betas=(0.9, 0.99), eps=1e-8, blend_steps=k, sgd_momentum=mu, force_switch_step=s,
                  blend_sgd_lr="adam")
    ref = Reference(lr, 0.9, 0.99, 1e-8)
    theta, traj, mon = adam_phase(ref, THETA0.clone(), GRADS[:s])
    Lam, buf = mon[-1][1], None
    for i, g in enumerate(GRADS[s:s + k + 3], 1):
        if i <= k:
            theta = theta - lr * (i / k * g) - (k - i) / k * ref.adam_step(g)
        else:
            buf = g.clone() if buf is None else mu * buf + g
            theta = theta - Lam * buf
        traj.append(theta)
    got = run(opt, p, GRADS[:s + k + 3])
    for a, b in zip(got, traj):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("k", [0, 1])
def test_unbuffered_switch_k0_and_k1(k):
    # k = 0: the step after the switch is pure SGD at Lambda; k = 1 is the same (i = k = 1: weight 1 on SGD)
    s = 2
    opt, p = make(lr=0.05, betas=(0.9, 0.99), eps=1e-8, blend_steps=k, sgd_momentum=0.0, force_switch_step=s)
    ref = Reference(0.05, 0.9, 0.99, 1e-8)
    theta, traj, mon = adam_phase(ref, THETA0.clone(), GRADS[:s])
    Lam = mon[-1][1]
    for g in GRADS[s:s + 3]:
        theta = theta - Lam * g
        traj.append(theta)
    got = run(opt, p, GRADS[:s + 3])
    assert opt.phase == "sgd" and opt.switch_step == s
    for a, b in zip(got, traj):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_forced_switch_ignores_the_condition():
    # switch_eps huge: the condition would fire at t = 2, but a forced step disables it
    opt, p = make(lr=0.05, switch_eps=1e9, force_switch_step=4)
    run(opt, p, GRADS[:3])
    assert opt.phase == "adam"
    run(opt, p, GRADS[3:4])
    assert opt.switch_step == 4 and opt.phase == "sgd"
    ref = Reference(0.05, 0.9, 0.999, 1e-8)
    _, _, mon = adam_phase(ref, THETA0.clone(), GRADS[:4])
    assert opt.sgd_lr == pytest.approx(mon[-1][1], rel=1e-12)


def test_learned_rate_follows_schedule_lr_mult_and_override():
    s = 2
    for follows, fixed, mult, expect_scale in ((True, None, 1.0, 0.5), (False, None, 1.0, 1.0),
                                               (True, 0.3, 2.0, None)):
        p = nn.Parameter(THETA0.clone())
        opt = AdamSGDSwitch([{"params": [p], "lr_mult": mult, "lr": 0.05 * mult}], lr=0.05, sgd_momentum=0.0,
                            force_switch_step=s, sgd_lr_follows_schedule=follows, sgd_lr=fixed)
        run(opt, p, GRADS[:s])
        Lam = opt.sgd_lr
        opt.param_groups[0]["lr"] *= 0.5  # a schedule halves the rate after the switch
        before = p.detach().clone()
        run(opt, p, GRADS[s:s + 1])
        if fixed is not None:
            assert Lam == 0.3
            rate = 0.3 * mult * 0.5
        else:
            rate = Lam * expect_scale
        torch.testing.assert_close(p.detach(), before - rate * GRADS[s], rtol=1e-12, atol=1e-15)


def test_metrics():
    opt, p = make(lr=0.05, blend_steps=2, force_switch_step=2)
    m = opt.metrics()
    assert m["switched"] is False and m["phase"] == "adam" and m["switch_step"] is None and m["sgd_lr"] is None
    run(opt, p, GRADS[:3])
    m = opt.metrics()
    assert m == {"switched": True, "switch_step": 2, "sgd_lr": opt.sgd_lr, "sgd_lr_now": opt.sgd_lr, "phase": "blend",
                 "switch_gap": None, "switch_lambda": opt.switch["Lambda"]}
    opt.param_groups[0]["lr"] *= 0.1  # the schedule decays: the current SGD rate follows
    assert opt.metrics()["sgd_lr_now"] == pytest.approx(0.1 * opt.sgd_lr)
    run(opt, p, GRADS[3:4])
    assert opt.metrics()["phase"] == "sgd"


# -------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("cut", [1, 4, 5, 8])  # adam, mid-blend (i=1..), sgd
def test_state_dict_roundtrip_mid_blend(cut):
    kw = dict(lr=0.05, betas=(0.9, 0.99), blend_steps=4, sgd_momentum=0.9, force_switch_step=3)
    opt, p = make(**kw)
    full = run(opt, p, GRADS)
    opt_a, pa = make(**kw)
    run(opt_a, pa, GRADS[:cut])
    if cut == 5:  # as the trainer's checkpoints: torch.save / torch.load(weights_only=True)
        buf = io.BytesIO()
        torch.save(opt_a.state_dict(), buf)
        buf.seek(0)
        sd = torch.load(buf, weights_only=True)
    else:
        sd = copy.deepcopy(opt_a.state_dict())
    theta = pa.detach().clone()
    pb = nn.Parameter(theta)
    opt_b = AdamSGDSwitch([pb], **kw)
    opt_b.load_state_dict(sd)
    rest = run(opt_b, pb, GRADS[cut:])
    for a, b in zip(full[cut:], rest):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert opt_b.metrics() == opt.metrics()


def test_factory_model_scheduler_end_to_end():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = create_optimizer("adam-sgd-switch", net, lr=0.01, weight_decay=1e-4, switch_eps=1e9, blend_steps=3,
                           sgd_momentum=0.9)
    sched = create_scheduler("cosine", opt, total_steps=20, steps_per_epoch=5)
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    for _ in range(20):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        sched.step()
    m = opt.metrics()
    assert m["switched"] and m["switch_step"] == 2 and m["phase"] == "sgd" and m["sgd_lr"] > 0
    assert all(torch.isfinite(q).all() for q in net.parameters())
