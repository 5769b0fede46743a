"""Fine-tuning (--init-from, head re-initialisation, torchvision layouts, --freeze, --lr-mult), gradient
accumulation, class weights and the balanced sampler."""
import pytest
import torch

from cnnlab import runs
from cnnlab.checkpoint import load_weights
from cnnlab.data.loader import BatchLoader
from cnnlab.errors import CnnlabError
from cnnlab.finetune import apply_lr_mult, freeze, init_from
from cnnlab.models import create_model
from cnnlab.objectives.classify import class_weights
from cnnlab.train import train
from test_selection import make_folder

SMALL = {"widths": [4, 4, 8]}


def test_fine_tune_a_digits_model_on_a_folder_with_other_classes(tiny_config, tmp_path, capsys):
    digits = train(tiny_config(data="digits", model_options=SMALL, epochs=1, name="digits", train_subset=300))
    root = make_folder(tmp_path / "imgs", classes=3, per_class=10)
    tuned = train(tiny_config(data="folder", data_dir=str(root), image_size=8, channels=1, model_options=SMALL,
                              epochs=2, name="tuned", init_from=digits["run_dir"], freeze="stages:1",
                              lr_mult={"head": 5}))
    out = capsys.readouterr().out
    assert "best.safetensors" in out and "classifier head 'head' re-initialised" in out and "frozen" in out
    before = load_weights(runs.Path(digits["run_dir"]) / runs.BEST_WEIGHTS)
    after = load_weights(runs.Path(tuned["run_dir"]) / runs.WEIGHTS)
    frozen = [k for k in after if k.startswith("features.") and "running" not in k and "num_batches" not in k]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen if k in before)  # --freeze stages:1
    assert after["head.weight"].shape[0] == 3 and before["head.weight"].shape[0] == 10


def _torchvision_resnet18_names():
    """The key order of torchvision's resnet18().state_dict() (torchvision itself is not needed)."""
    def bn(p):
        return [f"{p}.{s}" for s in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]

    names = ["conv1.weight"] + bn("bn1")
    for layer in range(1, 5):
        for block in range(2):
            p = f"layer{layer}.{block}"
            names += [f"{p}.conv1.weight"] + bn(f"{p}.bn1") + [f"{p}.conv2.weight"] + bn(f"{p}.bn2")
            if layer > 1 and block == 0:
                names += [f"{p}.downsample.0.weight"] + bn(f"{p}.downsample.1")
    return names + ["fc.weight", "fc.bias"]


def test_a_torchvision_layout_state_dict_loads_by_position(tmp_path):
    source = create_model("resnet18", 1000, 3, image_size=64)  # ImageNet's 1000 classes
    names = _torchvision_resnet18_names()
    values = list(source.state_dict().values())
    assert len(names) == len(values)
    torch.save(dict(zip(names, values)), tmp_path / "resnet18-torchvision.pth")
    model = create_model("resnet18", 5, 3, image_size=64)
    said = init_from(model, str(tmp_path / "resnet18-torchvision.pth"))
    assert "by position" in said and "re-initialised (fc.weight, fc.bias" in said
    got = model.state_dict()
    for (key, value), name in zip(source.state_dict().items(), names):
        if not key.startswith("fc."):
            assert torch.equal(got[key], value), (key, name)
    with pytest.raises(CnnlabError, match="the model and the weights differ"):
        init_from(create_model("resnet34", 5, 3, image_size=64), str(tmp_path / "resnet18-torchvision.pth"))
    torch.save({"weights": [1, 2]}, tmp_path / "odd.pt")
    with pytest.raises(CnnlabError, match="no state dict of tensors"):
        init_from(model, str(tmp_path / "odd.pt"))


def test_freeze_and_lr_mult_errors_name_the_layer():
    model = create_model("fastnet", 4, 1, image_size=16, widths=[4, 4, 8])
    with pytest.raises(CnnlabError, match="--freeze featurez: .*did you mean"):
        freeze(model, "featurez")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    apply_lr_mult(opt, model, {"head": 10})
    assert sorted(g["lr"] for g in opt.param_groups) == [0.1, pytest.approx(1.0)]
    with pytest.raises(CnnlabError, match="--lr-mult nothing=2"):
        apply_lr_mult(torch.optim.SGD(model.parameters(), lr=0.1), model, {"nothing": 2})


def test_accumulating_k_batches_equals_one_batch_k_times_larger(tiny_config):
    # no batch norm, dropout or augmentation: the same images, the same gradient, the same weights
    base = dict(model="dnn", model_options={"hidden": [32]}, flip=False, epochs=2, threads=1)
    one = train(tiny_config(name="big", batch_size=64, **base))
    accumulated = train(tiny_config(name="accum", batch_size=32, accum_steps=2, **base))
    assert one["steps"] == accumulated["steps"] == 16
    wa = load_weights(runs.Path(one["run_dir"]) / runs.WEIGHTS)
    wb = load_weights(runs.Path(accumulated["run_dir"]) / runs.WEIGHTS)
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-5)


def test_class_weights_and_balanced_sampler():
    labels = torch.tensor([0] * 6 + [1] * 2 + [2] * 4)
    w = class_weights("auto", labels, 3)
    assert torch.allclose(w, torch.tensor([12 / 18, 12 / 6, 12 / 12]))
    assert class_weights("1,2,3", labels, 3).tolist() == [1, 2, 3]
    with pytest.raises(CnnlabError, match="--class-weights: 2 weights given for 3 classes"):
        class_weights("1,2", labels, 3)
    torch.manual_seed(0)
    labels = torch.tensor([0] * 90 + [1] * 10)
    loader = BatchLoader(torch.zeros(100, 1, 4, 4, dtype=torch.uint8), labels, 1000, [0.0], [1.0], balanced=True)
    drawn = torch.cat([y for _ in range(20) for _, y in loader])
    assert 0.4 < drawn.float().mean().item() < 0.6  # class 1 drawn about as often as class 0


def test_inner_accumulation_batches_skip_the_ddp_all_reduce():
    from cnnlab import accumulation

    class FakeDDP(torch.nn.Module):
        entered = 0

        def no_sync(self):
            import contextlib

            FakeDDP.entered += 1
            return contextlib.nullcontext()

    with accumulation.no_sync(FakeDDP(), inner=True):
        pass
    with accumulation.no_sync(FakeDDP(), inner=False):  # the last batch of a step synchronises
        pass
    with accumulation.no_sync(torch.nn.Linear(2, 2), inner=True):  # a plain model has nothing to skip
        pass
    assert FakeDDP.entered == 1
