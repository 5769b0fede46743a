"""What each data path costs, for ``cnnlab datasets``: memory held, and what is decoded when.

The in-memory path (:mod:`cnnlab.data.loader`) holds the uint8 pixels of both splits, decoded once;
the stream path (:mod:`cnnlab.data.stream`) holds the batches in flight and a small per-image index,
and decodes every training image every epoch. The figures are arithmetic on the dataset's numbers
(``DatasetSpec``, or a packed folder's manifest), plus one measured decode rate.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import CnnlabError
from .stream import MEMORY_FRACTION, in_memory_bytes, list_folder, total_memory

# images/s one worker decodes + augments (256x256 JPEG -> 128 random-resized crop + flip), measured by
# benchmarks/data_throughput.py on the 2-core AMD EPYC (AVX2) this project runs on, shared at load 10-15
# (README, "Data throughput"): an idle core does several times more
DECODE_PER_WORKER = 79.0
INDEX_BYTES = 28  # per training image: shard id, offset, size, label, order


def path_costs(num_images: int, channels: int, size: int, batch_size: int = 128, workers: int = 2) -> tuple[int, int]:
    """(bytes the in-memory path holds, bytes the stream path holds) for ``num_images`` at CxSxS."""
    in_flight = (workers * 2 + 1) * batch_size * channels * size * size  # prefetch_factor 2 per worker + 1 in use
    return in_memory_bytes(num_images, channels, size), in_flight + INDEX_BYTES * num_images


def cost_report(specs: list, data_dir: str | None = None, batch_size: int = 128, workers: int = 2) -> list[str]:
    """Lines for ``cnnlab datasets``: what each data path costs per dataset (and for ``--data-dir``)."""
    rows = [("data path cost", "in memory", f"stream (batch {batch_size}, {workers} workers)")]
    for spec in specs:
        if spec.channels and spec.size and spec.train_size and spec.test_size and spec.name != "synthetic":
            mem, streamed = path_costs(spec.train_size + spec.test_size, spec.channels, spec.size, batch_size, workers)
            rows.append((spec.name, _gb(mem), _gb(streamed)))
    if data_dir:
        rows += _dir_costs(Path(data_dir).expanduser(), batch_size, workers)
    width = [max(len(r[i]) for r in rows) for i in range(2)]
    decode = f"~{DECODE_PER_WORKER:.0f} images/s per worker measured on a loaded 2-core CPU"
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, width + [0])).rstrip() for r in rows]
    return lines + [
        f"in memory: uint8 pixels of both splits, decoded once at start. stream (--data folder|shards): batches in "
        f"flight + {INDEX_BYTES} B/image index, the same for any dataset size, but every epoch decodes every "
        f"training image ({decode} for 256x256 JPEG, benchmarks/data_throughput.py). --data-path auto streams when "
        f"the in-memory figure exceeds {MEMORY_FRACTION:.0%} of RAM ({_gb(MEMORY_FRACTION * total_memory())} here)."]


def _dir_costs(root: Path, batch_size: int, workers: int) -> list[tuple[str, str, str]]:
    from .folder import DEFAULT_SIZE
    from .shards import MANIFEST, read_manifest

    try:
        if (root / MANIFEST).exists():
            m = read_manifest(root)
            n, c, size = (m["splits"]["train"]["count"] + m["splits"]["test"]["count"], m["channels"],
                          m.get("image_size") or DEFAULT_SIZE)
        else:
            listing = list_folder(root)
            n, c, size = sum(len(p) for p, _ in listing.splits.values()), 3, DEFAULT_SIZE
    except CnnlabError:
        return []
    mem, streamed = path_costs(n, c, size, batch_size, workers)
    return [(f"{root} ({n} images at {c}x{size}x{size})", _gb(mem), _gb(streamed))]


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"
