"""``track_session``: spans, metrics, outcomes, cross-task close, violations on open sessions."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry.trace import StatusCode

from scopewatch import _runtime, semconv
from scopewatch._core import sessions as session_core
from scopewatch._core.records import Violation
from scopewatch.sessions import track_session
from scopewatch.telemetry.scopes import violation_listeners

SESSIONS = "sessions"


def _durations(telemetry: Any) -> dict[tuple[str, str], int]:
    return {
        (p.attributes[semconv.SESSION_KIND], p.attributes[semconv.SESSION_OUTCOME]): p.count
        for p in telemetry.points(semconv.METRIC_SESSION_DURATION)
    }


def _active(telemetry: Any) -> dict[str, int]:
    return {
        p.attributes[semconv.SESSION_KIND]: p.value
        for p in telemetry.points(semconv.METRIC_SESSION_ACTIVE)
    }


def test_async_with_creates_span_and_metrics(instrument: Any) -> None:
    telemetry = instrument(instrument=SESSIONS, spans="none")
    seen: dict[str, Any] = {}

    async def main() -> str:
        async with track_session("redis", name="cache") as session:
            seen["active"] = _active(telemetry)
            seen["session"] = session
            return "value"

    assert asyncio.run(main()) == "value"
    assert seen["active"] == {"redis": 1}
    assert _active(telemetry) == {"redis": 0}
    assert _durations(telemetry) == {("redis", semconv.OUTCOME_OK): 1}
    (span,) = telemetry.spans("session redis")  # whatever the span mode
    attributes = dict(span.attributes)
    assert attributes[semconv.SESSION_KIND] == "redis"
    assert attributes[semconv.SESSION_NAME] == "cache"
    assert attributes[semconv.SESSION_OUTCOME] == semconv.OUTCOME_OK
    assert attributes[semconv.CROSS_TASK] is False
    assert attributes[semconv.CODE_FUNCTION].endswith("main")
    assert span.status.status_code is StatusCode.UNSET


def test_decorator_error_and_cancel_outcomes(instrument: Any) -> None:
    telemetry = instrument(instrument=SESSIONS)

    @track_session("ws")
    async def serve(fail: bool) -> int:
        if fail:
            raise KeyError("boom")
        await asyncio.sleep(10)
        return 1

    async def main() -> None:
        with pytest.raises(KeyError):
            await serve(True)
        task = asyncio.create_task(serve(False))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert serve.__name__ == "serve"
    assert _durations(telemetry) == {
        ("ws", semconv.OUTCOME_ERROR): 1,
        ("ws", semconv.OUTCOME_CANCELLED): 1,
    }
    statuses = sorted(
        (span.attributes[semconv.SESSION_OUTCOME], span.status.status_code.name)
        for span in telemetry.spans("session ws")
    )
    assert statuses == [(semconv.OUTCOME_CANCELLED, "UNSET"), (semconv.OUTCOME_ERROR, "ERROR")]


def test_children_nest_under_the_session_span(instrument: Any) -> None:
    telemetry = instrument(instrument=SESSIONS)
    tracer = telemetry.tracer_provider.get_tracer("test")

    async def main() -> None:
        async with track_session("db"):
            with tracer.start_as_current_span("query"):
                pass

    asyncio.run(main())
    (session,) = telemetry.spans("session db")
    (query,) = telemetry.spans("query")
    assert query.parent is not None
    assert query.parent.span_id == session.context.span_id


def test_no_op_when_not_instrumenting() -> None:
    assert _runtime.current is None

    @track_session("idle")
    async def work() -> int:
        return 7

    async def main() -> int:
        async with track_session("idle"):
            return await work()

    assert asyncio.run(main()) == 7
    assert session_core.open_sessions == {}


def test_close_from_another_task_is_reported(instrument: Any) -> None:
    telemetry = instrument(instrument=SESSIONS)

    async def main() -> None:
        session = track_session("stored")

        async def opener() -> None:
            await session.__aenter__()

        async def closer() -> None:
            await session.__aexit__(None, None, None)

        await asyncio.create_task(opener(), name="opener")
        await asyncio.create_task(closer(), name="closer")

    asyncio.run(main())
    (span,) = telemetry.spans("session stored")
    attributes = dict(span.attributes)
    assert attributes[semconv.ENTER_TASK] == "opener"
    assert attributes[semconv.EXIT_TASK] == "closer"
    assert attributes[semconv.CROSS_TASK] is True
    assert attributes[semconv.VIOLATION_KIND] == semconv.KIND_CROSS_TASK_EXIT
    assert span.status.status_code is StatusCode.ERROR
    (event,) = [e for e in span.events if e.name == semconv.EVENT_VIOLATION]
    assert event.attributes[semconv.VIOLATION_CAUSE] == semconv.CAUSE_OTHER_TASK
    assert event.attributes[semconv.ENTER_TASK] == "opener"
    assert event.attributes[semconv.EXIT_TASK] == "closer"
    stack = event.attributes[semconv.CODE_STACKTRACE]
    assert __file__ in stack and "in " in stack and "opener" in stack  # 3.10: co_name only


def _violation(enter_task: str, exit_task: str) -> Violation:
    return Violation(
        kind=semconv.KIND_CROSS_TASK_EXIT,
        cause=semconv.CAUSE_OTHER_TASK,
        scope_kind=semconv.SPAN_ANYIO_TASK_GROUP,
        enter_task=enter_task,
        exit_task=exit_task,
        asyncgen="",
        enter_frames=(),
        exit_frames=(),
    )


def test_violation_listener_marks_the_sessions_of_the_violating_tasks(instrument: Any) -> None:
    telemetry = instrument(instrument=SESSIONS)
    runtime = _runtime.current
    assert runtime is not None
    listeners = violation_listeners(runtime)

    async def main() -> None:
        async def open_two(kind: str, gate: asyncio.Event, done: asyncio.Event) -> None:
            async with track_session(kind):
                gate.set()
                await done.wait()

        gates = [asyncio.Event(), asyncio.Event()]
        done = asyncio.Event()
        tasks = [
            asyncio.create_task(open_two("a", gates[0], done), name="task-a"),
            asyncio.create_task(open_two("b", gates[1], done), name="task-b"),
        ]
        for gate in gates:
            await gate.wait()
        for listener in listeners:
            listener(_violation("task-a", "someone-else"), None)  # concerns session a only
        done.set()
        await asyncio.gather(*tasks)

    asyncio.run(main())
    (span_a,) = telemetry.spans("session a")
    (span_b,) = telemetry.spans("session b")
    assert [e.name for e in span_a.events] == [semconv.EVENT_VIOLATION_REFERENCE]
    assert semconv.VIOLATION_KIND not in (span_a.attributes or {})  # not a second violation
    assert span_a.status.status_code is StatusCode.ERROR
    assert span_b.events == ()
    assert span_b.status.status_code is StatusCode.UNSET
    telemetry.uninstrument()
    assert not any(
        getattr(listener, "__qualname__", "").startswith("SessionTelemetry")
        for listener in violation_listeners(runtime)
    )


def test_violation_without_task_names_marks_every_open_session(instrument: Any) -> None:
    telemetry = instrument(instrument=SESSIONS)
    runtime = _runtime.current
    assert runtime is not None

    async def main() -> None:
        async with track_session("x"), track_session("y"):
            for listener in violation_listeners(runtime):
                listener(_violation("", ""), None)

    asyncio.run(main())
    for kind in ("x", "y"):
        (span,) = telemetry.spans(f"session {kind}")
        (reference,) = span.events
        assert reference.name == semconv.EVENT_VIOLATION_REFERENCE
        assert reference.attributes[semconv.VIOLATION_KIND] == semconv.KIND_CROSS_TASK_EXIT
