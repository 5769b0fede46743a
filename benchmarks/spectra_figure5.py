"""Draw the two-stage paper's Fig. 5 (classification efficiency against the number of sorts, CNN and DNN)
from a finished ``spectra`` study, and print its table.

    .venv/bin/python benchmarks/spectra_figure5.py runs/studies/spectra-small [--out docs/img/spectra-fig5.png]

Reads the study's ``results.csv`` (variants ``cnn-NN`` / ``dnn-NN``: NN sorts, classifiers on the CAE
codes; ``raw-dnn-50`` when present, the DNN on the raw points). The paper's own curve is not in our copy
of the paper (only the caption: "the same for CNN and DNN"), so only ours is drawn.
"""
from __future__ import annotations

import argparse
import csv
import re
from pathlib import Path

from cnnlab.plots import pyplot, save_figure


def read(study: Path) -> dict[str, dict[int, float]]:
    """{"cnn": {sorts: test acc %}, "dnn": {...}, "raw-dnn": {...}} from results.csv."""
    curves: dict[str, dict[int, float]] = {}
    with open(study / "results.csv", newline="") as f:
        for row in csv.DictReader(f):
            m = re.fullmatch(r"(raw-)?(cnn|dnn)-(\d+)", row["variant"])
            if m and row.get("test_acc_mean"):
                curves.setdefault(f"{m.group(1) or ''}{m.group(2)}", {})[int(m.group(3))] = float(row["test_acc_mean"])
    return curves


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("study", type=Path, help="the study folder, e.g. runs/studies/spectra-small")
    p.add_argument("--out", type=Path, default=None, help="PNG to write (default: STUDY/plots/figure5.png)")
    a = p.parse_args()
    curves = read(a.study)
    sorts = sorted({n for c in curves.values() for n in c})
    names = {k: f"{k.upper().replace('RAW-', '')} on {'raw points' if k.startswith('raw') else 'CAE codes'}"
             for k in curves}
    print("| sorts | " + " | ".join(f"{names[k]} (%)" for k in curves) + " |")
    print("|---:|" + "---:|" * len(curves))
    for n in sorts:
        print(f"| {n} | " + " | ".join(f"{c[n]:.2f}" if n in c else "" for c in curves.values()) + " |")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, marker in (("cnn", "o"), ("dnn", "s"), ("raw-dnn", "^")):
        if key in curves:
            xs = sorted(curves[key])
            ax.plot(xs, [curves[key][n] for n in xs], marker=marker, label=names[key])
    ax.set(xlabel="number of sorts", ylabel="test accuracy (%)",
           title="Fig. 5 on generated spectra (stand-in, not wheat)")
    ax.grid(alpha=0.3)
    ax.legend()
    out = a.out or a.study / "plots" / "figure5.png"
    fig.tight_layout()
    save_figure(fig, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
