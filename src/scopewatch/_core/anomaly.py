"""Which ended scopes and tasks are anomalous (DESIGN section 2, the ``anomalies`` rule of 0.3).

Anomalous: violated (the caller's business: a violation always makes a span), deadline
exceeded, failed with an exception, cancelled from outside (``external``), cancelled as part of
a failure (a sibling's or child's error made the group cancel), or slower than the threshold.
A normal shutdown is not: a scope or task cancelled by its own code or its enclosing group on
the way out (``explicit`` or ``parent`` origin, no failure) that ends without an error. A
scope cancelled by an enclosing scope whose deadline passed, or that was cancelled from outside,
is part of that anomaly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scopewatch import semconv

if TYPE_CHECKING:
    from scopewatch._core.records import CancelInfo


_ANOMALOUS_ORIGINS = (semconv.ORIGIN_EXTERNAL, semconv.ORIGIN_DEADLINE)
"""A cancellation from outside, or a deadline (an enclosing scope's, for ``inherited``)."""


def anomalous(outcome: str, cancel: CancelInfo | None, duration: float, slow: float) -> bool:
    """Whether an ended scope or task with these facts is anomalous (violations aside).

    Args:
        outcome: ``ok``, ``cancelled``, ``deadline_exceeded`` or ``error``.
        cancel: who asked for the cancellation, when one was requested (``None``: unknown).
        duration: seconds from enter (or creation) to exit (or end).
        slow: ``SLOW_THRESHOLD`` in seconds.
    """
    if duration > slow:
        return True
    if outcome == semconv.OUTCOME_OK:
        return False
    if outcome == semconv.OUTCOME_CANCELLED:
        return (
            cancel is None
            or cancel.failure
            or cancel.origin in _ANOMALOUS_ORIGINS
            or cancel.inherited in _ANOMALOUS_ORIGINS
        )
    return True
