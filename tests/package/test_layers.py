"""The package's layering (DESIGN section 7), read from the source: who may import whom.

``_core`` is pure bookkeeping (no OpenTelemetry, no patch layer, no telemetry), ``telemetry``
never reaches into the patch layer, and no two scopewatch modules import each other, not even
through an import inside a function (those hide a circle; ``TYPE_CHECKING`` blocks don't count).
"""

from __future__ import annotations

import ast
from typing import TYPE_CHECKING

from tests.support.paths import ROOT

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

SOURCE = ROOT / "src"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted((SOURCE / "scopewatch").rglob("*.py"))}


def _runtime_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that runs (module level or in a function), ``TYPE_CHECKING`` aside."""
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only.update(id(inner) for statement in node.body for inner in ast.walk(statement))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in type_only:
            yield node


def imported(name: str) -> set[str]:
    """Top-level names and scopewatch modules that module ``name`` imports at run time."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        if node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            module = ".".join([*base, *([node.module] if node.module else [])])
        else:
            module = node.module or ""
        submodules = {f"{module}.{alias.name}" for alias in node.names} & MODULES.keys()
        if len(submodules) < len(node.names):  # names defined in ``module`` itself
            found.add(module)
        found.update(submodules)
    return found


GRAPH = {
    name: {other for other in imported(name) if other in MODULES and other != name}
    for name in MODULES
}


def _circles() -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(name: str) -> None:
        index[name] = low[name] = len(index)
        stack.append(name)
        for other in sorted(GRAPH[name]):
            if other not in index:
                visit(other)
                low[name] = min(low[name], low[other])
            elif other in stack:
                low[name] = min(low[name], index[other])
        if low[name] == index[name]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == name:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for name in MODULES:
        if name not in index:
            visit(name)
    return circles


def _layer(prefix: str) -> list[str]:
    return [name for name in MODULES if name == prefix or name.startswith(prefix + ".")]


def _importing(modules: list[str], roots: tuple[str, ...]) -> dict[str, list[str]]:
    """``module -> what it imports from under any of roots``, for the modules that do."""
    found = {
        name: sorted(
            other
            for other in imported(name)
            if any(other == root or other.startswith(root + ".") for root in roots)
        )
        for name in modules
    }
    return {name: others for name, others in found.items() if others}


def test_the_reader_sees_every_module_and_its_imports() -> None:
    assert "scopewatch._core.tracker" in MODULES
    assert "scopewatch._core.records" in GRAPH["scopewatch._core.tracker"]
    assert "opentelemetry.trace" in imported("scopewatch.telemetry.scopes")


def test_the_core_imports_no_opentelemetry_no_patch_layer_and_no_telemetry() -> None:
    forbidden = ("opentelemetry", "scopewatch.instrumentation", "scopewatch.telemetry")
    assert _importing(_layer("scopewatch._core"), forbidden) == {}


def test_telemetry_never_imports_the_patch_layer() -> None:
    assert _importing(_layer("scopewatch.telemetry"), ("scopewatch.instrumentation",)) == {}


def test_no_two_modules_import_each_other() -> None:
    assert _circles() == []


def test_the_task_trackers_are_handed_their_facts_not_reading_the_event_loop() -> None:
    """The creating task and a closing loop's tasks come in as arguments from the patch layer."""
    bookkeeping = [
        "scopewatch._core.records",
        "scopewatch._core.tasks",
        "scopewatch._core.trio_tasks",
    ]
    assert _importing(bookkeeping, ("asyncio", "trio")) == {}
