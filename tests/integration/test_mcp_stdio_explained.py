"""A real MCP stdio server subprocess, started by ``stdio_client``: what scopewatch says.

The correct form has no violation; the connection-manager form (``connect()`` and ``cleanup()``
in two tasks) and the abandoned-generator form are explained with this file's lines first and
the ``mcp`` library frame after them (issue 16).
"""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest
import trio
from mcp import Client, ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from scopewatch import semconv
from scopewatch._core import hints
from scopewatch.remedies import anyio_hold_in_task
from tests.support.markers import needs_per_task_scope
from tests.support.source_lines import marked_line

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

pytestmark = [
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.timeout(60),
]

HERE = __file__
SERVER = StdioServerParameters(
    command=sys.executable, args=[str(Path(__file__).with_name("_mcp_stdio_server.py"))]
)
SCOPE_SPANS = {
    semconv.SPAN_ANYIO_TASK_GROUP,
    semconv.SPAN_ANYIO_CANCEL_SCOPE,
    semconv.SPAN_ANYIO_MOVE_ON_AFTER,
    semconv.SPAN_ANYIO_FAIL_AFTER,
    semconv.SPAN_ASYNCIO_TIMEOUT,
    semconv.SPAN_ASYNCIO_TASK_GROUP,
    semconv.SPAN_TRIO_NURSERY,
    semconv.SPAN_TRIO_CANCEL_SCOPE,
}


def line(marker: str) -> int:
    return marked_line(HERE, marker)


CONNECT = "Connection.connect" if sys.version_info >= (3, 11) else "connect"
"""How a frame names ``Connection.connect`` (code objects have a qualname from 3.11)."""


def app(marker: str, function: str) -> str:
    return f"{HERE}:{line(marker)} in {function}"


def attrs(span: Any) -> dict[str, Any]:
    return dict(span.attributes or {})


def notes(error: BaseException) -> list[str]:
    found = list(getattr(error, "__notes__", ()))
    for inner in getattr(error, "exceptions", ()):
        found += notes(inner)
    return found


async def add_once() -> str:
    async with stdio_client(SERVER) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            result = await session.call_tool("add", {"a": 2, "b": 3})
    return str(result.content[0].text)


def test_correct_form_has_no_violation_and_exports_no_scope_or_task_span(instrument: Any) -> None:
    # A server subprocess takes about a second to start: far from the slow threshold here.
    telemetry = instrument(slow_threshold=60)
    assert anyio.run(add_once, backend="asyncio") == "5"
    assert telemetry.violation_spans() == []
    # DESIGN 0.3: a healthy program exports no scope or task span in the default mode (the
    # session closing its reader task is a normal shutdown, not an anomaly).
    exported = [s.name for s in telemetry.spans() if not s.name.startswith("session ")]
    assert exported == []


def test_high_level_client_over_stdio_has_no_violation(instrument: Any) -> None:
    telemetry = instrument()

    async def main() -> str:
        async with Client(SERVER) as client:
            result = await client.call_tool("add", {"a": 1, "b": 2})
        return str(result.content[0].text)

    assert anyio.run(main, backend="asyncio") == "3"
    assert telemetry.violation_spans() == []


class Connection:
    """The connection-manager pattern of many MCP hosts."""

    def __init__(self) -> None:
        self.stack = AsyncExitStack()
        self.session: ClientSession | None = None
        self.connected = anyio.Event()
        self.done = anyio.Event()

    async def connect(self) -> None:
        read, write = await self.stack.enter_async_context(stdio_client(SERVER))  # <- transport
        session = await self.stack.enter_async_context(ClientSession(read, write))  # <- session
        await session.initialize()
        self.session = session
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
            with anyio.fail_after(20):
                await connection.connected.wait()
            connection.done.set()
    except (RuntimeError, BaseExceptionGroup) as error:
        return error
    return None


def run_connection_manager(backend: str) -> BaseException:
    """Run it; on trio the corrupted cancel-scope stack ends the run in a TrioInternalError."""
    try:
        error = anyio.run(connection_manager, backend=backend)
    except trio.TrioInternalError as internal:
        error = internal
    assert error is not None
    return error


