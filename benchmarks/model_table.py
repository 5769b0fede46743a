"""Print (or, with --write, refresh in docs/models.md) the table of every registered model's cost figures.

    .venv/bin/python benchmarks/model_table.py            # print the markdown tables
    .venv/bin/python benchmarks/model_table.py --write    # replace them in docs/models.md

Each model is measured at its native input (the size of the paper's table) with the paper's class
count (1000 for ImageNet networks, 121 for the NDSB plankton networks, else 10), on PyTorch's meta
device: nothing is allocated, so the whole table takes seconds (about 10 s on 2 cores, most of it
torch's first meta-device forward). See cnnlab/models/info.py for how each figure is counted.
tests/test_docs.py regenerates both tables and fails when docs/models.md differs.
"""
from __future__ import annotations

import argparse
import re
from functools import lru_cache
from pathlib import Path

from cnnlab.files import atomic_write_text
from cnnlab.models import MODELS
from cnnlab.models.catalog import default_input
from cnnlab.models.info import human, model_report

DOC = Path(__file__).resolve().parents[1] / "docs" / "models.md"
BATCH = 128

# (model, input side, options, paper figure, measured key, paper value, where)
PAPER = [
    ("alexnet", 224, {"groups": 2}, "parameters", "params", 60e6, "thesis Sec. 4.2.2, Table 4.7"),
    ("vgg16", 224, {}, "parameters", "params", 138e6, "thesis Table 4.7"),
    ("vgg16", 224, {}, "size (MiB)", "size_mib", 528, "thesis Table 4.7"),
    ("vgg16", 224, {}, "complexity vs AlexNet", "complexity_vs_alexnet", 22.6, "thesis Table 4.7"),
    ("inception-bn", 224, {}, "complexity vs AlexNet", "complexity_vs_alexnet", 3.07, "thesis Table 4.7 (GoogLeNet)"),
    ("tinynet-a", 112, {}, "parameters", "params", 1.54e6, "thesis Table 4.7"),
    ("tinynet-a", 112, {}, "size (MiB)", "size_mib", 7.9, "thesis Table 4.7"),
    ("tinynet-a", 112, {}, "complexity vs AlexNet", "complexity_vs_alexnet", 0.40, "thesis Table 4.7"),
    ("tinynet-b", 224, {}, "parameters", "params", 1.56e6, "thesis Table 4.7"),
    ("tinynet-b", 224, {}, "size (MiB)", "size_mib", 7.9, "thesis Table 4.7"),
    ("tinynet-b", 224, {}, "complexity vs AlexNet", "complexity_vs_alexnet", 0.42, "thesis Table 4.7"),
    ("ndsb1", 128, {}, "complexity vs AlexNet", "complexity_vs_alexnet", 12, "thesis Sec. 6.2"),
    ("ndsb2", 144, {}, "complexity vs AlexNet", "complexity_vs_alexnet", 6, "thesis Sec. 6.2"),
    ("mobilenet", 224, {}, "parameters", "params", 4.2e6, "Howard et al. Table 4"),
    ("mobilenet", 224, {}, "mult-adds", "macs", 569e6, "Howard et al. Table 4"),
    ("mobilenet-plain", 224, {}, "parameters", "params", 29.3e6, "Howard et al. Table 4"),
    ("mobilenet-plain", 224, {}, "mult-adds", "macs", 4866e6, "Howard et al. Table 4"),
    ("resnet20", 32, {}, "parameters", "params", 0.27e6, "He et al. 2015 Table 6"),
    ("resnet110", 32, {}, "parameters", "params", 1.7e6, "He et al. 2015 Table 6"),
    ("resnet164", 32, {}, "parameters", "params", 1.7e6, "He et al. 2016 Table 2"),
    ("resnet50", 224, {}, "mult-adds", "macs", 3.8e9, "He et al. 2015 Table 1 (FLOPs)"),
    ("resnet152", 224, {}, "mult-adds", "macs", 11.3e9, "He et al. 2015 Table 1 (FLOPs)"),
    # issue 17: GoogLeNet 2014 without its training-only auxiliary heads; the MSRA VGG against "Kaiming Net"
    ("googlenet", 224, {"aux_weight": 0}, "parameters", "params", 5e6, "thesis Table 4.7 (6.8M: Szegedy et al.)"),
    ("googlenet", 224, {"aux_weight": 0}, "complexity vs AlexNet", "complexity_vs_alexnet", 3.07, "thesis Table 4.7"),
    ("msra-vgg", 224, {}, "parameters", "params", 95e6, "thesis Table 4.7 (Kaiming Net)"),
    ("msra-vgg", 224, {}, "complexity vs AlexNet", "complexity_vs_alexnet", 1.28, "thesis Table 4.7 (Kaiming Net)"),
]


