"""Task spans on trio: parents, outcomes, who cancelled, system tasks, the three span modes."""

from __future__ import annotations

import sys
from typing import Any

import pytest
import trio
import trio.testing
from opentelemetry import trace

from scopewatch import semconv
from tests.support.trio_tasks import (
    HELPERS,
    REASONS,
    attrs,
    by_task_name,
    child,
    fails,
    run,
    sleeps,
    span_name,
    task_spans,
)

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup


def test_all_mode_one_span_per_task_nested_under_the_spawning_task(instrument: Any) -> None:
    telemetry = instrument(spans="all", instrument="tasks")  # no nursery spans in between
    tracer = telemetry.tracer_provider.get_tracer("app")
    results: list[int] = []

    async def middle() -> None:
        with tracer.start_as_current_span("inside"):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(child, 3, name="grandchild")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(middle, name="middle")

            async def keep(value: int) -> None:
                results.append(await child(value))

            nursery.start_soon(keep, 1, name="first")

    run(main)
    assert results == [2]
    spans = by_task_name(telemetry)
    root = spans.pop(f"{__name__}.{main.__qualname__}")
    assert root.name == span_name(main)
    assert semconv.TASK_PARENT not in attrs(root)  # spawned by trio.run, outside any user task
    assert set(spans) == {"middle", "first", "grandchild"}  # no span for trio's system tasks
    (inside,) = telemetry.spans("inside")
    assert spans["middle"].parent.span_id == root.context.span_id
    assert spans["first"].parent.span_id == root.context.span_id
    assert inside.parent.span_id == spans["middle"].context.span_id
    assert spans["grandchild"].parent.span_id == inside.context.span_id
    grandchild = attrs(spans["grandchild"])
    assert grandchild[semconv.TASK_PARENT] == "middle"
    assert grandchild[semconv.TASK_OUTCOME] == semconv.OUTCOME_OK
    assert grandchild[semconv.CODE_FUNCTION] == "child"
    assert grandchild[semconv.CODE_FILE] == HELPERS
    assert grandchild[semconv.CODE_LINE] == child.__code__.co_firstlineno
    assert attrs(spans["first"])[semconv.TASK_PARENT] == f"{__name__}.{main.__qualname__}"


def test_the_span_around_trio_run_is_the_parent_of_the_main_task(instrument: Any) -> None:
    telemetry = instrument(spans="all")
    tracer = telemetry.tracer_provider.get_tracer("app")

    async def main() -> None:
        await trio.sleep(0)

    with tracer.start_as_current_span("caller") as caller:
        run(main)
        assert trace.get_current_span() is caller
    (root,) = task_spans(telemetry, span_name(main))
    assert root.parent is not None and root.parent.span_id == caller.get_span_context().span_id


def test_outcomes_and_sibling_failure_attribution(instrument: Any) -> None:
    telemetry = instrument(spans="all")

    async def main() -> None:
        with pytest.raises(BaseExceptionGroup) as caught:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sleeps, name="victim")
                nursery.start_soon(fails, name="failing")
        assert caught.group_contains(ValueError)

    run(main)
    spans = by_task_name(telemetry)
    failing, victim = spans["failing"], spans["victim"]
    assert attrs(failing)[semconv.TASK_OUTCOME] == semconv.OUTCOME_ERROR
    assert failing.status.status_code == trace.StatusCode.ERROR
    assert failing.status.description == "ValueError"
    cancelled = attrs(victim)
    assert cancelled[semconv.TASK_OUTCOME] == semconv.OUTCOME_CANCELLED
    assert victim.status.status_code == trace.StatusCode.UNSET
    if REASONS:
        assert cancelled[semconv.CANCEL_ORIGIN] == semconv.ORIGIN_PARENT
        assert cancelled[semconv.CANCEL_TASK] == "failing"
        raised_at = fails.__code__.co_firstlineno + 2
        assert cancelled[semconv.CANCEL_LOCATION] == f"{HELPERS}:{raised_at}"
        (event,) = [e for e in victim.events if e.name == semconv.EVENT_CANCEL]
        reason = "sibling task 'failing' failed with ValueError"
        assert dict(event.attributes or {})[semconv.CANCEL_REASON] == reason
        assert [link.context.span_id for link in victim.links] == [failing.context.span_id]
    else:  # no cancel reasons before trio 0.31: only the origin
        assert cancelled[semconv.CANCEL_ORIGIN] == semconv.ORIGIN_PARENT


def test_explicit_cancel_names_the_canceller_and_its_reason(instrument: Any) -> None:
    telemetry = instrument(spans="all")

    async def canceller(scope: trio.CancelScope) -> None:
        await trio.sleep(0)
        if REASONS:
            scope.cancel(reason="shutting the workers down")
        else:
            scope.cancel()
        await trio.sleep(10)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sleeps, name="worker")
            nursery.start_soon(canceller, nursery.cancel_scope, name="boss")

    run(main)
    spans = by_task_name(telemetry)
    worker = attrs(spans["worker"])
    assert worker[semconv.TASK_OUTCOME] == semconv.OUTCOME_CANCELLED
    assert worker[semconv.CANCEL_ORIGIN] == semconv.ORIGIN_PARENT
    assert attrs(spans["boss"])[semconv.TASK_OUTCOME] == semconv.OUTCOME_CANCELLED  # itself too
    if REASONS:
        assert worker[semconv.CANCEL_TASK] == "boss"
        (event,) = [e for e in spans["worker"].events if e.name == semconv.EVENT_CANCEL]
        reason = dict(event.attributes or {})[semconv.CANCEL_REASON]
        assert reason == "shutting the workers down"
        boss_span = spans["boss"].context.span_id
        assert [link.context.span_id for link in spans["worker"].links] == [boss_span]


