"""The training recipe: ``train(config)`` goes from a config to a finished run folder.

Read top to bottom, it is the whole recipe, in the order it runs:

1. open the run folder (or reopen it with ``resume``), resolve device and precision, seed;
2. build the parts: data (loaded once, :mod:`cnnlab.data.prepare`; for a two-stage run, the
   codes of a frozen autoencoder, :mod:`cnnlab.two_stage`), model, objective (loss and
   metrics, :mod:`cnnlab.objectives`), optimizer and schedule, EMA, scaler;
3. restore them from the checkpoint when resuming; run a model's pre-training stage
   (a deep belief net's RBMs, :mod:`cnnlab.pretrain`) before fine-tuning begins;
4. loop over epochs: :func:`train_one_epoch`, :func:`evaluate` on the test split, then the
   end of the epoch (metrics row, checkpoint, log line);
5. finish: the objective's full report, weights, plots and ``summary.json`` (written last).

The seams are timm's: :func:`train_one_epoch` and :func:`evaluate` are plain functions,
and what is trained and saved together is one object (:class:`cnnlab.state.TrainingParts`).
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from . import runs
from .checkpoint import check_progress, check_resume_config, load_training_checkpoint, restore_training, \
    save_training, save_weights
from .config import ENGINE_KEYS, RESUME_OVERRIDABLE, TrainConfig
from .data.augment import AugmentConfig
from .data.base import ArrayDataset
from .data.loader import BatchLoader
from .data.prepare import prepare_data
from .data.stream import choose_data_path, open_stream
from .data.split import split_record
from .device import Runtime, resolve_device, seed_everything
from .distributed import DistInfo, all_reduce_sum, batchnorm_text, broadcast_object, init_distributed, shutdown, \
    use_sync_batchnorm
from .divergence import check_finite_loss
from .errors import CnnlabError
from .lock import RunGuard
from .models import count_parameters, create_model
from .models.registry import model_size_mb
from .objectives import EvalSetup, Objective, create_objective
from .optim import create_optimizer, create_scheduler, momentum_options, resolve_epoch_options
from .pretrain import check_stage, pretrain
from . import accumulation, finetune, logs, selection
from .pretrain import total_seconds as pretrain_seconds
from .signals_handling import interrupted, stop_on_signals, stop_requested
from .state import Progress, TrainingParts
from .two_stage import encode_dataset


def train(config: TrainConfig | dict, resume: bool = False,
          on_epoch: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train one model as configured; returns the summary (also written to ``summary.json``).

    ``resume=True`` continues the run in ``<out>/<name>`` from its last checkpoint (or
    returns its summary if it already finished). ``on_epoch`` is called with each
    epoch's metrics row after the checkpoint of that epoch is safely written.
    ``config`` is never modified (a copy is validated and used).
    """
    raw = config.to_dict() if isinstance(config, TrainConfig) else config
    cfg = TrainConfig.from_dict(raw)
    device = resolve_device(cfg.device)
    dist_info = init_distributed(device, cfg.dist_timeout)  # a node lost silently fails the others after it
    guard = RunGuard()  # the run folder's lock (cnnlab.lock), released however the run ends
    try:
        with stop_on_signals():  # SIGTERM / Ctrl-C stop at the next step boundary (cnnlab.signals_handling)
            summary = _train(cfg, resume, on_epoch, device, dist_info, guard)
    except BaseException:
        shutdown(dist_info, clean=False)
        guard.close(failed=True)  # a failed start leaves no empty run folder
        raise
    guard.close()
    shutdown(dist_info)
    return summary