@needs_per_task_scope
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_connection_manager_is_a_returned_task_named_by_its_own_lines(
    backend: str, instrument: Any
) -> None:
    bare = run_connection_manager(backend)  # not instrumented yet: what the program does
    gc.collect()
    telemetry = instrument()
    error = run_connection_manager(backend)
    gc.collect()
    assert type(error) is type(bare)  # the same failure with scopewatch
    (span, *_) = telemetry.violation_spans(semconv.KIND_NON_LIFO_EXIT)
    a = attrs(span)
    assert a[semconv.VIOLATION_CAUSE] == semconv.CAUSE_TASK_RETURNED
    assert a[semconv.ENTER_TASK] == "startup"
    assert a[semconv.EXIT_TASK] == "startup"
    assert a[semconv.ENTER_APP] == app("# <- session", CONNECT)
    if sys.version_info >= (3, 11) and backend == "asyncio":
        (note, *_) = [n for n in notes(error) if "task_returned" in n]
        where = app("# <- session", CONNECT)
        assert f"entered in task 'startup' at {where} (library: " in note
        assert "mcp" in note.split("(library: ", 1)[1]
        assert "an unknown location" not in note
        assert "2 scopes it entered were still open" in note
        assert f"at {app('# <- transport', CONNECT)} (library: " in note
        assert "hold_in_task" in note
    # The transport closed later by the loop is the same bug, and gets the same remedy.
    for event in telemetry.violation_events():
        assert "hold_in_task" in str(event[semconv.EXCEPTION_MESSAGE])


async def sessions() -> AsyncIterator[ClientSession]:
    async with stdio_client(SERVER) as (read, write):  # <- generator transport
        async with ClientSession(read, write) as session:  # <- generator session
            await session.initialize()
            yield session


def test_abandoned_generator_is_one_finalizer_event(instrument: Any) -> None:
    telemetry = instrument()

    async def main() -> None:
        async def consumer() -> None:
            async for session in sessions():
                await session.call_tool("add", {"a": 1, "b": 1})
                break  # the generator is dropped un-closed

        await asyncio.create_task(consumer(), name="consumer")
        gc.collect()
        for _ in range(50):
            await asyncio.sleep(0.02)

    asyncio.run(main())
    spans = telemetry.violation_spans()
    assert spans
    assert {attrs(s)[semconv.VIOLATION_CAUSE] for s in spans} == {semconv.CAUSE_ASYNCGEN_FINALIZER}
    assert {attrs(s)[semconv.ENTER_TASK] for s in spans} == {"consumer"}
    apps = {attrs(s).get(semconv.ENTER_APP) for s in spans}
    assert app("# <- generator transport", "sessions") in apps
    assert app("# <- generator session", "sessions") in apps
    # Closed by the finalizer's aclose() of `sessions`, which runs in this file too.
    assert {attrs(s).get(semconv.EXIT_APP, "") for s in spans if semconv.ENTER_APP in attrs(s)} <= {
        app("# <- generator transport", "sessions"),
        app("# <- generator session", "sessions"),
    }
    (session,) = telemetry.spans("session mcp.ClientSession")
    assert attrs(session)[semconv.VIOLATION_CAUSE] == semconv.CAUSE_ASYNCGEN_FINALIZER
    events = [e for s in spans for e in s.events if e.name == semconv.EVENT_VIOLATION]
    message = str(events[0].attributes[semconv.EXCEPTION_MESSAGE])
    assert f"fix: {hints.GENERATOR_TASK_GROUP.text}" in message
    assert "ASYNC101" in message and "ASYNC119" in message


class OwnedConnection:
    """The connection-manager pattern as the task_returned hint says: one owner task."""

    def __init__(self) -> None:
        self.owned: list[Any] = []
        self.session: ClientSession | None = None
        self.connected = anyio.Event()
        self.done = anyio.Event()

    async def connect(self, group: Any) -> None:
        transport = await anyio_hold_in_task(stdio_client(SERVER), group)
        self.owned.append(transport)
        read, write = transport.value
        session = await anyio_hold_in_task(ClientSession(read, write), group)
        self.owned.append(session)
        await session.value.initialize()
        self.session = session.value
        self.connected.set()

    async def cleanup(self) -> None:
        await self.done.wait()
        for owned in reversed(self.owned):
            await owned.aclose()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_connection_manager_fixed_as_the_hint_says(backend: str, instrument: Any) -> None:
    telemetry = instrument()

    async def main() -> str:
        connection = OwnedConnection()
        async with anyio.create_task_group() as group:
            group.start_soon(connection.connect, group, name="startup")
            group.start_soon(connection.cleanup, name="shutdown")
            with anyio.fail_after(20):
                await connection.connected.wait()
            assert connection.session is not None
            result = await connection.session.call_tool("add", {"a": 4, "b": 5})
            connection.done.set()
        return str(result.content[0].text)

    assert anyio.run(main, backend=backend) == "9"
    assert telemetry.violation_spans() == []
