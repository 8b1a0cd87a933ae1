"""Spans and metric points read back from OTLP/JSON lines, as plain Python values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Attributes = dict[str, Any]


@dataclass(frozen=True)
class Event:
    """A span event."""

    name: str
    time_ns: int
    attributes: Attributes


@dataclass(frozen=True)
class Span:
    """A finished span."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    start_ns: int
    end_ns: int
    attributes: Attributes
    events: tuple[Event, ...]
    status_code: int
    """0 unset, 1 ok, 2 error (OTLP ``Status.code``)."""
    status_message: str
    links: tuple[tuple[str, str], ...]
    """``(trace_id, span_id)`` of each link."""
    resource: str
    """A key naming the resource (process) that produced the span."""

    @property
    def duration_s(self) -> float:
        """Seconds from start to end."""
        return max(0, self.end_ns - self.start_ns) / 1e9


@dataclass
class Point:
    """The latest value of one metric stream (one attribute set of one metric of one process).

    Cumulative streams keep their last point; delta streams are summed.
    """

    metric: str
    attributes: Attributes
    kind: str
    """``sum``, ``gauge`` or ``histogram``."""
    value: float = 0.0
    """Sum / gauge value."""
    count: int = 0
    """Histogram count."""
    total: float = 0.0
    """Histogram sum."""
    minimum: float | None = None
    maximum: float | None = None
    bounds: tuple[float, ...] = ()
    buckets: tuple[int, ...] = ()
    time_ns: int = 0


@dataclass
class Telemetry:
    """Everything read from one or more OTLP/JSON lines files."""

    files: list[str] = field(default_factory=list)
    spans: list[Span] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    lines: int = 0

    def points_of(self, metric: str) -> list[Point]:
        """Every stream of one metric."""
        return [point for point in self.points if point.metric == metric]
