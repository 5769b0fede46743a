"""Running a plan's unfinished runs: in this process (``--jobs 1``), or in worker processes
(``python -m cnnlab.study --worker CONFIG.yaml``) that split the CPU threads between them.

Every run is an ordinary :func:`cnnlab.train.train` with ``resume=True``: a finished run is
skipped, an interrupted one continues from its checkpoint. A run that fails is recorded in
``errors/<run>.txt`` and the others go on; Ctrl-C stops the whole study.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import IO, Any, Callable

from ..config import TrainConfig
from ..errors import CnnlabError
from ..runs import SUMMARY
from .metrics import METRICS, format_seconds
from .plan import LOGS_DIR, Plan, PlannedRun, error_file, record_failure, run_status

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _is_interrupt(e: BaseException) -> bool:
    """The trainer turns Ctrl-C into a CnnlabError("interrupted ..."); a study must stop, not go on."""
    return isinstance(e, KeyboardInterrupt) or isinstance(e.__context__, KeyboardInterrupt)


def _call_train(config: TrainConfig, on_epoch: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """One ordinary run: the same trainer as ``cnnlab train`` (resume=True continues or skips)."""
    from ..train import train

    return train(config, resume=True, on_epoch=on_epoch)


def _what(run: PlannedRun) -> str:
    """``dnn seed 0``, or for a cross-validation run ``dnn [300-100, fold 1/3] seed 0``."""
    if run.role == "cv":
        return f"{run.variant} [{run.setting}, fold {run.config.cv_fold}] seed {run.seed}"
    return f"{run.variant} seed {run.seed}"


def _done_line(run: PlannedRun, summary: dict[str, Any], seconds: float) -> str:
    acc = METRICS["test_acc"].value(summary, [])
    where = "validation" if run.role == "cv" else "test"
    acc_text = f"{where} acc {acc:.2f}%" if acc is not None else "done"
    return f"{_what(run)}: {acc_text} ({format_seconds(seconds)})"


def execute(plan: Plan, log: Callable[[str], None] = print,
            on_epoch: Callable[[PlannedRun, dict], None] | None = None,
            runs: list[PlannedRun] | None = None) -> list[PlannedRun]:
    """Run every unfinished run of the plan (or of ``runs``, with the runs they need first); returns the
    runs that failed (others keep going; a run whose needed run failed fails too)."""
    chosen = with_needs(plan, plan.all_runs if runs is None else runs)
    todo = [r for r in chosen if run_status(plan, r) != "done"]
    if not todo:
        return []
    n_done = len(chosen) - len(todo)
    log(f"study {plan.spec.name} ({plan.budget}): {len(todo)} of {len(chosen)} runs to do"
        f"{f', {n_done} already finished' if n_done else ''}; {plan.jobs} job(s) x {plan.threads} thread(s) "
        f"-> {plan.study_dir}")
    if plan.jobs == 1:
        return _execute_inline(plan, todo, log, on_epoch)
    return _execute_parallel(plan, todo, log)


def with_needs(plan: Plan, runs: list[PlannedRun]) -> list[PlannedRun]:
    """``runs`` and, before them, every run they need (``"@VARIANT"`` values), each once."""
    by_name = {r.name: r for r in plan.all_runs}
    out: list[PlannedRun] = []

    def add(run: PlannedRun) -> None:
        if run in out:
            return
        for n in run.needs:
            if n in by_name:
                add(by_name[n])
        out.append(run)

    for r in runs:
        add(r)
    return out


def unmet_need(plan: Plan, run: PlannedRun) -> str | None:
    """The first run ``run`` needs that has not finished, or None."""
    by_name = {r.name: r for r in plan.all_runs}
    for n in run.needs:
        if n in by_name and run_status(plan, by_name[n]) != "done":
            return n
    return None


# ------------------------------------------------------------------------------- in this process


def _execute_inline(plan: Plan, todo: list[PlannedRun], log, on_epoch) -> list[PlannedRun]:
    failed = []
    for i, run in enumerate(todo, 1):
        status = run_status(plan, run)
        missing = unmet_need(plan, run)
        if missing is not None:
            record_failure(plan, run, f"needs the run {missing}, which did not finish")
            failed.append(run)
            log(f"[{i}/{len(todo)}] FAILED {_what(run)}: needs {missing}, which did not finish")
            continue
        log(f"[{i}/{len(todo)}] {'resuming' if status == 'partial' else 'running'} {_what(run)}")
        t0 = time.perf_counter()
        hook = (lambda row, _r=run: on_epoch(_r, row)) if on_epoch is not None else None
        try:
            summary = _call_train(run.config, hook)
        except BaseException as e:  # noqa: BLE001 - a failed variant must not stop the others
            if _is_interrupt(e):  # Ctrl-C / SIGTERM: the trainer's message (what is kept, how to resume) goes up
                if isinstance(e, KeyboardInterrupt):
                    raise
                raise KeyboardInterrupt from e
            if not isinstance(e, Exception):
                raise
            message = str(e) if isinstance(e, CnnlabError) else f"{type(e).__name__}: {e}"
            record_failure(plan, run, message + "\n\n" + traceback.format_exc())
            failed.append(run)
            log(f"[{i}/{len(todo)}] FAILED {_what(run)}: {message}")
            continue
        error_file(plan, run).unlink(missing_ok=True)
        log(f"[{i}/{len(todo)}] {_done_line(run, summary, time.perf_counter() - t0)}")
    return failed


# ------------------------------------------------------------------------------- worker processes


def _worker_env(threads: int) -> dict[str, str]:
    """The environment of a worker: its share of the threads, and this cnnlab ahead of any installed one."""
    env = dict(os.environ)
    for k in THREAD_ENV:
        env[k] = str(threads)
    pkg_root = str(Path(__file__).resolve().parents[2])  # the folder holding the cnnlab package
    env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _start_worker(run: PlannedRun, logs: Path, env: dict[str, str]) -> tuple[subprocess.Popen, IO]:
    cfg_path = logs / f"{run.name}.config.yaml"
    run.config.to_yaml(cfg_path)
    out = open(logs / f"{run.name}.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab.study", "--worker", str(cfg_path)],
                            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    return proc, out


def _worker_failure(plan: Plan, run: PlannedRun, returncode: int, logs: Path) -> str | None:
    """None when the worker finished its run; else the failure's message, recorded in errors/."""
    if returncode == 0 and (run.run_dir / SUMMARY).is_file():
        error_file(plan, run).unlink(missing_ok=True)
        return None
    log_path = logs / f"{run.name}.log"
    text = log_path.read_text(errors="replace")
    message = _first_line(text) if text.strip() else f"worker exited with status {returncode}"
    record_failure(plan, run, f"{message}\n\n(exit status {returncode}; full log: {log_path})\n\n{text[-4000:]}")
    return message


