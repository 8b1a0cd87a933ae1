"""The Starlette app of ``bench_web``: what a small anyio web service does per request.

- ``GET /work``: ``anyio.move_on_after`` around an ``anyio.Lock`` held across a checkpoint (so
  concurrent requests contend) and a task group whose task computes the answer.
- ``GET /background``: ``move_on_after`` around handing a job to a task group that lives as long
  as the app (opened in the lifespan), then answering at once.
- ``GET /stream``: a ``StreamingResponse`` of four chunks, each produced under its own
  ``move_on_after`` (Starlette runs the stream in a task group with a disconnect listener).

With ``BENCH_WEB_MANUAL=1`` the app wraps each of its own scopes and tasks in a hand-made SDK
span (``tracer.start_as_current_span``): the ``manual`` variant, what a developer would write to
trace them without scopewatch. Spans per request: ``/work`` 3, ``/background`` 2, ``/stream`` 4.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

MANUAL_ENV = "BENCH_WEB_MANUAL"
CHUNKS = 4


def _span_factory() -> Callable[[str], contextlib.AbstractContextManager[Any]] | None:
    if os.environ.get(MANUAL_ENV) != "1":
        return None
    from opentelemetry import trace

    return trace.get_tracer("bench.web.manual").start_as_current_span


def build() -> Starlette:
    """The app; spans by hand when ``BENCH_WEB_MANUAL=1``."""
    span = _span_factory()
    lock = anyio.Lock()
    jobs: dict[str, TaskGroup] = {}
    done = 0

    async def compute(box: list[int]) -> None:
        await anyio.lowlevel.checkpoint()
        box.append(len(box) + 1)

    async def compute_spanned(box: list[int]) -> None:
        assert span is not None
        with span("task compute"):
            await compute(box)

    async def job() -> None:
        nonlocal done
        await anyio.lowlevel.checkpoint()
        done += 1

    async def job_spanned() -> None:
        assert span is not None
        with span("task job"):
            await job()

    async def work(request: Request) -> PlainTextResponse:
        box: list[int] = []
        if span is None:
            with anyio.move_on_after(5):
                async with lock:
                    await anyio.lowlevel.checkpoint()
                async with anyio.create_task_group() as group:
                    group.start_soon(compute, box)
        else:
            with span("anyio.move_on_after"), anyio.move_on_after(5):
                async with lock:
                    await anyio.lowlevel.checkpoint()
                with span("anyio.TaskGroup"):
                    async with anyio.create_task_group() as group:
                        group.start_soon(compute_spanned, box)
        return PlainTextResponse(f"work {len(box)}\n")

    async def background(request: Request) -> PlainTextResponse:
        if span is None:
            with anyio.move_on_after(5):
                jobs["group"].start_soon(job)
        else:
            with span("anyio.move_on_after"), anyio.move_on_after(5):
                jobs["group"].start_soon(job_spanned)
        return PlainTextResponse("queued\n")

    async def chunks() -> AsyncIterator[bytes]:
        for index in range(CHUNKS):
            if span is None:
                with anyio.move_on_after(5):
                    await anyio.lowlevel.checkpoint()
            else:
                with span("anyio.move_on_after"), anyio.move_on_after(5):
                    await anyio.lowlevel.checkpoint()
            yield b"chunk %d\n" % index

    async def stream(request: Request) -> StreamingResponse:
        return StreamingResponse(chunks(), media_type="text/plain")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with anyio.create_task_group() as group:
            jobs["group"] = group
            yield
            group.cancel_scope.cancel()

    return Starlette(
        routes=[
            Route("/work", work),
            Route("/background", background),
            Route("/stream", stream),
        ],
        lifespan=lifespan,
    )
