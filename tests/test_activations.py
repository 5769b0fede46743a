"""Every activation against its equation (thesis Chapter 5, efficient-cnn Section V) and its gradient."""
import math

import pytest
import torch
import torch.nn.functional as F

from cnnlab.errors import CnnlabError
from cnnlab.models.activations import ACTIVATIONS, channel_multiplier, check_activation, make_activation, \
    parse_activation

REQUIRED = ["relu", "lrelu", "prelu", "rrelu", "sigmoid-star", "sigmoid*", "sigmoid", "tanh", "swish",
            "swish-learned", "elu", "crelu", "gelu", "silu"]


def away_from_zero(*shape, seed=0):
    """Random float64 values with |x| >= 0.1, so finite differences never straddle a kink."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(*shape, generator=g, dtype=torch.float64) * 2.9 + 0.1
    sign = torch.where(torch.rand(*shape, generator=g) < 0.5, -1.0, 1.0).double()
    return x * sign


def test_all_required_names_are_registered():
    for name in REQUIRED:
        assert name in ACTIVATIONS, name


@pytest.mark.parametrize("name", ACTIVATIONS.names())
def test_forward_backward_shape(name):
    act = make_activation(name, 4)
    x = torch.randn(2, 4, 5, 5, requires_grad=True)
    y = act(x * 1.0)  # non-leaf input: relu is in place
    assert y.shape == (2, 4 * channel_multiplier(name), 5, 5)
    y.square().sum().backward()
    assert torch.isfinite(x.grad).all()


DETERMINISTIC = {  # name -> reference function of x (float64)
    "relu": lambda x: torch.where(x >= 0, x, torch.zeros_like(x)),  # eq. 5.1
    "lrelu": lambda x: torch.where(x >= 0, x, x / 5.5),  # eq. 5.2, default a = 5.5
    "lrelu:7.5": lambda x: torch.where(x >= 0, x, x / 7.5),  # Table 5.2's setting
    "lrelu:100": lambda x: torch.where(x >= 0, x, x / 100),  # the original paper's suggestion
    "sigmoid-star": lambda x: 4 / (1 + torch.exp(-x)) - 2,  # eq. 5.36
    "sigmoid*": lambda x: 4 / (1 + torch.exp(-x)) - 2,
    "sigmoid": lambda x: 1 / (1 + torch.exp(-x)),
    "tanh": lambda x: (torch.exp(x) - torch.exp(-x)) / (torch.exp(x) + torch.exp(-x)),
    "swish": lambda x: x / (1 + torch.exp(-x)),  # beta = 1
    "swish:1.5": lambda x: x / (1 + torch.exp(-1.5 * x)),
    "silu": lambda x: x / (1 + torch.exp(-x)),
    "elu": lambda x: torch.where(x > 0, x, torch.exp(x) - 1),
    "elu:0.5": lambda x: torch.where(x > 0, x, 0.5 * (torch.exp(x) - 1)),
    "gelu": lambda x: x * 0.5 * (1 + torch.erf(x / math.sqrt(2))),
    "crelu": lambda x: torch.cat([x.clamp(min=0), (-x).clamp(min=0)], dim=1),
    "identity": lambda x: x,
}


@pytest.mark.parametrize("spec", sorted(DETERMINISTIC))
def test_matches_equation_and_gradcheck(spec):
    act = make_activation(spec, 3).double()
    x = away_from_zero(2, 3, 4, 4)
    torch.testing.assert_close(act(x.clone()), DETERMINISTIC[spec](x))
    xg = away_from_zero(1, 3, 2, 2, seed=1).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: act(t * 1.0), (xg,))


def test_sigmoid_star_slope_one_at_zero_like_tanh():
    """Eq. 5.36 fixes the sigmoid's slope 1/4 at 0 (eq. 5.34): Sigmoid*'(0) = 1 = tanh'(0)."""
    x = torch.zeros(1, requires_grad=True, dtype=torch.float64)
    make_activation("sigmoid-star")(x).backward()
    assert x.grad.item() == pytest.approx(1.0)
    x = torch.linspace(-3, 3, 7, dtype=torch.float64, requires_grad=True)
    make_activation("sigmoid*")(x).sum().backward()
    s = torch.sigmoid(x.detach())
    torch.testing.assert_close(x.grad, 4 * s * (1 - s))


def test_swish_derivative_formula():
    """efficient-cnn Sec. V a: f'(x) = beta f(x) + sigma(beta x)(1 - beta f(x))."""
    beta = 1.7
    x = torch.linspace(-4, 4, 41, dtype=torch.float64, requires_grad=True)
    f = make_activation(f"swish:{beta}")(x)
    f.sum().backward()
    s = torch.sigmoid(beta * x.detach())
    torch.testing.assert_close(x.grad, beta * f.detach() + s * (1 - beta * f.detach()))


