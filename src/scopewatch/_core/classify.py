"""Tell why a scope was exited in the wrong task or out of order (DESIGN section 4 causes)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scopewatch import semconv
from scopewatch._core import asyncgens

if TYPE_CHECKING:
    from scopewatch._core.records import ScopeRecord

_ACLOSE_TYPE = "async_generator_athrow"
_ASEND_TYPE = "async_generator_asend"
_PER_STEP_WRAPPERS = frozenset({"_wrap_awaitable", "_wait_for_one"})


def cross_task_cause(record: ScopeRecord, exit_task: Any, exit_frame_ids: set[int]) -> str:
    """Cause of a ``cross_task_exit``: who runs the exit, and why in that task."""
    coro = _coro_of(exit_task)
    coro_type = type(coro).__name__
    if coro_type == _ACLOSE_TYPE:
        loop = _loop_of(exit_task)
        if getattr(loop, "_asyncgens_shutdown_called", False):
            return semconv.CAUSE_ASYNCGEN_SHUTDOWN
        if asyncgens.closed_by_finalizer(record.asyncgen_frame):
            return semconv.CAUSE_ASYNCGEN_FINALIZER
        return semconv.CAUSE_OTHER_TASK  # the program ran aclose() itself in another task
    if record.asyncgen_frame and (
        record.asyncgen_frame in exit_frame_ids
        or coro_type == _ASEND_TYPE
        or getattr(coro, "__name__", "") in _PER_STEP_WRAPPERS
    ):
        return semconv.CAUSE_PER_STEP_TASK
    if exit_task is None:
        return semconv.CAUSE_UNKNOWN
    return semconv.CAUSE_OTHER_TASK


def non_lifo_cause(record: ScopeRecord, innermost: ScopeRecord) -> str:
    """Cause of a ``non_lifo_exit`` of ``record`` while ``innermost`` is still entered above it."""
    if not innermost.asyncgen_frame or innermost.asyncgen_frame == record.asyncgen_frame:
        return semconv.CAUSE_EXIT_ORDER
    if record.asyncgen_frame:
        return semconv.CAUSE_INTERLEAVED_GENERATORS
    if not record.user:
        # The library's own per-task scope ends under a generator's scope: the step task
        # finishes while the generator it advanced is suspended inside a scope.
        return semconv.CAUSE_PER_STEP_TASK
    return semconv.CAUSE_ASYNCGEN_SUSPENDED


def _coro_of(task: Any) -> Any:
    get_coro = getattr(task, "get_coro", None)
    return get_coro() if get_coro is not None else None


def _loop_of(task: Any) -> Any:
    get_loop = getattr(task, "get_loop", None)
    return get_loop() if get_loop is not None else None
