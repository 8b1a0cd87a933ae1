"""Human text about a finished span that fired a rule (built only when a rule fires)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scopewatch import semconv

if TYPE_CHECKING:
    from collections.abc import Mapping

    from opentelemetry.sdk.trace import ReadableSpan


def _violation_event(span: ReadableSpan) -> Mapping[str, Any]:
    for event in span.events:
        if event.name == semconv.EVENT_VIOLATION:
            return event.attributes or {}
    return {}


def location(attributes: Mapping[str, Any]) -> str:
    """``file:line in function()`` from the ``code.*`` attributes, or ``""``."""
    path = attributes.get(semconv.CODE_FILE)
    if not path:
        return ""
    text = f"{path}:{attributes.get(semconv.CODE_LINE, '?')}"
    function = attributes.get(semconv.CODE_FUNCTION)
    return f"{text} in {function}()" if function else text


def _entered_at(attributes: Mapping[str, Any]) -> str:
    """The application frame first, then the library frame of ``code.*`` (DESIGN section 4)."""
    where = location(attributes)
    app = attributes.get(semconv.ENTER_APP)
    return f"{app} (library: {where})" if app and where else where


def summary(span: ReadableSpan) -> str:
    """One line: span name, duration, status and code location."""
    attributes = span.attributes or {}
    parts = [repr(span.name)]
    if span.start_time is not None and span.end_time is not None:
        parts.append(f"lasted {(span.end_time - span.start_time) / 1e9:.3f} s")
    status = span.status.status_code.name.lower()
    if status != "unset":
        parts.append(f"status {status}")
    where = _entered_at(attributes)
    if where:
        parts.append(f"entered at {where}")
    return ", ".join(parts)


def violation(span: ReadableSpan) -> str:
    """The explanation of the span's violation ("" when it carries none).

    The ``scopewatch.violation`` event's explanation is used when present; otherwise one is
    put together from the span's attributes.
    """
    attributes = span.attributes or {}
    event = _violation_event(span)
    kind = event.get(semconv.VIOLATION_KIND) or attributes.get(semconv.VIOLATION_KIND)
    if not kind:
        return ""
    message = event.get(semconv.EXCEPTION_MESSAGE)
    if isinstance(message, str) and message:
        return message
    cause = event.get(semconv.VIOLATION_CAUSE) or attributes.get(semconv.VIOLATION_CAUSE, "")
    lines = [f"scopewatch: {kind} ({cause or 'unknown'}) on span {span.name!r}"]
    enter_task = event.get(semconv.ENTER_TASK) or attributes.get(semconv.ENTER_TASK)
    exit_task = event.get(semconv.EXIT_TASK) or attributes.get(semconv.EXIT_TASK)
    where = _entered_at(attributes)
    if enter_task or where:
        lines.append(f"  entered in task {enter_task or '?'!r} at {where or 'an unknown location'}")
    if exit_task:
        exit_app = attributes.get(semconv.EXIT_APP)
        at = f" at {exit_app}" if exit_app else ""
        lines.append(f"  exited in task {exit_task!r}{at}")
    asyncgen = event.get(semconv.ASYNCGEN) or attributes.get(semconv.ASYNCGEN)
    if asyncgen:
        lines.append(f"  inside async generator {asyncgen}")
    return "\n".join(lines)
