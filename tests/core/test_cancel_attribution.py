"""Who cancelled whom: the requesting task, its location, the reason and the origin."""

from __future__ import annotations

import asyncio
import sys
from importlib.metadata import version

import anyio
import pytest

from scopewatch import semconv
from tests.support.markers import needs_311
from tests.support.source_lines import marked_line

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

HERE = __file__
ANYIO_VERSION = tuple(int(part) for part in version("anyio").split(".")[:2])
EARLY_EXIT = ANYIO_VERSION < (4, 6)
"""anyio 4.0-4.5 exit a task group's scope before waiting for its children and cancel them
through that exited scope: children then name the group (``parent``), not the root cause."""


def attrs(span):
    return dict(span.attributes or {})


def line(marker: str) -> str:
    """``HERE:line`` of the line carrying ``marker``."""
    return f"{HERE}:{marked_line(HERE, marker)}"


def task_span(telemetry, name):
    found = [
        span
        for span in telemetry.spans()
        if span.name.startswith(semconv.SPAN_TASK_PREFIX)
        and attrs(span).get(semconv.TASK_NAME) == name
    ]
    assert len(found) == 1, [span.name for span in telemetry.spans()]
    return found[0]


def cancel_event(span):
    (event,) = [event for event in span.events if event.name == semconv.EVENT_CANCEL]
    return dict(event.attributes or {})


async def sleeps() -> None:
    await asyncio.sleep(10)


async def naps() -> None:
    await anyio.sleep(10)  # any backend


async def fails_soon() -> None:
    await anyio.sleep(0.01)  # any backend
    raise ValueError("boom")  # <- raise


@pytest.mark.parametrize("spans", ["all", "anomalies"])
def test_cancelled_by_another_named_task(instrument, spans):
    telemetry = instrument(spans=spans)

    async def boss(victim: asyncio.Task[None]) -> None:
        await asyncio.sleep(0)
        victim.cancel("shutting down")  # <- boss cancels

    async def main() -> None:
        victim = asyncio.create_task(sleeps(), name="victim")
        await asyncio.create_task(boss(victim), name="boss")
        with pytest.raises(asyncio.CancelledError):
            await victim

    asyncio.run(main())
    victim = task_span(telemetry, "victim")
    a = attrs(victim)
    assert a[semconv.TASK_OUTCOME] == semconv.OUTCOME_CANCELLED
    assert a[semconv.CANCEL_ORIGIN] == semconv.ORIGIN_EXTERNAL
    assert a[semconv.CANCEL_TASK] == "boss"
    assert a[semconv.CANCEL_LOCATION] == line("# <- boss cancels")
    assert cancel_event(victim)[semconv.CANCEL_REASON] == "shutting down"
    if spans == "all":  # the canceller's span was recording: the victim links to it
        boss = task_span(telemetry, "boss")
        assert [link.context.span_id for link in victim.links] == [boss.context.span_id]
    else:  # in anomalies mode the boss had no span while it cancelled
        assert list(victim.links) == []


def test_a_task_cancelling_itself_is_explicit(instrument):
    telemetry = instrument(spans="all")  # a normal end: exported in all mode only

    async def quits() -> None:
        asyncio.current_task().cancel()  # <- self
        await asyncio.sleep(1)

    async def main() -> None:
        with pytest.raises(asyncio.CancelledError):
            await asyncio.create_task(quits(), name="quitter")

    asyncio.run(main())
    a = attrs(task_span(telemetry, "quitter"))
    assert (a[semconv.CANCEL_ORIGIN], a[semconv.CANCEL_TASK]) == (
        semconv.ORIGIN_EXPLICIT,
        "quitter",
    )
    assert a[semconv.CANCEL_LOCATION] == line("# <- self")


