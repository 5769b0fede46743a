"""Images/s delivered by each data path (decode + augment, no model), and its peak memory.

    .venv/bin/python benchmarks/data_throughput.py [--images 20000] [--side 256] [--size 128] [--batches 40]

Generates a folder of JPEGs (``--images`` at ``--side`` x ``--side``, 10 classes, smooth colour fields
plus noise: ~10-20 KB each, like photos) under /tmp (never in the repo), packs it with ``cnnlab pack
--keep-size``, then measures in a fresh process each:

- memory:  the in-memory path: decode the folder once at ``--size`` (reported separately), then
           BatchLoader with random crop (padding size/8) + flip on uint8 tensors;
- folder:  streaming the JPEG folder through DataLoader workers (random-resized crop at native
           resolution to ``--size``, flip), for 1 and 2 workers;
- shards:  the same from the packed tar shards;

reporting images/s over ``--batches`` batches of 128 (after the first, which pays the worker start)
and the peak memory of the process tree (the sum of PSS: shared pages counted once). Then the peak
memory of a whole streamed epoch (shards, 2 workers) over a quarter of the images and over all of
them: it must not grow with the dataset size.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path("/tmp/cnnlab-data-throughput")
BATCH = 128


def make_jpegs(folder: Path, n: int, side: int) -> None:
    import numpy as np
    from PIL import Image

    if folder.exists() and sum(1 for _ in folder.rglob("*.jpg")) == n:
        return
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:2 * side, 0:2 * side] / side
    bases = []  # 32 smooth colour fields at twice the side; each image is a shifted window plus noise
    for _ in range(32):
        a, b, c = rng.random(3) * 2 * np.pi
        bases.append(np.stack([np.sin(a + 6 * xx * (k + 1)) * np.cos(b + 5 * yy) + np.sin(c * k + 9 * xx * yy)
                               for k in range(3)], axis=2) * 60 + 127)
    noise = rng.normal(0, 12, (2 * side, 2 * side, 3))
    for i in range(n):
        d = folder / f"class{i % 10}"
        d.mkdir(parents=True, exist_ok=True)
        y, x, u, v = rng.integers(0, side, 4)
        img = (bases[i % 32][y:y + side, x:x + side] + noise[u:u + side, v:v + side]).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(d / f"{i:06d}.jpg", quality=90)


def pss_tree(pid: int) -> int:
    """Proportional set size of ``pid`` and all its descendants, in bytes."""
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            for line in open(f"/proc/{p}/smaps_rollup"):
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
                    break
            for task in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in open(f"/proc/{p}/task/{task}/children").read().split()]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


class PeakMemory:
    def __init__(self, interval: float = 0.05):
        self.peak, self.interval, self._stop = 0, interval, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, pss_tree(os.getpid()))
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, pss_tree(os.getpid()))


def measure(path: str, workers: int, size: int, batches: int, limit: int | None) -> dict:
    """One measurement, run in a fresh process (so peaks do not mix)."""
    import torch

    from cnnlab.data.augment import AugmentConfig
    from cnnlab.data.loader import BatchLoader
    from cnnlab.data.shards import read_manifest
    from cnnlab.data.stream import SampleIndex, StreamLoader, index_shards, list_folder

    torch.set_num_threads(1)
    result: dict = {"path": path, "workers": workers}
    with PeakMemory() as peak:
        if path == "memory":
            from cnnlab.data.folder import load_folder

            start = time.perf_counter()
            ds = load_folder(ROOT / "jpegs", size=size)
            result["load_seconds"] = time.perf_counter() - start
            loader = BatchLoader(ds.train_images, ds.train_labels, BATCH, ds.mean, ds.std,
                                 augment=AugmentConfig(crop_padding=size // 8, flip=True))
        else:
            if path == "folder":
                paths, labels = list_folder(ROOT / "jpegs").splits["train"]
                index = SampleIndex("folder", list(paths), labels)
            else:
                shards = ROOT / "shards"
                index = index_shards(shards, read_manifest(shards)["splits"]["train"]["shards"], limit)
            loader = StreamLoader(index, BATCH, size, 3, [0.5] * 3, [0.25] * 3, augment=AugmentConfig(flip=True),
                                  workers=workers)
        total = batches if batches > 0 else len(loader)
        seen, start = 0, None
        for i, (x, _) in enumerate(loader):
            if i == 0:
                start = time.perf_counter()  # the first batch pays the workers' start
            else:
                seen += len(x)
            if i >= total:
                break
        result["images_per_second"] = seen / (time.perf_counter() - start)
        result["images"] = len(loader.labels) if path == "memory" else len(loader.index)
    result["peak_mb"] = peak.peak / 1e6
    return result


def run_one(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--one", *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=20000)
    p.add_argument("--side", type=int, default=256)
    p.add_argument("--size", type=int, default=128, help="side the paths deliver")
    p.add_argument("--batches", type=int, default=40, help="timed batches per measurement")
    p.add_argument("--one", nargs=5, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        path, workers, size, batches, limit = a.one
        print(json.dumps(measure(path, int(workers), int(size), int(batches), int(limit) or None)))
        return

    from cnnlab.pack import pack

    load = os.getloadavg()
    print(f"# CPU: {os.cpu_count()} cores; load average {load[0]:.2f} at start; {a.images} JPEGs {a.side}x{a.side}")
    start = time.perf_counter()
    make_jpegs(ROOT / "jpegs", a.images, a.side)
    print(f"generated/checked the JPEG folder in {time.perf_counter() - start:.0f}s "
          f"({sum(f.stat().st_size for f in (ROOT / 'jpegs').rglob('*.jpg')) / a.images / 1e3:.1f} KB per image)")
    start = time.perf_counter()
    pack(ROOT / "jpegs", ROOT / "shards", keep_size=True, log=lambda s: None)
    print(f"packed (keep-size) in {time.perf_counter() - start:.0f}s")
    print("\n| path | workers | images/s | peak memory (PSS, MB) | notes |\n|---|---|---|---|---|")
    for path, workers in (("memory", 0), ("folder", 1), ("folder", 2), ("shards", 1), ("shards", 2)):
        r = run_one(path, str(workers), str(a.size), str(a.batches), "0")
        note = f"decoding {r['images']} images once took {r['load_seconds']:.0f}s" if path == "memory" else ""
        print(f"| {path} | {workers} | {r['images_per_second']:.0f} | {r['peak_mb']:.0f} | {note} |", flush=True)
    print(f"\nwhole streamed epoch (shards, 2 workers, batch {BATCH}, {a.size}px): peak memory by dataset size")
    print("| training images | images/s | peak memory (PSS, MB) |\n|---|---|---|")
    for limit in (a.images // 4, a.images):
        r = run_one("shards", "2", str(a.size), "0", str(limit))
        print(f"| {r['images']} | {r['images_per_second']:.0f} | {r['peak_mb']:.0f} |", flush=True)
    load = os.getloadavg()
    print(f"# load average {load[0]:.2f} at the end (other processes share these 2 cores)")


if __name__ == "__main__":
    main()
