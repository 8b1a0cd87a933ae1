"""3.14's ``BaseEventLoop.create_task(coro, **kwargs)`` under scopewatch: every keyword passed on.

3.14 hands every keyword (``name``, ``context``, ``eager_start``, and any later one) to the task
factory, or without one to ``tasks.Task(coro, loop=self, **kwargs)`` (CPython
``Lib/asyncio/base_events.py``, ``BaseEventLoop.create_task``). Each test runs twice:

- ``real``: against the interpreter's own ``create_task``; needs Python 3.14, skipped before.
- ``stand-in``: before 3.14, against :func:`create_task_314` below, a STAND-IN written for these
  tests after the shape of 3.14's method (not CPython's code), set on ``BaseEventLoop`` before
  instrumenting, so scopewatch installs its 3.14 path over it. It needs a ``Task`` taking
  ``context`` (3.11) and, for the eager tests, ``eager_start`` (3.12).
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace

from scopewatch import semconv
from scopewatch.instrumentation import tasks as task_instrumentation
from tests.support.source_lines import marked_line

C_TASK = getattr(asyncio.tasks, "_CTask", asyncio.Task)
HERE = Path(__file__)
REAL = sys.version_info >= (3, 14)
needs_eager = pytest.mark.skipif(
    sys.version_info < (3, 12), reason="needs Python 3.12 (asyncio.Task(eager_start=...))"
)


def create_task_314(self: Any, coro: Any, **kwargs: Any) -> Any:
    """STAND-IN for 3.14's ``BaseEventLoop.create_task``, its shape as read in CPython's
    ``Lib/asyncio/base_events.py``: every keyword to the factory, or to ``Task``."""
    self._check_closed()
    if self._task_factory is not None:
        return self._task_factory(self, coro, **kwargs)
    task = asyncio.tasks.Task(coro, loop=self, **kwargs)
    if task._source_traceback:
        del task._source_traceback[-1]
    return task


@pytest.fixture(params=["stand-in", "real"])
def create_task(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which ``create_task`` runs: the interpreter's own (3.14+) or the stand-in (before)."""
    if request.param == "real":
        if not REAL:
            pytest.skip("needs Python 3.14 (BaseEventLoop.create_task(coro, **kwargs))")
        return "real"
    if REAL:
        pytest.skip("3.14+ runs the real create_task (the other parameter)")
    if sys.version_info < (3, 11):
        pytest.skip("the stand-in needs Python 3.11 (asyncio.Task(context=...))")
    monkeypatch.setattr(asyncio.BaseEventLoop, "create_task", create_task_314)
    monkeypatch.setattr(task_instrumentation, "KNOWN_CREATE_TASK", False)
    return "stand-in"


def tracked(task: Any) -> bool:
    tracker = task_instrumentation._tracker
    return tracker is not None and tracker.record_of(task) is not None


def attributes_of(telemetry: Any, name: str) -> dict[str, Any]:
    (span,) = [
        span for span in telemetry.spans() if (span.attributes or {}).get(semconv.TASK_NAME) == name
    ]
    return dict(span.attributes or {})


def active_tasks() -> int:
    tracker = task_instrumentation._tracker
    assert tracker is not None
    return int(tracker.active)


def test_without_a_factory_the_task_is_scopewatchs_with_every_keyword(create_task, instrument):
    telemetry = instrument()

    async def child() -> tuple[Any, bool]:
        return asyncio.current_task(), tracked(asyncio.current_task())

    async def main() -> None:
        asyncio.current_task().set_name("main")  # type: ignore[union-attr]
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        task = loop.create_task(child(), name="child", context=context)
        assert type(task) is task_instrumentation.Task and isinstance(task, C_TASK)
        assert task.get_name() == "child"
        assert await task == (task, True)
        victim = loop.create_task(asyncio.sleep(10), name="victim")
        await asyncio.sleep(0)
        victim.cancel()  # <- cancel the victim
        with pytest.raises(asyncio.CancelledError):
            await victim

    asyncio.run(main())
    attributes = attributes_of(telemetry, "victim")  # cancelled from outside: exported
    assert attributes[semconv.TASK_PARENT] == "main"
    assert attributes[semconv.CANCEL_ORIGIN] == semconv.ORIGIN_EXTERNAL
    assert attributes[semconv.CANCEL_TASK] == "main"
    location = f":{marked_line(HERE, '# <- cancel the victim')}"
    assert attributes[semconv.CANCEL_LOCATION].endswith(location)
    assert active_tasks() == 0


@needs_eager
def test_an_eager_task_is_tracked_from_its_first_step(create_task, instrument):
    """``eager_start=True`` runs the first step inside ``create_task``: already tracked there."""
    telemetry = instrument()
    first_step: list[Any] = []

    async def eager() -> None:
        me = asyncio.current_task()
        first_step.append((me, tracked(me)))
        await asyncio.sleep(10)

    async def main() -> None:
        asyncio.current_task().set_name("main")  # type: ignore[union-attr]
        loop = asyncio.get_running_loop()
        task = loop.create_task(eager(), name="eager", eager_start=True)  # type: ignore[call-arg]
        assert first_step == [(task, True)]  # ran before create_task returned
        assert type(task) is task_instrumentation.Task
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    attributes = attributes_of(telemetry, "eager")
    assert (attributes[semconv.TASK_PARENT], attributes[semconv.CANCEL_TASK]) == ("main", "main")
    assert attributes[semconv.CANCEL_ORIGIN] == semconv.ORIGIN_EXTERNAL
    assert active_tasks() == 0


