"""How a task ended: its outcome, and whether that end is anomalous (DESIGN sections 2 and 3).

A task is anomalous when the revised ``anomalies`` rule (:func:`scopewatch._core.anomaly.anomalous`)
says so, and also when it was cancelled by a deadline (a task has no ``deadline_exceeded``
outcome of its own: its cancellation names the deadline as its origin). A task cancelled by its
own group's normal shutdown is not. Pure bookkeeping, no OpenTelemetry.

:func:`ended` is the done callback of scopewatch's ``Task``: the normal end costs a count in a
plain dict (``scopewatch.tasks``), nothing else.
"""

from __future__ import annotations

import functools
import sys
import time
from typing import TYPE_CHECKING, Any

from scopewatch import semconv
from scopewatch._core.anomaly import anomalous

if TYPE_CHECKING:
    from collections.abc import Callable

    from scopewatch._core.records import CancelInfo

PY311 = sys.version_info >= (3, 11)
RECORD_ATTRIBUTE = "_scopewatch_record"
"""Slot of scopewatch's own ``Task`` subclass holding the task's record."""
_perf_counter = time.perf_counter

OK = semconv.OUTCOME_OK
ERROR = semconv.OUTCOME_ERROR
CANCELLED = semconv.OUTCOME_CANCELLED


def outcome_of(task: Any) -> str:
    """``ok``, ``error`` or ``cancelled`` of a done asyncio task (the exception not retrieved)."""
    if task.cancelled():
        return CANCELLED
    if getattr(task, "_exception", None) is not None:
        return ERROR
    return OK


def task_anomalous(outcome: str, cancel: CancelInfo | None, duration: float, slow: float) -> bool:
    """Whether a task that ended with these facts is anomalous (violations aside)."""
    if outcome == CANCELLED and cancel is not None and cancel.origin == semconv.ORIGIN_DEADLINE:
        return True
    return anomalous(outcome, cancel, duration, slow)


def carry(callback: Callable[[Any], object] | None, task: Any) -> None:
    """Note that ``task`` ended, then run ``callback(task)`` (when given).

    Bound as :data:`ended` (``callback`` ``None``), the task's own done callback; bound to
    another done callback (``partial(carry, callback)``) it lets scopewatch's callback ride in
    the first one someone else adds (the awaiting task's wake-up, a task group's, gather's):
    one event-loop handle per task instead of two. A task that ended normally (returned, no
    pending cancellation, no span, not slow) is only counted here: no SDK call, no further
    frame; anything else goes to :meth:`~scopewatch._core.tasks.TaskTracker.task_done`.
    """
    record = task._scopewatch_record
    if record is not None and not record.ended:
        tracker = record.tracker
        try:
            if (
                tracker.quick
                and record.span is None
                and not task.cancelled()
                and task._exception is None
                and (not PY311 or task.cancelling() <= record.group_requests)
                and _perf_counter() - record.start <= tracker.slow
            ):
                record.ended = True
                tracker.active -= 1
                counts = tracker.counts
                counts[OK] = counts.get(OK, 0) + 1
                record.parent_context = None
            else:
                tracker.task_done(record, task)
        except Exception as error:
            tracker.on_error(error)
    if callback is not None:
        callback(task)


ended = functools.partial(carry, None)
"""The done callback of every scopewatch ``Task``: one shared object, no bound method."""
