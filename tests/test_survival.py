"""Dirichlet survival probabilities (sadie eq. 3.3-3.4), the CIFAR ResNet-152 and the paper's networks.

Eq. 3.3 is read as: per mini-batch D ~ Beta(lambda p_L, lambda (1 - p_L)) (a Dirichlet over two
outcomes), p_l = 1 - (l / L)(1 - D). Checked statistically: the mean and variance of D, the
lambda -> infinity limit (Huang et al.'s linear rule), and each block's drop rate in training.
"""
import copy
import math

import pytest
import torch
import torch.nn as nn

from cnnlab.cli import main
from cnnlab.errors import CnnlabError
from cnnlab.models import create_model
from cnnlab.models.energy import EnergyHead
from cnnlab.models.resnet import DirichletSurvival, linear_decay


def draws(prior: DirichletSurvival, n: int) -> torch.Tensor:
    return torch.tensor([prior.draw_last() for _ in range(n)], dtype=torch.float64)


@pytest.mark.parametrize("lam", [1.0, 5.0, 50.0])
def test_final_survival_has_the_configured_mean_and_the_beta_variance(lam):
    torch.manual_seed(0)
    p_last = 0.5
    d = draws(DirichletSurvival(54, p_last, lam), 5000)
    assert ((d > 0) & (d < 1)).all()
    se = math.sqrt(p_last * (1 - p_last) / (lam + 1) / len(d))
    assert abs(d.mean().item() - p_last) < 4 * se
    assert d.var().item() == pytest.approx(p_last * (1 - p_last) / (lam + 1), rel=0.08)  # ~4 standard errors


def test_large_lambda_is_the_linear_rule():
    linear = linear_decay(54, 0.5)
    assert DirichletSurvival(54, 0.5, math.inf).draw() == linear  # the limit itself, exactly
    torch.manual_seed(0)
    d = draws(DirichletSurvival(54, 0.5, 1e7), 200)
    assert (d - 0.5).abs().max() < 1e-3
    prior = DirichletSurvival(54, 0.5, 1e7)
    assert prior.draw() == pytest.approx(linear, abs=1e-3)
    assert prior.mean() == pytest.approx(linear)


def test_each_draw_decays_linearly_to_the_drawn_final_probability():
    torch.manual_seed(1)
    probs = DirichletSurvival(9, 0.6, 2.0).draw()
    d = probs[-1]
    assert probs == pytest.approx([1 - (l / 9) * (1 - d) for l in range(1, 10)])


def _drop_counts(model: nn.Module, passes: int) -> torch.Tensor:
    """[passes, blocks]: 1 where a block's residual branch did not run in that training pass.

    Each residual branch is swapped for a copy of the block's parameter-free shortcut (same output
    shape, no convolutions): only the drop decisions are counted, thousands of passes in a second.
    """
    ran = []
    for block in model.blocks:
        block.residual = copy.deepcopy(block.shortcut) if not isinstance(block.shortcut, nn.Identity) else nn.Identity()
        block.residual.register_forward_hook(lambda m, i, o, log=ran, b=block: log.append(b))
    x = torch.randn(1, 3, 8, 8)
    rows = []
    model.train()
    with torch.no_grad():
        for _ in range(passes):
            ran.clear()
            model(x)
            rows.append([0 if b in ran else 1 for b in model.blocks])
    return torch.tensor(rows, dtype=torch.float64)


def test_per_block_drop_rates_follow_the_linear_rule_and_drops_are_correlated():
    """E[p_l] is the linear rule; one draw per batch makes the number of dropped blocks vary more than the
    linear rule's independent drops (test_zoo_design checks those)."""
    torch.manual_seed(0)
    kw = dict(image_size=8, width=0.125, stochastic_depth=0.5)
    dirichlet = create_model("resnet20", 4, 3, survival="dirichlet", dirichlet_lambda=1.0, **kw)
    n = 2000
    drops = _drop_counts(dirichlet, n)
    expected = 1 - torch.tensor(linear_decay(9, 0.5), dtype=torch.float64)  # (l / L)(1 - p_L)
    se = (expected * (1 - expected) / n).sqrt()
    assert ((drops.mean(0) - expected).abs() < 4 * se + 1e-9).all(), (drops.mean(0), expected)
    # Var(number dropped): independent Bernoullis for the linear rule, plus Var(D) * (sum l / L)^2 here
    independent = (expected * (1 - expected)).sum().item()
    lam, p_last = 1.0, 0.5
    extra = p_last * (1 - p_last) / (lam + 1) * (sum(range(1, 10)) / 9) ** 2
    assert drops.sum(1).var().item() == pytest.approx(independent + extra, rel=0.12)
    assert extra > 0.5 * independent  # large enough to tell apart from the linear rule's independent drops


