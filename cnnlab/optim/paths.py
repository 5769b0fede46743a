"""The optimizer-path figure (optimizer paper, "Gradient descent optimization algorithms"; Ruder's
animations): the trajectories of SGD, momentum, NAG, Adagrad, Adadelta, RMSprop, Adam, AdaMax and
Nadam on 2-D test surfaces, drawn from the very optimizer classes that train cnnlab's networks
(:func:`cnnlab.optim.factory.create_optimizer`): the point (x, y) is a 2-element parameter, the
surface its loss, and each step is ``loss.backward(); optimizer.step()``.

Surfaces (each with its start point, chosen to show what the paper's figures show):

* ``valley``: a long narrow valley, f = 0.05 x^2 + 2 y^2 (curvatures 0.1 and 4, ratio 40), from
  (-4.5, 1). Plain SGD crawls along the flat floor at a rate that does not oscillate across it;
  momentum and NAG speed along the floor but swing across it (NAG less); the adaptive methods
  rescale each coordinate and head for the minimum more directly.
* ``saddle``: f = x^2 - y^2 from (1.0, 0.001), almost on the ridge line y = 0. The gradient's
  y-component starts at 0.002, so SGD, momentum and NAG take many steps to leave the saddle;
  Adagrad, RMSprop, Adam, AdaMax and Nadam divide by the gradient's running magnitude and escape
  down the negative-curvature direction at once (the paper's "SGD optimization on saddle point").
* ``beale``: Beale's function, the non-convex surface of Ruder's first animation, from (1, 1.5);
  its minimum is (3, 0.5).

``python -m cnnlab.optim.paths --out DIR [--steps N]`` writes ``DIR/paths_<surface>.png`` (contours
and one path per optimizer) and ``DIR/paths.json`` (every point, and the final loss); the rates
per optimizer are in :data:`RATES` and :data:`SURFACE_RATES`. Momentum and NAG use the
factory's default momentum 0.9; the adaptive methods their PyTorch defaults (betas, rho, alpha, eps).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..errors import CnnlabError
from .factory import create_optimizer

OPTIMIZERS = ("sgd", "momentum", "nag", "adagrad", "adadelta", "rmsprop", "adam", "adamax", "nadam")
LABELS = {"sgd": "SGD", "momentum": "Momentum", "nag": "NAG", "adagrad": "Adagrad", "adadelta": "Adadelta",
          "rmsprop": "RMSprop", "adam": "Adam", "adamax": "AdaMax", "nadam": "Nadam"}
# learning rates: Adadelta's is its own default 1.0 (its step is a ratio of running RMS values, eq. of Zeiler
# 2012); the others are one rate per family that moves visibly within the plotted steps without diverging
RATES = {"sgd": 0.05, "momentum": 0.05, "nag": 0.05, "adagrad": 0.5, "adadelta": 1.0, "rmsprop": 0.05,
         "adam": 0.1, "adamax": 0.1, "nadam": 0.1}
# Beale's gradients reach ~1e3 off its valley: the SGD family needs a smaller rate there not to diverge
SURFACE_RATES = {"beale": {"sgd": 0.003, "momentum": 0.003, "nag": 0.003}}


def rate(opt: str, surface: str) -> float:
    """The learning rate ``opt`` runs with on ``surface`` (:data:`RATES`, :data:`SURFACE_RATES`)."""
    return SURFACE_RATES.get(surface, {}).get(opt, RATES.get(opt, 0.05))


@dataclass(frozen=True)
class Surface:
    name: str
    f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    start: tuple[float, float]
    box: tuple[float, float, float, float]  # x0, x1, y0, y1 of the plot
    minimum: tuple[float, float] | None


SURFACES = {
    "valley": Surface("valley", lambda x, y: 0.05 * x ** 2 + 2 * y ** 2, (-4.5, 1.0), (-5, 1, -1.5, 1.5), (0.0, 0.0)),
    "saddle": Surface("saddle", lambda x, y: x ** 2 - y ** 2, (1.0, 1e-3), (-1.5, 1.5, -1.5, 1.5), None),
    "beale": Surface("beale", lambda x, y: ((1.5 - x + x * y) ** 2 + (2.25 - x + x * y ** 2) ** 2
                                           + (2.625 - x + x * y ** 3) ** 2), (1.0, 1.5), (-4.5, 4.5, -4.5, 4.5),
                     (3.0, 0.5)),
}


def trajectory(opt: str, surface: str | Surface, steps: int = 100, lr: float | None = None,
               start: tuple[float, float] | None = None, **options) -> list[tuple[float, float]]:
    """The points visited by optimizer ``opt`` (a registered name) from ``start`` on ``surface``: steps + 1 points.

    Stops early (keeping what it has) if the loss becomes non-finite or the point leaves |x|, |y| < 1e3.
    """
    s = SURFACES[surface] if isinstance(surface, str) else surface
    if steps < 1:
        raise CnnlabError(f"optimizer paths: steps must be >= 1, got {steps}")
    p = torch.tensor(start or s.start, dtype=torch.float64, requires_grad=True)
    optimizer = create_optimizer(opt, [p], lr=rate(opt, s.name) if lr is None else lr, **options)
    points = [tuple(p.detach().tolist())]
    for _ in range(steps):
        optimizer.zero_grad()
        loss = s.f(p[0], p[1])
        if not torch.isfinite(loss):
            break
        loss.backward()
        optimizer.step()
        if not torch.isfinite(p).all() or p.detach().abs().max() > 1e3:
            break
        points.append(tuple(p.detach().tolist()))
    return points


def all_paths(surface: str, steps: int = 100, optimizers=OPTIMIZERS) -> dict[str, list[tuple[float, float]]]:
    return {opt: trajectory(opt, surface, steps) for opt in optimizers}


def plot_paths(surface: str, paths: dict[str, list[tuple[float, float]]], path: str | Path) -> None:
    """Contours of the surface and one line per optimizer (a dot at every 10th step, a cross at the end)."""
    from ..plots import colors, pyplot, save_figure

    plt = pyplot()
    s = SURFACES[surface]
    x0, x1, y0, y1 = s.box
    xs, ys = torch.linspace(x0, x1, 200, dtype=torch.float64), torch.linspace(y0, y1, 200, dtype=torch.float64)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    z = s.f(gx, gy)
    fig, ax = plt.subplots(figsize=(7, 5.5))
    levels = 30
    if surface == "beale":  # spans five decades: log-spaced contours
        import numpy as np

        levels = np.logspace(-1, 5, 30)
    ax.contour(gx.numpy(), gy.numpy(), z.numpy(), levels=levels, cmap="Greys", linewidths=0.6)
    for (opt, pts), c in zip(paths.items(), colors(len(paths))):
        px, py = zip(*pts)
        ax.plot(px, py, "-", color=c, lw=1.6, label=f"{LABELS.get(opt, opt)} (lr {rate(opt, surface):g})")
        ax.plot(px[::10], py[::10], ".", color=c, ms=4)
        ax.plot(px[-1], py[-1], "x", color=c, ms=7)
    ax.plot(*s.start, "ko", ms=6)
    if s.minimum:
        ax.plot(*s.minimum, "k*", ms=12)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    steps = max(len(p) for p in paths.values()) - 1
    ax.set_title(f"{surface}: {steps} steps of each optimizer (torch.optim through cnnlab's factory)")
    ax.legend(fontsize=8, loc="best")
    save_figure(fig, path, tight=True)


def draw(out: str | Path, steps: int = 100, surfaces=("valley", "saddle", "beale")) -> dict:
    """All paths on every surface: ``out/paths_<surface>.png`` and ``out/paths.json``."""
    from ..files import atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    record = {}
    for name in surfaces:
        paths = all_paths(name, steps)
        plot_paths(name, paths, out / f"paths_{name}.png")
        f = SURFACES[name].f
        record[name] = {opt: {"points": pts, "final_loss": float(f(*torch.tensor(pts[-1], dtype=torch.float64))),
                              "lr": rate(opt, name)} for opt, pts in paths.items()}
    atomic_write_text(out / "paths.json", json.dumps(record))
    return record


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m cnnlab.optim.paths", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/optimizer-paths", help="folder for the PNGs and paths.json")
    p.add_argument("--steps", type=int, default=100)
    a = p.parse_args(argv)
    record = draw(a.out, a.steps)
    for name, paths in record.items():
        print(f"{name}: " + ", ".join(f"{LABELS[o]} {v['final_loss']:.3g}" for o, v in paths.items()))
    print(f"-> {Path(a.out).resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
