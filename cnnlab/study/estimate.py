"""The dry run (``--dry-run``): every planned run with its settings and status, and a rough time
estimate measured from a few training steps of its model at its input size on this machine.

Dataset sizes come from the dataset registry's numbers (:class:`cnnlab.data.base.DatasetSpec`),
so nothing is loaded; a dataset of unknown size (a user's folder) gets no estimate.
"""
from __future__ import annotations

import json
import math
import time
from typing import Any, Callable

from ..config import TrainConfig
from ..errors import CnnlabError
from ..runs import SUMMARY
from ..selection import planned_epochs
from ..sizes import as_hw
from .metrics import format_seconds
from .plan import Plan, PlannedRun, run_status

# the input the model is measured on when the registry cannot say (a folder is resized to this)
FALLBACK_CHANNELS, FALLBACK_SIZE, FALLBACK_CLASSES = 3, 32, 10
# the dry run lists (and measures) at most this many runs; the cost of the rest is extrapolated from
# them, so a spec of a million variants answers in seconds instead of measuring for hours
MAX_LISTED_RUNS = 200


def dataset_facts(cfg: TrainConfig) -> tuple[int | None, int | None, int, tuple[int, int], int]:
    """(train images, test images, channels, (H, W), classes) of a run, from the registry, without loading."""
    from ..data import DATASETS

    spec = DATASETS.get(cfg.data)
    n_train, n_test = spec.train_size, spec.test_size
    c = cfg.channels or spec.channels or FALLBACK_CHANNELS
    side = as_hw(cfg.image_size or spec.size or FALLBACK_SIZE)  # (H, W)
    classes = spec.num_classes or FALLBACK_CLASSES
    if n_train is not None and cfg.train_subset:
        n_train = min(n_train, cfg.train_subset)
    return n_train, n_test, c, side, classes


