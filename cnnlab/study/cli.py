"""The ``cnnlab study`` command: its flags (shared by ``cnnlab study`` and the stand-alone
``python -m cnnlab.study``), ``--list``, and the entry a worker process starts with.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from typing import Callable, Sequence

from ..errors import CnnlabError
from .execute import worker_main
from .plan import parse_overrides
from .run import run_study
from .spec import BUDGETS, DEFAULT_BUDGET, builtin_specs, load_spec


def list_studies(log: Callable[[str], None] = print) -> None:
    rows = [("name", "reproduces", "description")]
    for name, path in builtin_specs().items():
        try:
            spec = load_spec(path)
            rows.append((name, spec.reproduces or "-", spec.description.splitlines()[0] if spec.description else ""))
        except CnnlabError as e:  # one broken spec must not hide the others
            rows.append((name, "-", f"(invalid spec: {e})"))
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    for r in rows:
        log(f"{r[0].ljust(widths[0])}  {r[1].ljust(widths[1])}  {r[2]}")
    log("run one with: cnnlab study NAME [--budget smoke|small|full] [--jobs N] [--dry-run]")


def add_study_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", nargs="?", metavar="SPEC", help="study spec YAML file, or the name of a built-in study "
                                                            "(see --list)")
    p.add_argument("--list", action="store_true", help="list the built-in studies and the paper tables they reproduce")
    p.add_argument("--budget", choices=BUDGETS, default=DEFAULT_BUDGET,
                   help="smoke: ~1 minute check; small: a CPU-sized run (minutes); full: the paper's setting "
                        f"(default: {DEFAULT_BUDGET})")
    p.add_argument("-j", "--jobs", type=int, default=1, help="run this many variants in parallel processes, "
                                                            "splitting the CPU threads between them (default 1)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads to split between the jobs (default: all)")
    p.add_argument("--dry-run", action="store_true", help="print the plan (variants, settings, estimated cost); "
                                                          "train nothing")
    p.add_argument("--out", default="runs", help="parent folder; the study goes to OUT/studies/<name>-<budget>/ "
                                                 "(default: runs)")
    p.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE", default=[],
                   help="override a base config key for every variant, e.g. --set data_dir=~/data (repeatable)")
    p.add_argument("--report-only", action="store_true", help="rebuild the tables, plots and report from the "
                                                              "run folders without training")


def add_study_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``cnnlab study`` on the CLI's subparsers (sets ``func=run_study_command``)."""
    p = subparsers.add_parser("study", help="run a paper's comparison: a grid of runs -> table, plots, report",
                              description="Run a study spec: every variant as an ordinary run, then a table "
                                          "(Markdown + CSV), plots and a self-contained HTML report. Re-running "
                                          "continues where it stopped. See docs/studies.md.")
    add_study_arguments(p)
    p.set_defaults(func=run_study_command)
    return p


def run_study_command(args: argparse.Namespace) -> int:
    """The ``cnnlab study`` command; returns the exit status (1 when some runs failed)."""
    if args.list:
        list_studies()
        return 0
    if not args.spec:
        raise CnnlabError("name a study spec file or a built-in study (cnnlab study --list shows them)")
    command = "cnnlab study " + " ".join(shlex.quote(a) for a in _command_args(args))
    result = run_study(args.spec, budget=args.budget, out=args.out, jobs=args.jobs,
                       overrides=parse_overrides(args.overrides), dry_run=args.dry_run,
                       report_only=args.report_only, threads=args.threads, command=command)
    if args.dry_run:
        return 0
    print()
    print(result["markdown"])
    print(f"\ntable: {result['study_dir'] / 'results.md'} (and results.csv); report: {result['report']}")
    if result["failed"]:
        names = ", ".join(f"{r.run.variant} seed {r.run.seed}" for r in result["failed"])
        print(f"{len(result['failed'])} run(s) failed: {names}; re-run the same command to retry them",
              file=sys.stderr)
        return 1
    return 0


def _command_args(args: argparse.Namespace) -> list[str]:
    """The flags that decide what the study computes, for the command shown in its outputs."""
    out = [str(args.spec), "--budget", args.budget]
    if args.jobs != 1:
        out += ["--jobs", str(args.jobs)]
    if args.out != "runs":
        out += ["--out", str(args.out)]
    for o in args.overrides:
        out += ["--set", o]
    return out


def study_main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point (``python -m cnnlab.study ...``); same flags as ``cnnlab study``.

    ``--worker CONFIG.yaml`` is how :mod:`cnnlab.study.execute` starts one run of a parallel study.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--worker"]:
        if len(argv) != 2:
            print("usage: python -m cnnlab.study --worker CONFIG.yaml", file=sys.stderr)
            return 2
        return worker_main(argv[1])
    p = argparse.ArgumentParser(prog="cnnlab study", description="Run a study spec (see docs/studies.md).")
    add_study_arguments(p)
    args = p.parse_args(argv)
    try:
        return run_study_command(args)
    except CnnlabError as e:
        print(f"cnnlab study: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cnnlab study: interrupted; re-run the same command to continue", file=sys.stderr)
        return 130
