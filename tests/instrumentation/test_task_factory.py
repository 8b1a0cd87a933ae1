"""Composition: user task factories, eager tasks, uvloop, opentelemetry-instrumentation-asyncio."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from scopewatch import semconv
from scopewatch.instrumentation import tasks as task_instrumentation

HERE = __file__
needs_312 = pytest.mark.skipif(
    sys.version_info < (3, 12), reason="asyncio.eager_task_factory exists from Python 3.12"
)


def attrs(span):
    return dict(span.attributes or {})


def task_names(telemetry) -> list[str]:
    return sorted(
        attrs(span)[semconv.TASK_NAME]
        for span in telemetry.spans()
        if span.name.startswith(semconv.SPAN_TASK_PREFIX)
    )


async def work(value: int) -> int:
    await asyncio.sleep(0)
    return value + 1


class CustomTask(asyncio.Task):  # type: ignore[type-arg]
    """A user's own task class."""


def make_factory(calls: list[str]):
    def factory(loop, coro, **kwargs):
        calls.append(coro.__qualname__)
        return CustomTask(coro, loop=loop, **kwargs)

    return factory


def test_a_factory_set_before_instrumenting_keeps_working(instrument):
    calls: list[str] = []
    factory = make_factory(calls)
    loop = asyncio.new_event_loop()
    loop.set_task_factory(factory)
    telemetry = instrument(spans="all")

    async def main() -> tuple[int, type]:
        task = asyncio.create_task(work(1), name="custom")
        return await task, type(task)

    try:
        assert loop.run_until_complete(main()) == (2, CustomTask)
        assert loop.get_task_factory() is factory  # identity kept
    finally:
        loop.close()
    assert len(calls) == 2 and calls[-1] == "work"  # main's task and the child's
    assert "custom" in task_names(telemetry)


def test_a_factory_set_after_instrumenting_keeps_working(instrument):
    telemetry = instrument(spans="all")
    calls: list[str] = []
    factory = make_factory(calls)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(factory)
        assert loop.get_task_factory() is factory
        task = asyncio.create_task(work(1), name="custom")
        assert type(task) is CustomTask
        assert await task == 2
        victim = asyncio.create_task(asyncio.sleep(10), name="custom-victim")
        await asyncio.sleep(0)
        victim.cancel()
        with pytest.raises(asyncio.CancelledError):
            await victim
        async with anyio.create_task_group() as tg:
            tg.start_soon(work, 1, name="anyio-child")

    asyncio.run(main())
    # the factory made those tasks (anyio >= 4.14 runs the child in TaskHandle._run_coro)
    assert calls.count("work") + calls.count("TaskHandle._run_coro") == 2 and "sleep" in calls
    names = task_names(telemetry)
    assert {"custom", "custom-victim", "anyio-child"} <= set(names)
    (victim,) = [s for s in telemetry.spans() if attrs(s).get(semconv.TASK_NAME) == "custom-victim"]
    assert attrs(victim)[semconv.TASK_OUTCOME] == semconv.OUTCOME_CANCELLED


def test_uninstrument_restores_the_originals(instrument):
    loop_class = asyncio.BaseEventLoop
    originals = (loop_class.__dict__["create_task"], loop_class.__dict__["close"])
    eager = getattr(asyncio, "eager_task_factory", None)
    eager_constructor = eager.__closure__[0].cell_contents if eager is not None else None
    telemetry = instrument()
    assert loop_class.__dict__["create_task"] is not originals[0]
    telemetry.uninstrument()
    assert (loop_class.__dict__["create_task"], loop_class.__dict__["close"]) == originals
    assert loop_class.__dict__["create_task"] is originals[0]
    if eager is not None:
        assert eager.__closure__[0].cell_contents is eager_constructor is asyncio.Task

    async def main() -> type:
        task = asyncio.create_task(work(1))
        await task
        return type(task)

    assert asyncio.run(main()) is asyncio.Task
    assert telemetry.spans() == []


