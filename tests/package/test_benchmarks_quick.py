"""The benchmark runner still works (``--quick``); no timing is asserted, only the shape."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.paths import ROOT


def test_quick_scopes_run_writes_json_and_markdown(tmp_path: Path) -> None:
    output = tmp_path / "latest.json"
    markdown = tmp_path / "RESULTS.md"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_PYTHON_")}
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--only",
            "scopes",
            "--json",
            str(output),
            "--markdown",
            str(markdown),
        ],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert process.returncode == 0, process.stderr
    assert "anyio.move_on_after anomalies/bare" in process.stdout

    payload = json.loads(output.read_text())
    assert set(payload) == {"machine", "quick", "results"}
    assert payload["quick"] is True
    machine = payload["machine"]
    for key in ("cpu", "cores", "python", "packages", "span_processor", "timer"):
        assert key in machine
    assert "anyio" in machine["packages"]

    (result,) = payload["results"]
    assert result["name"] == "scopes"
    assert set(result) >= {"figures", "raw", "notes"}
    names = {figure["name"] for figure in result["figures"]}
    assert "anyio.move_on_after anomalies/bare" in names
    assert "anyio.move_on_after all/(bare+1.25 span)" in names
    assert "one bare SDK span (start+end)" in names
    for figure in result["figures"]:
        assert set(figure) >= {"name", "value", "unit", "target", "status"}
        assert figure["status"] in {"PASS", "MISS", "INFO", "N/A"}
    headline = next(f for f in result["figures"] if f["name"].startswith("anyio.move_on_after"))
    assert headline["target"] == "<= 1.3"
    assert isinstance(headline["value"], float)
    assert set(result["raw"]["median_ns"]["anyio.move_on_after"]) == {
        "bare",
        "anomalies",
        "all",
        "manual",
    }
    assert "| benchmark | figure | value | target | status |" in markdown.read_text()


def test_unknown_benchmark_is_one_clear_line() -> None:
    process = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--only", "nope"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert process.returncode == 2
    assert "unknown benchmark 'nope'" in process.stderr
    assert "scopes" in process.stderr


def test_a_missed_target_is_information_not_a_failure() -> None:
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks import common
    finally:
        sys.path.remove(str(ROOT))
    assert common.figure("x", 1.2, "<= 1.3")["status"] == "PASS"
    assert common.figure("x", 1.4, "<= 1.3")["status"] == "MISS"
    assert common.figure("x", 0.9, ">= 0.95")["status"] == "MISS"
    assert common.figure("x", None, ">= 0.95")["status"] == "N/A"
    assert common.figure("x", 3.0)["status"] == "INFO"
    table = common.format_table([common.result("b", [common.figure("x", 1.4, "<= 1.3")])])
    assert "1.40x" in table
    assert "MISS" in table


def test_quick_web_stack_run_prints_the_targets_table(tmp_path: Path) -> None:
    """The real web stack runs end to end in quick mode: a uvicorn server per variant under
    opentelemetry-instrument, a separate load process, spans arriving at the OTLP receiver."""
    output = tmp_path / "latest.json"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    process = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "web", "--json", str(output)],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert process.returncode == 0, process.stderr
    assert "target (issue 15)" in process.stdout
    assert "web stack (Starlette + uvicorn), default / scopewatch disabled" in process.stdout

    (result,) = json.loads(output.read_text())["results"]
    assert result["name"] == "web"
    figures = {figure["name"]: figure for figure in result["figures"]}
    assert figures["throughput default/disabled"]["target"] == ">= 0.95"
    assert figures["throughput all/manual"]["target"] == ">= 0.9"
    assert isinstance(figures["throughput default/disabled"]["value"], float)
    medians = result["raw"]["medians"]
    assert set(medians) == {"disabled", "default", "all", "manual"}
    for variant in medians.values():
        assert variant["requests"] > 0
    # Disabled scopewatch exports nothing; hand-made spans and SPANS=all reach the receiver.
    assert medians["disabled"]["spans_per_request"] == 0
    assert medians["manual"]["spans_per_request"] > 1
    assert medians["all"]["spans_per_request"] > 1
