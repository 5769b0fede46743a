"""Variants: the named sets of config overrides a study compares, made from a spec's ``grid:``
(every combination of the axes) and ``variants:`` (listed by name) sections.

Also the one check every layer of overrides passes (``base``, ``budgets.<b>``, each variant,
``--set``): known config keys only, with a hint, and dotted keys only into option mappings.
"""
from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from typing import Any

from ..config import FIELDS
from ..errors import CnnlabError, suggest

# a variant name becomes part of a run folder's name: these characters survive as they are
NAME_OK = re.compile(r"^[A-Za-z0-9._+=,-]+$")
# keys of a listed variant that describe it rather than set a config key
VARIANT_RESERVED = ("name", "paper", "figure", "description")
# config fields that are mappings of options: only these take dotted keys (model_options.widths)
OPTION_FIELDS = tuple(sorted(k for k, f in FIELDS.items() if str(f.type).startswith("dict")))


@dataclass
class Variant:
    name: str  # display name, used by paper:/figures: and the tables
    values: dict[str, Any]  # config overrides; dotted keys set nested options
    paper: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    figure: str | None = None  # the paper's figure of this variant, relative to the spec file

    @property
    def folder(self) -> str:
        return re.sub(r"[^A-Za-z0-9._+=,-]", "_", self.name)

    def settings(self) -> str:
        """Its config changes in one line (``act=relu, norm=batch``), for the plan and the report."""
        return ", ".join(f"{k}={short_value(v)}" for k, v in self.values.items()) or "-"


def expect_mapping(value: Any, where: str, allow_none: bool = True) -> dict:
    if value is None and allow_none:
        return {}
    if not isinstance(value, dict):
        raise CnnlabError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def check_config_keys(values: dict[str, Any], where: str) -> dict[str, Any]:
    """Normalize dashes, reject unknown config keys (with a hint); dotted keys must start at a dict field."""
    out = {}
    for key, value in values.items():
        k = str(key).replace("-", "_")
        head = k.split(".", 1)[0]
        if head not in FIELDS:
            hint = suggest(head, FIELDS)
            raise CnnlabError(f"{where}: unknown config key {key!r}{f' ({hint})' if hint else ''}")
        if "." in k and head not in OPTION_FIELDS:
            raise CnnlabError(f"{where}: {key!r}: only option mappings ({', '.join(OPTION_FIELDS)}) "
                              f"take dotted keys")
        out[k] = value
    return out


def short_value(value: Any) -> str:
    """A config value as written in names and tables: ``true``, ``none``, ``8,16``, ``{a: 1}``."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {short_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(short_value(v) for v in value) + "]"
    return _label_value(value)


def _label_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    if isinstance(v, (list, tuple)):
        return ",".join(map(_label_value, v))
    return str(v)


def _label(key: str, value: Any) -> str:
    """``lr=0.1``: the name a grid value listed without a label gets (``model_options.widths`` -> ``widths=``)."""
    if isinstance(value, dict):
        text = ",".join(f"{k}={_label_value(v)}" for k, v in value.items())
    else:
        text = _label_value(value)
    return f"{key.split('.')[-1]}={text}"


MAX_VARIANTS = 10_000  # a spec making more is refused at once (a typo'd grid can make millions)


def grid_variants(grid: Any, where: str) -> list[Variant]:
    """Every combination of the axes; a mapping axis is ``label: value``, a list axis is named ``key=value``."""
    grid = check_config_keys(expect_mapping(grid, where), where)
    axes: list[list[tuple[str, str, Any]]] = []
    for key, values in grid.items():
        w = f"{where}.{key}"
        if isinstance(values, dict):  # label -> value
            if not values:
                raise CnnlabError(f"{w}: needs at least one value")
            axes.append([(key, "" if lab is None else str(lab), val) for lab, val in values.items()])
        elif isinstance(values, list):
            if not values:
                raise CnnlabError(f"{w}: needs at least one value")
            axes.append([(key, _label(key, val), val) for val in values])
        else:
            raise CnnlabError(f"{w}: expected a list of values or a mapping label: value, got {values!r}")
    count = math.prod(len(a) for a in axes)
    if count > MAX_VARIANTS:  # refused before a single one is made: planning them alone would take hours
        raise CnnlabError(f"{where}: {' x '.join(str(len(a)) for a in axes)} = {count:,} variants; a study takes at "
                          f"most {MAX_VARIANTS:,} (split it into several studies, or list fewer values)")
    out = []
    for combo in itertools.product(*axes):
        labels = [lab for _, lab, _ in combo if lab]  # an empty label ("" for the default) adds nothing
        out.append(Variant("+".join(labels) or "base", {k: v for k, _, v in combo}))
    return out


def listed_variants(items: Any, where: str) -> list[Variant]:
    """``variants:``: each a mapping with a name, config keys and, optionally, paper/figure/description."""
    if not isinstance(items, list) or not items:
        raise CnnlabError(f"{where}: expected a non-empty list of variants (each a mapping with a name)")
    out = []
    for i, item in enumerate(items):
        w = f"{where}[{i}]"
        item = expect_mapping(item, w, allow_none=False)
        name = item.get("name")
        if name is None or str(name).strip() == "":
            raise CnnlabError(f"{w}: every variant needs a name")
        w = f"{where}[{name}]"
        values = check_config_keys({k: v for k, v in item.items() if k not in VARIANT_RESERVED}, w)
        paper = expect_mapping(item.get("paper"), f"{w}.paper")
        figure = item.get("figure")
        out.append(Variant(str(name), values, dict(paper), str(item.get("description") or ""),
                           None if figure is None else str(figure)))
    return out


def make_variants(grid: Any, listed: Any, combine: Any, source: str) -> list[Variant]:
    """The variants of a spec: grid and list as a union, or each listed variant at every grid point."""
    grid = grid_variants(grid, f"{source}: grid") if grid is not None else []
    listed = listed_variants(listed, f"{source}: variants") if listed is not None else []
    combine = str(combine)
    if combine not in ("union", "product"):
        raise CnnlabError(f"{source}: combine: must be union or product, got {combine!r}")
    if combine == "product" and grid and listed:
        if len(grid) * len(listed) > MAX_VARIANTS:
            raise CnnlabError(f"{source}: combine: product makes {len(listed)} x {len(grid)} = "
                              f"{len(grid) * len(listed):,} variants; a study takes at most {MAX_VARIANTS:,}")
        variants = [Variant(f"{v.name}+{g.name}", {**g.values, **v.values}, dict(v.paper), v.description, v.figure)
                    for v in listed for g in grid]
    else:
        variants = grid + listed
    variants = variants or [Variant("base", {})]
    _check_folders(variants, source)
    return variants


def _check_folders(variants: list[Variant], source: str) -> None:
    """Each variant needs a run folder of its own: two names must not map to the same folder."""
    seen: dict[str, str] = {}
    for v in variants:
        if not NAME_OK.match(v.folder) or v.folder in (".", ".."):
            raise CnnlabError(f"{source}: variant name {v.name!r} cannot be a folder name")
        if v.folder in seen:
            raise CnnlabError(f"{source}: two variants are both named {v.name!r}" if seen[v.folder] == v.name else
                              f"{source}: variants {seen[v.folder]!r} and {v.name!r} map to the same folder {v.folder!r}")
        seen[v.folder] = v.name
