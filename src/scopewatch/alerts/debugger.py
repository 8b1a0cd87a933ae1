"""The ``debugpy`` action: a listener opened once per process, and a break at the violation.

``debugpy.listen`` spawns the debug adapter as a child process and waits for it (about 0.3 s),
so it runs in a daemon thread: the thread that ended the span (often the event loop's) never
waits for it, except up to ``DEBUGPY_WAIT`` seconds when the user asked for that. The adapter
is started with ``subProcess=False`` and with the environment of this process minus the
``opentelemetry-instrument`` launcher's ``PYTHONPATH`` entry: debugpy passes its
``pythonEnv`` setting (or else ``os.environ``) to ``subprocess.Popen`` for the adapter, and the
launcher's directory holds a ``sitecustomize`` that would instrument the adapter too.
``os.environ`` itself is never modified.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from scopewatch import _safety
from scopewatch.alerts import explain
from scopewatch.config import ENV_PREFIX

if TYPE_CHECKING:
    from collections.abc import Mapping

    from opentelemetry.sdk.trace import ReadableSpan

    from scopewatch.alerts.rules import Rule
    from scopewatch.config import Settings

_logger = logging.getLogger("scopewatch")

LAUNCHER_PACKAGE = "opentelemetry.instrumentation.auto_instrumentation"
LAUNCH_JSON = "configs/launch.json"
POLL_SECONDS = 0.05


def _launcher_dirs() -> set[str]:
    """Directories that hold the ``opentelemetry-instrument`` launcher's ``sitecustomize``."""
    found: set[str] = set()
    module = sys.modules.get(LAUNCHER_PACKAGE)
    origin = getattr(module, "__file__", None)
    if origin is None:
        try:
            spec = importlib.util.find_spec(LAUNCHER_PACKAGE)
        except (ImportError, ValueError):
            spec = None
        origin = spec.origin if spec is not None else None
    if origin:
        found.add(os.path.normcase(os.path.realpath(os.path.dirname(origin))))
    return found


def _is_launcher_dir(entry: str, launcher_dirs: set[str]) -> bool:
    if not entry:
        return False
    path = os.path.normcase(os.path.realpath(entry))
    if path in launcher_dirs:
        return True
    tail = os.path.normcase(os.path.join(*LAUNCHER_PACKAGE.split(".")))
    return path.endswith(tail) and os.path.isfile(os.path.join(entry, "sitecustomize.py"))


def adapter_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``environ`` without the launcher's ``PYTHONPATH`` entry (others are kept)."""
    env = dict(environ)
    python_path = env.get("PYTHONPATH")
    if python_path is None:
        return env
    launcher_dirs = _launcher_dirs()
    entries = python_path.split(os.pathsep)
    kept = [entry for entry in entries if not _is_launcher_dir(entry, launcher_dirs)]
    if len(kept) != len(entries):
        if any(kept):
            env["PYTHONPATH"] = os.pathsep.join(kept)
        else:
            del env["PYTHONPATH"]
    return env


