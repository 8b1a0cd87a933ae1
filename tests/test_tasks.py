"""Task spans and task metrics: every asyncio task, however created, in the three span modes."""

from __future__ import annotations

import asyncio
import gc
import sys

import anyio
import pytest
from opentelemetry import trace

from scopewatch import semconv

HERE = __file__


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
    await asyncio.sleep(0)
    return value * 2


async def fails() -> None:
    await asyncio.sleep(0)
    raise ValueError("boom")


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


def test_all_mode_nests_spans_created_inside_a_task_under_its_span(instrument):
    telemetry = instrument(spans="all")
    tracer = telemetry.tracer_provider.get_tracer("app")

    async def worker() -> None:
        with tracer.start_as_current_span("inside"):
            await asyncio.sleep(0)

    async def main() -> None:
        with tracer.start_as_current_span("request") as request:
            task = asyncio.create_task(worker())
            assert trace.get_current_span() is request  # the creator's context is unchanged
            await task

    asyncio.run(main())
    (request,) = telemetry.spans("request")
    (inside,) = telemetry.spans("inside")
    (task,) = task_spans(telemetry, span_name(worker))
    (root,) = task_spans(telemetry, span_name(main))  # asyncio.run passes context= on 3.11+
    assert request.parent is not None and request.parent.span_id == root.context.span_id
    assert task.parent is not None and task.parent.span_id == request.context.span_id
    assert inside.parent is not None and inside.parent.span_id == task.context.span_id


def test_anomalies_mode_exports_only_failed_cancelled_or_slow_tasks(instrument):
    telemetry = instrument(spans="anomalies", slow_threshold=0.05)
    tracer = telemetry.tracer_provider.get_tracer("app")

    async def slow() -> None:
        await asyncio.sleep(0.1)

    async def sleeps() -> None:
        await asyncio.sleep(10)

    async def main() -> None:
        with tracer.start_as_current_span("request") as request:
            parent_id = request.get_span_context().span_id
            await asyncio.create_task(child(1), name="quick")
            await asyncio.create_task(slow(), name="slow")
            with pytest.raises(ValueError):
                await asyncio.create_task(fails(), name="failing")
            victim = asyncio.create_task(sleeps(), name="victim")
            await asyncio.sleep(0)
            victim.cancel()
            with pytest.raises(asyncio.CancelledError):
                await victim
        return parent_id

    parent_id = asyncio.run(main())
    by_name = {attrs(span)[semconv.TASK_NAME]: span for span in task_spans(telemetry)}
    main_name = next(name for name in by_name if name.startswith("Task-"))
    assert attrs(by_name.pop(main_name))[semconv.TASK_OUTCOME] == semconv.OUTCOME_OK  # slow too
    assert set(by_name) == {"slow", "failing", "victim"}
    assert attrs(by_name["slow"])[semconv.TASK_OUTCOME] == semconv.OUTCOME_OK
    assert attrs(by_name["failing"])[semconv.TASK_OUTCOME] == semconv.OUTCOME_ERROR
    assert by_name["failing"].status.status_code == trace.StatusCode.ERROR
    assert by_name["failing"].status.description == "ValueError"
    assert attrs(by_name["victim"])[semconv.TASK_OUTCOME] == semconv.OUTCOME_CANCELLED
    for span in by_name.values():  # made afterwards, with the parent current at creation
        assert span.parent is not None and span.parent.span_id == parent_id
    slow_span = by_name["slow"]
    assert (slow_span.end_time - slow_span.start_time) / 1e9 >= 0.09  # the true start time


def test_none_mode_makes_no_task_span_but_keeps_metrics(instrument):
    telemetry = instrument(spans="none")

    async def main() -> None:
        await asyncio.create_task(child(1))
        with pytest.raises(ValueError):
            await asyncio.create_task(fails())

    asyncio.run(main())
    assert task_spans(telemetry) == []
    points = telemetry.points(semconv.METRIC_TASK_DURATION)
    by_outcome = {dict(p.attributes)[semconv.TASK_OUTCOME]: p.count for p in points}
    assert by_outcome[semconv.OUTCOME_OK] >= 2  # the child and asyncio.run's main task
    assert by_outcome[semconv.OUTCOME_ERROR] == 1


def test_task_active_counts_running_tasks(instrument):
    telemetry = instrument()
    seen: list[int] = []

    def active() -> int:
        (point,) = telemetry.points(semconv.METRIC_TASK_ACTIVE)
        return int(point.value)

    async def main() -> None:
        release = asyncio.Event()

        async def waits() -> None:
            await release.wait()

        tasks = [asyncio.create_task(waits()) for _ in range(5)]
        await asyncio.sleep(0)
        seen.append(active())
        release.set()
        await asyncio.gather(*tasks)
        await asyncio.sleep(0)  # done callbacks ran
        seen.append(active())

    asyncio.run(main())
    assert seen == [6, 1]  # five waiters and main; then main alone
    assert active() == 0


def test_duration_histogram_records_outcomes_in_seconds(instrument):
    telemetry = instrument(spans="none")

    async def main() -> None:
        await asyncio.create_task(asyncio.sleep(0.02))

    asyncio.run(main())
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


def test_excluded_by_file_glob(instrument):
    telemetry = instrument(spans="all", exclude="*/tests/test_tasks.py")

    async def main() -> None:
        await asyncio.create_task(child(1))

    asyncio.run(main())
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


def test_internal_tasks_are_not_spans_in_all_mode_and_anyio_roots_are_named_after_main(instrument):
    telemetry = instrument(spans="all")

    async def anyio_main() -> None:
        await anyio.sleep(0)

    anyio.run(anyio_main)
    names = {span.name for span in task_spans(telemetry)}
    # no asyncio housekeeping (shutdown_asyncgens ...), no anyio wrapper
    assert names == {span_name(anyio_main)}


def test_max_tracked_bounds_the_tracked_tasks(instrument):
    telemetry = instrument(spans="all", max_tracked=3)

    async def main() -> list[bool]:
        release = asyncio.Event()

        async def waits() -> None:
            await release.wait()

        tasks = [asyncio.create_task(waits()) for _ in range(4)]
        tracked = [type(task) is not asyncio.Task for task in tasks]
        release.set()
        await asyncio.gather(*tasks)
        return tracked

    # main and two waiters fill the three places; the other waiters run untracked
    assert asyncio.run(main()) == [True, True, False, False]
    assert len(task_spans(telemetry)) == 3


def test_instrumenting_inside_a_running_loop_tracks_the_tasks_created_afterwards(instrument):
    started: list[object] = []

    async def main() -> None:
        before = asyncio.create_task(child(1))
        started.append(instrument(spans="all"))
        after = asyncio.create_task(child(2), name="after")
        await asyncio.gather(before, after)
        assert type(before) is asyncio.Task and type(after) is not asyncio.Task

    asyncio.run(main())
    (telemetry,) = started
    assert [attrs(span)[semconv.TASK_NAME] for span in task_spans(telemetry)] == ["after"]


def test_a_failure_of_scopewatch_never_reaches_the_application(instrument, monkeypatch, caplog):
    from scopewatch import _safety
    from scopewatch.instrumentation import tasks as task_instrumentation
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
    assert not task_instrumentation.PART.enabled
    assert "task instrumentation failed and is disabled" in caplog.text
    task_instrumentation.PART.reset()
