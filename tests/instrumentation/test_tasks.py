"""Task spans and task metrics: every asyncio task, however created, in the three span modes.

Scenarios that anyio programs meet on either backend run on ``asyncio`` and on ``trio``
(``tests/instrumentation/test_trio_tasks.py`` has the native trio ones).
"""

from __future__ import annotations

import asyncio
import gc
import sys

import anyio
import pytest
from opentelemetry import trace

from scopewatch import semconv

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

HERE = __file__
BACKENDS = pytest.mark.parametrize("backend", ["asyncio", "trio"])
"""anyio's two backends: the scenario runs as an anyio program on each."""


def attrs(span):
    return dict(span.attributes or {})


def span_name(function) -> str:
    """The task span name of ``function`` (Python 3.10 code objects have no qualified name)."""
    qualname = function.__qualname__ if sys.version_info >= (3, 11) else function.__name__
    return semconv.SPAN_TASK_PREFIX + qualname


def task_spans(telemetry, name=None):
    return [
        span
        for span in telemetry.spans()
        if span.name.startswith(semconv.SPAN_TASK_PREFIX) and (name is None or span.name == name)
    ]


async def child(value: int) -> int:
    await anyio.sleep(0)
    return value * 2


async def fails() -> None:
    await anyio.sleep(0)
    raise ValueError("boom")


async def sleeps() -> None:
    await anyio.sleep(10)


def task_names(telemetry) -> dict[str, object]:
    return {attrs(span)[semconv.TASK_NAME]: span for span in task_spans(telemetry)}


def test_every_way_of_creating_a_task_gives_one_span_in_all_mode(instrument):
    telemetry = instrument(spans="all")

    async def main() -> list[int]:
        asyncio.current_task().set_name("main")
        loop = asyncio.get_running_loop()
        results = [
            await asyncio.create_task(child(1), name="via-create_task"),
            await loop.create_task(child(2), name="via-loop"),
            await asyncio.ensure_future(child(3)),
        ]
        if sys.version_info >= (3, 11):
            async with asyncio.TaskGroup() as tg:
                in_group = tg.create_task(child(4), name="via-taskgroup")
            results.append(in_group.result())
        async with anyio.create_task_group() as group:
            group.start_soon(child, 5, name="via-anyio")
        return results

    expected = [2, 4, 6, 8] if sys.version_info >= (3, 11) else [2, 4, 6]
    assert asyncio.run(main()) == expected
    spans = task_spans(telemetry, "task child")
    names = sorted(attrs(span)[semconv.TASK_NAME] for span in spans)
    assert "via-create_task" in names and "via-loop" in names and "via-anyio" in names
    assert len(spans) == len(expected) + 1  # ensure_future's task has a default name
    for span in spans:
        a = attrs(span)
        assert a[semconv.TASK_PARENT] == "main"
        assert a[semconv.TASK_OUTCOME] == semconv.OUTCOME_OK
        assert a[semconv.CODE_FUNCTION] == "child"
        assert a[semconv.CODE_FILE] == HERE
        assert a[semconv.CODE_LINE] == child.__code__.co_firstlineno
    (root,) = task_spans(telemetry, span_name(main))
    assert attrs(root)[semconv.TASK_NAME] == "main"
    assert semconv.TASK_PARENT not in attrs(root)  # created by asyncio.run outside any task


@BACKENDS
def test_all_mode_nests_spans_created_inside_a_task_under_its_span(instrument, backend):
    telemetry = instrument(spans="all", instrument="tasks")  # no task group span in between
    tracer = telemetry.tracer_provider.get_tracer("app")

    async def worker() -> None:
        with tracer.start_as_current_span("inside"):
            await anyio.sleep(0)

    async def main() -> None:
        with tracer.start_as_current_span("request") as request:
            async with anyio.create_task_group() as group:
                group.start_soon(worker)
                assert trace.get_current_span() is request  # the creator's context is unchanged

    anyio.run(main, backend=backend)
    (request,) = telemetry.spans("request")
    (inside,) = telemetry.spans("inside")
    (task,) = task_spans(telemetry, span_name(worker))
    (root,) = task_spans(telemetry, span_name(main))
    assert request.parent is not None and request.parent.span_id == root.context.span_id
    assert task.parent is not None and task.parent.span_id == request.context.span_id
    assert inside.parent is not None and inside.parent.span_id == task.context.span_id


