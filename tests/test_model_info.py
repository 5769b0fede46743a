"""Cost figures (cnnlab.models.info) against hand counts and the papers' published figures."""
import pytest
import torch
import torch.nn as nn

from cnnlab.models.info import count_costs, format_report, model_report
from cnnlab.models.mobilenet import DepthwiseSeparable

KEYS = {"name", "source", "input", "num_classes", "batch_size", "options", "params", "size_mb", "size_mib", "macs",
        "complexity_eq47", "complexity_vs_alexnet", "activations_mb", "peak_activation_mb", "by_type"}


def test_report_keys_and_hand_counted_lenet5():
    d = model_report("lenet5", 1, 28, num_classes=10, batch_size=1)
    assert KEYS <= set(d)
    # conv1 24*24*20*25, conv2 8*8*50*20*25, fc 800*500, classifier 500*10
    assert d["macs"] == 24 * 24 * 20 * 25 + 8 * 8 * 50 * 20 * 25 + 800 * 500 + 500 * 10
    assert d["complexity_eq47"] == 24 * 24 * 20 * 25 + 8 * 8 * 50 * 20 * 25  # eq. 4.7: convolutions
    params = 20 * 25 + 20 + 50 * 20 * 25 + 50 + 800 * 500 + 500 + 500 * 10 + 10
    assert d["params"] == params and d["size_mb"] == pytest.approx(4 * params / 1e6)
    # activations: input + conv1 + pool1 + tanh1 + conv2 + pool2 + tanh2 + fc + tanh + classifier
    elems = 784 + 3 * 0 + 20 * 24 * 24 + 2 * 20 * 12 * 12 + 50 * 8 * 8 + 2 * 50 * 4 * 4 + 2 * 500 + 10
    assert d["activations_mb"] == pytest.approx(4 * elems / 1e6)
    assert d["peak_activation_mb"] == pytest.approx(4 * (20 * 24 * 24 + 20 * 12 * 12) / 1e6)  # pool1 in + out
    twice = model_report("lenet5", 1, 28, batch_size=2)
    assert twice["activations_mb"] == pytest.approx(2 * d["activations_mb"])
    text = format_report(d)
    assert "lenet5" in text and "parameters" in text and "multiply-adds" in text


def test_alexnet_about_60m_parameters():
    """Thesis Section 4.2.2 / Table 4.7: 60M parameters."""
    grouped = model_report("alexnet", 3, 224, num_classes=1000, groups=2)
    assert 60e6 <= grouped["params"] <= 61.5e6
    assert grouped["complexity_vs_alexnet"] == pytest.approx(1.0)
    ungrouped = model_report("alexnet", 3, 224, num_classes=1000)
    assert 62e6 <= ungrouped["params"] <= 63e6 and ungrouped["macs"] > grouped["macs"]


def test_vgg16_138m_parameters_528mb_and_complexity():
    """Thesis Table 4.7: VGG-16 138M parameters, 528 MB, 22.6x AlexNet's complexity (eq. 4.7)."""
    d = model_report("vgg16", 3, 224, num_classes=1000)
    assert d["params"] == 138_357_544
    assert d["size_mib"] == pytest.approx(528, rel=0.01)
    assert d["complexity_vs_alexnet"] == pytest.approx(22.6, rel=0.05)
    assert d["macs"] == pytest.approx(15.47e9, rel=0.01)


@pytest.mark.parametrize("name,size,complexity", [("tinynet-a", 112, 0.40), ("tinynet-b", 224, 0.42)])
def test_tinynet_size_and_complexity_table_4_7(name, size, complexity):
    """Table 4.7: 7.9 MB and 0.40x / 0.42x AlexNet's complexity (its 1.54M/1.56M parameter counts do not
    match its own 7.9 MB; the layers of Table 4.6 give 2.05M parameters = 7.8 MiB)."""
    d = model_report(name, 3, size, num_classes=1000)
    assert d["size_mib"] == pytest.approx(7.9, rel=0.03)
    assert d["complexity_vs_alexnet"] == pytest.approx(complexity, rel=0.08)
    assert 1.5e6 <= d["params"] <= 2.1e6


def test_inception_bn_complexity_like_googlenet():
    d = model_report("inception-bn", 3, 224, num_classes=1000)
    assert d["complexity_vs_alexnet"] == pytest.approx(3.07, rel=0.05)  # Table 4.7 "GoogLeNet"


