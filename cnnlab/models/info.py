"""Cost figures of a model: parameters, size, multiply-adds, eq. 4.7 complexity, activation memory.

``model_report(name, in_channels, image_size)`` (``image_size``: a side or (H, W)) builds the model
on PyTorch's ``meta`` device (shapes only, no memory, so VGG-19's 144M parameters cost nothing) and
runs one forward pass in eval mode with forward hooks on every leaf layer:

* ``macs``: multiply-adds per image of the convolution and linear layers, counted from the
  shapes each layer actually saw: out_h * out_w * out_channels * (in_channels / groups) * k_h * k_w
  for a convolution, in_features * out_features for a linear layer. Normalization,
  activations, pooling and additions are not counted (they are a few percent at most).
* ``complexity_eq47``: the thesis's measure eq. 4.7, sum over convolutional layers of
  n_{l-1} s_l^2 n_l m_l^2 (n_{l-1} = input maps each filter sees, i.e. in_channels / groups;
  s_l filter size; n_l filters; m_l output map size), and ``complexity_vs_alexnet``, its ratio to
  AlexNet's (Table 4.2 with the original two-group split, 3x224x224) -- the "Complexity"
  column of thesis Table 4.7.
* ``activations_mb``: memory a training step keeps for the backward pass, for a batch of
  ``batch_size`` images in fp32: the input plus the output of every leaf layer, excluding
  outputs that share memory with their input (in-place activations, identity, flatten).
  Concatenations and residual additions, which are not layers, are not counted.
* ``peak_activation_mb``: the inference peak for the batch when intermediate results are freed
  as soon as possible: the largest input + output of a single layer.
* ``size_mb`` / ``size_mib``: parameters and buffers in fp32, in 10^6 bytes / 2^20 bytes (the
  papers' "MB" are MiB: VGG-16's 138M parameters are 528 MiB in thesis Table 4.7).
* ``by_type``: multiply-adds and parameters per layer kind (conv 1x1, depthwise, conv kxk, fc),
  as in the MobileNet resource table (efficient-cnn-training-methods.md Table 2).

* ``layers``: the layers that output feature maps [C, H, W], by the dotted name PyTorch gives
  them (``model.named_modules()``, e.g. ``blocks.3`` or ``blocks.3.residual.0``), with their
  shapes -- the names ``cnnlab features RUN IMAGE --layer NAME`` takes. The report lists the
  first two levels of the tree; deeper layers are accepted by the same dotted names.
* ``data_path`` (images only): what feeding the model this input costs on the in-memory and the
  stream data paths (:func:`cnnlab.data.path_costs.input_costs`: bytes per image and for 10k/100k/1M
  images, batches in flight, decode rate).

``format_report`` renders the dict for ``cnnlab models --info NAME --input 3x32x32`` (or ``1x28x36``: H x W).
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..sizes import as_hw, loader_size, size_text
from .layers import TiedLayer
from .registry import MODELS, count_parameters, create_model

BYTES_FP32 = 4
_NO_NEW_MEMORY = (nn.Identity, nn.Flatten)


def _layer_kind(m: nn.Module) -> str | None:
    if isinstance(m, TiedLayer):  # a tied decoder layer: the weights are another layer's
        return "fc (tied)" if m.op is F.linear else "conv1d (tied)"
    if isinstance(m, nn.Linear):
        return "fc"
    if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d)):  # 1-D signals (cnnlab.models.signal)
        return f"conv1d{'T' if isinstance(m, nn.ConvTranspose1d) else ''} k{m.kernel_size[0]}"
    if isinstance(m, nn.Conv2d):
        kh, kw = m.kernel_size
        if m.groups > 1 and m.groups == m.in_channels:
            return f"conv dw {kh}x{kw}"
        if m.groups > 1:
            return f"conv {kh}x{kw} grouped"
        return f"conv {kh}x{kw}"
    return None


def count_costs(model: nn.Module, in_channels: int, image_size, batch_size: int = 1,
                length: int | None = None) -> dict:
    """MACs, eq. 4.7, activation memory and per-kind breakdown of ``model`` for one forward pass.

    The model may live on the ``meta`` device (preferred: nothing is computed) or the CPU. ``image_size``:
    a side or (H, W).
    ``length``: 1-D signals [in_channels, length] instead of images (eq. 4.7 then sums n_{l-1} s n_l m
    over the 1-D convolutions, its 1-D analogue).
    """
    device = next(iter(model.parameters()), torch.empty(0)).device
    macs = eq47 = 0
    act_elems = in_channels * (length if length else math.prod(as_hw(image_size)))  # the input batch is kept too
    peak_elems = 0
    by_type: dict[str, dict[str, int]] = {}

    def hook(m: nn.Module, inputs, output) -> None:
        nonlocal macs, eq47, act_elems, peak_elems
        if not isinstance(output, torch.Tensor):
            return
        tensors = inputs[:1] if isinstance(m, TiedLayer) else inputs  # a tied layer's other inputs are weights
        in_elems = sum(t[0].numel() for t in tensors if isinstance(t, torch.Tensor))
        out_elems = output[0].numel()
        peak_elems = max(peak_elems, in_elems + out_elems)
        if not (isinstance(m, _NO_NEW_MEMORY) or getattr(m, "inplace", False)):
            act_elems += out_elems
        kind = _layer_kind(m)
        if kind is None:
            return
        if isinstance(m, TiedLayer):  # per output value, one multiply-add per weight of its output unit
            n = output[0].numel() * inputs[1][0].numel()  # linear: out x in; conv1d: C_out L x C_in k
            if m.op is not F.linear:
                eq47 += n
        elif isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            n = output[0].numel() * (m.in_channels // m.groups) * kh * kw
            eq47 += n  # n_{l-1} s^2 n_l m^2 with n_{l-1} = in_channels / groups
        elif isinstance(m, nn.Conv1d):
            n = output[0].numel() * (m.in_channels // m.groups) * m.kernel_size[0]
            eq47 += n
        elif isinstance(m, nn.ConvTranspose1d):  # each input value is spread over k outputs per output channel
            n = inputs[0][0].numel() * (m.out_channels // m.groups) * m.kernel_size[0]
            eq47 += n
        else:
            n = m.in_features * m.out_features * (output[0].numel() // m.out_features)
        macs += n
        entry = by_type.setdefault(kind, {"macs": 0, "params": 0})
        entry["macs"] += n
        entry["params"] += sum(p.numel() for p in m.parameters(recurse=False))

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    _probe(model, in_channels, image_size, device, handles, length)
    return {
        "macs": macs,
        "complexity_eq47": eq47,
        "activations_mb": act_elems * batch_size * BYTES_FP32 / 1e6,
        "peak_activation_mb": peak_elems * batch_size * BYTES_FP32 / 1e6,
        "by_type": dict(sorted(by_type.items(), key=lambda kv: -kv[1]["macs"])),
    }


def feature_map_layers(model: nn.Module, in_channels: int, image_size,
                       length: int | None = None) -> dict[str, tuple[int, ...]]:
    """Every named layer whose output is a feature map, in the order they run: name -> (C, H, W).

    One forward pass in eval mode (on the meta device when the model is there); a layer that runs
    several times keeps its first output's shape.
    """
    device = next(iter(model.parameters()), torch.empty(0)).device
    shapes: dict[str, tuple[int, int, int] | None] = {}  # filled in the order layers start (a parent first)

    def hooks(name: str):
        def start(m: nn.Module, inputs) -> None:
            shapes.setdefault(name, None)

        def end(m: nn.Module, inputs, output) -> None:
            if isinstance(output, torch.Tensor) and output.dim() == (3 if length else 4) and shapes.get(name) is None:
                shapes[name] = tuple(output.shape[1:])
        return start, end

    handles = []
    for n, m in model.named_modules():
        if n:
            start, end = hooks(n)
            handles += [m.register_forward_pre_hook(start), m.register_forward_hook(end)]
    _probe(model, in_channels, image_size, device, handles, length)
    return {n: shape for n, shape in shapes.items() if shape is not None}


def _probe(model: nn.Module, in_channels: int, image_size, device: torch.device, handles: list,
           length: int | None = None) -> None:
    """One eval-mode forward pass of a single zero image, so the hooks behind ``handles`` see every
    layer; the hooks are removed and the model's train/eval mode restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            shape = (length,) if length else as_hw(image_size)  # a 1-D signal, or an image H x W
            model(torch.zeros(1, in_channels, *shape, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)


def _build(name: str, num_classes: int, in_channels: int, image_size, options: dict,
           length: int | None = None) -> nn.Module:
    """Build on the meta device when possible (instant, no memory), else on the CPU."""
    size = {"length": length} if length else {"image_size": image_size}
    try:
        with torch.device("meta"):
            return create_model(name, num_classes, in_channels, **size, **options)
    except (NotImplementedError, RuntimeError):
        return create_model(name, num_classes, in_channels, **size, **options)


def _costs(model: nn.Module, in_channels: int, image_size, batch_size: int, length: int | None = None) -> dict:
    try:
        return count_costs(model, in_channels, image_size, batch_size, length)
    except (NotImplementedError, RuntimeError):
        if next(iter(model.parameters()), torch.empty(0)).device.type != "meta":
            raise
        return count_costs(model.to_empty(device="cpu"), in_channels, image_size, batch_size, length)


@lru_cache(maxsize=1)
def alexnet_complexity() -> int:
    """Eq. 4.7 of AlexNet as in thesis Table 4.7's reference: two-group split, 3x224x224."""
    model = _build("alexnet", 1000, 3, 224, {"groups": 2})
    return _costs(model, 3, 224, 1)["complexity_eq47"]


def model_report(name: str, in_channels: int = 3, image_size: int | tuple[int, int] = 32, num_classes: int = 10,
                 batch_size: int = 128, **options) -> dict:
    """Cost figures of registered model ``name`` for ``in_channels x H x W`` inputs (``image_size``: a side
    S for S x S, or (H, W)); a signal model, :mod:`cnnlab.models.signal`, or ``length=L`` given: 1-D
    signals ``in_channels x L``, for a signal model ``image_size`` read as the length.

    Keys: name, source, input, num_classes, batch_size, options, params, size_mb, size_mib,
    macs, complexity_eq47, complexity_vs_alexnet, activations_mb, peak_activation_mb, by_type, layers,
    data_path (None for signals).
    """
    from ..data.path_costs import input_costs

    entry = MODELS.entry(name)
    length = options.pop("length", None)
    if length is None and entry.meta.get("signal"):
        length = int(image_size)
    if length is None:
        image_size = loader_size(image_size)  # an int when square, as every builder has always taken
    model = _build(entry.name, num_classes, in_channels, image_size, options, length)
    params = count_parameters(model)
    size_bytes = sum(t.numel() * BYTES_FP32 for t in list(model.parameters()) + list(model.buffers())
                     if t.is_floating_point())
    costs = _costs(model, in_channels, image_size, batch_size, length)
    try:
        layers = feature_map_layers(model, in_channels, image_size, length)
    except (NotImplementedError, RuntimeError):  # an op without a meta kernel: the cost pass moved it to the CPU
        layers = feature_map_layers(model.to_empty(device="cpu"), in_channels, image_size, length)
    return {
        "name": entry.name,
        "source": entry.meta.get("source", ""),
        "input": f"{in_channels}x{length}" if length else f"{in_channels}x{size_text(image_size)}",
        "num_classes": num_classes,
        "batch_size": batch_size,
        "options": dict(options),
        "params": params,
        "size_mb": size_bytes / 1e6,
        "size_mib": size_bytes / 2 ** 20,
        "macs": costs["macs"],
        "complexity_eq47": costs["complexity_eq47"],
        "complexity_vs_alexnet": costs["complexity_eq47"] / alexnet_complexity(),
        "activations_mb": costs["activations_mb"],
        "peak_activation_mb": costs["peak_activation_mb"],
        "by_type": costs["by_type"],
        "layers": layers,
        "data_path": None if length else input_costs(in_channels, image_size, batch_size),
    }


def human(n: float) -> str:
    """1234567 -> '1.23M'."""
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.3g}"


