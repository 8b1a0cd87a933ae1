"""The cost contract for tasks (DESIGN section 3): a task that ends normally makes no SDK call.

Every ended task is counted exactly in ``scopewatch.tasks``; ``scopewatch.task.duration`` and
(in the default ``anomalies`` mode) a task span exist only for anomalous tasks: failed,
cancelled by a deadline, from outside or as part of a failure, or slow. A task cancelled by
its own group's normal shutdown is counted, not exported.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import anyio
import pytest

from scopewatch import semconv
from scopewatch._core.records import CancelInfo
from scopewatch._core.task_ends import task_anomalous
from tests.support.markers import needs_311

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

BACKENDS = pytest.mark.parametrize("backend", ["asyncio", "trio"])
RUN_TASKS = 3
"""Tasks ``asyncio.run`` itself makes and that end normally: the main task, then
``shutdown_asyncgens`` and ``shutdown_default_executor``."""


def attrs(span: Any) -> dict[str, Any]:
    return dict(span.attributes or {})


def task_spans(telemetry: Any) -> list[Any]:
    return [s for s in telemetry.spans() if s.name.startswith(semconv.SPAN_TASK_PREFIX)]


def counts(telemetry: Any) -> dict[str, int]:
    """``scopewatch.tasks`` by outcome."""
    return {
        attrs(point)[semconv.TASK_OUTCOME]: int(point.value)
        for point in telemetry.points(semconv.METRIC_TASKS)
    }


def durations(telemetry: Any) -> dict[str, int]:
    """How many ``scopewatch.task.duration`` measurements, by outcome."""
    return {
        attrs(point)[semconv.TASK_OUTCOME]: point.count
        for point in telemetry.points(semconv.METRIC_TASK_DURATION)
    }


async def work(value: int) -> int:
    await asyncio.sleep(0)
    return value + 1


async def naps() -> None:
    await anyio.sleep(10)


async def fails() -> None:
    await anyio.sleep(0)
    raise ValueError("boom")


def test_normal_tasks_are_counted_exactly_with_no_span_and_no_measurement(instrument):
    telemetry = instrument()
    tasks = 50

    async def main() -> list[int]:
        created = [asyncio.create_task(work(n)) for n in range(tasks)]
        results = [await task for task in created[:10]]
        return results + list(await asyncio.gather(*created[10:]))

    assert asyncio.run(main()) == [n + 1 for n in range(tasks)]
    assert task_spans(telemetry) == []
    assert durations(telemetry) == {}
    assert counts(telemetry) == {semconv.OUTCOME_OK: tasks + RUN_TASKS}
    (active,) = telemetry.points(semconv.METRIC_TASK_ACTIVE)
    assert active.value == 0


@BACKENDS
def test_a_group_shutting_its_children_down_is_not_an_anomaly(instrument, backend):
    telemetry = instrument()

    async def main() -> None:
        async with anyio.create_task_group() as group:
            for _ in range(4):
                group.start_soon(naps)
            await anyio.sleep(0)
            group.cancel_scope.cancel()

    anyio.run(main, backend=backend)
    assert task_spans(telemetry) == []
    assert durations(telemetry) == {}
    assert counts(telemetry)[semconv.OUTCOME_CANCELLED] == 4


@BACKENDS
def test_deadline_cancelled_tasks_are_exported_with_their_duration(instrument, backend):
    telemetry = instrument()

    async def main() -> None:
        with anyio.move_on_after(0.02):
            async with anyio.create_task_group() as group:
                group.start_soon(naps, name="late")
                group.start_soon(naps, name="later")

    anyio.run(main, backend=backend)
    spans = {attrs(span)[semconv.TASK_NAME]: attrs(span) for span in task_spans(telemetry)}
    assert set(spans) == {"late", "later"}
    for facts in spans.values():
        assert facts[semconv.TASK_OUTCOME] == semconv.OUTCOME_CANCELLED
        assert facts[semconv.CANCEL_ORIGIN] == semconv.ORIGIN_DEADLINE
    assert durations(telemetry) == {semconv.OUTCOME_CANCELLED: 2}
    assert counts(telemetry)[semconv.OUTCOME_CANCELLED] == 2


@BACKENDS
def test_a_failed_task_and_the_siblings_its_failure_cancelled_are_exported(instrument, backend):
    telemetry = instrument()

    async def main() -> None:
        with pytest.raises(BaseExceptionGroup):
            async with anyio.create_task_group() as group:
                group.start_soon(naps, name="sibling")
                group.start_soon(fails, name="failing")

    anyio.run(main, backend=backend)
    spans = {attrs(span)[semconv.TASK_NAME]: attrs(span) for span in task_spans(telemetry)}
    assert set(spans) == {"sibling", "failing"}
    assert spans["failing"][semconv.TASK_OUTCOME] == semconv.OUTCOME_ERROR
    assert spans["sibling"][semconv.TASK_OUTCOME] == semconv.OUTCOME_CANCELLED
    assert spans["sibling"][semconv.CANCEL_TASK] == "failing"
    assert durations(telemetry) == {semconv.OUTCOME_ERROR: 1, semconv.OUTCOME_CANCELLED: 1}
    assert counts(telemetry)[semconv.OUTCOME_ERROR] == 1
    assert counts(telemetry)[semconv.OUTCOME_CANCELLED] == 1


def test_a_task_cancelled_from_outside_is_exported(instrument):
    telemetry = instrument()

    async def main() -> None:
        victim = asyncio.create_task(naps(), name="victim")
        await asyncio.sleep(0)
        victim.cancel()
        with pytest.raises(asyncio.CancelledError):
            await victim

    asyncio.run(main())
    (span,) = task_spans(telemetry)
    assert attrs(span)[semconv.CANCEL_ORIGIN] == semconv.ORIGIN_EXTERNAL
    assert durations(telemetry) == {semconv.OUTCOME_CANCELLED: 1}
    assert counts(telemetry) == {semconv.OUTCOME_OK: RUN_TASKS, semconv.OUTCOME_CANCELLED: 1}


@needs_311
def test_asyncio_task_group_children_cancelled_by_the_failure_of_its_body_are_anomalous(
    instrument,
):
    telemetry = instrument()

    async def main() -> None:
        with pytest.raises(BaseExceptionGroup):
            async with asyncio.TaskGroup() as group:
                group.create_task(naps(), name="child")
                await asyncio.sleep(0)
                raise ValueError("body failed")

    asyncio.run(main())
    (span,) = task_spans(telemetry)
    assert attrs(span)[semconv.TASK_NAME] == "child"
    assert attrs(span)[semconv.CANCEL_ORIGIN] == semconv.ORIGIN_PARENT
    assert durations(telemetry) == {semconv.OUTCOME_CANCELLED: 1}


def test_slow_tasks_are_anomalous(instrument):
    telemetry = instrument(slow_threshold=0.02)

    async def slow() -> None:
        await asyncio.sleep(0.05)

    async def main() -> None:
        await asyncio.gather(asyncio.create_task(slow(), name="slow"), work(1))

    asyncio.run(main())
    names = sorted(attrs(span)[semconv.TASK_NAME] for span in task_spans(telemetry))
    assert "slow" in names and len(names) == 2  # and the main task that awaited it
    assert durations(telemetry) == {semconv.OUTCOME_OK: 2}


def test_durations_all_measures_every_task_but_exports_no_normal_span(instrument):
    telemetry = instrument(durations="all")

    async def main() -> None:
        await asyncio.gather(*(asyncio.create_task(work(n)) for n in range(7)))

    asyncio.run(main())
    assert task_spans(telemetry) == []
    assert durations(telemetry) == {semconv.OUTCOME_OK: 7 + RUN_TASKS}
    assert counts(telemetry) == {semconv.OUTCOME_OK: 7 + RUN_TASKS}


def test_all_mode_spans_every_user_task_but_measures_only_anomalies(instrument):
    telemetry = instrument(spans="all")

    async def main() -> None:
        await asyncio.gather(*(asyncio.create_task(work(n), name=f"w{n}") for n in range(3)))

    asyncio.run(main())
    names = {attrs(span)[semconv.TASK_NAME] for span in task_spans(telemetry)}
    assert {"w0", "w1", "w2"} <= names
    assert durations(telemetry) == {}


def test_counts_are_cumulative_across_collections(instrument):
    telemetry = instrument()

    async def batch() -> None:
        await asyncio.gather(*(asyncio.create_task(work(n)) for n in range(5)))

    asyncio.run(batch())
    assert counts(telemetry) == {semconv.OUTCOME_OK: 5 + RUN_TASKS}
    asyncio.run(batch())
    assert counts(telemetry) == {semconv.OUTCOME_OK: 2 * (5 + RUN_TASKS)}


@pytest.mark.parametrize(
    ("outcome", "info", "expected"),
    [
        (semconv.OUTCOME_OK, None, False),
        (semconv.OUTCOME_ERROR, None, True),
        (semconv.OUTCOME_CANCELLED, CancelInfo(semconv.ORIGIN_DEADLINE, "", ""), True),
        (semconv.OUTCOME_CANCELLED, CancelInfo(semconv.ORIGIN_EXTERNAL, "", ""), True),
        (semconv.OUTCOME_CANCELLED, CancelInfo(semconv.ORIGIN_PARENT, "", ""), False),
        (semconv.OUTCOME_CANCELLED, CancelInfo(semconv.ORIGIN_EXPLICIT, "", ""), False),
        (semconv.OUTCOME_CANCELLED, CancelInfo(semconv.ORIGIN_PARENT, "", "", failure=True), True),
        (semconv.OUTCOME_CANCELLED, None, True),
    ],
)
def test_task_end_rule(outcome: str, info: CancelInfo | None, expected: bool) -> None:
    assert task_anomalous(outcome, info, 0.001, 1.0) is expected
    assert task_anomalous(outcome, info, 2.0, 1.0)  # slow is always anomalous
