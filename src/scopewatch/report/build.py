"""Assemble the whole report dict from the sections."""

from __future__ import annotations

import os
from collections import Counter
from typing import TYPE_CHECKING, Any

from scopewatch.report import analyze, usage
from scopewatch.version import __version__

if TYPE_CHECKING:
    from scopewatch.report.model import Telemetry


def build_report(telemetry: Telemetry) -> dict[str, Any]:
    """The report of DESIGN-named telemetry in ``telemetry`` (stable keys, see docs/report.md)."""
    spans = telemetry.spans
    violations = analyze.violations(spans)
    cancellations = analyze.cancellations(spans)
    by_kind = Counter(item["kind"] for item in violations)
    summary = {
        "violations": len(violations),
        "violations_by_kind": dict(by_kind.most_common()),
        "cancellations": cancellations["total"],
        "spans": len(spans),
        "scope_spans": sum(1 for span in spans if analyze.is_scope(span)),
        "task_spans": sum(1 for span in spans if analyze.is_task(span)),
        "session_spans": sum(1 for span in spans if analyze.is_session(span)),
        "traces": len({span.trace_id for span in spans}),
        "processes": len({span.resource for span in spans}),
    }
    return {
        "schema": analyze.SCHEMA,
        "generator": f"scopewatch {__version__}",
        "files": [os.path.abspath(path) for path in telemetry.files],
        "summary": summary,
        "violations": violations,
        "cancellations": cancellations,
        "slowest_scopes": analyze.slowest_scopes(spans),
        "scope_durations": usage.scope_durations(telemetry),
        "tasks": usage.tasks(telemetry),
        "locks": usage.locks(telemetry),
        "sessions": usage.sessions(telemetry, violations),
        "alerts": usage.alerts(telemetry),
        "violation_counts": usage.violation_counts(telemetry),
        "scope_counts": usage.scope_counts(telemetry),
    }
