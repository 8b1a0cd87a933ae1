"""Telemetry -> the report: a plain dict with stable keys (schema in docs/report.md).

The text and HTML renderings are made from this dict, so ``--format json`` carries exactly what
the other formats show.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from typing import TYPE_CHECKING, Any

from scopewatch import semconv
from scopewatch._core.explain import CAUSE_TEXT, HINTS, KIND_TEXT, fix_in

if TYPE_CHECKING:
    from scopewatch.report.model import Event, Point, Span

SCHEMA = "scopewatch.report/1"
SLOWEST = 10
_FRAME = re.compile(r'File "(?P<file>.*)", line (?P<line>\d+), in (?P<function>.*)')


def is_task(span: Span) -> bool:
    """A ``task <qualname>`` span."""
    return span.name.startswith(semconv.SPAN_TASK_PREFIX) or semconv.TASK_NAME in span.attributes


def is_session(span: Span) -> bool:
    """A ``session <kind>`` span."""
    return (
        span.name.startswith(semconv.SPAN_SESSION_PREFIX) or semconv.SESSION_KIND in span.attributes
    )


def is_scope(span: Span) -> bool:
    """A cancel scope / task group / timeout span."""
    return semconv.SCOPE_KIND in span.attributes and not is_task(span)


def parse_stack(text: Any) -> list[dict[str, Any]]:
    """Frames of a traceback-style ``code.stacktrace``, outermost first."""
    frames = []
    for line in str(text or "").splitlines():
        match = _FRAME.search(line)
        if match:
            frames.append(
                {
                    "file": match["file"],
                    "line": int(match["line"]),
                    "function": match["function"].strip(),
                }
            )
    return frames


OTHER_INSTRUMENTATION = f"{os.sep}opentelemetry{os.sep}instrumentation{os.sep}"
"""Frames of other instrumentations (the asyncio one's coroutine wrapper) are noise in a report."""


def _location(frames: list[dict[str, Any]]) -> str:
    """``file:line`` of the innermost frame that is not another instrumentation's wrapper."""
    for frame in reversed(frames):
        if OTHER_INSTRUMENTATION not in frame["file"]:
            return f"{frame['file']}:{frame['line']}"
    return ""


def span_ref(span: Span) -> dict[str, Any]:
    """Name, ids, start and duration of a span, to find it again (e.g. in Jaeger)."""
    return {
        "name": span.name,
        "trace_id": span.trace_id,
        "span_id": span.span_id,
        "start_unix_nano": span.start_ns,
        "duration_s": span.duration_s,
    }


def _code_location(attributes: dict[str, Any]) -> str:
    path = attributes.get(semconv.CODE_FILE)
    if not path:
        return ""
    line = attributes.get(semconv.CODE_LINE)
    return f"{path}:{line}" if line is not None else str(path)


def app_location(value: Any) -> str:
    """``file:line`` of a ``scopewatch.enter.app`` / ``exit.app`` value (``file:line in f``)."""
    text = str(value or "")
    where, _, _ = text.partition(" in ")
    path, _, line = where.rpartition(":")
    return where if path and line.isdigit() else ""


ROLE_LABELS: dict[str, tuple[str, str]] = {
    semconv.KIND_CANCEL_SWALLOWED: ("swallowed in task", "cancelled by task"),
}
"""What ``enter`` and ``exit`` of a violation are, when not where a scope was entered / exited:
for ``cancel_swallowed`` the task that swallowed the cancellation (and where it was delivered)
and the task that asked for it (and where)."""
DEFAULT_LABELS = ("entered in task", "exited in task")


def hint_for(kind: str, cause: str, explanation: object = "") -> str:
    """The fix hint of the violation's explanation, else the one for the cause or the kind.

    The explanation's hint was chosen for the code's shape (``scopewatch._core.hints``).
    """
    fix = fix_in(explanation) if isinstance(explanation, str) else ""
    return fix or HINTS.get(cause) or HINTS.get(kind, "")


def _violation(span: Span, facts: dict[str, Any], time_ns: int) -> dict[str, Any]:
    attributes = span.attributes
    kind = str(facts.get(semconv.VIOLATION_KIND) or attributes.get(semconv.VIOLATION_KIND) or "")
    cause = str(
        facts.get(semconv.VIOLATION_CAUSE)
        or attributes.get(semconv.VIOLATION_CAUSE)
        or semconv.CAUSE_UNKNOWN
    )
    enter_stack = parse_stack(facts.get(semconv.CODE_STACKTRACE))
    exit_stack = parse_stack(facts.get(semconv.EXIT_STACKTRACE))
    enter_task = facts.get(semconv.ENTER_TASK) or attributes.get(semconv.ENTER_TASK) or ""
    exit_task = facts.get(semconv.EXIT_TASK) or attributes.get(semconv.EXIT_TASK) or ""
    enter_label, exit_label = ROLE_LABELS.get(kind, DEFAULT_LABELS)
    return {
        "kind": kind,
        "kind_text": KIND_TEXT.get(kind, ""),
        "cause": cause,
        "cause_text": CAUSE_TEXT.get(cause, "") if cause != semconv.CAUSE_UNKNOWN else "",
        "hint": hint_for(kind, cause, facts.get(semconv.EXCEPTION_MESSAGE)),
        "scope_kind": str(attributes.get(semconv.SCOPE_KIND) or span.name),
        "asyncgen": str(facts.get(semconv.ASYNCGEN) or attributes.get(semconv.ASYNCGEN) or ""),
        "enter": {
            "label": enter_label,
            "task": str(enter_task),
            "location": _location(enter_stack) or _code_location(attributes),
            "app_location": app_location(attributes.get(semconv.ENTER_APP)),
            "stack": enter_stack,
        },
        "exit": {
            "label": exit_label,
            "task": str(exit_task),
            "location": _location(exit_stack),
            "app_location": app_location(attributes.get(semconv.EXIT_APP)),
            "stack": exit_stack,
        },
        "message": str(facts.get(semconv.EXCEPTION_MESSAGE) or ""),
        "time_unix_nano": time_ns,
        "span": span_ref(span),
    }


def violations(spans: list[Span]) -> list[dict[str, Any]]:
    """One entry per violation, in time order: each ``scopewatch.violation`` event once.

    A ``scopewatch.violation.reference`` event (a session span pointing at the span that
    carries a violation) is not a violation. Files of 0.2 copied the whole event onto the
    session span instead: such a copy, identical to an event of another span, is dropped.
    """
    found = []
    originals = {
        _event_key(event)
        for span in spans
        if not is_session(span)
        for event in span.events
        if event.name == semconv.EVENT_VIOLATION
    }
    for span in spans:
        events = [event for event in span.events if event.name == semconv.EVENT_VIOLATION]
        for event in events:
            if is_session(span) and _event_key(event) in originals:
                continue  # a 0.2 copy
            found.append(_violation(span, event.attributes, event.time_ns))
        if not events and span.attributes.get(semconv.VIOLATION_KIND):
            found.append(_violation(span, {}, span.end_ns))
    found.sort(key=lambda item: item["time_unix_nano"])
    return found


def _event_key(event: Event) -> tuple[str, ...]:
    attributes = event.attributes
    return tuple(
        str(attributes.get(key) or "")
        for key in (
            semconv.VIOLATION_KIND,
            semconv.VIOLATION_CAUSE,
            semconv.ENTER_TASK,
            semconv.EXIT_TASK,
            semconv.CODE_STACKTRACE,
            semconv.EXIT_STACKTRACE,
            semconv.EXCEPTION_MESSAGE,
        )
    )


def referenced_span_ids(span: Span) -> set[str]:
    """Span ids named by the span's ``scopewatch.violation.reference`` events."""
    return {
        str(event.attributes.get(semconv.VIOLATION_SPAN_ID))
        for event in span.events
        if event.name == semconv.EVENT_VIOLATION_REFERENCE
        and event.attributes.get(semconv.VIOLATION_SPAN_ID)
    }


def cancellations(spans: list[Span]) -> dict[str, Any]:
    """Cancelled scopes and tasks, counted by origin and by (origin, location, task)."""
    by_origin: Counter[str] = Counter()
    groups: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for span in spans:
        origin = span.attributes.get(semconv.CANCEL_ORIGIN)
        if not origin:
            continue
        by_origin[str(origin)] += 1
        location = str(span.attributes.get(semconv.CANCEL_LOCATION) or "")
        task = str(span.attributes.get(semconv.CANCEL_TASK) or "")
        key = (str(origin), location, task, span.name)
        group = groups.get(key)
        if group is None:
            reason = next(
                (
                    str(event.attributes.get(semconv.CANCEL_REASON) or "")
                    for event in span.events
                    if event.name == semconv.EVENT_CANCEL
                ),
                "",
            )
            group = groups[key] = {
                "origin": str(origin),
                "location": location,
                "task": task,
                "span_name": span.name,
                "reason": reason,
                "count": 0,
                "example": span_ref(span),
            }
        group["count"] += 1
    items = sorted(groups.values(), key=lambda item: (-item["count"], item["origin"]))
    return {
        "total": sum(by_origin.values()),
        "by_origin": dict(by_origin.most_common()),
        "items": items,
    }


NORMAL_SHUTDOWN_ORIGINS = frozenset({semconv.ORIGIN_EXPLICIT, semconv.ORIGIN_PARENT})
_STATUS_ERROR = 2


def normal_shutdown(span: Span) -> bool:
    """A scope or task its own code or enclosing group cancelled on the way out, without error.

    DESIGN section 2: not an anomaly. 0.3 exports such spans only in ``all`` mode; 0.2 exported
    them in ``anomalies`` mode too.
    """
    attributes = span.attributes
    outcome = attributes.get(semconv.SCOPE_OUTCOME) or attributes.get(semconv.TASK_OUTCOME)
    return (
        outcome == semconv.OUTCOME_CANCELLED
        and attributes.get(semconv.CANCEL_ORIGIN) in NORMAL_SHUTDOWN_ORIGINS
        and not attributes.get(semconv.VIOLATION_KIND)
        and span.status_code != _STATUS_ERROR
    )


def slowest_scopes(spans: list[Span], limit: int = SLOWEST) -> list[dict[str, Any]]:
    """The longest scope spans, normal shutdowns left out (they last as long as their owner)."""
    scopes = sorted(
        (span for span in spans if is_scope(span) and not normal_shutdown(span)),
        key=lambda s: -s.duration_s,
    )
    return [
        {
            **span_ref(span),
            "scope_kind": str(span.attributes.get(semconv.SCOPE_KIND) or span.name),
            "outcome": str(span.attributes.get(semconv.SCOPE_OUTCOME) or ""),
            "task": str(span.attributes.get(semconv.ENTER_TASK) or ""),
            "location": _code_location(span.attributes),
            "function": str(span.attributes.get(semconv.CODE_FUNCTION) or ""),
            "timeout_s": span.attributes.get(semconv.SCOPE_TIMEOUT),
            "cancel_origin": str(span.attributes.get(semconv.CANCEL_ORIGIN) or ""),
            "violation": str(span.attributes.get(semconv.VIOLATION_KIND) or ""),
        }
        for span in scopes[:limit]
    ]


def histogram_rows(points: list[Point], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """Histogram streams merged over processes, one row per value of ``keys``."""
    rows: dict[tuple[str, ...], dict[str, Any]] = {}
    for point in points:
        key = tuple(str(point.attributes.get(name, "")) for name in keys)
        row = rows.get(key)
        if row is None:
            row = rows[key] = {
                **dict(zip(keys, key, strict=True)),
                "count": 0,
                "sum_s": 0.0,
                "max_s": None,
            }
        row["count"] += point.count
        row["sum_s"] += point.total
        if point.maximum is not None and point.count:
            row["max_s"] = (
                point.maximum if row["max_s"] is None else max(row["max_s"], point.maximum)
            )
    for row in rows.values():
        row["mean_s"] = row["sum_s"] / row["count"] if row["count"] else None
    return sorted(rows.values(), key=lambda row: -row["sum_s"])


def sum_rows(points: list[Point], keys: tuple[str, ...]) -> dict[tuple[str, ...], float]:
    """Sum/gauge streams merged over processes, keyed by the values of ``keys``."""
    totals: dict[tuple[str, ...], float] = {}
    for point in points:
        key = tuple(str(point.attributes.get(name, "")) for name in keys)
        totals[key] = totals.get(key, 0.0) + point.value
    return totals
