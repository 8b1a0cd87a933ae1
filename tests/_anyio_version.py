"""What the installed anyio can show (``make compat`` also runs the suite on anyio 4.13)."""

from __future__ import annotations

from importlib.metadata import version

import pytest

ANYIO = tuple(int(part) for part in version("anyio").split(".")[:2])
PER_TASK_SCOPE = ANYIO >= (4, 14)
"""anyio 4.14+ runs each task inside a cancel scope of its own (``TaskHandle._run_coro``)."""

needs_per_task_scope = pytest.mark.skipif(
    not PER_TASK_SCOPE,
    reason="task_returned is seen through anyio's per-task scope (anyio 4.14+); before, the "
    "same program is cross_task_exit (other_task), whose hint is the same hold_in_task fix",
)
