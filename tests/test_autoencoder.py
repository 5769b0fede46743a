"""The autoencoder (tied weights, leaky ReLU), MinMax input scaling, the reconstruct objective and its
denoising variant, and the corruptions "X% noise" is made of."""
import json

import pytest
import torch

from cnnlab import runs
from cnnlab.config import TrainConfig
from cnnlab.data.corrupt import Corruption, corrupt_images, parse_corruption
from cnnlab.data.loader import to_model_input
from cnnlab.data.scaling import fit_scaling, parse_scaling
from cnnlab.errors import CnnlabError
from cnnlab.models import count_parameters, create_model
from cnnlab.models.autoencoder import weight_count
from cnnlab.objectives import create_objective
from cnnlab.train import train

# --------------------------------------------------------------------------- the model


def test_tied_weights_share_storage_and_halve_the_weights():
    untied = create_model("autoencoder", 10, 1, image_size=28)  # (784, 256, 64, 256, 784)
    tied = create_model("autoencoder", 10, 1, image_size=28, tied=True)
    assert weight_count(untied) == 2 * (784 * 256 + 256 * 64)
    assert weight_count(tied) == 784 * 256 + 256 * 64 == weight_count(untied) // 2
    biases = (256 + 64) + (256 + 784)
    assert count_parameters(tied) == weight_count(tied) + biases
    assert count_parameters(untied) == weight_count(untied) + biases
    for i, j in ((0, 1), (1, 0)):  # decoder layer i is encoder layer n-1-i, transposed: the same storage
        w = tied.decoder_weight(i)
        assert w.data_ptr() == tied.encoder[j].weight.data_ptr() and torch.equal(w, tied.encoder[j].weight.t())
    # the decoder's use of a weight contributes to its gradient: decode a fixed code only
    tied.decode(torch.randn(3, 64)).sum().backward()
    assert tied.encoder[1].weight.grad is not None and tied.encoder[1].weight.grad.abs().sum() > 0
    # and the weights survive a safetensors round trip (no duplicated, shared tensors in the state)
    assert set(tied.state_dict()) == {"encoder.0.weight", "encoder.0.bias", "encoder.1.weight", "encoder.1.bias",
                                      "decoder_biases.0", "decoder_biases.1"}


def test_forward_is_the_papers_network_with_leaky_relu_slope_a():
    """f(x) = x for x >= 0, x / a otherwise on the hidden layers; the output layer is linear."""
    torch.manual_seed(0)
    a = 4.0
    model = create_model("autoencoder", 10, 1, image_size=2, hidden=[3, 2], act=f"lrelu:{a}", tied=True)
    x = torch.randn(5, 1, 2, 2)
    lrelu = lambda t: torch.where(t >= 0, t, t / a)  # noqa: E731
    W1, b1, W2, b2 = model.encoder[0].weight, model.encoder[0].bias, model.encoder[1].weight, model.encoder[1].bias
    code = lrelu(lrelu(x.flatten(1) @ W1.t() + b1) @ W2.t() + b2)
    out = lrelu(code @ W2 + model.decoder_biases[0]) @ W1 + model.decoder_biases[1]
    torch.testing.assert_close(model.encode(x), code)
    torch.testing.assert_close(model(x), out.view(5, 1, 2, 2))


def test_autoencoder_options_are_checked():
    with pytest.raises(CnnlabError, match="hidden needs at least one width"):
        create_model("autoencoder", 10, 1, image_size=8, hidden=[])
    with pytest.raises(CnnlabError, match="activation 'crelu' changes the layer width"):
        create_model("autoencoder", 10, 1, image_size=8, act="crelu")


# --------------------------------------------------------------------------- MinMax scaling


def test_minmax_centres_by_the_mean_image_then_maps_the_training_data_onto_the_range():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (50, 2, 3, 3), dtype=torch.uint8)
    mean, std = fit_scaling("minmax:-1,1", images)
    x = images.float() / 255
    centred = x - x.mean(0)
    lo, hi = centred.min(), centred.max()
    expected = -1 + 2 * (centred - lo) / (hi - lo)  # the paper's centring, then one global MinMax
    scaled = to_model_input(images, torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1))
    torch.testing.assert_close(scaled, expected, atol=1e-5, rtol=0)
    assert scaled.min().item() == pytest.approx(-1, abs=1e-5) and scaled.max().item() == pytest.approx(1, abs=1e-5)
    assert len(mean) == 2 * 3 * 3 and len(std) == 2  # a shift per element, one scale (per channel)


@pytest.mark.parametrize("spec, message", [("minmax:1,0", "lo < hi"), ("minmax:a,b", "two numbers"),
                                           ("zscore", "expected standard, minmax"), ("standard:2", "no parameters")])
def test_bad_input_scaling_names_the_flag(spec, message):
    with pytest.raises(CnnlabError, match=f"--input-scaling '{spec}': .*{message}"):
        parse_scaling(spec)


# --------------------------------------------------------------------------- corruption ("X% noise")


def test_salt_and_pepper_replaces_the_given_fraction_of_pixels_by_black_or_white():
    clean = torch.full((20, 1, 28, 28), 128, dtype=torch.uint8)
    noisy = corrupt_images(clean, parse_corruption("salt-pepper:0.3"), seed=1)
    hit = noisy != clean
    assert hit.float().mean().item() == pytest.approx(0.3, abs=0.01)
    assert set(noisy[hit].unique().tolist()) == {0, 255}
    assert (noisy[hit] == 255).float().mean().item() == pytest.approx(0.5, abs=0.03)
    state = torch.get_rng_state()
    assert torch.equal(corrupt_images(clean, parse_corruption("salt-pepper:0.3"), seed=1), noisy)  # seeded
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is left alone
    replaced = corrupt_images(clean, parse_corruption("replace:0.5"), seed=0)
    assert (replaced != clean).float().mean().item() == pytest.approx(0.5, abs=0.02)
    gauss = corrupt_images(clean, parse_corruption("gaussian:0.1"), seed=0)
    assert ((gauss.float() - 128) / 255).std().item() == pytest.approx(0.1, abs=0.005)


