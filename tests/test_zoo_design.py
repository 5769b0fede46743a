"""The zoo's networks against the papers' tables and equations: layer layouts, LRN (eq. 4.1),
initializations (eq. 5.27-5.32), stochastic depth (Huang et al. 2016) and the max-depth rule (eq. 4.2-4.6)."""
import itertools
import math

import pytest
import torch
import torch.nn as nn

from cnnlab.errors import CnnlabError
from cnnlab.models import create_model
from cnnlab.models.init import initialize
from cnnlab.models.inception import TABLE_4_4
from cnnlab.models.layers import Branches, make_norm
from cnnlab.models.maxdepth import is_feasible, max_depth_layout, relaxed_max_depth
from cnnlab.models.resnet import ResidualBlock, linear_decay


def convs(model):
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def meta_model(name, num_classes=1000, in_channels=3, image_size=224, **options):
    with torch.device("meta"):
        return create_model(name, num_classes, in_channels, image_size=image_size, **options)


# ----------------------------------------------------------------------------- layouts

def test_lrn_is_thesis_eq_4_1():
    """b_i = a_i / (k + alpha * sum_{j=i-n/2}^{i+n/2} a_j^2)^beta with AlexNet's n=5, alpha=1e-4, beta=.75, k=2."""
    a = torch.randn(2, 7, 3, 3, dtype=torch.float64) * 10
    n, alpha, beta, k = 5, 1e-4, 0.75, 2.0
    expected = torch.empty_like(a)
    for i in range(7):
        lo, hi = max(0, i - n // 2), min(6, i + n // 2)
        expected[:, i] = a[:, i] / (k + alpha * (a[:, lo:hi + 1] ** 2).sum(dim=1)) ** beta
    torch.testing.assert_close(make_norm("lrn", 7)(a), expected)


def test_alexnet_table_4_2():
    model = meta_model("alexnet")
    assert [(c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs(model)] == [
        (96, 11, 4), (256, 5, 1), (384, 3, 1), (384, 3, 1), (256, 3, 1)]
    assert sum(isinstance(m, nn.LocalResponseNorm) for m in model.modules()) == 2
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 3
    assert [m.out_features for m in model.modules() if isinstance(m, nn.Linear)] == [4096, 4096, 1000]
    assert sum(isinstance(m, nn.Dropout) for m in model.modules()) == 2
    grouped = meta_model("alexnet", groups=2)
    assert [c.groups for c in convs(grouped)] == [1, 2, 1, 2, 2]  # the original two-GPU split


@pytest.mark.parametrize("name,n_conv,n_fc", [("vgg11", 8, 3), ("vgg13", 10, 3), ("vgg16", 13, 3), ("vgg19", 16, 3),
                                              ("vgg19-k3", 16, 3), ("vgg19-k5", 16, 3), ("vgg14-mixed", 11, 3)])
def test_vgg_depths(name, n_conv, n_fc):
    model = meta_model(name, 10, 3, 32)
    cs = convs(model)
    assert len(cs) == n_conv and sum(isinstance(m, nn.Linear) for m in model.modules()) == n_fc
    kernels = {c.kernel_size[0] for c in cs}
    assert kernels == {"vgg19-k5": {5}, "vgg14-mixed": {1, 3, 5, 7}}.get(name, {3})


def test_vgg_e_is_table_4_3():
    widths = [c.out_channels for c in convs(meta_model("vgg19"))]
    assert widths == [64] * 2 + [128] * 2 + [256] * 4 + [512] * 8


def test_nin_mlpconv_and_global_average_pooling():
    model = meta_model("nin", 10, 3, 32)
    assert [c.kernel_size[0] for c in convs(model)] == [5, 1, 1, 5, 1, 1, 3, 1, 1]
    assert convs(model)[-1].out_channels == 10  # one map per class, averaged
    assert not any(isinstance(m, nn.Linear) for m in model.modules())


def test_inception_bn_module_widths_table_4_4():
    model = meta_model("inception-bn")
    modules = [m for m in model.modules() if isinstance(m, Branches)]
    assert [m.out_channels for m in modules] == [256, 320, 576, 576, 576, 608, 608, 1056, 1024, 1024]
    assert len(modules) == len(TABLE_4_4)
    x = torch.randn(1, 3, 224, 224)
    sides = []
    real = create_model("inception-bn", 10, 3, image_size=224, width=0.0625).eval()
    for m in real.features:
        x = m(x)
        if isinstance(m, Branches):
            sides.append(x.shape[-1])
    assert sides == [28, 28, 14, 14, 14, 14, 14, 7, 7, 7]  # 7x7 average pool at the end


def test_inception_family_paths():
    """Figure 4.5 variants: number of parallel paths and output widths per module."""
    expected = {"a": (1, 32), "b": (2, 64), "c": (2, 64), "d": (1, 32), "e": (2, 64), "f": (1, 64), "i": (2, 64),
                "j": (2, 64), "k": (4, 128)}
    for letter, (paths, width) in expected.items():
        model = meta_model(f"inception-{letter}", 10, 3, 32)
        first = next(m for m in model.modules() if isinstance(m, Branches))
        assert (len(first.branches), first.out_channels) == (paths, width), letter
    for letter in "gh":  # pooling pass-through without projection: 32 + the 96 input maps
        first = next(m for m in meta_model(f"inception-{letter}", 10, 3, 32).modules() if isinstance(m, Branches))
        assert first.out_channels == 32 + 96
    c5 = next(m for m in meta_model("inception-c", 10, 3, 32).modules() if isinstance(m, Branches))
    assert sorted(b[0].kernel_size[0] for b in c5.branches) == [3, 5]


@pytest.mark.parametrize("name,size,stem_side", [("tinynet-a", 112, 56), ("tinynet-b", 224, 56), ("tinynet-cifar", 28, 28)])
def test_tinynet_table_4_6_and_5_1(name, size, stem_side):
    model = create_model(name, 10, 3, image_size=size, width=0.0625).eval()
    full = meta_model(name, 1000, 3, size)
    assert [m.out_channels for m in full.modules() if isinstance(m, Branches)] == [
        64, 80, 160, 160, 160, 160, 144, 240, 336, 336]
    x = torch.randn(1, 3, size, size)
    shapes = []
    for m in model.features:
        x = m(x)
        shapes.append(x.shape[-1])
    if name != "tinynet-cifar":
        assert shapes[0] == stem_side  # Table 4.6: 56x56 after the first convolution
        assert convs(full)[0].kernel_size[0] == (7 if name == "tinynet-a" else 9)
    assert shapes[-10:] == [28, 28, 14, 14, 14, 14, 14, 7, 7, 7]


@pytest.mark.parametrize("name,size,final", [("ndsb1", 128, 8), ("ndsb2", 144, 6)])
def test_ndsb_tables_6_1_6_2(name, size, final):
    full = meta_model(name, 121, 1, size)
    assert [c.out_channels for c in convs(full)][:7] == [16, 32, 32, 64, 64, 128, 256]
    assert [c.out_channels for c in convs(full)][7:] == [512] * (3 if name == "ndsb1" else 4)
    model = create_model(name, 121, 1, image_size=size, width=0.0625).eval()
    assert model.features(torch.randn(1, 1, size, size)).shape[-1] == final  # then 8x8 / 6x6 pooling
    assert isinstance(model.head.pool, nn.AdaptiveAvgPool2d)
    assert isinstance(create_model(name, 121, 1, image_size=size, width=0.0625, pool="max").head.pool,
                      nn.AdaptiveMaxPool2d)


def test_mobilenet_depthwise_layers():
    model = meta_model("mobilenet")
    dw = [c for c in convs(model) if c.groups > 1]
    assert len(dw) == 13 and all(c.groups == c.in_channels == c.out_channels for c in dw)
    assert not any(c.groups > 1 for c in convs(meta_model("mobilenet-plain")))
    half = meta_model("mobilenet", alpha=0.5)
    assert convs(half)[-1].out_channels == 512


# ----------------------------------------------------------------------------- initialization

def test_initializations_have_the_papers_variances():
    torch.manual_seed(0)
    fan_in, fan_out = 400, 100
    net = nn.Sequential(nn.Linear(fan_in, fan_out), nn.ReLU(), nn.Linear(fan_out, 10))
    layer = net[0]  # a hidden layer (the output layer is checked below)
    for scheme, var in [("xavier-uniform", 2 / (fan_in + fan_out)),  # eq. 5.27
                        ("xavier-normal", 2 / (fan_in + fan_out)),
                        ("kaiming-uniform", 2 / fan_in),  # eq. 5.30-5.31
                        ("kaiming-normal", 2 / fan_out)]:  # eq. 5.32
        initialize(net, scheme)
        assert layer.weight.var().item() == pytest.approx(var, rel=0.05), scheme
        assert layer.bias.abs().max().item() == 0
    initialize(net, "xavier-uniform")  # two-stage paper eq. 1: U[-sqrt(6/(n_j+n_j+1)), +...]
    assert layer.weight.abs().max().item() <= math.sqrt(6 / (fan_in + fan_out))
    with pytest.raises(CnnlabError, match="--init"):
        initialize(net, "lecun")


def test_output_layer_gets_gain_one_under_kaiming():
    """No ReLU follows the classifier: Var[w] = 1 / n_in there instead of 2 / n_in or 2 / n_out."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(400, 400), nn.ReLU(), nn.Linear(400, 10))
    for scheme in ("kaiming-uniform", "kaiming-normal"):
        initialize(model, scheme)
        assert model[2].weight.var().item() == pytest.approx(1 / 400, rel=0.1), scheme
        assert model[0].weight.var().item() == pytest.approx(2 / 400, rel=0.05), scheme


def test_auto_init_kaiming_without_batch_norm_framework_default_with_it():
    def first_conv(**options):
        torch.manual_seed(0)
        return convs(create_model("nin", 10, 3, image_size=32, width=0.125, **options))[0].weight

    torch.manual_seed(0)
    pytorch_default = nn.Conv2d(3, 24, 5).weight  # what PyTorch draws first for NiN's first layer
    assert torch.equal(first_conv(init="default"), pytorch_default)
    assert torch.equal(first_conv(norm="batch"), pytorch_default)  # auto + batch norm
    auto = first_conv()  # auto, no normalization: Kaiming uniform, Var = 2 / (3 * 5 * 5)
    assert not torch.equal(auto, pytorch_default)
    assert auto.var().item() == pytest.approx(2 / 75, rel=0.15)


# ----------------------------------------------------------------------------- stochastic depth

def test_linear_decay_rule():
    probs = linear_decay(54, 0.5)  # ResNet-110: 54 blocks, p_L = 0.5 (Huang et al.)
    assert probs[-1] == pytest.approx(0.5) and probs[0] == pytest.approx(1 - 0.5 / 54)
    assert all(a > b for a, b in zip(probs, probs[1:]))
    model = create_model("resnet110", 10, 3, image_size=32, width=0.125, stochastic_depth=0.5)
    assert model.survival_probs == pytest.approx(probs)
    assert create_model("resnet20", 10, 3, width=0.125).survival_probs == [1.0] * 9


def test_survival_probs_are_overridable():
    model = create_model("resnet20", 10, 3, image_size=32, width=0.125, survival_probs="0.9,0.9,0.8,0.8,0.7,0.7,0.6,0.6,0.5")
    assert model.survival_probs == pytest.approx([0.9, 0.9, 0.8, 0.8, 0.7, 0.7, 0.6, 0.6, 0.5])
    model.set_survival_probs([0.95] * 9)  # e.g. from sadie's Dirichlet prior, eq. 3.3
    assert model.survival_probs == [0.95] * 9
    with pytest.raises(CnnlabError, match="one probability per residual block"):
        model.set_survival_probs([0.9] * 3)
    with pytest.raises(CnnlabError, match=r"\(0, 1\]"):
        model.set_survival_probs([1.5] * 9)
    with pytest.raises(CnnlabError, match="either"):
        create_model("resnet20", 10, 3, stochastic_depth=0.5, survival_probs=[0.9] * 9)


def test_eval_is_the_deterministic_network_with_scaled_residuals():
    """Test time: h = act(x + p_l F(x)). Scaling each branch's last BN (gamma, beta) by p_l gives the same net."""
    torch.manual_seed(0)
    sd = create_model("resnet20", 10, 3, image_size=16, width=0.25, stochastic_depth=0.5).eval()
    plain = create_model("resnet20", 10, 3, image_size=16, width=0.25).eval()
    plain.load_state_dict(sd.state_dict())
    with torch.no_grad():
        for block, p in zip(plain.blocks, sd.survival_probs):
            bn = block.residual[-1][1]
            bn.weight.mul_(p)
            bn.bias.mul_(p)
    unscaled = create_model("resnet20", 10, 3, image_size=16, width=0.25).eval()
    unscaled.load_state_dict(sd.state_dict())
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(sd(x), plain(x))
        assert not torch.allclose(sd(x), unscaled(x))


def test_training_drops_whole_blocks_at_the_right_rate():
    torch.manual_seed(0)
    residual = nn.Conv2d(2, 2, 3, padding=1)
    calls = []
    residual.register_forward_hook(lambda *a: calls.append(1))
    block = ResidualBlock(residual, nn.Identity(), 2, "relu").train()
    block.survival_prob = 0.7
    x = torch.randn(3, 2, 4, 4)
    n = 2000
    dropped = 0
    for _ in range(n):
        before = len(calls)
        out = block(x)
        if len(calls) == before:
            dropped += 1
            torch.testing.assert_close(out, torch.relu(x))  # the identity for the whole mini-batch
    assert dropped / n == pytest.approx(0.3, abs=0.04)
    block.eval()
    with torch.no_grad():
        torch.testing.assert_close(block(x), torch.relu(x + 0.7 * residual(x)))


def test_stochastic_depth_trains():
    torch.manual_seed(0)
    model = create_model("resnet56", 4, 3, image_size=8, width=0.125, stochastic_depth=0.5).train()
    out = model(torch.randn(4, 3, 8, 8))
    out.sum().backward()
    assert out.shape == (4, 4)


# ----------------------------------------------------------------------------- max-depth rule

def feasible_layouts(z, k, t, prefix=()):
    """Every layout satisfying eq. 4.3-4.4, by depth-first search (a prefix of a feasible layout is feasible)."""
    for a in itertools.count(1):
        layout = prefix + (a,)
        if not is_feasible(layout, z, k, t):
            return
        yield layout
        yield from feasible_layouts(z, k, t, layout)


@pytest.mark.parametrize("z,k,t", [(32, 3, 0.75), (32, 3, 0.375), (64, 3, 0.3), (32, 5, 0.5), (28, 3, 0.3)])
def test_layout_is_the_integer_optimum(z, k, t):
    layout = max_depth_layout(z, k, t)
    assert is_feasible(layout, z, k, t)
    total, best = max((sum(lay), lay) for lay in feasible_layouts(z, k, t))
    assert sum(layout) == total
    assert tuple(layout) == best  # ties: layers as early as possible (lexicographically largest)


@pytest.mark.parametrize("z,k,t,expected", [
    (32, 3, 0.75, [2, 1, 1, 1]),  # a_1 = k/((k-1)t) = 2, a_i = a_1/2 = 1, n = m = 4
    (32, 3, 0.375, [4, 2, 2]),  # a_1 = 4, a_i = 2, n = m = 3
    (64, 3, 0.375, [4, 2, 2, 2]),  # one more stage for twice the image (eq. 4.5)
    (48, 4, 2 / 3, [2, 1, 1, 1]),  # k = 4: a_1 = 4 / (3 * 2/3) = 2; 48 = 2^(m-1) * 4 / (2/3) -> m = 4
])
def test_closed_form_eq_4_5_4_6_when_it_is_integral(z, k, t, expected):
    m, relaxed = relaxed_max_depth(z, k, t)
    assert m == pytest.approx(len(expected))
    assert relaxed == pytest.approx(expected)
    assert max_depth_layout(z, k, t) == expected


def test_ndsb_first_stage_and_stage_count():
    """c_min = 0.3 gives a_1 = 5 (the NDSB nets' five stacked 3x3 convs); 64 px after the stem -> 4 stages."""
    layout = max_depth_layout(64, 3, 0.3)
    assert layout[0] == 5 and len(layout) == 4
    assert is_feasible([5, 1, 1, 2], 64, 3, 0.3)  # Table 6.1's stages after its stem obey the rule
    assert sum(layout) >= 9


def test_maxdepth_network_follows_the_layout():
    model = create_model("maxdepth", 10, 3, image_size=32, kernel=3, c_min=0.375, width=0.125)
    assert model.layout == [4, 2, 2]
    assert len(convs(model)) == 8
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    deeper = create_model("maxdepth", 10, 3, image_size=64, c_min=0.375, width=0.125)
    assert deeper.layout == [4, 2, 2, 2]
    with pytest.raises(CnnlabError, match="lower c_min"):
        max_depth_layout(32, 3, 2.0)
    with pytest.raises(CnnlabError, match="kernel"):
        max_depth_layout(32, 1, 0.3)
