"""``scope_leaked``: a scope still entered when its loop closes (its task finished long ago)."""

from __future__ import annotations

import asyncio
import contextlib
import sys

import anyio
import pytest
from opentelemetry.trace import StatusCode

from scopewatch import semconv
from tests.support.markers import needs_311
from tests.support.source_lines import marked_line

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
HERE = __file__


def attrs(span):
    return dict(span.attributes or {})


def line(marker: str) -> int:
    return marked_line(HERE, marker)


def check_one_leak(telemetry, kind: str, task: str, marker: str, cause: str) -> dict:
    (span,) = telemetry.violation_spans()
    assert span.name == kind
    assert span.status.status_code == StatusCode.ERROR
    a = attrs(span)
    assert a[semconv.VIOLATION_KIND] == semconv.KIND_SCOPE_LEAKED
    assert a[semconv.VIOLATION_CAUSE] == cause
    assert a[semconv.ENTER_TASK] == task
    (event,) = telemetry.violation_events()
    assert event[semconv.VIOLATION_KIND] == semconv.KIND_SCOPE_LEAKED
    assert f'File "{HERE}", line {line(marker)}' in event[semconv.CODE_STACKTRACE]
    (point,) = telemetry.points(semconv.METRIC_VIOLATIONS)
    assert point.value == 1
    assert dict(point.attributes)[semconv.VIOLATION_KIND] == semconv.KIND_SCOPE_LEAKED
    return event


@pytest.mark.parametrize("spans", ["all", "anomalies", "none"])
def test_anyio_scope_entered_by_hand_in_a_task_that_returns(instrument, spans):
    telemetry = instrument(spans=spans)

    async def opens() -> str:
        anyio.CancelScope().__enter__()  # <- by hand
        return "returned with the scope entered"

    async def main() -> str:
        return await asyncio.create_task(opens(), name="opener")

    assert asyncio.run(main()) == "returned with the scope entered"
    event = check_one_leak(
        telemetry,
        semconv.SPAN_ANYIO_CANCEL_SCOPE,
        "opener",
        "# <- by hand",
        semconv.CAUSE_TASK_FINISHED,
    )
    assert "the task 'opener' that entered it finished" in event[semconv.EXCEPTION_MESSAGE]


@needs_311
def test_asyncio_timeout_entered_by_hand_in_a_task_that_returns(instrument):
    telemetry = instrument()

    async def opens() -> None:
        await asyncio.timeout(60).__aenter__()  # <- aenter

    async def main() -> None:
        await asyncio.create_task(opens(), name="opener")

    asyncio.run(main())
    check_one_leak(
        telemetry,
        semconv.SPAN_ASYNCIO_TIMEOUT,
        "opener",
        "# <- aenter",
        semconv.CAUSE_TASK_FINISHED,
    )


async def numbers():
    with anyio.CancelScope():  # <- in generator
        yield 1
        yield 2


def test_scope_left_open_in_an_abandoned_generator_leaks_at_loop_close(instrument):
    """A loop closed without ``shutdown_asyncgens()``: nobody will ever close the generator."""
    telemetry = instrument()
    kept = []

    async def main() -> None:
        asyncio.current_task().set_name("iterating")
        generator = numbers()
        kept.append(generator)  # still referenced: never finalized
        async for _ in generator:
            break

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(main())
        assert telemetry.violation_spans() == []  # the generator might still be closed
    finally:
        loop.close()
    event = check_one_leak(
        telemetry,
        semconv.SPAN_ANYIO_CANCEL_SCOPE,
        "iterating",
        "# <- in generator",
        semconv.CAUSE_TASK_FINISHED,
    )
    assert event[semconv.ASYNCGEN] == numbers.__qualname__
    assert f"async generator {numbers.__qualname__}" in event[semconv.EXCEPTION_MESSAGE]
    kept.clear()


def test_only_the_closing_loops_scopes_are_judged(instrument):
    telemetry = instrument()

    async def opens() -> None:
        anyio.CancelScope().__enter__()  # <- loop a

    async def clean() -> None:
        with anyio.CancelScope():
            await asyncio.sleep(0)

    loop_a = asyncio.new_event_loop()
    try:
        loop_a.run_until_complete(opens())
        asyncio.run(clean())  # another loop closes: loop a's open scope is not its business
        assert telemetry.violation_spans() == []
    finally:
        loop_a.close()
    (span,) = telemetry.violation_spans()
    assert attrs(span)[semconv.VIOLATION_CAUSE] == semconv.CAUSE_TASK_FINISHED
    assert attrs(span)[semconv.CODE_LINE] == line("# <- loop a")


def test_a_scope_open_in_a_pending_task_at_close_is_leaked_by_the_loop(instrument):
    telemetry = instrument(spans="anomalies")

    async def hangs() -> None:
        with anyio.CancelScope():  # <- pending
            await asyncio.sleep(60)

    loop = asyncio.new_event_loop()
    task = loop.create_task(hangs(), name="hanging")
    loop.run_until_complete(asyncio.sleep(0.01))
    loop.close()  # without cancelling the task: it never finishes
    (leak,) = telemetry.violation_spans()
    assert attrs(leak)[semconv.VIOLATION_CAUSE] == semconv.CAUSE_LOOP_CLOSED
    assert attrs(leak)[semconv.CODE_LINE] == line("# <- pending")
    (abandoned,) = [s for s in telemetry.spans() if s.name.startswith(semconv.SPAN_TASK_PREFIX)]
    assert attrs(abandoned)[semconv.TASK_NAME] == "hanging"
    assert abandoned.status.status_code == StatusCode.ERROR
    (point,) = telemetry.points(semconv.METRIC_TASK_ACTIVE)
    assert point.value == 0
    del task


def test_correct_programs_leak_nothing(instrument):
    telemetry = instrument(spans="all")

    async def main() -> None:
        with anyio.CancelScope():
            await asyncio.sleep(0)
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.sleep, 0)
        async with contextlib.aclosing(numbers()) as generator:
            async for _ in generator:
                break
        if sys.version_info >= (3, 11):
            async with asyncio.timeout(5):
                await asyncio.sleep(0)

    asyncio.run(main())
    anyio.run(main)
    assert telemetry.violation_spans() == []
