"""Real MCP server and client in one process: session spans, metrics and the cross-task misuse."""

from __future__ import annotations

import asyncio
import traceback
from typing import Any

import anyio
from mcp import Client, ClientSession
from mcp.server.mcpserver import MCPServer
from mcp.shared.memory import create_client_server_memory_streams
from opentelemetry.trace import StatusCode

from scopewatch import semconv
from tests.support.markers import needs_311_tracebacks

MCP_SESSION = semconv.SPAN_SESSION_PREFIX + semconv.SESSION_KIND_MCP_CLIENT_SESSION
MCP_CLIENT = semconv.SPAN_SESSION_PREFIX + semconv.SESSION_KIND_MCP_CLIENT


def _server() -> MCPServer:
    server = MCPServer("calculator")

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    return server


def _durations(telemetry: Any) -> dict[tuple[str, str], int]:
    return {
        (p.attributes[semconv.SESSION_KIND], p.attributes[semconv.SESSION_OUTCOME]): p.count
        for p in telemetry.points(semconv.METRIC_SESSION_DURATION)
    }


def test_client_session_over_memory_streams(instrument: Any) -> None:
    telemetry = instrument(instrument="sessions")
    server = _server()
    lowlevel = server._lowlevel_server

    async def main() -> str:
        async with create_client_server_memory_streams() as (client_streams, server_streams):
            async with anyio.create_task_group() as group:
                group.start_soon(
                    lambda: lowlevel.run(
                        server_streams[0],
                        server_streams[1],
                        lowlevel.create_initialization_options(),
                    )
                )
                async with ClientSession(*client_streams) as session:
                    await session.initialize()
                    result = await session.call_tool("add", {"a": 2, "b": 3})
                group.cancel_scope.cancel()
        return str(result.content[0].text)

    assert asyncio.run(main()) == "5"
    (span,) = telemetry.spans(MCP_SESSION)
    assert span.attributes[semconv.SESSION_KIND] == semconv.SESSION_KIND_MCP_CLIENT_SESSION
    assert span.attributes[semconv.SESSION_OUTCOME] == semconv.OUTCOME_OK
    assert span.status.status_code is StatusCode.UNSET
    assert _durations(telemetry) == {
        (semconv.SESSION_KIND_MCP_CLIENT_SESSION, semconv.OUTCOME_OK): 1
    }


def test_high_level_client_is_one_session(instrument: Any) -> None:
    telemetry = instrument(instrument="sessions")

    async def main() -> str:
        async with Client(_server()) as client:
            result = await client.call_tool("add", {"a": 1, "b": 2})
        return str(result.content[0].text)

    assert asyncio.run(main()) == "3"
    assert len(telemetry.spans(MCP_CLIENT)) == 1
    assert telemetry.spans(MCP_SESSION) == []  # the ClientSession inside Client is not counted
    assert _durations(telemetry) == {(semconv.SESSION_KIND_MCP_CLIENT, semconv.OUTCOME_OK): 1}
    active = telemetry.points(semconv.METRIC_SESSION_ACTIVE)
    assert [p.value for p in active] == [0]


def test_body_error_is_the_outcome_and_propagates_unchanged(instrument: Any) -> None:
    async def main() -> None:
        async with Client(_server()):
            raise LookupError("app failure")

    def run() -> BaseException:
        try:
            asyncio.run(main())
        except BaseException as error:
            return error
        raise AssertionError("the body's error vanished")

    bare = run()  # mcp wraps the body's error in an exception group of its task group
    telemetry = instrument(instrument="sessions")
    instrumented = run()
    assert type(instrumented) is type(bare)
    assert repr(instrumented) == repr(bare)
    (span,) = telemetry.spans(MCP_CLIENT)
    assert span.attributes[semconv.SESSION_OUTCOME] == semconv.OUTCOME_ERROR
    assert span.status.status_code is StatusCode.ERROR


