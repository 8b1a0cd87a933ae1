"""What newer CPythons change under scopewatch's asyncio patches (3.14, 3.15), on real asyncio.

Each test names the CPython change it guards and runs wherever ``make compat`` finds an
interpreter that has it; elsewhere it is skipped with the exact version it needs. The facts read
from CPython's source that need no test are in the README's "Python versions" section.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

from scopewatch import semconv
from scopewatch.instrumentation import tasks as task_instrumentation
from tests.support.source_lines import marked_line

C_TASK = getattr(asyncio.tasks, "_CTask", None)
HERE = Path(__file__)


def line(marker: str) -> int:
    return marked_line(HERE, marker)


def tracked(task: Any) -> bool:
    """Whether scopewatch follows ``task`` (asked while it runs: ended tasks are let go)."""
    tracker = task_instrumentation._tracker
    return tracker is not None and tracker.record_of(task) is not None


async def current() -> tuple[Any, bool]:
    task = asyncio.current_task()
    return task, tracked(task)


def test_tasks_stay_c_tasks_that_asyncio_knows_as_current(instrument):
    """3.14 keeps the current task on the thread state for C tasks only (gh-129898, gh-131709):
    scopewatch's ``Task`` must stay a subclass of the C task, never the pure-Python one."""
    instrument()

    async def main() -> None:
        task = asyncio.get_running_loop().create_task(current())
        assert await task == (task, True)
        if C_TASK is not None:
            assert isinstance(task, C_TASK)

    asyncio.run(main())


@pytest.mark.skipif(sys.version_info < (3, 12), reason="needs Python 3.12 (eager tasks)")
def test_eager_tasks_stay_c_tasks_that_asyncio_knows_as_current(instrument):
    instrument()

    async def eager() -> tuple[Any, Any, bool]:
        first = asyncio.current_task()  # runs inside create_task, before it returns
        await asyncio.sleep(0)
        return first, *await current()

    async def main() -> None:
        asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)
        task = asyncio.create_task(eager())
        assert await task == (task, task, True)
        if C_TASK is not None:
            assert isinstance(task, C_TASK)

    asyncio.run(main())


def test_a_user_factory_without_keywords_still_composes(instrument):
    """A legacy ``factory(loop, coro)`` keeps working when ``create_task`` gets no keywords."""
    instrument()
    built: list[Any] = []

    def legacy_factory(loop: Any, coro: Any) -> Any:
        task = asyncio.Task(coro, loop=loop)
        built.append(task)
        return task

    async def main() -> None:
        asyncio.get_running_loop().set_task_factory(legacy_factory)
        task = asyncio.create_task(current())
        assert await task == (task, True)
        assert built == [task]

    asyncio.run(main())


@pytest.mark.skipif(
    sys.version_info < (3, 14),
    reason="needs Python 3.14 (create_task forwards eager_start to the task, gh-128307)",
)
def test_create_task_forwards_eager_start(instrument):
    instrument()
    steps: list[str] = []

    async def eager() -> None:
        steps.append("started")
        await asyncio.sleep(0)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = loop.create_task(eager(), eager_start=True, name="eager")  # type: ignore[call-arg]
        assert steps == ["started"]  # ran before create_task returned
        assert task.get_name() == "eager"
        assert tracked(task)
        await task

    asyncio.run(main())


@pytest.mark.skipif(
    sys.version_info < (3, 14),
    reason="needs Python 3.14 (TaskGroup.create_task records the awaited-by link)",
)
def test_task_group_children_keep_their_awaited_by_link(instrument):
    instrument()

    async def child() -> Any:
        return asyncio.capture_call_graph()  # type: ignore[attr-defined]

    async def main() -> None:
        parent = asyncio.current_task()
        async with asyncio.TaskGroup() as group:
            task = group.create_task(child(), name="child")
        graph = task.result()
        assert parent in [link.future for link in graph.awaited_by]

    asyncio.run(main())


def _stand_in_cancel(self: Any) -> None:
    """What 3.15's ``TaskGroup.cancel()`` does (read in CPython's taskgroups.py), for older
    Pythons: a stand-in, since no 3.15 interpreter can be installed here."""
    if not self._entered:
        self._cancel_on_enter = True
        return
    if self._exiting and not self._tasks:
        return
    if not self._aborting:
        self._abort()
        if self._parent_task and not self._parent_cancel_requested:
            self._parent_cancel_requested = True
            self._parent_task.cancel()


@pytest.fixture
def group_cancel(monkeypatch) -> bool:
    """``TaskGroup.cancel``: ``True`` for the real one (3.15+), ``False`` for the stand-in."""
    if sys.version_info < (3, 11):
        pytest.skip("needs Python 3.11 (asyncio.TaskGroup)")
    if "cancel" in asyncio.TaskGroup.__dict__:
        return True
    monkeypatch.setattr(asyncio.TaskGroup, "cancel", _stand_in_cancel, raising=False)
    monkeypatch.setattr(asyncio.TaskGroup, "_cancel_on_enter", False, raising=False)
    return False


def test_task_group_cancel_is_a_normal_exit_not_a_violation(group_cancel, instrument):
    """3.15's ``TaskGroup.cancel()`` (gh-108951) ends the group without ``CancelledError``:
    an explicit cancel by the line that called it, not a swallowed cancellation."""
    telemetry = instrument(spans="all")

    async def main() -> str:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(asyncio.sleep(10))
                group.cancel()  # type: ignore[attr-defined]  # <- cancel
                await asyncio.sleep(10)
        except asyncio.CancelledError:
            if group_cancel:
                raise
            return "exited"  # before 3.15 __aexit__ does not suppress what cancel() delivers
        return "exited"

    assert asyncio.run(main()) == "exited"
    assert telemetry.violation_spans() == []
    (span,) = telemetry.spans(semconv.SPAN_ASYNCIO_TASK_GROUP)
    attributes = dict(span.attributes or {})
    assert attributes[semconv.CANCEL_ORIGIN] == semconv.ORIGIN_EXPLICIT
    (cancel,) = [event for event in span.events if event.name == semconv.EVENT_CANCEL]
    assert (cancel.attributes or {})[semconv.CANCEL_REASON] == "TaskGroup.cancel()"
    assert attributes[semconv.CANCEL_LOCATION].endswith(f":{line('# <- cancel')}")
