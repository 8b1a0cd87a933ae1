"""The ``debugpy`` alert action, for real: subprocess apps, a real adapter, a DAP client.

Each app commits a real cross-task violation (an anyio ``CancelScope`` entered by an async
generator step in one task and exited by ``aclose()`` in another) through the instrumentor.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from scopewatch.alerts.debugger import LAUNCHER_PACKAGE, adapter_environment
from tests.support.paths import ROOT

BIN = Path(sys.executable).parent
TIMEOUT = 60.0

VIOLATION = """
async def ticks():
    with anyio.CancelScope():  # entered by the first step's task ...
        yield 1
        yield 2


async def violate():
    generator = ticks()
    await asyncio.ensure_future(generator.__anext__())
    try:
        await asyncio.ensure_future(generator.aclose())  # ... exited by another task
    except RuntimeError:
        pass  # anyio refuses the exit; scopewatch reports the violation
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class App:
    """A subprocess whose stderr lines are collected by a thread."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            argv,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        self.stdout: list[str] = []
        self.pumps = [
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr, True)),
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout, False)),
        ]
        for pump in self.pumps:
            pump.daemon = True
            pump.start()

    def _pump(self, stream: Any, lines: list[str], forward: bool) -> None:
        for line in stream:
            lines.append(line)
            if forward:
                self.lines.put(line)

    def wait_for_line(self, needle: str) -> str:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            if needle in line:
                return line
        raise AssertionError(f"{needle!r} never printed; stderr:\n{''.join(self.stderr)}")

    def finish(self) -> tuple[int, str, str]:
        try:
            self.proc.wait(timeout=TIMEOUT)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        for pump in self.pumps:
            pump.join(timeout=5)
        return self.proc.returncode, "".join(self.stdout), "".join(self.stderr)


def base_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.pop("SCOPEWATCH_STRICT", None)  # the apps run like production
    env.update(
        OTEL_TRACES_EXPORTER="none",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        PYTHONUNBUFFERED="1",
        PYDEVD_DISABLE_FILE_VALIDATION="1",
    )
    env.update({f"OTEL_PYTHON_SCOPEWATCH_{k.upper()}": v for k, v in settings.items()})
    return env


class Dap:
    """A minimal Debug Adapter Protocol client: Content-Length framed JSON over a socket."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.buffer = b""
        self.seq = 0
        self.seen: list[dict[str, Any]] = []

    def request(self, command: str, **arguments: Any) -> int:
        self.seq += 1
        body = json.dumps(
            {"seq": self.seq, "type": "request", "command": command, "arguments": arguments}
        ).encode()
        self.sock.sendall(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        return self.seq

    def _read(self) -> dict[str, Any]:
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("adapter closed the connection")
            self.buffer += chunk
        header, rest = self.buffer.split(b"\r\n\r\n", 1)
        length = next(
            int(line.split(b":", 1)[1])
            for line in header.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(rest) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("adapter closed the connection")
            rest += chunk
        self.buffer = rest[length:]
        message: dict[str, Any] = json.loads(rest[:length])
        self.seen.append(message)
        return message

    def wait_event(self, event: str) -> dict[str, Any]:
        for message in self.seen:
            if message.get("type") == "event" and message.get("event") == event:
                self.seen.remove(message)
                return message
        while True:
            message = self._read()
            if message.get("type") == "event" and message.get("event") == event:
                self.seen.remove(message)
                return message

    def wait_response(self, seq: int) -> dict[str, Any]:
        while True:
            message = self._read()
            if message.get("type") == "response" and message.get("request_seq") == seq:
                assert message["success"], message
                return message

    def close(self) -> None:
        self.sock.close()


def adapter_pids(port: int) -> list[int]:
    """Processes running the debugpy adapter for the listener on ``port`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--for-server" in argv and str(port).encode() in argv:
            found.append(int(entry.name))
    return found


def launcher_dir() -> str:
    import importlib.util

    spec = importlib.util.find_spec(LAUNCHER_PACKAGE)
    assert spec is not None and spec.origin is not None
    return os.path.dirname(spec.origin)


def test_adapter_environment_drops_only_the_launcher_entry() -> None:
    other = os.path.join(os.sep, "opt", "lib")
    environ = {"PYTHONPATH": os.pathsep.join([launcher_dir(), other]), "HOME": "/h"}
    assert adapter_environment(environ) == {"PYTHONPATH": other, "HOME": "/h"}
    assert adapter_environment({"PYTHONPATH": launcher_dir()}) == {}
    assert adapter_environment({"PYTHONPATH": other}) == {"PYTHONPATH": other}
    assert adapter_environment({"X": "1"}) == {"X": "1"}


DAP_APP = (
    """
import asyncio
import os

import anyio
"""
    + VIOLATION
    + """


async def main():
    if os.environ["APP_MODE"] == "wait":  # the first violation waits for the debugger
        await violate()
        return
    import debugpy  # "attached": violate every 50 ms; the first one after attaching stops

    for _ in range(1200):
        attached = debugpy.is_client_connected()
        await violate()
        if attached:
            return
        await asyncio.sleep(0.05)


asyncio.run(main())
kept = os.environ["LAUNCHER_DIR"] in os.environ["PYTHONPATH"].split(os.pathsep)
print("launcher still on the app's PYTHONPATH:", kept)
print("DONE")
"""
)


@pytest.mark.parametrize("mode", ["wait", "attached"])
def test_debugger_attaches_and_stops_at_a_real_violation(tmp_path: Path, mode: str) -> None:
    """opentelemetry-instrument app -> violation -> listener -> DAP attach -> stopped in app.

    ``wait``: the violating thread waits up to DEBUGPY_WAIT for the client, then breaks.
    ``attached``: no wait (the default); a later violation finds the client attached and breaks.
    """
    app_file = tmp_path / "violating_app.py"
    app_file.write_text(DAP_APP)
    port = free_port()
    env = base_env(
        rules="dbg: scopewatch.violation.kind == cross_task_exit cooldown 0 -> debugpy",
        default_rule="false",
        instrument="scopes",
        debugpy="true",
        debugpy_port=str(port),
        debugpy_wait=str(TIMEOUT) if mode == "wait" else "0",
    )
    env["LAUNCHER_DIR"] = launcher_dir()
    env["APP_MODE"] = mode
    app = App([str(BIN / "opentelemetry-instrument"), sys.executable, str(app_file)], env)
    dap = None
    try:
        line = app.wait_for_line("opened a debugpy listener")
        assert f"alert rule 'dbg' opened a debugpy listener on 127.0.0.1:{port}" in line
        assert "configs/launch.json" in line
        dap = Dap(port)
        dap.wait_response(
            dap.request("initialize", clientID="pytest", adapterID="debugpy", pathFormat="path")
        )
        attach = dap.request("attach", justMyCode=False)
        dap.wait_event("initialized")
        dap.wait_response(dap.request("configurationDone"))
        dap.wait_response(attach)
        stopped = dap.wait_event("stopped")
        thread_id = stopped["body"]["threadId"]
        trace = dap.wait_response(dap.request("stackTrace", threadId=thread_id))
        frames = [
            (frame["name"], frame.get("source", {}).get("path", ""))
            for frame in trace["body"]["stackFrames"]
        ]
        assert frames[0][0] == "_break"  # scopewatch's break point, with the violation below
        assert ("ticks", str(app_file)) in frames  # the user's generator that left the scope
        threads = dap.wait_response(dap.request("threads"))["body"]["threads"]
        assert thread_id == next(t["id"] for t in threads if t["name"] == "MainThread")

        # The adapter was started without the launcher's sitecustomize directory.
        (adapter,) = adapter_pids(port)
        adapter_env = dict(
            item.split(b"=", 1)
            for item in Path(f"/proc/{adapter}/environ").read_bytes().split(b"\0")
            if b"=" in item
        )
        adapter_path = adapter_env.get(b"PYTHONPATH", b"").decode().split(os.pathsep)
        assert launcher_dir() not in adapter_path

        dap.wait_response(dap.request("continue", threadId=thread_id))
        dap.wait_response(dap.request("disconnect"))
    finally:
        if dap is not None:
            dap.close()
        code, out, err = app.finish()
    assert code == 0, err
    assert "launcher still on the app's PYTHONPATH: True" in out  # os.environ untouched
    assert out.rstrip().endswith("DONE")


LISTEN_ONCE_APP = (
    """
import asyncio
import json
import threading

import anyio
import debugpy
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from scopewatch import ScopeWatchInstrumentor
from scopewatch.alerts import debugger

report = {"listen_threads": [], "ticks_at_listen": [], "ticks_after_listen": []}
tick_count = 0
original_listen = debugpy.listen


def counting_listen(address):
    report["listen_threads"].append(threading.get_ident())
    start = tick_count
    report["ticks_at_listen"].append(start)
    for _ in range(1000):  # proof that the loop runs meanwhile: wait for 3 ticks (bounded)
        if tick_count >= start + 3:
            break
        threading.Event().wait(0.01)
    result = original_listen(address)
    report["ticks_after_listen"].append(tick_count)
    return result


debugpy.listen = counting_listen
provider = TracerProvider()
rule = "scopewatch.violation.kind exists cooldown 0 -> debugpy"
rules = "; ".join(f"r{i}: {rule}" for i in range(10))
ScopeWatchInstrumentor().instrument(tracer_provider=provider, rules=rules, instrument="scopes")
"""
    + VIOLATION
    + """

async def ticker():
    global tick_count
    while True:
        tick_count += 1
        await asyncio.sleep(0.005)


def other_thread():
    tracer = provider.get_tracer("app")
    for _ in range(20):
        with tracer.start_as_current_span("x", attributes={"scopewatch.violation.kind": "test"}):
            pass


async def main():
    report["loop_thread"] = threading.get_ident()
    task = asyncio.create_task(ticker())
    threads = [threading.Thread(target=other_thread) for _ in range(4)]
    for thread in threads:
        thread.start()
    for _ in range(5):
        await violate()
    for thread in threads:
        thread.join()
    while not debugger.listener.ready.is_set():
        await asyncio.sleep(0.01)
    report["violations_done_at_tick"] = tick_count
    report["listener_available"] = debugger.listener.available
    task.cancel()


asyncio.run(main())
print(json.dumps(report))
"""
)


def test_listen_once_off_the_loop_while_the_loop_keeps_running(tmp_path: Path) -> None:
    app_file = tmp_path / "listen_once.py"
    app_file.write_text(LISTEN_ONCE_APP)
    port = free_port()
    env = base_env(debugpy="true", debugpy_port=str(port), default_rule="false")
    app = App([sys.executable, str(app_file)], env)
    code, out, err = app.finish()
    assert code == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    # 10 rules x (5 real violations + 80 spans from 4 threads) fired; listen ran once ...
    assert len(report["listen_threads"]) == 1
    # ... in a thread of its own, not the event loop's ...
    assert report["listen_threads"][0] != report["loop_thread"]
    # ... while the loop kept ticking (the wrapper waited for 3 ticks before listening).
    assert report["ticks_after_listen"][0] >= report["ticks_at_listen"][0] + 3
    assert report["listener_available"] is True
    opened = [line for line in err.splitlines() if "opened a debugpy listener" in line]
    assert len(opened) == 1
    assert f"127.0.0.1:{port}" in opened[0]


MISSING_APP = (
    """
import asyncio
import importlib.abc
import sys


class BlockDebugpy(importlib.abc.MetaPathFinder):
    # Simulates an environment without debugpy: `import debugpy` fails like a missing package.
    def find_spec(self, name, path=None, target=None):
        if name == "debugpy" or name.startswith("debugpy."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, BlockDebugpy())

import anyio
from opentelemetry.sdk.trace import TracerProvider

from scopewatch import ScopeWatchInstrumentor
from scopewatch.alerts import debugger

ScopeWatchInstrumentor().instrument(
    tracer_provider=TracerProvider(), rules="dbg: scopewatch.violation.kind exists -> debugpy, log"
)
"""
    + VIOLATION
    + """

async def main():
    await violate()
    while not debugger.listener.ready.is_set():
        await asyncio.sleep(0.01)
    await violate()


asyncio.run(main())
print("available:", debugger.listener.available, "debugpy imported:", "debugpy" in sys.modules)
print("DONE")
"""
)


def test_missing_debugpy_is_explained_once_and_the_app_continues(tmp_path: Path) -> None:
    app_file = tmp_path / "no_debugpy.py"
    app_file.write_text(MISSING_APP)
    env = base_env(debugpy="true", debugpy_port=str(free_port()), default_rule="false")
    code, out, err = App([sys.executable, str(app_file)], env).finish()
    assert code == 0, err
    assert "available: False debugpy imported: False" in out
    assert out.rstrip().endswith("DONE")
    missing = [line for line in err.splitlines() if "debugpy cannot be imported" in line]
    assert len(missing) == 1, err
    assert "alert rule 'dbg'" in missing[0]
    assert "ModuleNotFoundError" in missing[0]
    assert "pip install 'scopewatch[debugpy]'" in missing[0]
    assert "alert rule 'dbg' fired" in err  # the log action of the same rule still works


def test_launch_json_attaches_to_the_default_listener() -> None:
    text = (ROOT / "configs" / "launch.json").read_text()
    body = "\n".join(line for line in text.splitlines() if not line.strip().startswith("//"))
    config = json.loads(body)
    (attach,) = [c for c in config["configurations"] if c["name"] == "scopewatch: attach"]
    assert attach["type"] == "debugpy"
    assert attach["request"] == "attach"
    assert attach["connect"] == {"host": "127.0.0.1", "port": 5678}