def _train(cfg: TrainConfig, resume: bool, on_epoch, device: torch.device, dist_info: DistInfo,
           guard: RunGuard) -> dict[str, Any]:
    """The recipe itself; runs once per process (one process unless launched by torchrun)."""
    # ---- 1. run folder, device, precision, seed
    if dist_info.enabled and device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
        torch.cuda.set_device(device)
    selection.check_config(cfg)  # combinations that cannot work, before the run folder is touched
    run_dir, resuming = open_run_dir(cfg, resume, dist_info, guard)
    # finished, and not asked for more epochs: its summary. Process 0 decides and tells the others: asked for more
    # epochs it removes summary.json, which a process reading the file at that moment would find gone
    done = broadcast_object(runs.finished_summary(run_dir, cfg.epochs) if resume and dist_info.is_main else None,
                            dist_info)
    if done is not None:
        return done
    # what --resume continues from, checked against config.yaml before any data is loaded
    resume_from = load_training_checkpoint(run_dir / runs.CHECKPOINT) if resuming else None
    if resume_from is not None:
        check_resume_config(run_dir / runs.CHECKPOINT, resume_from["config"], cfg.to_dict(),
                            RESUME_OVERRIDABLE | ENGINE_KEYS, run_dir / runs.CONFIG)
    main = dist_info.is_main
    say = print if main else (lambda *a, **k: None)  # start and end lines
    log = say if cfg.progress else (lambda *a, **k: None)  # per-epoch lines
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    runtime = Runtime.resolve(device, cfg.precision, cfg.channels_last)
    seed_everything(cfg.seed, cfg.deterministic)

    # ---- 2. build the parts
    # the stream path reads data larger than memory through DataLoader workers (cnnlab.data.stream)
    stream = open_stream(cfg, dist_info.rank, dist_info.world_size) if choose_data_path(cfg) == "stream" else None
    ds = stream.dataset if stream is not None else prepare_data(cfg)
    features = None
    if cfg.features_from or cfg.denoiser:  # two-stage: a frozen autoencoder's codes, computed once
        # a restarted run (also one stopped before its first checkpoint) keeps the autoencoder it recorded
        recorded = runs.read_json(run_dir / runs.META).get("features") if resume and (run_dir / runs.META).exists() \
            else None
        ds, features = encode_dataset(cfg, ds, runtime, run_dir, expect=recorded)
    objective = create_objective(cfg)
    objective.prepare(ds)  # e.g. a denoising objective learns the input scaling, to corrupt pixels
    if cfg.target_acc is not None and objective.headline != "test_acc":
        raise CnnlabError(f"--target-acc needs an objective that reports accuracy, not {cfg.objective!r}")
    model = build_model(cfg, ds, runtime)
    check_stage(cfg, model)
    tuned = finetune.prepare(cfg, model, resuming)  # --init-from (a fresh run), --freeze, said at the start
    augment = AugmentConfig.from_config(cfg, flip=ds.flip_ok if cfg.flip is None else cfg.flip)
    if features is not None and (augment.enabled or cfg.tta != "none"):
        raise CnnlabError("--features-from: the classifier sees codes, not images, so augmentation and --tta "
                          "do not apply (give them to the autoencoder run instead)")
    loader = stream.loader(cfg, device, augment, dist_info) if stream is not None else \
        BatchLoader(ds.train_images, ds.train_labels, cfg.batch_size, ds.mean, ds.std, device, shuffle=True,
                    augment=augment, channels_last=cfg.channels_last, rank=dist_info.rank,
                    world_size=dist_info.world_size, balanced=cfg.balanced_sampler)
    steps_per_epoch = math.ceil(len(loader) / cfg.accum_steps)  # optimizer steps (--accum-steps batches each)
    total_steps, num_epochs, length = selection.run_length(cfg, steps_per_epoch)
    monitor = selection.Selector(selection.monitor_of(cfg, objective), cfg.patience, cfg.min_delta)
    parts = build_parts(cfg, model, runtime, steps_per_epoch, total_steps, dist_info)
    objective.bind(model)  # e.g. the energy-hybrid objective finds the energy head's features
    parts.objective = objective  # saved and restored with the parts (its Markov chains, if any)
    progress = Progress()

    # ---- 3. restore, or record what the run is
    if resuming:
        saved_rows = restore_training(resume_from, parts, progress, run_dir / runs.CHECKPOINT)
        check_progress(run_dir / runs.CHECKPOINT, progress, saved_rows, steps_per_epoch)
        # the checkpoint's own rows (a crash after it, before the metrics append, loses none)
        progress_rows = runs.resume_rows(run_dir, saved_rows, progress.epoch) if main else list(saved_rows or [])
        if main:
            cfg.to_yaml(run_dir / runs.CONFIG)  # what --resume changed (e.g. more epochs), written atomically
        say(f"resuming {run_dir} after epoch {progress.epoch} (step {progress.step})")
    else:
        progress_rows = []
        if main:
            cfg.to_yaml(run_dir / runs.CONFIG)
            runs.write_meta(run_dir, cfg, ds, {"features": features} if features else None)
            runs.write_json(run_dir / runs.SPLIT, split_record(ds))
    params = count_parameters(model)
    bn = batchnorm_text(model, use_sync_batchnorm(device, dist_info, cfg.sync_bn))
    ddp = f"; DDP x{dist_info.world_size} (global batch {loader.global_batch}{', ' + bn if bn else ''})" \
        if dist_info.enabled else ""
    aug = f"; augment: {augment.describe()}" if augment.enabled else ""
    say(f"{ds.describe()}\nmodel {cfg.model}: {params:,} parameters; {cfg.objective}; {cfg.opt} lr {cfg.lr}, "
        f"{cfg.sched}{aug}; {device.type} {runtime.precision}{' channels-last' if cfg.channels_last else ''}{ddp}; "
        f"run folder {run_dir}\nrun length: {length}{_accum_text(cfg, loader)}; "
        f"selection: {_selection_text(ds, monitor)}"
        + (f"\nfine-tuning: {tuned}" if tuned else ""))

    # ---- 3b. a pre-training stage (a deep belief net's RBMs), unless fine-tuning has begun: it has its
    # own metrics and checkpoint (pretrain.jsonl, pretrain.pt) and continues from them on --resume
    if cfg.pretrain_epochs and not resuming:
        pretrain(cfg, model, ds, runtime.device, run_dir, dist_info, resume=resume, log=log)

    # ---- 4. the epochs
    target = cfg.target_fraction()
    # metrics.csv beside metrics.jsonl, and TensorBoard event files when installed (cnnlab.logs)
    logger = logs.RunLogger(run_dir, runs.METRICS_CSV, runs.TENSORBOARD, cfg.tensorboard) if main else None
    setup = EvalSetup(runtime, ds.mean, ds.std, cfg.tta, cfg.eval_batch_size)
    try:
        while progress.epoch < num_epochs and progress.reached_target_at is None and not progress.stopped_early:
            epoch = progress.epoch + 1
            steps = min(steps_per_epoch, total_steps - progress.step)
            if stream is not None:  # its order is fixed by (seed, epoch): a run resumed mid-epoch skips what it took
                taken = min(max(progress.step - (epoch - 1) * steps_per_epoch, 0), steps_per_epoch)
                loader.set_epoch(epoch, min(taken * cfg.accum_steps, len(loader)))
            row = train_one_epoch(epoch, steps, parts, loader, objective, runtime, progress, cfg.clip_grad,
                                  dist_info, show_bar=cfg.progress and main, accum_steps=cfg.accum_steps)
            check_finite_loss(row, progress.epoch if (run_dir / runs.CHECKPOINT).exists() else None, run_dir,
                              cfg.lr)
            if ds.num_val and (epoch % cfg.eval_every == 0 or epoch == num_epochs or target is not None):
                row.update(evaluate(parts.eval_model, ds, objective, setup))  # the validation split only
                if monitor.key not in row:  # --monitor names no metric: an error; the default missing: no choice
                    monitor.key = selection.check_monitor(monitor.key, row, cfg.objective, given=bool(cfg.monitor))
                if monitor.key and monitor.observe(row, progress) and main:  # a new best: keep it beside the last
                    selection.save_best(run_dir / runs.BEST_WEIGHTS, parts.eval_model, cfg, epoch, row[monitor.key])
                if target is not None and row["val_acc"] >= target:
                    progress.reached_target_at = {"epoch": epoch, "seconds": progress.train_seconds}
            if hasattr(parts.optimizer, "metrics"):  # e.g. where the Adam->SGD switch fired
                row.update(parts.optimizer.metrics())
            if hasattr(parts.scheduler, "observe") and "val_loss" in row:  # reduce-on-plateau: validation loss
                parts.scheduler.observe(row["val_loss"])
            progress_rows.append(row)
            progress.epoch = epoch
            if main:  # checkpoint first, then the metrics it vouches for
                if epoch % cfg.save_every == 0 or epoch == num_epochs or progress.reached_target_at \
                        or progress.stopped_early:
                    save_training(run_dir / runs.CHECKPOINT, parts, progress, cfg.to_dict(), progress_rows)
                runs.write_metrics(run_dir, progress_rows)
                logger.epoch(progress_rows)
            log(epoch_line(row, num_epochs))
            if on_epoch is not None and main:
                on_epoch(row)
    except KeyboardInterrupt as e:  # SIGTERM / Ctrl-C at a step boundary (or a second Ctrl-C, at once)
        if getattr(e, "exit_code", None):
            raise
        saved = progress.epoch // cfg.save_every * cfg.save_every  # nothing of the unfinished epoch is kept
        raise interrupted(f"during epoch {progress.epoch + 1}; " + (f"the checkpoint after epoch {saved} is kept"
                          if saved else "before the first checkpoint"), f"cnnlab train --resume {run_dir}") from None

    # ---- 5. finish
    # which split the test_* figures come from: the test split, or a cross-validation fold (--cv-fold)
    extra: dict[str, Any] = {"evaluated_on": ds.extra.get("evaluated_on", "test split")}
    if cfg.pretrain_epochs:
        extra["pretrain_seconds"] = pretrain_seconds(run_dir)
    if features is not None:
        extra["features"] = {"autoencoder": features["autoencoder"]["run"], "code_size": features["code_size"],
                             "denoiser": (features["denoiser"] or {}).get("run"),
                             "encode_seconds": features["encode_seconds"]}
    summary = finish_run(run_dir, cfg, ds, parts, objective, setup, progress, progress_rows, params,
                         dist_info.world_size, extra, monitor) if main else None
    if logger is not None:
        logger.finish(summary)
    summary = broadcast_object(summary, dist_info)
    say(f"{objective.describe(summary)} in {summary['train_seconds']:.1f}s of training, "
        f"{summary['images_per_second']:.0f} images/s -> {run_dir}")
    return summary


