"""``scopewatch run`` end to end: the real launcher, the local file, the report, pass-through."""

from __future__ import annotations

import fcntl
import http.server
import json
import os
import re
import select
import signal
import subprocess
import sys
import termios
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from scopewatch.commands import run as run_command
from scopewatch.report import load

SCOPEWATCH = [sys.executable, "-m", "scopewatch.cli"]

PROGRAM = textwrap.dedent(
    """\
    import asyncio, sys
    import anyio

    async def main():
        with anyio.move_on_after(0.01):
            await anyio.sleep(1)
        data = sys.stdin.read()
        print("out:" + data.strip())
        print("err line", file=sys.stderr)

    asyncio.run(main())
    sys.exit(3)
    """
)

HANGS = textwrap.dedent(
    """\
    import asyncio
    import anyio

    async def main():
        with anyio.CancelScope():
            try:
                print("ready", flush=True)  # inside: on 3.10 SIGINT may interrupt any line
                await asyncio.sleep(60)
            finally:
                print("cleanup ran", flush=True)

    asyncio.run(main())
    """
)


def clean_environ(**extra: str) -> dict[str, str]:
    """The test's environment without OTEL_* / SCOPEWATCH_OUTPUT a developer may have set."""
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("OTEL_") and key not in ("SCOPEWATCH_OUTPUT", "NO_COLOR")
    }
    environ.update(extra)
    return environ


def write(tmp_path: Path, name: str, source: str) -> Path:
    path = tmp_path / name
    path.write_text(source)
    return path


def test_exit_status_stdout_stderr_stdin_pass_through(tmp_path: Path) -> None:
    program = write(tmp_path, "app.py", PROGRAM)
    output = tmp_path / "telemetry.jsonl"
    result = subprocess.run(
        [*SCOPEWATCH, "run", "-o", str(output), "--", "python", str(program)],
        input="hello",
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=clean_environ(),
        timeout=120,
    )
    assert result.returncode == 3
    assert result.stdout == "out:hello\n"  # nothing of ours on stdout
    assert result.stderr.startswith("err line\n")
    assert "Cancellations (1: deadline 1)" in result.stderr
    assert "anyio.move_on_after at app.py:5" in result.stderr
    assert "scopewatch: 0 violations, 1 cancellation" in result.stderr
    assert f"scopewatch: telemetry in {output}" in result.stderr
    spans = load([str(output)]).spans
    assert [span.name for span in spans] == ["anyio.move_on_after"]
    assert spans[0].attributes["code.file.path"] == str(program)


