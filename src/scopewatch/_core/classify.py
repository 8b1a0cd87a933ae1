"""Tell why a scope was exited in the wrong task or out of order (DESIGN section 4 causes)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scopewatch import semconv
from scopewatch._core import frames, task_adapters

if TYPE_CHECKING:
    from types import FrameType

    from scopewatch._core.records import ScopeRecord

_ASEND_TYPE = "async_generator_asend"
_PER_STEP_WRAPPERS = frozenset({"_wrap_awaitable", "_wait_for_one"})


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