# --------------------------------------------------------------------------- building the parts


def open_run_dir(cfg: TrainConfig, resume: bool, dist_info: DistInfo, guard: RunGuard) -> tuple[Path, bool]:
    """Create or reopen the run folder (never overwriting a run by accident); returns it and
    whether there is a checkpoint to resume from. Sets ``cfg.name`` when it was left to default.

    Under DDP process 0 decides (name, existence) and tells the others, so a refusal
    stops every process instead of leaving them waiting for each other. Process 0 also takes the
    folder's lock (``guard``, :class:`cnnlab.lock.RunGuard`): a second run given the same folder is refused.
    """
    if cfg.name is None:
        cfg.name = broadcast_object(runs.default_run_name(cfg.data, cfg.model), dist_info)
    run_dir = Path(cfg.out) / cfg.name
    error = None
    if dist_info.is_main:
        try:
            guard.open(run_dir, resume)  # checks --out, creates the folder, takes its lock
        except CnnlabError as e:
            error = str(e)
    error = broadcast_object(error, dist_info)
    if error:
        raise CnnlabError(error)
    return run_dir, resume and (run_dir / runs.CHECKPOINT).exists()


def build_model(cfg: TrainConfig, ds: ArrayDataset, runtime: Runtime) -> torch.nn.Module:
    """The configured model for the dataset's shape, checked with one tiny forward pass, on the device."""
    if ds.is_signal:  # 1-D signals [N, C, L]: the model gets length=L (cnnlab.models.signal)
        from .models.signal import build_for_signals

        return build_for_signals(cfg.model, ds.num_classes, ds.in_channels, ds.length, cfg.model_kwargs(),
                                 runtime.device)
    c, (h, w) = ds.in_channels, ds.image_size
    model = create_model(cfg.model, ds.num_classes, c, image_size=(h, w), **cfg.model_kwargs())
    check_model_input(model, cfg.model, c, (h, w))
    model = model.to(runtime.device)
    return model.to(memory_format=torch.channels_last) if runtime.channels_last else model