@pytest.mark.parametrize("spec, message", [("salt:0.2", "unknown kind 'salt'"), ("salt-pepper", "KIND:LEVEL"),
                                           ("salt-pepper:1.5", r"in \[0, 1\]"), ("gaussian:x", "must be a number")])
def test_bad_corruption_names_the_flag(spec, message):
    with pytest.raises(CnnlabError, match=f"--corrupt '{spec}': .*{message}"):
        parse_corruption(spec)


# --------------------------------------------------------------------------- the reconstruct objective


def test_reconstruct_loss_is_the_sum_of_squares_per_image():
    obj = create_objective(TrainConfig(objective="reconstruct"))
    out, target = torch.randn(4, 1, 3, 3), torch.randn(4, 1, 3, 3)
    assert obj.inputs_and_targets(target, torch.zeros(4)) == (target, target)
    expected = sum(((out[b] - target[b]) ** 2).sum() for b in range(4)) / 4
    assert obj.loss(out, target).item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(CnnlabError, match="needs a model whose output has its input's shape"):
        obj.loss(torch.randn(4, 10), target)


def test_denoising_corrupts_the_pixels_of_the_inputs_and_keeps_the_targets_clean(tiny_config):
    from cnnlab.data.prepare import prepare_data

    cfg = tiny_config(data="digits", input_scaling="minmax", objective="reconstruct:denoise=salt-pepper:0.5")
    ds = prepare_data(cfg)
    obj = create_objective(cfg)
    obj.prepare(ds)
    mean, std = torch.tensor(ds.mean).view(1, -1, 1, 1), torch.tensor(ds.std).view(1, -1, 1, 1)
    x = to_model_input(ds.train_images[:64], mean, std)
    inputs, target = obj.inputs_and_targets(x, ds.train_labels[:64])
    assert target is x
    pixels = inputs * std[0, 0] + mean.view(1, 1, 8, 8)  # back to [0, 1]: hit pixels are black or white
    hit = (inputs - x).abs() > 1e-5
    assert 0.3 < hit.float().mean().item() < 0.5  # 50% hit, some already black (digits' background)
    assert torch.all((pixels[hit] - pixels[hit].round()).abs() < 1e-4)
    with pytest.raises(CnnlabError, match="--objective reconstruct:denoise 'blur:0.2': unknown kind"):
        create_objective(tiny_config(objective="reconstruct:denoise=blur:0.2"))


def ae_config(tiny_config, **changes):
    base = dict(data="digits", model="autoencoder", model_options={"hidden": [32, 24]}, objective="reconstruct",
                input_scaling="minmax", opt="adam", lr=0.01, sched="constant", weight_decay=0.0, epochs=8,
                batch_size=32, channels_last=False)
    return tiny_config(**{**base, **changes})


def test_reconstruction_objective_reduces_reconstruction_error_on_digits(tiny_config):
    summary = train(ae_config(tiny_config))
    run_dir = runs.Path(summary["run_dir"])
    rows = runs.read_metrics(run_dir)
    assert rows[-1]["val_loss"] < 0.5 * rows[0]["val_loss"] and rows[-1]["train_loss"] < rows[0]["train_loss"]
    # better than the best constant guess, the mean training image (its SSE is the data's total variance)
    from cnnlab.data.prepare import prepare_data

    ds = prepare_data(TrainConfig.from_yaml(run_dir / runs.CONFIG))
    mean, std = torch.tensor(ds.mean).view(1, -1, 1, 1), torch.tensor(ds.std).view(1, -1, 1, 1)
    test = to_model_input(ds.test_images, mean, std)
    baseline = (test - to_model_input(ds.train_images, mean, std).mean(0)).pow(2).flatten(1).sum(1).mean()
    assert summary["test_loss"] < 0.5 * baseline.item()
    assert "best_test_acc" not in summary and (run_dir / runs.RECONSTRUCTIONS).is_file()
    meta = json.loads((run_dir / runs.META).read_text())
    assert meta["input_scaling"] == "minmax" and len(meta["mean"]) == 64  # saved: eval applies the same
    from cnnlab.inference import evaluate_run

    again = evaluate_run(run_dir, device="cpu")
    assert again["test_loss"] == pytest.approx(summary["test_loss"], rel=1e-5)


def test_denoising_autoencoder_reports_and_draws_its_denoising(tiny_config):
    summary = train(ae_config(tiny_config, epochs=2, objective="reconstruct:denoise=salt-pepper:0.2"))
    run_dir = runs.Path(summary["run_dir"])
    assert summary["test_denoise_loss"] > summary["test_loss"] > 0
    assert (run_dir / runs.RECONSTRUCTIONS).is_file() and (run_dir / runs.DENOISING).is_file()
    assert Corruption("salt-pepper", 0.2).label == "salt-pepper-0.2"


def test_classifying_with_an_autoencoder_is_a_clear_error(tiny_config):
    cfg = tiny_config(model="autoencoder", model_options={"hidden": [8]})
    with pytest.raises(CnnlabError, match="objective reconstruct"):
        train(cfg)
