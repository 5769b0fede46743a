"""Thesis Ch. 6's augmentation and test: shear, vertical flips, and the seeded multi-view test `--tta random:N`."""
import math

import pytest
import torch
import torch.nn.functional as F

from cnnlab.config import TrainConfig
from cnnlab.data.augment import (AugmentConfig, augment_batch, predict_tta, random_affine, random_vflip, tta_views,
                                 _uniform)
from cnnlab.errors import CnnlabError


def test_shear_is_the_affine_map_x_plus_tan_angle_y():
    x = torch.rand(3, 1, 8, 12)
    torch.manual_seed(0)
    out = random_affine(x, shear=20.0)
    torch.manual_seed(0)
    b, h, w = 3, 8, 12
    for _ in range(4):  # angle, zoom, tx, ty: drawn (all zero-width) before the shear
        _uniform(b, 0.0, x.device)
    k = torch.tan(_uniform(b, math.radians(20.0), x.device)) * (h / w)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, 0, 1] = k
    want = F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False), align_corners=False)
    assert torch.allclose(out, want, atol=1e-6)
    assert random_affine(x, shear=0.0) is x


def test_vertical_flip_and_the_config_fields():
    x = torch.rand(4, 1, 5, 5)
    assert torch.equal(random_vflip(x, p=1.0), x.flip(2)) and torch.equal(random_vflip(x, p=0.0), x)
    cfg = AugmentConfig.from_config(TrainConfig(shear=10, vflip=True, rotate=180))
    assert cfg.shear == 10 and cfg.vflip and cfg.affine and "vertical flip" in cfg.describe()
    out = augment_batch(torch.rand(8, 1, 16, 16), cfg)
    assert out.shape == (8, 1, 16, 16) and 0 <= out.min() and out.max() <= 1
    with pytest.raises(CnnlabError, match="shear"):
        AugmentConfig(shear=95)


def test_random_tta_views_are_seeded_and_leave_the_global_rng_alone():
    x = torch.randn(2, 1, 16, 16)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 3))
    state = torch.get_rng_state()
    a = predict_tta(model, x, "random:5")
    assert torch.equal(torch.get_rng_state(), state)  # training's random sequence is not disturbed
    assert torch.equal(a, predict_tta(model, x, "random:5"))  # the same views every call
    views = tta_views(x, "random:5")
    assert len(views) == 5 and not torch.equal(views[0], views[1])
    assert torch.allclose(a, torch.stack([model(v).softmax(-1) for v in views]).mean(0), atol=1e-6)
    assert a.sum(1).allclose(torch.ones(2))
    for bad in ("random:0", "random", "random:x", "mirror"):
        with pytest.raises(CnnlabError, match="random:N"):
            tta_views(x, bad)
    assert TrainConfig(tta="random:100").tta == "random:100"


def test_generated_plankton_folder(tmp_path):
    from cnnlab.data.plankton import CLASSES, make_plankton_folder

    make_plankton_folder(tmp_path, per_class=2, size=24)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(CLASSES)
    assert all(len(list((tmp_path / c).glob("*.png"))) == 2 for c in CLASSES)


@pytest.mark.parametrize("mode", ["shift", "random:3"])
def test_tta_views_are_filled_like_training_augmentation(mode):
    """A view is made from the pixels before normalization, as training augments: where a shift or rotation
    uncovers the border, the network sees black (pixel 0 normalized), the value training's zero fill gave it,
    not 0 after normalization (the mean colour, never seen in training)."""
    from cnnlab.data.augment import normalize
    from cnnlab.device import Runtime
    from cnnlab.predict import predict_probs

    images = torch.full((2, 1, 16, 16), 200, dtype=torch.uint8)  # a light plain background, as NDSB's
    mean, std = (0.7,), (0.2,)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 3))
    pixels = images.float() / 255
    want = torch.stack([model(normalize(v, mean, std)).softmax(-1) for v in tta_views(pixels, mode)]).mean(0)
    got = predict_probs(model, images, mean, std, Runtime(torch.device("cpu")), tta=mode)
    assert torch.allclose(got, want, atol=1e-5)
    seen = []
    model.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    predict_probs(model, images, mean, std, Runtime(torch.device("cpu")), tta=mode)
    assert float(seen[1].min()) == pytest.approx((0 - 0.7) / 0.2, abs=1e-5)  # black, not the mean colour (0)