def check_model_input(model: torch.nn.Module, name: str, channels: int, size: tuple[int, int]) -> None:
    """One tiny forward pass so a shape mismatch is reported clearly before training starts."""
    h, w = size
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(2, channels, h, w))
    except RuntimeError as e:
        raise CnnlabError(f"model {name!r} cannot take {channels}x{h}x{w} inputs "
                          f"({str(e).splitlines()[0]}); try --image-size") from None
    finally:
        model.train(was_training)


def build_parts(cfg: TrainConfig, model: torch.nn.Module, runtime: Runtime, steps_per_epoch: int,
                total_steps: int, dist_info: DistInfo) -> TrainingParts:
    """Optimizer, schedule, gradient scaler (fp16 only), EMA and the DDP / compile wrappers."""
    opt_options = resolve_epoch_options(cfg.opt_options, steps_per_epoch)  # e.g. force_switch_epoch -> _step
    optimizer = create_optimizer(cfg.opt, model, cfg.lr, cfg.weight_decay, cfg.decay_norm_bias,
                                 **{**momentum_options(cfg.opt, cfg.momentum, cfg.nesterov), **opt_options})
    finetune.apply_lr_mult(optimizer, model, cfg.lr_mult)  # --lr-mult: before the schedule records base rates
    scheduler = create_scheduler(cfg.sched, optimizer, total_steps, steps_per_epoch,
                                 warmup_steps=round(cfg.warmup_epochs * steps_per_epoch), **cfg.sched_options)
    scaler = torch.amp.GradScaler(runtime.device.type) if runtime.precision == "fp16" else None
    ema = None
    if cfg.ema:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
    forward = model
    if dist_info.enabled:  # gradients are averaged across processes after every backward pass
        from torch.nn.parallel import DistributedDataParallel

        device = runtime.device
        if use_sync_batchnorm(device, dist_info, cfg.sync_bn):  # batch-norm statistics over the global batch
            # (docs/distributed.md); the BN children are swapped in place, keeping their parameters (those the
            # optimizer holds) and buffers; the EMA copy, made above, keeps plain BN (it never runs in DDP)
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        forward = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        forward = torch.compile(forward)
    return TrainingParts(model, optimizer, scheduler, scaler, ema, forward)


