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
    from scopewatch._core.records import CancelInfo

PY311 = sys.version_info >= (3, 11)
RECORD_ATTRIBUTE = "_scopewatch_record"
"""Slot of scopewatch's own ``Task`` subclass holding the task's record, once it has one."""
FACTS_ATTRIBUTE = "_scopewatch_facts"
"""Slot of scopewatch's ``Task`` holding its creation facts until a record is made from them
(or it ended normally: then ``None``, and no record was ever made)."""
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


def carry(carrying: bool, task: Any) -> None:
    """Note that ``task`` ended, then (``carrying``) run the done callback it carries.

    Bound as :data:`ended`, the task's own done callback; as :data:`carried`, it stands for the
    first done callback someone else added (the awaiting task's wake-up, a task group's,
    gather's), kept in the task's ``_scopewatch_carrier`` slot: scopewatch's callback rides in
    it, one event-loop handle per task instead of two. A task that ended normally (returned, no
    cancellation requested, no record made, not slow) is only counted here: no SDK call, no
    record, no further frame; anything else goes to
    :meth:`~scopewatch._core.tasks.TaskTracker.task_done` with its record.
    """
    facts = task._scopewatch_facts
    if facts is not None:
        tracker = facts[1]
        try:
            if (
                tracker.quick
                and not task.cancelled()
                and task._exception is None
                and (not PY311 or not task.cancelling())
                and _perf_counter() - facts[2] <= tracker.slow
            ):
                task._scopewatch_facts = None
                task._scopewatch_record = tracker.ended_record
                tracker.active -= 1
                tracker.counts[OK] += 1  # no call between read and write: no lost count
            else:
                tracker.task_done(tracker.materialize(task, facts), task)
        except Exception as error:
            tracker.on_error(error)
    else:
        record = getattr(task, RECORD_ATTRIBUTE, None)
        if record is not None and not record.ended:
            try:
                record.tracker.task_done(record, task)
            except Exception as error:
                record.tracker.on_error(error)
    if carrying:
        callback = task._scopewatch_carrier
        task._scopewatch_carrier = None  # a done task keeps no callback (nor what it refers to)
        callback(task)


ended = functools.partial(carry, False)
"""The done callback of every scopewatch ``Task``: one shared object, no bound method."""
carried = functools.partial(carry, True)
""":data:`ended`, then the callback the task carries (``task._scopewatch_carrier``)."""