@needs_eager
def test_an_eager_tasks_first_step_runs_in_its_span(create_task, instrument):
    """``all`` mode: the task's span is current while the constructor runs its first step."""
    instrument(spans="all")
    seen: list[str] = []

    async def eager() -> None:
        seen.append(getattr(trace.get_current_span(), "name", ""))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await loop.create_task(eager(), eager_start=True)  # type: ignore[call-arg]

    asyncio.run(main())
    assert seen == [semconv.SPAN_TASK_PREFIX + eager.__qualname__]


@pytest.mark.parametrize("eager_start", [False, True])
def test_in_debug_mode_the_creation_stack_ends_at_the_caller(create_task, instrument, eager_start):
    """As asyncio's own: ``_source_traceback`` names no frame of scopewatch's."""
    if eager_start and sys.version_info < (3, 12):
        pytest.skip("needs Python 3.12 (asyncio.Task(eager_start=...))")
    instrument()

    async def main() -> int:
        keywords = {"eager_start": True} if eager_start else {}
        task = asyncio.get_running_loop().create_task(asyncio.sleep(0), **keywords)  # <- created
        await task
        return task._source_traceback[-1].lineno  # type: ignore[attr-defined, no-any-return]

    assert asyncio.run(main(), debug=True) == marked_line(HERE, "# <- created")


def test_every_keyword_reaches_the_factory_unchanged(create_task, instrument):
    """Known or not (``colour``), keywords go to the user's factory as given, and only those."""
    instrument()
    received: list[dict[str, Any]] = []

    def factory(loop: Any, coro: Any, **kwargs: Any) -> Any:
        received.append(kwargs)
        return asyncio.Task(coro, loop=loop, name=kwargs.get("name"))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(factory)
        plain = loop.create_task(asyncio.sleep(0))
        named = loop.create_task(asyncio.sleep(0), name="n", eager_start=False, colour="red")
        assert tracked(plain) and tracked(named)
        await asyncio.gather(plain, named)
        loop.set_task_factory(None)  # asyncio.run's shutdown tasks are not this test's

    asyncio.run(main())
    assert received == [{}, {"name": "n", "eager_start": False, "colour": "red"}]
    assert active_tasks() == 0


def _refused(call: Any) -> str:
    """What ``asyncio.run(call())`` raises: a keyword refused by the factory or by ``Task``."""

    async def main() -> None:
        coro = asyncio.sleep(0)
        try:
            call(asyncio.get_running_loop(), coro)
        finally:
            coro.close()

    with pytest.raises(TypeError) as raised:
        asyncio.run(main())
    return str(raised.value)


def test_a_factory_taking_no_keywords_composes_as_without_scopewatch(create_task, instrument):
    """A ``factory(loop, coro)`` works for calls without keywords; given one, it fails exactly
    as without scopewatch (scopewatch adds none and takes none away)."""
    built: list[Any] = []

    def legacy(loop: Any, coro: Any) -> Any:
        task = asyncio.Task(coro, loop=loop)
        built.append(task)
        return task

    def eager_call(loop: Any, coro: Any) -> Any:
        loop.set_task_factory(legacy)
        return loop.create_task(coro, eager_start=True)

    without = _refused(eager_call)
    instrument()
    assert _refused(eager_call) == without
    built.clear()  # the shutdown tasks of those two runs

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(legacy)
        task = loop.create_task(asyncio.sleep(0))
        assert tracked(task)
        await task
        loop.set_task_factory(None)

    asyncio.run(main())
    assert len(built) == 1
    assert active_tasks() == 0


def test_a_keyword_task_refuses_fails_as_without_scopewatch(create_task, instrument):
    def unknown_call(loop: Any, coro: Any) -> Any:
        return loop.create_task(coro, colour="red")

    without = _refused(unknown_call)
    instrument()
    assert _refused(unknown_call) == without
    assert active_tasks() == 0


@needs_eager
def test_the_eager_task_factory_under_keywords(create_task, instrument):
    """``asyncio.eager_task_factory`` gets the keywords and builds scopewatch's eager task,
    tracked from its first step."""
    instrument()
    first_step: list[bool] = []

    async def eager() -> int:
        first_step.append(tracked(asyncio.current_task()))
        await asyncio.sleep(0)
        return 1

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(asyncio.eager_task_factory)
        task = loop.create_task(eager(), name="eager")
        assert first_step == [True]
        assert task.get_name() == "eager" and isinstance(task, task_instrumentation.Task)
        assert await task == 1

    asyncio.run(main())
    assert active_tasks() == 0
