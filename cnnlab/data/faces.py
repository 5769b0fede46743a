"""A generated face-like image folder: the shape of the two-stage paper's face set (40 people x 10
photos, Sec. 2), for the ``folder`` dataset when the real photos are not at hand.

    python -m cnnlab.data.faces OUT_DIR [--people 40] [--photos 10] [--size 64] [--seed 0]

writes ``OUT_DIR/person01/photo01.png`` ... (grey PNGs), which ``--data folder --data-dir OUT_DIR``
reads like any folder of classes. Each person is a fixed set of face proportions (head shape, eye
spacing and size, brows, nose, mouth, hair line, skin tone); each photo of a person varies what a
passport-style sitting varies: a small offset, rotation and scale, the lighting direction,
the expression (mouth curve, eyes open or shut), and sensor noise. It is a stand-in, not a face
data set: the numbers measured on it say that the folder path works and how the classifiers rank
on an easy 40-class problem, not how they do on FERET.
"""
from __future__ import annotations

import argparse
import math
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..errors import CnnlabError
from ..files import atomic_write


def _person(rng: random.Random) -> dict[str, float]:
    return {"head_w": rng.uniform(0.30, 0.40), "head_h": rng.uniform(0.38, 0.47), "eye_y": rng.uniform(-0.10, 0.0),
            "eye_dx": rng.uniform(0.11, 0.17), "eye_r": rng.uniform(0.025, 0.045), "brow": rng.uniform(-0.3, 0.3),
            "brow_h": rng.uniform(0.05, 0.08), "nose": rng.uniform(0.08, 0.16), "mouth_y": rng.uniform(0.17, 0.25),
            "mouth_w": rng.uniform(0.08, 0.16), "hair": rng.uniform(-0.42, -0.25), "skin": rng.uniform(150, 215),
            "hair_tone": rng.uniform(20, 110), "glasses": float(rng.random() < 0.25)}


def draw_face(p: dict[str, float], rng: random.Random, size: int = 64) -> Image.Image:
    """One photo of person ``p``: the person's proportions under this photo's pose, light and expression."""
    big = size * 4  # draw large, then shrink: smooth edges
    img = Image.new("L", (big, big), int(rng.uniform(40, 90)))
    d = ImageDraw.Draw(img)
    cx = big * (0.5 + rng.uniform(-0.02, 0.02))  # a sitting, as for a passport photo: small offsets
    cy = big * (0.52 + rng.uniform(-0.02, 0.02))
    s = big * rng.uniform(0.96, 1.04)

    def xy(x: float, y: float) -> tuple[float, float]:
        return cx + x * s, cy + y * s

    def box(x: float, y: float, rx: float, ry: float) -> list[float]:
        (x0, y0), (x1, y1) = xy(x - rx, y - ry), xy(x + rx, y + ry)
        return [x0, y0, x1, y1]

    d.ellipse(box(0, p["hair"] + 0.12, p["head_w"] * 1.05, 0.22), fill=int(p["hair_tone"]))  # hair
    d.ellipse(box(0, 0.02, p["head_w"], p["head_h"]), fill=int(p["skin"]))  # face
    open_eyes = rng.random() > 0.1
    for side in (-1, 1):
        ex, ey = side * p["eye_dx"], p["eye_y"]
        if open_eyes:
            d.ellipse(box(ex, ey, p["eye_r"] * 1.6, p["eye_r"]), fill=235)
            d.ellipse(box(ex + rng.uniform(-0.01, 0.01), ey, p["eye_r"] * 0.7, p["eye_r"] * 0.7), fill=25)
        else:
            d.line([xy(ex - p["eye_r"] * 1.6, ey), xy(ex + p["eye_r"] * 1.6, ey)], fill=40, width=max(1, big // 64))
        tilt = side * p["brow"] * 0.05
        d.line([xy(ex - 0.06, ey - p["brow_h"] - tilt), xy(ex + 0.06, ey - p["brow_h"] + tilt)],
               fill=int(p["hair_tone"]), width=max(2, big // 40))
        if p["glasses"]:
            d.ellipse(box(ex, ey, p["eye_r"] * 2.6, p["eye_r"] * 2.2), outline=30, width=max(1, big // 80))
    d.line([xy(0, p["eye_y"] + 0.02), xy(0.02, p["eye_y"] + p["nose"]), xy(-0.02, p["eye_y"] + p["nose"])],
           fill=int(p["skin"] * 0.7), width=max(1, big // 64))
    smile = rng.uniform(-0.03, 0.05)  # expression: from a frown to a smile
    mw, my = p["mouth_w"], p["mouth_y"]
    d.arc(box(0, my - smile, mw, abs(smile) + 0.02), 0 if smile >= 0 else 180, 180 if smile >= 0 else 360,
          fill=60, width=max(2, big // 48))
    img = img.rotate(rng.uniform(-5, 5), resample=Image.Resampling.BILINEAR, fillcolor=60)
    img = img.resize((size, size), Image.Resampling.LANCZOS).filter(ImageFilter.GaussianBlur(0.3))
    a = np.asarray(img, dtype=np.float32)
    angle = rng.uniform(0, 2 * math.pi)  # lighting: a brightness gradient from a random direction
    yy, xx = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    a = a * (1 + rng.uniform(0.05, 0.2) * (math.cos(angle) * xx + math.sin(angle) * yy))
    a = a * rng.uniform(0.9, 1.1) + np.asarray(np.random.default_rng(rng.getrandbits(32)).normal(0, 4, a.shape))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def make_face_folder(out: str | Path, people: int = 40, photos: int = 10, size: int = 64, seed: int = 0) -> Path:
    """Write ``people`` x ``photos`` face-like PNGs to ``out/personNN/photoNN.png``; returns ``out``."""
    if people < 2 or photos < 2 or size < 16:
        raise CnnlabError("faces: needs people >= 2, photos >= 2 and size >= 16")
    out = Path(out)
    rng = random.Random(seed)
    for i in range(1, people + 1):
        person = _person(rng)
        folder = out / f"person{i:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(1, photos + 1):
            img = draw_face(person, rng, size)
            atomic_write(folder / f"photo{j:02d}.png", lambda p, im=img: im.save(p, format="PNG"))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m cnnlab.data.faces", description=__doc__.splitlines()[0])
    p.add_argument("out", help="folder to write (one sub-folder per person)")
    p.add_argument("--people", type=int, default=40)
    p.add_argument("--photos", type=int, default=10)
    p.add_argument("--size", type=int, default=64, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    print(make_face_folder(args.out, args.people, args.photos, args.size, args.seed))


if __name__ == "__main__":
    main()
