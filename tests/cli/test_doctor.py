"""``scopewatch doctor``: versions, entry points, configuration problems, OTLP reachability."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from typing import Any

import pytest

from scopewatch.commands import doctor

SCOPEWATCH = [sys.executable, "-m", "scopewatch.cli"]


def run_doctor(*args: str, **environ: str) -> subprocess.CompletedProcess[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("OTEL_") and key != "SCOPEWATCH_OUTPUT"
    }
    env.update(environ)
    return subprocess.run(
        [*SCOPEWATCH, "doctor", *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_healthy_installation() -> None:
    result = run_doctor()
    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    assert f"INFO Python {platform.python_version()} " in result.stdout
    for distribution, label in (
        ("anyio", "anyio"),
        ("opentelemetry-api", "OpenTelemetry API"),
        ("opentelemetry-sdk", "OpenTelemetry SDK"),
        ("debugpy", "debugpy"),
    ):
        assert f"INFO {label} {importlib.metadata.version(distribution)}" in lines
    for group, name in (
        ("opentelemetry_instrumentor", "scopewatch"),
        ("opentelemetry_environment_variables", "scopewatch"),
        ("opentelemetry_traces_exporter", "scopewatch_file"),
        ("opentelemetry_metrics_exporter", "scopewatch_file"),
    ):
        assert any(line.startswith(f"OK   entry point {group}:{name} -> ") for line in lines)
    # the dev environment has opentelemetry-instrumentation-asyncio: explained, not a failure
    assert f"WARN {doctor.ASYNCIO_INSTRUMENTATION}" in lines
    assert "INFO settings: instrument=locks,scopes,sessions,tasks spans=anomalies" in result.stdout
    assert "INFO no OTLP endpoint configured" in result.stdout
    assert lines[-1] == "scopewatch doctor: nothing to fix"


def test_every_invalid_setting_is_explained() -> None:
    result = run_doctor(
        OTEL_PYTHON_SCOPEWATCH_SPANS="everything", OTEL_PYTHON_SCOPEWATCH_SLOW_THRESHOLD="-1"
    )
    assert result.returncode == 1
    fixes = [line for line in result.stdout.splitlines() if line.startswith("FIX ")]
    assert fixes == [
        "FIX  OTEL_PYTHON_SCOPEWATCH_SPANS='everything' is invalid; accepted: one of all, "
        "anomalies, none; using the default 'anomalies'",
        "FIX  OTEL_PYTHON_SCOPEWATCH_SLOW_THRESHOLD='-1' is invalid; accepted: a number >= 0; "
        "using the default 1.0",
    ]
    assert result.stdout.splitlines()[-1] == "scopewatch doctor: 2 problems to fix"


def test_reachable_endpoint() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        result = run_doctor(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}")
    assert result.returncode == 0, result.stdout
    assert (
        f"OK   OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:{port} is reachable "
        f"(127.0.0.1:{port})" in result.stdout
    )


def test_unreachable_traces_endpoint_takes_precedence() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again below: nothing listens there
    result = run_doctor(
        "--timeout",
        "0.5",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"http://127.0.0.1:{port}/v1/traces",
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:1",
    )
    assert result.returncode == 1
    (fix,) = [line for line in result.stdout.splitlines() if line.startswith("FIX ")]
    assert fix.startswith(
        f"FIX  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://127.0.0.1:{port}/v1/traces is not "
        f"reachable (127.0.0.1:{port}: "
    )


def test_bad_endpoint_value() -> None:
    findings = doctor.endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://:99999"}, 0.1)
    assert [f.level for f in findings] == ["fix"]
    assert "OTEL_EXPORTER_OTLP_ENDPOINT='http://:99999'" in findings[0].text


def test_missing_entry_point_needs_fixing(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.metadata.entry_points

    def without_exporters(**params: Any) -> Any:
        if params.get("group") == "opentelemetry_traces_exporter":
            return []
        return real(**params)

    monkeypatch.setattr(doctor.metadata, "entry_points", without_exporters)
    findings = {f.text: f.level for f in doctor.entry_points()}
    missing = [text for text, level in findings.items() if level == "fix"]
    assert len(missing) == 1
    assert missing[0].startswith(
        "entry point opentelemetry_traces_exporter:scopewatch_file is not registered"
    )


def test_scopewatch_disabled_is_pointed_out() -> None:
    findings = doctor.configuration({"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "asyncio,scopewatch"})
    assert any(f.level == "warn" and "turns scopewatch off" in f.text for f in findings)


def test_help_and_unknown_option() -> None:
    help_text = subprocess.run(
        [*SCOPEWATCH, "doctor", "--help"], capture_output=True, text=True, timeout=60
    )
    assert help_text.returncode == 0
    assert "OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 scopewatch doctor" in help_text.stdout
    bad = run_doctor("--colour")
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1
    assert "unrecognized arguments: --colour" in bad.stderr
