"""cnnlab.data.augment: each transform does exactly what it says, batched and reproducibly."""
from types import SimpleNamespace

import pytest
import torch

from cnnlab.data import augment as A
from cnnlab.data.augment import AugmentConfig, augment_batch, predict_tta, tta_views
from cnnlab.errors import CnnlabError


def _arange_batch(b=8, c=2, h=10, w=12):
    """Images with all-distinct positive values, so any shift or flip is detectable."""
    return (torch.arange(b * c * h * w, dtype=torch.float32).view(b, c, h, w) + 1) / (b * c * h * w + 1)


def _matching_shift(out, img, p):
    """The (dy, dx) in [-p, p]^2 for which out == img shifted with zero fill, else None."""
    for dy in range(-p, p + 1):
        for dx in range(-p, p + 1):
            if torch.equal(out, A.shift_image(img[None], dy, dx)[0]):
                return dy, dx
    return None


def test_disabled_config_returns_input():
    x = torch.rand(4, 3, 8, 8)
    assert not AugmentConfig().enabled
    assert augment_batch(x, AugmentConfig()) is x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_shape_dtype_range_preserved(dtype):
    cfg = AugmentConfig(crop_padding=2, flip=True, translate=0.1, rotate=15, scale=0.1, noise=0.1,
                        salt_pepper=0.05, cutout=4)
    x = torch.rand(16, 3, 12, 10).to(dtype)
    y = augment_batch(x, cfg)
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
    assert float(y.min()) >= 0 and float(y.max()) <= 1


def test_random_crop_is_a_zero_filled_shift():
    x = _arange_batch()
    torch.manual_seed(3)
    y = A.random_crop(x, 3)
    shifts = [_matching_shift(y[i], x[i], 3) for i in range(len(x))]
    assert all(s is not None for s in shifts)
    assert len(set(shifts)) > 1  # offsets are per sample
    # the pipeline with only crop does the same thing
    torch.manual_seed(3)
    assert torch.equal(augment_batch(x, AugmentConfig(crop_padding=3)), y)


def test_crop_with_flip_is_shift_of_original_or_mirror():
    x = _arange_batch(b=32)
    torch.manual_seed(0)
    y = A.random_crop(x, 2, flip=True)
    flipped = 0
    for i in range(len(x)):
        plain, mirror = _matching_shift(y[i], x[i], 2), _matching_shift(y[i], x[i].flip(-1), 2)
        assert (plain is None) != (mirror is None)
        flipped += mirror is not None
    assert 0 < flipped < len(x)


def test_flip_flips_exactly_the_selected_samples():
    x = _arange_batch(b=64)
    torch.manual_seed(1)
    y = augment_batch(x, AugmentConfig(flip=True))
    same = torch.tensor([torch.equal(y[i], x[i]) for i in range(64)])
    mirrored = torch.tensor([torch.equal(y[i], x[i].flip(-1)) for i in range(64)])
    assert bool((same ^ mirrored).all())  # every sample is exactly one of the two
    assert 16 < int(mirrored.sum()) < 48
    # the selection is the per-sample mask drawn from the seeded global RNG
    torch.manual_seed(1)
    assert torch.equal(mirrored, torch.rand(64) < 0.5)


@pytest.mark.parametrize("size", [1, 4, 5])
def test_cutout_zeroes_one_clipped_square(size):
    h, w = 9, 11
    x = torch.ones(200, 2, h, w)
    torch.manual_seed(size)
    y = augment_batch(x, AugmentConfig(cutout=size))
    assert torch.equal(y[:, 0], y[:, 1])  # same square in every channel
    clipped = 0
    for img in y[:, 0]:
        zero = img == 0
        rows = torch.nonzero(zero.any(1)).flatten()
        cols = torch.nonzero(zero.any(0)).flatten()
        r0, r1, c0, c1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
        assert bool(zero[r0:r1, c0:c1].all()) and int(zero.sum()) == (r1 - r0) * (c1 - c0)  # a filled box
        # side `size`, unless clipped by a border it touches
        assert r1 - r0 == size or (r0 == 0 or r1 == h) and r1 - r0 < size
        assert c1 - c0 == size or (c0 == 0 or c1 == w) and c1 - c0 < size
        clipped += (r1 - r0) * (c1 - c0) < size * size
    assert size == 1 or clipped > 0  # border clipping does happen


def test_reproducible_under_manual_seed():
    cfg = AugmentConfig(crop_padding=2, flip=True, translate=0.1, rotate=10, scale=0.1, noise=0.05,
                        salt_pepper=0.02, cutout=3)
    x = torch.rand(8, 3, 16, 16)
    torch.manual_seed(7)
    a = augment_batch(x, cfg)
    state = torch.get_rng_state()
    a2 = augment_batch(x, cfg)
    torch.manual_seed(7)
    b = augment_batch(x, cfg)
    assert torch.equal(a, b) and not torch.equal(a, a2)
    torch.set_rng_state(state)  # resume from a checkpointed RNG state
    assert torch.equal(augment_batch(x, cfg), a2)


def test_affine_with_zero_parameters_is_identity():
    x = torch.rand(4, 3, 13, 17)
    torch.manual_seed(0)
    y = A.random_affine(x, translate=1e-9, rotate=1e-9, scale=1e-9)  # goes through grid_sample
    assert torch.allclose(y, x, atol=1e-5)
    assert A.random_affine(x) is x  # all zero: skipped entirely


