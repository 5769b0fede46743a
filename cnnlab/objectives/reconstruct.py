"""``reconstruct``: an autoencoder's objective, the sum of squared reconstruction errors.

The target is the model's own (scaled) input, and the loss is the paper's SSE per image,
averaged over the batch (so it does not grow with the batch size)::

    loss = (1 / B) * sum_b sum_i (f(x_b)_i - x_b,i)^2

with x the input after ``--input-scaling`` (the paper's MinMax: ``minmax``), i over all C*H*W
values. Per epoch it reports ``train_loss`` (that SSE on the training batches) and on the test
split ``test_loss`` (the same SSE) and ``test_mse`` (mean squared error per value after undoing
the scaling, i.e. on the [0, 1] pixel scale, comparable between scalings). At the end it writes
``reconstructions.png`` (test images above their reconstructions).

**Denoising** (``--objective reconstruct:denoise=salt-pepper:0.2``): the inputs are corrupted
(:mod:`cnnlab.data.corrupt`: a fraction 0.2 of the pixels set to black or white, on the pixel
scale before the input scaling, fresh noise every batch) while the targets stay clean: a
denoising autoencoder (paper Sec. 2.5, trained with "20% noise"). Evaluation then also reports
``test_denoise_loss`` / ``test_denoise_mse`` (corrupted test images, with a fixed seed, against
the clean ones) and writes ``denoising.png``: test images at 0-50% noise and their
reconstructions, as the paper's Fig. 2.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..data.corrupt import Corruption, corrupt_images, parse_corruption
from ..data.loader import per_channel_or_element, to_model_input
from ..data.scaling import as_unit_float
from ..errors import CnnlabError
from . import register_objective
from .base import EvalSetup, Objective

NOISE_LEVELS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)  # denoising.png, as the paper's Fig. 2 / Table 2
SHOWN = 10  # test images in the plots


@register_objective("reconstruct")
class Reconstruct(Objective):
    """Sum of squared reconstruction errors; the target is the (clean) input itself."""

    name = "reconstruct"
    headline = None  # no accuracy to follow: best_test_acc and --target-acc do not apply

    def __init__(self, denoise: str | None = None):
        self.corruption: Corruption | None = parse_corruption(denoise, "--objective reconstruct:denoise") \
            if denoise else None
        self._scaling: tuple[torch.Tensor, torch.Tensor] | None = None
        self._mean: tuple[float, ...] = ()
        self._std: tuple[float, ...] = ()

    @classmethod
    def from_config(cls, cfg, denoise: str | None = None) -> "Reconstruct":
        return cls(denoise)

    def prepare(self, ds) -> None:
        self._mean, self._std = tuple(ds.mean), tuple(ds.std)  # to corrupt pixels, not scaled values
        self._scaling = None

    # ------------------------------------------------------------------ training
    def inputs_and_targets(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.corruption is None:
            return x, x
        mean, std = self._scaling_like(x)
        pixels = (x * std + mean).clamp_(0.0, 1.0)
        return (self.corruption(pixels) - mean) / std, x

    def _scaling_like(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self._mean:
            raise RuntimeError("Reconstruct.prepare(ds) must be called before corrupting batches")
        if self._scaling is None or self._scaling[0].device != x.device:
            shape = (1, -1, 1, 1)
            self._scaling = (torch.as_tensor(self._mean, dtype=torch.float32, device=x.device).view(shape),
                             torch.as_tensor(self._std, dtype=torch.float32, device=x.device).view(shape))
        return per_channel_or_element(self._scaling[0], x), per_channel_or_element(self._scaling[1], x)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if output.shape != target.shape:
            raise CnnlabError(f"--objective reconstruct needs a model whose output has its input's shape "
                              f"(e.g. --model autoencoder); got output {tuple(output.shape[1:])} for input "
                              f"{tuple(target.shape[1:])}")
        return (output.float() - target.float()).pow(2).flatten(1).sum(1).mean()

    def batch_sums(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}  # train_loss (the loop's running mean of the loss) is already the SSE per image

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, model, images, labels, setup: EvalSetup) -> dict[str, float]:
        metrics = reconstruction_error(model, images, images, setup)
        if self.corruption is not None:
            noisy = corrupt_images(images, self.corruption, seed=0)
            metrics.update({k.replace("test_", "test_denoise_"): v
                            for k, v in reconstruction_error(model, noisy, images, setup).items()})
        return metrics

    def final_report(self, model, ds, setup: EvalSetup, run_dir: Path) -> dict[str, Any]:
        from .. import runs

        metrics = self.evaluate(model, ds.test_images, ds.test_labels, setup)
        shown = example_indices(ds.test_labels, SHOWN)
        clean = ds.test_images[shown]
        rows = [("original", clean)]
        if self.corruption is not None:
            noisy = corrupt_images(clean, self.corruption, seed=0)
            rows += [(f"{self.corruption}", noisy), ("reconstruction", reconstruct_pixels(model, noisy, setup))]
        else:
            rows.append(("reconstruction", reconstruct_pixels(model, clean, setup)))
        if clean.dim() == 3:  # 1-D signals: curves, not a mosaic (cnnlab.data.signals)
            from ..data.signals import plot_signal_rows

            plot_signal_rows(rows, run_dir / runs.RECONSTRUCTIONS, "test signals and their reconstructions")
        else:
            plot_image_rows(rows, run_dir / runs.RECONSTRUCTIONS, "test images and their reconstructions")
        if self.corruption is not None:
            rows = []
            for level in NOISE_LEVELS:
                noisy = corrupt_images(clean, Corruption(self.corruption.kind, level), seed=0)
                rows += [(f"{100 * level:.0f}% noise", noisy), ("denoised", reconstruct_pixels(model, noisy, setup))]
            plot_image_rows(rows, run_dir / runs.DENOISING, f"{self.corruption.kind} noise and the reconstructions")
        return metrics

    def describe(self, summary: dict[str, Any]) -> str:
        text = f"test reconstruction SSE {summary['test_loss']:.4g} per image (MSE {summary['test_mse']:.4g} per pixel)"
        if "test_denoise_loss" in summary:
            text += f", from {self.corruption}: SSE {summary['test_denoise_loss']:.4g}"
        return text


# --------------------------------------------------------------------------- helpers


def _scaling(setup: EvalSetup) -> tuple[torch.Tensor, torch.Tensor]:
    device, shape = setup.runtime.device, (1, -1, 1, 1)
    return (torch.as_tensor(setup.mean, dtype=torch.float32, device=device).view(shape),
            torch.as_tensor(setup.std, dtype=torch.float32, device=device).view(shape))


@torch.no_grad()
def _outputs(model: torch.nn.Module, inputs: torch.Tensor, setup: EvalSetup):
    """Yield (chunk start, scaled model output [b, C, H, W] float32) over ``inputs`` in eval mode."""
    mean, std = _scaling(setup)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(inputs), setup.batch_size):
            x = to_model_input(inputs[start:start + setup.batch_size].to(setup.runtime.device), mean, std,
                               setup.runtime.channels_last)
            with setup.runtime.autocast():
                out = model(x).float()
            yield start, out
    finally:
        model.train(was_training)


def reconstruction_error(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                         setup: EvalSetup) -> dict[str, float]:
    """``test_loss``: mean SSE per image between the model's outputs for uint8 ``inputs`` and the scaled
    uint8 ``targets``; ``test_mse``: mean squared error per value on the [0, 1] pixel scale."""
    mean, std = _scaling(setup)
    sse = torch.zeros((), dtype=torch.float64)
    pixel_se = torch.zeros((), dtype=torch.float64)
    count = 0
    for start, out in _outputs(model, inputs, setup):
        t = targets[start:start + len(out)].to(out.device)
        target = to_model_input(t, mean, std)
        sse += (out - target).pow(2).sum().double().cpu()
        pixels = out * per_channel_or_element(std, out) + per_channel_or_element(mean, out)
        pixel_se += (pixels - as_unit_float(t)).pow(2).sum().double().cpu()
        count += len(out)
    n = max(count, 1)
    return {"test_loss": (sse / n).item(), "test_mse": (pixel_se / (n * inputs[0].numel())).item()}


def reconstruct_pixels(model: torch.nn.Module, images: torch.Tensor, setup: EvalSetup) -> torch.Tensor:
    """The model's reconstructions of uint8 ``images`` as pixels in [0, 1] (scaling undone, clipped), on the CPU."""
    mean, std = _scaling(setup)
    out = [(o * per_channel_or_element(std, o) + per_channel_or_element(mean, o)).cpu()
           for _, o in _outputs(model, images, setup)]
    if images.dtype != torch.uint8:  # features / 1-D signals keep their own units
        return torch.cat(out)
    out = [o.clamp(0, 1) for o in out]
    return torch.cat(out)


