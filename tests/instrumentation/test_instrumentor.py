"""The instrumentor: unchanged semantics, loading by entry point (restoring: test_restore)."""

from __future__ import annotations

import asyncio
import asyncio.base_events
import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest
import trio

from scopewatch import ScopeWatchInstrumentor, semconv

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup


async def program() -> dict[str, object]:
    """Exercises return values, exceptions and cancellation through every scope kind."""
    results: dict[str, object] = {}
    with anyio.move_on_after(0.01) as scope:
        await anyio.sleep(1)
    results["move_on"] = (scope.cancel_called, scope.cancelled_caught)
    try:
        with anyio.fail_after(0.01):
            await anyio.sleep(1)
    except TimeoutError as error:
        results["fail_after"] = type(error).__name__
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.sleep, 1)

            async def boom() -> None:
                raise LookupError("x")

            tg.start_soon(boom)
    except BaseExceptionGroup as group:
        results["group"] = [type(e).__name__ for e in group.exceptions]
    task = asyncio.create_task(anyio.sleep(1))
    await asyncio.sleep(0)
    task.cancel("stop")
    try:
        await task
    except asyncio.CancelledError as error:
        results["cancel"] = error.args
    if sys.version_info >= (3, 11):
        try:
            async with asyncio.timeout(0.01):
                await asyncio.sleep(1)
        except TimeoutError:
            results["timeout"] = True
        async with asyncio.TaskGroup() as group:
            child = group.create_task(asyncio.sleep(0, "value"))
        results["taskgroup"] = child.result()
    return results


@pytest.mark.parametrize("spans", ["all", "anomalies", "none"])
def test_semantics_are_identical_with_and_without_scopewatch(instrument, spans):
    bare = asyncio.run(program())
    instrument(spans=spans)
    assert asyncio.run(program()) == bare


async def trio_program() -> dict[str, object]:
    """The same through trio's own scopes and anyio on the trio backend."""
    results: dict[str, object] = {}
    with trio.move_on_after(0.01) as scope:
        await trio.sleep(1)
    results["move_on"] = (scope.cancel_called, scope.cancelled_caught)
    try:
        with trio.fail_after(0.01):
            await trio.sleep(1)
    except trio.TooSlowError as error:
        results["fail_after"] = type(error).__name__
    with anyio.move_on_after(0.01) as anyio_scope:
        await anyio.sleep(1)
    results["anyio_move_on"] = (anyio_scope.cancel_called, anyio_scope.cancelled_caught)
    try:
        with anyio.fail_after(0.01):
            await anyio.sleep(1)
    except TimeoutError as error:
        results["anyio_fail_after"] = type(error).__name__

    async def boom() -> None:
        raise LookupError("x")

    for opener in (trio.open_nursery, anyio.create_task_group):
        try:
            async with opener() as group:
                group.start_soon(trio.sleep, 1)
                group.start_soon(boom)
        except BaseExceptionGroup as group_error:
            results[opener.__name__] = [type(e).__name__ for e in group_error.exceptions]
    with trio.CancelScope() as explicit:
        explicit.cancel()  # no reason: trio < 0.31 takes none
        await trio.sleep(1)
    results["explicit"] = explicit.cancelled_caught
    with trio.CancelScope(shield=True):
        results["thread"] = await trio.to_thread.run_sync(lambda: "from a thread")
    return results


@pytest.mark.parametrize("spans", ["all", "anomalies", "none"])
def test_trio_semantics_are_identical_with_and_without_scopewatch(instrument, spans):
    bare = trio.run(trio_program)
    instrument(spans=spans)
    assert trio.run(trio_program) == bare
    assert len(bare) == 8


def test_instrumenting_twice_is_harmless(instrument, caplog):
    telemetry = instrument(spans="all")
    ScopeWatchInstrumentor().instrument()  # already instrumented: BaseInstrumentor ignores it

    async def main() -> None:
        with anyio.CancelScope():
            pass

    anyio.run(main)
    assert len(telemetry.spans(semconv.SPAN_ANYIO_CANCEL_SCOPE)) == 1


def test_entry_points_are_registered():
    eps = importlib.metadata.entry_points()
    (instrumentor,) = eps.select(group="opentelemetry_instrumentor", name="scopewatch")
    assert instrumentor.load() is ScopeWatchInstrumentor
    (variables,) = eps.select(group="opentelemetry_environment_variables", name="scopewatch")
    module = variables.load()
    assert module.OTEL_PYTHON_SCOPEWATCH_SPANS == "OTEL_PYTHON_SCOPEWATCH_SPANS"


APP = textwrap.dedent(
    """
    import asyncio
    from contextlib import AsyncExitStack

    import anyio


    async def main():
        stack = AsyncExitStack()

        async def connect():
            await stack.enter_async_context(anyio.create_task_group())  # ENTER-LINE

        await asyncio.create_task(connect(), name="connector")
        try:
            await asyncio.create_task(stack.aclose(), name="closer")
        except RuntimeError as error:
            print("APP-CAUGHT", type(error).__name__)


    asyncio.run(main())
    """
)


def run_instrumented(tmp_path: Path, **extra_env: str) -> subprocess.CompletedProcess[str]:
    app = tmp_path / "app.py"
    app.write_text(APP)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OTEL_", "SCOPEWATCH_STRICT"))
    }
    env.update(
        OTEL_TRACES_EXPORTER="console",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_SERVICE_NAME="e2e",
        **extra_env,
    )
    launcher = Path(sys.executable).with_name("opentelemetry-instrument")
    return subprocess.run(
        [str(launcher), sys.executable, str(app)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def console_spans(stdout: str) -> list[dict[str, object]]:
    decoder = json.JSONDecoder()
    spans, index = [], 0
    while (start := stdout.find("{", index)) != -1:
        value, index = decoder.raw_decode(stdout, start)
        spans.append(value)
    return spans


def test_opentelemetry_instrument_loads_scopewatch_by_entry_point(tmp_path):
    result = run_instrumented(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "APP-CAUGHT RuntimeError" in result.stdout
    (span,) = [s for s in console_spans(result.stdout) if s["name"] == "anyio.TaskGroup"]
    attributes = span["attributes"]
    assert attributes[semconv.VIOLATION_KIND] == semconv.KIND_CROSS_TASK_EXIT
    assert attributes[semconv.VIOLATION_CAUSE] == semconv.CAUSE_OTHER_TASK
    assert attributes[semconv.ENTER_TASK] == "connector"
    assert attributes[semconv.EXIT_TASK] == "closer"
    line = next(n for n, text in enumerate(APP.splitlines(), 1) if "ENTER-LINE" in text)
    assert attributes[semconv.CODE_LINE] == line
    assert span["status"]["status_code"] == "ERROR"


def test_disabled_instrumentations_turns_scopewatch_off(tmp_path):
    result = run_instrumented(tmp_path, OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="scopewatch")
    assert result.returncode == 0, result.stderr
    assert "APP-CAUGHT RuntimeError" in result.stdout
    assert not [s for s in console_spans(result.stdout) if s["name"].startswith("anyio.")]


def test_invalid_setting_under_the_launcher_warns_and_runs(tmp_path):
    result = run_instrumented(tmp_path, OTEL_PYTHON_SCOPEWATCH_SPANS="loud")
    assert result.returncode == 0
    assert "OTEL_PYTHON_SCOPEWATCH_SPANS='loud' is invalid; accepted: one of all" in result.stderr
    assert [s for s in console_spans(result.stdout) if s["name"] == "anyio.TaskGroup"]
