"""Time to accuracy on MNIST: cnnlab's fixed fastnet recipes against the PyTorch-examples network.

    python benchmarks/mnist_time_to_accuracy.py --data-dir ../shared/data/mnist

The figure follows the speed-run rule of the CIFAR-10 speed records (airbench): each
recipe (model, epochs, schedule) is fixed in advance, nothing stops on test accuracy,
and the final test accuracy averaged over the seeds must reach the target. The time
is the recipe's training time with the data already in memory, evaluation excluded
(``train_seconds`` of the run summary). The reference is the ``mnist-example`` network
trained as in pytorch/examples mnist/main.py (Adadelta lr 1.0, batch 64, StepLR gamma
0.7 per epoch, fp32), timed until its test accuracy first reaches the target (evaluated
after every epoch, evaluation time excluded), one seed. The last line printed is one
JSON object with all figures.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time

import torch

from cnnlab import TrainConfig, train

# Recipes fixed in advance, one per target accuracy (percent).
RECIPES: dict[float, dict] = {
    99.0: dict(model="fastnet", model_options={"widths": [32, 48, 64, 96]}, epochs=1.5, batch_size=256, opt="sgd",
               lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, sched="onecycle"),
    99.5: dict(model="fastnet", model_options={"widths": [48, 64, 96, 128]}, epochs=6, batch_size=256, opt="sgd",
               lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, sched="onecycle", label_smoothing=0.1,
               translate=0.08),
}
REFERENCE = dict(model="mnist-example", model_options={}, epochs=14, batch_size=64, opt="adadelta", lr=1.0,
                 momentum=None, weight_decay=0.0, sched="step", sched_options={"step_size": 1, "gamma": 0.7},
                 precision="fp32", channels_last=False, eval_batch_size=1000)


def run(cfg: dict, out: str, name: str) -> dict:
    config = TrainConfig.from_dict({**cfg, "out": out, "name": name})
    return train(config)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="folder with the four MNIST IDX .gz files")
    p.add_argument("--targets", type=float, nargs="+", default=sorted(RECIPES), help="target accuracies (percent)")
    p.add_argument("--seeds", type=int, default=3, help="runs per recipe (the accuracy is averaged over them)")
    p.add_argument("--skip-reference", action="store_true", help="do not train the reference network")
    p.add_argument("--reference-target", type=float, default=99.0)
    p.add_argument("--precision", default="auto", help="precision for cnnlab's recipes (the reference is fp32)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, help="parent folder for the run folders (default: a temporary folder)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or tempfile.mkdtemp(prefix="cnnlab-bench-")
    common = dict(data="mnist", data_dir=args.data_dir, progress=False, device=args.device, threads=args.threads)
    stamp = time.strftime("%H%M%S")
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    print(f"machine: {machine}", flush=True)

    results = []
    for target in args.targets:
        if target not in RECIPES:
            p.error(f"no recipe for target {target}; recipes exist for {sorted(RECIPES)}")
        recipe = {**RECIPES[target], **common, "precision": args.precision, "eval_every": 1000}
        seconds, accs, epochs = [], [], []
        for seed in range(args.seeds):
            s = run({**recipe, "seed": seed}, out, f"fast{target}-seed{seed}-{stamp}")
            seconds.append(s["train_seconds"])
            accs.append(100 * s["test_acc"])
            epochs.append(recipe["epochs"])
            print(f"target {target}%: seed {seed}: {s['train_seconds']:.2f}s, {recipe['epochs']} epochs, "
                  f"test {100 * s['test_acc']:.2f}%, {s['images_per_second']:.0f} img/s, {s['dtype']}", flush=True)
        mean_acc = statistics.mean(accs)
        res = {"target": target, "seconds_median": statistics.median(seconds), "seconds_min": min(seconds),
               "seconds_max": max(seconds), "epochs": epochs[0], "test_acc_mean": round(mean_acc, 3),
               "test_acc_runs": [round(a, 2) for a in accs], "reached": mean_acc >= target, "seeds": args.seeds,
               "model": recipe["model"]}
        results.append(res)
        print(f"target {target}%: median {res['seconds_median']:.2f}s (min {res['seconds_min']:.2f}, max "
              f"{res['seconds_max']:.2f}), mean accuracy {mean_acc:.2f}% -> "
              f"{'reached' if res['reached'] else 'NOT reached'}", flush=True)

    reference = None
    if not args.skip_reference:
        s = run({**REFERENCE, **common, "target_acc": args.reference_target, "seed": 0}, out, f"reference-{stamp}")
        hit = s["reached_target"]
        reference = {"target": args.reference_target, "seconds": hit["seconds"] if hit else None,
                     "epochs": hit["epoch"] if hit else s["epochs"], "test_acc": round(100 * s["test_acc"], 3),
                     "images_per_second": round(s["images_per_second"])}
        print(f"reference mnist-example: {reference}", flush=True)
        for res in results:
            if res["target"] == args.reference_target and reference["seconds"]:
                res["speedup_vs_reference"] = round(reference["seconds"] / res["seconds_median"], 2)

    print(json.dumps({"benchmark": "mnist_time_to_accuracy", "machine": machine, "results": results,
                      "reference": reference}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
