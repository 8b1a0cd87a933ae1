"""Reading ``scopewatch.scopes`` (the observable counter of ended user scopes) in tests."""

from __future__ import annotations

from typing import Any

from scopewatch import semconv


def scope_counts(telemetry: Any) -> dict[tuple[str, str], int]:
    """``(scope kind, outcome)`` -> count, collected now from the in-memory reader."""
    return {
        (
            str(point.attributes[semconv.SCOPE_KIND]),
            str(point.attributes[semconv.SCOPE_OUTCOME]),
        ): int(point.value)
        for point in telemetry.points(semconv.METRIC_SCOPES)
    }


def duration_keys(telemetry: Any) -> set[tuple[str, str]]:
    """``(scope kind, outcome)`` of every ``scopewatch.scope.duration`` point collected now."""
    return {
        (str(p.attributes[semconv.SCOPE_KIND]), str(p.attributes[semconv.SCOPE_OUTCOME]))
        for p in telemetry.points(semconv.METRIC_SCOPE_DURATION)
    }
