"""Security: what telemetry never holds, the debugpy listener's loopback rule, config as data.

1. A realistic instrumented app (asyncio + anyio: deadlines, a cross-task violation, a failed
   and a cancelled task, lock contention, a real MCP session) whose arguments, locals, return
   values and environment carry distinctive tokens is run in every span mode; the tokens must
   appear nowhere: exported spans (names, attributes, events, links, status, resource), metrics,
   the ``scopewatch_file`` OTLP/JSON lines, the ``scopewatch`` log, and ``scopewatch report``
   in text, JSON and HTML. A message the app itself gives to ``Task.cancel()`` *is* recorded
   (``scopewatch.cancel.reason``), and serves as the positive control that the search works.
2. The debugpy listener refuses every non-loopback spelling unless ``DEBUGPY_ALLOW_REMOTE``.
3. Config and rules paths are read as data (``alerts/test_hostile_rules.py`` runs ``.py`` files
   and ``!!python`` tags through ``instrument()``); here the source is checked for the calls
   that could execute user input.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import re
import subprocess
import sys
import tokenize
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from mcp import ClientSession
from mcp.server.mcpserver import MCPServer
from mcp.shared.memory import create_client_server_memory_streams
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from scopewatch import _safety
from scopewatch.alerts import debugger
from scopewatch.alerts.rules import Rule
from scopewatch.config import Settings, is_loopback, load_settings
from scopewatch.export import FileMetricExporter, FileSpanExporter
from tests.support.paths import ROOT

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from conftest import Telemetry

SRC = ROOT / "src" / "scopewatch"
RUN = uuid.uuid4().hex
SECRETS = {
    kind: f"SECRET-{kind}-{RUN}" for kind in ("ARG", "LOCAL", "RETURN", "ENV", "TOOL", "KWARG")
}
CANCEL_MESSAGE = f"CANCEL-MESSAGE-{RUN}"
"""The app's own Task.cancel() message: recorded on purpose (the positive control)."""


# --- the app ------------------------------------------------------------------------------


async def worker(token: str, key: str = "") -> str:
    secret_local = SECRETS["LOCAL"] + token[:0]
    with anyio.move_on_after(0.001):  # a deadline that expires
        await anyio.sleep(1)
    await asyncio.sleep(0)
    return SECRETS["RETURN"] + secret_local[:0] + key[:0]


async def failing(token: str) -> None:
    secret_local = SECRETS["LOCAL"]
    await asyncio.sleep(0)
    del secret_local
    raise LookupError("the app's failure")  # no argument or local in the message


async def sleeper(token: str) -> None:
    secret_local = [SECRETS["LOCAL"], token]
    await asyncio.sleep(10)
    del secret_local


async def ticks(token: str) -> AsyncIterator[int]:
    secret_local = {"k": SECRETS["LOCAL"], "t": token}
    with anyio.CancelScope():  # entered by one task, exited by another: a violation
        yield len(secret_local)
        yield 2


async def holder(lock: asyncio.Lock, token: str) -> None:
    async with lock:
        secret_local = token
        await asyncio.sleep(0.002)
        del secret_local


def mcp_server() -> MCPServer:
    server = MCPServer("echo")

    @server.tool()
    def echo(text: str) -> str:
        """Echo the text."""
        return text

    return server


async def mcp_session(token: str) -> str:
    lowlevel = mcp_server()._lowlevel_server
    async with create_client_server_memory_streams() as (client_streams, server_streams):
        async with anyio.create_task_group() as group:
            group.start_soon(
                lambda: lowlevel.run(
                    server_streams[0], server_streams[1], lowlevel.create_initialization_options()
                )
            )
            async with ClientSession(*client_streams) as session:
                await session.initialize()
                result = await session.call_tool("echo", {"text": token})
            group.cancel_scope.cancel()
    return str(result.content[0].text)