@needs_311
def test_deadline_of_an_asyncio_timeout_reaches_the_awaited_task(instrument):
    telemetry = instrument()

    async def main() -> None:
        worker = asyncio.create_task(sleeps(), name="worker")
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):  # <- timeout
                await worker
        assert worker.cancelled()

    asyncio.run(main())
    a = attrs(task_span(telemetry, "worker"))
    assert a[semconv.CANCEL_ORIGIN] == semconv.ORIGIN_DEADLINE
    assert a[semconv.CANCEL_LOCATION] == line("# <- timeout")
    (scope,) = telemetry.spans(semconv.SPAN_ASYNCIO_TIMEOUT)
    assert attrs(scope)[semconv.SCOPE_OUTCOME] == semconv.OUTCOME_DEADLINE_EXCEEDED


def test_wait_for_timeout_is_a_deadline(instrument):
    telemetry = instrument()

    async def main() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.ensure_future(sleeps()), 0.01)  # <- wait_for

    asyncio.run(main())
    (span,) = [
        span for span in telemetry.spans() if attrs(span).get(semconv.CODE_FUNCTION) == "sleeps"
    ]
    a = attrs(span)
    assert a[semconv.TASK_OUTCOME] == semconv.OUTCOME_CANCELLED
    assert a[semconv.CANCEL_ORIGIN] == semconv.ORIGIN_DEADLINE


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_anyio_deadline_reaches_children_of_a_task_group(instrument, backend):
    telemetry = instrument()

    async def main() -> None:
        with anyio.move_on_after(0.01) as scope:  # <- move_on_after
            async with anyio.create_task_group() as tg:
                tg.start_soon(anyio.sleep, 10, name="child")
        assert scope.cancelled_caught

    anyio.run(main, backend=backend)
    child = task_span(telemetry, "child")
    a = attrs(child)
    assert a[semconv.TASK_OUTCOME] == semconv.OUTCOME_CANCELLED
    if EARLY_EXIT and backend == "asyncio":
        assert a[semconv.CANCEL_ORIGIN] == semconv.ORIGIN_PARENT
    else:
        assert a[semconv.CANCEL_ORIGIN] == semconv.ORIGIN_DEADLINE
        assert a[semconv.CANCEL_LOCATION] == line("# <- move_on_after")
    (deadline,) = telemetry.spans(semconv.SPAN_ANYIO_MOVE_ON_AFTER)
    assert attrs(deadline)[semconv.SCOPE_OUTCOME] == semconv.OUTCOME_DEADLINE_EXCEEDED


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_explicit_scope_cancel_reaches_children_as_parent(instrument, backend):
    telemetry = instrument(spans="all")  # a normal shutdown: exported in all mode only

    async def group() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(naps, name="child")
            await anyio.sleep(0)
            tg.cancel_scope.cancel()  # <- scope cancel

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(group, name="main")

    anyio.run(main, backend=backend)
    a = attrs(task_span(telemetry, "child"))
    assert a[semconv.CANCEL_ORIGIN] == semconv.ORIGIN_PARENT
    assert a[semconv.CANCEL_TASK] == "main"
    assert a[semconv.CANCEL_LOCATION] == line("# <- scope cancel")
    if not EARLY_EXIT:
        groups = telemetry.spans(semconv.SPAN_ANYIO_TASK_GROUP)
        outcomes = sorted(attrs(span)[semconv.SCOPE_OUTCOME] for span in groups)
        assert semconv.OUTCOME_CANCELLED in outcomes


def check_sibling(telemetry, sibling: str, failer: str) -> None:
    span = task_span(telemetry, sibling)
    a = attrs(span)
    assert a[semconv.TASK_OUTCOME] == semconv.OUTCOME_CANCELLED
    assert a[semconv.CANCEL_ORIGIN] == semconv.ORIGIN_PARENT
    assert a[semconv.CANCEL_TASK] == failer
    assert a[semconv.CANCEL_LOCATION] == line("# <- raise")
    assert cancel_event(span)[semconv.CANCEL_REASON] == (
        f"sibling task {failer!r} failed with ValueError"
    )
    failed = task_span(telemetry, failer)
    assert attrs(failed)[semconv.TASK_OUTCOME] == semconv.OUTCOME_ERROR
    assert [link.context.span_id for link in span.links] == [failed.context.span_id]


