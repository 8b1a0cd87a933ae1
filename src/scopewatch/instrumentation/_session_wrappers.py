"""``__aenter__`` / ``__aexit__`` wrappers turning an SDK client's lifetime into a session."""

from __future__ import annotations

import contextvars
import sys
import threading
import weakref
from typing import TYPE_CHECKING, Any

from opentelemetry.instrumentation.utils import is_instrumentation_enabled

from scopewatch.instrumentation._patching import hide_own_frame
from scopewatch.telemetry import sessions as telemetry

if TYPE_CHECKING:
    from scopewatch._core.sessions import SessionRecord


class _Records:
    """The open session of each client object, by identity (clients may be unhashable)."""

    def __init__(self) -> None:
        self._by_id: dict[int, tuple[Any, SessionRecord]] = {}

    def get(self, client: Any) -> SessionRecord | None:
        entry = self._by_id.get(id(client))
        if entry is None:
            return None
        ref, record = entry
        target = ref() if isinstance(ref, weakref.ref) else ref
        return record if target is client else None

    def set(self, client: Any, record: SessionRecord) -> None:
        key = id(client)
        try:
            ref: Any = weakref.ref(client, lambda _: self._by_id.pop(key, None))
        except TypeError:
            ref = client
        self._by_id[key] = (ref, record)

    def pop(self, client: Any) -> SessionRecord | None:
        record = self.get(client)
        if record is not None:
            del self._by_id[id(client)]
        return record

    def __contains__(self, client: object) -> bool:
        return self.get(client) is not None

    def clear(self) -> None:
        self._by_id.clear()


records = _Records()
"""The open session of each client object."""

inside_session: contextvars.ContextVar[int] = contextvars.ContextVar(
    "scopewatch_inside_session", default=0
)
"""The thread in which a session wrapper runs the original enter (0: none); nested SDK sessions
are not counted. A thread, not a flag: a thread started meanwhile may inherit the context
(``anyio.to_thread``; every new thread on 3.14t, ``sys.flags.thread_inherit_context``), and its
own sessions are not nested in that enter."""


def entering_session() -> bool:
    """Whether this thread is inside a session wrapper's original enter."""
    return inside_session.get() == threading.get_ident()


def open_session(client: Any, kind: str, attach: bool, frame: Any) -> SessionRecord | None:
    """Open a session for ``client`` unless one is open for it or an outer one is entering."""
    session_telemetry = telemetry.current
    if session_telemetry is None or not telemetry.PART.enabled or entering_session():
        return None
    if not is_instrumentation_enabled():  # DESIGN rule 2: suppressed, straight through
        return None
    if client in records:
        return None
    try:
        record = session_telemetry.open(kind, None, attach, frame)
        records.set(client, record)
    except Exception as error:
        telemetry.PART.fail(error)
        return None
    return record


def close_session(client: Any, error: BaseException | None, frame: Any) -> None:
    """Close the open session of ``client``, if any."""
    record = records.pop(client)
    session_telemetry = telemetry.current
    if record is None or session_telemetry is None:
        return
    try:
        session_telemetry.close(record, error, frame)
    except Exception as failure:
        telemetry.PART.fail(failure)


def make_aenter(original: Any, kind: str) -> Any:
    """``__aenter__`` opening a session (made current) around the original.

    The wrapper's own frame is kept out of the tracebacks of exceptions it lets through
    (3.11+, :func:`hide_own_frame`).
    """

    async def __aenter__(self: Any, *args: Any, **kwargs: Any) -> Any:
        record = open_session(self, kind, True, sys._getframe(1))
        if record is None:
            try:
                return await original(self, *args, **kwargs)
            except BaseException as raised:
                hide_own_frame(raised)
                raise
        token = inside_session.set(threading.get_ident())
        try:
            result = await original(self, *args, **kwargs)
        except BaseException as raised:
            inside_session.reset(token)
            close_session(self, raised, sys._getframe(0))
            hide_own_frame(raised)
            raise
        inside_session.reset(token)
        return result

    __aenter__.__wrapped__ = original  # type: ignore[attr-defined]
    return __aenter__


def make_aexit(original: Any) -> Any:
    """``__aexit__`` closing the session with the body's or the exit's own exception."""

    async def __aexit__(self: Any, exc_type: Any, exc: Any, tb: Any) -> Any:
        if self not in records:
            try:
                return await original(self, exc_type, exc, tb)
            except BaseException as raised:
                hide_own_frame(raised)
                raise
        frame = sys._getframe(1)
        try:
            suppressed = await original(self, exc_type, exc, tb)
        except BaseException as raised:
            close_session(self, raised, frame)
            hide_own_frame(raised)
            raise
        close_session(self, None if suppressed else exc, frame)
        return suppressed

    __aexit__.__wrapped__ = original  # type: ignore[attr-defined]
    return __aexit__
