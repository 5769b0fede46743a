"""Where the time of a time-to-accuracy recipe goes: torch.profiler over its training steps.

    python benchmarks/profile_recipe.py --data-dir ../shared/data/mnist [--target 99.0] [--steps 60]

Builds the recipe of ``benchmarks/mnist_time_to_accuracy.py`` the way ``cnnlab.train`` does
(same model, loader, optimizer, schedule, precision and memory format), runs ``--warmup`` steps,
then profiles ``--steps`` steps and prints the operators by self CPU time, grouped into
convolution (forward and backward), batch norm, pooling, activation, optimizer, data (batch
gathering, augmentation, normalization) and the rest, with the share of the step time each takes.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mnist_time_to_accuracy import RECIPES  # noqa: E402

from cnnlab.config import TrainConfig  # noqa: E402
from cnnlab.data.augment import AugmentConfig  # noqa: E402
from cnnlab.data.loader import BatchLoader  # noqa: E402
from cnnlab.data.prepare import prepare_data  # noqa: E402
from cnnlab.device import Runtime, seed_everything  # noqa: E402
from cnnlab.objectives import create_objective  # noqa: E402
from cnnlab.train import build_model, build_parts  # noqa: E402
from cnnlab.distributed import DistInfo  # noqa: E402

GROUPS = (  # operator-name fragment -> group (first match wins)
    ("convolution_backward", "conv backward"), ("mkldnn_convolution", "conv forward"),
    ("_convolution", "conv forward"), ("conv2d", "conv forward"),
    ("batch_norm", "batch norm"), ("max_pool", "pooling"), ("adaptive_max", "pooling"),
    ("threshold_backward", "activation"), ("relu", "activation"),
    ("sgd", "optimizer"), ("_foreach", "optimizer"), ("lerp", "optimizer"),
    ("index", "data"), ("div_", "data"), ("to_copy", "data"), ("copy_", "data/format copies"),
    ("cross_entropy", "loss"), ("log_softmax", "loss"), ("nll_loss", "loss"),
    ("mm", "linear"), ("addmm", "linear"),
)


def group_of(name: str) -> str:
    low = name.lower()
    for frag, group in GROUPS:
        if frag in low:
            return group
    return "other"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--target", type=float, default=99.0)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override recipe fields")
    p.add_argument("--rows", type=int, default=25)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from cnnlab.config import parse_key_value

    recipe = {**RECIPES[args.target], **dict(parse_key_value(s) for s in args.set)}
    cfg = TrainConfig.from_dict({**recipe, "data": "mnist", "data_dir": args.data_dir, "progress": False,
                                 "out": "/tmp/unused", "name": "profile", "val_split": 0})
    runtime = Runtime.resolve(cfg.device, cfg.precision, cfg.channels_last)
    seed_everything(0, False)
    ds = prepare_data(cfg)
    objective = create_objective(cfg)
    model = build_model(cfg, ds, runtime)
    augment = AugmentConfig.from_config(cfg, flip=False)
    loader = BatchLoader(ds.train_images, ds.train_labels, cfg.batch_size, ds.mean, ds.std, runtime.device,
                         augment=augment, channels_last=cfg.channels_last)
    parts = build_parts(cfg, model, runtime, len(loader), len(loader) * 2, DistInfo())
    model.train()

    def batches():
        while True:
            yield from loader

    it = batches()

    def step():
        with record_function("data"):
            x, y = next(it)
        with record_function("forward"):
            with runtime.autocast():
                out = parts.forward(x)
            loss = objective.loss(out, y)
        parts.optimizer.zero_grad(set_to_none=True)
        with record_function("backward"):
            loss.backward()
        with record_function("optimizer"):
            parts.optimizer.step()
            parts.scheduler.step()
            if parts.ema is not None:
                parts.ema.update_parameters(parts.model)

    for _ in range(args.warmup):
        step()
    t = time.perf_counter()
    for _ in range(args.steps):
        step()
    plain = (time.perf_counter() - t) / args.steps
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    print(f"recipe {args.target}: {cfg.model} {recipe.get('model_options')} batch {cfg.batch_size}, "
          f"{runtime.precision}, channels-last {cfg.channels_last}, {torch.get_num_threads()} threads")
    print(f"unprofiled step {1000 * plain:.1f} ms = {cfg.batch_size / plain:.0f} images/s")
    events = prof.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    total = sum(e.self_cpu_time_total for e in events)
    groups: dict[str, float] = defaultdict(float)
    for e in events:
        if e.key in ("data", "forward", "backward", "optimizer"):
            continue
        groups[group_of(e.key)] += e.self_cpu_time_total
    print("self CPU time by group (share of all operator time):")
    for g, us in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"  {g:22s} {us / 1e3 / args.steps:7.2f} ms/step  {100 * us / total:5.1f}%")
    ranges = {e.key: e.cpu_time_total for e in events if e.key in ("data", "forward", "backward", "optimizer")}
    print("wall time by phase (record_function ranges, ms/step): "
          + ", ".join(f"{k} {v / 1e3 / args.steps:.2f}" for k, v in ranges.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
