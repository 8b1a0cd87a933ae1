"""Helpers of the trio task tests: running trio, reading task spans, task coroutines."""

from __future__ import annotations

import sys
from typing import Any

import trio

from scopewatch import semconv

HELPERS = __file__
"""Where the task coroutines below are defined (``code.file.path`` of their spans)."""
REASONS = hasattr(trio.Cancelled, "source")
"""trio >= 0.31: ``Cancelled`` says who cancelled (source, source task, reason)."""


def run(main: Any, *args: Any) -> Any:
    """``trio.run`` with exception groups always (the default from trio 0.25)."""
    return trio.run(main, *args, strict_exception_groups=True)


def attrs(span: Any) -> dict[str, Any]:
    return dict(span.attributes or {})


def span_name(function: Any) -> str:
    """The task span name of ``function`` (Python 3.10 code objects have no qualified name)."""
    qualname = function.__qualname__ if sys.version_info >= (3, 11) else function.__name__
    return semconv.SPAN_TASK_PREFIX + qualname


def task_spans(telemetry: Any, name: str | None = None) -> list[Any]:
    return [
        span
        for span in telemetry.spans()
        if span.name.startswith(semconv.SPAN_TASK_PREFIX) and (name is None or span.name == name)
    ]


def by_task_name(telemetry: Any) -> dict[str, Any]:
    return {attrs(span)[semconv.TASK_NAME]: span for span in task_spans(telemetry)}


async def child(value: int) -> int:
    await trio.sleep(0)
    return value * 2


async def fails() -> None:
    await trio.sleep(0)
    raise ValueError("boom")


async def sleeps() -> None:
    await trio.sleep(10)
