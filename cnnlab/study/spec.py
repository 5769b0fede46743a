"""The study spec: what a spec file holds (:class:`StudySpec`), where the built-in specs live,
and reading one (:func:`load_spec`, :func:`parse_spec`).

:func:`parse_spec` reads the sections in a fixed order, one small reader per section, each
checked against what the sections before it established (``paper:`` and ``figures:`` name
variants, ``report:`` names metrics), so every mistake names the spec file and the key.
The format is documented in ``docs/studies.md``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import CnnlabError, suggest, unknown_names
from .metrics import CURVE_METRICS, CURVE_X, DEFAULT_CURVES, DEFAULT_METRICS, METRICS, Metric, metric
from .variants import MAX_VARIANTS, NAME_OK, Variant, check_config_keys, expect_mapping, grid_variants, make_variants

BUDGETS = ("smoke", "small", "full")  # what --budget picks and a spec's budgets: may tune
DEFAULT_BUDGET = "small"
SPEC_KEYS = ("name", "description", "reproduces", "source", "base", "grid", "variants", "combine", "seeds",
             "budgets", "report", "paper", "figures", "claims", "notes", "evaluations", "select")
REPORT_KEYS = ("metrics", "headline", "curves", "curve_x")
FIGURE_KEYS = ("title", "variants", "metric", "image", "caption")
EVALUATION_KEYS = ("corrupt", "levels", "denoiser", "variants", "ensemble")
SELECT_KEYS = ("variants", "folds", "grid", "metric")
# config keys whose value may name another variant's run folder as "@VARIANT" (cnnlab.study.plan)
REFERENCE_KEYS = ("features_from", "denoiser")


@dataclass
class FigureSpec:
    title: str
    variants: list[str]
    metric: str | None = None
    image: Path | None = None  # the paper's own figure, if the spec ships one
    caption: str = ""


@dataclass
class EvaluationSpec:
    """One extra evaluation of each finished run of ``variants`` (``cnnlab eval``), reported as
    ``acc@<name>``: on the test split corrupted by ``corrupt``, through ``denoiser`` when set."""

    name: str
    group: str  # the ``evaluations:`` entry it comes from (its levels make one accuracy-vs-level plot)
    corrupt: str | None
    level: float | None
    denoiser: str | None  # "@VARIANT" or a run folder
    variants: list[str]
    ensemble: bool = False  # the variant's seeds evaluated together, their probabilities averaged (cnnlab/ensemble.py)


@dataclass
class SelectSpec:
    """Grid search by k-fold cross-validation on the training split (two-stage paper Sec. 2.3)."""

    variants: list[str]
    folds: int
    grid: list[Variant]
    metric: str


@dataclass
class StudySpec:
    name: str
    source: str  # the spec file (or "built-in NAME")
    path: Path | None
    text: str  # the spec as written, for the report
    description: str = ""
    reproduces: str = ""
    paper_source: str = ""
    base: dict[str, Any] = field(default_factory=dict)
    variants: list[Variant] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    budgets: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    headline: str = "test_acc"
    curves: list[str] = field(default_factory=lambda: list(DEFAULT_CURVES))
    curve_x: str = "epoch"
    figures: list[FigureSpec] = field(default_factory=list)
    claims: list[str] = field(default_factory=list)
    notes: str = ""
    evaluations: list[EvaluationSpec] = field(default_factory=list)
    select: SelectSpec | None = None

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)

    def axes(self) -> list[str]:
        """The config keys that vary between variants, in first-seen order."""
        keys: list[str] = []
        for v in self.variants:
            keys += [k for k in v.values if k not in keys]
        return keys

    def paper_metrics(self) -> set[str]:
        """The metrics the paper gives a value for (their tables get Paper and Δ columns)."""
        return {k for v in self.variants for k in v.paper}

    @property
    def spec_dir(self) -> Path:
        """Where the spec's relative paths (figure images) start."""
        return self.path.parent if self.path is not None else Path(".")


# ------------------------------------------------------------------------------- finding a spec


def builtin_dir() -> Path:
    return Path(__file__).resolve().parent / "specs"