def test_evaluation_scales_by_the_expected_survival():
    model = create_model("resnet20", 4, 3, image_size=8, width=0.125, stochastic_depth=0.5, survival="dirichlet",
                         dirichlet_lambda=2.0).eval()
    assert model.survival_probs == pytest.approx(linear_decay(9, 0.5))
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))  # deterministic: no draws at test time


@pytest.mark.parametrize("options, message", [
    ({"survival": "dirichlet"}, "survival='dirichlet' needs stochastic_depth"),
    ({"survival": "dirichlet", "stochastic_depth": 0.5, "dirichlet_lambda": 0}, "dirichlet_lambda must be a number > 0"),
    ({"survival": "dirichlet", "stochastic_depth": 0.5, "dirichlet_lambda": "lots"}, "dirichlet_lambda must be a number"),
    ({"survival": "beta", "stochastic_depth": 0.5}, "survival must be one of linear, dirichlet"),
    ({"survival": "dirichlet", "survival_probs": [0.9] * 9}, "cannot be combined with survival_probs"),
    ({"conv_dropout": 1.0}, "conv_dropout must be in \\[0, 1\\)"),
])
def test_bad_survival_options_are_clear_errors(options, message):
    with pytest.raises(CnnlabError, match=message):
        create_model("resnet20", 4, 3, image_size=8, width=0.125, **options)


# ----------------------------------------------------------------------------- the networks


def _weight_layers(model: nn.Module) -> int:
    return sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules() if not isinstance(m, EnergyHead))


def test_cifar_resnet152_is_6n_plus_2_with_basic_blocks():
    for side, channels in ((28, 1), (32, 3)):  # MNIST and CIFAR-10 inputs
        model = create_model("resnet152-cifar", 10, channels, image_size=side, width=0.125).eval()
        assert len(model.blocks) == 75  # n = 25 per stage
        assert _weight_layers(model) == 152  # stem conv + 2 x 75 convs + fc (option-A shortcuts have no weights)
        with torch.no_grad():
            assert model(torch.randn(2, channels, side, side)).shape == (2, 10)


def test_conv_dropout_sits_between_the_convolutions_of_each_block():
    model = create_model("resnet20", 4, 3, image_size=8, width=0.25, conv_dropout=0.3)
    for block in model.blocks:
        kinds = [type(m).__name__ for m in block.residual]
        assert kinds == ["ConvNormAct", "Dropout", "Sequential"], kinds
    assert not any(isinstance(m, nn.Dropout) for m in create_model("resnet20", 4, 3, width=0.25).modules())


@pytest.mark.parametrize("depth, blocks", [(110, 54), (152, 75)])
def test_paper_networks(depth, blocks):
    sadie = create_model(f"sadie{depth}", 10, 1, image_size=28, width=0.125)
    stochastic = create_model(f"stochasticnet{depth}", 10, 1, image_size=28, width=0.125)
    plain = create_model("resnet110" if depth == 110 else "resnet152-cifar", 10, 1, image_size=28, width=0.125)
    assert len(sadie.blocks) == len(stochastic.blocks) == len(plain.blocks) == blocks
    assert isinstance(sadie.fc, EnergyHead) and sadie.fc.hidden == 256 and sadie.fc.units == "binary"
    assert sadie.survival_prior.concentration == 50 and sadie.survival_prior.last_survival == 0.5
    assert sum(isinstance(m, nn.Dropout) and m.p == 0.1 for m in sadie.modules()) == blocks
    assert type(stochastic.fc) is nn.Linear and stochastic.survival_prior is None
    assert stochastic.survival_probs == pytest.approx(linear_decay(blocks, 0.5))
    assert plain.survival_probs == [1.0] * blocks
    custom = create_model(f"sadie{depth}", 10, 1, image_size=28, width=0.125, dirichlet_lambda=5,
                          head_options={"hidden": 32})
    assert custom.survival_prior.concentration == 5 and custom.fc.hidden == 32 and custom.fc.units == "binary"


def test_sadie_trains_through_the_cli(tmp_path):
    code = main(["train", "--data", "synthetic", "--model", "sadie110", "--model-options", "width=0.125",
                 "--train-subset", "128", "--test-subset", "64", "--epochs", "1", "-b", "64", "--threads", "1",
                 "--precision", "fp32", "--out", str(tmp_path), "--name", "sadie", "--no-progress"])
    assert code == 0
    assert (tmp_path / "sadie" / "summary.json").is_file()