def test_deadline_cancels_are_attributed_to_the_deadline(instrument: Any) -> None:
    telemetry = instrument(spans="anomalies")

    async def main() -> None:
        with trio.move_on_after(0.01) as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sleeps, name="late")
        assert scope.cancelled_caught

    run(main)
    late = attrs(by_task_name(telemetry)["late"])
    assert late[semconv.TASK_OUTCOME] == semconv.OUTCOME_CANCELLED
    assert late[semconv.CANCEL_ORIGIN] == semconv.ORIGIN_DEADLINE
    assert late[semconv.CANCEL_TASK] == ""


def test_system_tasks_are_internal(instrument: Any) -> None:
    telemetry = instrument(spans="all", slow_threshold=0.0)
    ran: list[str] = []

    async def housekeeping() -> None:
        ran.append("system task")
        await trio.sleep_forever()  # cancelled when the main task is done: routine

    async def main() -> None:
        trio.lowlevel.spawn_system_task(housekeeping)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child, 1, name="user")

    run(main)
    assert ran == ["system task"]
    # the user tasks are spans; the init task, the run_sync_soon task and the system task
    # (cancelled at shutdown, slower than the threshold) are not
    assert sorted(attrs(span)[semconv.TASK_NAME] for span in task_spans(telemetry)) == sorted(
        ["user", f"{__name__}.{main.__qualname__}"]
    )
    counted = sum(point.value for point in telemetry.points(semconv.METRIC_TASKS))
    assert counted == 5  # but every task is counted: init, main, run_sync_soon, system, user
    measured = sum(point.count for point in telemetry.points(semconv.METRIC_TASK_DURATION))
    assert measured == 2  # and the slow user tasks measured; the routine ends are not


def test_anomalies_mode_exports_only_failed_cancelled_or_slow_tasks(instrument: Any) -> None:
    telemetry = instrument(spans="anomalies", slow_threshold=0.05)
    tracer = telemetry.tracer_provider.get_tracer("app")

    async def slow() -> None:
        await trio.sleep(0.1)

    async def main() -> int:
        with tracer.start_as_current_span("request") as request:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(child, 1, name="quick")
                nursery.start_soon(slow, name="slow")
            with pytest.raises(BaseExceptionGroup):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(fails, name="failing")
                    nursery.start_soon(sleeps, name="victim")
            return request.get_span_context().span_id

    parent_id = run(main)
    spans = by_task_name(telemetry)
    main_span = spans.pop(f"{__name__}.{main.__qualname__}")  # slower than the threshold
    assert attrs(main_span)[semconv.TASK_OUTCOME] == semconv.OUTCOME_OK
    assert set(spans) == {"slow", "failing", "victim"}
    assert attrs(spans["slow"])[semconv.TASK_OUTCOME] == semconv.OUTCOME_OK
    assert attrs(spans["failing"])[semconv.TASK_OUTCOME] == semconv.OUTCOME_ERROR
    assert attrs(spans["victim"])[semconv.TASK_OUTCOME] == semconv.OUTCOME_CANCELLED
    for span in spans.values():  # made afterwards, with the parent current at spawn
        assert span.parent is not None and span.parent.span_id == parent_id
    slow_span = spans["slow"]
    assert (slow_span.end_time - slow_span.start_time) / 1e9 >= 0.09  # the true start time
    if REASONS:  # the failed sibling's span was made when it ended: the victim links to it
        failing_id = spans["failing"].context.span_id
        assert [link.context.span_id for link in spans["victim"].links] == [failing_id]


def test_none_mode_makes_no_task_span_but_keeps_metrics(instrument: Any) -> None:
    telemetry = instrument(spans="none")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child, 1)
        with pytest.raises(BaseExceptionGroup):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(fails)
                nursery.start_soon(sleeps)

    run(main)
    assert task_spans(telemetry) == []
    points = telemetry.points(semconv.METRIC_TASKS)
    by_outcome = {dict(p.attributes)[semconv.TASK_OUTCOME]: p.value for p in points}
    assert by_outcome[semconv.OUTCOME_ERROR] == 1
    assert by_outcome[semconv.OUTCOME_CANCELLED] == 1
    assert by_outcome[semconv.OUTCOME_OK] >= 3  # init, main, the child (and run_sync_soon)
    points = telemetry.points(semconv.METRIC_TASK_DURATION)  # the anomalous ones only
    by_outcome = {dict(p.attributes)[semconv.TASK_OUTCOME]: p.count for p in points}
    assert by_outcome == {semconv.OUTCOME_ERROR: 1, semconv.OUTCOME_CANCELLED: 1}


def test_task_active_counts_running_trio_tasks(instrument: Any) -> None:
    telemetry = instrument()
    seen: list[int] = []

    def active() -> int:
        (point,) = telemetry.points(semconv.METRIC_TASK_ACTIVE)
        return int(point.value)

    async def main() -> None:
        release = trio.Event()
        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(release.wait)
            await trio.testing.wait_all_tasks_blocked()
            seen.append(active())
            release.set()
        seen.append(active())

    run(main)
    assert seen == [8, 3]  # init, run_sync_soon, main and five waiters; then the first three
    assert active() == 0


def test_a_task_spawned_into_another_tasks_nursery_names_its_spawner(instrument: Any) -> None:
    telemetry = instrument(spans="all", instrument="tasks")

    async def spawner(nursery: trio.Nursery) -> None:
        nursery.start_soon(child, 1, name="spawned")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(spawner, nursery, name="spawner")

    run(main)
    spans = by_task_name(telemetry)
    assert attrs(spans["spawned"])[semconv.TASK_PARENT] == "spawner"
    assert spans["spawned"].parent.span_id == spans["spawner"].context.span_id