def builtin_specs() -> dict[str, Path]:
    d = builtin_dir()
    return {p.stem: p for p in sorted(d.glob("*.yaml"))} if d.is_dir() else {}


def resolve_spec_path(spec: str | Path) -> Path:
    """A spec file path, or the name of a built-in spec."""
    p = Path(spec)
    if p.is_file():
        return p
    builtins = builtin_specs()
    if str(spec) in builtins:
        return builtins[str(spec)]
    if p.suffix in (".yaml", ".yml") or "/" in str(spec):
        raise CnnlabError(f"{spec}: study spec not found")
    hint = suggest(spec, builtins)
    raise CnnlabError(f"{spec}: no such spec file or built-in study{f'; {hint}' if hint else ''} "
                      f"(built-in: {', '.join(builtins)}; see cnnlab study --list)")


def load_spec(spec: str | Path) -> StudySpec:
    """Read and validate a spec file (or built-in spec name). Every mistake names the file and key."""
    path = resolve_spec_path(spec)
    try:
        text = path.read_text()
    except OSError as e:
        raise CnnlabError(f"{path}: cannot read study spec ({e.strerror or e})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise CnnlabError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
    return parse_spec(data, source=str(path), text=text, path=path)


# ------------------------------------------------------------------------------- reading a spec


def parse_spec(data: Any, source: str = "spec", text: str | None = None, path: Path | None = None) -> StudySpec:
    """Validate a spec mapping (as loaded from YAML) into a :class:`StudySpec`, section by section."""
    if not isinstance(data, dict):
        raise CnnlabError(f"{source}: a study spec must be a mapping (name, base, grid/variants, ...)")
    unknown = [k for k in data if k not in SPEC_KEYS]
    if unknown:
        raise CnnlabError(f"{source}: unknown key {unknown_names(unknown, SPEC_KEYS)} "
                          f"(spec keys: {', '.join(SPEC_KEYS)})")
    spec = StudySpec(name=_read_name(data.get("name"), source, path), source=source, path=path,
                     text=text if text is not None else yaml.safe_dump(data, sort_keys=False),
                     description=_text(data, "description"), reproduces=_text(data, "reproduces"),
                     paper_source=_text(data, "source"), notes=_text(data, "notes"))
    _read_base(spec, data.get("base"))
    spec.variants = make_variants(data.get("grid"), data.get("variants"), data.get("combine", "union"), source)
    # without seeds: one run per variant, with the base config's seed
    spec.seeds = (read_seeds(data["seeds"], f"{source}: seeds") if "seeds" in data else
                  read_seeds([spec.base.get("seed", 0)], f"{source}: base.seed"))
    _read_budgets(spec, data.get("budgets"))
    _read_references(spec)
    _read_evaluations(spec, data.get("evaluations"))
    _read_select(spec, data.get("select"))
    _read_report(spec, data.get("report"))
    _read_paper(spec, data.get("paper"))
    _read_figures(spec, data.get("figures"))
    _read_claims(spec, data.get("claims"))
    _check_evaluation_metrics(spec)
    return spec


def _check_evaluation_metrics(spec: StudySpec) -> None:
    """``acc@NAME`` metrics (report, paper values, select) must name one of the spec's evaluations."""
    names = [e.name for e in spec.evaluations]
    used = list(spec.metrics) + ([spec.select.metric] if spec.select else [])
    for key in used:
        if "@" in key and key.partition("@")[2] not in names:
            hint = suggest(key.partition("@")[2], names)
            raise CnnlabError(f"{spec.source}: metric {key!r} names no evaluation of the spec"
                              f"{f' ({hint})' if hint else ''}; evaluations: {', '.join(names) or 'none'}")


def _text(data: dict, key: str) -> str:
    return str(data.get(key) or "").strip()


def _read_name(value: Any, source: str, path: Path | None) -> str:
    name = str(value or (path.stem if path is not None else "study"))
    if not NAME_OK.match(name):
        raise CnnlabError(f"{source}: name: {name!r} must be a plain folder name (letters, digits, . _ + = , -)")
    return name


def _read_base(spec: StudySpec, value: Any) -> None:
    where = f"{spec.source}: base"
    base = check_config_keys(expect_mapping(value, where), where)
    for k in ("name", "out"):
        if k in base:
            raise CnnlabError(f"{spec.source}: base.{k}: set by the study (runs go to "
                              f"<out>/studies/<name>-<budget>/runs); use --out instead")
    spec.base = base


def read_seeds(value: Any, where: str) -> list[int]:
    """``seeds:``: a list of distinct integers, or a count n meaning ``[0, ..., n-1]``."""
    if isinstance(value, bool):
        raise CnnlabError(f"{where}: expected a list of seeds or a count, got {value!r}")
    if isinstance(value, int):
        if not 1 <= value <= MAX_VARIANTS:
            raise CnnlabError(f"{where}: a seed count must be >= 1 and at most {MAX_VARIANTS:,}, got {value}")
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) for s in value):
        if len(set(value)) != len(value):
            raise CnnlabError(f"{where}: seeds repeat: {value}")
        return list(value)
    raise CnnlabError(f"{where}: expected a list of integer seeds or a count, got {value!r}")


