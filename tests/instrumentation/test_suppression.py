"""DESIGN rule 2: inside ``suppress_instrumentation()`` every feature passes straight through.

Each workload makes telemetry when run plainly (the control: spans in ``all`` mode, an anomaly,
counts and durations); the same workload inside ``suppress_instrumentation()`` must make no
span, no metric point and no record, on every backend. ``asyncio.run`` / ``anyio.run`` /
``trio.run`` start inside the block, so every task of the run inherits the suppression.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable
from typing import Any

import anyio
import pytest
import trio
from mcp import Client
from mcp.server.mcpserver import MCPServer
from opentelemetry import context, trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
from opentelemetry.instrumentation.utils import is_instrumentation_enabled, suppress_instrumentation

import scopewatch
from scopewatch import semconv
from scopewatch.instrumentation import _scope_state
from scopewatch.instrumentation import tasks as task_instrumentation
from scopewatch.instrumentation._suppression import _PLAIN_KEY, instrumentation_enabled
from tests.support.markers import needs_311
from tests.support.scope_counts import scope_counts

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

SLOW = 0.02
"""Seconds a scope waits past its deadline / a lock is held (short, but measured)."""

seen: list[str] = []
"""What the workloads saw tracked while running (must stay empty when suppressed)."""


def note_tracked_scope(scope: object) -> None:
    tracker = _scope_state.tracker
    if tracker is not None and tracker.record_of(scope) is not None:
        seen.append(f"scope {type(scope).__name__}")


def note_tracked_task() -> None:
    tracker = task_instrumentation._tracker
    task = asyncio.current_task()
    if tracker is not None and tracker.record_of(task) is not None:
        seen.append(f"task {task.get_name() if task else ''}")


async def anyio_workload() -> None:
    with anyio.move_on_after(0.001) as scope:  # deadline exceeded: anomalous
        note_tracked_scope(scope)
        await anyio.sleep(1)
    lock = anyio.Lock()

    async def hold() -> None:
        async with lock:
            await anyio.sleep(SLOW)

    async with anyio.create_task_group() as group:  # contended lock, child tasks
        group.start_soon(hold)
        group.start_soon(hold)


def run_anyio_asyncio() -> None:
    anyio.run(anyio_workload, backend="asyncio")


def run_anyio_trio() -> None:
    anyio.run(anyio_workload, backend="trio")


async def asyncio_workload() -> None:
    note_tracked_task()
    async with asyncio.timeout(0.001) as timeout:  # type: ignore[attr-defined]
        note_tracked_scope(timeout)
        try:
            await asyncio.sleep(1)
        except asyncio.CancelledError:
            pass  # swallowed inside the timeout: it still expires, and the scope is anomalous
    lock = asyncio.Lock()

    async def hold() -> None:
        note_tracked_task()
        async with lock:
            await asyncio.sleep(SLOW)

    async def fails() -> None:
        raise ValueError("boom")

    async with asyncio.TaskGroup() as group:  # type: ignore[attr-defined]
        group.create_task(hold())
        group.create_task(hold())
    failing = asyncio.create_task(fails())  # a task ending with an error
    with pytest.raises(ValueError):
        await failing


def run_asyncio() -> None:
    asyncio.run(asyncio_workload())


async def trio_workload() -> None:
    with trio.move_on_after(0.001):
        await trio.sleep(1)
    lock = trio.Lock()

    async def hold() -> None:
        async with lock:
            await trio.sleep(SLOW)

    async def fails() -> None:
        raise ValueError("boom")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold)
        nursery.start_soon(hold)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fails)
    except BaseExceptionGroup:
        pass


def run_trio() -> None:
    trio.run(trio_workload)


async def session_workload() -> None:
    async with scopewatch.track_session("redis", name="cache"):
        await asyncio.sleep(0)


def run_session() -> None:
    asyncio.run(session_workload())


def run_mcp_client() -> None:
    server = MCPServer("calculator")

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    async def main() -> None:
        async with Client(server) as client:
            await client.call_tool("add", {"a": 1, "b": 2})

    asyncio.run(main())


RUNS: dict[str, Callable[[], None]] = {
    "anyio on asyncio": run_anyio_asyncio,
    "anyio on trio": run_anyio_trio,
    "asyncio": run_asyncio,
    "trio": run_trio,
}
CASES = [
    *(
        pytest.param(run, feature, id=f"{feature}-{name}")
        for name, run in RUNS.items()
        for feature in ("scopes", "tasks", "locks")
    ),
    pytest.param(run_session, "sessions", id="sessions-track_session"),
    pytest.param(run_mcp_client, "sessions", id="sessions-mcp"),
]


def produced(telemetry: Any) -> dict[str, Any]:
    """Every span name and every scopewatch metric with a non-zero point."""
    found: dict[str, Any] = {"spans": sorted({span.name for span in telemetry.spans()})}
    data = telemetry.reader.get_metrics_data()
    for resource_metrics in data.resource_metrics if data is not None else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:
                    value = getattr(point, "count", None) or getattr(point, "value", 0)
                    if value:
                        found[metric.name] = found.get(metric.name, 0) + value
    return {key: value for key, value in found.items() if value}


def test_the_cheap_check_answers_as_is_instrumentation_enabled():
    """The wrappers' own check, in every context in turn, and again (it remembers the last)."""
    span = trace.NonRecordingSpan(trace.INVALID_SPAN_CONTEXT)
    contexts = [
        context.Context(),
        trace.set_span_in_context(span),
        context.set_value(_PLAIN_KEY, True),  # the key older code sets by name
        context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True, trace.set_span_in_context(span)),
        context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, False),
    ]
    answers = []
    for current in [*contexts, *contexts, contexts[1], contexts[1], contexts[3], contexts[3]]:
        token = context.attach(current)
        try:
            answers.append((instrumentation_enabled(), is_instrumentation_enabled()))
        finally:
            context.detach(token)
    assert [ours for ours, _ in answers] == [theirs for _, theirs in answers]
    assert [ours for ours, _ in answers[:5]] == [True, True, False, False, True]
    with suppress_instrumentation():
        assert instrumentation_enabled() is False
    assert instrumentation_enabled() is True


