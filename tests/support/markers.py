"""Skip markers for what the running Python or the installed anyio cannot show, defined once.

``make compat`` runs the suite on every CPython 3.10+ found and on anyio 4.13, where these skip.
"""

from __future__ import annotations

import sys
from importlib.metadata import version

import pytest

ANYIO = tuple(int(part) for part in version("anyio").split(".")[:2])
PER_TASK_SCOPE = ANYIO >= (4, 14)
"""anyio 4.14+ runs each task inside a cancel scope of its own (``TaskHandle._run_coro``)."""

needs_311 = pytest.mark.skipif(
    sys.version_info < (3, 11),
    reason="asyncio.timeout, asyncio.TaskGroup and Task.cancelling() exist from Python 3.11",
)
needs_311_tracebacks = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="a bare raise keeps the frame before 3.11"
)
needs_per_task_scope = pytest.mark.skipif(
    not PER_TASK_SCOPE,
    reason="task_returned is seen through anyio's per-task scope (anyio 4.14+); before, the "
    "same program is cross_task_exit (other_task), whose hint is the same hold_in_task fix",
)