def _first_line(text: str) -> str:
    """The message of a worker's log: its ``error:`` line, else the last line (a traceback's exception)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith("error: "):
            return ln[len("error: "):]
    return lines[-1] if lines else "failed"


def _execute_parallel(plan: Plan, todo: list[PlannedRun], log) -> list[PlannedRun]:
    logs = plan.study_dir / LOGS_DIR
    logs.mkdir(parents=True, exist_ok=True)
    env = _worker_env(plan.threads)
    queue = list(enumerate(todo, 1))
    running: dict[int, tuple[subprocess.Popen, PlannedRun, float, IO]] = {}
    failed: list[PlannedRun] = []
    try:
        while queue or running:
            for entry in list(queue):  # a run whose needed run failed cannot run
                i, run = entry
                if any(f.name in run.needs for f in failed):
                    queue.remove(entry)
                    record_failure(plan, run, "needs a run that failed")
                    failed.append(run)
                    log(f"[{i}/{len(todo)}] FAILED {_what(run)}: needs a run that failed")
            ready = [e for e in queue if unmet_need(plan, e[1]) is None]
            while ready and len(running) < plan.jobs:
                entry = ready.pop(0)
                queue.remove(entry)
                i, run = entry
                proc, out = _start_worker(run, logs, env)
                running[i] = (proc, run, time.perf_counter(), out)
                log(f"[{i}/{len(todo)}] started {_what(run)}")
            if queue and not running and not ready:  # waiting on runs that are not in this batch
                for i, run in queue:
                    record_failure(plan, run, f"needs the run {unmet_need(plan, run)}, which did not finish")
                    failed.append(run)
                queue.clear()
            time.sleep(0.2)
            for i in list(running):
                proc, run, t0, out = running[i]
                if proc.poll() is None:
                    continue
                out.close()
                del running[i]
                message = _worker_failure(plan, run, proc.returncode, logs)
                if message is None:
                    summary = json.loads((run.run_dir / SUMMARY).read_text())
                    log(f"[{i}/{len(todo)}] {_done_line(run, summary, time.perf_counter() - t0)}")
                else:
                    failed.append(run)
                    log(f"[{i}/{len(todo)}] FAILED {_what(run)}: {message}")
    except BaseException:  # Ctrl-C or a bug here: stop the workers, their checkpoints stay
        _stop_workers([(proc, out) for proc, _run, _t0, out in running.values()])
        raise
    return failed


def _stop_workers(workers: list[tuple[subprocess.Popen, IO]]) -> None:
    for proc, _out in workers:
        if proc.poll() is None:
            proc.terminate()
    for proc, out in workers:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        out.close()


# ------------------------------------------------------------------------------- evaluations


def evaluation_file(run: PlannedRun, name: str) -> Path:
    from ..runs import EVALS

    return run.run_dir / EVALS / f"{name}.json"


def run_evaluations(plan: Plan, log: Callable[[str], None] = print) -> list[tuple[PlannedRun, str, str]]:
    """The spec's ``evaluations:`` of every finished run (``cnnlab eval ... --output NAME``), each once:
    an existing ``evals/NAME.json`` is kept. Returns the (run, evaluation, message) that failed."""
    import contextlib
    import io

    import torch

    from ..inference import evaluate_run

    todo = [(run, e) for run in plan.runs for e in run.evaluations
            if run_status(plan, run) == "done" and not evaluation_file(run, e["name"]).is_file()]
    failed = []
    if todo:
        log(f"study {plan.spec.name}: {len(todo)} evaluation(s) to do")
    threads = torch.get_num_threads()
    for k, (run, e) in enumerate(todo, 1):
        what = ", ".join(x for x in (e["corrupt"] and f"corrupt {e['corrupt']}",
                                     e["denoiser"] and f"denoiser {Path(e['denoiser']).name}") if x) or "clean"
        if e.get("ensemble"):
            if evaluation_file(run, e["name"]).is_file():  # written with an earlier member of the same ensemble
                continue
            what = f"ensemble of {len(e['ensemble'])} seeds"
            waiting = [r for r in plan.runs if str(r.run_dir) in e["ensemble"] and run_status(plan, r) != "done"]
            if waiting or len(e["ensemble"]) < 2:
                why = "needs at least two seeds" if len(e["ensemble"]) < 2 else f"{_what(waiting[0])} is not done"
                failed.append((run, e["name"], f"ensemble {e['name']}: {why}"))
                log(f"  [{k}/{len(todo)}] FAILED {_what(run)} {e['name']} ({what}): {why}")
                continue
        try:
            torch.set_num_threads(run.config.threads or threads)
            with contextlib.redirect_stdout(io.StringIO()):  # its report: the study writes its own
                if e.get("ensemble"):
                    from ..ensemble import evaluate_ensemble

                    m = evaluate_ensemble(e["ensemble"], device=run.config.device,
                                          batch_size=run.config.eval_batch_size, corrupt=e["corrupt"],
                                          output=e["name"], overwrite=True)
                else:
                    m = evaluate_run(run.run_dir, device=run.config.device, batch_size=run.config.eval_batch_size,
                                     corrupt=e["corrupt"], denoiser=e["denoiser"], output=e["name"])
        except CnnlabError as err:
            failed.append((run, e["name"], str(err)))
            log(f"  [{k}/{len(todo)}] FAILED {_what(run)} {e['name']} ({what}): {err}")
            continue
        finally:
            torch.set_num_threads(threads)
        score = f"acc {100 * m['acc']:.2f}%" if "acc" in m else f"MSE {m.get('test_mse', float('nan')):.4g}"
        log(f"  [{k}/{len(todo)}] {_what(run)} {e['name']} ({what}): {score}")
    return failed


def worker_main(config_path: str) -> int:
    """``python -m cnnlab.study --worker CONFIG.yaml``: one run of a parallel study."""
    try:
        _call_train(TrainConfig.from_yaml(config_path))
    except KeyboardInterrupt:
        return 130
    except CnnlabError as e:
        traceback.print_exc()
        print(f"error: {e}", flush=True)  # the line the study reports as the run's failure
        return 2 if not _is_interrupt(e) else 130
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        return 1
    return 0
