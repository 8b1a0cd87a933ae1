"""Shared by the fault-injection tests: a realistic workload, its baseline, instrumentation.

The workload mixes anyio and asyncio the way services do: scopes that time out, tasks that are
cancelled, a task group whose child fails, contended locks, two cross-task exits (one that
asyncio lets through silently, one that anyio refuses with ``RuntimeError``) and a burst of
concurrent scopes and tasks. What the application can observe (return values, exceptions it
catches, cancellation outcomes, the order of its own steps) goes into an event log; the log of
an uninstrumented run is the baseline every faulty run must reproduce exactly.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from scopewatch import ScopeWatchInstrumentor, _runtime, semconv

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup

LOGGER = "scopewatch"
ROUNDS = 6
"""Each round repeats every fault-triggering step, so "logged once" is tested over many events."""
BURST = 24
"""Concurrent scopes and tasks held open at once by the burst step (past a small MAX_TRACKED)."""
HANG_SECONDS = 10.0
"""Upper bound of every injected hang: a hang waits on an Event released at teardown, so a bug
cannot deadlock the suite, and the test proves the app finished while the hang was still on."""
CROSS_TASK_RULE = "cross: scopewatch.violation.kind == cross_task_exit cooldown 0 -> log"
VIOLATIONS_PER_ROUND = 4 if sys.version_info >= (3, 11) else 2
"""Cross-task exits per round: the anyio generator's two scopes, and two asyncio.timeouts."""
VIOLATIONS = ROUNDS * VIOLATIONS_PER_ROUND
"""Violations of a whole workload run."""


class InjectedFault(Exception):
    """What every injected fault raises (the app must never see it)."""