def _open_in_one_task_close_in_another() -> BaseException:
    async def main() -> BaseException:
        client = Client(_server())
        await asyncio.create_task(client.__aenter__(), name="connector")
        closer = asyncio.create_task(client.__aexit__(None, None, None), name="closer")
        try:
            await closer
        except BaseException as error:  # the real error from anyio
            return error
        raise AssertionError("closing from another task did not fail")

    return asyncio.run(main())


def test_misuse_raises_the_real_anyio_error_and_marks_the_session(instrument: Any) -> None:
    telemetry = instrument(instrument="sessions")
    error = _open_in_one_task_close_in_another()
    assert isinstance(error, RuntimeError)
    assert "different task" in str(error)
    (span,) = telemetry.spans(MCP_CLIENT)
    attributes = dict(span.attributes)
    assert attributes[semconv.ENTER_TASK] == "connector"
    assert attributes[semconv.EXIT_TASK] == "closer"
    assert attributes[semconv.CROSS_TASK] is True
    assert attributes[semconv.VIOLATION_KIND] == semconv.KIND_CROSS_TASK_EXIT
    assert attributes[semconv.SESSION_OUTCOME] == semconv.OUTCOME_ERROR
    assert span.status.status_code is StatusCode.ERROR
    names = [event.name for event in span.events]
    assert semconv.EVENT_VIOLATION in names and "exception" in names


def test_misuse_core_violations_reach_the_session_span(instrument: Any) -> None:
    telemetry = instrument(instrument="scopes,sessions")
    error = _open_in_one_task_close_in_another()
    assert isinstance(error, RuntimeError)
    (span,) = telemetry.spans(MCP_CLIENT)
    own = [e for e in span.events if e.name == semconv.EVENT_VIOLATION]
    assert len(own) == 1  # the session's own violation; the scopes' are referenced, not copied
    references = [
        dict(e.attributes) for e in span.events if e.name == semconv.EVENT_VIOLATION_REFERENCE
    ]
    scope_spans = [
        s
        for s in telemetry.violation_spans(semconv.KIND_CROSS_TASK_EXIT)
        if s.name == semconv.SPAN_ANYIO_TASK_GROUP
    ]
    assert scope_spans
    assert {r[semconv.VIOLATION_SPAN_ID] for r in references} == {
        f"{s.context.span_id:016x}" for s in scope_spans
    }
    assert all(r[semconv.ENTER_TASK] == "connector" for r in references)
    assert all(r[semconv.EXIT_TASK] == "closer" for r in references)
    assert all(r[semconv.SCOPE_KIND] == semconv.SPAN_ANYIO_TASK_GROUP for r in references)


def test_restored_on_uninstrument(instrument: Any) -> None:
    originals = {
        (cls, name): cls.__dict__[name]
        for cls in (Client, ClientSession)
        for name in ("__aenter__", "__aexit__")
    }
    telemetry = instrument(instrument="sessions")
    assert Client.__dict__["__aenter__"] is not originals[(Client, "__aenter__")]
    telemetry.uninstrument()
    for (cls, name), original in originals.items():
        assert cls.__dict__[name] is original


def _frames(error: BaseException) -> list[str]:
    """Files of every traceback entry of ``error`` and of the exceptions inside it."""
    files = [entry.filename for entry in traceback.extract_tb(error.__traceback__)]
    for inner in getattr(error, "exceptions", ()):
        files += _frames(inner)
    return files


@needs_311_tracebacks
def test_wrapper_frames_are_not_in_the_users_tracebacks(instrument: Any) -> None:
    async def body_fails() -> None:
        async with Client(_server()):
            raise LookupError("app failure")

    instrument(instrument="sessions")
    for program in (lambda: asyncio.run(body_fails()), _open_in_one_task_close_in_another):
        try:
            error = program()
        except BaseException as raised:
            error = raised
        assert isinstance(error, BaseException)
        files = _frames(error)
        assert files, "the traceback itself is kept"
        assert not [f for f in files if f.endswith("_session_wrappers.py")], files
        assert any(f.endswith(("client.py", "session.py", "_asyncio.py")) for f in files)