@needs_311
def test_asyncio_task_group_sibling_failure(instrument):
    telemetry = instrument()

    async def main() -> None:
        with pytest.raises(BaseExceptionGroup):
            async with asyncio.TaskGroup() as tg:
                tg.create_task(sleeps(), name="sibling")
                tg.create_task(fails_soon(), name="failer")

    asyncio.run(main())
    check_sibling(telemetry, "sibling", "failer")


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_anyio_task_group_sibling_failure(instrument, backend):
    telemetry = instrument()

    async def main() -> None:
        with pytest.raises(BaseExceptionGroup):
            async with anyio.create_task_group() as tg:
                tg.start_soon(anyio.sleep, 10, name="sibling")
                tg.start_soon(fails_soon, name="failer")

    anyio.run(main, backend=backend)
    check_sibling(telemetry, "sibling", "failer")


@pytest.mark.parametrize("kind", ["anyio", pytest.param("asyncio", marks=needs_311)])
def test_task_cancel_from_outside_explains_the_scope_it_interrupts(instrument, kind):
    telemetry = instrument()

    async def worker() -> None:
        if kind == "anyio":
            with anyio.CancelScope():
                await asyncio.sleep(10)
        else:
            async with asyncio.timeout(10):
                await asyncio.sleep(10)

    async def main() -> None:
        asyncio.current_task().set_name("main")
        task = asyncio.create_task(worker(), name="worker")
        await asyncio.sleep(0.01)
        task.cancel("stop")  # <- outside
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    name = semconv.SPAN_ANYIO_CANCEL_SCOPE if kind == "anyio" else semconv.SPAN_ASYNCIO_TIMEOUT
    (scope,) = telemetry.spans(name)
    a = attrs(scope)
    assert a[semconv.SCOPE_OUTCOME] == semconv.OUTCOME_CANCELLED  # not a deadline
    assert a[semconv.CANCEL_ORIGIN] == semconv.ORIGIN_EXTERNAL
    assert (a[semconv.CANCEL_TASK], a[semconv.CANCEL_LOCATION]) == ("main", line("# <- outside"))
    task = attrs(task_span(telemetry, "worker"))
    assert (task[semconv.CANCEL_TASK], task[semconv.CANCEL_ORIGIN]) == ("main", "external")


def test_gather_cancellation_reaches_its_children_as_parent(instrument):
    telemetry = instrument(spans="all")  # a normal shutdown: exported in all mode only

    async def main() -> None:
        asyncio.current_task().set_name("main")
        group = asyncio.gather(
            asyncio.create_task(sleeps(), name="one"), asyncio.create_task(sleeps(), name="two")
        )
        await asyncio.sleep(0)
        group.cancel()  # <- gather
        with pytest.raises(asyncio.CancelledError):
            await group

    asyncio.run(main())
    for name in ("one", "two"):
        a = attrs(task_span(telemetry, name))
        assert a[semconv.CANCEL_ORIGIN] == semconv.ORIGIN_PARENT
        assert (a[semconv.CANCEL_TASK], a[semconv.CANCEL_LOCATION]) == ("main", line("# <- gather"))


def test_asyncio_run_shutdown_cancels_leftover_tasks_externally(instrument):
    telemetry = instrument()

    async def main() -> None:
        asyncio.create_task(sleeps(), name="leftover")  # noqa: RUF006 - left running on purpose
        await asyncio.sleep(0)

    asyncio.run(main())
    a = attrs(task_span(telemetry, "leftover"))
    assert a[semconv.TASK_OUTCOME] == semconv.OUTCOME_CANCELLED
    assert a[semconv.CANCEL_ORIGIN] == semconv.ORIGIN_EXTERNAL
    assert a[semconv.CANCEL_TASK] == ""
