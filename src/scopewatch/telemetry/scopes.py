"""Scope records -> spans, events, metrics and exception notes (the :class:`ScopeSink`)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from opentelemetry import context, trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from scopewatch import _current, semconv
from scopewatch._core import anomaly, frames
from scopewatch._core.explain import explain
from scopewatch._core.records import CancelInfo, ScopeRecord, Violation
from scopewatch.telemetry import _sdk_calls, app_frames

if TYPE_CHECKING:
    from opentelemetry.trace import Span, SpanContext, Tracer

    from scopewatch._core.tracker import ExitFacts
    from scopewatch._runtime import Runtime

_logger = logging.getLogger("scopewatch")

ViolationListener = Callable[[Violation, "SpanContext | None"], None]


def violation_listeners(runtime: Runtime) -> list[ViolationListener]:
    """Callables told about every violation (sessions and the pytest plugin subscribe)."""
    return runtime.violation_listeners


def violation_event_attributes(violation: Violation) -> dict[str, Any]:
    """The attributes of a ``scopewatch.violation`` event (DESIGN section 2)."""
    return {
        semconv.VIOLATION_KIND: violation.kind,
        semconv.VIOLATION_CAUSE: violation.cause,
        semconv.ENTER_TASK: violation.enter_task,
        semconv.EXIT_TASK: violation.exit_task,
        semconv.ASYNCGEN: violation.asyncgen,
        semconv.CODE_STACKTRACE: frames.format_frames(violation.enter_frames),
        semconv.EXIT_STACKTRACE: frames.format_frames(violation.exit_frames),
        "exception.message": explain(violation),
    }


def code_attributes(record: ScopeRecord) -> dict[str, Any]:
    """``code.*`` of the user frame that entered the scope."""
    if not record.frames:
        return {}
    code, line = record.frames[0]
    return {
        semconv.CODE_FUNCTION: frames.qualname(code),
        semconv.CODE_FILE: code.co_filename,
        semconv.CODE_LINE: line,
    }


def wall_start_ns(record: ScopeRecord) -> int:
    """Wall-clock enter time of ``record``, derived once from its monotonic start."""
    if not record.start_ns:
        elapsed = time.perf_counter() - record.start
        record.start_ns = time.time_ns() - int(elapsed * 1e9)
    return record.start_ns


def add_cancel(span: Span, attributes: dict[str, Any], cancel: CancelInfo) -> None:
    """Who asked for the cancellation (``cancel.*``) into ``attributes``, and its span event.

    The ``scopewatch.cancel`` event carries the same attributes and the request's reason.
    """
    cancel_attributes = {
        semconv.CANCEL_ORIGIN: cancel.origin,
        semconv.CANCEL_TASK: cancel.task,
        semconv.CANCEL_LOCATION: cancel.location,
    }
    attributes.update(cancel_attributes)
    span.add_event(
        semconv.EVENT_CANCEL, {**cancel_attributes, semconv.CANCEL_REASON: cancel.reason}
    )


class ScopeTelemetry:
    """Turns scope facts into telemetry according to the span mode."""

    def __init__(self, runtime: Runtime) -> None:
        settings = runtime.settings
        self._runtime = runtime
        self._tracer = runtime.tracer
        _sdk_calls.on_provider_shutdown(runtime, self._use_tracer)
        self._instruments = runtime.instruments
        self._all = settings.spans == "all"
        self._anomalies = settings.spans == "anomalies"
        self._slow = settings.slow_threshold
        self._all_durations = settings.durations == "all"
        self.spans_at_enter = self._all
        """The tracker calls :meth:`entered` only in ``all`` mode (a span starts at enter)."""
        self.context_now = _current.context_reader()
        self.slow = self._slow
        self.ok_counts = (
            None if self._all or self._all_durations else runtime.instruments.scope_counts
        )
        """Where the tracker counts normal ends itself (no call here): not when every scope
        is a span or a measurement."""
        self._notes = settings.exception_notes and sys.version_info >= (3, 11)
        self._duration_attributes: dict[tuple[str, str], dict[str, str]] = {}

    def _use_tracer(self, tracer: Tracer) -> None:
        """Start spans on ``tracer`` from now on (a no-op one once the provider shut down)."""
        self._tracer = tracer

    # --- ScopeSink --------------------------------------------------------------------------

    def entered(self, record: ScopeRecord) -> None:
        """Start the span of a user scope (``all`` mode; the tracker kept the parent context)."""
        if not record.user:
            return
        current = record.parent_context
        try:
            span = self._tracer.start_span(
                record.kind,
                context=current,
                kind=SpanKind.INTERNAL,
                start_time=wall_start_ns(record),
            )
        except Exception as error:
            _sdk_calls.start_failed(error)
            return  # no span now; one is made at exit if the scope is anomalous
        record.span = span
        attached = trace.set_span_in_context(span, current)
        record.attached_context = attached
        record.context_token = context.attach(attached)

    def exited(self, record: ScopeRecord, facts: ExitFacts) -> None:
        """Count the scope; measure and span it only if it deserves it (DESIGN section 3).

        A user scope that ends normally costs a dict increment: no SDK call. anyio's and
        trio's own scopes are never counted; they are spans only when violated.
        """
        duration = time.perf_counter() - record.start
        if record.context_token is not None:
            self._detach(record)
        violated = bool(record.violations)
        span = record.span
        if record.user:
            outcome = facts.outcome
            key = (record.kind, outcome)
            counts = self._instruments.scope_counts
            try:  # += on the dict itself: no thread switch between its read and write
                counts[key] += 1
            except KeyError:
                counts.setdefault(key, 0)
                counts[key] += 1
            anomalous = violated or anomaly.anomalous(outcome, record.cancel, duration, self._slow)
            if anomalous or self._all_durations:
                attributes = self._duration_attributes.get(key)
                if attributes is None:
                    attributes = {semconv.SCOPE_KIND: record.kind, semconv.SCOPE_OUTCOME: outcome}
                    self._duration_attributes[key] = attributes
                self._instruments.scope_duration.record(duration, attributes)
            if span is None:
                if not (violated or (self._anomalies and anomalous)):
                    return
                span = self._start_late(record)
        elif span is None:
            if not violated:
                return
            span = self._start_late(record)
        self._describe(span, record, facts)
        self._end(span, record, facts.error)

    def leaked(self, record: ScopeRecord, violation: Violation) -> None:
        """A leaked scope always gets a span, ended now."""
        del violation
        span = record.span or self._start_late(record)
        span.set_attributes(self._base_attributes(record))
        self._end(span, record, None)

    def current_span_context(self) -> SpanContext | None:
        """The calling task's recording span context, if any."""
        span = trace.get_current_span()
        return span.get_span_context() if span.is_recording() else None

    # --- helpers ----------------------------------------------------------------------------

    def _start_late(self, record: ScopeRecord) -> Span:
        links = []
        if record.cancel is not None and record.cancel.span_context is not None:
            links.append(Link(record.cancel.span_context))
        try:
            return self._tracer.start_span(
                record.kind,
                context=record.parent_context,
                kind=SpanKind.INTERNAL,
                start_time=wall_start_ns(record),
                links=links,
            )
        except Exception as error:
            return _sdk_calls.start_failed(error)

    def _detach(self, record: ScopeRecord) -> None:
        token = record.context_token
        if token is None:
            return
        record.context_token = None
        # Only reset the context we attached, in the task and context it was attached in: a
        # token reset from another task or out of order would raise or corrupt the context.
        if (
            _current.any_current_task() is record.task
            and context.get_current() is record.attached_context
        ):
            context.detach(token)

    def _base_attributes(self, record: ScopeRecord) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            semconv.SCOPE_KIND: record.kind,
            semconv.SCOPE_ID: f"{id(record.obj):x}",
            semconv.SCOPE_SHIELD: record.shield,
            semconv.ENTER_TASK: record.task_name,
        }
        if not record.user:
            attributes[semconv.SCOPE_INTERNAL] = True
        if record.timeout is not None:
            attributes[semconv.SCOPE_TIMEOUT] = record.timeout
        if record.asyncgen:
            attributes[semconv.ASYNCGEN] = record.asyncgen
        attributes.update(code_attributes(record))
        attributes.update(app_frames.attributes(record))
        return attributes

    def _describe(self, span: Span, record: ScopeRecord, facts: ExitFacts) -> None:
        attributes = self._base_attributes(record)
        attributes[semconv.EXIT_TASK] = facts.exit_task
        attributes[semconv.CROSS_TASK] = facts.exit_task != record.task_name or any(
            v.kind == semconv.KIND_CROSS_TASK_EXIT for v in record.violations
        )
        attributes[semconv.SCOPE_CANCEL_CALLED] = facts.cancel_called
        attributes[semconv.SCOPE_CANCELLED_CAUGHT] = facts.cancelled_caught
        attributes[semconv.SCOPE_OUTCOME] = facts.outcome
        cancel = record.cancel
        if cancel is not None and facts.outcome in (
            semconv.OUTCOME_CANCELLED,
            semconv.OUTCOME_DEADLINE_EXCEEDED,
        ):
            add_cancel(span, attributes, cancel)
        span.set_attributes(attributes)
        if facts.outcome == semconv.OUTCOME_ERROR and facts.error is not None:
            span.set_status(Status(StatusCode.ERROR, type(facts.error).__name__))

    def _end(self, span: Span, record: ScopeRecord, error: BaseException | None) -> None:
        for violation in record.violations:
            self._report(span, violation, error)
        _sdk_calls.end(span)

    def _report(self, span: Span, violation: Violation, error: BaseException | None) -> None:
        report_violation(self._runtime, span, violation, error if self._notes else None)


