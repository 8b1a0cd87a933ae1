"""DESIGN rule 2: inside ``suppress_instrumentation()`` every feature passes straight through.

Each workload makes telemetry when run plainly (the control: spans in ``all`` mode, an anomaly,
counts and durations); the same workload inside ``suppress_instrumentation()`` must make no
span, no metric point and no record, on every backend. ``asyncio.run`` / ``anyio.run`` /
``trio.run`` start inside the block, so every task of the run inherits the suppression.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

import anyio
import pytest
import trio
from opentelemetry.instrumentation.utils import suppress_instrumentation

import scopewatch
from scopewatch.instrumentation import _scope_state
from scopewatch.instrumentation import tasks as task_instrumentation
from tests.support.markers import needs_311

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


RUNS: dict[str, Callable[[], None]] = {
    "anyio on asyncio": run_anyio_asyncio,
    "anyio on trio": run_anyio_trio,
    "asyncio": run_asyncio,
    "trio": run_trio,
}
NOT_HONOURED = pytest.mark.xfail(
    strict=True,
    reason="not honoured yet: the scope and task wrappers track and report without "
    "checking is_instrumentation_enabled() (hot-path files, left to the lead)",
)
CASES = [
    *(
        pytest.param(run, feature, id=f"{feature}-{name}", marks=marks)
        for name, run in RUNS.items()
        for feature, marks in (("scopes", NOT_HONOURED), ("tasks", NOT_HONOURED), ("locks", ()))
    ),
    pytest.param(run_session, "sessions", id="sessions-track_session"),
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