def format_report(d: dict) -> str:
    """Human-readable lines for one ``model_report`` dict."""
    opts = ", ".join(f"{k}={v}" for k, v in d.get("options", {}).items())
    lines = [
        f"{d['name']} @ {d['input']}, {d['num_classes']} classes" + (f" ({opts})" if opts else ""),
        f"  source              {d['source'] or '-'}",
        f"  parameters          {d['params']:,} ({human(d['params'])})",
        f"  size (fp32)         {d['size_mb']:.2f} MB ({d['size_mib']:.2f} MiB)",
        f"  multiply-adds       {human(d['macs'])} per image (conv + linear layers)",
        f"  complexity eq. 4.7  {human(d['complexity_eq47'])} = {d['complexity_vs_alexnet']:.3g}x AlexNet "
        f"(thesis Table 4.7 column)",
        f"  activations         {d['activations_mb']:.1f} MB for a batch of {d['batch_size']} "
        f"(kept for backward in training)",
        f"  peak activation     {d['peak_activation_mb']:.1f} MB for a batch of {d['batch_size']} "
        f"(inference: largest layer input + output)",
    ]
    total = d["macs"] or 1
    params = sum(v["params"] for v in d["by_type"].values()) or 1
    for kind, v in d["by_type"].items():
        lines.append(f"    {kind:<16}  {100 * v['macs'] / total:5.1f}% of mult-adds  "
                     f"{100 * v['params'] / params:5.1f}% of weights")
    if d.get("layers"):
        import textwrap

        shown = [f"{n}({'x'.join(map(str, shape))})" for n, shape in d["layers"].items() if n.count(".") <= 1]
        lines.append("  feature-map layers  (for `cnnlab features --layer NAME`; deeper ones by dotted path, "
                     "e.g. a.0.b)")
        lines += textwrap.wrap(", ".join(shown), width=100, initial_indent="    ", subsequent_indent="    ")
    if d.get("data_path"):
        from ..data.path_costs import format_input_costs

        lines += format_input_costs(d["data_path"])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """``python -m cnnlab.models.info NAME [--input CxHxW|CxL] [--classes N] [--batch-size B]``: the report
    of ``cnnlab models --info`` (the same parser and printer)."""
    import argparse

    from .catalog import print_model_info

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name")
    p.add_argument("--input", default="3x32x32", help="CxHxW (H may differ from W) or CxL for a 1-D signal")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    a = p.parse_args(argv)
    print_model_info(a.name, a.input, a.classes, a.batch_size)


if __name__ == "__main__":
    main()