class Listener:
    """The process's one debugpy listener (``debugpy.listen`` may be called once only)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started = False
        self.ready = threading.Event()
        """Set when the listen attempt finished, successfully or not."""
        self.available = False
        """A listener is open (ours, or one debugpy already had)."""
        self.address: tuple[str, int] | None = None
        self.thread: threading.Thread | None = None

    def start(self, host: str, port: int, rule: str) -> None:
        """Start listening in a daemon thread, the first time only."""
        with self._lock:
            if self.started:
                return
            self.started = True
        thread = threading.Thread(
            target=self._listen, args=(host, port, rule), name="scopewatch-debugpy", daemon=True
        )
        self.thread = thread
        thread.start()

    def _listen(self, host: str, port: int, rule: str) -> None:
        try:
            self._open(host, port, rule)
        except Exception:  # only logging can raise here (a broken handler): nothing to do
            pass
        finally:
            self.ready.set()  # waiters must never wait for a thread that died

    def _open(self, host: str, port: int, rule: str) -> None:
        try:
            debugpy = importlib.import_module("debugpy")
        except Exception as error:  # ImportError, or a broken installation
            _logger.warning(
                "scopewatch: alert rule %r has the debugpy action but debugpy cannot be imported "
                "(%s: %s); nothing was done. Install it with `pip install 'scopewatch[debugpy]'`.",
                rule,
                type(error).__name__,
                error,
            )
            return
        try:
            self._configure(debugpy)
            address = debugpy.listen((host, port))
        except RuntimeError as error:
            if "already been called" in str(error):
                self.available = True
                _logger.warning(
                    "scopewatch: alert rule %r: debugpy is already listening in this process "
                    "(started elsewhere); attach to that listener to break at the next match.",
                    rule,
                )
            else:
                self._failed(host, port, rule, error)
        except Exception as error:
            self._failed(host, port, rule, error)
        else:
            self.available = True
            self.address = (str(address[0]), int(address[1]))
            _logger.warning(
                "scopewatch: alert rule %r opened a debugpy listener on %s:%d (pid %d). Attach a "
                "debugger to stop at the next match: in VS Code use the 'scopewatch: attach' "
                "configuration of %s from the scopewatch repository (host %s, port %d), or any "
                "Debug Adapter Protocol client. debugpy has no authentication: whoever reaches "
                "this port can run code in this process.",
                rule,
                self.address[0],
                self.address[1],
                os.getpid(),
                LAUNCH_JSON,
                self.address[0],
                self.address[1],
            )

    @staticmethod
    def _configure(debugpy: Any) -> None:
        try:
            debugpy.configure(subProcess=False, pythonEnv=adapter_environment(os.environ))
        except ValueError:  # a debugpy without the pythonEnv property
            debugpy.configure(subProcess=False)
            _logger.debug(
                "scopewatch: this debugpy cannot set the adapter's environment; the adapter "
                "inherits PYTHONPATH"
            )

    @staticmethod
    def _failed(host: str, port: int, rule: str, error: Exception) -> None:
        _logger.warning(
            "scopewatch: alert rule %r could not open a debugpy listener on %s:%d (%s: %s); "
            "the application continues without it.",
            rule,
            host,
            port,
            type(error).__name__,
            error,
        )


listener = Listener()


def _connected() -> bool:
    # While debugpy is being imported (by our listener thread, or anyone), sys.modules holds
    # the half-initialised module: it has no is_client_connected yet, and nobody is connected.
    is_client_connected = getattr(sys.modules.get("debugpy"), "is_client_connected", None)
    return is_client_connected is not None and bool(is_client_connected())


def _wait_for_client(seconds: float) -> bool:
    """Wait up to ``seconds`` for the listener and a connected client."""
    if seconds <= 0:
        return False
    deadline = time.monotonic() + seconds
    if not listener.ready.wait(seconds) or not listener.available:
        return False
    while not _connected():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(POLL_SECONDS, remaining))
    return True


def _break(rule: Rule, span: ReadableSpan) -> None:
    # The debugger stops on the last line of this function: the span below just ended and
    # matched the rule. Your code is further down the call stack (it ended the span, e.g. by
    # leaving a cancel scope in another task). These locals are shown in the Variables pane.
    scopewatch_rule = rule.name
    scopewatch_span = span.name
    scopewatch_explanation = explain.violation(span) or explain.summary(span)
    sys.modules["debugpy"].breakpoint()
    del scopewatch_rule, scopewatch_span, scopewatch_explanation  # <- stopped here


def run(rule: Rule, span: ReadableSpan, settings: Settings) -> None:
    """The ``debugpy`` action for one firing of ``rule`` on ``span``."""
    if not settings.debugpy:
        _safety.warn_once(
            "alerts.debugpy.disabled",
            "scopewatch: alert rule %r has the debugpy action but %sDEBUGPY is not true; no "
            "debugger listener is opened (set it to true to allow one).",
            rule.name,
            ENV_PREFIX,
        )
        return
    if not settings.debugpy_host_is_loopback() and not settings.debugpy_allow_remote:
        _safety.warn_once(
            "alerts.debugpy.remote",
            "scopewatch: refusing to open a debugpy listener on %s:%d for alert rule %r: it is "
            "not a loopback address and debugpy has no authentication (anyone who reaches the "
            "port can run code in this process). Use %sDEBUGPY_HOST=127.0.0.1 with an SSH "
            "tunnel, or set %sDEBUGPY_ALLOW_REMOTE=true on a trusted network.",
            settings.debugpy_host,
            settings.debugpy_port,
            rule.name,
            ENV_PREFIX,
            ENV_PREFIX,
        )
        return
    if not _connected():
        listener.start(settings.debugpy_host, settings.debugpy_port, rule.name)
        if not _wait_for_client(settings.debugpy_wait):
            return
    _break(rule, span)
