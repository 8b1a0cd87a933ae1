"""Report sections about resources: tasks, locks, sessions, alerts, scope-duration totals."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from scopewatch import semconv
from scopewatch.report.analyze import (
    histogram_rows,
    is_scope,
    is_session,
    is_task,
    referenced_span_ids,
    span_ref,
    sum_rows,
)

if TYPE_CHECKING:
    from scopewatch.report.model import Span, Telemetry


def scope_durations(telemetry: Telemetry) -> list[dict[str, Any]]:
    """``scopewatch.scope.duration`` by scope kind and outcome (every scope, not only spans)."""
    rows = histogram_rows(
        telemetry.points_of(semconv.METRIC_SCOPE_DURATION),
        (semconv.SCOPE_KIND, semconv.SCOPE_OUTCOME),
    )
    return [
        {
            "scope_kind": row[semconv.SCOPE_KIND],
            "outcome": row[semconv.SCOPE_OUTCOME],
            **_numbers(row),
        }
        for row in rows
    ]


SOURCE_SPANS = "spans"
"""``source`` of a count section made by counting exported spans (no metric in the files)."""


SOURCES = {
    semconv.METRIC_SCOPES: "every scope that ended, from the scopewatch.scopes metric",
    semconv.METRIC_TASKS: "every task that ended, from the scopewatch.tasks metric",
    semconv.METRIC_SCOPE_DURATION: "every scope that ended, from scopewatch.scope.duration "
    "(a file without scopewatch.scopes, as 0.2 wrote)",
    semconv.METRIC_TASK_DURATION: "every task that ended, from scopewatch.task.duration "
    "(a file without scopewatch.tasks, as 0.2 wrote)",
    SOURCE_SPANS: "counted from exported spans only: the files have no scopewatch metrics",
}
"""What each count ``source`` of the report means, as shown."""


def _counts(
    telemetry: Telemetry,
    counter: str,
    histogram: str,
    keys: tuple[str, ...],
    spans: list[Span],
) -> tuple[str, dict[tuple[str, ...], int]]:
    """Exact counts by ``keys``, and where they come from.

    The ``counter`` (0.3: every scope / task that ended) when the files have it; else the
    duration ``histogram``'s counts (0.2 recorded one measurement per ended scope / task);
    else the exported ``spans`` (only what was exported).
    """
    points = telemetry.points_of(counter)
    if points:
        return counter, {key: int(value) for key, value in sum_rows(points, keys).items()}
    rows = histogram_rows(telemetry.points_of(histogram), keys)
    if rows:
        return histogram, {tuple(row[key] for key in keys): row["count"] for row in rows}
    counted = Counter(tuple(str(span.attributes.get(key) or "") for key in keys) for span in spans)
    return SOURCE_SPANS, dict(counted)


def scope_counts(telemetry: Telemetry) -> dict[str, Any]:
    """Every scope that ended by kind and outcome, with the durations measured for them.

    ``source`` says where the counts come from: ``scopewatch.scopes`` (exact),
    ``scopewatch.scope.duration`` (a 0.2 file: exact too) or ``spans`` (exported spans only).
    """
    keys = (semconv.SCOPE_KIND, semconv.SCOPE_OUTCOME)
    scopes = [span for span in telemetry.spans if is_scope(span) and _user_scope(span)]
    source, counts = _counts(
        telemetry, semconv.METRIC_SCOPES, semconv.METRIC_SCOPE_DURATION, keys, scopes
    )
    timed = {
        (row[semconv.SCOPE_KIND], row[semconv.SCOPE_OUTCOME]): row
        for row in histogram_rows(telemetry.points_of(semconv.METRIC_SCOPE_DURATION), keys)
    }
    rows: list[dict[str, Any]] = [
        {
            "scope_kind": key[0],
            "outcome": key[1],
            "count": count,
            "timed": timed[key]["count"] if key in timed else 0,
            "mean_s": timed[key]["mean_s"] if key in timed else None,
            "max_s": timed[key]["max_s"] if key in timed else None,
        }
        for key, count in counts.items()
        if count
    ]
    rows.sort(key=lambda row: (-int(row["count"]), str(row["scope_kind"]), str(row["outcome"])))
    return {"source": source, "source_text": SOURCES.get(source, source), "rows": rows}


def _user_scope(span: Span) -> bool:
    return not span.attributes.get(semconv.SCOPE_INTERNAL)


def _numbers(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "count": row["count"],
        "sum_s": row["sum_s"],
        "mean_s": row["mean_s"],
        "max_s": row["max_s"],
    }


def tasks(telemetry: Telemetry) -> dict[str, Any]:
    """Tasks that ended, task spans and ``scopewatch.task.duration``, each by outcome.

    ``counts_source`` says where ``by_outcome`` comes from, as in :func:`scope_counts`.
    """
    spans = [span for span in telemetry.spans if is_task(span)]
    by_outcome = Counter(str(span.attributes.get(semconv.TASK_OUTCOME) or "") for span in spans)
    durations = histogram_rows(
        telemetry.points_of(semconv.METRIC_TASK_DURATION), (semconv.TASK_OUTCOME,)
    )
    source, counts = _counts(
        telemetry,
        semconv.METRIC_TASKS,
        semconv.METRIC_TASK_DURATION,
        (semconv.TASK_OUTCOME,),
        spans,
    )
    ordered = sorted(((key[0], n) for key, n in counts.items() if n), key=lambda kv: -kv[1])
    return {
        "counts_source": source,
        "counts_source_text": SOURCES.get(source, source),
        "by_outcome": dict(ordered),
        "spans": len(spans),
        "spans_by_outcome": dict(by_outcome.most_common()),
        "durations": [{"outcome": row[semconv.TASK_OUTCOME], **_numbers(row)} for row in durations],
    }


def locks(telemetry: Telemetry) -> list[dict[str, Any]]:
    """Every lock seen by the lock metrics, most contended first."""
    keys = (semconv.LOCK_KIND, semconv.LOCK_NAME)
    contentions = sum_rows(telemetry.points_of(semconv.METRIC_LOCK_CONTENTIONS), keys)
    waits = histogram_rows(
        telemetry.points_of(semconv.METRIC_LOCK_WAIT_DURATION), (*keys, semconv.LOCK_OUTCOME)
    )
    holds = histogram_rows(telemetry.points_of(semconv.METRIC_LOCK_HOLD_DURATION), keys)
    found: dict[tuple[str, ...], dict[str, Any]] = {}

    def entry(key: tuple[str, ...]) -> dict[str, Any]:
        item = found.get(key)
        if item is None:
            item = found[key] = {
                "kind": key[0],
                "name": key[1],
                "contentions": 0,
                "acquisitions": 0,
                "wait_sum_s": 0.0,
                "wait_max_s": None,
                "wait_by_outcome": {},
                "hold_count": 0,
                "hold_sum_s": 0.0,
                "hold_max_s": None,
            }
        return item

    for key, value in contentions.items():
        entry(key)["contentions"] += int(value)
    for row in waits:
        item = entry((row[semconv.LOCK_KIND], row[semconv.LOCK_NAME]))
        item["acquisitions"] += row["count"]
        item["wait_sum_s"] += row["sum_s"]
        item["wait_max_s"] = _max(item["wait_max_s"], row["max_s"])
        outcome = row[semconv.LOCK_OUTCOME] or "unknown"
        item["wait_by_outcome"][outcome] = item["wait_by_outcome"].get(outcome, 0) + row["count"]
    for row in holds:
        item = entry((row[semconv.LOCK_KIND], row[semconv.LOCK_NAME]))
        item["hold_count"] += row["count"]
        item["hold_sum_s"] += row["sum_s"]
        item["hold_max_s"] = _max(item["hold_max_s"], row["max_s"])
    return sorted(found.values(), key=lambda item: (-item["contentions"], -item["wait_sum_s"]))


def _max(first: float | None, second: float | None) -> float | None:
    if first is None:
        return second
    if second is None:
        return first
    return max(first, second)


def _descendants(spans: list[Span], root: Span) -> list[Span]:
    children: dict[str, list[Span]] = {}
    for span in spans:
        if span.trace_id == root.trace_id and span.parent_span_id:
            children.setdefault(span.parent_span_id, []).append(span)
    found: list[Span] = []
    pending = [root.span_id]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child.span_id)
    return found


def sessions(telemetry: Telemetry, violations: list[dict[str, Any]]) -> dict[str, Any]:
    """Session spans with their outcome and the violations that concern them, plus metrics.

    ``violations`` is the report's list (each violation once); a session counts its own, those
    of the spans inside it and those its reference events name.
    """
    spans = telemetry.spans
    per_span = Counter(item["span"]["span_id"] for item in violations)
    items = []
    for span in spans:
        if not is_session(span):
            continue
        kind = str(
            span.attributes.get(semconv.SESSION_KIND)
            or span.name.removeprefix(semconv.SPAN_SESSION_PREFIX)
        )
        # its own, those of spans inside it and those it references, each violation once
        concerned = {child.span_id for child in _descendants(spans, span)}
        concerned |= referenced_span_ids(span)
        concerned.add(span.span_id)
        inside = sum(per_span[span_id] for span_id in concerned)
        items.append(
            {
                **span_ref(span),
                "kind": kind,
                "session_name": str(span.attributes.get(semconv.SESSION_NAME) or ""),
                "session_id": str(span.attributes.get(semconv.SESSION_ID) or ""),
                "outcome": str(span.attributes.get(semconv.SESSION_OUTCOME) or ""),
                "violations": inside,
            }
        )
    items.sort(key=lambda item: item["start_unix_nano"])
    durations = histogram_rows(
        telemetry.points_of(semconv.METRIC_SESSION_DURATION),
        (semconv.SESSION_KIND, semconv.SESSION_OUTCOME),
    )
    active = sum_rows(telemetry.points_of(semconv.METRIC_SESSION_ACTIVE), (semconv.SESSION_KIND,))
    return {
        "spans": items,
        "by_kind": [
            {
                "kind": row[semconv.SESSION_KIND],
                "outcome": row[semconv.SESSION_OUTCOME],
                **_numbers(row),
            }
            for row in durations
        ],
        "active_at_end": {key[0]: int(value) for key, value in active.items()},
    }


def alerts(telemetry: Telemetry) -> list[dict[str, Any]]:
    """``scopewatch.alerts`` by rule and action."""
    totals = sum_rows(
        telemetry.points_of(semconv.METRIC_ALERTS), (semconv.ALERT_RULE, semconv.ALERT_ACTION)
    )
    return [
        {"rule": key[0], "action": key[1], "count": int(value)}
        for key, value in sorted(totals.items(), key=lambda item: -item[1])
    ]


def violation_counts(telemetry: Telemetry) -> list[dict[str, Any]]:
    """``scopewatch.violations`` by kind, cause and scope kind (counts every violation)."""
    totals = sum_rows(
        telemetry.points_of(semconv.METRIC_VIOLATIONS),
        (semconv.VIOLATION_KIND, semconv.VIOLATION_CAUSE, semconv.SCOPE_KIND),
    )
    return [
        {"kind": key[0], "cause": key[1], "scope_kind": key[2], "count": int(value)}
        for key, value in sorted(totals.items(), key=lambda item: -item[1])
    ]
