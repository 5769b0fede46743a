"""The model zoo: every paper network builds at its supported sizes for grey and colour
inputs, runs forward + backward with every activation, and trains on synthetic data."""
import functools

import pytest
import torch
import torch.nn.functional as F

import cnnlab
from cnnlab.errors import CnnlabError
from cnnlab.models import MODELS, create_model
from cnnlab.models.activations import ACTIVATIONS

# The papers' networks and the options that make each tiny enough for CPU tests.
TINY = {"width": 0.125}
ZOO = {
    "lenet5": {},
    "alexnet": {"width": 0.0625}, "alexnet-grouped": {"width": 0.0625, "groups": 2},
    **{f"vgg{d}": {"width": 0.0625} for d in (11, 13, 16, 19)},
    **{f"vgg{d}-cifar": TINY for d in (11, 13, 16, 19)},
    "vgg19-k3": TINY, "vgg19-k5": TINY, "vgg14-mixed": TINY,
    "nin": TINY, "inception-bn": {"width": 0.0625},
    **{f"inception-{c}": TINY for c in "abcdefghijk"},
    "tinynet-a": TINY, "tinynet-b": TINY, "tinynet-cifar": TINY,
    "ndsb1": TINY, "ndsb2": TINY, "maxdepth": TINY,
    **{f"resnet{d}": TINY for d in (20, 32, 56, 110, 164)},
    **{f"resnet{d}": {"width": 0.0625} for d in (18, 34, 50, 101, 152)},
    # SADIE: the CIFAR ResNet-152, the StochasticNet baselines and SADIE itself
    "resnet152-cifar": TINY, **{f"{net}{d}": TINY for net in ("stochasticnet", "sadie") for d in (110, 152)},
    "mobilenet": {"alpha": 0.125}, "mobilenet-plain": {"alpha": 0.125},
    # thesis and efficient-training zoo pieces: GoogLeNet 2014 (auxiliary classifiers), naive Inception, SPP, MSRA VGG, DSN, constrained-time nets
    "googlenet": TINY, "inception-naive": TINY, "alexnet-spp": {"width": 0.0625},
    "msra-vgg": {"width": 0.0625, "norm": "batch"}, "dsn": TINY, "rf-stack": {"channels": 8},
    "alexnet-3x3": {"width": 0.0625}, "alexnet-2x2": {"width": 0.0625},
}
# One network per kind of block: plain stacks, LRN/groups, mlpconv, Inception branches, TinyNet modules,
# basic and bottleneck residual blocks, depthwise separable blocks.
REPRESENTATIVE = ["lenet5", "alexnet-grouped", "vgg11-cifar", "nin", "inception-k", "tinynet-cifar", "resnet20",
                  "resnet50", "mobilenet"]


def registered(key: str) -> str:
    return key.replace("-grouped", "")


def build(key: str, in_channels: int, size: int, num_classes: int = 5, **extra) -> torch.nn.Module:
    return create_model(registered(key), num_classes, in_channels, image_size=size, **{**ZOO[key], **extra})


def small_size(key: str) -> int:
    return max(MODELS.entry(registered(key)).meta["min_size"], 16)


def test_every_paper_network_is_registered_with_its_source_and_native_size():
    for key in ZOO:
        assert registered(key) in MODELS
        meta = MODELS.entry(registered(key)).meta
        assert meta["source"], key
        assert meta.get("native_size") or key == "lenet5", key  # lenet5 is basic.py's (28x28 default)


@pytest.mark.parametrize("key", sorted(ZOO))
def test_builds_at_supported_sizes_grey_and_colour(key):
    meta = MODELS.entry(registered(key)).meta
    sizes = {small_size(key), meta.get("native_size") or small_size(key)}
    for in_channels in (1, 3):
        for size in sorted(sizes):
            model = build(key, in_channels, size).eval()
            with torch.no_grad():
                out = model(torch.randn(2, in_channels, size, size))
            assert out.shape == (2, 5), (key, in_channels, size)
    if meta["min_size"] > 1:
        with pytest.raises(CnnlabError, match="input side"):
            build(key, 3, meta["min_size"] - 1)


@pytest.mark.parametrize("key", sorted(ZOO))
def test_channel_aware_activations_everywhere(key):
    """CReLU doubles channels (every builder must halve the layer before it); PReLU has one slope per channel."""
    size = small_size(key)
    for act in ("crelu", "prelu"):
        model = build(key, 3, size, act=act)
        out = model(torch.randn(2, 3, size, size))
        out.sum().backward()
        assert out.shape == (2, 5)


@pytest.mark.parametrize("act", ACTIVATIONS.names())
def test_every_activation_forward_backward(act):
    for key in REPRESENTATIVE:
        size = small_size(key)
        model = build(key, 1, size, act=act)
        x = torch.randn(2, 1, size, size)
        out = model(x)
        out.square().mean().backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert out.shape == (2, 5) and all(g is not None and torch.isfinite(g).all() for g in grads), (key, act)


@pytest.mark.parametrize("norm", ["batch", "lrn", "none"])
def test_every_norm(norm):
    for key in ("alexnet", "vgg11-cifar", "tinynet-cifar", "resnet20", "inception-k", "mobilenet"):
        size = small_size(key)
        out = build(key, 3, size, norm=norm)(torch.randn(2, 3, size, size))
        out.sum().backward()  # also checks that in-place ReLU after LRN keeps what backward needs
        assert out.shape == (2, 5)
    with pytest.raises(CnnlabError, match="norm"):
        build("nin", 3, 16, norm="group")


@functools.lru_cache(maxsize=None)
def synthetic_batch(size: int, channels: int, n: int = 16):
    ds = cnnlab.load_dataset("synthetic", size=size, channels=channels)
    mean = torch.tensor(ds.mean).view(1, -1, 1, 1)
    std = torch.tensor(ds.std).view(1, -1, 1, 1)
    x = (ds.train_images[:n].float() / 255 - mean) / std
    return x, ds.train_labels[:n]


# (image side, learning rate) for the training check; default (max(min_size, 8), 0.02). The plain VGG
# stacks without BN train at 32 px (at a 1x1 map a padded 3x3 conv sees only its centre tap and the
# signal fades) and at a lower rate.
TRAIN_SETTINGS = {key: (32, 0.01) for key in ZOO if key.startswith("vgg")}
TRAIN_SETTINGS.update({"alexnet": (64, 0.02), "alexnet-grouped": (64, 0.02)})
TRAIN_SETTINGS.update({k: (64, 0.02) for k in ("alexnet-spp", "alexnet-3x3", "alexnet-2x2")})


@pytest.mark.parametrize("key", sorted(ZOO))
def test_trains_a_few_sgd_steps_on_synthetic(key):
    torch.manual_seed(0)
    size, lr = TRAIN_SETTINGS.get(key, (max(MODELS.entry(registered(key)).meta["min_size"], 8), 0.02))
    channels = 1 if key.startswith(("ndsb", "lenet")) else 3
    x, y = synthetic_batch(size, channels)
    model = build(key, channels, size, num_classes=4, dropout=0.0)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    losses = []
    for _ in range(6):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert min(losses[-3:]) < losses[0], (key, losses)


def test_init_option_reaches_every_family():
    for key in ("vgg11-cifar", "tinynet-cifar", "resnet20", "mobilenet", "alexnet"):
        size = small_size(key)
        for scheme in ("default", "xavier-uniform", "xavier-normal", "kaiming-uniform", "kaiming-normal"):
            build(key, 3, size, init=scheme)
        with pytest.raises(CnnlabError, match="--init"):
            build(key, 3, size, init="orthogonal")
