"""Non-square inputs (H x W) in the model zoo: every image model builds and runs at H != W unless its
design needs a square (registered ``square_only``), flatten-to-FC heads are sized per dimension, the
autoencoder reconstructs to (C, H, W), and ``cnnlab models --info`` takes and reports CxHxW inputs with
what each data path costs."""
import inspect

import pytest
import torch

from cnnlab.errors import CnnlabError
from cnnlab.models import MODELS, create_model
from cnnlab.models.catalog import default_input, parse_input
from cnnlab.models.layers import auto_stem, out_hw
from cnnlab.models.registry import is_signal_model

IMAGE_MODELS = sorted(e.name for e in MODELS if not is_signal_model(e.name))
SQUARE_ONLY = sorted(n for n in IMAGE_MODELS if MODELS.entry(n).meta.get("square_only"))
NONSQUARE = [n for n in IMAGE_MODELS if n not in SQUARE_ONLY]


def tiny(name: str) -> dict:
    """Options that make ``name`` small enough for a real CPU forward (whichever of them it takes)."""
    params = inspect.signature(MODELS.get(name)).parameters
    choices = {"width": 0.0625, "alpha": 0.125, "channels": 8}
    return {k: v for k, v in choices.items() if k in params}


def native_hw(name: str) -> tuple[int, int, int]:
    """(channels, H, W): the native side by three quarters of it (rounded, within the declared bounds)."""
    c, side = default_input(name)
    w = max(MODELS.entry(name).meta.get("min_size", 1), round(side * 3 / 4))
    return c, side, w if w != side else side + 1


def small_hw(name: str) -> tuple[int, int]:
    """A small non-square (H, W) inside the declared bounds, W = 1.5 H: cheap for a real forward."""
    h = max(MODELS.entry(name).meta.get("min_size", 1), 16)
    return h, h * 3 // 2


def test_the_registry_has_both_kinds():
    assert "maxdepth" in SQUARE_ONLY and len(NONSQUARE) > 50


@pytest.mark.parametrize("name", NONSQUARE)
def test_builds_at_native_height_by_three_quarter_width_on_meta(name):
    """The paper's width at its native H x 3/4 W: shapes only (the meta device computes nothing)."""
    c, h, w = native_hw(name)
    with torch.device("meta"):
        model = create_model(name, 7, c, image_size=(h, w)).eval()
    x = torch.zeros(2, c, h, w, device="meta")
    try:
        out = model(x)
    except (NotImplementedError, RuntimeError):  # an op without a meta kernel (the energy head's autocast)
        model, x = model.to_empty(device="cpu"), torch.zeros(2, c, h, w)
        with torch.no_grad():
            out = model(x)
    assert tuple(out.shape) == ((2, c, h, w) if name == "autoencoder" else (2, 7)), name


@pytest.mark.parametrize("name", NONSQUARE)
def test_small_nonsquare_forward_gives_one_score_per_class(name):
    h, w = small_hw(name)
    c = default_input(name)[0]
    torch.manual_seed(0)
    model = create_model(name, 5, c, image_size=(h, w), **tiny(name)).eval()
    with torch.no_grad():
        out = model(torch.randn(2, c, h, w))
    assert tuple(out.shape) == ((2, c, h, w) if name == "autoencoder" else (2, 5)), name
    assert torch.isfinite(out).all(), name


@pytest.mark.parametrize("name", SQUARE_ONLY)
def test_square_only_models_refuse_hxw_naming_the_flag(name):
    c, h, w = native_hw(name)
    with pytest.raises(CnnlabError, match=r"square inputs only.*--image-size"):
        create_model(name, 5, c, image_size=(h, w))
    create_model(name, 5, c, image_size=(h, h), **tiny(name))  # the square side still builds


def test_each_side_is_checked_against_the_bounds():
    with pytest.raises(CnnlabError, match="each input side >= 16, got 28x15"):
        create_model("lenet5", 10, 1, image_size=(28, 15))


def _first_fc(model: torch.nn.Module) -> torch.nn.Linear:
    return next(m for m in model.modules() if isinstance(m, torch.nn.Linear))


def test_lenet5_flattens_height_and_width_separately():
    # 28x36: valid 5x5 -> 24x32, 2x2/2 -> 12x16, valid 5x5 -> 8x12, 2x2/2 -> 4x6: 50 maps of 4x6
    assert _first_fc(create_model("lenet5", 10, 1, image_size=(28, 36))).in_features == 50 * 4 * 6
    assert _first_fc(create_model("lenet5", 10, 1, image_size=(36, 28))).in_features == 50 * 6 * 4
    assert _first_fc(create_model("lenet5", 10, 1, image_size=28)).in_features == 50 * 4 * 4  # square as before


