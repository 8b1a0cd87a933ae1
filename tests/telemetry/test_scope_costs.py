"""The cost contract of DESIGN section 3 for cancel scopes, counted (never timed).

A user scope that ends normally makes no OpenTelemetry SDK call: it is counted exactly in
``scopewatch.scopes`` (a plain counter read at collection), no span is started and no
``scopewatch.scope.duration`` measurement is taken. Anomalous scopes get both; anyio's and
trio's own scopes are never counted. Real SDK: a span processor counts every span started.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import trio
from opentelemetry.sdk.trace import SpanProcessor

from scopewatch import _runtime, semconv
from tests.support.markers import PER_TASK_SCOPE, needs_311
from tests.support.scope_counts import duration_keys, scope_counts

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

N = 25


class CountStarts(SpanProcessor):
    """Counts every span the SDK starts (``on_start`` runs for each, exported or not)."""

    def __init__(self) -> None:
        self.started: list[str] = []

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.started.append(span.name)


def instrumented(instrument: Any, **settings: Any) -> tuple[Any, CountStarts]:
    telemetry = instrument(instrument="scopes", **settings)
    starts = CountStarts()
    telemetry.tracer_provider.add_span_processor(starts)
    return telemetry, starts


def buffered_durations() -> int:
    """Measurements waiting in the deferred ``scopewatch.scope.duration`` buffer."""
    runtime = _runtime.current
    assert runtime is not None
    return len(runtime.instruments.scope_duration._pending)


async def anyio_normal() -> None:
    for _ in range(N):
        with anyio.move_on_after(60):
            await anyio.lowlevel.checkpoint()
        with anyio.CancelScope():
            pass
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.sleep, 0)
        async with anyio.create_task_group() as tg:  # a normal shutdown: cancelled on the way out
            tg.start_soon(anyio.sleep, 60)
            await anyio.lowlevel.checkpoint()
            tg.cancel_scope.cancel()
        await anyio.lowlevel.cancel_shielded_checkpoint()  # anyio's own scope: never counted


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_normal_anyio_scopes_are_counted_without_any_sdk_call(instrument, backend):
    telemetry, starts = instrumented(instrument)
    anyio.run(anyio_normal, backend=backend)
    assert starts.started == []
    assert buffered_durations() == 0
    assert duration_keys(telemetry) == set()
    assert telemetry.spans() == []
    counts = scope_counts(telemetry)
    assert counts == {
        (semconv.SPAN_ANYIO_MOVE_ON_AFTER, semconv.OUTCOME_OK): N,
        (semconv.SPAN_ANYIO_CANCEL_SCOPE, semconv.OUTCOME_OK): N,
        (semconv.SPAN_ANYIO_TASK_GROUP, semconv.OUTCOME_OK): N,
        (semconv.SPAN_ANYIO_TASK_GROUP, semconv.OUTCOME_CANCELLED): N,
    }


@needs_311
def test_normal_asyncio_scopes_are_counted_without_any_sdk_call(instrument):
    telemetry, starts = instrumented(instrument)

    async def main() -> None:
        for _ in range(N):
            async with asyncio.timeout(60):
                await asyncio.sleep(0)
            async with asyncio.timeout_at(None):
                pass
            async with asyncio.TaskGroup() as tg:
                tg.create_task(asyncio.sleep(0))

    asyncio.run(main())
    assert starts.started == []
    assert buffered_durations() == 0
    assert duration_keys(telemetry) == set()
    assert scope_counts(telemetry) == {
        (semconv.SPAN_ASYNCIO_TIMEOUT, semconv.OUTCOME_OK): N,
        (semconv.SPAN_ASYNCIO_TIMEOUT_AT, semconv.OUTCOME_OK): N,
        (semconv.SPAN_ASYNCIO_TASK_GROUP, semconv.OUTCOME_OK): N,
    }


def test_normal_trio_scopes_are_counted_without_any_sdk_call(instrument):
    telemetry, starts = instrumented(instrument)

    async def main() -> None:
        for _ in range(N):
            with trio.move_on_after(60):
                await trio.sleep(0)  # trio's own scopes inside: never counted
            with trio.CancelScope():
                pass
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.sleep, 0)
            async with trio.open_nursery() as nursery:  # a normal shutdown
                nursery.start_soon(trio.sleep, 60)
                await trio.lowlevel.checkpoint()
                nursery.cancel_scope.cancel()

    trio.run(main)
    assert starts.started == []
    assert buffered_durations() == 0
    assert duration_keys(telemetry) == set()
    assert scope_counts(telemetry) == {
        (semconv.SPAN_TRIO_MOVE_ON_AFTER, semconv.OUTCOME_OK): N,
        (semconv.SPAN_TRIO_CANCEL_SCOPE, semconv.OUTCOME_OK): N,
        (semconv.SPAN_TRIO_NURSERY, semconv.OUTCOME_OK): N,
        (semconv.SPAN_TRIO_NURSERY, semconv.OUTCOME_CANCELLED): N,
    }


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_durations_all_measures_every_user_scope_and_still_starts_no_span(instrument, backend):
    telemetry, starts = instrumented(instrument, durations="all")
    anyio.run(anyio_normal, backend=backend)
    assert starts.started == []
    counts = scope_counts(telemetry)
    points = telemetry.points(semconv.METRIC_SCOPE_DURATION)
    measured = {
        (p.attributes[semconv.SCOPE_KIND], p.attributes[semconv.SCOPE_OUTCOME]): p.count
        for p in points
    }
    assert measured == counts


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_each_anomaly_is_one_span_and_one_measurement(instrument, backend):
    """Deadline exceeded, failed, cancelled as part of a failure; the normal ones cost nothing."""
    telemetry, starts = instrumented(instrument)

    async def sibling() -> None:
        with anyio.CancelScope():  # cancelled because its sibling failed
            await anyio.sleep(60)

    async def fails() -> None:
        await anyio.lowlevel.checkpoint()
        raise ValueError("boom")

    async def main() -> None:
        with anyio.move_on_after(0):  # deadline exceeded
            await anyio.sleep(60)
        with pytest.raises(KeyError), anyio.CancelScope():  # failed
            raise KeyError("k")
        with anyio.CancelScope():  # normal
            pass
        with pytest.raises((BaseExceptionGroup, ValueError)):
            async with anyio.create_task_group() as tg:  # failed (its child's error)
                tg.start_soon(sibling)
                tg.start_soon(fails)

    anyio.run(main, backend=backend)
    expected = {
        (semconv.SPAN_ANYIO_MOVE_ON_AFTER, semconv.OUTCOME_DEADLINE_EXCEEDED),
        (semconv.SPAN_ANYIO_CANCEL_SCOPE, semconv.OUTCOME_ERROR),
        (semconv.SPAN_ANYIO_CANCEL_SCOPE, semconv.OUTCOME_CANCELLED),
        (semconv.SPAN_ANYIO_TASK_GROUP, semconv.OUTCOME_ERROR),
    }
    assert duration_keys(telemetry) == expected
    spans = telemetry.spans()
    assert {(s.name, s.attributes[semconv.SCOPE_OUTCOME]) for s in spans} == expected
    assert len(spans) == len(expected) == len(starts.started)
    (cancelled,) = [
        s for s in spans if s.attributes[semconv.SCOPE_OUTCOME] == semconv.OUTCOME_CANCELLED
    ]
    assert cancelled.attributes[semconv.CANCEL_ORIGIN] == semconv.ORIGIN_PARENT
    assert scope_counts(telemetry)[(semconv.SPAN_ANYIO_CANCEL_SCOPE, semconv.OUTCOME_OK)] == 1


def test_trio_nursery_failure_makes_its_scopes_anomalous(instrument):
    telemetry, _ = instrumented(instrument)

    async def sibling() -> None:
        with trio.CancelScope():
            await trio.sleep(60)

    async def fails() -> None:
        await trio.lowlevel.checkpoint()
        raise ValueError("boom")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sibling)
            nursery.start_soon(fails)

    with pytest.raises((BaseExceptionGroup, ValueError)):  # trio < 0.25: a bare ValueError
        trio.run(main)
    names = {(s.name, s.attributes[semconv.SCOPE_OUTCOME]) for s in telemetry.spans()}
    assert names == {
        (semconv.SPAN_TRIO_CANCEL_SCOPE, semconv.OUTCOME_CANCELLED),
        (semconv.SPAN_TRIO_NURSERY, semconv.OUTCOME_ERROR),
    }


@needs_311
def test_asyncio_task_group_failure_makes_the_body_scopes_anomalous(instrument):
    telemetry, _ = instrumented(instrument)

    async def fails() -> None:
        await asyncio.sleep(0)
        raise ValueError("boom")

    async def main() -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(fails())
            async with asyncio.timeout(60):  # cancelled because the child failed
                await asyncio.sleep(60)

    with pytest.raises(BaseExceptionGroup):
        asyncio.run(main())
    spans = {s.name: s for s in telemetry.spans()}
    assert set(spans) == {semconv.SPAN_ASYNCIO_TIMEOUT, semconv.SPAN_ASYNCIO_TASK_GROUP}
    timeout = spans[semconv.SPAN_ASYNCIO_TIMEOUT].attributes
    assert timeout[semconv.SCOPE_OUTCOME] == semconv.OUTCOME_CANCELLED
    assert timeout[semconv.CANCEL_ORIGIN] == semconv.ORIGIN_PARENT


@needs_311
def test_scope_cancelled_from_outside_is_anomalous(instrument):
    telemetry, _ = instrumented(instrument)

    async def victim() -> None:
        async with asyncio.timeout(60):
            await asyncio.sleep(60)

    async def main() -> None:
        task = asyncio.create_task(victim())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    (span,) = telemetry.spans()
    assert span.attributes[semconv.CANCEL_ORIGIN] == semconv.ORIGIN_EXTERNAL
    assert duration_keys(telemetry) == {(semconv.SPAN_ASYNCIO_TIMEOUT, semconv.OUTCOME_CANCELLED)}


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_self_contained_library_scopes_are_not_even_tracked(instrument, backend, monkeypatch):
    """Checkpoints, a task group's wait and sleeps enter scopes no user code runs in."""
    from scopewatch.instrumentation import _closed_scopes
    from scopewatch.instrumentation import _scope_state as state

    instrumented(instrument)
    tracker = state.tracker
    assert tracker is not None
    entered: list[tuple[str, bool]] = []
    original = tracker.enter

    def spy(obj: Any, kind: str, user: bool, *args: Any, **kwargs: Any) -> Any:
        entered.append((kind, user))
        return original(obj, kind, user, *args, **kwargs)

    monkeypatch.setattr(tracker, "enter", spy)

    async def main() -> None:
        await anyio.lowlevel.cancel_shielded_checkpoint()
        await anyio.sleep(0)
        async with anyio.create_task_group() as tg:  # user scope; its wait scope is anyio's
            tg.start_soon(anyio.sleep, 0)
        entered.append(("marker", True))

    anyio.run(main, backend=backend)
    before = entered[: entered.index(("marker", True))]
    user_kinds = [kind for kind, user in before if user]
    assert user_kinds == [semconv.SPAN_ANYIO_TASK_GROUP]
    assert _closed_scopes.is_closed(
        inspect.unwrap(anyio.lowlevel.cancel_shielded_checkpoint).__code__
    )
    # anyio's per-task scope of the child is tracked on trio (a task returning inside a user
    # scope is a violation committed through it); on asyncio only from the child's first
    # tracked scope, and this child enters none. trio's system nurseries too; nothing else
    internal = [kind for kind, user in before if not user]
    per_task = PER_TASK_SCOPE and backend == "trio"
    assert internal.count(semconv.SPAN_ANYIO_CANCEL_SCOPE) == (1 if per_task else 0)
    assert set(internal) <= {semconv.SPAN_ANYIO_CANCEL_SCOPE, semconv.SPAN_TRIO_NURSERY}
