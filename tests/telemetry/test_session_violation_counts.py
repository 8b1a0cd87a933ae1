"""One violation is one entry, one log line, one count everywhere, also inside an open session.

A real MCP ``ClientSession`` talks to a real MCP server over in-memory streams; the session and
a cancel scope are entered by one task through an exit stack and closed by another: three real
violations (the user's ``CancelScope``, the session's task group and the session itself). The
session span references the violation of its task group instead of copying it, so the counter,
the default rule's log lines, ``scopewatch report`` (text and JSON) and the HTML report all say 3.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import ClientSession
from mcp.server.mcpserver import MCPServer
from mcp.shared.memory import create_client_server_memory_streams
from opentelemetry.trace import StatusCode

from scopewatch import semconv
from scopewatch.export import FileMetricExporter, FileSpanExporter

SCOPEWATCH = [sys.executable, "-m", "scopewatch.cli"]
MCP_SESSION = semconv.SPAN_SESSION_PREFIX + semconv.SESSION_KIND_MCP_CLIENT_SESSION
REAL = 3
SOURCE = Path(__file__).read_text().splitlines()


def line_of(marker: str) -> int:
    """The line of this file that carries ``# <marker>``."""
    return next(n for n, text in enumerate(SOURCE, start=1) if text.endswith(f"# {marker}"))


def _server() -> MCPServer:
    server = MCPServer("calculator")

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    return server


async def _connect_here_close_there() -> tuple[str, BaseException | None]:
    lowlevel = _server()._lowlevel_server
    async with create_client_server_memory_streams() as (client_streams, server_streams):
        async with anyio.create_task_group() as group:
            options = lowlevel.create_initialization_options()
            group.start_soon(lambda: lowlevel.run(server_streams[0], server_streams[1], options))
            stack = contextlib.AsyncExitStack()

            async def connect() -> ClientSession:
                stack.enter_context(anyio.CancelScope())
                client = ClientSession(*client_streams)
                session = await stack.enter_async_context(client)  # enter:session
                await session.initialize()
                return session

            session = await asyncio.create_task(connect(), name="connector")
            result = await session.call_tool("add", {"a": 2, "b": 3})
            error: BaseException | None = None
            try:
                await asyncio.create_task(stack.aclose(), name="closer")
            except BaseException as raised:  # anyio's RuntimeError, as without scopewatch
                error = raised
            group.cancel_scope.cancel()
    return str(result.content[0].text), error


def _dump(telemetry: Any, path: Path) -> Path:
    FileSpanExporter(str(path)).export(telemetry.spans())
    data = telemetry.reader.get_metrics_data()
    assert data is not None
    FileMetricExporter(str(path)).export(data)
    return path