@BACKENDS
def test_anomalies_mode_exports_only_failed_timed_out_or_slow_tasks(instrument, backend):
    telemetry = instrument(spans="anomalies", slow_threshold=0.05)
    tracer = telemetry.tracer_provider.get_tracer("app")

    async def slow() -> None:
        await anyio.sleep(0.1)

    async def main() -> int:
        with tracer.start_as_current_span("request") as request:
            async with anyio.create_task_group() as group:
                group.start_soon(child, 1, name="quick")
                group.start_soon(slow, name="slow")
            with pytest.raises(BaseExceptionGroup):
                async with anyio.create_task_group() as group:
                    group.start_soon(fails, name="failing")
            async with anyio.create_task_group() as group:
                group.start_soon(sleeps, name="shut down")  # a normal shutdown: not exported
                await anyio.sleep(0)
                group.cancel_scope.cancel()
            with anyio.move_on_after(0.01):
                async with anyio.create_task_group() as group:
                    group.start_soon(sleeps, name="timed out")
            return request.get_span_context().span_id

    parent_id = anyio.run(main, backend=backend)
    by_name = task_names(telemetry)
    (main_name,) = [
        name for name, span in by_name.items() if span.name == span_name(main)
    ]  # slow too
    assert attrs(by_name.pop(main_name))[semconv.TASK_OUTCOME] == semconv.OUTCOME_OK
    assert set(by_name) == {"slow", "failing", "timed out"}
    assert attrs(by_name["slow"])[semconv.TASK_OUTCOME] == semconv.OUTCOME_OK
    assert attrs(by_name["failing"])[semconv.TASK_OUTCOME] == semconv.OUTCOME_ERROR
    assert by_name["failing"].status.status_code == trace.StatusCode.ERROR
    assert by_name["failing"].status.description == "ValueError"
    timed_out = attrs(by_name["timed out"])
    assert timed_out[semconv.TASK_OUTCOME] == semconv.OUTCOME_CANCELLED
    assert timed_out[semconv.CANCEL_ORIGIN] == semconv.ORIGIN_DEADLINE
    for span in by_name.values():  # made afterwards, with the parent current at creation
        assert span.parent is not None and span.parent.span_id == parent_id
    slow_span = by_name["slow"]
    assert (slow_span.end_time - slow_span.start_time) / 1e9 >= 0.09  # the true start time


@BACKENDS
def test_none_mode_makes_no_task_span_but_keeps_metrics(instrument, backend):
    telemetry = instrument(spans="none")

    async def main() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(child, 1)
        with pytest.raises(BaseExceptionGroup):
            async with anyio.create_task_group() as group:
                group.start_soon(fails)

    anyio.run(main, backend=backend)
    assert task_spans(telemetry) == []
    points = telemetry.points(semconv.METRIC_TASKS)
    by_outcome = {dict(p.attributes)[semconv.TASK_OUTCOME]: p.value for p in points}
    assert by_outcome[semconv.OUTCOME_OK] >= 2  # the child and the run's main task
    assert by_outcome[semconv.OUTCOME_ERROR] == 1
    (point,) = telemetry.points(semconv.METRIC_TASK_DURATION)  # only the failed task's
    assert (dict(point.attributes)[semconv.TASK_OUTCOME], point.count) == (
        semconv.OUTCOME_ERROR,
        1,
    )


@BACKENDS
def test_task_active_counts_running_tasks(instrument, backend):
    telemetry = instrument()
    seen: list[int] = []

    def active() -> int:
        (point,) = telemetry.points(semconv.METRIC_TASK_ACTIVE)
        return int(point.value)

    async def main() -> None:
        release = anyio.Event()
        async with anyio.create_task_group() as group:
            for _ in range(5):
                group.start_soon(release.wait)
            await anyio.wait_all_tasks_blocked()
            seen.append(active())
            release.set()
        await anyio.sleep(0)  # done callbacks ran
        seen.append(active())

    anyio.run(main, backend=backend)
    # five waiters and main, then main alone (on trio also its init and run_sync_soon tasks)
    runtime_tasks = 2 if backend == "trio" else 0
    assert seen == [6 + runtime_tasks, 1 + runtime_tasks]
    assert active() == 0


@BACKENDS
def test_duration_histogram_records_outcomes_in_seconds(instrument, backend):
    telemetry = instrument(spans="none", durations="all")

    async def main() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(anyio.sleep, 0.02)

    anyio.run(main, backend=backend)
    points = telemetry.points(semconv.METRIC_TASK_DURATION)
    assert all(p.count >= 1 for p in points)
    assert max(p.max for p in points) >= 0.02
    assert max(p.max for p in points) < 60  # seconds, not milliseconds


