"""Per-test outcomes of a peer project's suite: classify, store, compare, tabulate.

Pure functions shared by the pytest plugin that records a run (``peer_plugin.py``), the runner
that compares a plain and an instrumented run (``peer_anyio.py``) and the project's tests
(``tests/package/test_compat_tools.py``). No pytest import here.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from pathlib import Path

OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")
MISSING = "missing"
NO_BACKEND = "-"
"""Backend label of a test that is not parametrised by backend."""

_SEVERITY = {"passed": 0, "skipped": 1, "xfailed": 1, "xpassed": 1, "failed": 2, "error": 3}


def outcome_of(when: str, passed: bool, failed: bool, wasxfail: bool) -> str | None:
    """The outcome one phase report stands for (``None``: the phase says nothing new).

    Mirrors pytest's terminal summary: a failing setup or teardown is an ``error``; a skip
    during an ``xfail`` test is ``xfailed``; a non-strict unexpected pass is ``xpassed``.
    """
    if when == "call":
        if passed:
            return "xpassed" if wasxfail else "passed"
        if failed:
            return "failed"
        return "xfailed" if wasxfail else "skipped"
    if failed:
        return "error"
    if not passed:
        return "xfailed" if wasxfail else "skipped"
    return None


def merge(previous: str | None, new: str | None) -> str | None:
    """Keep the more severe of two phase outcomes of one test (error > failed > skip > pass)."""
    if previous is None:
        return new
    if new is None:
        return previous
    return new if _SEVERITY[new] > _SEVERITY[previous] else previous


def save(
    path: Path, outcomes: Mapping[str, str], backends: Mapping[str, str], **extra: Any
) -> None:
    """Write one run's results as JSON (``outcomes`` and ``backends`` keyed by node id)."""
    data = {"outcomes": dict(outcomes), "backends": dict(backends), **extra}
    path.write_text(json.dumps(data, indent=1, sort_keys=True))


def load(path: Path) -> dict[str, Any]:
    """Read a results file written by :func:`save`."""
    data: dict[str, Any] = json.loads(path.read_text())
    unknown = set(data["outcomes"].values()) - set(OUTCOMES)
    if unknown:
        raise ValueError(f"{path}: unknown outcomes {sorted(unknown)}; known: {OUTCOMES}")
    return data


def differences(
    plain: Mapping[str, str], instrumented: Mapping[str, str]
) -> dict[str, tuple[str, str]]:
    """Node ids whose outcome differs, with (plain, instrumented); absent tests are ``missing``."""
    found: dict[str, tuple[str, str]] = {}
    for nodeid in sorted(plain.keys() | instrumented.keys()):
        pair = (plain.get(nodeid, MISSING), instrumented.get(nodeid, MISSING))
        if pair[0] != pair[1]:
            found[nodeid] = pair
    return found


def settle(
    plain_history: Mapping[str, list[str]], instrumented_history: Mapping[str, list[str]]
) -> tuple[list[str], list[str]]:
    """Split retried node ids into (real differences, flaky).

    A test is flaky when some outcome was seen in both modes across all attempts; it is a real
    difference when the outcomes of the two modes never overlapped.
    """
    real: list[str] = []
    flaky: list[str] = []
    for nodeid in sorted(plain_history.keys() | instrumented_history.keys()):
        seen_plain = set(plain_history.get(nodeid, [])) or {MISSING}
        seen_instrumented = set(instrumented_history.get(nodeid, [])) or {MISSING}
        (flaky if seen_plain & seen_instrumented else real).append(nodeid)
    return real, flaky


def tally(outcomes: Mapping[str, str], backends: Mapping[str, str]) -> dict[str, Counter[str]]:
    """Outcome counts per backend label (and ``all``)."""
    counts: dict[str, Counter[str]] = {"all": Counter()}
    for nodeid, outcome in outcomes.items():
        backend = backends.get(nodeid, NO_BACKEND)
        counts.setdefault(backend, Counter())[outcome] += 1
        counts["all"][outcome] += 1
    return counts


def table(headers: Iterable[str], rows: Iterable[Iterable[object]]) -> str:
    """A plain-text table with left-aligned columns."""
    lines = [[str(cell) for cell in headers], *[[str(cell) for cell in row] for row in rows]]
    widths = [max(len(line[column]) for line in lines) for column in range(len(lines[0]))]
    rendered = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        for line in lines
    ]
    rendered.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in rendered)