def _seconds_per_image(cfg: TrainConfig, c: int, side: tuple[int, int], classes: int, threads: int,
                       cache: dict[Any, float]) -> float:
    """Measure a few CPU/GPU training steps of the model at the run's input size (cached per model)."""
    import torch

    from ..models import create_model

    # the activation, initialization and dropout hardly change the cost: measure once per architecture
    shape_kwargs = {k: v for k, v in cfg.model_kwargs().items() if k not in ("act", "init", "dropout")}
    key = (cfg.model, json.dumps(shape_kwargs, sort_keys=True, default=str), c, side, classes, threads, cfg.device)
    if key in cache:
        return cache[key]
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        device = torch.device("cuda" if cfg.device != "cpu" and torch.cuda.is_available() else "cpu")
        model = create_model(cfg.model, classes, c, image_size=side, **cfg.model_kwargs()).to(device)
        model.train()
        b = max(2, min(cfg.batch_size, 16))
        x = torch.randn(b, c, *side, device=device)
        y = torch.randint(0, classes, (b,), device=device)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)

        reconstruct = cfg.objective.partition(":")[0] == "reconstruct"

        def step():
            opt.zero_grad(set_to_none=True)
            out = model(x)
            loss = (out - x).pow(2).sum() if reconstruct else torch.nn.functional.cross_entropy(out, y)
            loss.backward()
            opt.step()

        step()  # the first step pays for allocation and kernel selection: not timed
        t0 = time.perf_counter()
        n = 1
        for _ in range(n):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        per = (time.perf_counter() - t0) / (n * b)
    except CnnlabError:
        raise
    except Exception as e:  # noqa: BLE001 - a bad shape is a config problem of that variant
        raise CnnlabError(f"model {cfg.model!r} with {cfg.model_kwargs()} on {c}x{side[0]}x{side[1]}: "
                          f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    finally:
        torch.set_num_threads(old)
    cache[key] = per
    return per


def _epochs_text(cfg: TrainConfig, n_train: int | None = None) -> str:
    """The run length as planned: --epochs, else --steps or the --min-steps default for the data size."""
    if cfg.epochs is not None:
        return f"{cfg.epochs:g}"
    if cfg.steps is not None:
        return f"{cfg.steps} steps"
    return f"auto ({planned_epochs(cfg, n_train):g})" if n_train else "auto"


def estimate_run(cfg: TrainConfig, threads: int, cache: dict[Any, float]) -> float | None:
    """Seconds one run takes (training plus its evaluations), or None when the data size is unknown."""
    n_train, n_test, c, side, classes = dataset_facts(cfg)
    if cfg.features_from:  # a two-stage run trains on codes [D, 1, 1] (encoding them once is cheap)
        c, side = code_size(cfg.features_from), (1, 1)
    per = _seconds_per_image(cfg, c, side, classes, threads, cache)
    if n_train is None:
        return None
    epochs = planned_epochs(cfg, n_train)  # --epochs, or what --steps / --min-steps make of the data size
    seconds = epochs * n_train * per
    # a pre-training stage: CD-k per layer costs about a training step of the net per image and step
    seconds += cfg.pretrain_epochs * n_train * per * (1 + cfg.cd_k) / 2
    if n_test:
        evals = math.ceil(epochs) // cfg.eval_every + 1
        seconds += evals * n_test * per / 3  # a forward pass costs about a third of a training step
    return seconds


def code_size(features_from: str) -> int:
    """The code width of an autoencoder run (from its meta.json, or its config when it has not run yet);
    64, the paper's, when neither is there yet."""
    from pathlib import Path

    from ..runs import CONFIG, META

    run = Path(features_from)
    try:
        if (run / META).is_file():
            options = json.loads((run / META).read_text()).get("model_options", {})
        else:
            options = TrainConfig.from_yaml(run / CONFIG).model_kwargs()
        hidden = options.get("hidden", [64])  # a list, or "256,64" / "256x64" as given on the command line
        if isinstance(hidden, str):
            hidden = [h for h in hidden.replace("x", ",").split(",") if h.strip()]
        return int(hidden[-1] if isinstance(hidden, (list, tuple)) else hidden)
    except (CnnlabError, OSError, ValueError, TypeError):
        return 64


def _cost(plan: Plan, run: PlannedRun, status: str, measure: bool, cache: dict[Any, float],
          problems: list[str]) -> tuple[str, float | None]:
    """(the est. time column, seconds still to spend or None) of one run."""
    if status == "done":
        try:
            ran = float(json.loads((run.run_dir / SUMMARY).read_text()).get("train_seconds") or 0)
        except (OSError, ValueError):
            ran = None
        return f"{format_seconds(ran)} (ran)", 0.0
    if not measure:
        return "-", 0.0
    try:
        est = estimate_run(run.config, plan.threads, cache)
    except CnnlabError as e:
        problems.append(f"{run.variant}: {e}")
        return "error", 0.0
    return format_seconds(est), est


def print_plan(plan: Plan, log: Callable[[str], None] = print, measure: bool = True) -> dict[str, Any]:
    """The dry run: variants, seeds, key settings, status and estimated cost of each run."""
    spec = plan.spec
    cfg0 = plan.runs[0].config
    log(f"study {spec.name} ({plan.budget} budget): {len(spec.variants)} variants x "
        f"{len(plan.runs) // max(1, len(spec.variants))} seed(s) = {len(plan.runs)} runs -> {plan.study_dir}")
    if spec.reproduces:
        log(f"reproduces: {spec.reproduces}")
    log(f"base: data {cfg0.data}, model {cfg0.model}, epochs {_epochs_text(cfg0)}, batch {cfg0.batch_size}, "
        f"train_subset {cfg0.train_subset or 'all'}, opt {cfg0.opt} lr {cfg0.lr:g}, sched {cfg0.sched}; "
        f"{plan.jobs} job(s) x {plan.threads} thread(s)")
    rows = [("variant", "seed", "settings", "epochs", "train imgs", "status", "est. time")]
    cache: dict[Any, float] = {}
    total, unknown, problems = 0.0, 0, []
    if plan.cv_runs:
        pending = [v for v, sel in plan.selection.items() if sel["chosen"] is None]
        log(f"select: {len(plan.cv_runs)} cross-validation runs first; "
            + (f"the runs of {', '.join(pending)} take the setting they choose" if pending else
               "settings chosen: " + ", ".join(f"{v} {sel['chosen']}" for v, sel in plan.selection.items())))
    listed = plan.all_runs[:MAX_LISTED_RUNS]
    for run in listed:
        status = run_status(plan, run)
        cost, est = _cost(plan, run, status, measure, cache, problems)
        total += est or 0
        unknown += est is None
        try:
            n_train = dataset_facts(run.config)[0]
        except CnnlabError as e:
            n_train = None
            problems.append(f"{run.variant}: {e}")
        settings = spec.variant(run.variant).settings()
        if run.role == "cv":
            settings += f" + {run.setting}, cv_fold={run.config.cv_fold}"
        rows.append((run.variant, str(run.seed), settings, _epochs_text(run.config, n_train),
                     str(n_train if n_train is not None else "?"), status, cost))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        log("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    rest = len(plan.all_runs) - len(listed)
    if rest:  # not listed, not measured: their cost taken as the listed runs' average
        log(f"  ... and {rest:,} more runs (not listed; the estimate takes each to cost the listed runs' average)")
        total += rest * total / max(1, len(listed) - unknown)
    if measure:
        more = f" (+{unknown} runs of unknown size)" if unknown else ""
        log(f"estimated cost of the runs to do: {format_seconds(total)} of compute, about "
            f"{format_seconds(total / plan.jobs)} wall time with --jobs {plan.jobs}{more} "
            f"(measured from a few training steps; rough)")
    for p in dict.fromkeys(problems):
        log(f"problem: {p}")
    return {"total_seconds": total, "problems": problems}
