"""Causes of the pure shapes (issue 16): one event has one cause, a returned task is named.

Real anyio on both backends and real asyncio; no library in between, so ``code.*`` is this file
and no ``scopewatch.enter.app`` is set (that is for library frames, see the MCP tests).
"""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import pytest
from mcp.client import stdio

from scopewatch import semconv
from scopewatch._core import frames
from tests.support.markers import needs_per_task_scope
from tests.support.source_lines import marked_line

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

HERE = __file__


def line(marker: str) -> int:
    return marked_line(HERE, marker)


def attrs(span: Any) -> dict[str, Any]:
    return dict(span.attributes or {})


def causes(telemetry: Any) -> list[tuple[str, str]]:
    return sorted(
        (attrs(s)[semconv.VIOLATION_KIND], attrs(s)[semconv.VIOLATION_CAUSE])
        for s in telemetry.violation_spans()
    )


@pytest.fixture(params=["asyncio", "trio"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Connection:
    """The connection-manager pattern: connect() and cleanup() are two tasks of one group."""

    def __init__(self) -> None:
        self.stack = AsyncExitStack()
        self.connected = anyio.Event()
        self.done = anyio.Event()

    async def connect(self) -> None:
        await self.stack.enter_async_context(anyio.create_task_group())  # <- first group
        await self.stack.enter_async_context(anyio.create_task_group())  # <- second group
        self.connected.set()

    async def cleanup(self) -> None:
        await self.done.wait()
        await self.stack.aclose()


async def connection_manager() -> BaseException | None:
    connection = Connection()
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(connection.connect, name="startup")
            group.start_soon(connection.cleanup, name="shutdown")
            await connection.connected.wait()
            connection.done.set()
    except (RuntimeError, BaseExceptionGroup) as error:
        return error
    return None


@needs_per_task_scope
def test_a_task_that_returns_with_scopes_open_is_task_returned(
    backend: str, instrument: Any
) -> None:
    telemetry = instrument()
    error = anyio.run(connection_manager, backend=backend)
    assert error is not None  # anyio refuses: the task's own scope is not its innermost
    spans = telemetry.violation_spans(semconv.KIND_NON_LIFO_EXIT)
    assert spans
    for span in spans:
        a = attrs(span)
        assert a[semconv.VIOLATION_CAUSE] == semconv.CAUSE_TASK_RETURNED
        assert a[semconv.ENTER_TASK] == "startup"
    (event,) = [e for e in spans[0].events if e.name == semconv.EVENT_VIOLATION]
    message = event.attributes[semconv.EXCEPTION_MESSAGE]
    assert "non_lifo_exit (task_returned)" in message
    assert "an unknown location" not in message
    assert f"{HERE}:{line('# <- second group')}" in message  # the group still open, by line
    assert "task 'startup' returned while 2 scopes it entered were still open" in message
    assert f"{HERE}:{line('# <- first group')}" in message
    assert "reverse order" not in message


def test_exit_stacks_closing_context_managers_fifo_is_exit_order(instrument: Any) -> None:
    # asyncio only: on trio the wrong order corrupts trio's nursery stack ("Nursery
    # misnesting detected!") and the run ends in a TrioInternalError.
    telemetry = instrument()

    @asynccontextmanager
    async def holds_group() -> AsyncIterator[None]:
        async with anyio.create_task_group():
            yield

    async def main() -> BaseException | None:
        first, second = AsyncExitStack(), AsyncExitStack()
        await first.enter_async_context(holds_group())  # <- first manager
        await second.enter_async_context(holds_group())
        try:
            await first.aclose()  # first in, first out: the wrong order
        except (RuntimeError, BaseExceptionGroup) as error:
            await second.aclose()
            return error
        await second.aclose()
        return None

    assert anyio.run(main, backend="asyncio") is not None
    found = causes(telemetry)
    assert (semconv.KIND_NON_LIFO_EXIT, semconv.CAUSE_EXIT_ORDER) in found
    assert all(cause != semconv.CAUSE_INTERLEAVED_GENERATORS for _, cause in found)


def test_generators_advanced_alternately_stay_interleaved(instrument: Any) -> None:
    telemetry = instrument()

    async def numbers() -> AsyncIterator[int]:
        async with anyio.create_task_group():
            yield 1
            yield 2

    async def main() -> None:
        a, b = numbers(), numbers()
        await a.__anext__()
        await b.__anext__()
        try:
            await a.aclose()
        except (RuntimeError, BaseExceptionGroup):
            pass
        try:
            await b.aclose()
        except (RuntimeError, BaseExceptionGroup):
            pass

    asyncio.run(main())
    assert (semconv.KIND_NON_LIFO_EXIT, semconv.CAUSE_INTERLEAVED_GENERATORS) in causes(telemetry)


def test_every_scope_closed_by_one_finalizer_is_asyncgen_finalizer(instrument: Any) -> None:
    telemetry = instrument()

    @asynccontextmanager
    async def transport() -> AsyncIterator[None]:
        async with anyio.create_task_group():  # <- transport group
            yield

    async def sessions() -> AsyncIterator[int]:
        async with transport():
            async with anyio.create_task_group():  # <- session group
                yield 1

    async def main() -> None:
        async def consumer() -> None:
            async for _ in sessions():
                break  # dropped un-closed: the loop's finalizer closes it in another task

        await asyncio.create_task(consumer(), name="consumer")
        gc.collect()
        for _ in range(5):
            await asyncio.sleep(0.01)

    asyncio.run(main())
    found = causes(telemetry)
    assert len(found) >= 2
    assert {cause for _, cause in found} == {semconv.CAUSE_ASYNCGEN_FINALIZER}
    lines = {attrs(s)[semconv.CODE_LINE] for s in telemetry.violation_spans()}
    assert {line("# <- transport group"), line("# <- session group")} <= lines


def test_app_frame_is_the_first_frame_outside_libraries() -> None:
    library = (stdio.stdio_client.__wrapped__.__code__, 201)
    mine = (test_app_frame_is_the_first_frame_outside_libraries.__code__, 7)
    stdlib = (asyncio.sleep.__code__, 3)
    assert frames.is_app_file(HERE)
    assert not frames.is_app_file(stdio.__file__)
    assert not frames.is_app_file(asyncio.__file__)
    assert not frames.is_app_file(frames.__file__)
    assert frames.app_frame((library, stdlib, mine)) == mine
    assert frames.app_frame((mine, library)) is None  # code.* is already the app's
    assert frames.app_frame((library, stdlib)) is None
    where = frames.explained_location((library, mine))
    assert where == (
        f"{HERE}:7 in {frames.qualname(mine[0])} "
        f"(library: {stdio.__file__}:201 in {frames.qualname(library[0])})"
    )
    assert frames.explained_location((mine,)) == f"{HERE}:7"


def test_alert_texts_name_the_app_frame_first() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from scopewatch.alerts import explain

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    library = f"{stdio.__file__}:201 in stdio_client()"
    mine = f"{HERE}:12 in connect"
    provider.get_tracer("t").start_span(
        semconv.SPAN_ANYIO_TASK_GROUP,
        attributes={
            semconv.CODE_FILE: stdio.__file__,
            semconv.CODE_LINE: 201,
            semconv.CODE_FUNCTION: "stdio_client",
            semconv.ENTER_APP: mine,
            semconv.EXIT_APP: f"{HERE}:20 in cleanup",
            semconv.VIOLATION_KIND: semconv.KIND_CROSS_TASK_EXIT,
            semconv.ENTER_TASK: "startup",
            semconv.EXIT_TASK: "shutdown",
        },
    ).end()
    (span,) = exporter.get_finished_spans()
    assert f"entered at {mine} (library: {library})" in explain.summary(span)
    text = explain.violation(span)
    assert f"entered in task 'startup' at {mine} (library: {library})" in text
    assert f"exited in task 'shutdown' at {HERE}:20 in cleanup" in text
    provider.shutdown()


def test_each_scope_names_its_own_line_on_both_backends(backend: str, instrument: Any) -> None:
    """Scopes entered through a library's frames (anyio's task group on trio) at different lines
    of one function are each attributed to their own line (no capture reused across them)."""
    telemetry = instrument(spans="all")

    async def main() -> None:
        stack = AsyncExitStack()
        await stack.enter_async_context(anyio.create_task_group())  # <- stacked one
        await stack.enter_async_context(anyio.create_task_group())  # <- stacked two
        await stack.aclose()
        async with anyio.create_task_group():  # <- nested one
            async with anyio.create_task_group():  # <- nested two
                await anyio.sleep(0)

    anyio.run(main, backend=backend)
    lines = sorted(
        attrs(s)[semconv.CODE_LINE] for s in telemetry.spans(semconv.SPAN_ANYIO_TASK_GROUP)
    )
    markers = ("# <- stacked one", "# <- stacked two", "# <- nested one", "# <- nested two")
    assert lines == sorted(line(marker) for marker in markers)
