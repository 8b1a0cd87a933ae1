"""The report as one self-contained HTML page with a timeline of tasks and their scopes.

The page (``template.html``: inline CSS and JavaScript, no network access) gets the report dict
and a timeline built here. Rows are tasks: a ``task <qualname>`` span gives the row its bar; scope
spans go to the row of the task that entered them (``scopewatch.enter.task``), so the timeline
also works while task spans are off (anomalies mode, or a ``scopewatch`` without the tasks
feature). Session spans get rows of their own.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import TYPE_CHECKING, Any

from scopewatch import semconv
from scopewatch.report.analyze import is_scope, is_session, is_task, referenced_span_ids

if TYPE_CHECKING:
    from scopewatch.report.model import Span, Telemetry

PLACEHOLDER = "/*__SCOPEWATCH_DATA__*/null"
NO_TASK = "(no task)"


def _task_name(span: Span) -> str:
    return str(
        span.attributes.get(semconv.TASK_NAME)
        or span.name.removeprefix(semconv.SPAN_TASK_PREFIX)
        or NO_TASK
    )


def _item(span: Span, row: str, role: str, violations: dict[str, list[int]]) -> dict[str, Any]:
    attributes = span.attributes
    return {
        "row": row,
        "role": role,
        "name": span.name,
        "trace_id": span.trace_id,
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id,
        "start": span.start_ns,
        "end": max(span.end_ns, span.start_ns),
        "status": span.status_code,
        "outcome": str(
            attributes.get(semconv.SCOPE_OUTCOME)
            or attributes.get(semconv.TASK_OUTCOME)
            or attributes.get(semconv.SESSION_OUTCOME)
            or ""
        ),
        "violation": str(attributes.get(semconv.VIOLATION_KIND) or ""),
        "violations": violations.get(span.span_id, []),
        "cancel_origin": str(attributes.get(semconv.CANCEL_ORIGIN) or ""),
        "attributes": {key: _plain(value) for key, value in sorted(attributes.items())},
        "events": [
            {"name": event.name, "time": event.time_ns}
            for event in span.events
            if event.name != semconv.EVENT_VIOLATION
        ],
    }


def _plain(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return json.dumps(value, default=str)


def timeline(report: dict[str, Any], telemetry: Telemetry) -> dict[str, Any]:
    """Rows (tasks, sessions) and items (spans) with times in unix nanoseconds."""
    violations: dict[str, list[int]] = {}
    for index, violation in enumerate(report["violations"]):
        violations.setdefault(violation["span"]["span_id"], []).append(index)
    processes: dict[str, int] = {}
    rows: dict[str, dict[str, Any]] = {}
    items: list[dict[str, Any]] = []

    def row_of(span: Span, label: str, kind: str, seen_at: int | None = None) -> str:
        process = processes.setdefault(span.resource, len(processes) + 1)
        key = f"{process}/{kind}/{label}"
        first = span.start_ns if seen_at is None else seen_at
        row = rows.get(key)
        if row is None:
            row = rows[key] = {"id": key, "label": label, "kind": kind, "process": process}
            row["first"] = first
        row["first"] = min(row["first"], first)
        return key

    for span in telemetry.spans:
        if is_task(span):
            key = row_of(span, _task_name(span), "task")
            rows[key]["parent"] = str(span.attributes.get(semconv.TASK_PARENT) or "")
            items.append(_item(span, key, "task", violations))
        elif is_scope(span):
            task = str(span.attributes.get(semconv.ENTER_TASK) or NO_TASK)
            key = row_of(span, task, "task")
            item = _item(span, key, "scope", violations)
            exit_task = str(span.attributes.get(semconv.EXIT_TASK) or "")
            if exit_task and exit_task != task:
                item["exit_row"] = row_of(span, exit_task, "task", span.end_ns)
            items.append(item)
        elif is_session(span):
            key = row_of(span, span.name, "session")
            item = _item(span, key, "session", violations)
            # the violations it references (on spans of its own), listed in its details too
            for span_id in sorted(referenced_span_ids(span)):
                item["violations"] = item["violations"] + violations.get(span_id, [])
            items.append(item)
    ordered = sorted(rows.values(), key=lambda row: (row["process"], row["first"], row["label"]))
    starts = [item["start"] for item in items]
    ends = [item["end"] for item in items]
    return {
        "rows": ordered,
        "items": items,
        "traces": traces(report, telemetry),
        "start": min(starts) if starts else 0,
        "end": max(ends) if ends else 0,
        "processes": len(processes),
    }


def traces(report: dict[str, Any], telemetry: Telemetry) -> list[dict[str, Any]]:
    """Every trace of the files (as many as the summary counts), first seen first.

    ``spans`` counts all its spans (other instrumentations' too), ``violations`` the report's
    violations on them (each once), so the trace selector adds up to the header.
    """
    found: dict[str, dict[str, Any]] = {}
    for span in telemetry.spans:
        entry = found.get(span.trace_id)
        if entry is None:
            entry = found[span.trace_id] = {
                "trace_id": span.trace_id,
                "spans": 0,
                "violations": 0,
                "first": span.start_ns,
            }
        entry["spans"] += 1
        entry["first"] = min(entry["first"], span.start_ns)
    for violation in report["violations"]:
        entry = found.get(violation["span"]["trace_id"])
        if entry is not None:
            entry["violations"] += 1
    return sorted(found.values(), key=lambda entry: (entry["first"], entry["trace_id"]))


def render(report: dict[str, Any], telemetry: Telemetry) -> str:
    """The whole page."""
    template = resources.files("scopewatch.report").joinpath("template.html").read_text("utf-8")
    data = {"report": report, "timeline": timeline(report, telemetry)}
    # "<" escaped so no "</script>" in the data can end the script element.
    encoded = json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")
    return template.replace(PLACEHOLDER, encoded)
