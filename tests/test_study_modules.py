"""The layout of cnnlab.study: one job per module, imports going one way (no cycles), and the
names other code relies on reachable from the package."""
from __future__ import annotations

import ast
from pathlib import Path

import cnnlab.study

STUDY_DIR = Path(cnnlab.study.__file__).parent


def sibling_imports(path: Path) -> set[str]:
    """The cnnlab.study modules ``path`` imports (``from .x import ...``), at any depth of the file."""
    return {n.module.split(".")[0] for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, ast.ImportFrom) and n.level == 1 and n.module}


def test_modules_import_each_other_without_cycles():
    graph = {p.stem: sibling_imports(p) for p in STUDY_DIR.glob("*.py") if p.stem not in ("__init__", "__main__")}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        assert module not in path, f"import cycle: {' -> '.join(path + [module])}"
        if module in done:
            return
        for dep in graph[module]:
            visit(dep, path + [module])
        done.add(module)

    for module in graph:
        visit(module, [])


def test_package_names_and_built_in_specs():
    from cnnlab.study import execute

    assert callable(execute.execute) and callable(execute.worker_main)  # the module, not hidden by its function
    assert all(hasattr(cnnlab.study, name) for name in cnnlab.study.__all__)
    assert cnnlab.study.builtin_dir() == STUDY_DIR / "specs"
    assert set(cnnlab.study.builtin_specs()) == {p.stem for p in (STUDY_DIR / "specs").glob("*.yaml")}