def test_excluded_tasks_are_not_instrumented(instrument):
    telemetry = instrument(spans="all", exclude="*noisy,other_file_*.py")

    async def noisy() -> None:
        await asyncio.sleep(0)

    async def main() -> bool:
        task = asyncio.create_task(noisy())
        await task
        kept = asyncio.create_task(child(1))
        await kept
        return type(task) is asyncio.Task and type(kept) is not asyncio.Task

    assert asyncio.run(main())
    names = {span.name for span in task_spans(telemetry)}
    assert "task child" in names
    assert not any(name.endswith("noisy") for name in names)


@BACKENDS
def test_excluded_by_file_glob(instrument, backend):
    telemetry = instrument(spans="all", exclude="*/tests/instrumentation/test_tasks.py")

    async def main() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(child, 1)

    anyio.run(main, backend=backend)
    assert task_spans(telemetry) == []


def test_semantics_are_unchanged(instrument):
    instrument(spans="all")

    async def main() -> None:
        coro = child(21)
        task = asyncio.create_task(coro, name="n")
        assert task.get_coro() is coro  # never wrapped
        assert task.get_name() == "n"
        assert isinstance(task, asyncio.Task)
        assert repr(task).startswith("<Task pending name='n' coro=<child()")
        assert await task == 42
        failing = asyncio.create_task(fails())
        with pytest.raises(ValueError, match="boom"):
            await failing
        assert str(failing.exception()) == "boom"
        victim = asyncio.create_task(asyncio.sleep(10))
        await asyncio.sleep(0)
        assert victim.cancel("why") is True
        with pytest.raises(asyncio.CancelledError):
            await victim
        assert victim.cancelled()
        assert victim.cancel() is False  # already done

    asyncio.run(main())


def done_callbacks_scenario() -> list[object]:
    """Done callbacks added, removed, raising and added late: what the program observes."""
    seen: list[object] = []

    def note(label: str):
        def callback(task: asyncio.Task[int]) -> None:
            seen.append((label, task.result()))

        return callback

    def raises(task: asyncio.Task[int]) -> None:
        raise KeyError("from a callback")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda loop, ctx: seen.append(repr(ctx["exception"])))
        first, second, again = note("first"), note("second"), note("again")
        removed = asyncio.create_task(child(1))
        removed.add_done_callback(first)
        removed.add_done_callback(second)
        removed.add_done_callback(first)
        seen.append(("removed", removed.remove_done_callback(first)))
        seen.append(await removed)
        kept = asyncio.create_task(child(2))
        kept.add_done_callback(raises)
        kept.add_done_callback(again)
        seen.append(await kept)
        await asyncio.sleep(0)
        kept.add_done_callback(first)  # already done: scheduled at once
        seen.append(("none there", kept.remove_done_callback(second)))
        await asyncio.sleep(0)

    asyncio.run(main())
    return seen


def test_done_callbacks_behave_as_without_scopewatch(instrument):
    expected = done_callbacks_scenario()
    telemetry = instrument()
    assert done_callbacks_scenario() == expected
    assert expected[0] == ("removed", 2)
    (ok,) = telemetry.points(semconv.METRIC_TASKS)  # each task counted once
    assert ok.value == 2 + 3  # the two tasks, then asyncio.run's main and shutdown tasks


def removed_after_scheduling_scenario() -> list[object]:
    """The first done callback removed once the task ended, before the loop ran it.

    ``run_until_complete`` does this when a ``KeyboardInterrupt`` leaves ``run_forever``: its
    callback is already scheduled, and asyncio runs it anyway.
    """
    seen: list[object] = []
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(lambda loop, ctx: seen.append(repr(ctx.get("exception"))))

    def first(task: asyncio.Task[int]) -> None:
        seen.append(("first", task.result()))

    async def steps() -> int:
        return 1

    try:
        task = loop.create_task(steps())
        task.add_done_callback(first)
        task.add_done_callback(lambda task: seen.append("second"))
        while not task.done():
            loop.call_soon(loop.stop)
            loop.run_forever()  # one step: the task ends, its callbacks are scheduled
        seen.append(("removed", task.remove_done_callback(first)))
        loop.call_soon(loop.stop)
        loop.run_forever()
    finally:
        loop.close()
    return seen


def test_a_callback_removed_after_it_was_scheduled_still_runs_as_without_scopewatch(instrument):
    expected = removed_after_scheduling_scenario()
    instrument()
    assert removed_after_scheduling_scenario() == expected
    assert expected == [("removed", 0), ("first", 1), "second"]


