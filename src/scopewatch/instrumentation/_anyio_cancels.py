"""anyio's cancel side on asyncio: who asked a scope to cancel, and each task's own scope.

A part of :mod:`scopewatch.instrumentation.anyio_scopes`, which sets the code objects below
when it patches anyio's asyncio backend.
"""

from __future__ import annotations

import asyncio
import math
import sys
from typing import TYPE_CHECKING, Any

from scopewatch import semconv
from scopewatch._core import frames
from scopewatch.instrumentation import _scope_state as state

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import CodeType, FrameType, ModuleType

deadline_callback: CodeType | None = None
"""``CancelScope._timeout``: the deadline's own cancel."""
task_done: CodeType | None = None
"""``TaskGroup._spawn.<locals>.task_done``: anyio's callback when a child task ends."""
task_group_aexit: CodeType | None = None
task_body: CodeType | None = None
"""``TaskHandle._run_coro`` (anyio 4.14+), which runs a spawned task's body in a scope."""
backend: ModuleType | None = None
"""``anyio._backends._asyncio``."""


def wrap(original_cancel: Callable[..., Any]) -> Callable[..., Any]:
    """``CancelScope.cancel`` that records the request first."""
    part = state.PART

    def cancel(self: Any, *args: Any, **kwargs: Any) -> Any:
        if part.enabled:
            try:
                _on_cancel(self, sys._getframe(1), args, kwargs)
            except Exception as error:
                part.fail(error)
        return original_cancel(self, *args, **kwargs)

    return cancel


def task_scope(task: Any) -> tuple[object, str, float | None, bool] | None:
    """The per-task scope ``task`` runs its body in (``ScopeTracker.task_scope``), if any.

    Not tracked at its enter, which every spawned task pays: only tasks that enter a tracked
    scope (so can return with one still open, ``task_returned``) or cancel it need it. It is
    the outermost anyio scope of a task whose coroutine is ``TaskHandle._run_coro``.
    """
    if task_body is None or backend is None:
        return None
    get_coro = getattr(task, "get_coro", None)
    if get_coro is None or getattr(get_coro(), "cr_code", None) is not task_body:
        return None
    task_state = backend._task_states.get(task)
    scope = getattr(task_state, "cancel_scope", None)
    outermost = None
    for _ in range(256):
        if scope is None or getattr(scope, "_host_task", None) is not task:
            break
        outermost = scope
        scope = getattr(scope, "_parent_scope", None)
    if outermost is None or not getattr(outermost, "_active", False):
        return None
    deadline = outermost._deadline
    timeout = None if deadline == math.inf else max(0.0, deadline - task.get_loop().time())
    return outermost, semconv.SPAN_ANYIO_CANCEL_SCOPE, timeout, bool(outermost._shield)


def _on_cancel(scope: Any, frame: FrameType, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    tracker = state.tracker
    if tracker is None:
        return
    record = tracker.record_of(scope)
    if record is not None and record.cancel is not None:
        return  # only the first request counts (ScopeTracker.cancel_requested): skip its facts
    host = getattr(scope, "_host_task", None)
    if record is None and host is not None and getattr(scope, "_active", False):
        tracker.track_task(host)  # a task's own scope is tracked from its first cancel
    reason = kwargs.get("reason", args[0] if args else None) or ""
    location = ""
    if frame.f_code is deadline_callback:
        origin = semconv.ORIGIN_DEADLINE
        reason = reason or "deadline exceeded"
    else:
        origin = (
            semconv.ORIGIN_PARENT if frames.is_internal(frame.f_code) else semconv.ORIGIN_EXPLICIT
        )
        location = state.user_location(frame)
    tracker.cancel_requested(
        scope, origin, state.current_task(), location, str(reason), failure=_failing(frame)
    )


def _failing(frame: FrameType) -> bool:
    """Whether a task group cancels because a child or its body raised (not a shutdown).

    anyio cancels a group's scope from ``task_done`` when a child ended with an exception,
    and from ``__aexit__`` when the body raised; a cancellation reaching the body is not one.
    """
    code = frame.f_code
    if code is task_done:
        return True
    if code is task_group_aexit:
        error = frames.local_of(frame, "exc_val")
        return error is not None and not isinstance(error, asyncio.CancelledError)
    return False
