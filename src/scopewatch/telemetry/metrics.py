"""The metric instruments of DESIGN section 3, and deferred recording off the hot path.

One SDK ``histogram.record`` costs several microseconds, more than a whole cancel scope. So hot
paths append ``(value, attributes)`` to a :class:`DeferredHistogram` buffer (a list append) and
the buffer is replayed into the real instrument when a metric reader collects: the observable
``scopewatch.task.active`` callback runs every registered flusher first. Past ``FLUSH_AT``
entries, every new measurement replays ``FLUSH_CHUNK`` old ones where it is recorded, so memory
stays bounded without a reader and no call stalls for long.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from opentelemetry.metrics import CallbackOptions, Observation

from scopewatch import _safety, semconv
from scopewatch.environment_variables import OTEL_PYTHON_SCOPEWATCH_MAX_TRACKED
from scopewatch.telemetry.counts import new_counts

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from opentelemetry.metrics import Histogram, Meter
    from opentelemetry.util.types import AttributeValue

    Attributes = Mapping[str, AttributeValue]

FLUSH_AT = 8192
FLUSH_CHUNK = 64
"""Past ``FLUSH_AT`` entries, each new measurement replays this many where it is recorded: the
buffer stays bounded without a reader, and no single call stalls the event loop for long."""


class DeferredHistogram:
    """A histogram whose measurements are buffered and recorded at collection time."""

    __slots__ = ("_histogram", "_lock", "_pending")

    def __init__(self, histogram: Histogram) -> None:
        self._histogram = histogram
        self._pending: list[tuple[float, Attributes]] = []
        self._lock = threading.Lock()

    def record(self, value: float, attributes: Attributes) -> None:
        """Buffer one measurement (cheap; safe from any thread)."""
        pending = self._pending
        pending.append((value, attributes))
        if len(pending) >= FLUSH_AT:
            self._flush_oldest(FLUSH_CHUNK)

    def _flush_oldest(self, count: int) -> None:
        with self._lock:
            chunk = self._pending[:count]
            del self._pending[:count]
        record = self._histogram.record
        for value, attributes in chunk:
            record(value, attributes)

    def flush(self) -> None:
        """Record every buffered measurement into the SDK instrument."""
        with self._lock:  # not swapped: record() may be appending to it in another thread
            pending = self._pending[:]
            del self._pending[: len(pending)]
        record = self._histogram.record
        for value, attributes in pending:
            record(value, attributes)


def _seconds_histogram(meter: Meter, name: str, description: str) -> Histogram:
    try:
        return meter.create_histogram(
            name,
            unit=semconv.UNIT_SECONDS,
            description=description,
            explicit_bucket_boundaries_advisory=list(semconv.SECONDS_BUCKETS),
        )
    except TypeError:  # opentelemetry-api older than 1.23 has no bucket advice
        return meter.create_histogram(name, unit=semconv.UNIT_SECONDS, description=description)


class Instruments:
    """Every scopewatch instrument, created once per ``instrument()``.

    ``scope_counts`` and ``task_counts`` are plain dicts the hot paths increment (no SDK call);
    the observable ``scopewatch.scopes`` / ``scopewatch.tasks`` counters read them at collection.
    """

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        self.scope_counts: dict[tuple[str, str], int] = new_counts()
        """``(scope kind, outcome)`` -> user scopes ended so far (per thread without a GIL)."""
        self.task_counts: dict[str, int] = new_counts(
            (semconv.OUTCOME_OK, semconv.OUTCOME_ERROR, semconv.OUTCOME_CANCELLED)
        )
        """Task outcome -> tasks ended so far. Every outcome is a key from the start, so the hot
        path's ``counts[outcome] += 1`` makes no call between the read and the write (no thread
        switch can lose a count); outcomes still at zero are not reported."""
        self._flushers: list[Callable[[], None]] = []
        self._active_tasks: Callable[[], int] = lambda: 0
        self._untracked: dict[str, Callable[[], int]] = {}
        self.violations = meter.create_counter(
            semconv.METRIC_VIOLATIONS,
            unit=semconv.UNIT_VIOLATION,
            description="Cancel-scope and task misuses detected, by kind and cause",
        )
        self.scope_duration = DeferredHistogram(
            _seconds_histogram(
                meter, semconv.METRIC_SCOPE_DURATION, "Time from entering a cancel scope to exit"
            )
        )
        self.task_duration = DeferredHistogram(
            _seconds_histogram(meter, semconv.METRIC_TASK_DURATION, "Lifetime of asyncio tasks")
        )
        self.lock_wait_duration = DeferredHistogram(
            _seconds_histogram(
                meter, semconv.METRIC_LOCK_WAIT_DURATION, "Time spent waiting to acquire a lock"
            )
        )
        self.lock_hold_duration = DeferredHistogram(
            _seconds_histogram(meter, semconv.METRIC_LOCK_HOLD_DURATION, "Time a lock was held")
        )
        self.session_duration = _seconds_histogram(
            meter, semconv.METRIC_SESSION_DURATION, "Lifetime of SDK client sessions"
        )
        self.session_active = meter.create_up_down_counter(
            semconv.METRIC_SESSION_ACTIVE,
            unit=semconv.UNIT_SESSION,
            description="SDK client sessions currently open",
        )
        self.alerts = meter.create_counter(
            semconv.METRIC_ALERTS, unit=semconv.UNIT_ALERT, description="Alert rule firings"
        )
        for deferred in (
            self.scope_duration,
            self.task_duration,
            self.lock_wait_duration,
            self.lock_hold_duration,
        ):
            self.add_flusher(deferred.flush)
        meter.create_observable_up_down_counter(
            semconv.METRIC_TASK_ACTIVE,
            callbacks=[self._collect],
            unit=semconv.UNIT_TASK,
            description="asyncio tasks currently running (0 while the tasks feature is off)",
        )
        meter.create_observable_counter(
            semconv.METRIC_SCOPES,
            callbacks=[self._collect_scopes],
            unit=semconv.UNIT_SCOPE,
            description="User cancel scopes that ended, by kind and outcome",
        )
        meter.create_observable_counter(
            semconv.METRIC_TASKS,
            callbacks=[self._collect_tasks],
            unit=semconv.UNIT_TASK,
            description="Tasks that ended, by outcome",
        )
        meter.create_observable_counter(
            semconv.METRIC_UNTRACKED,
            callbacks=[self._collect_untracked],
            unit=semconv.UNIT_UNTRACKED,
            description="Scopes and tasks not tracked because MAX_TRACKED were already tracked",
        )

    def add_flusher(self, flusher: Callable[[], None]) -> None:
        """Run ``flusher`` at every collection, before the data is read."""
        self._flushers.append(flusher)

    def set_active_tasks(self, count: Callable[[], int]) -> None:
        """Report ``count()`` as ``scopewatch.task.active``."""
        self._active_tasks = count

    def set_untracked(self, kind: str, count: Callable[[], int]) -> None:
        """Report ``count()`` as ``scopewatch.untracked`` of ``kind`` (``scope`` or ``task``)."""
        self._untracked[kind] = count

    def flush(self) -> None:
        """Replay every deferred measurement now."""
        for flusher in list(self._flushers):
            flusher()

    def _collect(self, options: CallbackOptions) -> Iterable[Observation]:
        del options
        self.flush()
        return [Observation(self._active_tasks())]

    def _collect_scopes(self, options: CallbackOptions) -> Iterable[Observation]:
        del options
        return [
            Observation(count, {semconv.SCOPE_KIND: kind, semconv.SCOPE_OUTCOME: outcome})
            for (kind, outcome), count in list(self.scope_counts.items())
        ]

    def _collect_tasks(self, options: CallbackOptions) -> Iterable[Observation]:
        del options
        return [
            Observation(count, {semconv.TASK_OUTCOME: outcome})
            for outcome, count in list(self.task_counts.items())
            if count
        ]

    def _collect_untracked(self, options: CallbackOptions) -> Iterable[Observation]:
        del options
        return [
            Observation(count(), {semconv.UNTRACKED_KIND: kind})
            for kind, count in list(self._untracked.items())
        ]


def warn_bound_reached(kind: str, bound: int) -> None:
    """Say once per kind that ``MAX_TRACKED`` was reached and what that means."""
    _safety.warn_once(
        f"max_tracked.{kind}",
        "scopewatch: %d %ss are tracked at once, the bound set by %s; further %ss are not "
        "tracked (no span, no violation detection for them; the application is not affected) "
        "until tracked ones finish. They are counted in the %s metric (%s=%s). Raise the bound "
        "if that many is expected, or look for %ss that never finish.",
        bound,
        kind,
        OTEL_PYTHON_SCOPEWATCH_MAX_TRACKED,
        kind,
        semconv.METRIC_UNTRACKED,
        semconv.UNTRACKED_KIND,
        kind,
        kind,
    )