def test_unretrieved_exception_is_still_logged_by_asyncio(instrument):
    """Reading the outcome must not mark the exception as retrieved."""
    instrument()
    logged: list[str] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda loop, ctx: logged.append(ctx["message"]))
        asyncio.create_task(fails())  # noqa: RUF006 - the point: nobody retrieves it
        await asyncio.sleep(0.01)
        gc.collect()

    asyncio.run(main())
    assert logged == ["Task exception was never retrieved"]


@BACKENDS
def test_internal_tasks_are_not_spans_in_all_mode_and_anyio_roots_are_named_after_main(
    instrument, backend
):
    telemetry = instrument(spans="all")

    async def anyio_main() -> None:
        await anyio.sleep(0)

    anyio.run(anyio_main, backend=backend)
    names = {span.name for span in task_spans(telemetry)}
    # no asyncio housekeeping (shutdown_asyncgens ...) or trio system task, no anyio wrapper
    assert names == {span_name(anyio_main)}


@BACKENDS
def test_anyio_spawn_ways_are_named_after_the_users_coroutine(instrument, backend):
    telemetry = instrument(spans="all")

    async def started(*, task_status=anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started("ready")
        await anyio.sleep(0)

    async def main() -> str:
        async with anyio.create_task_group() as group:
            group.start_soon(child, 1, name="soon")
            return await group.start(started, name="started")

    assert anyio.run(main, backend=backend) == "ready"
    spans = task_names(telemetry)
    assert spans["soon"].name == "task child"
    assert spans["started"].name == span_name(started)  # not anyio's start() wrapper
    qualname = span_name(started).removeprefix(semconv.SPAN_TASK_PREFIX)
    assert attrs(spans["started"])[semconv.CODE_FUNCTION] == qualname


@BACKENDS
def test_max_tracked_bounds_the_tracked_tasks(instrument, backend):
    telemetry = instrument(spans="all", max_tracked=4)

    async def main() -> None:
        async with anyio.create_task_group() as group:
            for number in range(4):
                group.start_soon(child, number, name=f"child-{number}")

    anyio.run(main, backend=backend)
    # main and three children fill the four places; the last child runs untracked (on trio
    # the init and run_sync_soon tasks take two places: one child is tracked)
    expected = ["child-0"] if backend == "trio" else ["child-0", "child-1", "child-2"]
    assert sorted(name for name in task_names(telemetry) if name.startswith("child")) == expected


@BACKENDS
def test_instrumenting_inside_a_running_loop_tracks_the_tasks_created_afterwards(
    instrument, backend
):
    started: list[object] = []

    async def main() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(child, 1, name="before")
            started.append(instrument(spans="all"))
            group.start_soon(child, 2, name="after")

    anyio.run(main, backend=backend)
    (telemetry,) = started
    assert [attrs(span)[semconv.TASK_NAME] for span in task_spans(telemetry)] == ["after"]


@BACKENDS
def test_a_failure_of_scopewatch_never_reaches_the_application(
    instrument, monkeypatch, caplog, backend
):
    from scopewatch import _safety
    from scopewatch.instrumentation import tasks, trio_tasks
    from scopewatch.telemetry.tasks import TaskTelemetry

    instrument(spans="all")
    monkeypatch.setattr(_safety, "STRICT", False)

    def broken(self, record):
        raise RuntimeError("scopewatch bug")

    monkeypatch.setattr(TaskTelemetry, "start", broken)
    results: list[int] = []

    async def keep(value: int) -> None:
        results.append(await child(value))

    async def main() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(keep, 1)
            group.start_soon(keep, 2)

    anyio.run(main, backend=backend)
    assert sorted(results) == [2, 4]
    part = trio_tasks.PART if backend == "trio" else tasks.PART
    assert not part.enabled
    assert f"{part.name} failed and is disabled" in caplog.text
    part.reset()


def test_after_a_failure_asyncio_tasks_are_plain_tasks(instrument, monkeypatch):
    from scopewatch import _safety
    from scopewatch.instrumentation import tasks
    from scopewatch.telemetry.tasks import TaskTelemetry

    instrument(spans="all")
    monkeypatch.setattr(_safety, "STRICT", False)

    def broken(self, record):
        raise RuntimeError("scopewatch bug")

    monkeypatch.setattr(TaskTelemetry, "start", broken)

    async def main() -> list[int]:
        first = asyncio.create_task(child(1))
        second = asyncio.create_task(child(2))
        return [await first, await second, type(second) is asyncio.Task]

    assert asyncio.run(main()) == [2, 4, True]  # the part is off: plain tasks from then on
    tasks.PART.reset()
