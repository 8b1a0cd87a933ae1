"""The trio task instrument's life: identical results, late instrumenting, uninstrument, guest
runs, failures of scopewatch and trio internals it cannot read."""

from __future__ import annotations

import sys
import threading
from typing import Any

import pytest
import trio
import trio._core._run as trio_run

from scopewatch import semconv
from scopewatch.instrumentation._trio_task_instrument import TaskInstrument
from tests.support.trio_tasks import attrs, by_task_name, child, fails, run, sleeps, task_spans

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup


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