def report_violation(
    runtime: Runtime, span: Span, violation: Violation, error: BaseException | None = None
) -> None:
    """Put a violation on ``span``: attributes, event, ERROR status, counter, listeners.

    Args:
        runtime: the active runtime (instruments and listeners).
        span: the recording span that carries the violation (not ended yet).
        violation: what happened.
        error: an exception raised in the user's code by this violation; it gets the
            explanation as a PEP 678 note (3.11+). ``None`` adds no note.
    """
    span.set_attribute(semconv.VIOLATION_KIND, violation.kind)
    span.set_attribute(semconv.VIOLATION_CAUSE, violation.cause)
    span.add_event(semconv.EVENT_VIOLATION, violation_event_attributes(violation))
    span.set_status(Status(StatusCode.ERROR, f"{violation.kind} ({violation.cause})"))
    runtime.instruments.violations.add(
        1,
        {
            semconv.VIOLATION_KIND: violation.kind,
            semconv.VIOLATION_CAUSE: violation.cause,
            semconv.SCOPE_KIND: violation.scope_kind,
        },
    )
    if error is not None and sys.version_info >= (3, 11):
        error.add_note(explain(violation))
    span_context = span.get_span_context()
    listeners = violation_listeners(runtime)
    for listener in list(listeners):
        try:
            listener(violation, span_context)
        except Exception:
            _logger.exception("scopewatch: a violation listener failed and was removed")
            if listener in listeners:
                listeners.remove(listener)
