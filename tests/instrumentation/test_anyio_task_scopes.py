"""anyio's per-task scope on asyncio (``TaskHandle._run_coro``, anyio 4.14+): tracked late.

Every spawned task enters it, so it is not tracked at its enter; a task that enters a tracked
scope, or whose own scope is cancelled, has it tracked from then on, below its other scopes
(so ``task_returned`` and cancel origins read as when it was tracked from its enter).
"""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from scopewatch import semconv
from scopewatch.instrumentation import _scope_state as state
from tests.support.markers import needs_per_task_scope
from tests.support.source_lines import marked_line

pytestmark = needs_per_task_scope


def _kinds(task: Any) -> list[tuple[str, bool]]:
    tracker = state.tracker
    assert tracker is not None
    return [(record.kind, record.user) for record in tracker.records_of(task)]


def test_a_task_without_tracked_scopes_has_its_own_scope_untracked(instrument: Any) -> None:
    instrument()
    seen: list[list[tuple[str, bool]]] = []

    async def child() -> None:
        await anyio.lowlevel.checkpoint()
        seen.append(_kinds(asyncio.current_task()))

    async def main() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(child)

    anyio.run(main, backend="asyncio")
    assert seen == [[]]


def test_a_task_s_first_tracked_scope_tracks_its_own_scope_below(instrument: Any) -> None:
    instrument()
    seen: list[list[tuple[str, bool]]] = []

    async def child() -> None:
        with anyio.move_on_after(5):
            seen.append(_kinds(asyncio.current_task()))
        seen.append(_kinds(asyncio.current_task()))

    async def main() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(child)

    anyio.run(main, backend="asyncio")
    own = (semconv.SPAN_ANYIO_CANCEL_SCOPE, False)
    assert seen == [[own, (semconv.SPAN_ANYIO_MOVE_ON_AFTER, True)], [own]]


def test_a_task_s_own_scope_is_tracked_from_its_cancel(instrument: Any) -> None:
    from anyio._backends._asyncio import TaskGroup

    if not hasattr(TaskGroup, "create_task"):
        pytest.skip("TaskGroup.create_task (a task handle to cancel) is anyio 4.14+")
    instrument()
    requests: list[Any] = []

    async def child() -> None:
        await anyio.sleep(5)

    async def main() -> None:
        async with anyio.create_task_group() as group:
            handle = group.create_task(child())
            await anyio.lowlevel.checkpoint()
            handle.cancel()  # HANDLE-CANCEL
            tracker = state.tracker
            assert tracker is not None
            record = tracker.record_of(handle._cancel_scope)
            requests.append(record.cancel if record is not None else None)

    anyio.run(main, backend="asyncio")
    (cancel,) = requests
    assert cancel is not None
    assert cancel.origin == semconv.ORIGIN_PARENT  # TaskHandle.cancel() is anyio code
    assert cancel.location == f"{__file__}:{marked_line(__file__, '# HANDLE-CANCEL')}"