def test_mobilenet_against_howard_et_al():
    """MobileNet paper Table 4: 4.2M / 569M mult-adds; Conv MobileNet 29.3M / 4866M."""
    sep = model_report("mobilenet", 3, 224, num_classes=1000)
    plain = model_report("mobilenet-plain", 3, 224, num_classes=1000)
    assert sep["params"] == pytest.approx(4.2e6, rel=0.02) and sep["macs"] == pytest.approx(569e6, rel=0.01)
    assert plain["params"] == pytest.approx(29.3e6, rel=0.01) and plain["macs"] == pytest.approx(4866e6, rel=0.01)
    assert 8 <= plain["macs"] / sep["macs"] <= 9
    # efficient-cnn Table 2: 1x1 convolutions carry ~95% of the mult-adds and ~75% of the parameters
    conv1x1 = sep["by_type"]["conv 1x1"]
    assert conv1x1["macs"] / sep["macs"] == pytest.approx(0.9486, abs=0.01)
    assert sep["by_type"]["conv dw 3x3"]["macs"] / sep["macs"] == pytest.approx(0.0306, abs=0.005)
    half = model_report("mobilenet", 3, 224, num_classes=1000, alpha=0.5)
    assert half["macs"] == pytest.approx(149e6, rel=0.02)  # Howard et al. Table 6: 0.5 MobileNet-224


@pytest.mark.parametrize("n,m,k,f", [(512, 512, 3, 14), (256, 256, 3, 28), (128, 256, 3, 56)])
def test_depthwise_separable_costs_1_8th_to_1_9th(n, m, k, f):
    """efficient-cnn Section III: (F^2 N K^2 + F^2 N M) / (F^2 N K^2 M) = 1/M + 1/K^2."""
    with torch.device("meta"):
        sep = DepthwiseSeparable(n, m)
        plain = nn.Conv2d(n, m, k, padding=1, bias=False)
    macs_sep = count_costs(sep, n, f)["macs"]
    macs_plain = count_costs(plain, n, f)["macs"]
    assert macs_plain == f * f * n * k * k * m and macs_sep == f * f * n * k * k + f * f * n * m
    assert macs_sep / macs_plain == pytest.approx(1 / m + 1 / k ** 2)
    assert 1 / 9 <= macs_sep / macs_plain <= 1 / 8


@pytest.mark.parametrize("name,params", [("resnet20", 0.27e6), ("resnet32", 0.46e6), ("resnet56", 0.85e6),
                                         ("resnet110", 1.7e6), ("resnet164", 1.7e6)])
def test_cifar_resnet_parameters(name, params):
    assert model_report(name, 3, 32)["params"] == pytest.approx(params, rel=0.03)


@pytest.mark.parametrize("name,params,gmacs", [("resnet18", 11.69e6, 1.82), ("resnet34", 21.80e6, 3.67),
                                               ("resnet50", 25.56e6, 4.09), ("resnet101", 44.55e6, 7.80),
                                               ("resnet152", 60.19e6, 11.51)])
def test_imagenet_resnet_parameters_and_macs(name, params, gmacs):
    d = model_report(name, 3, 224, num_classes=1000)
    assert d["params"] == pytest.approx(params, rel=0.005)
    assert d["macs"] / 1e9 == pytest.approx(gmacs, rel=0.02)


def test_every_zoo_model_reports_at_its_native_size():
    from cnnlab.models import MODELS

    for e in MODELS:
        size = e.meta.get("native_size") or 28
        channels = e.meta.get("native_channels", 1)
        d = model_report(e.name, channels, size)
        assert d["params"] > 0 and d["macs"] > 0 and d["activations_mb"] > 0, e.name


@pytest.mark.parametrize("name, shape, options, macs", [
    ("autoencoder", (1, 28), {}, 2 * (784 * 256 + 256 * 64)),  # encoder + decoder, (m, 256, 64, 256, m)
    ("cae1d", (1, 4000), {}, None),
])
def test_a_tied_decoder_is_counted_like_an_untied_one(name, shape, options, macs):
    """Tying shares weights, not work: the decoder's multiply-adds are counted either way, its weights once."""
    reports = {tied: model_report(name, shape[0], shape[1], **options, tied=tied) for tied in (True, False)}
    assert reports[True]["macs"] == reports[False]["macs"]
    assert reports[True]["params"] < reports[False]["params"]
    if macs is not None:
        assert reports[True]["macs"] == macs
