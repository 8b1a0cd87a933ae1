"""How a task ended: its outcome, and whether that end is anomalous (DESIGN sections 2 and 3).

A task is anomalous when the revised ``anomalies`` rule (:func:`scopewatch._core.anomaly.anomalous`)
says so, and also when it was cancelled by a deadline (a task has no ``deadline_exceeded``
outcome of its own: its cancellation names the deadline as its origin). A task cancelled by its
own group's normal shutdown is not. Pure bookkeeping, no OpenTelemetry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scopewatch import semconv
from scopewatch._core.anomaly import anomalous

if TYPE_CHECKING:
    from scopewatch._core.records import CancelInfo

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
