"""``scopewatch report``: where scope and task counts come from, and what "Slowest scopes" shows.

Counts come from the ``scopewatch.scopes`` / ``scopewatch.tasks`` counters (exact, every scope
and task that ended, exported or not); a file without them (as 0.2 wrote) falls back to the
duration histograms' counts, and a file without metrics to counting exported spans. Each
report says which source it used. Telemetry comes from a real program under the real SDK,
written by the real file exporters; the older shapes are the same file with the newer metrics
(or all metrics) taken out.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio

from scopewatch import semconv
from scopewatch.export import FileMetricExporter, FileSpanExporter

SCOPEWATCH = [sys.executable, "-m", "scopewatch.cli"]
HERE = __file__
MOVE_ON = semconv.SPAN_ANYIO_MOVE_ON_AFTER


async def program() -> None:
    async def quick() -> None:
        await asyncio.sleep(0)

    for _ in range(5):
        with anyio.move_on_after(5):
            await asyncio.sleep(0)
    with anyio.move_on_after(0.005):
        await asyncio.sleep(1)
    await asyncio.gather(*(asyncio.create_task(quick()) for _ in range(3)))
    async with anyio.create_task_group() as group:  # a normal shutdown, long
        group.start_soon(anyio.sleep, 10)
        await anyio.sleep(0.08)
        group.cancel_scope.cancel()
    with anyio.CancelScope():  # shorter than the shutdown, but an anomaly: slow
        await anyio.sleep(0.06)


def _telemetry_file(instrument: Any, path: Path, spans: str) -> Path:
    telemetry = instrument(spans=spans, slow_threshold=0.05)
    asyncio.run(program())
    telemetry.uninstrument()
    FileSpanExporter(str(path)).export(telemetry.spans())
    data = telemetry.reader.get_metrics_data()
    assert data is not None
    FileMetricExporter(str(path)).export(data)
    return path


def _without(path: Path, metrics: set[str] | None, out: Path) -> Path:
    """``path`` with the named metrics (``None``: every metric line) taken out."""
    lines = []
    for line in path.read_text().splitlines():
        document = json.loads(line)
        if "resourceMetrics" in document:
            if metrics is None:
                continue
            for resource in document["resourceMetrics"]:
                for scope in resource["scopeMetrics"]:
                    scope["metrics"] = [m for m in scope["metrics"] if m["name"] not in metrics]
        lines.append(json.dumps(document))
    out.write_text("\n".join(lines) + "\n")
    return out


def _report(path: Path, *args: str) -> str:
    result = subprocess.run(
        [*SCOPEWATCH, "report", *args, str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _counts(data: dict[str, Any]) -> dict[tuple[str, str], int]:
    return {(r["scope_kind"], r["outcome"]): r["count"] for r in data["scope_counts"]["rows"]}


def test_counts_come_from_the_counters(instrument: Any, tmp_path: Path) -> None:
    path = _telemetry_file(instrument, tmp_path / "t.jsonl", "anomalies")
    data = json.loads(_report(path, "--format", "json"))
    assert data["scope_counts"]["source"] == semconv.METRIC_SCOPES
    counts = _counts(data)
    # every scope, also the five that were not exported as spans
    assert counts[(MOVE_ON, semconv.OUTCOME_OK)] == 5
    assert counts[(MOVE_ON, semconv.OUTCOME_DEADLINE_EXCEEDED)] == 1
    assert counts[(semconv.SPAN_ANYIO_TASK_GROUP, semconv.OUTCOME_CANCELLED)] == 1
    exported = [
        s for s in data["slowest_scopes"] if (s["scope_kind"], s["outcome"]) == (MOVE_ON, "ok")
    ]
    assert exported == []
    tasks = data["tasks"]
    assert tasks["counts_source"] == semconv.METRIC_TASKS
    assert tasks["by_outcome"][semconv.OUTCOME_OK] >= 3  # the three quick ones, at least
    text = _report(path, "--color", "never")
    assert (
        "Scopes by kind and outcome (every scope that ended, from the scopewatch.scopes metric)"
    ) in text
    assert "Tasks by outcome (every task that ended, from the scopewatch.tasks metric)" in text
    row = next(line for line in text.splitlines() if MOVE_ON in line and " ok " in line)
    assert row.split()[:3] == [MOVE_ON, semconv.OUTCOME_OK, "5"]  # none of the five timed


def test_a_file_without_the_counters_uses_the_histograms(instrument: Any, tmp_path: Path) -> None:
    new = _telemetry_file(instrument, tmp_path / "t.jsonl", "anomalies")
    full = json.loads(_report(new, "--format", "json"))
    old = _without(new, {semconv.METRIC_SCOPES, semconv.METRIC_TASKS}, tmp_path / "old.jsonl")
    data = json.loads(_report(old, "--format", "json"))
    assert data["scope_counts"]["source"] == semconv.METRIC_SCOPE_DURATION
    assert data["tasks"]["counts_source"] == semconv.METRIC_TASK_DURATION
    timed = {(r["scope_kind"], r["outcome"]): r["timed"] for r in full["scope_counts"]["rows"]}
    assert _counts(data) == {key: n for key, n in timed.items() if n}
    text = _report(old, "--color", "never")
    assert "from scopewatch.scope.duration (a file without scopewatch.scopes, as 0.2 wrote)" in text


def test_a_file_without_metrics_counts_spans(instrument: Any, tmp_path: Path) -> None:
    new = _telemetry_file(instrument, tmp_path / "t.jsonl", "all")
    spans_only = _without(new, None, tmp_path / "spans.jsonl")
    data = json.loads(_report(spans_only, "--format", "json"))
    assert data["scope_counts"]["source"] == "spans"
    assert data["tasks"]["counts_source"] == "spans"
    assert _counts(data)[(MOVE_ON, semconv.OUTCOME_OK)] == 5  # all mode exported every scope
    text = _report(spans_only, "--color", "never")
    assert "counted from exported spans only: the files have no scopewatch metrics" in text


def test_slowest_scopes_leave_out_normal_shutdowns(instrument: Any, tmp_path: Path) -> None:
    path = _telemetry_file(instrument, tmp_path / "t.jsonl", "all")
    data = json.loads(_report(path, "--format", "json"))
    slowest = data["slowest_scopes"]
    assert slowest, "the slow CancelScope is an anomaly and is listed"
    assert slowest[0]["scope_kind"] == semconv.SPAN_ANYIO_CANCEL_SCOPE
    assert all(
        not (s["outcome"] == semconv.OUTCOME_CANCELLED and s["cancel_origin"] == "explicit")
        for s in slowest
    )
    # still counted and still among the cancellations, with its place
    assert _counts(data)[(semconv.SPAN_ANYIO_TASK_GROUP, semconv.OUTCOME_CANCELLED)] == 1
    assert data["cancellations"]["by_origin"]["explicit"] >= 1
