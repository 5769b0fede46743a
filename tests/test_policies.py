"""MixUp/CutMix (cnnlab.data.mix) and the batched policies (cnnlab.data.policies): soft targets, label
smoothing on top, shapes and ranges, repeatability from torch's RNG."""
import pytest
import torch
import torch.nn.functional as F

from cnnlab.data import policies
from cnnlab.data.augment import AugmentConfig, augment_batch
from cnnlab.data.mix import Mixer
from cnnlab.errors import CnnlabError
from cnnlab.objectives.classify import Classify


@pytest.mark.parametrize("mixup, cutmix", [(0.4, 0.0), (0.0, 1.0), (0.4, 1.0)])
def test_mixing_gives_soft_targets_that_sum_to_one(mixup, cutmix):
    x, y = torch.rand(16, 3, 8, 8), torch.arange(16) % 4
    torch.manual_seed(0)
    mixed, target = Mixer(4, mixup, cutmix)(x, y)
    assert mixed.shape == x.shape and target.shape == (16, 4)
    assert torch.allclose(target.sum(1), torch.ones(16)) and (target >= 0).all()
    assert ((target > 0).sum(1) <= 2).all() and (target[torch.arange(16), y] > 0).all()  # own label + partner's
    torch.manual_seed(0)
    again, target2 = Mixer(4, mixup, cutmix)(x, y)
    assert torch.equal(again, mixed) and torch.equal(target2, target)


def test_label_smoothing_composes_with_soft_targets():
    obj = Classify(label_smoothing=0.1)
    logits, soft = torch.randn(5, 4), torch.softmax(torch.randn(5, 4), 1)
    expected = -(((1 - 0.1) * soft + 0.1 / 4) * F.log_softmax(logits, 1)).sum(1).mean()
    assert obj.loss(logits, soft).item() == pytest.approx(expected.item(), rel=1e-5)
    hard = torch.tensor([0, 1, 2, 3, 0])
    assert obj.batch_sums(logits, F.one_hot(hard, 4).float())["correct"] == obj.batch_sums(logits, hard)["correct"]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("cfg", [dict(policy="randaugment:2,9"), dict(policy="trivialaugment"),
                                 dict(color_jitter=0.4), dict(resized_crop=0.35), dict(erase=1.0)])
def test_policies_keep_shape_and_range_and_repeat_under_a_seed(cfg, channels):
    x = torch.rand(32, channels, 12, 12)
    torch.manual_seed(3)
    a = augment_batch(x, AugmentConfig(**cfg))
    torch.manual_seed(3)
    b = augment_batch(x, AugmentConfig(**cfg))
    assert a.shape == x.shape and torch.equal(a, b) and 0 <= a.min() and a.max() <= 1
    assert not torch.equal(a, x)


def test_policy_parsing():
    assert policies.parse_policy("randaugment") == ("randaugment", 2, 9.0)
    assert policies.parse_policy("randaugment:3,15") == ("randaugment", 3, 15.0)
    assert policies.parse_policy("none") is None
    with pytest.raises(CnnlabError, match="--policy"):
        policies.parse_policy("randaugment:0,9")
    assert "randaugment" in AugmentConfig(policy="randaugment").describe()
