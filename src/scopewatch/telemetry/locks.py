"""Lock facts -> ``scopewatch.lock.*`` metrics and ``scopewatch.lock.held_at_end`` events.

Cost design: an uncontended acquisition makes no SDK call at all. Contentions are counted in a
local dict reported by an ``ObservableCounter`` at collection time. Wait durations (contended
acquisitions that waited at least ``LONG_WAIT`` or ended cancelled / timed out: one measurement
each; shorter waits are only counted) and hold durations (one hold in ``HOLD_SAMPLE_EVERY``,
plus every hold of at least ``LONG_HOLD`` seconds that followed a contended acquisition) are
appended to the runtime's ``DeferredHistogram`` buffers, replayed into the SDK at collection.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import TYPE_CHECKING, Any

from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.metrics import CallbackOptions, Observation

from scopewatch import semconv
from scopewatch._core import locks as core
from scopewatch._safety import Part
from scopewatch.telemetry.counts import new_counts

if TYPE_CHECKING:
    from collections.abc import Iterable

    from opentelemetry.metrics import Meter
    from opentelemetry.trace import Span

    from scopewatch._runtime import Runtime
    from scopewatch.telemetry.metrics import DeferredHistogram


class _LockPart(Part):
    """The locks feature's part: switching it off also switches ``core.ACTIVE`` off.

    ``core.ACTIVE`` is the flag the lock wrappers read first (a plain module global); this part
    is the one place that turns it off, so the two cannot disagree.
    """

    __slots__ = ()

    def fail(self, error: Exception) -> None:
        """Stop every lock wrapper, then disable the part and log once."""
        core.ACTIVE = False
        super().fail(error)


PART: Part = _LockPart("lock instrumentation")


class _Contentions:
    """Cumulative contention counts of one meter, reported by its ObservableCounter."""

    __slots__ = ("__weakref__", "active", "counts")

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = new_counts()
        self.active = False

    def observe(self, options: CallbackOptions) -> Iterable[Observation]:
        del options
        return [
            Observation(count, {semconv.LOCK_KIND: kind, semconv.LOCK_NAME: name})
            for (kind, name), count in list(self.counts.items())
        ]


_by_meter: weakref.WeakKeyDictionary[Any, _Contentions] = weakref.WeakKeyDictionary()


def _contentions_for(meter: Meter) -> _Contentions:
    """One counter per meter: the SDK returns the first instrument (and callback) on re-creation."""
    try:
        found = _by_meter.get(meter)
    except TypeError:
        found = None
    if found is None:
        found = _Contentions()
        meter.create_observable_counter(
            semconv.METRIC_LOCK_CONTENTIONS,
            callbacks=[found.observe],
            unit=semconv.UNIT_ACQUISITION,
            description="Lock acquisitions that had to wait",
        )
        with contextlib.suppress(TypeError):
            _by_meter[meter] = found
    return found


class LockMetrics:
    """Records lock waits, holds and contentions for the active runtime."""

    __slots__ = ("_contentions", "_hold", "_hold_attrs", "_wait", "_wait_attrs")

    def __init__(self, runtime: Runtime) -> None:
        self._wait: DeferredHistogram = runtime.instruments.lock_wait_duration
        self._hold: DeferredHistogram = runtime.instruments.lock_hold_duration
        self._contentions = _contentions_for(runtime.meter)
        self._contentions.active = True
        self._hold_attrs: dict[tuple[str, str], dict[str, str]] = {}
        self._wait_attrs: dict[tuple[str, str, str], dict[str, str]] = {}

    def close(self) -> None:
        """Stop counting into this meter's counter (its cumulative counts stay)."""
        self._contentions.active = False

    def waited(self, lock: object, kind: str, seconds: float, outcome: str) -> None:
        """A contended acquisition ended with ``outcome`` after ``seconds``."""
        if not is_instrumentation_enabled():
            return
        key = core.labels(core.info_for(lock, kind))
        counts = self._contentions.counts
        try:  # no call between the read and the write: threads lose no count (counts.py)
            counts[key] += 1
        except KeyError:
            counts.setdefault(key, 0)
            counts[key] += 1
        if seconds < core.LONG_WAIT and outcome == semconv.LOCK_OUTCOME_ACQUIRED:
            return  # a short wait: counted, not measured
        attrs_key = (key[0], key[1], outcome)
        attributes = self._wait_attrs.get(attrs_key)
        if attributes is None:
            attributes = {
                semconv.LOCK_KIND: key[0],
                semconv.LOCK_NAME: key[1],
                semconv.LOCK_OUTCOME: outcome,
            }
            self._wait_attrs[attrs_key] = attributes
        self._wait.record(seconds, attributes)

    def held(self, lock: object, kind: str, seconds: float) -> None:
        """A sampled hold of ``lock`` lasted ``seconds``."""
        if not is_instrumentation_enabled():
            return
        key = core.labels(core.info_for(lock, kind))
        attributes = self._hold_attrs.get(key)
        if attributes is None:
            attributes = {semconv.LOCK_KIND: key[0], semconv.LOCK_NAME: key[1]}
            self._hold_attrs[key] = attributes
        self._hold.record(seconds, attributes)


current: LockMetrics | None = None
_probe_runtime: Runtime | None = None


def start(runtime: Runtime) -> None:
    """Begin the locks feature's telemetry and bookkeeping, before its modules install."""
    global current, _probe_runtime
    current = LockMetrics(runtime)
    core.activate(runtime.settings.max_tracked)
    PART.reset()
    _probe_runtime = runtime
    if _tracker_deadline not in core.deadline_probes:
        core.deadline_probes.append(_tracker_deadline)


def stop() -> None:
    """End the locks feature's telemetry, after every lock module is uninstalled."""
    global current, _probe_runtime
    core.deactivate()
    if current is not None:
        current.close()
    current = None
    _probe_runtime = None
    if _tracker_deadline in core.deadline_probes:
        core.deadline_probes.remove(_tracker_deadline)


def _tracker_deadline(task: Any) -> bool:
    """Ask the scope tracker (scopes feature) whether a scope of ``task`` hit its deadline."""
    runtime = _probe_runtime
    tracker = runtime.scopes if runtime is not None else None
    if tracker is None:
        return False
    return any(
        record.cancel is not None and record.cancel.origin == semconv.ORIGIN_DEADLINE
        for record in tracker.records_of(task)
    )


def add_held_at_end_events(span: Span, task: Any) -> int:
    """Add one ``scopewatch.lock.held_at_end`` event per lock ``task`` still holds.

    The tasks feature calls this when a task finishes or is cancelled and its span is recording.

    Returns:
        The number of events added.
    """
    if not span.is_recording():
        return 0
    held = core.held_locks(task)
    for lock in held:
        attributes: dict[str, str | float] = {
            semconv.LOCK_KIND: lock.kind,
            semconv.LOCK_NAME: lock.name,
        }
        if lock.held_for >= 0:  # only sampled holds are timed
            attributes[semconv.LOCK_HELD_FOR] = lock.held_for
        span.add_event(semconv.EVENT_LOCK_HELD_AT_END, attributes)
    return len(held)