def test_tasks_created_while_instrumented_keep_working_after_uninstrument(instrument):
    telemetry = instrument()

    async def main() -> None:
        task = asyncio.create_task(asyncio.sleep(10))
        await asyncio.sleep(0)
        telemetry.uninstrument()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_instrumenting_twice_gives_one_span_per_task(instrument):
    telemetry = instrument(spans="all")
    telemetry.instrumentor.instrument(
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    )  # a second call is refused by BaseInstrumentor; nothing is patched twice

    async def main() -> None:
        await asyncio.create_task(work(1), name="once")

    asyncio.run(main())
    assert task_names(telemetry).count("once") == 1


@needs_312
def test_eager_task_factory(instrument):
    telemetry = instrument(spans="all")
    order: list[str] = []

    async def eager_work() -> int:
        order.append("ran")
        await asyncio.sleep(0)
        return 1

    async def victim() -> None:
        await asyncio.sleep(10)

    async def main() -> None:
        asyncio.current_task().set_name("main")
        loop = asyncio.get_running_loop()
        loop.set_task_factory(asyncio.eager_task_factory)
        task = asyncio.create_task(eager_work(), name="eager")
        order.append("created")  # the first step ran inside create_task
        assert await task == 1
        doomed = asyncio.create_task(victim(), name="doomed")
        doomed.cancel("enough")  # <- eager cancel
        with pytest.raises(asyncio.CancelledError):
            await doomed
        async with anyio.create_task_group() as tg:  # anyio builds eager-factory tasks itself
            tg.start_soon(work, 1, name="anyio-under-eager")
        assert loop.get_task_factory() is asyncio.eager_task_factory

    asyncio.run(main())
    assert order == ["ran", "created"]
    assert {"eager", "doomed", "anyio-under-eager"} <= set(task_names(telemetry))
    (doomed,) = [s for s in telemetry.spans() if attrs(s).get(semconv.TASK_NAME) == "doomed"]
    a = attrs(doomed)
    assert (a[semconv.CANCEL_ORIGIN], a[semconv.CANCEL_TASK]) == ("external", "main")
    assert a[semconv.TASK_PARENT] == "main"


def test_uvloop(instrument):
    import uvloop

    telemetry = instrument(spans="all")

    async def main() -> int:
        asyncio.current_task().set_name("main")
        victim = asyncio.create_task(asyncio.sleep(10), name="victim")
        await asyncio.sleep(0)
        victim.cancel()
        with pytest.raises(asyncio.CancelledError):
            await victim
        async with anyio.create_task_group() as tg:
            tg.start_soon(work, 1, name="anyio-child")
        return await asyncio.create_task(work(1), name="plain")

    loop = uvloop.new_event_loop()
    try:
        assert loop.run_until_complete(main()) == 2
    finally:
        loop.close()
    assert {"victim", "anyio-child", "plain", "main"} <= set(task_names(telemetry))
    (victim,) = [s for s in telemetry.spans() if attrs(s).get(semconv.TASK_NAME) == "victim"]
    assert attrs(victim)[semconv.CANCEL_TASK] == "main"
    telemetry.uninstrument()
    assert "create_task" not in uvloop.Loop.__dict__ and "close" not in uvloop.Loop.__dict__


def test_uvloop_keywords_beyond_name_and_context_reach_uvloop(instrument):
    """uvloop 0.23's ``create_task(coro, *, name, context, eager_start)``: scopewatch's wrapper
    once refused ``eager_start`` (TypeError); it now hands it to uvloop, and tracks the task."""
    import uvloop

    if "eager_start" not in inspect.signature(uvloop.Loop.create_task).parameters:
        pytest.skip("needs a uvloop whose create_task takes eager_start (0.23)")

    async def main() -> tuple[int, bool]:
        task = asyncio.get_running_loop().create_task(work(1), eager_start=True, name="eager")
        tracker = task_instrumentation._tracker
        return await task, tracker is not None and tracker.record_of(task) is not None

    def run() -> tuple[int, bool]:
        loop = uvloop.new_event_loop()
        try:
            return loop.run_until_complete(main())
        finally:
            loop.close()

    assert run() == (2, False)  # uninstrumented: uvloop's own
    telemetry = instrument(spans="all")
    assert run() == (2, True)
    assert "eager" in task_names(telemetry)


