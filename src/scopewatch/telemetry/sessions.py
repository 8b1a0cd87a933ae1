"""Session records -> ``session <kind>`` spans, ``scopewatch.session.*`` metrics, violation events.

A session span is always created, whatever the span mode. A session closed by another task than
the one that opened it is a violation of its own, reported like any other (event, attributes,
``scopewatch.violations`` count, listeners). Every violation reported while sessions are open is
referenced from the spans of the sessions it concerns (a ``scopewatch.violation.reference`` event
naming the span that carries it, status ERROR), so a search for the session finds the cause; a
reference is not a second violation: it is not counted, logged or listed again.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from opentelemetry import context, trace
from opentelemetry.trace import Status, StatusCode

from scopewatch import semconv
from scopewatch._core import classify, frames
from scopewatch._core import sessions as core
from scopewatch._core.records import Violation
from scopewatch._current import any_current_task
from scopewatch._safety import Part
from scopewatch.telemetry import _sdk_calls
from scopewatch.telemetry.scopes import report_violation, violation_listeners

if TYPE_CHECKING:
    from opentelemetry.trace import SpanContext, Tracer

    from scopewatch._runtime import Runtime

PART = Part("session instrumentation")
_STACK_DEPTH = 8


def task_name(task: Any) -> str:
    """A task's name (asyncio ``get_name()``, trio ``name``), ``""`` for none."""
    if task is None:
        return ""
    get_name = getattr(task, "get_name", None)
    return str(get_name() if get_name is not None else getattr(task, "name", ""))


def outcome_of(error: BaseException | None) -> str:
    """``ok``, ``cancelled`` or ``error`` for the exception a session ended with."""
    if error is None:
        return semconv.OUTCOME_OK
    name = type(error).__name__
    if name == "CancelledError" or (name == "Cancelled" and type(error).__module__ == "trio"):
        return semconv.OUTCOME_CANCELLED
    return semconv.OUTCOME_ERROR