def native(name: str) -> tuple[int, int, int]:
    """(channels, side, classes) of a model's paper setting: the input `cnnlab models` lists it at."""
    channels, side = default_input(name)  # for a 1-D signal model (cae1d, cnn1d): side = length
    if MODELS.entry(name).meta.get("signal"):
        return channels, side, 50  # the two-stage paper's 50 wheat sorts (Sec. 3)
    classes = 121 if name.startswith("ndsb") else 1000 if side >= 112 else 10
    return channels, side, classes


@lru_cache(maxsize=None)
def _report(name: str, side: int, options: tuple[tuple[str, object], ...]) -> dict:
    """model_report at the paper's channels and classes; cached: both tables measure some models alike."""
    c, _, classes = native(name)
    return model_report(name, c, side, num_classes=classes, batch_size=BATCH, **dict(options))


def fmt(value: float, key: str) -> str:
    if key in ("size_mib", "size_mb"):
        return f"{value:.1f}"
    if key == "complexity_vs_alexnet":
        return f"{value:.3g}x"
    return human(value)


def model_rows() -> list[str]:
    rows = ["| model | input | classes | params | MB (fp32) | mult-adds | eq. 4.7 vs AlexNet "
            f"| activations MB (batch {BATCH}) | peak MB | source |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for e in MODELS:
        c, side, classes = native(e.name)
        d = _report(e.name, side, ())
        rows.append(f"| `{e.name}` | {d['input']} | {classes} | {human(d['params'])} | {d['size_mb']:.1f} "
                    f"| {human(d['macs'])} | {d['complexity_vs_alexnet']:.3g}x | {d['activations_mb']:,.0f} "
                    f"| {d['peak_activation_mb']:,.0f} | {e.meta.get('source', '')} |")
    return rows


def paper_rows() -> list[str]:
    rows = ["| model | input | figure | paper | measured | source |", "|---|---|---|---|---|---|"]
    for name, side, options, label, key, paper, where in PAPER:
        c, _, classes = native(name)
        d = _report(name, side, tuple(sorted(options.items())))
        opts = "".join(f" {k}={v}" for k, v in options.items())
        rows.append(f"| `{name}`{opts} | {c}x{side}x{side} | {label} | {fmt(paper, key)} | {fmt(d[key], key)} "
                    f"| {where} |")
    return rows


def tables() -> dict[str, str]:
    """The generated tables by marker name (``<!-- NAME:start -->`` ... ``<!-- NAME:end -->`` in the doc)."""
    return {"model-table": "\n".join(model_rows()), "paper-table": "\n".join(paper_rows())}


def fill(doc: str, generated: dict[str, str]) -> str:
    """``doc`` with the text between each pair of markers replaced by its generated table."""
    for tag, text in generated.items():
        pattern = re.compile(rf"(<!-- {tag}:start -->\n).*?(<!-- {tag}:end -->)", re.S)
        if not pattern.search(doc):
            raise SystemExit(f"{DOC}: markers <!-- {tag}:start/end --> not found")
        doc = pattern.sub(lambda m: m.group(1) + text + "\n" + m.group(2), doc)
    return doc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--write", action="store_true", help=f"replace the tables in {DOC}")
    args = p.parse_args()
    if not args.write:
        for text in tables().values():
            print(text + "\n")
        return
    atomic_write_text(DOC, fill(DOC.read_text(), tables()))
    print(f"updated {DOC}")


if __name__ == "__main__":
    main()
