"""The ``anomalies`` rule of DESIGN section 2 (0.3), as a pure function: no loop, no SDK."""

from __future__ import annotations

import pytest

from scopewatch import semconv
from scopewatch._core.anomaly import anomalous
from scopewatch._core.records import CancelInfo

SLOW = 1.0


def cancel(origin: str, failure: bool = False) -> CancelInfo:
    return CancelInfo(origin, "requester", "app.py:1", failure=failure)


def inherited(origin: str) -> CancelInfo:
    return CancelInfo(semconv.ORIGIN_PARENT, "requester", "app.py:1", inherited=origin)


@pytest.mark.parametrize(
    ("outcome", "info", "expected"),
    [
        (semconv.OUTCOME_OK, None, False),
        (semconv.OUTCOME_ERROR, None, True),
        (semconv.OUTCOME_DEADLINE_EXCEEDED, cancel(semconv.ORIGIN_DEADLINE), True),
        # a normal shutdown: the scope's own code, or its enclosing group on the way out
        (semconv.OUTCOME_CANCELLED, cancel(semconv.ORIGIN_EXPLICIT), False),
        (semconv.OUTCOME_CANCELLED, cancel(semconv.ORIGIN_PARENT), False),
        # cancelled from outside, as part of a failure, or by nobody we saw
        (semconv.OUTCOME_CANCELLED, cancel(semconv.ORIGIN_EXTERNAL), True),
        (semconv.OUTCOME_CANCELLED, cancel(semconv.ORIGIN_PARENT, failure=True), True),
        (semconv.OUTCOME_CANCELLED, cancel(semconv.ORIGIN_EXPLICIT, failure=True), True),
        (semconv.OUTCOME_CANCELLED, None, True),
        # cancelled by an enclosing scope: part of that scope's deadline or outside cancel
        (semconv.OUTCOME_CANCELLED, inherited(semconv.ORIGIN_DEADLINE), True),
        (semconv.OUTCOME_CANCELLED, inherited(semconv.ORIGIN_EXTERNAL), True),
        (semconv.OUTCOME_CANCELLED, inherited(semconv.ORIGIN_EXPLICIT), False),
    ],
)
def test_outcomes(outcome: str, info: CancelInfo | None, expected: bool) -> None:
    assert anomalous(outcome, info, 0.01, SLOW) is expected


@pytest.mark.parametrize(
    "outcome", [semconv.OUTCOME_OK, semconv.OUTCOME_CANCELLED, semconv.OUTCOME_ERROR]
)
def test_slow_is_always_anomalous(outcome: str) -> None:
    assert anomalous(outcome, cancel(semconv.ORIGIN_EXPLICIT), SLOW + 0.5, SLOW)
    assert anomalous(outcome, None, SLOW, SLOW) is (outcome != semconv.OUTCOME_OK)