@pytest.fixture(autouse=True)
def forget_seen() -> None:
    seen.clear()


def run_instrumented(instrument: Any, workload: Callable[[], None], feature: str) -> Any:
    telemetry = instrument(spans="all", instrument=feature, durations="all")
    workload()
    return telemetry


@needs_311
@pytest.mark.parametrize(("workload", "feature"), [case.values for case in CASES])
def test_a_plain_run_makes_telemetry(workload, feature, instrument):
    """The control: the workload is seen, so the suppressed run below proves something."""
    made = produced(run_instrumented(instrument, workload, feature))
    assert set(made) - {"spans"}, made  # metrics
    assert made.get("spans") or feature == "locks", made  # locks make no span


@needs_311
@pytest.mark.parametrize(("workload", "feature"), CASES)
def test_a_suppressed_run_makes_no_telemetry_and_no_record(workload, feature, instrument):
    with suppress_instrumentation():
        telemetry = run_instrumented(instrument, workload, feature)
    assert produced(telemetry) == {}
    assert seen == []


# --- an untracked scope among tracked ones -------------------------------------------------------

SCOPES: dict[str, tuple[Callable[[Callable[[], Any]], None], Callable[[], Any], str]] = {
    "anyio on asyncio": (
        lambda main: anyio.run(main, backend="asyncio"),
        anyio.CancelScope,
        semconv.SPAN_ANYIO_CANCEL_SCOPE,
    ),
    "anyio on trio": (
        lambda main: anyio.run(main, backend="trio"),
        anyio.CancelScope,
        semconv.SPAN_ANYIO_CANCEL_SCOPE,
    ),
    "trio": (trio.run, trio.CancelScope, semconv.SPAN_TRIO_CANCEL_SCOPE),
}


def tracked(scope: object) -> bool:
    """Whether ``scope`` is tracked (anyio's trio backend: the trio scope it wraps)."""
    scope = getattr(scope, "_CancelScope__original", scope)
    tracker = _scope_state.tracker
    return tracker is not None and tracker.record_of(scope) is not None


@pytest.mark.parametrize("backend", SCOPES)
def test_an_untracked_scope_between_tracked_ones_makes_no_violation(backend, instrument):
    """Entered under suppression inside a tracked scope, with a tracked one inside it."""
    run, make, kind = SCOPES[backend]
    telemetry = instrument(instrument="scopes")
    found: list[bool] = []

    async def main() -> None:
        with make() as outer:
            hidden_stack = contextlib.ExitStack()
            with suppress_instrumentation():
                hidden = hidden_stack.enter_context(make())
            with make() as inner:  # suppression is over, the untracked scope still entered
                found.extend(tracked(scope) for scope in (outer, hidden, inner))
            hidden_stack.close()
            found.append(tracked(hidden))

    run(main)
    assert found == [True, False, True, False]
    assert telemetry.violation_spans() == []
    assert scope_counts(telemetry) == {(kind, semconv.OUTCOME_OK): 2}


@needs_311
def test_asyncio_untracked_timeout_hides_no_violation_of_tracked_ones(instrument):
    """Tracked timeouts exited out of order around an untracked one: exactly their violation."""
    telemetry = instrument(instrument="scopes")
    found: list[bool] = []

    async def main() -> None:
        outer = asyncio.timeout(10)  # type: ignore[attr-defined]
        await outer.__aenter__()
        with suppress_instrumentation():
            hidden = asyncio.timeout(10)  # type: ignore[attr-defined]
            await hidden.__aenter__()
        inner = asyncio.timeout(10)  # type: ignore[attr-defined]
        await inner.__aenter__()
        found.extend(tracked(scope) for scope in (outer, hidden, inner))
        await outer.__aexit__(None, None, None)  # non-LIFO: inner is still entered
        await inner.__aexit__(None, None, None)
        await hidden.__aexit__(None, None, None)
        leaked = asyncio.timeout(10)  # type: ignore[attr-defined]
        await leaked.__aenter__()  # never exited: leaked when the loop closes
        with suppress_instrumentation():
            await asyncio.timeout(10).__aenter__()  # type: ignore[attr-defined]  # untracked

    asyncio.run(main())
    assert found == [True, False, True]
    kinds = sorted(
        str(span.attributes[semconv.VIOLATION_KIND]) for span in telemetry.violation_spans()
    )
    assert kinds == [semconv.KIND_NON_LIFO_EXIT, semconv.KIND_SCOPE_LEAKED]
    assert scope_counts(telemetry) == {(semconv.SPAN_ASYNCIO_TIMEOUT, semconv.OUTCOME_OK): 2}


@pytest.mark.parametrize("backend", SCOPES)
def test_a_tracked_scope_exited_under_suppression_still_ends(backend, instrument):
    """Suppression is judged at enter: a tracked scope's exit is never lost (no false leak)."""
    run, make, kind = SCOPES[backend]
    telemetry = instrument(instrument="scopes")

    async def main() -> None:
        scope = make()
        scope.__enter__()
        with suppress_instrumentation():
            scope.__exit__(None, None, None)

    run(main)
    assert telemetry.violation_spans() == []
    assert scope_counts(telemetry) == {(kind, semconv.OUTCOME_OK): 1}