async def app() -> list[str]:
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: None)
    results = []
    async with anyio.create_task_group() as group:
        group.start_soon(worker, SECRETS["ARG"])
    results.append(await worker(SECRETS["ARG"], key=SECRETS["KWARG"]))
    with pytest.raises(LookupError):
        await asyncio.create_task(failing(SECRETS["ARG"]))
    task = asyncio.create_task(sleeper(SECRETS["ARG"]))
    await asyncio.sleep(0)
    task.cancel(CANCEL_MESSAGE)
    with pytest.raises(asyncio.CancelledError):
        await task
    if sys.version_info >= (3, 11):  # asyncio.timeout exists from 3.11
        try:
            async with asyncio.timeout(0.001):
                await sleeper(SECRETS["ARG"])
        except TimeoutError:
            pass
    generator = ticks(SECRETS["ARG"])
    await asyncio.ensure_future(generator.__anext__())
    with pytest.raises(RuntimeError):
        await asyncio.ensure_future(generator.aclose())
    lock = asyncio.Lock()
    await asyncio.gather(*(holder(lock, SECRETS["ARG"]) for _ in range(3)))
    results.append(await mcp_session(SECRETS["TOOL"]))
    return results


# --- where telemetry can end up -----------------------------------------------------------


def span_texts(telemetry: Telemetry) -> list[str]:
    texts = []
    for span in telemetry.spans():
        texts.append(span.to_json())  # name, attributes, events, links, status, resource
        texts.append(json.dumps(dict(span.resource.attributes), default=str))
    return texts


