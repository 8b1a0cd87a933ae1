"""``scopewatch demo``: the bundled service ends by itself, exits 0, its report shows the bugs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from scopewatch import semconv
from scopewatch.commands import demo
from tests.support.paths import ROOT

SCOPEWATCH = [sys.executable, "-m", "scopewatch.cli"]


def clean_environ() -> dict[str, str]:
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("OTEL_") and key not in ("SCOPEWATCH_OUTPUT", "NO_COLOR")
    }


def test_demo_runs_and_reports_every_bug(tmp_path: Path) -> None:
    report = tmp_path / "demo.json"
    result = subprocess.run(
        [*SCOPEWATCH, "demo", "--format", "json", "--report-file", str(report)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=clean_environ(),
        timeout=60,  # it needs no server and ends by itself
    )
    assert result.returncode == 0, result.stderr
    assert "demo: done" in result.stdout.splitlines()
    assert "Traceback" not in result.stdout + result.stderr
    data = json.loads(report.read_text())
    found = {(v["kind"], v["cause"], v["enter"]["task"]) for v in data["violations"]}
    expected = {
        (semconv.KIND_CROSS_TASK_EXIT, semconv.CAUSE_ASYNCGEN_FINALIZER, "ticker-reader"),
        (semconv.KIND_CROSS_TASK_EXIT, semconv.CAUSE_OTHER_TASK, "client-connect"),
        (semconv.KIND_NON_LIFO_EXIT, semconv.CAUSE_EXIT_ORDER, "Task-1"),
    }
    if sys.version_info >= (3, 11):
        expected.add((semconv.KIND_CROSS_TASK_EXIT, semconv.CAUSE_OTHER_TASK, "request-handler"))
    assert expected <= found
    swallowed = [v for v in data["violations"] if v["kind"] == semconv.KIND_CANCEL_SWALLOWED]
    if sys.version_info >= (3, 11):  # Task.cancelling() tells a swallowed cancellation
        assert [v["enter"]["task"] for v in swallowed] == ["stubborn-worker"]
    # the example's own frames are shown (it runs as a script of its own, not as library code)
    locations = [v["enter"]["location"] for v in data["violations"]]
    assert all(os.path.basename(where).startswith("demo_service.py:") for where in locations)
    # healthy traffic next to the bugs
    assert data["cancellations"]["by_origin"]["deadline"] == 3
    # explicit cancels in the demo are normal shutdowns: counted, not exported (0.3)
    assert "explicit" not in data["cancellations"]["by_origin"]
    assert data["locks"][0]["contentions"] >= 1
    (slow,) = [s for s in data["slowest_scopes"] if s["function"].endswith("slow_report")]
    assert slow["duration_s"] >= 0.15  # above the demo's 0.1 s threshold: a span
    # the telemetry file is kept for `scopewatch report`
    telemetry = Path(data["files"][0])
    assert telemetry.exists()
    telemetry.unlink()


def test_demo_text_report_by_default(tmp_path: Path) -> None:
    result = subprocess.run(
        [*SCOPEWATCH, "demo", "-o", str(tmp_path / "t.jsonl")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=clean_environ(),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    # The demo's ticker yields inside a task group: the shape-chosen hint, not safe_aiter.
    assert "fix: a generator that yields inside a task group cannot be closed" in result.stderr
    assert result.stderr.splitlines()[-2].startswith("scopewatch: ")
    assert " violations (" in result.stderr.splitlines()[-2]


def test_show_source_and_the_repository_copy() -> None:
    result = subprocess.run(
        [*SCOPEWATCH, "demo", "--show-source"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert result.stdout == demo.source()
    assert (ROOT / "examples" / "demo_service.py").read_text() == demo.source()
