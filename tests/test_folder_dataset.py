"""The ``folder`` dataset: a user's class folders of images in any common format and mode."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.data import load_dataset
from cnnlab.data.folder import IMAGE_EXTENSIONS, load_folder, load_image
from cnnlab.errors import CnnlabError


def save(path: Path, img: Image.Image, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kwargs)
    return path


def noise(mode: str, size: tuple[int, int], seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    array = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    return Image.fromarray(array[:, :, 0] if channels == 1 else array, mode)


def make_tree(root: Path) -> dict[str, list[Path]]:
    """Three classes of 5 images each, mixing formats, sizes and modes."""
    files = {
        "cat": [save(root / "cat" / "a.png", noise("RGB", (40, 30), 0)),
                save(root / "cat" / "b.jpg", noise("RGB", (50, 50), 1)),
                save(root / "cat" / "c.bmp", noise("L", (20, 60), 2)),
                save(root / "cat" / "nested" / "d.tiff", noise("RGB", (33, 17), 3)),
                save(root / "cat" / "E.PPM", noise("RGB", (16, 16), 4))],
        "dog": [save(root / "dog" / "a.pgm", noise("L", (24, 24), 5)),
                save(root / "dog" / "b.png", noise("RGBA", (30, 40), 6)),
                save(root / "dog" / "c.png", noise("RGB", (64, 48), 7).convert("P")),
                save(root / "dog" / "d.tif", Image.fromarray(np.full((12, 12), 40000, np.uint16))),
                save(root / "dog" / "e.jpeg", noise("L", (100, 80), 8))],
        "emu": [save(root / "emu" / f"{i}.png", noise("L", (8 + i, 8), 10 + i)) for i in range(5)],
    }
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "cat" / ".DS_Store").write_bytes(b"\x00junk")
    (root / "dog" / "._b.png").write_bytes(b"AppleDouble junk")  # hidden: ignored, no warning
    (root / ".hidden_class").mkdir()
    return files


@pytest.fixture
def tree(tmp_path) -> tuple[Path, dict[str, list[Path]]]:
    root = tmp_path / "images"
    return root, make_tree(root)


def test_loads_mixed_formats(tree, recwarn):
    root, files = tree
    ds = load_folder(root, size=16)
    assert ds.classes == ["cat", "dog", "emu"]
    assert ds.train_images.shape == (12, 3, 16, 16) and ds.test_images.shape == (3, 3, 16, 16)
    assert ds.train_images.dtype == torch.uint8
    assert sorted(ds.train_labels.tolist()) == [0] * 4 + [1] * 4 + [2] * 4  # stratified: 1 of 5 per class held out
    assert sorted(ds.test_labels.tolist()) == [0, 1, 2]
    assert sorted(ds.extra["train_files"] + ds.extra["test_files"]) == sorted(str(p) for ps in files.values()
                                                                              for p in ps)
    assert ds.extra["channels"] == 3 and ds.extra["image_size"] == 16 and ds.extra["skipped"] == []
    assert len(ds.mean) == 3 and ds.flip_ok
    assert not recwarn.list


def test_registry_passes_options(tree):
    root, _ = tree
    ds = load_dataset("folder", data_dir=root, size=8, channels=1, test_split=0.4, seed=3)
    assert ds.train_images.shape == (9, 1, 8, 8) and ds.test_images.shape == (6, 1, 8, 8)


def test_grey_folder_stays_grey_unless_asked(tmp_path):
    for c in ("a", "b"):
        for i in range(3):
            save(tmp_path / c / f"{i}.png", noise("L", (10, 10), i))
    assert load_folder(tmp_path, size=10).in_channels == 1
    assert load_folder(tmp_path, size=10, channels=3).in_channels == 3


def test_split_is_seeded(tree):
    root, _ = tree
    a, b, c = (load_folder(root, size=8, seed=s) for s in (0, 0, 1))
    assert a.extra["test_files"] == b.extra["test_files"]
    assert torch.equal(a.train_images, b.train_images)
    assert a.extra["test_files"] != c.extra["test_files"]


def test_load_image_matches_the_dataset(tree):
    """predict must see exactly what training saw, also for grey images in a colour dataset."""
    root, _ = tree
    ds = load_folder(root, size=12)
    for x, path in zip(ds.train_images, ds.extra["train_files"]):
        assert torch.equal(load_image(path, 12, 3), x), path
    grey = load_folder(root, size=12, channels=1)
    for x, path in zip(grey.test_images, grey.extra["test_files"]):
        assert torch.equal(load_image(path, 12, 1), x), path


def test_resize_keeps_aspect_and_centre_crops(tmp_path):
    stripes = np.zeros((10, 30, 3), np.uint8)
    stripes[:, :10, 0] = 255  # red | green | blue
    stripes[:, 10:20, 1] = 255
    stripes[:, 20:, 2] = 255
    path = save(tmp_path / "s.png", Image.fromarray(stripes))
    x = load_image(path, 10, 3)
    assert x.shape == (3, 10, 10)
    assert x[1, :, 2:8].min() == 255 and x[0, :, 2:8].max() == 0 and x[2, :, 2:8].max() == 0


def test_sixteen_bit_transparency_and_exif(tmp_path):
    wide = save(tmp_path / "w.png", Image.fromarray(np.array([[65535, 32896]] * 2, np.uint16)))
    assert load_image(wide, 2, 1)[0].tolist() == [[255, 128]] * 2  # scaled from 0..65535, not clipped

    clear = save(tmp_path / "t.png", Image.new("RGBA", (4, 4), (0, 0, 0, 0)))
    assert load_image(clear, 4, 3).min() == 255  # transparent -> white

    upright = np.zeros((20, 10, 3), np.uint8)  # 10 wide, 20 high: red top, blue bottom
    upright[:10, :, 0] = 255
    upright[10:, :, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    rotated = save(tmp_path / "r.png", Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90), exif=exif)
    assert torch.equal(load_image(rotated, 10, 3), load_image(save(tmp_path / "u.png", Image.fromarray(upright)),
                                                                10, 3))


def add_broken_files(root: Path) -> list[Path]:
    good = root / "cat" / "b.jpg"
    truncated = root / "cat" / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    fake = root / "dog" / "fake.png"
    fake.write_text("this is text, not a PNG")
    cut_png = root / "emu" / "cut.png"
    cut_png.write_bytes((root / "emu" / "0.png").read_bytes()[:60])
    return [truncated, fake, cut_png]


def test_unreadable_images_are_skipped_with_a_warning(tree):
    root, _ = tree
    broken = add_broken_files(root)
    with pytest.warns(UserWarning, match="skipped 3 unreadable") as record:
        ds = load_folder(root, size=8)
    message = str(record[0].message)
    assert all(str(p) in message for p in broken)
    assert ds.extra["skipped"] == [str(p) for p in broken]
    assert len(ds.train_labels) + len(ds.test_labels) == 15


@pytest.mark.parametrize("which", [0, 1, 2])
def test_strict_raises_naming_the_file(tree, which):
    root, _ = tree
    broken = add_broken_files(root)
    for other in broken[:which]:
        other.unlink()  # the first remaining broken file is the one reported
    with pytest.raises(CnnlabError, match="cannot read image") as err:
        load_folder(root, size=8, strict=True)
    assert str(broken[which]) in str(err.value)


def test_load_image_names_unreadable_file(tmp_path):
    fake = tmp_path / "x.png"
    fake.write_text("nope")
    with pytest.raises(CnnlabError, match="cannot read image") as err:
        load_image(fake, 8, 3)
    assert str(fake) in str(err.value)
    with pytest.raises(CnnlabError, match="cannot read image"):
        load_image(tmp_path / "missing.png", 8, 3)


def test_presplit_train_and_test_folders(tmp_path):
    for split, n in (("train", 4), ("test", 2)):
        for c in ("x", "y"):
            for i in range(n):
                save(tmp_path / split / c / f"{i}.png", noise("RGB", (9, 9), i))
    ds = load_folder(tmp_path, size=9, test_split=0.9)
    assert ds.classes == ["x", "y"] and len(ds.train_labels) == 8 and len(ds.test_labels) == 4
    assert all("/train/" in f for f in ds.extra["train_files"])
    save(tmp_path / "test" / "z" / "0.png", noise("RGB", (9, 9), 0))
    with pytest.raises(CnnlabError, match="z"):
        load_folder(tmp_path, size=9)


def two_classes(root: Path, counts=(3, 3)) -> Path:
    for c, n in zip("ab", counts):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            save(root / c / f"{i}.png", noise("L", (6, 6), i))
    return root


@pytest.mark.parametrize("setup, kwargs, expected", [
    (lambda p: None, {"data_dir": None}, "--data-dir"),
    (lambda p: None, {}, "does not exist"),
    (lambda p: p.write_text("x"), {}, "not a directory"),
    (lambda p: save(p / "only" / "0.png", noise("L", (4, 4), 0)), {}, "at least 2 class sub-folders"),
    (lambda p: [save(p / f"{i}.png", noise("L", (4, 4), i)) for i in range(2)], {}, "directly in it"),
    (lambda p: (two_classes(p), (p / "c").mkdir(), (p / "c" / "x.txt").write_text("x")), {}, "contains no images"),
    (lambda p: (two_classes(p), (p / "c").mkdir(), (p / "c" / "x.png").write_text("x")), {}, "no readable images"),
    (lambda p: two_classes(p, (3, 1)), {}, "at least 2 per class"),
    (lambda p: two_classes(p), {"channels": 2}, "channels"),
    (lambda p: two_classes(p), {"test_split": 1.5}, "test_split"),
    (lambda p: two_classes(p), {"size": 0}, "size"),
])
def test_clear_errors(tmp_path, setup, kwargs, expected):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(CnnlabError, match=expected) as err:
        load_folder(**{"data_dir": root, "size": 8, **kwargs})
    if kwargs.get("data_dir", root) is not None and expected not in ("channels", "test_split", "size"):
        assert str(root) in str(err.value)


def test_extensions_cover_the_documented_formats():
    assert {".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm", ".tif", ".tiff"} <= IMAGE_EXTENSIONS
