"""LARS (You, Gitman & Ginsburg 2017): trust ratio and update, with excluded bias/norm parameters."""
import copy

import pytest
import torch
import torch.nn as nn

from cnnlab.optim import LARS, create_optimizer, create_scheduler

F64 = torch.float64


def test_trust_ratio_value():
    w = torch.tensor([3.0, 4.0], dtype=F64)  # ||w|| = 5
    g = torch.tensor([0.0, 2.0], dtype=F64)  # ||g|| = 2
    # eta * ||w|| / (||g|| + beta ||w||) = 0.001 * 5 / (2 + 0.1 * 5)
    assert LARS.trust_ratio(w, g, trust_coef=0.001, weight_decay=0.1).item() == pytest.approx(0.002, rel=1e-14)
    assert LARS.trust_ratio(w, g, trust_coef=0.02, weight_decay=0.0).item() == pytest.approx(0.05, rel=1e-14)
    # zero weights (or zero denominator) -> 1, as for excluded layers
    assert LARS.trust_ratio(torch.zeros(2, dtype=F64), g, 0.001, 0.1).item() == 1.0
    assert LARS.trust_ratio(w, torch.zeros(2, dtype=F64), 0.001, 0.0).item() == 1.0


def reference(w0, b0, grads, lr, m, wd_w, wd_b, eta, adapt_bias):
    """Algorithm 1 of You et al.: v = m v + lr * lambda * (g + beta w); w = w - v."""
    w, b = w0.clone(), b0.clone()
    vw, vb = torch.zeros_like(w), torch.zeros_like(b)
    out = []
    for gw, gb in grads:
        lam_w = eta * w.norm() / (gw.norm() + wd_w * w.norm())
        lam_b = eta * b.norm() / (gb.norm() + wd_b * b.norm()) if adapt_bias else 1.0
        vw = m * vw + lr * lam_w * (gw + wd_w * w)
        vb = m * vb + lr * lam_b * (gb + wd_b * b)
        w, b = w - vw, b - vb
        out.append((w.clone(), b.clone()))
    return out


W0 = torch.tensor([[0.5, -1.0], [2.0, 0.25]], dtype=F64)
B0 = torch.tensor([0.1, -0.2], dtype=F64)
GRADS = [(torch.tensor([[0.1, 0.2], [-0.3, 0.05]], dtype=F64), torch.tensor([0.5, -0.5], dtype=F64)),
         (torch.tensor([[-0.2, 0.1], [0.4, 0.3]], dtype=F64), torch.tensor([0.25, 0.75], dtype=F64)),
         (torch.tensor([[0.05, -0.1], [0.1, -0.2]], dtype=F64), torch.tensor([-0.1, 0.3], dtype=F64))]


def run(opt, w, b):
    out = []
    for gw, gb in GRADS:
        w.grad, b.grad = gw.clone(), gb.clone()
        opt.step()
        out.append((w.detach().clone(), b.detach().clone()))
    return out


@pytest.mark.parametrize("exclude", [True, False])
def test_update_matches_algorithm_1(exclude):
    w, b = nn.Parameter(W0.clone()), nn.Parameter(B0.clone())
    opt = LARS([{"params": [w], "weight_decay": 0.01}, {"params": [b], "weight_decay": 0.0}], lr=2.0,
               momentum=0.9, trust_coef=0.02, exclude_bias_norm=exclude)
    got = run(opt, w, b)
    want = reference(W0, B0, GRADS, lr=2.0, m=0.9, wd_w=0.01, wd_b=0.0, eta=0.02, adapt_bias=not exclude)
    for (gw, gb), (ew, eb) in zip(got, want):
        torch.testing.assert_close(gw, ew, rtol=1e-13, atol=1e-15)
        torch.testing.assert_close(gb, eb, rtol=1e-13, atol=1e-15)


def test_group_override_and_no_momentum():
    w, b = nn.Parameter(W0.clone()), nn.Parameter(B0.clone())
    # lars_exclude=True on the weight group: plain SGD there; bias adapted by override
    opt = LARS([{"params": [w], "lars_exclude": True}, {"params": [b], "lars_exclude": False}], lr=0.5,
               momentum=0.0, trust_coef=0.1)
    gw, gb = GRADS[0]
    w.grad, b.grad = gw.clone(), gb.clone()
    opt.step()
    torch.testing.assert_close(w.detach(), W0 - 0.5 * gw)
    lam_b = 0.1 * B0.norm() / gb.norm()
    torch.testing.assert_close(b.detach(), B0 - 0.5 * lam_b * gb)


def test_factory_excludes_bias_and_norm_and_resumes():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    opt = create_optimizer("lars", net, lr=1.0, weight_decay=5e-4, momentum=0.9, trust_coef=0.001)
    sched = create_scheduler("poly", opt, total_steps=10, steps_per_epoch=5, warmup_steps=3, power=2.0,
                             warmup_power=2.0)
    x = torch.randn(4, 1, 6, 6)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    net(x).square().mean().backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters()}
    lr = opt.param_groups[0]["lr"]
    assert lr == pytest.approx((1 / 3) ** 2 * (1 - 0 / 10) ** 2)  # polynomial warm-up times poly decay
    opt.step()
    sched.step()
    for n, p in net.named_parameters():
        if p.ndim <= 1:  # bias / BatchNorm: excluded, no decay: one plain SGD step
            torch.testing.assert_close(p.detach(), before[n] - lr * grads[n])
        else:
            w, g = before[n], grads[n]
            lam = 0.001 * w.norm() / (g.norm() + 5e-4 * w.norm())
            torch.testing.assert_close(p.detach(), w - lr * lam * (g + 5e-4 * w))
    # optimizer + scheduler state round-trip: same next step
    # (deep copies, as a checkpoint file would be: state_dict() shares the live tensors)
    sd_o, sd_s = copy.deepcopy(opt.state_dict()), copy.deepcopy(sched.state_dict())
    net2 = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    net2.load_state_dict(net.state_dict())
    opt2 = create_optimizer("lars", net2, lr=1.0, weight_decay=5e-4, momentum=0.9, trust_coef=0.001)
    sched2 = create_scheduler("poly", opt2, total_steps=10, steps_per_epoch=5, warmup_steps=3, power=2.0,
                              warmup_power=2.0)
    opt2.load_state_dict(sd_o)
    sched2.load_state_dict(sd_s)
    for model, o, s in ((net, opt, sched), (net2, opt2, sched2)):
        o.zero_grad()
        model(x).square().mean().backward()
        o.step()
        s.step()
    for p, q in zip(net.parameters(), net2.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