def example_indices(labels: torch.Tensor, n: int) -> torch.Tensor:
    """Up to ``n`` test indices, the first image of each class first (so every class is shown)."""
    firsts = [int((labels == c).nonzero()[0]) for c in labels.unique().tolist()][:n]
    rest = [i for i in range(len(labels)) if i not in set(firsts)][: n - len(firsts)]
    return torch.tensor(sorted(firsts) + rest, dtype=torch.long)


def plot_image_rows(rows: list[tuple[str, torch.Tensor]], path: Path, title: str = "") -> None:
    """One mosaic of images, a labelled row per entry; uint8 or [0, 1] float images [N, C, H, W] of one shape.

    Drawn as a single picture (one ``imshow``), not a subplot per image: a 12 x 10 grid of subplots
    takes matplotlib seconds."""
    from ..plots import pyplot, save_figure

    plt = pyplot()
    c, h, w = rows[0][1].shape[1:]
    cols, pad = max(len(images) for _, images in rows), max(1, h // 8)
    mosaic = torch.ones(len(rows) * (h + pad) - pad, cols * (w + pad) - pad, c)  # white gaps
    for r, (_, images) in enumerate(rows):
        pixels = images.float() / 255 if images.dtype == torch.uint8 else images.float()
        for i, img in enumerate(pixels.clamp(0, 1)):
            y, x = r * (h + pad), i * (w + pad)
            mosaic[y:y + h, x:x + w] = img.permute(1, 2, 0)
    fig, ax = plt.subplots(figsize=(0.6 * cols + 1.6, 0.6 * len(rows) + 0.6))
    ax.imshow((mosaic[:, :, 0] if c == 1 else mosaic).numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_yticks([r * (h + pad) + h / 2 for r in range(len(rows))], [label for label, _ in rows], fontsize=8)
    ax.set_xticks([])
    for side in ax.spines.values():
        side.set_visible(False)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
