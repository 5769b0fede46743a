"""Recipe trials for the MNIST time-to-accuracy recipes, scored on held-out training data only.

    python benchmarks/recipe_trials.py --data-dir ../shared/data/mnist --base 99.0 --name lean \\
        --set model_options='{widths: [24, 48, 64]}' epochs=1 --seeds 0 1 2 --log benchmarks/results-trials.jsonl

Every trial trains on the MNIST training split minus its fixed stratified fold 1 of 6
(``--cv-fold 1/6``: 50,000 images) and is scored on that fold (10,000 images the run never
trains on). The test split is never loaded, so no choice made with these trials looks at it
(the speed-run rule: recipes are fixed before the test set is seen). Each trial appends one
JSON line per seed (change, overrides, training seconds, held-out accuracy, evaluation seconds
including any TTA, load average) to ``--log``; docs/performance.md's ablation table lists them.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mnist_time_to_accuracy import RECIPES  # noqa: E402

from cnnlab import TrainConfig, train  # noqa: E402
from cnnlab.config import parse_key_value  # noqa: E402

FOLD = "1/6"


def run_trial(base: dict, overrides: dict, seed: int, data_dir: str, out: str, threads: int | None) -> dict:
    cfg = {**base, **overrides, "data": "mnist", "data_dir": data_dir, "cv_fold": FOLD, "progress": False,
           "seed": seed, "out": out, "name": f"trial-{time.time_ns()}", "eval_every": 1000, "threads": threads}
    load = os.getloadavg()[0]
    start = time.perf_counter()
    s = train(TrainConfig.from_dict(cfg))
    wall = time.perf_counter() - start
    return {"seed": seed, "train_seconds": round(s["train_seconds"], 2), "val_acc": round(100 * s["test_acc"], 3),
            "wall_seconds": round(wall, 2), "images_per_second": round(s["images_per_second"]),
            "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2), "dtype": s["dtype"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--base", type=float, default=99.0, help="start from this target's recipe")
    p.add_argument("--name", required=True, help="what the trial changes (one line)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="recipe fields to change")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--log", default="benchmarks/results-trials.jsonl")
    args = p.parse_args(argv)
    overrides = dict(parse_key_value(s) for s in args.set)
    out = tempfile.mkdtemp(prefix="cnnlab-trial-")
    rows = []
    for seed in args.seeds:
        r = run_trial(RECIPES[args.base], overrides, seed, args.data_dir, out, args.threads)
        rows.append(r)
        line = {"trial": args.name, "base": args.base, "set": overrides, "threads": args.threads, **r,
                "time": time.strftime("%Y-%m-%d %H:%M")}
        print(json.dumps(line), flush=True)
        with open(args.log, "a") as f:
            f.write(json.dumps(line) + "\n")
    accs = [r["val_acc"] for r in rows]
    secs = sorted(r["train_seconds"] for r in rows)
    print(f"{args.name}: median {secs[len(secs) // 2]:.1f}s (min {secs[0]:.1f}, max {secs[-1]:.1f}), held-out acc "
          f"mean {sum(accs) / len(accs):.3f}% ({', '.join(f'{a:.2f}' for a in accs)})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