# --------------------------------------------------------------------------- one epoch, evaluation


def train_one_epoch(epoch: int, steps: int, parts: TrainingParts, loader: BatchLoader, objective: Objective,
                    runtime: Runtime, progress: Progress, clip_grad: float | None = None,
                    dist_info: DistInfo = DistInfo(), show_bar: bool = False, accum_steps: int = 1) -> dict[str, Any]:
    """Up to ``steps`` optimizer steps over ``loader``; returns the epoch's metrics row (train side).

    With ``accum_steps`` k > 1 each optimizer step averages the gradients of k batches (each batch's mean loss
    weighted by its share of the images, so k batches of B equal one batch of kB without batch norm); under DDP
    the inner batches skip the gradient all-reduce (``no_sync``), only the last of each k synchronises."""
    model, optimizer, scheduler, scaler = parts.forward, parts.optimizer, parts.scheduler, parts.scaler
    model.train()
    device = runtime.device
    loss_sum = torch.zeros((), device=device)
    sums: dict[str, torch.Tensor] = {}
    seen = 0
    bar = _progress_bar(min(steps * accum_steps, len(loader)), epoch, show_bar)
    start = time.perf_counter()
    batches = min(steps * accum_steps, len(loader))
    for i, (x, y) in enumerate(loader):
        if i >= batches:
            break
        if i % accum_steps == 0 and stop_requested():  # SIGTERM / Ctrl-C: stop here, between two optimizer steps
            raise KeyboardInterrupt  # (cnnlab.signals_handling; _train says what is kept and how to resume)
        inputs, target = objective.inputs_and_targets(x, y)
        if i % accum_steps == 0:
            optimizer.zero_grad(set_to_none=True)
            group_images = 0
        stepping = (i + 1) % accum_steps == 0 or i + 1 == batches
        with accumulation.no_sync(model, not stepping):
            with runtime.autocast():
                output = model(inputs)
            loss = objective.loss(output, target)
            # a batch's share of the optimizer step's images (undone below for a short last group)
            scaled = loss * (len(y) / (loader.batch_size * accum_steps)) if accum_steps > 1 else loss
            if scaler is not None:  # fp16: scale the loss, unscale before clipping and stepping
                scaler.scale(scaled).backward()
            else:
                scaled.backward()
        group_images += len(y)
        # running sums stay on the device: no synchronisation per step
        loss_sum += loss.detach() * len(y)
        for k, v in objective.batch_sums(output, target).items():
            sums[k] = sums[k] + v if k in sums else v
        seen += len(y)
        if not stepping:
            continue
        if scaler is not None:
            scaler.unscale_(optimizer)
        if accum_steps > 1 and group_images != loader.batch_size * accum_steps:
            accumulation.rescale_grads(optimizer, loader.batch_size * accum_steps / group_images)
        if clip_grad:
            torch.nn.utils.clip_grad_norm_(parts.model.parameters(), clip_grad)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        if parts.ema is not None:
            parts.ema.update_parameters(parts.model)
        progress.step += 1
        if bar is not None and (i % 10 == 0 or i == batches - 1):
            shown = objective.train_metrics({k: v.item() for k, v in sums.items()}, seen)
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}",
                            **{k.removeprefix("train_"): f"{100 * v:.1f}" for k, v in shown.items()},
                            ips=f"{seen / max(time.perf_counter() - start, 1e-9):.0f}", refresh=False)
            bar.update(i + 1 - bar.n)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if bar is not None:
        bar.close()
    keys = sorted(sums)
    totals = torch.stack([loss_sum.float()] + [sums[k].float() for k in keys]
                         + [torch.tensor(float(seen), device=device)])
    if dist_info.enabled:  # epoch figures over all processes
        totals = all_reduce_sum(totals, dist_info)
        seen = int(totals[-1].item())
    values = totals.tolist()
    progress.train_seconds += seconds
    progress.images_seen += seen
    return {"epoch": epoch, "step": progress.step, "train_loss": values[0] / max(seen, 1),
            **objective.train_metrics(dict(zip(keys, values[1:-1])), seen),
            "lr": optimizer.param_groups[0]["lr"], "images_per_second": seen / max(seconds, 1e-9),
            "epoch_seconds": seconds, "elapsed": progress.train_seconds}


