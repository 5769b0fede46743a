"""What each data path costs, for ``cnnlab datasets`` and ``cnnlab models --info``: memory held, and
what is decoded when.

The in-memory path (:mod:`cnnlab.data.loader`) holds the uint8 pixels of both splits, decoded once;
the stream path (:mod:`cnnlab.data.stream`) holds the batches in flight and a small per-image index,
and decodes every training image every epoch. The figures are arithmetic on the dataset's numbers
(``DatasetSpec``, or a packed folder's manifest) or, for ``models --info``, on the model's input shape
and a few data set sizes (:func:`input_costs`), plus one measured decode rate. Image sizes are a side
or (H, W) (:mod:`cnnlab.sizes`).
"""
from __future__ import annotations

from pathlib import Path

from ..errors import CnnlabError
from ..sizes import size_text
from .stream import MEMORY_FRACTION, in_memory_bytes, list_folder, total_memory

# images/s one worker decodes + augments (256x256 JPEG -> 128 random-resized crop + flip), measured by
# benchmarks/data_throughput.py on the 2-core AMD EPYC (AVX2) this project runs on, shared at load 10-15
# (README, "Data throughput"): an idle core does several times more
DECODE_PER_WORKER = 79.0
INDEX_BYTES = 28  # per training image: shard id, offset, size, label, order
MODEL_INFO_COUNTS = (10_000, 100_000, 1_000_000)  # data set sizes `models --info` prices the in-memory path at


def image_bytes(channels: int, size) -> int:
    """Bytes of one decoded uint8 image C x H x W (``size``: a side or (H, W)), what both paths hold per image
    (the arithmetic of ``stream.in_memory_bytes``, the ``--data-path auto`` rule)."""
    return in_memory_bytes(1, channels, size)


def path_costs(num_images: int, channels: int, size, batch_size: int = 128, workers: int = 2) -> tuple[int, int]:
    """(bytes the in-memory path holds, bytes the stream path holds) for ``num_images`` at C x ``size``."""
    per_image = image_bytes(channels, size)
    in_flight = (workers * 2 + 1) * batch_size * per_image  # prefetch_factor 2 per worker + 1 in use
    return num_images * per_image, in_flight + INDEX_BYTES * num_images


def input_costs(channels: int, size, batch_size: int = 128, workers: int = 2,
                counts: tuple[int, ...] = MODEL_INFO_COUNTS) -> dict:
    """What feeding a model C x ``size`` images costs on each path, for data sets of ``counts`` images:
    ``image_bytes``; ``in_memory`` {count: bytes}; ``stream_in_flight`` (the batches in flight, any data set
    size; the index adds ``INDEX_BYTES`` per image); ``decode_per_s`` (images/s the workers decode, measured)."""
    streamed = {n: path_costs(n, channels, size, batch_size, workers) for n in counts}
    return {"image_bytes": image_bytes(channels, size), "in_memory": {n: m for n, (m, _) in streamed.items()},
            "stream_in_flight": path_costs(0, channels, size, batch_size, workers)[1], "batch_size": batch_size,
            "workers": workers, "decode_per_s": DECODE_PER_WORKER * workers}


def format_input_costs(d: dict) -> list[str]:
    """The ``models --info`` lines of :func:`input_costs` (``cnnlab datasets`` prices whole data sets)."""
    import textwrap

    sizes = ", ".join(f"{_count(n)} images {_gb(b)}" for n, b in d["in_memory"].items())
    epoch = min(d["in_memory"])
    rows = [
        ("data path", f"uint8 input {_bytes(d['image_bytes'])} per image (`cnnlab datasets`: per data set)"),
        ("  in memory", f"{sizes}; decoded once (--data-path auto streams above "
                        f"{_gb(MEMORY_FRACTION * total_memory())} here)"),
        ("  stream", f"{_gb(d['stream_in_flight'])} of batches in flight (batch {d['batch_size']}, {d['workers']} "
                     f"workers) + {INDEX_BYTES} B/image index; decodes every training image every epoch: "
                     f"~{d['decode_per_s']:.0f} images/s ({d['workers']} workers, measured on 256x256 JPEG, "
                     f"loaded 2-core CPU), ~{epoch / d['decode_per_s']:.0f} s per {_count(epoch)} images"),
    ]
    return [line for name, text in rows
            for line in textwrap.wrap(text, 100, initial_indent=f"  {name:<18}  ", subsequent_indent=" " * 22)]


def _count(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 and n % 1_000_000 == 0 else (
        f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n))


def _bytes(n: float) -> str:
    return f"{n / 1e3:.1f} kB" if n >= 1e3 else f"{n:.0f} B"


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
    return [(f"{root} ({n} images at {c}x{size_text(size)})", _gb(mem), _gb(streamed))]


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"