class SessionTelemetry:
    """Opens and closes session spans and metrics for one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._tracer = runtime.tracer
        _sdk_calls.on_provider_shutdown(runtime, self._use_tracer)
        self._active = runtime.instruments.session_active
        self._duration = runtime.instruments.session_duration
        self._depth = runtime.settings.stack_depth or _STACK_DEPTH

    def _use_tracer(self, tracer: Tracer) -> None:
        """Start spans on ``tracer`` from now on (a no-op one once the provider shut down)."""
        self._tracer = tracer

    def open(self, kind: str, name: str | None, attach: bool, frame: Any) -> core.SessionRecord:
        """Start a session: span, ``session.active`` +1, and (``attach``) make it current."""
        task = any_current_task()
        captured, _, _ = frames.capture(frame, self._depth)
        record = core.SessionRecord(kind, name, task, task_name(task), captured)
        attributes: dict[str, Any] = {
            semconv.SESSION_KIND: kind,
            semconv.ENTER_TASK: record.task_name,
        }
        if name is not None:
            attributes[semconv.SESSION_NAME] = name
        if captured:
            code, line = captured[0]
            attributes[semconv.CODE_FUNCTION] = frames.qualname(code)
            attributes[semconv.CODE_FILE] = code.co_filename
            attributes[semconv.CODE_LINE] = line
        try:
            record.span = self._tracer.start_span(
                semconv.SPAN_SESSION_PREFIX + kind, attributes=attributes
            )
        except Exception as error:
            record.span = _sdk_calls.start_failed(error)
        if attach:
            record.context_token = context.attach(trace.set_span_in_context(record.span))
        self._active.add(1, {semconv.SESSION_KIND: kind})
        core.add(record)
        return record

    def close(self, record: core.SessionRecord, error: BaseException | None, frame: Any) -> None:
        """End a session (idempotent): outcome, cross-task check, span end, metrics."""
        if record.closed:
            return
        record.closed = True
        core.remove(record)
        span = record.span
        exit_task = any_current_task()
        exit_name = task_name(exit_task)
        if record.context_token is not None and exit_task is record.task:
            context.detach(record.context_token)
        record.context_token = None
        span.set_attribute(semconv.EXIT_TASK, exit_name)
        cross_task = exit_task is not record.task
        span.set_attribute(semconv.CROSS_TASK, cross_task)
        if cross_task:
            exit_frames, asyncgen, _ = frames.capture(frame, self._depth)
            violation = Violation(
                kind=semconv.KIND_CROSS_TASK_EXIT,
                cause=classify.closing_cause(exit_task, frame),
                scope_kind=semconv.SPAN_SESSION_PREFIX + record.kind,
                enter_task=record.task_name,
                exit_task=exit_name,
                asyncgen=asyncgen,
                enter_frames=record.frames,
                exit_frames=exit_frames,
                detail="The session was closed by another task than the one that opened it.",
            )
            if span.is_recording():
                report_violation(self._runtime, span, violation)
        outcome = outcome_of(error)
        span.set_attribute(semconv.SESSION_OUTCOME, outcome)
        if error is not None and outcome == semconv.OUTCOME_ERROR:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        _sdk_calls.end(span)
        self._active.add(-1, {semconv.SESSION_KIND: record.kind})
        self._duration.record(
            time.perf_counter() - record.start,
            {semconv.SESSION_KIND: record.kind, semconv.SESSION_OUTCOME: outcome},
        )

    def on_violation(self, violation: Violation, span_context: SpanContext | None) -> None:
        """Violation listener: mark the open sessions the violation concerns."""
        if not PART.enabled:
            return
        try:
            trace_id = getattr(span_context, "trace_id", None)
            for record in core.concerned(violation.enter_task, violation.exit_task, trace_id):
                reference_violation(record, violation, span_context)
        except Exception as error:
            PART.fail(error)


def reference_violation(
    record: core.SessionRecord, violation: Violation, span_context: SpanContext | None
) -> None:
    """Add a ``scopewatch.violation.reference`` event naming the violation's span; status ERROR.

    The session span gets no ``scopewatch.violation.*`` attributes for it: those mark the span
    that carries a violation, which alert rules, reports and searches count once.
    """
    span = record.span
    if span is None or not span.is_recording():
        return
    if span_context is not None and span_context == span.get_span_context():
        return  # the session's own violation, already on this span
    attributes: dict[str, Any] = {
        semconv.VIOLATION_KIND: violation.kind,
        semconv.VIOLATION_CAUSE: violation.cause,
        semconv.SCOPE_KIND: violation.scope_kind,
        semconv.ENTER_TASK: violation.enter_task,
        semconv.EXIT_TASK: violation.exit_task,
    }
    if span_context is not None:
        attributes[semconv.VIOLATION_TRACE_ID] = f"{span_context.trace_id:032x}"
        attributes[semconv.VIOLATION_SPAN_ID] = f"{span_context.span_id:016x}"
    span.add_event(semconv.EVENT_VIOLATION_REFERENCE, attributes)
    span.set_status(Status(StatusCode.ERROR, f"{violation.kind} ({violation.cause})"))


current: SessionTelemetry | None = None
_runtime: Runtime | None = None


def start(runtime: Runtime) -> None:
    """Begin the sessions feature's telemetry and subscribe to violations (before its modules)."""
    global current, _runtime
    current = SessionTelemetry(runtime)
    _runtime = runtime
    PART.reset()
    violation_listeners(runtime).append(current.on_violation)


def stop() -> None:
    """End the sessions feature's telemetry, after every session module is uninstalled."""
    global current, _runtime
    if current is not None:
        listeners = violation_listeners(_runtime) if _runtime is not None else []
        if current.on_violation in listeners:
            listeners.remove(current.on_violation)
        current = None
        _runtime = None
        core.open_sessions.clear()