def evaluate(model: torch.nn.Module, ds: ArrayDataset, objective: Objective, setup: EvalSetup) -> dict[str, float]:
    """The objective's per-epoch metrics on the validation split (``val_*`` keys): selection looks here only."""
    return selection.as_split(objective.evaluate(model, ds.val_images, ds.val_labels, setup), "val")


def _accum_text(cfg: TrainConfig, loader) -> str:
    if cfg.accum_steps == 1:
        return ""
    return (f" ({cfg.accum_steps} batches of {cfg.batch_size} per optimizer step: "
            f"{cfg.accum_steps * loader.global_batch} images)")


def _selection_text(ds: ArrayDataset, monitor: selection.Selector) -> str:
    if not ds.num_val:
        return "none (no validation split): the last weights are tested"
    stop = f", early stopping after {monitor.patience} evaluations without improvement" if monitor.patience else ""
    return f"best {monitor.key} on the validation split{stop}; the test split is evaluated once, at the end"


def _progress_bar(steps: int, epoch: int, enabled: bool):
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=steps, desc=f"epoch {epoch}", leave=False, dynamic_ncols=True)


def epoch_line(row: dict[str, Any], num_epochs: int) -> str:
    """The per-epoch log line, e.g. ``epoch 3/10: train loss 0.21 acc 93.1% val loss ... lr ... img/s``."""
    train_acc = f" acc {100 * row['train_acc']:.2f}%" if "train_acc" in row else ""
    test = f" val loss {row['val_loss']:.4f}" if "val_loss" in row else ""
    test += f" acc {100 * row['val_acc']:.2f}%" if "val_acc" in row else ""
    return (f"epoch {row['epoch']}/{num_epochs}: train loss {row['train_loss']:.4f}{train_acc}{test} "
            f"lr {row['lr']:.3g} {row['images_per_second']:.0f} img/s {row['elapsed']:.1f}s")