def test_prelu_per_channel_slope_and_its_gradient():
    """Eq. 5.3: y = a_c x for x < 0; eq. 5.4-5.5: d eps / d a_c = sum over negative x of x."""
    act = make_activation("prelu", 3).double()
    assert act.weight.shape == (3,) and torch.allclose(act.weight, torch.full((3,), 0.25, dtype=torch.float64))
    with torch.no_grad():
        act.weight.copy_(torch.tensor([0.1, 0.2, 0.3]))
    x = away_from_zero(2, 3, 4, 4)
    a = act.weight.detach().view(1, 3, 1, 1)
    torch.testing.assert_close(act(x), torch.where(x >= 0, x, a * x))
    act(x).sum().backward()
    torch.testing.assert_close(act.weight.grad, torch.where(x < 0, x, 0 * x).sum(dim=(0, 2, 3)))
    xg = away_from_zero(1, 3, 2, 2, seed=2).requires_grad_()
    assert torch.autograd.gradcheck(lambda t, w: F.prelu(t, w), (xg, act.weight.detach().clone().requires_grad_()))


def test_swish_learned_beta_per_channel_gradcheck():
    act = make_activation("swish-learned:1.5", 3).double()
    assert isinstance(act.beta, torch.nn.Parameter) and act.beta.shape == (3,)
    x = away_from_zero(2, 3, 4, 4)
    torch.testing.assert_close(act(x), x * torch.sigmoid(1.5 * x))
    xg = away_from_zero(1, 3, 2, 2, seed=3).requires_grad_()
    beta = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t, b: t * torch.sigmoid(b.view(1, -1, 1, 1) * t), (xg, beta))
    act(x).sum().backward()
    assert act.beta.grad is not None and torch.isfinite(act.beta.grad).all()


@pytest.mark.parametrize("spec,lower,upper", [("rrelu", 1 / 8, 1 / 3), ("rrelu:0.1,0.3", 0.1, 0.3)])
def test_rrelu_random_slope_in_training_mean_slope_in_eval(spec, lower, upper):
    """Eq. 5.6-5.7: a ~ U(l, u) per element while training; (l + u) / 2 at test time."""
    torch.manual_seed(0)
    act = make_activation(spec).double()
    x = -away_from_zero(4000).abs()  # all negative
    act.train()
    slopes = act(x) / x
    assert slopes.min() >= lower - 1e-12 and slopes.max() <= upper + 1e-12
    assert slopes.std() > 0.2 * (upper - lower) / math.sqrt(12)  # random, not one value
    assert slopes.mean().item() == pytest.approx((lower + upper) / 2, abs=0.01)
    pos = away_from_zero(100).abs()
    torch.testing.assert_close(act(pos), pos)  # identity for x >= 0
    # the gradient is the slope drawn for that element
    xg = x[:50].clone().requires_grad_()
    y = act(xg)
    y.sum().backward()
    torch.testing.assert_close(xg.grad, (y / xg).detach())
    act.eval()
    torch.testing.assert_close(act(x), x * (lower + upper) / 2)
    xe = away_from_zero(1, 2, 3, 3, seed=4).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: act(t), (xe,))


def test_crelu_doubles_channels_and_keeps_both_phases():
    assert channel_multiplier("crelu") == 2 and channel_multiplier("relu") == 1
    x = torch.tensor([[[[1.5]], [[-2.0]]]])
    y = make_activation("crelu")(x)
    assert y.flatten().tolist() == [1.5, 0.0, 0.0, 2.0]


def test_spec_parsing_and_errors():
    assert parse_activation("LReLU:7.5") == ("lrelu", (7.5,))
    assert parse_activation("rrelu:0.1,0.3") == ("rrelu", (0.1, 0.3))
    assert make_activation("lrelu:7.5").a == 7.5
    assert check_activation("Swish:2") == "swish:2"
    with pytest.raises(CnnlabError, match="did you mean"):
        make_activation("rlu")
    with pytest.raises(CnnlabError, match="a > 1"):
        make_activation("lrelu:0.5")
    with pytest.raises(CnnlabError, match="takes no parameters"):
        make_activation("relu:2")
    with pytest.raises(CnnlabError, match="l < u"):
        make_activation("rrelu:0.5,0.2")
    with pytest.raises(CnnlabError, match="must be numbers"):
        make_activation("elu:abc")
