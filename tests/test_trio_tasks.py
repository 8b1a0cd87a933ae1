"""Task spans on trio: a ``trio.abc.Instrument`` per run, in the three span modes."""

from __future__ import annotations

import sys
import threading
from typing import Any

import pytest
import trio
import trio._core._run as trio_run
import trio.testing
from opentelemetry import trace

from scopewatch import semconv
from scopewatch.instrumentation._trio_task_instrument import TaskInstrument

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

HERE = __file__
REASONS = hasattr(trio.Cancelled, "source")
"""trio >= 0.31: ``Cancelled`` says who cancelled (source, source task, reason)."""


def run(main: Any, *args: Any) -> Any:
    """``trio.run`` with exception groups always (the default from trio 0.25)."""
    return trio.run(main, *args, strict_exception_groups=True)


def attrs(span: Any) -> dict[str, Any]:
    return dict(span.attributes or {})


def span_name(function: Any) -> str:
    """The task span name of ``function`` (Python 3.10 code objects have no qualified name)."""
    qualname = function.__qualname__ if sys.version_info >= (3, 11) else function.__name__
    return semconv.SPAN_TASK_PREFIX + qualname


def task_spans(telemetry: Any, name: str | None = None) -> list[Any]:
    return [
        span
        for span in telemetry.spans()
        if span.name.startswith(semconv.SPAN_TASK_PREFIX) and (name is None or span.name == name)
    ]


def by_task_name(telemetry: Any) -> dict[str, Any]:
    return {attrs(span)[semconv.TASK_NAME]: span for span in task_spans(telemetry)}


async def child(value: int) -> int:
    await trio.sleep(0)
    return value * 2


async def fails() -> None:
    await trio.sleep(0)
    raise ValueError("boom")


async def sleeps() -> None:
    await trio.sleep(10)


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
    assert grandchild[semconv.CODE_FILE] == HERE
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
        assert cancelled[semconv.CANCEL_LOCATION] == f"{HERE}:{raised_at}"
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
    points = telemetry.points(semconv.METRIC_TASK_DURATION)
    counted = sum(point.count for point in points)
    assert counted == 5  # but every task is measured: init, main, run_sync_soon, system, user


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
    points = telemetry.points(semconv.METRIC_TASK_DURATION)
    by_outcome = {dict(p.attributes)[semconv.TASK_OUTCOME]: p.count for p in points}
    assert by_outcome[semconv.OUTCOME_ERROR] == 1
    assert by_outcome[semconv.OUTCOME_CANCELLED] == 1
    assert by_outcome[semconv.OUTCOME_OK] >= 3  # init, main, the child (and run_sync_soon)


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


def test_results_are_identical_with_and_without_scopewatch(instrument: Any) -> None:
    def program() -> list[object]:
        seen: list[object] = []

        async def started(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            task_status.started("ready")
            await trio.sleep(0)

        async def main() -> str:
            async with trio.open_nursery() as nursery:
                seen.append(await nursery.start(started))
                nursery.start_soon(child, 2)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(fails)
                    nursery.start_soon(sleeps)
            except BaseExceptionGroup as group:
                seen.append(repr(group.exceptions))
            with trio.move_on_after(0.001) as scope:
                await trio.sleep(10)
            seen.append((scope.cancel_called, scope.cancelled_caught))
            with trio.CancelScope() as scope:
                scope.cancel()
                try:
                    await trio.sleep(1)
                except trio.Cancelled as cancelled:
                    facts = ("source", "reason")  # trio >= 0.31 (source_task has an address)
                    seen.append([getattr(cancelled, fact, None) for fact in facts])
                    raise
            return "done"

        seen.append(run(main))
        return seen

    bare = program()
    telemetry = instrument(spans="all")
    assert program() == bare
    assert task_spans(telemetry) != []


def test_instrumenting_inside_a_running_trio_run_tracks_tasks_spawned_afterwards(
    instrument: Any,
) -> None:
    started: list[Any] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child, 1, name="before")
            started.append(instrument(spans="all"))
            nursery.start_soon(child, 2, name="after")

    run(main)
    (telemetry,) = started
    assert [attrs(span)[semconv.TASK_NAME] for span in task_spans(telemetry)] == ["after"]


