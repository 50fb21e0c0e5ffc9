"""The package layout: which package may import which (docs/design.md), checked on the code and at run time.

engine <- service <- app / tasks; config imports the standard library only; the CLI may import all.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

#: For each package, the top-level names its modules must never import (directly, at any depth).
FORBIDDEN: dict[str, frozenset[str]] = {
    "engine": frozenset({"service", "app", "tasks", "cli", "config", "flask", "werkzeug", "celery", "redis", "boto3"}),
    "service": frozenset({"app", "tasks", "cli", "flask", "werkzeug"}),
    "app": frozenset({"tasks", "cli"}),
    "tasks": frozenset({"app", "cli", "flask", "werkzeug"}),
}

#: Spool's own top-level packages (the only non-stdlib names config/ may import are its own).
OWN = frozenset({"engine", "service", "app", "tasks", "cli", "config"})


def imported_roots(path: Path) -> set[str]:
    """The top-level package of every absolute import in a module, lazy imports included."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def modules_of(package: str) -> list[Path]:
    """Every module of one of Spool's packages."""
    return sorted((REPO_ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_each_package_imports_only_what_the_design_allows(package: str) -> None:
    wrong = {
        str(path.relative_to(REPO_ROOT)): sorted(imported_roots(path) & FORBIDDEN[package])
        for path in modules_of(package)
    }
    assert {name: roots for name, roots in wrong.items() if roots} == {}


def test_config_imports_the_standard_library_only() -> None:
    for path in modules_of("config"):
        foreign = {root for root in imported_roots(path) if root not in sys.stdlib_module_names}
        assert foreign <= {"config", "__future__"}, f"{path.name} imports {sorted(foreign - {'config'})}"


def loaded_after(statement: str) -> set[str]:
    """The top-level modules a fresh interpreter has loaded after running ``statement``."""
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    return set(json.loads(result.stdout.splitlines()[-1]))


def test_a_worker_process_does_not_import_flask() -> None:
    # What `celery -A tasks.celery_app worker` loads: the app, the worker signals and every task module.
    loaded = loaded_after("import tasks.celery_app, tasks.synthesis, tasks.books, tasks.worker")
    assert {"celery", "service"} <= loaded
    assert not loaded & {"flask", "werkzeug", "app"}


def test_the_engine_imports_no_service_machinery() -> None:
    loaded = loaded_after("import engine, engine.book, engine.audiobook, engine.subtitles")
    assert not loaded & {"flask", "werkzeug", "celery", "redis", "boto3", "service", "app", "tasks"}


def test_the_service_core_imports_no_web_framework() -> None:
    modules = sorted(p.stem for p in modules_of("service") if p.stem != "__init__")
    loaded = loaded_after("import " + ", ".join(f"service.{m}" for m in modules))
    assert not loaded & {"flask", "werkzeug", "app"}
