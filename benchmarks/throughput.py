"""Roofline accounting: the machine's practical peak and how much of it training and inference reach.

    python benchmarks/throughput.py [--models ...] [--modes eager channels-last bf16 compile] [--threads N]

1. **Peak**: a large square matmul (``--peak-size``, 2048 by default) in fp32, and in bf16 where
   the CPU has it natively (AVX512-BF16 or AMX; elsewhere bf16 is emulated and slower than fp32, so
   it is listed as n/a unless ``--bf16-anyway``). The median over ``--repeats`` calls is the
   practical peak every figure below is a fraction of. On a shared machine the peak moves with the
   load, so it is measured again (``--repeats`` calls) just before each model and that model's
   fractions use the peak measured next to it (``peak_gflops`` in each row).
2. **Models**: the recipes of ``benchmarks/mnist_time_to_accuracy.py`` (``recipe-99.0``,
   ``recipe-99.5``: their model, options and batch size) and the zoo models lenet5, fastnet,
   tinynet-cifar, resnet20 and mobilenet at their native input size. For each memory/precision
   mode -- ``eager`` (fp32, NCHW), ``channels-last`` (fp32), ``bf16`` (channels-last + bf16 autocast,
   only where native) and ``compile`` (torch.compile/inductor, channels-last fp32) -- it times
   training steps (forward, cross-entropy, backward, SGD step with momentum) and inference
   batches (eval mode, ``torch.inference_mode``), median of ``--steps`` after warm-up; in the
   channels-last mode also inference with conv + BN folded into one convolution
   (:mod:`cnnlab.models.fuse`).
   Achieved GFLOP/s counts 2 FLOPs per multiply-add of ``cnnlab models --info`` (convolution and
   linear layers only; batch norm, activations and pooling do not count as work): a training image
   is 3 x 2 x MACs (forward, and the two backward products), an inference image 2 x MACs.
   ``of peak`` divides by the fp32 peak (bf16 mode: by the bf16 peak).

The first line printed is the machine line (CPU model and flags, threads, torch, load average);
the last is one JSON object with every figure.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mnist_time_to_accuracy import RECIPES  # noqa: E402

from cnnlab.device import cpu_has_native_bf16  # noqa: E402
from cnnlab.export import cpu_name  # noqa: E402
from cnnlab.models import create_model  # noqa: E402
from cnnlab.models.catalog import default_input  # noqa: E402
from cnnlab.models.fuse import fuse_conv_bn  # noqa: E402
from cnnlab.models.info import model_report  # noqa: E402

MODES = ("eager", "channels-last", "bf16", "compile")
ZOO = ("lenet5", "fastnet", "tinynet-cifar", "resnet20", "mobilenet")
# training batch sizes: the recipes' own; 4 for the 224x224 mobilenet so that a step stays short
BATCH = {"mobilenet": 4}


def machine_line(threads: int) -> str:
    load = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    return f"{cpu_name()}; {threads} threads; torch {torch.__version__}; load average {load} (1/5/15 min)"


def timed(fn, steps: int, warmup: int) -> float:
    """Median seconds per call of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def matmul_peak(size: int, dtype: torch.dtype, repeats: int) -> float:
    """GFLOP/s of a size x size x size matmul (2 n^3 FLOPs), median of ``repeats`` calls."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    out = torch.empty(size, size, dtype=dtype)
    seconds = timed(lambda: torch.mm(a, b, out=out), repeats, 2)
    return 2 * size ** 3 / seconds / 1e9


def specs(names: list[str]) -> list[dict]:
    """(label, model name, options, channels, side, train batch) of every benchmarked model."""
    out = []
    for name in names:
        if name.startswith("recipe-"):
            r = RECIPES[float(name.removeprefix("recipe-"))]
            out.append({"label": name, "model": r["model"], "options": dict(r.get("model_options", {})),
                        "channels": 1, "side": 28, "batch": r["batch_size"]})
        else:
            c, side = default_input(name)
            out.append({"label": name, "model": name, "options": {}, "channels": c, "side": side,
                        "batch": BATCH.get(name, 256)})
    return out


def measure(spec: dict, mode: str, steps: int, warmup: int, infer_batch: int) -> dict:
    """Training and inference images/s of one model in one mode."""
    torch.manual_seed(0)
    c, side, batch = spec["channels"], spec["side"], spec["batch"]
    num_classes = 1000 if spec["model"] == "mobilenet" else 10
    model = create_model(spec["model"], num_classes, c, image_size=side, **spec["options"])
    channels_last = mode != "eager"
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    cast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if mode == "bf16" else contextlib.nullcontext
    forward = model
    compile_seconds = None
    if mode == "compile":
        torch._dynamo.reset()
        forward = torch.compile(model, dynamic=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x = torch.randn(batch, c, side, side).contiguous(memory_format=fmt)
    y = torch.randint(0, num_classes, (batch,))

    def train_step():
        with cast():
            out = forward(x)
        loss = F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    if mode == "compile":
        t = time.perf_counter()
        train_step()
        compile_seconds = time.perf_counter() - t
    train_s = timed(train_step, steps, warmup)
    model.eval()
    xi = torch.randn(infer_batch, c, side, side).contiguous(memory_format=fmt)

    def infer():
        with torch.inference_mode(), cast():
            forward(xi)

    if mode == "compile":
        t = time.perf_counter()
        infer()
        compile_seconds += time.perf_counter() - t
    infer_s = timed(infer, steps, warmup)
    fused_ips = None
    if mode == "channels-last":  # conv + BN folded into one convolution (cnnlab.models.fuse), inference only
        fused = fuse_conv_bn(model)

        def infer_fused():
            with torch.inference_mode():
                fused(xi)

        fused_ips = infer_batch / timed(infer_fused, steps, warmup)
    return {"train_images_per_s": batch / train_s, "infer_images_per_s": infer_batch / infer_s,
            "fused_infer_images_per_s": fused_ips,
            "compile_seconds": None if compile_seconds is None else round(compile_seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=[f"recipe-{t}" for t in sorted(RECIPES)] + list(ZOO))
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--steps", type=int, default=8, help="timed steps per figure (median)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--infer-batch", type=int, default=256)
    p.add_argument("--peak-size", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=5, help="timed matmuls for the peak (median)")
    p.add_argument("--bf16-anyway", action="store_true", help="measure bf16 even where it is emulated")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    native = cpu_has_native_bf16()
    print(f"machine: {machine_line(threads)}; native bf16: {native}", flush=True)
    peak = {"fp32": matmul_peak(args.peak_size, torch.float32, args.repeats)}
    if native or args.bf16_anyway:
        peak["bf16"] = matmul_peak(args.peak_size, torch.bfloat16, args.repeats)
    print("practical peak (matmul " + f"{args.peak_size}^3): "
          + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in peak.items())
          + ("" if "bf16" in peak else ", bf16 n/a (not native: emulated, slower than fp32)"), flush=True)
    modes = [m for m in args.modes if m != "bf16" or "bf16" in peak]
    rows = []
    print("| model | input | MACs/image | batch | mode | peak GFLOP/s | train img/s | train GFLOP/s | of peak | "
          f"infer img/s | infer GFLOP/s | of peak | fused conv+BN infer img/s |\n"
          f"|---|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for spec in specs(args.models):
        num_classes = 1000 if spec["model"] == "mobilenet" else 10
        macs = model_report(spec["model"], spec["channels"], spec["side"], num_classes, **spec["options"])["macs"]
        local = {"fp32": matmul_peak(args.peak_size, torch.float32, args.repeats)}  # the peak next to this model
        if "bf16" in peak:
            local["bf16"] = matmul_peak(args.peak_size, torch.bfloat16, args.repeats)
        for mode in modes:
            try:
                r = measure(spec, mode, args.steps, args.warmup, args.infer_batch)
            except Exception as e:  # noqa: BLE001  e.g. no C++ compiler for inductor: say so, go on
                print(f"| {spec['label']} | {mode}: failed ({type(e).__name__}: {str(e).splitlines()[0][:80]}) |")
                continue
            top = local["bf16" if mode == "bf16" else "fp32"]
            tg = 6 * macs * r["train_images_per_s"] / 1e9
            ig = 2 * macs * r["infer_images_per_s"] / 1e9
            row = {"model": spec["label"], "input": f"{spec['channels']}x{spec['side']}x{spec['side']}",
                   "macs": macs, "batch": spec["batch"], "mode": mode, **r, "train_gflops": tg,
                   "train_of_peak": tg / top, "infer_gflops": ig, "infer_of_peak": ig / top,
                   "peak_gflops": top, "load": round(os.getloadavg()[0], 2)}
            rows.append(row)
            print(f"| {row['model']} | {row['input']} | {macs / 1e6:.2f}M | {spec['batch']} | {mode} | {top:.1f} | "
                  f"{r['train_images_per_s']:,.0f} | {tg:.1f} | {100 * tg / top:.0f}% | "
                  f"{r['infer_images_per_s']:,.0f} | {ig:.1f} | {100 * ig / top:.0f}% | "
                  f"{'-' if r['fused_infer_images_per_s'] is None else format(r['fused_infer_images_per_s'], ',.0f')} |",
                  flush=True)
    print(f"load average at the end: {' / '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(json.dumps({"benchmark": "throughput", "machine": machine_line(threads), "native_bf16": native,
                      "peak_gflops": peak, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