def _read_budgets(spec: StudySpec, value: Any) -> None:
    where = f"{spec.source}: budgets"
    for b, over in expect_mapping(value, where).items():
        if b not in BUDGETS:
            raise CnnlabError(f"{where}: unknown budget {b!r} (choose from {', '.join(BUDGETS)})")
        over = dict(expect_mapping(over, f"{where}.{b}"))
        seeds = over.pop("seeds", None)
        over = check_config_keys(over, f"{where}.{b}")
        if seeds is not None:
            over["seeds"] = read_seeds(seeds, f"{where}.{b}.seeds")
        spec.budgets[b] = over


def _read_report(spec: StudySpec, value: Any) -> None:
    where = f"{spec.source}: report"
    report = expect_mapping(value, where)
    bad = [k for k in report if k not in REPORT_KEYS]
    if bad:
        raise CnnlabError(f"{where}: unknown key {', '.join(map(str, bad))} (report keys: {', '.join(REPORT_KEYS)})")
    if "metrics" in report:
        ms = report["metrics"]
        if not isinstance(ms, list) or not ms:
            raise CnnlabError(f"{where}.metrics: expected a non-empty list of metric names")
        spec.metrics = [metric(str(m), f"{where}.metrics").key for m in ms]
    spec.headline = metric(str(report.get("headline", spec.metrics[0])), f"{where}.headline").key
    if spec.headline not in spec.metrics:
        spec.metrics.insert(0, spec.headline)
    if "curves" in report:
        if not isinstance(report["curves"], list):
            raise CnnlabError(f"{where}.curves: expected a list of metric names")
        spec.curves = [_curve_metric(c, f"{where}.curves", "curves:").key for c in report["curves"]]
    spec.curve_x = str(report.get("curve_x", "epoch"))
    if spec.curve_x not in CURVE_X:
        raise CnnlabError(f"{where}.curve_x: must be one of {', '.join(CURVE_X)}, got {spec.curve_x!r}")


def _curve_metric(name: Any, where: str, lead: str) -> Metric:
    """A metric with per-epoch values (a learning curve can be drawn of it)."""
    m = metric(str(name), where)
    if not m.per_epoch:
        why = " (the test split is evaluated once, at the end: per-epoch curves are on validation, val_*)" \
            if m.key.startswith("test_") else ""
        raise CnnlabError(f"{where}: {name!r} has no per-epoch values{why} ({lead} {', '.join(CURVE_METRICS)})")
    return m


def _known_variant(spec: StudySpec, name: Any, where: str) -> str:
    names = [v.name for v in spec.variants]
    if str(name) not in names:
        hint = suggest(name, names)
        raise CnnlabError(f"{where}: unknown variant {name!r}{f' ({hint})' if hint else ''}; "
                          f"the variants are {', '.join(names)}")
    return str(name)


