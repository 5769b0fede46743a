"""Issue 17's zoo pieces: auxiliary classifiers through the classify objective (GoogLeNet 2014, DSN), spatial
pyramid pooling, and the constrained-time rules' cost figures (thesis Sec. 4.5, efficient-cnn Sec. VII a)."""
import pytest
import torch
import torch.nn.functional as F

from cnnlab.config import TrainConfig
from cnnlab.errors import CnnlabError
from cnnlab.models import create_model
from cnnlab.models.auxiliary import AuxClassifier, find_auxiliaries
from cnnlab.models.constrained import equal_cost_middle
from cnnlab.models.info import model_report
from cnnlab.models.spp import SpatialPyramidPool
from cnnlab.objectives import create_objective


# ----------------------------------------------------------------------------- cost figures (models --info)

def test_three_stacked_3x3_cost_less_than_one_7x7():
    """Same 7x7 receptive field: 3 x 9 C^2 = 27 C^2 against 49 C^2 weights and multiply-adds per pixel."""
    c, side = 64, 32
    one = model_report("rf-stack", 3, side, kernels="7", channels=c)
    three = model_report("rf-stack", 3, side, kernels="3,3,3", channels=c)
    assert one["by_type"]["conv 7x7"]["params"] == 49 * c * c
    assert three["by_type"]["conv 3x3"]["params"] == 27 * c * c
    assert one["by_type"]["conv 7x7"]["macs"] == 49 * c * c * side * side
    assert three["by_type"]["conv 3x3"]["macs"] == 27 * c * c * side * side
    assert three["params"] < one["params"] and three["macs"] < one["macs"]
    assert three["complexity_eq47"] < one["complexity_eq47"]
    # the price of depth: three layers' outputs are kept for the backward pass
    assert three["activations_mb"] > one["activations_mb"]


def test_rule_1_two_3x3_at_the_cost_of_one_5x5():
    m = equal_cost_middle(96, 256)
    assert 9 * 96 * m + 9 * m * 256 <= 25 * 96 * 256 < 9 * 96 * (m + 2) + 9 * (m + 2) * 256
    alex = model_report("alexnet", 3, 224, num_classes=1000)
    rule = model_report("alexnet-3x3", 3, 224, num_classes=1000)
    assert rule["complexity_eq47"] == pytest.approx(alex["complexity_eq47"], rel=0.01)
    assert "conv 5x5" not in rule["by_type"]


def test_alexnet_2x2_no_more_complex_than_alexnet_but_more_parameters_and_memory():
    """Thesis Sec. 4.5: one 7x7 and ten 2x2 convolutions "without increasing complexity", yet more memory and
    more parameters than AlexNet."""
    alex = model_report("alexnet", 3, 224, num_classes=1000)
    new = model_report("alexnet-2x2", 3, 224, num_classes=1000)
    assert new["by_type"]["conv 2x2"] and new["by_type"]["conv 7x7"]
    assert sum(1 for m in create_model("alexnet-2x2", 10, 3, width=0.0625).modules()
               if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (2, 2)) == 10
    assert new["complexity_eq47"] <= alex["complexity_eq47"]
    assert new["params"] > alex["params"] and new["activations_mb"] > alex["activations_mb"]


# ----------------------------------------------------------------------------- spatial pyramid pooling

def test_spp_gives_a_fixed_length_for_any_map_size():
    spp = SpatialPyramidPool((4, 2, 1))
    for side in (4, 7, 13):
        x = torch.randn(2, 3, side, side)
        out = spp(x)
        assert out.shape == (2, 3 * 21)
        assert torch.equal(out[:, -3:], x.amax((2, 3)))  # the 1x1 level is global max pooling
    model = create_model("alexnet-spp", 5, 3, image_size=96, width=0.0625).eval()
    assert model(torch.randn(1, 3, 96, 96)).shape == model(torch.randn(1, 3, 150, 150)).shape == (1, 5)
    with pytest.raises(CnnlabError, match="levels"):
        create_model("alexnet-spp", 5, 3, levels="4,0")


# ----------------------------------------------------------------------------- auxiliary classifiers

@pytest.mark.parametrize("name,heads", [("googlenet", 2), ("dsn", 2)])
def test_auxiliary_heads_run_only_in_training_and_add_weighted_losses(name, heads):
    torch.manual_seed(0)
    model = create_model(name, 4, 3, image_size=16, width=0.125, dropout=0.0)
    aux = find_auxiliaries(model)
    assert len(aux) == heads and all(a.weight == 0.3 for a in aux)
    obj = create_objective(TrainConfig())
    obj.bind(model)
    x, y = torch.randn(3, 3, 16, 16), torch.tensor([0, 1, 2])
    seen = []
    hooks = [a.register_forward_hook(lambda m, i, o: seen.append(o)) for a in aux]
    model.eval()
    out = model(x)
    assert out.shape == (3, 4) and not seen  # evaluation / export: the main output only
    assert obj.loss(out, y).item() == pytest.approx(F.cross_entropy(out, y).item())
    for a in aux:  # dropout off in the auxiliary heads, so the train-mode outputs can be recomputed
        for m in a.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
    model.train()
    out = model(x)
    for h in hooks:
        h.remove()
    assert len(seen) == heads
    expected = F.cross_entropy(out, y) + sum(0.3 * F.cross_entropy(o, y) for o in seen)
    assert obj.loss(out, y).item() == pytest.approx(expected.item(), rel=1e-6)
    # taken once: a second loss without a new forward pass has no stale auxiliary outputs
    assert obj.loss(out, y).item() == pytest.approx(F.cross_entropy(out, y).item())


def test_aux_weight_zero_builds_no_auxiliary_heads():
    for name in ("googlenet", "dsn"):
        assert not find_auxiliaries(create_model(name, 4, 3, image_size=16, width=0.125, aux_weight=0))
    with pytest.raises(CnnlabError, match="aux_weight"):
        create_model("dsn", 4, 3, aux_weight=-1)
    with pytest.raises(CnnlabError, match="weight"):
        AuxClassifier(torch.nn.Identity(), 0)


def test_googlenet_trains_and_reloads_with_the_main_output_only(tiny_config, tmp_path):
    from cnnlab.inference import load_run
    from cnnlab.train import train

    summary = train(tiny_config(model="googlenet", model_options={"width": 0.0625}, epochs=1, train_subset=128,
                                image_size=16))
    assert 0 <= summary["test_acc"] <= 1
    run = load_run(tmp_path / "runs" / "run", device="cpu")
    assert not run.model.training
    c, k = run.meta["in_channels"], len(run.meta["classes"])
    assert run.model(torch.zeros(1, c, 16, 16)).shape == (1, k)
