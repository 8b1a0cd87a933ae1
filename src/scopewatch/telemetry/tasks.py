"""Task records -> task spans and task metrics (the :class:`~scopewatch._core.tasks.TaskSink`)."""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

from opentelemetry import context, trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from scopewatch import _current, semconv
from scopewatch._core.task_ends import task_anomalous
from scopewatch.telemetry import _sdk_calls
from scopewatch.telemetry.locks import add_held_at_end_events
from scopewatch.telemetry.scopes import add_cancel, report_violation

if TYPE_CHECKING:
    import contextvars
    from collections.abc import Callable

    from opentelemetry.trace import Span, SpanContext, Tracer

    from scopewatch._core.records import TaskRecord, Violation
    from scopewatch._runtime import Runtime


class TaskTelemetry:
    """Task spans according to the span mode, ``scopewatch.task.duration`` and links."""

    def __init__(self, runtime: Runtime) -> None:
        settings = runtime.settings
        self._runtime = runtime
        self._tracer = runtime.tracer
        _sdk_calls.on_provider_shutdown(runtime, self._use_tracer)
        self.current_context = _current.context_reader()
        self._durations = runtime.instruments.task_duration
        self._counts = runtime.instruments.task_counts
        """Outcome -> tasks ended (``scopewatch.tasks``): a plain count, no SDK call."""
        self._all_durations = settings.durations == "all"
        self.live_spans = settings.spans == "all"
        """Spans start when a task is created (``all``); otherwise they are made afterwards."""
        self._anomalies = settings.spans == "anomalies"
        self._slow = settings.slow_threshold
        self._outcome_attributes = {
            outcome: {semconv.TASK_OUTCOME: outcome}
            for outcome in (
                semconv.OUTCOME_OK,
                semconv.OUTCOME_ERROR,
                semconv.OUTCOME_CANCELLED,
            )
        }

    def _use_tracer(self, tracer: Tracer) -> None:
        """Start spans on ``tracer`` from now on (a no-op one once the provider shut down)."""
        self._tracer = tracer

    # --- TaskSink ---------------------------------------------------------------------------

    current_context: Callable[[], Any] = staticmethod(context.get_current)
    """The context current now: OpenTelemetry's own function, or the ``ContextVar.get`` it
    reads when the runtime context is the SDK's default one (no Python frame per task)."""

    def current_span_context(self) -> SpanContext | None:
        """The calling code's recording span context, if any."""
        span = trace.get_current_span()
        return span.get_span_context() if span.is_recording() else None

    def finished(
        self, record: TaskRecord, task: Any, outcome: str, violation: Violation | None
    ) -> None:
        """An asyncio task ended: record the duration; end or create its span if it has one."""
        span = self._span_at_end(record, outcome, violation is not None)
        if span is None:
            return
        self._describe(span, record, task.get_name(), outcome, getattr(task, "_exception", None))
        add_held_at_end_events(span, task)
        if violation is not None:
            report_violation(self._runtime, span, violation)
        _sdk_calls.end(span)

    def ended(
        self,
        record: TaskRecord,
        task: Any,
        name: str,
        outcome: str,
        error: BaseException | None,
    ) -> None:
        """A trio task ended: as :meth:`finished`, with the facts read from trio."""
        span = self._span_at_end(record, outcome, False)
        if span is not None:
            self._describe(span, record, name, outcome, error)
            add_held_at_end_events(span, task)
            _sdk_calls.end(span)

    def abandoned(self, record: TaskRecord, name: str, closed: str) -> None:
        """A task never finished: its event loop / trio run closed. Always reported."""
        span = record.span
        if span is None:
            span = self._start_late(record, time.perf_counter() - record.start, "")
        span.set_attributes(self._attributes(record, name))
        span.set_status(
            Status(StatusCode.ERROR, f"task was still pending when its {closed} closed")
        )
        _sdk_calls.end(span)

    # --- live spans (``all``) ---------------------------------------------------------------

    def start(self, record: TaskRecord) -> object:
        """Start the task's span now and make it current; returns the token for :meth:`release`.

        Called around the task's construction, so the task's copied context has its span as
        the current span and spans created inside the task nest under it.
        """
        parent = record.parent_context
        try:
            span = self._tracer.start_span(
                record.info.span_name, context=parent, kind=SpanKind.INTERNAL
            )
        except Exception as error:
            span = _sdk_calls.start_failed(error)
        record.span = span
        record.span_context = span.get_span_context()
        return context.attach(trace.set_span_in_context(span, parent))

    def start_in(self, record: TaskRecord, task_context: contextvars.Context) -> None:
        """Like :meth:`start` for a task created with an explicit ``context=``.

        The span is made current inside that context (there is no copy to put it in) and
        made un-current there again when the task ends.
        """
        try:
            token = task_context.run(self.start, record)
        except RuntimeError:  # that context is running right now: no nesting, only the span
            if record.span is None:
                self.release(self.start(record))
            return
        record.attached = (task_context, token, task_context.run(context.get_current))

    def release(self, token: object) -> None:
        """Undo :meth:`start`'s attach in the creating code's context."""
        context.detach(token)  # type: ignore[arg-type]

    def discard(self, record: TaskRecord) -> None:
        """The task was not created (or tracked itself): end the span started for it.

        Rare (construction raised, or a user factory built scopewatch's eager task, which
        tracks itself); the span is exported without task attributes.
        """
        self._detach_in_task_context(record)
        span = record.span
        if span is not None:
            record.span = None
            _sdk_calls.end(span)

    # --- helpers ----------------------------------------------------------------------------

    def _span_at_end(self, record: TaskRecord, outcome: str, violated: bool) -> Span | None:
        """Count the task; its duration and span only if anomalous (or asked for by the mode).

        Returns the task's span to finish (started late if anomalous), or ``None``.
        """
        duration = time.perf_counter() - record.start
        count(self._counts, outcome)
        anomalous = violated or (
            not record.routine and task_anomalous(outcome, record.cancel, duration, self._slow)
        )
        if anomalous or self._all_durations:
            self._durations.record(duration, self._outcome_attributes[outcome])
        if record.attached is not None:
            self._detach_in_task_context(record)
        span: Span | None = record.span
        if span is None:
            if anomalous and (
                violated
                or self._anomalies
                or (self.live_spans and (record.info.internal or record.system))
            ):
                span = self._start_late(record, duration, outcome)
        elif outcome == semconv.OUTCOME_CANCELLED:
            self._link_canceller(span, record)
        return span

    def _detach_in_task_context(self, record: TaskRecord) -> None:
        attached = record.attached
        if attached is None:
            return
        record.attached = None
        task_context, token, current = attached

        def detach() -> None:
            if context.get_current() is current:  # nobody attached anything after us
                context.detach(token)

        with contextlib.suppress(RuntimeError):  # the context is running: leave it alone
            task_context.run(detach)

    def _start_late(self, record: TaskRecord, duration: float, outcome: str) -> Span:
        links = []
        cancel = record.cancel
        if (
            outcome == semconv.OUTCOME_CANCELLED
            and cancel is not None
            and cancel.span_context is not None
        ):
            links.append(Link(cancel.span_context))
        try:
            span = self._tracer.start_span(
                record.info.span_name,
                context=record.parent_context,
                kind=SpanKind.INTERNAL,
                start_time=time.time_ns() - int(duration * 1e9),
                links=links,
            )
        except Exception as error:
            span = _sdk_calls.start_failed(error)
        record.span = span
        record.span_context = span.get_span_context()
        return span

    def _link_canceller(self, span: Span, record: TaskRecord) -> None:
        cancel = record.cancel
        if cancel is not None and cancel.span_context is not None:
            add_link = getattr(span, "add_link", None)  # opentelemetry-api >= 1.23
            if add_link is not None:
                add_link(cancel.span_context)

    def _attributes(self, record: TaskRecord, name: str) -> dict[str, Any]:
        info = record.info
        attributes: dict[str, Any] = {semconv.TASK_NAME: name}
        if record.parent:
            attributes[semconv.TASK_PARENT] = record.parent
        attributes[semconv.CODE_FUNCTION] = info.qualname
        if info.file:
            attributes[semconv.CODE_FILE] = info.file
            attributes[semconv.CODE_LINE] = info.line
        return attributes

    def _describe(
        self,
        span: Span,
        record: TaskRecord,
        name: str,
        outcome: str,
        error: BaseException | None,
    ) -> None:
        attributes = self._attributes(record, name)
        attributes[semconv.TASK_OUTCOME] = outcome
        cancel = record.cancel
        if outcome == semconv.OUTCOME_CANCELLED and cancel is not None:
            add_cancel(span, attributes, cancel)
        span.set_attributes(attributes)
        if outcome == semconv.OUTCOME_ERROR:
            span.set_status(
                Status(StatusCode.ERROR, type(error).__name__ if error is not None else None)
            )


def count(counts: dict[str, int], outcome: str) -> None:
    """One more ended task of ``outcome``.

    ``counts`` holds every outcome from the start: no call between the read and the write, so
    a thread switch cannot lose a count.
    """
    try:
        counts[outcome] += 1
    except KeyError:
        counts[outcome] = 1