# --------------------------------------------------------------------------- the end of a run


def finish_run(run_dir: Path, cfg: TrainConfig, ds: ArrayDataset, parts: TrainingParts, objective: Objective,
               setup: EvalSetup, progress: Progress, rows: list[dict[str, Any]], params: int,
               world_size: int = 1, extra: dict[str, Any] | None = None,
               monitor: selection.Selector | None = None) -> dict[str, Any]:
    """Final evaluation with all metrics, weights, plots and summary.json (written last, so its
    presence means the run finished). ``extra``: facts of the run's kind (pre-training time, the
    autoencoder of a two-stage run).

    The last weights go to model.safetensors; the test split is then evaluated once, with the
    weights chosen on validation (best.safetensors when the run has a validation split)."""
    model = parts.eval_model
    save_weights(model.state_dict(), run_dir / runs.WEIGHTS, {"model": cfg.model, "dataset": cfg.data})
    tested = "last"
    if progress.best_epoch and (run_dir / runs.BEST_WEIGHTS).is_file():
        if progress.best_epoch != progress.epoch:
            selection.load_into(model, run_dir / runs.BEST_WEIGHTS)
        tested = "best"
    metrics = objective.final_report(model, ds, setup, run_dir)
    if monitor is not None and progress.best_epoch:
        metrics["selection"] = monitor.record(progress, progress.epoch, tested)
        metrics[f"best_{monitor.key}"], metrics["best_epoch"] = progress.best_value, progress.best_epoch
    last = next((r for r in reversed(rows) if any(k.startswith("val_") for k in r)), None)
    if last is not None:  # the last evaluated epoch's validation figures
        metrics.update({k: v for k, v in last.items() if k.startswith("val_")})
    metrics["splits"] = split_names(metrics, tested, progress.best_epoch, monitor, ds)
    runs.plot_curves(rows, run_dir / runs.CURVES, f"{cfg.model} on {cfg.data}")
    summary = {
        **metrics, "epochs": progress.epoch, "steps": progress.step, "train_seconds": progress.train_seconds,
        "images_per_second": progress.images_seen / max(progress.train_seconds, 1e-9),
        "reached_target": progress.reached_target_at,
        "model": cfg.model, "dataset": cfg.data, "params": params, "size_mb": model_size_mb(model),
        "dtype": setup.runtime.precision, "device": str(setup.runtime.device), "world_size": world_size,
        "tta": cfg.tta, "seed": cfg.seed, "run_dir": str(run_dir), **(extra or {}),
    }
    runs.write_json(run_dir / runs.SUMMARY, summary)
    return summary


def split_names(metrics: dict[str, Any], tested: str, best_epoch: int, monitor: selection.Selector | None,
                ds: ArrayDataset) -> dict[str, str]:
    """Which split (and which weights) each summary figure comes from, said in summary.json."""
    chosen = (f"weights of epoch {best_epoch}, chosen by {monitor.key} on validation" if tested == "best" and monitor
              else "the last weights (nothing selected)")
    test = ds.extra.get("evaluated_on", "test split")
    out = {"val_*": f"validation split ({ds.num_val} images), the last evaluated epoch"} if ds.num_val else {}
    if monitor is not None and best_epoch:
        out[f"best_{monitor.key}"] = f"validation split, epoch {best_epoch}"
    out["test figures (test_*, top5, nll, precision, recall, f1, bep)"] = f"{test}, evaluated once, {chosen}"
    return out


# `cnnlab.train` is the public function, but Python binds a package's submodule onto the package
# under the same name when the submodule is first imported (`import cnnlab.train`). Making this
# module callable keeps `cnnlab.train(config)` working whichever way it was reached, while
# `cnnlab/__init__.py` stays lazy (the CLI's --help does not import the trainer or torch).
class _CallableModule(type(sys)):
    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        from .api import train as train_with_arrays  # cnnlab.train(config, data=(x, y), test=(x, y))

        return train_with_arrays(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
