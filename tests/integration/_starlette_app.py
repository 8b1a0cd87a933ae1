"""A small real Starlette app, and the uvicorn server process ``test_starlette_uvicorn`` starts.

Endpoints: ``/work`` (``anyio.move_on_after`` around an ``anyio.Lock``), ``/background`` (a
Starlette ``BackgroundTask`` taking the same lock), ``/stream`` (a ``StreamingResponse``: uvicorn
speaks ASGI 2.3, so Starlette runs it in a task group with a disconnect listener, and a client
that goes away mid-stream cancels it) and ``/stats`` (what the app saw).

``python tests/integration/_starlette_app.py OUTPUT scopewatch|bare`` serves on a fresh
loopback port (printed first) until its stdin is closed (uvicorn's ``should_exit``; SIGINT
would make ``asyncio.run`` cancel the main task from outside, which scopewatch rightly reports
as an anomaly). With ``scopewatch`` the process is instrumented with the real SDK in the default
configuration, its spans and metrics written to OUTPUT by scopewatch's file exporters (metrics
once, at shutdown).
"""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import AsyncIterator
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route


def build() -> Starlette:
    """The app, with its own counters."""
    lock = anyio.Lock()
    stats: dict[str, int] = {
        "work": 0,
        "deadline_hit": 0,
        "background_done": 0,
        "streams_completed": 0,
        "streams_closed_early": 0,
    }

    async def work(request: Request) -> PlainTextResponse:
        with anyio.move_on_after(5) as scope:
            async with lock:
                await anyio.sleep(0.001)
                stats["work"] += 1
        stats["deadline_hit"] += scope.cancelled_caught
        return PlainTextResponse(f"work {request.query_params.get('n', '')}")

    async def job() -> None:
        async with lock:
            await anyio.sleep(0.002)
            stats["background_done"] += 1

    async def background(request: Request) -> PlainTextResponse:
        del request
        return PlainTextResponse("queued", background=BackgroundTask(job))

    async def chunks(count: int, delay: float) -> AsyncIterator[bytes]:
        completed = False
        try:
            for number in range(count):
                await anyio.sleep(delay)
                yield f"chunk {number}\n".encode()
            completed = True
        finally:
            stats["streams_completed" if completed else "streams_closed_early"] += 1

    async def stream(request: Request) -> StreamingResponse:
        count = int(request.query_params.get("n", "5"))
        delay = float(request.query_params.get("delay", "0.005"))
        return StreamingResponse(chunks(count, delay), media_type="text/plain")

    async def read_stats(request: Request) -> JSONResponse:
        del request
        return JSONResponse(stats)

    return Starlette(
        routes=[
            Route("/work", work),
            Route("/background", background),
            Route("/stream", stream),
            Route("/stats", read_stats),
        ]
    )


def _instrument(output: str) -> Any:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from scopewatch import ScopeWatchInstrumentor
    from scopewatch.export import FileMetricExporter, FileSpanExporter

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(FileSpanExporter(output)))
    reader = PeriodicExportingMetricReader(
        FileMetricExporter(output), export_interval_millis=3_600_000
    )
    meter_provider = MeterProvider(metric_readers=[reader])
    ScopeWatchInstrumentor().instrument(
        tracer_provider=tracer_provider, meter_provider=meter_provider
    )
    return tracer_provider, meter_provider


def main(argv: list[str]) -> None:
    """Serve until stdin is closed; flush the telemetry last."""
    import asyncio

    import uvicorn

    output, mode = argv
    providers = _instrument(output) if mode == "scopewatch" else None
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    config = uvicorn.Config(
        build(), log_level="warning", access_log=False, lifespan="on", loop="asyncio"
    )
    server = uvicorn.Server(config)

    async def serve() -> None:
        stdin_closed = asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        stdin_closed.add_done_callback(lambda _: setattr(server, "should_exit", True))
        sys.stdout.write(f"{listener.getsockname()[1]}\n")
        sys.stdout.flush()
        await server.serve(sockets=[listener])

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    if providers is not None:
        for provider in providers:
            provider.shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])
