"""Tell why a scope was exited in the wrong task or out of order (DESIGN section 4 causes)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scopewatch import semconv
from scopewatch._core import frames, task_adapters
from scopewatch._core.records import ScopeRecord

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import FrameType

    from scopewatch._core.frames import Frames

_ASEND_TYPE = "async_generator_asend"
_PER_STEP_WRAPPERS = frozenset({"_wrap_awaitable", "_wait_for_one"})
_UNKNOWN = "an unknown location"
_BARE = ScopeRecord(None, "", False, None, "", 0, 0.0, ())
"""A record with no generator, for closes that are not a scope's (a session's)."""


def cross_task_cause(record: ScopeRecord, exit_task: Any, exit_frame: FrameType | None) -> str:
    """Cause of a ``cross_task_exit``: who runs the exit, and why in that task."""
    if exit_task is not None:
        aclose_cause = task_adapters.adapter_of(exit_task).aclose_cause(
            exit_task, record, exit_frame
        )
        if aclose_cause:
            return aclose_cause
    coro = _coro_of(exit_task)
    coro_type = type(coro).__name__
    if record.asyncgen_frame and (
        record.asyncgen_frame in frames.frame_ids(exit_frame)
        or coro_type == _ASEND_TYPE
        or getattr(coro, "__name__", "") in _PER_STEP_WRAPPERS
    ):
        return semconv.CAUSE_PER_STEP_TASK
    if exit_task is None:
        return semconv.CAUSE_UNKNOWN
    return semconv.CAUSE_OTHER_TASK


def closing_cause(exit_task: Any, exit_frame: FrameType | None) -> str:
    """Cause of a cross-task close of something that is not a scope (an SDK session).

    One event, one cause: a session closed by the finalizer's ``aclose()`` of the generator
    that held it is ``asyncgen_finalizer`` like the scopes closed by the same call.
    """
    if exit_task is not None:
        aclose_cause = task_adapters.adapter_of(exit_task).aclose_cause(
            exit_task, _BARE, exit_frame
        )
        if aclose_cause:
            return aclose_cause
    return semconv.CAUSE_OTHER_TASK if exit_task is not None else semconv.CAUSE_UNKNOWN


def non_lifo_cause(
    record: ScopeRecord, innermost: ScopeRecord, exit_frame: FrameType | None = None
) -> str:
    """Cause of a ``non_lifo_exit`` of ``record`` while ``innermost`` is still entered above it."""
    if task_scope(record):
        # The task's own scope (anyio's per-task scope) ends: the task's body returned.
        if innermost.asyncgen_frame and not _managed(innermost):
            # ... after advancing a generator that is suspended inside a scope: a step task.
            return semconv.CAUSE_PER_STEP_TASK
        return semconv.CAUSE_TASK_RETURNED
    if not innermost.asyncgen_frame or innermost.asyncgen_frame == record.asyncgen_frame:
        return semconv.CAUSE_EXIT_ORDER
    if _managed(innermost) or (record.asyncgen_frame and frames.driven_by_contextlib(exit_frame)):
        # Context managers (``@asynccontextmanager``) finished by contextlib's __aexit__ in
        # the wrong order: exit stacks closed first-in-first-out.
        return semconv.CAUSE_EXIT_ORDER
    if record.asyncgen_frame:
        return semconv.CAUSE_INTERLEAVED_GENERATORS
    return semconv.CAUSE_ASYNCGEN_SUSPENDED


def _managed(record: ScopeRecord) -> bool:
    return frames.managed_generator(record.asyncgen_frame, record.asyncgen)


def task_scope(record: ScopeRecord) -> bool:
    """Whether ``record`` is a task's own scope (anyio's per-task scope around its body).

    No user frame entered it: the library did, before the task's body ran.
    """
    return not record.user and not record.frames


def non_lifo_detail(
    record: ScopeRecord,
    innermost: ScopeRecord,
    cause: str,
    still_open: Sequence[ScopeRecord] = (),
) -> str:
    """The sentence naming what was still open, application frame first.

    ``still_open``: the scopes entered after ``record`` and not exited, outermost first.
    """
    where = frames.explained_location(innermost.frames) or _UNKNOWN
    if cause != semconv.CAUSE_TASK_RETURNED:
        return f"{innermost.kind} entered at {where} was still open inside it"
    held = [scope for scope in still_open if scope.frames] or [innermost]
    scopes = "; ".join(
        f"{scope.kind} entered at {frames.explained_location(scope.frames) or _UNKNOWN}"
        for scope in held
    )
    count = "a scope it entered was" if len(held) == 1 else f"{len(held)} scopes it entered were"
    return (
        f"task {record.task_name!r} returned while {count} still open (held by an exit stack "
        f"or a connection object): {scopes}"
    )


def non_lifo_enter_frames(record: ScopeRecord, innermost: ScopeRecord) -> Frames:
    """Where to say the violation was entered.

    A task's own scope has no user frame, so the scope left open in it stands for it.
    """
    return record.frames or innermost.frames


def _coro_of(task: Any) -> Any:
    get_coro = getattr(task, "get_coro", None)
    return get_coro() if get_coro is not None else None