def test_uninstrument_restores_setup_runner_and_retires_instruments(instrument: Any) -> None:
    original = trio_run.setup_runner
    telemetry = instrument(spans="all")
    assert trio_run.setup_runner is not original
    release = threading.Event()
    other_thread: list[int] = []

    async def elsewhere() -> None:  # a run in another thread, going on across uninstrument
        await trio.to_thread.run_sync(release.wait)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child, 1, name="elsewhere-after")
        other_thread.append(1)

    thread = threading.Thread(target=trio.run, args=(elsewhere,))
    thread.start()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child, 1, name="before")

        def ours() -> list[object]:
            instruments = trio_run.GLOBAL_RUN_CONTEXT.runner.instruments["_all"]
            return [item for item in instruments if isinstance(item, TaskInstrument)]

        assert len(ours()) == 1
        telemetry.uninstrument()
        assert ours() == []  # removed from the run still going in this thread
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child, 1, name="after")

    run(main)
    release.set()
    thread.join()
    assert other_thread == [1]
    assert trio_run.setup_runner is original
    names = {attrs(span)[semconv.TASK_NAME] for span in task_spans(telemetry)}
    assert "before" in names
    assert "after" not in names and "elsewhere-after" not in names
    telemetry.exporter.clear()
    assert run(child, 1) == 2
    assert task_spans(telemetry) == []  # a new run is not instrumented


def test_a_failure_of_scopewatch_never_reaches_the_application(
    instrument: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from scopewatch import _safety
    from scopewatch._core.trio_tasks import TrioRun
    from scopewatch.instrumentation import trio_tasks

    instrument(spans="all")
    monkeypatch.setattr(_safety, "STRICT", False)

    def broken(*args: Any) -> None:
        raise RuntimeError("scopewatch bug")

    monkeypatch.setattr(TrioRun, "exited", broken)

    async def main() -> list[int]:
        results: list[int] = []
        async with trio.open_nursery() as nursery:

            async def keep(value: int) -> None:
                results.append(await child(value))

            nursery.start_soon(keep, 1)
            nursery.start_soon(keep, 2)
        return sorted(results)

    assert run(main) == [2, 4]
    assert not trio_tasks.PART.enabled
    assert "trio task instrumentation failed and is disabled" in caplog.text
    trio_tasks.PART.reset()


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


def test_guest_runs_are_instrumented_too(instrument: Any) -> None:
    import asyncio

    telemetry = instrument(spans="all", instrument="tasks")

    async def trio_main() -> int:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child, 1, name="in-guest")
        return 7

    async def host() -> int:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        trio.lowlevel.start_guest_run(
            trio_main,
            run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            done_callback=done.set_result,
            strict_exception_groups=True,
        )
        return int((await done).unwrap())

    assert asyncio.run(host()) == 7
    names = set(by_task_name(telemetry))
    assert "in-guest" in names  # a trio task
    assert any(name.startswith("Task-") for name in names)  # and the asyncio host task


def test_when_trio_internals_cannot_be_read_outcomes_are_ok_with_one_warning(
    instrument: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from scopewatch import _safety
    from scopewatch.instrumentation import _trio_task_instrument

    # stands in for a trio whose Runner.task_exited moved: no other trio can run here
    monkeypatch.setattr(_trio_task_instrument, "_RUN_FILE", "no/such/file.py")
    monkeypatch.setattr(_trio_task_instrument, "_exit_codes", {})
    monkeypatch.setattr(_safety, "_warned", set())
    telemetry = instrument(spans="all", instrument="tasks")

    async def main() -> None:
        with pytest.raises(BaseExceptionGroup):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(fails, name="failing")

    run(main)
    failing = attrs(by_task_name(telemetry)["failing"])
    assert failing[semconv.TASK_OUTCOME] == semconv.OUTCOME_OK
    warnings = [r for r in caplog.records if "cannot read how trio tasks end" in r.getMessage()]
    assert len(warnings) == 1
