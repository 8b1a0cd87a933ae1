"""A real Starlette app under uvicorn on loopback, healthy traffic, scopewatch in default mode.

The server (``_starlette_app.py`` here) runs in a subprocess, once bare and once instrumented
with the real SDK writing to scopewatch's file exporters; the client is httpx (``httpx2`` here)
in this process: concurrent requests through ``move_on_after`` and a lock, background tasks,
complete streamed responses and clients that go away mid-stream. The app must answer and count
the same both times; scopewatch must find no violation, count every scope and task, and export
no scope or task span: every one of them ended normally (DESIGN section 2, "a normal shutdown
is not an anomaly"). The slow threshold is raised for the server process (see ``SLOW``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx

from scopewatch import semconv
from scopewatch.report.analyze import is_scope, is_task
from scopewatch.report.load import load

APP = Path(__file__).with_name("_starlette_app.py")
SLOW = "OTEL_PYTHON_SCOPEWATCH_SLOW_THRESHOLD"
"""Raised for the server: its main and lifespan tasks live as long as it does, so past the
default 1 s they are slow, an anomaly of their own that says nothing about shutdowns."""
WORK, BACKGROUND, STREAMS, DISCONNECTS = 12, 4, 3, 3


class Server:
    """``_starlette_app.py`` in a subprocess, on the loopback port it printed."""

    def __init__(self, output: Path, mode: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(APP), str(output), mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, SLOW: "60"},
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.strip().isdigit(), self.stop()
        self.url = f"http://127.0.0.1:{int(line)}"

    def stop(self) -> str:
        """Close its stdin (the app's way to shut uvicorn down); the process's stderr."""
        try:
            _, stderr = self.process.communicate(timeout=60)  # closes stdin first
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGINT)
            _, stderr = self.process.communicate(timeout=60)
        return str(stderr)


async def _disconnect_mid_stream(client: httpx.AsyncClient) -> bytes:
    async with client.stream("GET", "/stream", params={"n": 500, "delay": 0.01}) as response:
        async for chunk in response.aiter_raw():
            return chunk  # leaving the block closes the unfinished response: a disconnect
    raise AssertionError("the stream sent nothing")


async def _traffic(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        work = await asyncio.gather(*(client.get("/work", params={"n": n}) for n in range(WORK)))
        background = [await client.get("/background") for _ in range(BACKGROUND)]
        streams = await asyncio.gather(*(client.get("/stream") for _ in range(STREAMS)))
        first_chunks = [await _disconnect_mid_stream(client) for _ in range(DISCONNECTS)]
        deadline = time.monotonic() + 20
        while True:  # the server sees the disconnects and finishes the jobs soon after
            stats = (await client.get("/stats")).json()
            if (
                stats["streams_closed_early"] == DISCONNECTS
                and stats["background_done"] == BACKGROUND
            ) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
    return {
        "work": [(r.status_code, r.text) for r in work],
        "background": [(r.status_code, r.text) for r in background],
        "streams": [(r.status_code, r.text) for r in streams],
        "first_chunks": first_chunks,
        "stats": stats,
    }


def _run(tmp_path: Path, mode: str) -> tuple[dict[str, Any], Path, str]:
    output = tmp_path / f"{mode}.jsonl"
    server = Server(output, mode)
    try:
        seen = asyncio.run(_traffic(server.url))
    finally:
        stderr = server.stop()
    assert server.process.returncode == 0, stderr
    return seen, output, stderr


def test_healthy_app_behaves_the_same_and_exports_no_scope_or_task_span(tmp_path: Path) -> None:
    bare, _, _ = _run(tmp_path, "bare")
    seen, output, stderr = _run(tmp_path, "scopewatch")

    assert seen == bare
    assert seen["stats"] == {
        "work": WORK,
        "deadline_hit": 0,
        "background_done": BACKGROUND,
        "streams_completed": STREAMS,
        "streams_closed_early": DISCONNECTS,
    }
    assert seen["streams"] == [(200, "".join(f"chunk {n}\n" for n in range(5)))] * STREAMS
    assert "scopewatch" not in stderr, stderr  # nothing logged: no violation, no failure

    telemetry = load([str(output)])
    violations = [
        event
        for span in telemetry.spans
        for event in span.events
        if event.name == semconv.EVENT_VIOLATION
    ]
    assert violations == []
    assert sum(p.value for p in telemetry.points_of(semconv.METRIC_VIOLATIONS)) == 0

    scopes = {
        (p.attributes[semconv.SCOPE_KIND], p.attributes[semconv.SCOPE_OUTCOME]): int(p.value)
        for p in telemetry.points_of(semconv.METRIC_SCOPES)
    }
    # every scope was seen: the app's deadlines, and the streams' task groups, which end
    # cancelled (by their own group, complete or disconnected alike)
    assert scopes[(semconv.SPAN_ANYIO_MOVE_ON_AFTER, semconv.OUTCOME_OK)] == WORK
    assert scopes[(semconv.SPAN_ANYIO_TASK_GROUP, semconv.OUTCOME_CANCELLED)] >= (
        STREAMS + DISCONNECTS
    )
    tasks = {
        p.attributes[semconv.TASK_OUTCOME]: int(p.value)
        for p in telemetry.points_of(semconv.METRIC_TASKS)
    }
    assert tasks.get(semconv.OUTCOME_OK, 0) + tasks.get(semconv.OUTCOME_CANCELLED, 0) >= (
        STREAMS + DISCONNECTS
    )
    # ... and none of them was exported: a healthy program exports no scope or task span
    exported = [
        (span.name, span.attributes.get(semconv.SCOPE_OUTCOME), span.duration_s)
        for span in telemetry.spans
        if is_scope(span) or is_task(span)
    ]
    assert exported == []
