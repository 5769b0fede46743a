"""Generated documentation stays in step with the code: docs/cli.md, the tables of docs/models.md, doc links."""
from __future__ import annotations

import difflib
import importlib.util
import re
import sys
from pathlib import Path

import pytest

from cnnlab.config import FIELDS, RESUME_OVERRIDABLE

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    """Import benchmarks/<name>.py (a script folder, not a package)."""
    path = ROOT / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_docs_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _assert_current(doc: Path, expected: str, script: str) -> None:
    actual = doc.read_text() if doc.exists() else ""
    if actual == expected:
        return
    diff = list(difflib.unified_diff(actual.splitlines(), expected.splitlines(), "on disk", "generated",
                                     lineterm="", n=0))
    shown = "\n".join(diff[:40]) + (f"\n... {len(diff) - 40} more diff lines" if len(diff) > 40 else "")
    pytest.fail(f"{doc.relative_to(ROOT)} is out of date with the code; regenerate it with\n"
                f"    .venv/bin/python {script} --write\n{shown}", pytrace=False)


@pytest.fixture(scope="module")
def cli_reference():
    return _script("cli_reference")


def test_cli_reference_is_current(cli_reference):
    _assert_current(cli_reference.DOC, cli_reference.render(), "benchmarks/cli_reference.py")


def test_cli_reference_covers_every_flag_and_the_resume_rule(cli_reference):
    text = cli_reference.render()
    for name in FIELDS:
        assert f"--{name.replace('_', '-')}" in text, name
    resume_line = next(line for line in text.splitlines() if line.startswith("- **`--resume RUN_DIR`**"))
    listed = set(re.findall(r"`--([\w-]+)`", resume_line.split("Only these flags may change it")[1]))
    assert {k.replace("_", "-") for k in RESUME_OVERRIDABLE} == listed
    for command in ("train", "eval", "predict", "models", "datasets", "study"):
        assert f"## `cnnlab {command}`" in text


def test_model_tables_are_current():
    """Both tables of docs/models.md, regenerated on the meta device (about 10 s on 2 cores)."""
    table = _script("model_table")
    expected = table.fill(table.DOC.read_text(), table.tables())
    _assert_current(table.DOC, expected, "benchmarks/model_table.py")


def test_referenced_docs_exist():
    """Every docs/*.md named in the package, the benchmarks or the docs is there (cnnlab train --help cites
    docs/cli.md)."""
    sources = [ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("cnnlab/**/*.py"), *ROOT.glob("benchmarks/*.py")]
    missing = sorted({f"{src.relative_to(ROOT)}: {ref}" for src in sources
                      for ref in re.findall(r"\bdocs/[\w-]+\.md\b", src.read_text())
                      if not (ROOT / ref).exists()})
    assert not missing, missing
