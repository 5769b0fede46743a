"""Learning-rate schedules: each factor formula, warm-up, per-epoch stepping, plateau, exact resume."""
import copy
import io
import math

import pytest
import torch
import torch.nn as nn

from cnnlab.errors import CnnlabError
from cnnlab.optim import SCHEDULES, ReduceOnPlateau, create_optimizer, create_scheduler, schedule_factor

T, SPE = 40, 8  # total steps, steps per epoch


@pytest.mark.parametrize("name,opts,formula", [
    ("constant", {}, lambda t: 1.0),
    ("step", {"step_size": 2, "gamma": 0.5}, lambda t: 0.5 ** (t // 16)),  # eq. 2.19, step every 2 epochs
    ("multistep", {"milestones": (0.5, 4), "gamma": 0.1}, lambda t: 0.1 ** ((t >= 20) + (t >= 32))),
    ("exponential", {"step_size": 1, "gamma": 0.9}, lambda t: 0.9 ** (t / 8)),  # eq. 2.18
    ("cosine", {"min_factor": 0.1}, lambda t: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t / 40))),
    ("linear", {}, lambda t: 1 - t / 40),
    ("onecycle", {"pct_start": 0.25, "start_factor": 0.1, "end_factor": 0.0},
     lambda t: 0.1 + 0.9 * t / 10 if t < 10 else 1 - (t - 10) / 30),
    ("poly", {"power": 2.0}, lambda t: (1 - t / 40) ** 2),
    ("poly", {"power": 0.5, "min_factor": 0.2}, lambda t: 0.2 + 0.8 * (1 - t / 40) ** 0.5),
    ("plateau", {}, lambda t: 1.0),
])
def test_factor_formulas(name, opts, formula):
    f = schedule_factor(name, T, SPE, **opts)
    for t in range(0, T + 1):
        assert f(t) == pytest.approx(formula(t), rel=1e-12, abs=1e-15), (name, t)


def test_warmup_composition_linear_and_polynomial():
    base = schedule_factor("cosine", T, SPE)
    lin = schedule_factor("cosine", T, SPE, warmup_steps=5)
    quad = schedule_factor("cosine", T, SPE, warmup_steps=5, warmup_power=2)
    for t in range(T):
        w = min(1.0, (t + 1) / 5)
        assert lin(t) == pytest.approx(base(t) * w)
        assert quad(t) == pytest.approx(base(t) * w ** 2)