PROGRAM = textwrap.dedent(
    """\
    import asyncio, sys
    import anyio

    async def worker(n):
        await asyncio.sleep(0)
        return n

    async def victim():
        await asyncio.sleep(10)

    async def main():
        total = await asyncio.create_task(worker(1), name="created")
        total += await asyncio.ensure_future(worker(2))
        if sys.version_info >= (3, 11):
            async with asyncio.TaskGroup() as tg:
                grouped = tg.create_task(worker(3), name="grouped")
            total += grouped.result()
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker, 4, name="anyio")
        doomed = asyncio.create_task(victim(), name="doomed")
        await asyncio.sleep(0)
        doomed.cancel()
        try:
            await doomed
        except asyncio.CancelledError:
            pass
        print("TOTAL", total, file=sys.stderr)

    asyncio.run(main())
    """
)


def decode_spans(text: str) -> list[dict]:
    decoder = json.JSONDecoder()
    spans, index = [], 0
    while True:
        index = text.find("{", index)
        if index < 0:
            return spans
        item, index = decoder.raw_decode(text, index)
        spans.append(item)


def test_together_with_opentelemetry_instrumentation_asyncio(tmp_path):
    script = tmp_path / "program.py"
    script.write_text(PROGRAM)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OTEL_", "SCOPEWATCH_"))
    }
    env.update(
        OTEL_TRACES_EXPORTER="console",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_PYTHON_SCOPEWATCH_SPANS="all",
        OTEL_PYTHON_ASYNCIO_COROUTINE_NAMES_TO_TRACE="worker",
        SCOPEWATCH_STRICT="1",
    )
    instrument = Path(sys.executable).parent / "opentelemetry-instrument"
    result = subprocess.run(
        [str(instrument), sys.executable, str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    total = 6 if sys.version_info >= (3, 11) else 3
    assert f"TOTAL {total}" in result.stderr
    assert "Traceback" not in result.stderr
    spans = decode_spans(result.stdout)
    tasks = [span for span in spans if span["name"].startswith(semconv.SPAN_TASK_PREFIX)]
    names = [span["attributes"][semconv.TASK_NAME] for span in tasks]
    assert len(names) == len(set(names))  # no task reported twice
    expected = {"created", "anyio", "doomed"} | (
        {"grouped"} if sys.version_info >= (3, 11) else set()
    )
    assert expected <= set(names)
    by_name = {span["attributes"][semconv.TASK_NAME]: span for span in tasks}
    for name in expected - {"doomed"}:  # named after the user's coroutine, not otel's wrapper
        assert by_name[name]["name"] == "task worker"
        assert by_name[name]["attributes"][semconv.CODE_FUNCTION] == "worker"
    assert by_name["doomed"]["attributes"][semconv.TASK_OUTCOME] == semconv.OUTCOME_CANCELLED
    otel = [span for span in spans if span["name"] == "asyncio coro-worker"]
    assert otel  # opentelemetry-instrumentation-asyncio still traces its coroutines
    assert not any(
        span["name"].startswith("task ") and "trace_coroutine" in span["name"] for span in spans
    )


def test_an_untested_python_gets_a_plain_wrapper_that_still_tracks_tasks(instrument, monkeypatch):
    monkeypatch.setattr(task_instrumentation, "KNOWN_CREATE_TASK", False)
    telemetry = instrument(spans="all")

    async def main() -> type:
        task = asyncio.create_task(work(1), name="wrapped")
        assert await task == 2
        return type(task)

    assert asyncio.run(main()) is asyncio.Task  # asyncio built it
    assert "wrapped" in task_names(telemetry)


def test_reinstrumenting_while_old_tasks_run(instrument):
    first = instrument(spans="all")
    seen: dict[str, object] = {}

    async def main() -> None:
        old = asyncio.create_task(work(1), name="old")
        await asyncio.sleep(0)
        first.uninstrument()
        seen["second"] = second = instrument(spans="all")
        new = asyncio.create_task(work(2), name="new")
        old.cancel()  # an old task's cancel() goes to nobody: no error
        await asyncio.gather(old, new, return_exceptions=True)
        assert second is not first

    asyncio.run(main())
    assert "new" in task_names(seen["second"]) and "old" not in task_names(seen["second"])
