"""Open SDK sessions: who opened them, when, and which violations concern them (no OTel)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scopewatch._core.frames import Frames


@dataclass(eq=False)
class SessionRecord:
    """One session between open and close."""

    kind: str
    name: str | None
    task: Any
    """The task that opened it (``None`` outside a task)."""
    task_name: str
    frames: Frames
    start: float = field(default_factory=time.perf_counter)
    span: Any = None
    """The session span (opaque here)."""
    context_token: Any = None
    exit_error: BaseException | None = None
    """The exception the ``async with`` body ended with, for SDKs whose close takes none."""
    closed: bool = False


open_sessions: dict[int, SessionRecord] = {}
"""Open sessions by ``id(record)``."""


def add(record: SessionRecord) -> None:
    """Remember an open session."""
    open_sessions[id(record)] = record


def remove(record: SessionRecord) -> None:
    """Forget a closed session."""
    open_sessions.pop(id(record), None)


def concerned(enter_task: str, exit_task: str, trace_id: int | None) -> list[SessionRecord]:
    """Open sessions a violation concerns.

    Those opened by the violating tasks (by name), or whose span is in the violation's trace;
    all open sessions when the violation names no task at all.
    """
    records = list(open_sessions.values())
    names = {name for name in (enter_task, exit_task) if name}
    if not names and trace_id is None:
        return records
    found = []
    for record in records:
        if record.task_name in names:
            found.append(record)
            continue
        span_context = record.span.get_span_context() if record.span is not None else None
        if trace_id and span_context is not None and span_context.trace_id == trace_id:
            found.append(record)
    return found