def _read_paper(spec: StudySpec, value: Any) -> None:
    """The paper's numbers per variant (a listed variant's own ``paper:`` wins); each is reported."""
    where = f"{spec.source}: paper"
    for vname, values in expect_mapping(value, where).items():
        v = spec.variant(_known_variant(spec, vname, where))
        v.paper = {**expect_mapping(values, f"{where}.{vname}", allow_none=False), **v.paper}
    for v in spec.variants:
        for mk, val in v.paper.items():
            m = metric(str(mk), f"{spec.source}: paper values of {v.name!r}")
            if m.key not in spec.metrics:
                spec.metrics.append(m.key)  # a paper figure is always shown next to its measurement
            if not isinstance(val, (int, float, str)) or isinstance(val, bool):
                raise CnnlabError(f"{where}.{v.name}.{mk}: expected a number (or a short text), got {val!r}")


def _read_figures(spec: StudySpec, value: Any) -> None:
    """The paper's figures: each variant's own ``figure:`` first, then the ``figures:`` list."""
    for v in spec.variants:
        if v.figure is not None:
            spec.figures.append(FigureSpec(f"{v.name}: paper figure", [v.name], None,
                                           spec_image(spec, v.figure, f"{spec.source}: {v.name}.figure")))
    if value is None:
        return
    if not isinstance(value, list):
        raise CnnlabError(f"{spec.source}: figures: expected a list of {{title, variants, metric, image}}")
    spec.figures += [_read_figure(spec, f, i) for i, f in enumerate(value)]


FIGURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp")


def spec_image(spec: StudySpec, value: Any, where: str) -> Path:
    """A figure image the spec ships: a relative path inside the spec's folder, with an image suffix.

    The report embeds the file (base64), so a spec naming ``/home/me/.ssh/id_rsa`` or ``../../secret``
    would copy that file into report.html: such a path (also via a link) is refused.
    """
    text = str(value)
    path = spec.spec_dir / text
    try:
        inside = not Path(text).is_absolute() and path.resolve().is_relative_to(spec.spec_dir.resolve())
    except (OSError, ValueError, RuntimeError):  # a NUL byte, a link loop
        inside = False
    if not inside:
        raise CnnlabError(f"{where}: {text!r} must be a path inside the spec's folder {spec.spec_dir}")
    if path.suffix.lower() not in FIGURE_SUFFIXES:
        raise CnnlabError(f"{where}: {text!r} must be an image ({', '.join(FIGURE_SUFFIXES)})")
    return path


def _read_figure(spec: StudySpec, value: Any, i: int) -> FigureSpec:
    where = f"{spec.source}: figures[{i}]"
    f = expect_mapping(value, where, allow_none=False)
    bad = [k for k in f if k not in FIGURE_KEYS]
    if bad:
        raise CnnlabError(f"{where}: unknown key {', '.join(map(str, bad))} ({', '.join(FIGURE_KEYS)})")
    names = f.get("variants") or [v.name for v in spec.variants]
    if not isinstance(names, list):
        raise CnnlabError(f"{where}.variants: expected a list of variant names")
    names = [_known_variant(spec, n, f"{where}.variants") for n in names]
    key = None if f.get("metric") is None else _curve_metric(f["metric"], f"{where}.metric", "use one of").key
    image = spec_image(spec, f["image"], f"{where}.image") if f.get("image") else None
    return FigureSpec(str(f.get("title") or f"Figure {i + 1}"), names, key, image, str(f.get("caption") or ""))


def _read_claims(spec: StudySpec, value: Any) -> None:
    claims = value or []
    if isinstance(claims, str):
        claims = [claims]
    if not isinstance(claims, list):
        raise CnnlabError(f"{spec.source}: claims: expected a list of sentences")
    spec.claims = [str(c) for c in claims]


def _reference(spec: StudySpec, value: Any, where: str) -> None:
    """``"@VARIANT"`` must name a variant of the spec (its run of the same seed is meant)."""
    if isinstance(value, str) and value.startswith("@"):
        _known_variant(spec, value[1:], where)


