"""What a layer sees: the feature maps of one layer for one image, as a PNG grid (sadie Fig. 6).

``cnnlab features RUN IMAGE --layer NAME`` reloads a run's model, preprocesses the image
exactly as the run's training data (:func:`cnnlab.inference.read_images`, the run's mean and
std), runs it through the model in evaluation mode and draws the first 64 channels of the
layer's output, each as a grey image scaled to its own minimum and maximum (a map's absolute
level differs from channel to channel; the paper's figure shows each channel's pattern).
Layers are named as ``cnnlab models --info MODEL`` lists them: PyTorch's dotted module paths.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .errors import CnnlabError, suggest
from . import runs

MAX_MAPS = 64


def layer_output(model: torch.nn.Module, x: torch.Tensor, layer: str) -> torch.Tensor:
    """The output of the module named ``layer`` when ``model`` (left in its mode) runs on ``x``."""
    modules = dict(model.named_modules())
    modules.pop("", None)
    if layer not in modules:
        hint = suggest(layer, modules, n=3)
        raise CnnlabError(f"--layer {layer!r}: no such layer in this model{'; ' + hint if hint else ''} "
                          f"(`cnnlab models --info MODEL` lists the layers)")
    captured: list[torch.Tensor] = []
    handle = modules[layer].register_forward_hook(lambda m, inputs, output: captured.append(output))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    if not captured:
        raise CnnlabError(f"--layer {layer!r}: the layer did not run for this input")
    out = captured[0]
    if not isinstance(out, torch.Tensor) or out.dim() != 4:
        shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise CnnlabError(f"--layer {layer!r} outputs {shape}, not feature maps [N, C, H, W]; choose a "
                          f"convolutional layer or block")
    return out


def tile_maps(maps: torch.Tensor, gap: int = 1) -> np.ndarray:
    """Up to 64 maps [C, h, w] as one grey mosaic (rows x cols tiles, ``gap`` pixels of 1.0 between them),
    each map scaled to [0, 1] by its own minimum and maximum (a constant map is 0)."""
    maps = maps[:MAX_MAPS].detach().float().cpu()
    n, h, w = maps.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    lo = maps.amin((1, 2), keepdim=True)
    span = maps.amax((1, 2), keepdim=True) - lo
    scaled = torch.where(span > 0, (maps - lo) / span.clamp_min(1e-12), torch.zeros_like(maps)).numpy()
    mosaic = np.ones((rows * (h + gap) - gap, cols * (w + gap) - gap), dtype=np.float32)
    for i, m in enumerate(scaled):
        r, c = divmod(i, cols)
        mosaic[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = m
    return mosaic


def plot_feature_maps(maps: torch.Tensor, image: torch.Tensor, path: str | Path, title: str = "") -> Path:
    """Save the input ``image`` (uint8 [C, H, W]) beside up to 64 ``maps`` [C, h, w] as a grey mosaic."""
    from .plots import pyplot, save_figure

    plt = pyplot()
    mosaic = tile_maps(maps)
    fig, (ax_in, ax_maps) = plt.subplots(1, 2, figsize=(11, 6), gridspec_kw={"width_ratios": [1, 2.2]})
    shown = image.permute(1, 2, 0).cpu().numpy()
    ax_in.imshow(shown[:, :, 0] if shown.shape[2] == 1 else shown, cmap="gray", vmin=0, vmax=255)
    ax_in.set_title("input")
    ax_maps.imshow(mosaic, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax_maps.set_title(f"{min(len(maps), MAX_MAPS)} feature maps (row by row from channel 0), each scaled to its "
                      f"own range", fontsize=9)
    for ax in (ax_in, ax_maps):
        ax.axis("off")
    if title:
        fig.suptitle(title)
    save_figure(fig, path, dpi=100, tight=True)
    return Path(path)


def show_features(run_dir: str | Path, image_path: str | Path, layer: str, out: str | Path | None = None,
                  device: str = "auto") -> Path:
    """Draw ``layer``'s feature maps of a run's model for one image file; returns the PNG's path.

    Default output: ``<run>/features/<image name>-<layer>.png``.
    """
    from .data.loader import to_model_input
    from .inference import load_run, read_images

    run = load_run(run_dir, device)
    _, images = read_images([(Path(image_path), True)], runs.image_hw(run.meta), run.meta["in_channels"])
    shape = (1, -1, 1, 1)
    mean = torch.as_tensor(run.meta["mean"], dtype=torch.float32, device=run.device).view(shape)
    std = torch.as_tensor(run.meta["std"], dtype=torch.float32, device=run.device).view(shape)
    x = to_model_input(images.to(run.device), mean, std)
    with run.runtime.autocast():
        maps = layer_output(run.model, x, layer)[0]
    c, h, w = maps.shape
    out = Path(out) if out is not None else run.run_dir / "features" / f"{Path(image_path).stem}-{layer}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    shown = f"first {MAX_MAPS} of {c}" if c > MAX_MAPS else f"{c}"
    return plot_feature_maps(maps, images[0], out, f"{run.meta['model']} layer {layer}: {shown} maps, {h}x{w}")