def report_texts(path: Path) -> list[str]:
    texts = []
    for fmt in ("text", "json", "html"):
        out = path.parent / f"report.{fmt}"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "scopewatch.cli",
                "report",
                "-f",
                fmt,
                "-o",
                str(out),
                str(path),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        texts += [out.read_text(), result.stdout, result.stderr]
    return texts


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(_safety, "_warned", set())
    yield


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("spans", ["all", "anomalies", "none"])
def test_no_argument_local_return_or_environment_value_is_recorded(
    spans: str,
    instrument: Callable[..., Telemetry],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("APP_API_TOKEN", SECRETS["ENV"])
    monkeypatch.setenv("OTEL_PYTHON_SCOPEWATCH_RULES", "everything: span glob * -> log")
    output = tmp_path / "scopewatch.jsonl"
    with caplog.at_level(logging.DEBUG, logger="scopewatch"):
        telemetry = instrument(spans=spans, slow_threshold=0)
        telemetry.tracer_provider.add_span_processor(
            SimpleSpanProcessor(FileSpanExporter(str(output)))
        )
        assert asyncio.run(app()) == [SECRETS["RETURN"], SECRETS["TOOL"]]
        metrics = telemetry.reader.get_metrics_data()
        assert metrics is not None
        FileMetricExporter(str(output)).export(metrics)
        telemetry.uninstrument()
    exported = span_texts(telemetry)
    logged = [record.getMessage() for record in caplog.records]
    haystack = "\n".join(
        [*exported, metrics.to_json(), output.read_text(), *logged, *report_texts(output)]
    )
    assert telemetry.violation_spans(), "the app's violation must be reported"
    assert len(telemetry.points("scopewatch.lock.wait.duration")) >= 1
    assert any("alert rule 'everything' fired" in line for line in logged)
    if spans != "none":  # the positive control: the app's own cancel message is recorded
        assert CANCEL_MESSAGE in "\n".join(exported)
        assert CANCEL_MESSAGE in output.read_text()
    for kind, token in SECRETS.items():
        assert token not in haystack, f"{kind} value leaked: ...{_around(haystack, token)}..."
    assert RUN not in haystack.replace(CANCEL_MESSAGE, "")


def _around(text: str, token: str) -> str:
    at = text.find(token)
    return text[max(0, at - 200) : at + 60]


# --- what the source does with frames, repr() and user input -------------------------------

FRAME_LOCALS_READERS = {
    # frames.local_of reads one named local of a library frame (anyio/asyncio/trio internals),
    # never the user's, to find a code object, a scope or a trio task's outcome; the value is
    # never formatted or recorded (a trio task's error gives the span status its type name).
    "_core/frames.py": "namespace = frame.f_locals",
}


def _source_lines() -> Iterator[tuple[str, int, str]]:
    for path in sorted(SRC.rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            code = line.split("#", 1)[0].strip()
            if code and not code.startswith(('"', "'")):
                yield str(path.relative_to(SRC)), number, code


def _attribute_reads(attribute: str) -> Iterator[tuple[str, str]]:
    """``(module, line)`` of every ``.attribute`` in the source's code (not strings, comments)."""
    for path in sorted(SRC.rglob("*.py")):
        lines = path.read_text().splitlines()
        with path.open("rb") as source:
            tokens = list(tokenize.tokenize(source.readline))
        for before, token in itertools.pairwise(tokens):
            if before.string == "." and token.type == tokenize.NAME and token.string == attribute:
                yield str(path.relative_to(SRC)), lines[token.start[0] - 1].strip()


def test_frame_locals_are_read_only_where_reviewed() -> None:
    found = set(_attribute_reads("f_locals"))
    assert {module for module, _ in found} == set(FRAME_LOCALS_READERS)
    for module, code in found:
        assert FRAME_LOCALS_READERS[module] in code


EXECUTES = re.compile(
    r"(?<![\w.])(eval|exec|compile|__import__)\(|\b(runpy|pickle|marshal|shelve)\b|"
    r"yaml\.(load|unsafe_load|full_load|load_all)\(|\bos\.(system|popen|exec\w*)\(|"
    r"\bsubprocess\b|import_module\(|spec_from_file_location|exec_module"
)
EXECUTES_ALLOWED = {
    # module -> why its uses never execute configuration (reviewed)
    "__init__.py": "import_module of the package's own lazy-export table (fixed names)",
    "instrumentation/features.py": "import_module of FEATURE_MODULES and scopewatch.alerts (fixed)",
    "alerts/debugger.py": "import_module('debugpy'), a fixed name",
}
"""Modules that run programs by design (``scopewatch run``/``demo``/``doctor``) are listed by
the test below with the reason; nothing in config or alert parsing may appear."""


def test_nothing_executes_configuration() -> None:
    """No eval/exec/unsafe YAML/dynamic import on user input anywhere in the package."""
    hits: dict[str, list[str]] = {}
    for module, number, code in _source_lines():
        if EXECUTES.search(code):
            hits.setdefault(module, []).append(f"{number}: {code}")
    by_design = {key for key in hits if key.startswith("commands/")}
    assert set(hits) - by_design - set(EXECUTES_ALLOWED) == set(), hits
    for module in ("config.py", "alerts/rules.py", "alerts/inline.py", "alerts/sources.py"):
        assert module not in hits
    assert "yaml.safe_load(" in (SRC / "config.py").read_text()


def test_yaml_python_tags_in_the_config_file_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    config = tmp_path / "scopewatch.yaml"
    config.write_text(
        "spans: all\n"
        f"rules: !!python/object/apply:os.system ['touch {marker}']\n"
        f"exclude: !!python/object/new:pathlib.Path ['{marker}']\n"
    )
    loaded = load_settings({}, {"OTEL_PYTHON_SCOPEWATCH_CONFIG_FILE": str(config)}, warn=False)
    assert loaded == Settings()
    assert "could not determine a constructor" in loaded.problems[0]
    assert not marker.exists()


# --- debugpy: loopback only unless explicitly allowed --------------------------------------

LOOPBACK = ["127.0.0.1", "127.8.0.1", "::1", "[::1]", "localhost", "LOCALHOST", "::ffff:127.0.0.1"]
NOT_LOOPBACK = [
    "0.0.0.0",
    "::",
    "[::]",
    "10.0.0.2",
    "192.168.1.10",
    "169.254.1.1",
    "example.org",
    "localhost.",
    "localhost.localdomain",
    "localhost.evil.com",
    "127.0.0.1.evil.com",
    "127.1",
    "2130706433",
    "0x7f000001",
    "0177.0.0.1",
    "0",
    "::ffff:10.0.0.1",
    "[127.0.0.1]",
    "127.0.0.1:80",
    "::1]",
    "[::1",
    "",
    "local host",
]


@pytest.mark.parametrize("host", LOOPBACK)
def test_loopback_spellings(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", NOT_LOOPBACK)
def test_everything_else_is_remote(host: str) -> None:
    assert not is_loopback(host)
    settings = load_settings({"debugpy_host": host}, {}, warn=False)
    assert not settings.debugpy_host_is_loopback() or settings.debugpy_host == "127.0.0.1"


def test_remote_spellings_are_mostly_valid_settings() -> None:
    assert len(VALID_REMOTE) == len(NOT_LOOPBACK) - 5  # "[127.0.0.1]", "::1]", "[::1", "", " "


def test_bracketed_ipv6_is_normalised_for_the_socket() -> None:
    assert load_settings({"debugpy_host": " [::1] "}, {}, warn=False).debugpy_host == "::1"
    assert load_settings({"debugpy_host": "[::]"}, {}, warn=False).debugpy_host == "::"


def finished_span() -> Any:
    provider = TracerProvider()
    span = provider.get_tracer("test").start_span("anyio.CancelScope")
    span.end()
    return span


VALID_REMOTE = [
    h for h in NOT_LOOPBACK if not load_settings({"debugpy_host": h}, {}, warn=False).problems
]
"""Hosts that are accepted as settings (the others fall back to the loopback default)."""


@pytest.mark.parametrize("host", VALID_REMOTE)
def test_the_action_refuses_remote_hosts_without_the_opt_in(
    host: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fresh = debugger.Listener()
    monkeypatch.setattr(debugger, "listener", fresh)
    settings = load_settings({"debugpy": True, "debugpy_host": host}, {}, warn=False)
    rule = Rule(name="r", actions=("debugpy",))
    with caplog.at_level(logging.WARNING, logger="scopewatch"):
        debugger.run(rule, finished_span(), settings)
    assert fresh.started is False and fresh.thread is None
    (record,) = caplog.records
    assert "refusing to open a debugpy listener" in record.getMessage()


APP = """
import asyncio, anyio, sys
from opentelemetry.sdk.trace import TracerProvider
from scopewatch import ScopeWatchInstrumentor

async def ticks():
    with anyio.CancelScope():
        yield 1
        yield 2

async def main():
    generator = ticks()
    await asyncio.ensure_future(generator.__anext__())
    try:
        await asyncio.ensure_future(generator.aclose())
    except RuntimeError:
        pass

ScopeWatchInstrumentor().instrument(tracer_provider=TracerProvider())
asyncio.run(main())
from scopewatch.alerts import debugger
listener = debugger.listener
if listener.started:
    listener.ready.wait(60)
print("started", listener.started, "available", listener.available, flush=True)
"""


def run_app(tmp_path: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_PYTHON_SCOPEWATCH_")}
    env.update({f"OTEL_PYTHON_SCOPEWATCH_{k.upper()}": v for k, v in settings.items()})
    env["OTEL_PYTHON_SCOPEWATCH_RULES"] = "cross: scopewatch.violation.kind exists -> debugpy"
    env["OTEL_PYTHON_SCOPEWATCH_DEBUGPY"] = "true"
    script = tmp_path / "app.py"
    script.write_text(APP)
    return subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "localhost.", "127.0.0.1.nip.io"])
def test_a_real_app_refuses_a_remote_listener(tmp_path: Path, host: str) -> None:
    result = run_app(tmp_path, debugpy_host=host, debugpy_port="1")
    assert result.returncode == 0, result.stderr
    assert "refusing to open a debugpy listener" in result.stderr
    assert "started False" in result.stdout


def test_the_opt_in_lets_a_remote_host_through(tmp_path: Path) -> None:
    """With the opt-in, the listener is attempted on the host given (a TEST-NET address
    that no interface has, so nothing is exposed: the bind fails and is reported)."""
    result = run_app(
        tmp_path, debugpy_host="192.0.2.1", debugpy_port="5999", debugpy_allow_remote="true"
    )
    assert result.returncode == 0, result.stderr
    assert "refusing" not in result.stderr
    assert "started True available False" in result.stdout
    assert "could not open a debugpy listener on 192.0.2.1:5999" in result.stderr