def test_alexnet_family_flattens_height_and_width_separately():
    with torch.device("meta"):
        alex = create_model("alexnet", 10, 3, image_size=(224, 160))
        two = create_model("alexnet-2x2", 10, 3, image_size=(224, 160))
        three = create_model("alexnet-3x3", 10, 3, image_size=(224, 160))
        vgg = create_model("vgg11", 10, 3, image_size=(224, 160))
        mnist = create_model("mnist-example", 10, 1, image_size=(28, 36))
    # 11x11/4 pad 2: (224 + 4 - 11) // 4 + 1 = 55, (160 + 4 - 11) // 4 + 1 = 39; three 3x3/2 pools:
    # 55 -> 27 -> 13 -> 6 and 39 -> 19 -> 9 -> 4; conv5 has 256 maps
    assert _first_fc(alex).in_features == 256 * 6 * 4 == _first_fc(three).in_features
    # 7x7/4 pad 3: 56 x 40; the 2x2 pairs keep it; three 3x3/2 pools: 6 x 4 maps of 384
    assert _first_fc(two).in_features == 384 * 6 * 4
    assert _first_fc(vgg).in_features == 512 * 7 * 5  # five 2x2/2 pools: 224 -> 7, 160 -> 5
    assert _first_fc(mnist).in_features == 64 * 12 * 16  # two valid 3x3 (24x32), one 2x2/2 pool


def test_fully_connected_models_flatten_c_h_w():
    for name in ("mlp", "dbn", "perceptron", "dnn"):
        assert _first_fc(create_model(name, 10, 2, image_size=(6, 5))).in_features == 2 * 6 * 5, name


def test_out_hw_is_out_side_per_dimension():
    assert out_hw((224, 160), 11, 4, 2) == (55, 39)
    assert out_hw(32, 2, 2) == (16, 16)
    assert out_hw((7, 5), 2, 2, ceil_mode=True) == (4, 3)


def test_inception_stems_follow_the_smaller_side():
    assert auto_stem((224, 224)) == "imagenet" and auto_stem((112, 400)) == "imagenet"
    assert auto_stem((400, 64)) == "cifar" and auto_stem(64) == "cifar"
    with torch.device("meta"):
        strip = create_model("googlenet", 10, 3, image_size=(64, 320))
        wide = create_model("inception-bn", 10, 3, image_size=(160, 224))
    assert strip.stem[0][0].kernel_size == (3, 3)  # the CIFAR stem keeps a 64-pixel side
    assert wide.features[0][0].kernel_size == (7, 7)  # both sides >= 112: the ImageNet stem


@pytest.mark.parametrize("tied", [False, True])
def test_autoencoder_reconstructs_to_c_h_w(tied):
    model = create_model("autoencoder", 10, 3, image_size=(12, 20), hidden="32,8", tied=tied)
    x = torch.randn(4, 3, 12, 20)
    assert model(x).shape == x.shape
    assert model.encode(x).shape == (4, 8)
    assert _first_fc(model).in_features == 3 * 12 * 20


def test_parse_input_takes_hxw_squares_and_signals():
    assert parse_input("1x28x36", "lenet5") == (1, (28, 36))
    assert parse_input("3x32x32", "lenet5") == (3, 32)
    assert parse_input("1x4000", "cnn1d") == (1, 4000)
    for bad in ("1x28x", "28", "1x0x28", "1x2x3x4"):
        with pytest.raises(CnnlabError, match="--input must look like"):
            parse_input(bad, "lenet5")


def test_models_info_reports_a_nonsquare_input_and_its_data_path_costs(capsys):
    from cnnlab.cli import main

    assert main(["models", "--info", "lenet5", "--input", "1x28x36", "-b", "64"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("lenet5 @ 1x28x36, 10 classes")
    assert "0(20x24x32)" in out and "3(50x8x12)" in out  # the feature maps keep H != W
    assert "uint8 input 1.0 kB per image" in out  # 28 * 36 = 1008 bytes
    assert "10k images 10.1 MB" in out and "1M images 1.01 GB" in out
    assert "batches in flight (batch 64, 2 workers)" in out and "images/s" in out


def test_info_main_takes_hxw_and_signals_keep_working(capsys):
    from cnnlab.models.info import main, model_report

    main(["alexnet", "--input", "3x96x64", "--classes", "4"])
    assert capsys.readouterr().out.startswith("alexnet @ 3x96x64, 4 classes")
    main(["cnn1d", "--input", "1x400"])
    out = capsys.readouterr().out
    assert out.startswith("cnn1d @ 1x400") and "data path" not in out  # signals are not uint8 images
    d = model_report("lenet5", 1, (28, 36), batch_size=1)
    # conv1 24*32*20*25 + conv2 8*12*50*20*25 + fc 1200*500 + classifier 500*10
    assert d["macs"] == 24 * 32 * 20 * 25 + 8 * 12 * 50 * 20 * 25 + 1200 * 500 + 500 * 10
    assert d["data_path"]["image_bytes"] == 28 * 36 and d["data_path"]["in_memory"][10_000] == 10_080_000


def test_path_costs_take_height_and_width():
    from cnnlab.data.path_costs import INDEX_BYTES, image_bytes, path_costs

    assert image_bytes(3, (48, 64)) == 3 * 48 * 64 and image_bytes(1, 28) == 784
    mem, streamed = path_costs(1000, 3, (48, 64), batch_size=16, workers=1)
    assert mem == 1000 * 3 * 48 * 64 and streamed == 3 * 16 * 3 * 48 * 64 + INDEX_BYTES * 1000
    assert path_costs(70_000, 1, 28) == path_costs(70_000, 1, (28, 28))


def test_a_replaced_head_finds_the_classifier_at_hxw():
    model = create_model("lenet5", 6, 1, image_size=(28, 36), head="energy", head_options={"hidden": 16}).eval()
    with torch.no_grad():
        assert model(torch.randn(3, 1, 28, 36)).shape == (3, 6)
