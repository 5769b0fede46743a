"""A generated plankton-like grey image folder: a stand-in for the National Data Science Bowl images
(thesis Ch. 6) when the competition data is not at hand.

    python -m cnnlab.data.plankton OUT_DIR [--per-class 200] [--size 48] [--seed 0]

writes ``OUT_DIR/<class>/NNNN.png``, which ``--data folder --data-dir OUT_DIR`` reads like any
folder of classes. Like the NDSB images the organisms are single grey objects on a plain
background with no "up": every image is drawn at a random orientation, position and size, so
the rotation, flips (both ways), shifts, zooms and shears of the thesis's augmentation and
multi-view test keep the labels. Eight classes of simple body plans (round cell, ring, rod, chain
of cells, spiny cell, star, crescent, cross) differ in shape, not in orientation. It is a
stand-in, not plankton: numbers measured on it say that the NDSB pipeline (augmentation, the
multi-view test, log-loss) works and how its parts rank on an easy problem, not how they do on NDSB.
"""
from __future__ import annotations

import argparse
import math
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

from ..errors import CnnlabError
from ..files import atomic_write

CLASSES = ("cell", "ring", "rod", "chain", "spiny", "star", "crescent", "cross")


def _rot(points, angle, cx, cy):
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in points]


def draw_organism(kind: str, rng: random.Random, size: int = 48) -> Image.Image:
    big = size * 4
    img = Image.new("L", (big, big), int(rng.uniform(200, 240)))  # light background, dark organism
    d = ImageDraw.Draw(img)
    tone = int(rng.uniform(30, 110))
    r = big * rng.uniform(0.16, 0.26)
    cx, cy = big / 2 + rng.uniform(-0.08, 0.08) * big, big / 2 + rng.uniform(-0.08, 0.08) * big
    a = rng.uniform(0, 2 * math.pi)
    w = max(2, int(r * 0.18))
    if kind == "cell":
        d.ellipse([cx - r, cy - r * 0.85, cx + r, cy + r * 0.85], fill=tone)
    elif kind == "ring":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=tone, width=w)
    elif kind == "rod":
        d.polygon(_rot([(-r * 1.4, -r * 0.3), (r * 1.4, -r * 0.3), (r * 1.4, r * 0.3), (-r * 1.4, r * 0.3)], a, cx, cy),
                  fill=tone)
    elif kind == "chain":
        for k in (-1.2, 0, 1.2):
            (px, py), = _rot([(k * r * 0.8, 0)], a, cx, cy)
            d.ellipse([px - r * 0.45, py - r * 0.45, px + r * 0.45, py + r * 0.45], fill=tone)
    elif kind == "spiny":
        d.ellipse([cx - r * 0.6, cy - r * 0.6, cx + r * 0.6, cy + r * 0.6], fill=tone)
        for k in range(10):
            spine = _rot([(r * 0.5, 0), (r * 1.3, 0)], a + k * 2 * math.pi / 10, cx, cy)
            d.line(spine, fill=tone, width=max(1, w // 2))
    elif kind == "star":
        pts = [((r * 1.2 if k % 2 == 0 else r * 0.45) * math.cos(k * math.pi / 5),
                (r * 1.2 if k % 2 == 0 else r * 0.45) * math.sin(k * math.pi / 5)) for k in range(10)]
        d.polygon(_rot(pts, a, cx, cy), fill=tone)
    elif kind == "crescent":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=tone)
        (ox, oy), = _rot([(r * 0.45, 0)], a, cx, cy)
        bg = img.getpixel((0, 0))
        d.ellipse([ox - r * 0.9, oy - r * 0.9, ox + r * 0.9, oy + r * 0.9], fill=bg)
    elif kind == "cross":
        for b in (a, a + math.pi / 2):
            d.line(_rot([(-r * 1.2, 0), (r * 1.2, 0)], b, cx, cy), fill=tone, width=w * 2)
    else:
        raise CnnlabError(f"plankton: unknown class {kind!r}")
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(1.0, 3.0))).resize((size, size), Image.BILINEAR)
    noise = Image.effect_noise((size, size), rng.uniform(4, 12))
    return Image.blend(img, noise, 0.08)


def make_plankton_folder(out: str | Path, per_class: int = 200, size: int = 48, seed: int = 0) -> Path:
    """Write ``per_class`` images of every class to ``out/<class>/NNNN.png``; returns ``out``."""
    if per_class < 2 or size < 16:
        raise CnnlabError("plankton: needs per_class >= 2 and size >= 16")
    out = Path(out)
    rng = random.Random(seed)
    for kind in CLASSES:
        folder = out / kind
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(per_class):
            img = draw_organism(kind, rng, size)
            atomic_write(folder / f"{j:04d}.png", lambda p, im=img: im.save(p, format="PNG"))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m cnnlab.data.plankton", description=__doc__.splitlines()[0])
    p.add_argument("out", help="folder to write (one sub-folder per class)")
    p.add_argument("--per-class", type=int, default=200)
    p.add_argument("--size", type=int, default=48, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    print(make_plankton_folder(args.out, args.per_class, args.size, args.seed))


if __name__ == "__main__":
    main()
