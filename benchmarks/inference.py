"""Inference speed: eager fp32, eager bf16, torch.compile, onnxruntime fp32 and int8, side by side.

    python benchmarks/inference.py [--models lenet5 fastnet ...] [--batches 1 64] [--threads N] [--out FILE]

Every backend runs the same computation, the deployed one (:class:`cnnlab.export.Deployable`):
uint8 images -> normalization -> model -> softmax, at each model's native input size with its
default (full) width, random weights (speed does not depend on their values) with batch-norm
statistics taken from a few forward passes, as after training. For each model and batch size:

* ``eager fp32``: ``module(x)`` under ``torch.inference_mode``, weights in channels-last memory format
  as cnnlab runs use by default (``--no-channels-last``: NCHW; here that is 1.4x slower for TinyNet);
* ``eager bf16``: the same under bf16 autocast -- only where the CPU has native bf16 (AVX512-BF16 or
  AMX); elsewhere it is emulated and slower than fp32, so it is shown as ``n/a`` (``--bf16-anyway``
  measures it regardless);
* ``torch.compile``: inductor, ``dynamic=False``, compiled once per batch size (compile time listed
  separately, not in the latency);
* ``ort fp32`` / ``ort int8``: the graph ``cnnlab export`` writes (dynamo exporter, opset 18), and its
  static int8 quantization (QDQ, per-channel weights, min-max calibration on 64 random images --
  calibration data changes accuracy, not speed), on onnxruntime's CPU provider.

Latency is the median over ``--repeats`` timed calls after warm-up calls (``--repeats-64`` for
larger batches), made in ``--rounds`` interleaved rounds (every backend of a model and batch size in
turn, so that a shared machine's changing load falls on all of them alike); throughput is batch /
median latency. All backends use ``--threads`` threads (torch
intra-op threads and onnxruntime's intra-op threads). The table is printed with the CPU's model name
and flags; ``--out`` also writes it (and a JSON line per figure) to a file.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from cnnlab.device import cpu_has_native_bf16
from cnnlab.export import Deployable, cpu_name, export_module, quantize_onnx, run_onnx
from cnnlab.inference import onnx_session
from cnnlab.models import count_parameters, create_model
from cnnlab.models.catalog import default_input

# The models the issue names, plus the thesis's final TinyNet (B) at ImageNet size (1000 classes),
# the network meant to run on a phone.
MODELS = {"lenet5": 10, "fastnet": 10, "tinynet-cifar": 10, "mobilenet": 1000, "resnet20": 10, "tinynet-b": 1000}
BACKENDS = ("eager fp32", "eager bf16", "torch.compile", "ort fp32", "ort int8")


def build(name: str, num_classes: int, channels_last: bool = True) -> tuple[Deployable, int, int]:
    channels, side = default_input(name)
    model = create_model(name, num_classes, channels, image_size=side)
    module = Deployable(model, [0.5] * channels, [0.25] * channels)
    with torch.no_grad():  # batch-norm statistics of real activations (what training leaves)
        module.train()
        for _ in range(2):
            module(torch.randint(0, 256, (8, channels, side, side), dtype=torch.uint8))
    if channels_last:
        module.model.to(memory_format=torch.channels_last)
    return module.eval(), channels, side


def interleaved(fns: dict[str, callable], batch: int, repeats: int, rounds: int) -> dict[str, dict]:
    """Median latency of each callable, timed in ``rounds`` interleaved rounds of ``repeats / rounds`` calls:
    on a shared machine the load changes by the minute, and interleaving spreads it over every backend alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():  # warm-up (first-call allocations, onnxruntime's arena, oneDNN primitives)
        for _ in range(2 if batch > 1 else 5):
            fn()
    per_round = max(1, -(-repeats // rounds))
    for _ in range(rounds):
        for key, fn in fns.items():
            for _ in range(per_round):
                t = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - t)
    out = {}
    for key, ts in times.items():
        ms = 1000 * statistics.median(ts)
        out[key] = {"ms": ms, "images_per_s": batch / ms * 1000, "calls": len(ts)}
    return out


def bench_model(name: str, num_classes: int, batches: list[int], args, tmp: Path) -> list[dict]:
    module, channels, side = build(name, num_classes, args.channels_last)
    inputs = {b: torch.randint(0, 256, (b, channels, side, side), dtype=torch.uint8) for b in batches}
    notes: dict[tuple[str, int], str] = {}
    compile_s: dict[int, float] = {}
    fns: dict[int, dict] = {b: {} for b in batches}

    def eager(x, bf16=False):
        cast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with torch.inference_mode(), cast:
            return module(x)

    torch._dynamo.reset()  # one compiled module per model; dynamic=False: one static graph per batch size
    compiled = torch.compile(module, dynamic=False)
    for b in batches:
        x = inputs[b]
        fns[b]["eager fp32"] = lambda x=x: eager(x)
        if cpu_has_native_bf16() or args.bf16_anyway:
            fns[b]["eager bf16"] = lambda x=x: eager(x, bf16=True)
            if not cpu_has_native_bf16():
                notes[("eager bf16", b)] = "emulated: no native bf16"
        else:
            notes[("eager bf16", b)] = "n/a (no avx512_bf16/amx)"
        if args.skip_compile:
            notes[("torch.compile", b)] = "skipped"
            continue
        try:  # compiled for this batch size here, outside the timing
            t = time.perf_counter()
            with torch.inference_mode():
                compiled(x)
            compile_s[b] = round(time.perf_counter() - t, 1)

            def run_compiled(x=x):
                with torch.inference_mode():
                    return compiled(x)
            fns[b]["torch.compile"] = run_compiled
        except Exception as e:  # noqa: BLE001  no compiler, an unsupported op: say so in the table
            notes[("torch.compile", b)] = f"failed: {type(e).__name__}"
    fp32, int8 = tmp / f"{name}.onnx", tmp / f"{name}.int8.onnx"
    export_module(module, fp32, "onnx", inputs[batches[0]].repeat(2, 1, 1, 1)[:2], {"model": name}, name)
    quantize_onnx(fp32, int8, torch.randint(0, 256, (64, channels, side, side), dtype=torch.uint8), name=name)
    sizes = {"ort fp32": fp32.stat().st_size / 1e6, "ort int8": int8.stat().st_size / 1e6}
    sessions = {"ort fp32": onnx_session(fp32, args.threads), "ort int8": onnx_session(int8, args.threads)}
    for b in batches:
        for key, session in sessions.items():
            fns[b][key] = lambda session=session, feed={"images": inputs[b].numpy()}: session.run(None, feed)
    rows: list[dict] = []
    for b in batches:
        repeats = args.repeats if b == 1 else args.repeats_64
        results = interleaved(fns[b], b, repeats, args.rounds)
        for backend in BACKENDS:
            r = results.get(backend, {"ms": None, "images_per_s": None})
            rows.append({"model": name, "input": f"{channels}x{side}x{side}", "batch": b, "backend": backend, **r,
                         "note": notes.get((backend, b), ""), "file_mb": sizes.get(backend),
                         "compile_s": compile_s.get(b) if backend == "torch.compile" else None})
            shown = f"{r['ms']:.3f} ms, {r['images_per_s']:.0f} img/s" if r["ms"] is not None else rows[-1]["note"]
            print(f"  {name:14s} batch {b:3d}  {backend:14s} {shown}", file=sys.stderr, flush=True)
    # the graph computes what PyTorch does (the export check of cnnlab export, on random pixels here)
    with torch.no_grad():
        ref = module(inputs[batches[-1]])
    diff = (run_onnx(sessions["ort fp32"], inputs[batches[-1]]) - ref).abs().max().item()
    for r in rows:
        r.update(params=count_parameters(module.model), fp32_graph_max_abs_diff=diff)
    return rows


def table(rows: list[dict], batches: list[int]) -> str:
    """One row per model and batch size, one column per backend: latency at batch 1, throughput above."""
    lines = ["| model | input | batch | " + " | ".join(BACKENDS) + " |", "|---|---|---|" + "---|" * len(BACKENDS)]
    for name in dict.fromkeys(r["model"] for r in rows):
        for n in batches:
            mine = {r["backend"]: r for r in rows if r["model"] == name and r["batch"] == n}
            cells = [name, next(iter(mine.values()))["input"], str(n)]
            for b in BACKENDS:
                r = mine.get(b)
                if r is None or r["ms"] is None:
                    cells.append(r["note"] if r else "-")
                else:
                    cells.append(f"{r['ms']:.3f} ms" if n == 1 else f"{r['images_per_s']:,.0f} img/s")
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| model | parameters | ONNX fp32 MB | ONNX int8 MB | torch.compile seconds (per batch size) | "
                  "max abs diff ort fp32 vs eager |", "|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name]
        size = {r["backend"]: r["file_mb"] for r in mine if r.get("file_mb")}
        compile_s = " / ".join(str(r["compile_s"]) for r in mine if r.get("compile_s") is not None) or "-"
        lines.append(f"| {name} | {mine[0]['params']:,} | {size.get('ort fp32', 0):.3f} | "
                     f"{size.get('ort int8', 0):.3f} | {compile_s} | {mine[0]['fp32_graph_max_abs_diff']:.1e} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), help="zoo models (default: %(default)s)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="threads for every backend")
    p.add_argument("--repeats", type=int, default=50, help="timed calls at batch 1 (median)")
    p.add_argument("--repeats-64", type=int, default=10, help="timed calls at larger batches (median)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds the timed calls are split into")
    p.add_argument("--skip-compile", action="store_true", help="leave torch.compile out (it compiles for minutes)")
    p.add_argument("--bf16-anyway", action="store_true", help="measure bf16 autocast even without native bf16")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                   help="eager and torch.compile with channels-last weights, as cnnlab runs (default: %(default)s)")
    p.add_argument("--out", help="also write the table and the figures (JSON lines) to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    header = (f"cnnlab inference benchmark, {time.strftime('%Y-%m-%d %H:%M')}; load average {load} (1/5/15 min)\n"
              f"CPU: {cpu_name()}; {args.threads} thread(s); native bf16: {cpu_has_native_bf16()}; "
              f"eager/compile memory format: {'channels-last' if args.channels_last else 'NCHW'}\n"
              f"torch {torch.__version__}, python {platform.python_version()}; latency = median of {args.repeats} "
              f"(batch 1) / {args.repeats_64} (larger) timed calls in {args.rounds} interleaved rounds; "
              f"throughput = batch / median latency")
    print(header, file=sys.stderr, flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            rows += bench_model(name, MODELS.get(name, 10), args.batches, args, Path(tmp))
    text = header + "\n\n" + table(rows, args.batches)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n\n" + "".join(json.dumps(r) + "\n" for r in rows))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
