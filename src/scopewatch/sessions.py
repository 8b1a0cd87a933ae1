"""`scopewatch.track_session(kind, name=None)`: span and metrics for a long-lived client session.

Use it around any long-lived async client connection (MCP and the Claude Agent SDK are
instrumented automatically)::

    async with scopewatch.track_session("redis", name="cache"):
        ...

    @scopewatch.track_session("websocket")
    async def serve(conn): ...

It creates a ``session <kind>`` span and ``scopewatch.session.active`` /
``scopewatch.session.duration``; violations while the session is open are added to its span.
When scopewatch is not instrumenting (or the ``sessions`` feature is off) it does nothing.
"""

from __future__ import annotations

import functools
import sys
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from opentelemetry.instrumentation.utils import is_instrumentation_enabled

from scopewatch.telemetry import sessions as telemetry

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from types import TracebackType

    from scopewatch._core.sessions import SessionRecord

P = ParamSpec("P")
R = TypeVar("R")


class TrackedSession:
    """An async context manager (and decorator) tracking one session per entry."""

    __slots__ = ("_kind", "_name", "_records")

    def __init__(self, kind: str, name: str | None = None) -> None:
        self._kind = str(kind)
        self._name = None if name is None else str(name)
        self._records: list[SessionRecord | None] = []

    async def __aenter__(self) -> TrackedSession:
        record = None
        session_telemetry = telemetry.current
        if (
            session_telemetry is not None
            and telemetry.PART.enabled
            and is_instrumentation_enabled()  # DESIGN rule 2: suppressed, nothing tracked
        ):
            try:
                record = session_telemetry.open(self._kind, self._name, True, sys._getframe(1))
            except Exception as error:
                telemetry.PART.fail(error)
        self._records.append(record)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        record = self._records.pop() if self._records else None
        session_telemetry = telemetry.current
        if record is not None and session_telemetry is not None:
            try:
                session_telemetry.close(record, exc_val, sys._getframe(1))
            except Exception as error:
                telemetry.PART.fail(error)

    def __call__(self, function: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        """Decorate an async function: each call is one session."""
        kind, name = self._kind, self._name

        @functools.wraps(function)
        async def tracked(*args: P.args, **kwargs: P.kwargs) -> R:
            async with TrackedSession(kind, name):
                return await function(*args, **kwargs)

        return tracked


def track_session(kind: str, name: str | None = None) -> TrackedSession:
    """Track a long-lived async client session as a ``session <kind>`` span with metrics.

    Args:
        kind: the session kind, low cardinality (e.g. ``"redis"``); the span is
            ``session <kind>`` and ``scopewatch.session.kind`` is ``kind``.
        name: an optional instance name (``scopewatch.session.name`` on the span only).

    Returns:
        An object usable as ``async with`` and as a decorator on an async function.
    """
    return TrackedSession(kind, name)