class Hang:
    """A bounded hang: ``wait()`` blocks until :meth:`release` or ``HANG_SECONDS``."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self._released = threading.Event()
        self.calls = 0

    def wait(self) -> None:
        """Block the calling thread (counted)."""
        self.calls += 1
        self.entered.set()
        self._released.wait(HANG_SECONDS)

    @property
    def holding(self) -> bool:
        """Someone entered the hang and it was not released yet."""
        return self.entered.is_set() and not self._released.is_set()

    def release(self) -> None:
        """Let every current and future waiter go."""
        self._released.set()

    def release_after(self, seconds: float) -> None:
        """Release from a timer thread (a hang that ends by itself, like a slow backend)."""
        timer = threading.Timer(seconds, self.release)
        timer.daemon = True
        timer.start()


# --- the workload -------------------------------------------------------------------------------


async def _ticks() -> AsyncIterator[int]:
    async with anyio.create_task_group():
        with anyio.CancelScope():
            yield 1
            yield 2


async def _timeouts(log: list[Any]) -> None:
    with anyio.move_on_after(0.002) as scope:
        await anyio.sleep(10)
    log.append(("move_on_after", scope.cancelled_caught, scope.cancel_called))
    try:
        with anyio.fail_after(0.002):
            await anyio.sleep(10)
    except TimeoutError as error:
        log.append(("fail_after", type(error).__name__))
    if sys.version_info >= (3, 11):
        try:
            async with asyncio.timeout(0.002):
                await asyncio.sleep(10)
        except TimeoutError as error:
            log.append(("asyncio.timeout", type(error).__name__))


async def _cancelled_task(index: int, log: list[Any]) -> None:
    started = asyncio.Event()

    async def sleeper() -> str:
        started.set()
        await asyncio.sleep(10)
        return "never"

    task = asyncio.create_task(sleeper(), name=f"sleeper-{index}")
    await started.wait()
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        log.append(("cancelled task", task.cancelled()))


async def _failing_group(log: list[Any]) -> None:
    async def sibling() -> None:
        try:
            await anyio.sleep(10)
        except anyio.get_cancelled_exc_class():
            log.append(("sibling cancelled",))
            raise

    async def failing() -> None:
        await anyio.sleep(0)
        raise ValueError("child failed")

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(sibling)
            group.start_soon(failing)
    except ExceptionGroup as group_error:
        log.append(("group", [f"{type(e).__name__}: {e}" for e in group_error.exceptions]))


async def _cross_task_exits(log: list[Any]) -> None:
    if sys.version_info >= (3, 11):
        timeout = asyncio.timeout(10)
        await asyncio.create_task(timeout.__aenter__(), name="enterer")  # type: ignore[arg-type]
        await asyncio.create_task(timeout.__aexit__(None, None, None), name="leaver")  # type: ignore[arg-type]
        log.append(("asyncio cross-task exit", "no exception"))
    generator = _ticks()
    log.append(("tick", await asyncio.ensure_future(generator.__anext__())))
    try:
        await asyncio.ensure_future(generator.aclose())
    except RuntimeError as error:  # anyio refuses to exit a scope in another task
        log.append(("anyio cross-task exit", type(error).__name__, "different task" in str(error)))


async def _contended_locks(log: list[Any]) -> None:
    asyncio_lock = asyncio.Lock()
    anyio_lock = anyio.Lock()

    async def worker(name: str) -> None:
        async with asyncio_lock:
            log.append(("asyncio lock", name))
            await asyncio.sleep(0)
        async with anyio_lock:
            log.append(("anyio lock", name))
            await anyio.sleep(0)

    async with anyio.create_task_group() as group:
        for name in ("a", "b", "c"):
            group.start_soon(worker, name)


async def _burst(log: list[Any]) -> None:
    """Many scopes and tasks held open at once; meanwhile a scope entered before them is exited
    in another task (a violation of a scope tracked before a small MAX_TRACKED is exceeded)."""
    gate = asyncio.Event()

    async def hold(index: int) -> int:
        with anyio.CancelScope():
            await gate.wait()
        return index

    timeout = asyncio.timeout(10) if sys.version_info >= (3, 11) else None
    if timeout is not None:
        await asyncio.create_task(timeout.__aenter__(), name="burst-enterer")  # type: ignore[arg-type]
    tasks = [asyncio.create_task(hold(index)) for index in range(BURST)]
    await asyncio.sleep(0)
    if timeout is not None:
        await asyncio.create_task(timeout.__aexit__(None, None, None), name="burst-leaver")  # type: ignore[arg-type]
    gate.set()
    log.append(("burst", sum(await asyncio.gather(*tasks))))


async def workload(rounds: int = ROUNDS) -> list[Any]:
    """Run every step ``rounds`` times; the application-visible event log."""
    log: list[Any] = []
    for index in range(rounds):
        await _timeouts(log)
        await _cancelled_task(index, log)
        await _failing_group(log)
        await _cross_task_exits(log)
        await _contended_locks(log)
        await _burst(log)
    return log


def run_workload(between: Callable[[], None] | None = None) -> list[Any]:
    """Run the workload in a fresh loop; ``between`` runs after the first half of the rounds."""

    async def main() -> list[Any]:
        first = await workload(ROUNDS // 2)
        if between is not None:
            between()
        return [*first, ("half",), *await workload(ROUNDS - ROUNDS // 2)]

    return asyncio.run(main())


@functools.cache
def baseline() -> list[Any]:
    """The event log of an uninstrumented run (computed once per test session)."""
    assert _runtime.current is None, "the baseline must run uninstrumented"
    return run_workload(lambda: None)


# --- instrumentation under test -----------------------------------------------------------------


@dataclass
class Setup:
    """Providers, a healthy in-memory exporter and reader, and the instrumentor."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    healthy: InMemorySpanExporter
    reader: InMemoryMetricReader
    instrumentor: ScopeWatchInstrumentor = field(default_factory=ScopeWatchInstrumentor)

    def violation_spans(self) -> list[Any]:
        """Spans with a violation that reached the healthy exporter."""
        return [
            span
            for span in self.healthy.get_finished_spans()
            if (span.attributes or {}).get(semconv.VIOLATION_KIND) is not None
        ]

    def metric(self, name: str) -> dict[tuple[tuple[str, Any], ...], Any]:
        """``{sorted attributes: value}`` of a sum metric, collected now from the healthy reader."""
        found: dict[tuple[tuple[str, Any], ...], Any] = {}
        data = self.reader.get_metrics_data()
        for resource_metrics in data.resource_metrics if data is not None else ():
            for scope_metrics in resource_metrics.scope_metrics:
                for item in scope_metrics.metrics:
                    if item.name == name:
                        for point in item.data.data_points:
                            found[tuple(sorted((point.attributes or {}).items()))] = point.value
        return found

    def total(self, name: str) -> Any:
        """The sum of a sum metric's points."""
        return sum(self.metric(name).values())


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """scopewatch's ERROR records (first line of each message)."""
    return [
        record.getMessage().splitlines()[0]
        for record in caplog.records
        if record.name == LOGGER and record.levelno >= logging.ERROR
    ]


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """scopewatch's WARNING records (first line of each message)."""
    return [
        record.getMessage().splitlines()[0]
        for record in caplog.records
        if record.name == LOGGER and record.levelno == logging.WARNING
    ]


def alert_firings(setup: Setup) -> int:
    """How many times the cross-task rule's log action ran (``scopewatch.alerts``)."""
    return int(setup.total(semconv.METRIC_ALERTS))