def test_affine_moves_content():
    x = torch.zeros(64, 1, 16, 16)
    x[:, :, 6:10, 6:10] = 1
    torch.manual_seed(0)
    y = augment_batch(x, AugmentConfig(translate=0.2, rotate=30, scale=0.2))
    assert not torch.allclose(y, x)
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    # rotation and translation keep the square's area; zoom in [0.8, 1.2] changes it by ~1% on average
    assert abs(float(y.sum((1, 2, 3)).mean()) - 16) < 3


def test_salt_and_pepper_fraction():
    x = torch.full((64, 3, 32, 32), 0.5)
    torch.manual_seed(0)
    y = augment_batch(x, AugmentConfig(salt_pepper=0.1))
    white = (y == 1).all(1).float().mean()
    black = (y == 0).all(1).float().mean()
    assert abs(float(white) - 0.05) < 0.005 and abs(float(black) - 0.05) < 0.005
    assert bool(((y == 0.5) | (y == 0) | (y == 1)).all())


def test_gaussian_noise_std():
    x = torch.full((32, 1, 32, 32), 0.5)
    torch.manual_seed(0)
    y = augment_batch(x, AugmentConfig(noise=0.1))
    assert abs(float((y - x).std()) - 0.1) < 0.005


def test_config_validation_and_from_config():
    with pytest.raises(CnnlabError, match="translate"):
        AugmentConfig(translate=1.5)
    with pytest.raises(CnnlabError, match="cutout"):
        AugmentConfig(cutout=-1)
    with pytest.raises(CnnlabError, match="rotate"):
        AugmentConfig(rotate=-5)
    fields = dict(crop_padding=4, flip=None, translate=0.1, rotate=5.0, scale=0.0, noise=0.0, salt_pepper=0.0,
                  cutout=8, tta="none")
    cfg = SimpleNamespace(**fields)
    assert AugmentConfig.from_config(cfg).flip is False  # unresolved dataset default -> off
    a = AugmentConfig.from_config(cfg, flip=True)
    assert (a.crop_padding, a.flip, a.translate, a.rotate, a.cutout) == (4, True, 0.1, 5.0, 8)
    assert a.enabled and a.describe() == "crop 4, flip, translate 0.1, rotate 5, cutout 8"
    from cnnlab.config import TrainConfig
    assert AugmentConfig.from_config(TrainConfig(crop_padding=2, flip=True)) == AugmentConfig(crop_padding=2, flip=True)


def test_normalize():
    x = torch.rand(2, 3, 4, 4)
    y = A.normalize(x, (0.1, 0.2, 0.3), (0.5, 0.25, 2.0))
    assert torch.allclose(y[:, 1], (x[:, 1] - 0.2) / 0.25)
    assert torch.allclose(A.normalize(x, 0.5, 0.5), x * 2 - 1)
    with pytest.raises(CnnlabError, match="mean"):
        A.normalize(x, (0.1, 0.2), 1.0)
    with pytest.raises(CnnlabError, match="std"):
        A.normalize(x, 0.5, 0.0)


def test_shift_image():
    x = _arange_batch(b=1, c=1, h=4, w=5)
    y = A.shift_image(x, 1, -2)
    assert torch.equal(y[0, 0, 1:, :3], x[0, 0, :3, 2:])
    assert float(y[0, 0, 0].abs().sum()) == 0 and float(y[0, 0, :, 3:].abs().sum()) == 0


@pytest.mark.parametrize("mode,count", [("none", 1), ("flip", 2), ("shift", 5), ("flip-shift", 10)])
def test_tta_view_counts(mode, count):
    x = torch.rand(3, 1, 28, 28)
    views = tta_views(x, mode)
    assert len(views) == count and all(v.shape == x.shape for v in views)
    assert torch.equal(views[0], x)
    assert A.tta_shift(28, 28) == 2 and A.tta_shift(8, 8) == 1


def test_tta_bad_mode():
    with pytest.raises(CnnlabError, match="tta"):
        tta_views(torch.rand(1, 1, 4, 4), "rotate")


def test_predict_tta():
    torch.manual_seed(0)
    weight = torch.randn(5, 2 * 8)

    def flip_invariant(v):  # sums over the width, so a mirror image gives the same logits
        return v.sum(-1).flatten(1) @ weight.T

    x = torch.rand(6, 2, 8, 8)
    plain = torch.softmax(flip_invariant(x), -1)
    assert torch.allclose(predict_tta(flip_invariant, x, "flip"), plain, atol=1e-6)
    assert torch.allclose(predict_tta(flip_invariant, x, "none"), plain, atol=1e-6)
    probs = predict_tta(flip_invariant, x, "flip-shift")
    assert probs.dtype == torch.float32 and torch.allclose(probs.sum(-1), torch.ones(6))

    def linear(v):
        return v.flatten(1) @ torch.randn(2 * 64, 5, generator=torch.Generator().manual_seed(1))

    expected = torch.stack([torch.softmax(linear(v), -1) for v in tta_views(x, "shift")]).mean(0)
    assert torch.allclose(predict_tta(linear, x, "shift"), expected, atol=1e-6)