def test_py_file_runs_with_this_python_and_default_output(tmp_path: Path) -> None:
    write(tmp_path, "ok.py", "import sys; print(sys.executable)\n")
    result = subprocess.run(
        [*SCOPEWATCH, "run", "--no-report", "ok.py"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=clean_environ(),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == sys.executable
    assert result.stderr == ""
    files = list(tmp_path.glob("scopewatch-*.jsonl"))
    assert len(files) == 1  # scopewatch-<pid>.jsonl of the run


def test_spans_setting_and_json_report_file(tmp_path: Path) -> None:
    program = write(tmp_path, "app.py", PROGRAM)
    report = tmp_path / "report.json"
    result = subprocess.run(
        [
            *SCOPEWATCH,
            *("run", "--spans", "all", "--format", "json", "--report-file", str(report)),
            *("-o", str(tmp_path / "t.jsonl"), "--", "python", str(program)),
        ],
        input="",
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=clean_environ(),
        timeout=120,
    )
    assert result.returncode == 3
    assert f"scopewatch: report written to {report}" in result.stderr
    data = json.loads(report.read_text())
    assert data["schema"] == "scopewatch.report/1"
    assert data["summary"]["cancellations"] == 1


def test_html_report_goes_next_to_the_telemetry(tmp_path: Path) -> None:
    program = write(tmp_path, "app.py", PROGRAM)
    result = subprocess.run(
        [
            *SCOPEWATCH,
            "run",
            "--format",
            "html",
            "-o",
            str(tmp_path / "t.jsonl"),
            "--",
            "python",
            str(program),
        ],
        input="",
        capture_output=True,
        text=True,
        env=clean_environ(),
        timeout=120,
    )
    assert result.returncode == 3
    assert f"scopewatch: report written to {tmp_path / 't.html'}" in result.stderr
    assert "<html" not in result.stderr
    assert (tmp_path / "t.html").read_text().startswith("<!doctype html>")


class _Collector(http.server.BaseHTTPRequestHandler):
    received: list[ExportTraceServiceRequest] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/v1/traces":
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            self.received.append(request)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_telemetry_also_goes_to_the_configured_collector(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        program = write(tmp_path, "app.py", PROGRAM)
        output = tmp_path / "t.jsonl"
        environ = clean_environ(
            OTEL_TRACES_EXPORTER="otlp",
            OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{server.server_address[1]}",
            OTEL_METRICS_EXPORTER="none",
            OTEL_LOGS_EXPORTER="none",
        )
        result = subprocess.run(
            [*SCOPEWATCH, "run", "-o", str(output), "--", "python", str(program)],
            input="",
            capture_output=True,
            text=True,
            env=environ,
            timeout=120,
        )
    finally:
        server.shutdown()
    assert result.returncode == 3, result.stderr
    names = [
        span.name
        for request in _Collector.received
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]
    assert names == ["anyio.move_on_after"]
    assert [span.name for span in load([str(output)]).spans] == ["anyio.move_on_after"]


def interrupts(stderr: str) -> int:
    """How many KeyboardInterrupts ended in a traceback (the last line of each)."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", stderr)  # 3.13 colours tracebacks in a terminal
    return sum(1 for line in plain.splitlines() if line.startswith("KeyboardInterrupt"))


def _start_hanging(tmp_path: Path, **popen: Any) -> subprocess.Popen[str]:
    program = write(tmp_path, "hang.py", HANGS)
    return subprocess.Popen(
        [*SCOPEWATCH, "run", "-o", str(tmp_path / "t.jsonl"), "--", "python", str(program)],
        env=clean_environ(),
        text=True,
        **popen,
    )


@pytest.mark.parametrize("target", ["pid", "process group"])
def test_sigint_is_delivered_once_and_status_passes_through(tmp_path: Path, target: str) -> None:
    process = _start_hanging(
        tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "ready\n"
    if target == "pid":
        os.kill(process.pid, signal.SIGINT)
    else:
        os.killpg(process.pid, signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGINT  # like the program: killed by SIGINT
    assert stdout == "cleanup ran\n"
    assert interrupts(stderr) == 1  # delivered once: a second one would break the cleanup
    # the report still comes, from the file: the interrupted scope is an anomaly (cancelled from
    # outside, or on 3.10 possibly left by the KeyboardInterrupt itself: outcome error)
    assert re.search(r"^ +\S+ +anyio.CancelScope +(cancelled|error) ", stderr, re.MULTILINE)
    assert "scopewatch: 0 violations, " in stderr


def test_sigterm_is_forwarded(tmp_path: Path) -> None:
    process = _start_hanging(
        tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "ready\n"
    process.terminate()
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGTERM
    assert "Traceback" not in stderr  # SIGTERM kills Python without cleanup or report data
    assert "scopewatch:" in stderr


def test_ctrl_c_in_a_terminal_reaches_the_program_once(tmp_path: Path) -> None:
    master, slave = os.openpty()

    def controlling_terminal() -> None:
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

    process = _start_hanging(
        tmp_path,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        preexec_fn=controlling_terminal,
    )
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 60
    while b"ready" not in seen and time.monotonic() < deadline:
        if select.select([master], [], [], 0.5)[0]:
            seen += os.read(master, 65536)
    os.write(master, b"\x03")  # the terminal sends SIGINT to its foreground process group
    while True:
        if select.select([master], [], [], 0.5)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every process holding the terminal has exited
                break
            if not chunk:
                break
            seen += chunk
        elif process.poll() is not None:
            break
    os.close(master)
    assert process.wait(timeout=60) == -signal.SIGINT
    text = seen.decode(errors="replace")
    assert text.count("cleanup ran") == 1
    assert interrupts(text) == 1
    assert "\x1b[" in text  # a terminal: the report is in colour
    assert "anyio.CancelScope" in text
    assert "0 violations, " in text


def test_missing_command_and_unknown_command(tmp_path: Path) -> None:
    missing = subprocess.run(
        [*SCOPEWATCH, "run"], capture_output=True, text=True, env=clean_environ(), timeout=60
    )
    assert missing.returncode == 2
    assert missing.stderr == (
        "scopewatch run: no command given; e.g. scopewatch run -- python app.py\n"
    )
    unknown = subprocess.run(
        [*SCOPEWATCH, "run", "--", "no-such-program-xyz"],
        capture_output=True,
        text=True,
        env=clean_environ(),
        timeout=60,
    )
    assert unknown.returncode == 127
    assert unknown.stderr == "scopewatch run: command not found: no-such-program-xyz\n"
    option = subprocess.run(
        [*SCOPEWATCH, "run", "--bogus", "--", "python", "x.py"],
        capture_output=True,
        text=True,
        env=clean_environ(),
        timeout=60,
    )
    assert option.returncode == 2
    assert option.stderr.count("\n") == 1
    assert "unrecognized arguments: --bogus" in option.stderr


def test_help_has_examples() -> None:
    result = subprocess.run(
        [*SCOPEWATCH, "run", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert "scopewatch run -- python app.py" in result.stdout
    assert "exit status" in result.stdout


def test_missing_distro_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.metadata

    real = importlib.metadata.entry_points

    def without_configurators(**params: Any) -> Any:
        if params.get("group") == "opentelemetry_configurator":
            return []
        return real(**params)

    monkeypatch.setattr(importlib.metadata, "entry_points", without_configurators)
    args = run_command_args()
    assert run_command.execute(args, ["python", "x.py"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "scopewatch run needs opentelemetry-distro (it configures the SDK for "
        "opentelemetry-instrument); install it: pip install 'scopewatch[cli]'\n"
    )


def run_command_args() -> Any:
    from scopewatch.cli import build_parser

    return build_parser().parse_args(["run", "--", "python", "x.py"])


@pytest.mark.parametrize(
    ("environ", "traces", "metrics", "logs"),
    [
        ({}, "scopewatch_file", "scopewatch_file", "none"),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, "otlp,scopewatch_file", "scopewatch_file", None),
        (
            {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "otlp,scopewatch_file"},
            "scopewatch_file",
            "otlp,scopewatch_file",
            None,
        ),
        ({"OTEL_LOGS_EXPORTER": "console"}, "scopewatch_file", "scopewatch_file", "console"),
    ],
)
def test_environment_adds_the_file_exporter(
    environ: dict[str, str], traces: str, metrics: str, logs: str | None
) -> None:
    prepared = run_command.prepare_environment(dict(environ), "/tmp/x.jsonl", "all")
    assert prepared["OTEL_TRACES_EXPORTER"] == traces
    assert prepared["OTEL_METRICS_EXPORTER"] == metrics
    assert prepared.get("OTEL_LOGS_EXPORTER") == logs
    assert prepared["SCOPEWATCH_OUTPUT"] == "/tmp/x.jsonl"
    assert prepared["OTEL_PYTHON_SCOPEWATCH_SPANS"] == "all"


def test_python_and_scripts_mean_this_interpreter() -> None:
    assert run_command.resolve_command(["--", "app.py", "-v"]) == [sys.executable, "app.py", "-v"]
    assert run_command.resolve_command(["python3", "-m", "x"]) == [sys.executable, "-m", "x"]
    assert run_command.resolve_command(["/usr/bin/env", "true"]) == ["/usr/bin/env", "true"]