def _read_references(spec: StudySpec) -> None:
    for layer, where in [(spec.base, "base")] + [(v.values, f"variants[{v.name}]") for v in spec.variants]:
        for key in REFERENCE_KEYS:
            _reference(spec, layer.get(key), f"{spec.source}: {where}.{key}")
    for v in spec.variants:
        for key in REFERENCE_KEYS:
            if v.values.get(key) == f"@{v.name}":
                raise CnnlabError(f"{spec.source}: variants[{v.name}].{key}: a variant cannot use its own run")


def _read_evaluations(spec: StudySpec, value: Any) -> None:
    """``evaluations: {NAME: {corrupt: KIND[:LEVEL], levels: [...], denoiser: "@VARIANT", variants: [...]}}``;
    with ``levels`` one evaluation per level, named ``NAME-LEVEL``."""
    from ..data.corrupt import parse_corruption

    where = f"{spec.source}: evaluations"
    for name, entry in expect_mapping(value, where).items():
        w = f"{where}.{name}"
        if not NAME_OK.match(str(name)):
            raise CnnlabError(f"{w}: the name must be a plain file name (letters, digits, . _ + = , -)")
        entry = expect_mapping(entry, w, allow_none=False)
        bad = [k for k in entry if k not in EVALUATION_KEYS]
        if bad:
            raise CnnlabError(f"{w}: unknown key {unknown_names(bad, EVALUATION_KEYS)} "
                              f"(keys: {', '.join(EVALUATION_KEYS)})")
        variants = entry.get("variants") or [v.name for v in spec.variants]
        if not isinstance(variants, list):
            raise CnnlabError(f"{w}.variants: expected a list of variant names")
        variants = [_known_variant(spec, n, f"{w}.variants") for n in variants]
        denoiser = entry.get("denoiser")
        _reference(spec, denoiser, f"{w}.denoiser")
        corrupt, levels = entry.get("corrupt"), entry.get("levels")
        ensemble = entry.get("ensemble", False)
        if not isinstance(ensemble, bool) or (ensemble and (denoiser is not None or levels is not None)):
            raise CnnlabError(f"{w}.ensemble: expected true or false (an ensemble takes no denoiser and no levels)")
        if levels is None:
            if corrupt is not None:
                parse_corruption(str(corrupt), f"{w}.corrupt")
            spec.evaluations.append(EvaluationSpec(str(name), str(name), None if corrupt is None else str(corrupt),
                                                   None, denoiser, variants, ensemble))
            continue
        if corrupt is None or ":" in str(corrupt) or not isinstance(levels, list) or not levels:
            raise CnnlabError(f"{w}: with levels, give corrupt: KIND (no level) and levels: a list of numbers")
        for level in levels:
            c = parse_corruption(f"{corrupt}:{level}", f"{w}.levels")
            spec.evaluations.append(EvaluationSpec(f"{name}-{c.level:g}", str(name), str(c), c.level, denoiser,
                                                   variants))


def _read_select(spec: StudySpec, value: Any) -> None:
    if value is None:
        return
    where = f"{spec.source}: select"
    entry = expect_mapping(value, where, allow_none=False)
    bad = [k for k in entry if k not in SELECT_KEYS]
    if bad:
        raise CnnlabError(f"{where}: unknown key {unknown_names(bad, SELECT_KEYS)} (keys: {', '.join(SELECT_KEYS)})")
    names = entry.get("variants")
    if not isinstance(names, list) or not names:
        raise CnnlabError(f"{where}.variants: expected the list of variants whose setting is selected")
    names = [_known_variant(spec, n, f"{where}.variants") for n in names]
    folds = entry.get("folds", 3)
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise CnnlabError(f"{where}.folds: expected an integer >= 2, got {folds!r}")
    if entry.get("grid") is None:
        raise CnnlabError(f"{where}.grid: expected the axes to choose from, e.g. model_options.hidden: [...]")
    grid = grid_variants(entry["grid"], f"{where}.grid")
    key = metric(str(entry.get("metric", "test_acc")), f"{where}.metric").key
    if METRICS[key].better not in ("higher", "lower"):
        raise CnnlabError(f"{where}.metric: {key!r} has no better direction to select by")
    spec.select = SelectSpec(names, folds, grid, key)