def test_per_epoch_interval():
    f = schedule_factor("cosine", T, SPE, interval="epoch")
    g = schedule_factor("cosine", T, SPE)
    for t in range(T):
        assert f(t) == g((t // SPE) * SPE)
    assert len({f(t) for t in range(SPE)}) == 1 and f(SPE) < f(SPE - 1)
    # warm-up still per iteration on top of the per-epoch curve
    h = schedule_factor("linear", T, SPE, warmup_steps=4, interval="epoch")
    assert h(1) == pytest.approx(0.5) and h(9) == pytest.approx(1 - 8 / 40)


def test_bad_options_raise():
    with pytest.raises(CnnlabError, match="its options"):
        schedule_factor("cosine", T, SPE, gamma=0.1)
    with pytest.raises(CnnlabError, match="interval"):
        schedule_factor("cosine", T, SPE, interval="iteration")
    with pytest.raises(CnnlabError, match="mode"):
        create_scheduler("plateau", make_opt(), T, SPE, mode="up")
    with pytest.raises(CnnlabError, match="did you mean"):
        schedule_factor("cosin", T, SPE)


def make_opt(lr=0.1):
    net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    return create_optimizer("sgd", net, lr=lr, weight_decay=0.0, lr_mults={"1.": 0.5}, momentum=0.9)


def test_scheduler_scales_every_group_and_lr_mults():
    opt = make_opt(0.2)
    sched = create_scheduler("linear", opt, T, SPE)
    for _ in range(10):
        opt.step()
        sched.step()
    lrs = sorted(g["lr"] for g in opt.param_groups)
    assert lrs == pytest.approx([0.1 * 0.75, 0.2 * 0.75])


# ------------------------------------------------------------------ plateau


def test_plateau_reduces_after_patience_with_cooldown_and_floor():
    opt = make_opt(1.0)
    sched = create_scheduler("plateau", opt, T, SPE, patience=1, factor=0.5, cooldown=1, min_factor=0.2)
    assert isinstance(sched, ReduceOnPlateau) and hasattr(sched, "observe")
    lr = lambda: max(g["lr"] for g in opt.param_groups)
    seen = []
    for loss in [1.0, 0.5, 0.6, 0.7, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8]:
        for _ in range(SPE):
            opt.step()
            sched.step()
        sched.observe(loss)
        seen.append(lr())
    # 0.6 bad(1), 0.7 bad(2>1) -> 0.5, cooldown eats 0.8, then 0.8 bad(1), bad(2) -> 0.25, ... floor 0.2
    assert seen == pytest.approx([1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.2, 0.2])
    assert sched.best == 0.5


def test_plateau_threshold_and_max_mode():
    opt = make_opt(1.0)
    s = create_scheduler("plateau", opt, T, SPE, mode="max", patience=0, factor=0.1, threshold=0.1)
    s.observe(0.5)  # first value is the best
    s.observe(0.54)  # not > 0.5 * 1.1: bad, patience 0 -> reduce
    assert max(g["lr"] for g in opt.param_groups) == pytest.approx(0.1)
    s.observe(0.6)  # improves by more than 10%
    assert s.best == 0.6 and s.num_bad_epochs == 0


def test_plateau_with_warmup():
    opt = make_opt(1.0)
    s = create_scheduler("plateau", opt, T, SPE, warmup_steps=4, patience=0, factor=0.5)
    assert max(g["lr"] for g in opt.param_groups) == pytest.approx(0.25)
    opt.step()
    s.step()
    assert max(g["lr"] for g in opt.param_groups) == pytest.approx(0.5)
    s.observe(1.0)
    s.observe(2.0)  # reduction applies at once, on top of the warm-up
    assert max(g["lr"] for g in opt.param_groups) == pytest.approx(0.25)


# ------------------------------------------------------------------- resume

CASES = [(name, {}) for name in SCHEDULES.names()] + [
    ("step", {"step_size": 1, "gamma": 0.7}),
    ("poly", {"power": 2.0, "interval": "epoch"}),
    ("cosine", {"warmup_power": 2}),
    ("plateau", {"patience": 1, "factor": 0.5}),
]
LOSSES = [1.0, 0.9, 0.95, 0.97, 0.99, 0.8, 0.85, 0.9]  # per epoch, with plateaus


def lr_sequence(name, opts, cut=None, via_file=False):
    """LR used at every step of a 5-epoch run; with ``cut``, checkpoint after that many steps and resume."""
    opt = make_opt(0.1)
    sched = create_scheduler(name, opt, T, SPE, warmup_steps=3, **opts)
    lrs = []
    for t in range(T):
        if cut is not None and t == cut:
            state = {"opt": opt.state_dict(), "sched": sched.state_dict()}
            if via_file:  # what the trainer does: torch.save / torch.load(weights_only=True)
                buf = io.BytesIO()
                torch.save(state, buf)
                buf.seek(0)
                state = torch.load(buf, weights_only=True)
            else:
                state = copy.deepcopy(state)
            opt = make_opt(0.1)
            sched = create_scheduler(name, opt, T, SPE, warmup_steps=3, **opts)
            opt.load_state_dict(state["opt"])
            sched.load_state_dict(state["sched"])
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
        if (t + 1) % SPE == 0 and hasattr(sched, "observe"):
            sched.observe(LOSSES[t // SPE])
    return lrs


@pytest.mark.parametrize("name,opts", CASES)
def test_resume_mid_schedule_gives_the_same_lr_sequence(name, opts):
    full = lr_sequence(name, opts)
    assert len({tuple(x) for x in full}) > 1 or name == "constant"
    for cut in (2, 13, SPE * 2, 27):
        assert lr_sequence(name, opts, cut=cut, via_file=(cut == 13)) == full, (name, cut)


def test_plateau_sequence_actually_reduces():
    full = lr_sequence("plateau", {"patience": 1, "factor": 0.5})
    assert max(full[-1]) == pytest.approx(0.1 * 0.5)
