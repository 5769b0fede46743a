"""Studies: one command runs a paper's comparison and writes its table, plots and report.

A study spec (YAML) names a base training config and the axes to vary, either as a
full grid or as a list of named variants (or both), the seeds, what to report and,
optionally, the paper's own numbers and figures. ``cnnlab study SPEC`` then

1. plans the runs (variant x seed), scaled by ``--budget`` (smoke / small / full);
2. runs each one as an ordinary run (same :func:`cnnlab.train.train` as
   ``cnnlab train``) into ``<out>/studies/<name>-<budget>/runs/<variant>-seed<N>/``,
   in this process or in ``--jobs N`` worker processes that split the CPU threads;
   finished runs are skipped, interrupted ones resumed from their checkpoint and
   failed ones retried, so re-running the same command continues a study;
3. aggregates the run folders into ``results.md`` / ``results.csv`` (mean ± std over
   seeds, paper-vs-measured columns), ``runs.csv``, PNG plots in ``plots/`` and one
   self-contained ``report.html`` (images embedded) to open in a browser.

The spec format is documented in ``docs/studies.md``; the built-in specs live in
``cnnlab/study/specs/*.yaml`` (``cnnlab study --list``).

One module per step, each importing only the ones above it:

- :mod:`~cnnlab.study.metrics`   the reportable figures and how each is read and shown
- :mod:`~cnnlab.study.variants`  grid and listed variants; the check every config override passes
- :mod:`~cnnlab.study.spec`      the spec dataclasses, the built-in specs, parsing a spec section by section
- :mod:`~cnnlab.study.plan`      budgets -> the planned runs and their configs; run state on disk
- :mod:`~cnnlab.study.execute`   running the runs, inline or in worker processes; failures
- :mod:`~cnnlab.study.estimate`  the dry run's plan and time estimates
- :mod:`~cnnlab.study.results`   reading the run folders back; mean ± std over seeds
- :mod:`~cnnlab.study.tables`    results.md, results.csv, runs.csv
- :mod:`~cnnlab.study.plots`     bar chart, learning curves, paper-figure curves
- :mod:`~cnnlab.study.report`    report.html
- :mod:`~cnnlab.study.run`       :func:`run_study`: the whole study in one call
- :mod:`~cnnlab.study.cli`       ``cnnlab study`` and ``python -m cnnlab.study``
"""
from __future__ import annotations

from .cli import add_study_arguments, add_study_parser, list_studies, run_study_command, study_main
from .estimate import estimate_run, print_plan
from .execute import worker_main
from .metrics import CURVE_METRICS, CURVE_X, DEFAULT_CURVES, DEFAULT_METRICS, METRICS, Metric, metric
from .plan import (BUDGET_CAPS, Plan, PlannedRun, check_existing, cpu_count, parse_overrides, plan_study,
                   run_status)
from .plots import make_plots, plot_bars, plot_curves
from .report import write_report
from .results import RunResult, VariantResult, collect, mean_std
from .run import run_study, write_outputs
from .spec import (BUDGETS, DEFAULT_BUDGET, REPORT_KEYS, SPEC_KEYS, FigureSpec, StudySpec, builtin_dir,
                   builtin_specs, load_spec, parse_spec, resolve_spec_path)
from .tables import fmt_stat, markdown_table, table_rows, write_csv, write_runs_csv
from .variants import Variant

# The function that runs a plan stays ``cnnlab.study.execute.execute``: re-exported here it
# would hide the module ``cnnlab.study.execute`` behind the package attribute of the same name.
__all__ = [
    "BUDGETS", "BUDGET_CAPS", "CURVE_METRICS", "CURVE_X", "DEFAULT_BUDGET", "DEFAULT_CURVES", "DEFAULT_METRICS",
    "METRICS", "REPORT_KEYS", "SPEC_KEYS", "FigureSpec", "Metric", "Plan", "PlannedRun", "RunResult", "StudySpec",
    "Variant", "VariantResult", "add_study_arguments", "add_study_parser", "builtin_dir", "builtin_specs",
    "check_existing", "collect", "cpu_count", "estimate_run", "fmt_stat", "list_studies", "load_spec",
    "make_plots", "markdown_table", "mean_std", "metric", "parse_overrides", "parse_spec", "plan_study",
    "plot_bars", "plot_curves", "print_plan", "resolve_spec_path", "run_status", "run_study",
    "run_study_command", "study_main", "table_rows", "worker_main", "write_csv", "write_outputs",
    "write_report", "write_runs_csv",
]