def _report(path: Path, *args: str) -> str:
    result = subprocess.run(
        [*SCOPEWATCH, "report", *args, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=path.parent,  # this test file is outside it: its paths are shown in full
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def run(instrument: Any, caplog: pytest.LogCaptureFixture) -> tuple[Any, list[str]]:
    bare = asyncio.run(_connect_here_close_there())
    telemetry = instrument()
    with caplog.at_level(logging.WARNING, logger="scopewatch"):
        instrumented = asyncio.run(_connect_here_close_there())
    assert instrumented[0] == bare[0] == "5"
    assert repr(instrumented[1]) == repr(bare[1])  # the app sees the same error
    logged = [r.getMessage() for r in caplog.records if r.name == "scopewatch"]
    return telemetry, logged


def test_spans_counter_and_log_lines_agree(run: tuple[Any, list[str]]) -> None:
    telemetry, logged = run
    assert len(telemetry.violation_events()) == REAL
    carriers = sorted(
        span.name
        for span in telemetry.spans()
        for event in span.events
        if event.name == semconv.EVENT_VIOLATION
    )
    assert carriers == sorted(
        [semconv.SPAN_ANYIO_CANCEL_SCOPE, semconv.SPAN_ANYIO_TASK_GROUP, MCP_SESSION]
    )
    counted = {
        p.attributes[semconv.SCOPE_KIND]: p.value
        for p in telemetry.points(semconv.METRIC_VIOLATIONS)
    }
    assert counted == {
        semconv.SPAN_ANYIO_CANCEL_SCOPE: 1,
        semconv.SPAN_ANYIO_TASK_GROUP: 1,
        MCP_SESSION: 1,  # the session's own violation is counted too
    }
    assert len(logged) == REAL, logged  # the default rule: once per violation and place

    (session,) = telemetry.spans(MCP_SESSION)
    assert session.status.status_code is StatusCode.ERROR
    references = [e for e in session.events if e.name == semconv.EVENT_VIOLATION_REFERENCE]
    (group,) = [
        s
        for s in telemetry.violation_spans()
        if s.name == semconv.SPAN_ANYIO_TASK_GROUP
        and s.parent is not None
        and s.parent.span_id == session.context.span_id
    ]
    (reference,) = references
    assert reference.attributes[semconv.VIOLATION_SPAN_ID] == f"{group.context.span_id:016x}"
    assert reference.attributes[semconv.VIOLATION_TRACE_ID] == f"{group.context.trace_id:032x}"
    assert reference.attributes[semconv.VIOLATION_KIND] == semconv.KIND_CROSS_TASK_EXIT
    assert reference.attributes[semconv.ENTER_TASK] == "connector"
    assert reference.attributes[semconv.EXIT_TASK] == "closer"


def test_report_counts_each_violation_once(run: tuple[Any, list[str]], tmp_path: Path) -> None:
    telemetry, _ = run
    path = _dump(telemetry, tmp_path / "t.jsonl")
    data = json.loads(_report(path, "--format", "json"))
    assert data["summary"]["violations"] == REAL
    assert len(data["violations"]) == REAL
    assert sum(row["count"] for row in data["violation_counts"]) == REAL
    (session,) = data["sessions"]["spans"]
    assert session["violations"] == 2  # its own and its task group's (the scope came before)
    # the task group mcp entered: the application's line first, then the library's
    (group,) = [v for v in data["violations"] if v["scope_kind"] == semconv.SPAN_ANYIO_TASK_GROUP]
    app, library = group["enter"]["app_location"], group["enter"]["location"]
    assert app == f"{__file__}:{line_of('enter:session')}"
    assert "/mcp/" in library
    text = _report(path, "--color", "never")
    assert f"entered in task 'connector' at {app} (library: {library})" in text
    assert f"Violations ({REAL})" in text
    assert f"scopewatch: {REAL} violations (" in text


def test_html_report_lists_each_violation_once(run: tuple[Any, list[str]], tmp_path: Path) -> None:
    from tests.support.chromium import Chromium

    telemetry, _ = run
    path = _dump(telemetry, tmp_path / "t.jsonl")
    page = tmp_path / "report.html"
    _report(path, "--format", "html", "-o", str(page))
    browser = Chromium(tmp_path / "profile")
    try:
        browser.send("Page.enable")
        browser.send("Page.navigate", url=page.as_uri())
        browser.wait_for_event("Page.loadEventFired")
        assert browser.evaluate("document.body.dataset.ready") == "true"
        entries = browser.evaluate(
            "[...document.querySelectorAll('#violation-list li')].map(li => li.innerText)"
        )
    finally:
        browser.close()
    assert len(entries) == REAL
    app = f"{__file__}:{line_of('enter:session')}"
    assert any(f"at {app} (library: " in entry.replace("\n", " ") for entry in entries), entries


def test_a_copy_in_a_0_2_file_is_not_counted_again() -> None:
    from scopewatch.report.analyze import violations
    from scopewatch.report.model import Event, Span

    facts = {
        semconv.VIOLATION_KIND: semconv.KIND_CROSS_TASK_EXIT,
        semconv.VIOLATION_CAUSE: semconv.CAUSE_OTHER_TASK,
        semconv.ENTER_TASK: "connector",
        semconv.EXIT_TASK: "closer",
        semconv.CODE_STACKTRACE: 'File "app.py", line 3, in connect',
    }

    def span(span_id: str, name: str, attributes: dict[str, Any], *events: Event) -> Span:
        return Span("t" * 32, span_id, "", name, 1, 2, attributes, events, 2, "", (), "r")

    scope = span(
        "a" * 16,
        semconv.SPAN_ANYIO_TASK_GROUP,
        {**facts, semconv.SCOPE_KIND: semconv.SPAN_ANYIO_TASK_GROUP},
        Event(semconv.EVENT_VIOLATION, 5, facts),
    )
    own = {**facts, semconv.CODE_STACKTRACE: 'File "app.py", line 9, in connect'}
    session = span(
        "b" * 16,
        MCP_SESSION,
        {**facts, semconv.SESSION_KIND: semconv.SESSION_KIND_MCP_CLIENT_SESSION},
        Event(semconv.EVENT_VIOLATION, 6, facts),  # what 0.2 copied onto the session span
        Event(semconv.EVENT_VIOLATION, 7, own),  # the session's own
    )
    found = violations([scope, session])
    assert [(v["span"]["span_id"], v["time_unix_nano"]) for v in found] == [
        ("a" * 16, 5),
        ("b" * 16, 7),
    ]
