"""Run a child process transparently: its stdio, its exit status, and signals sent to us.

A Ctrl-C in a terminal reaches the whole foreground process group, so the child already gets it
and forwarding it again would interrupt the child's own cleanup. A signal sent to this process
alone (``kill -INT <pid>``, a supervisor's SIGTERM) is forwarded. On POSIX the two are told apart
by the sender: ``sigtimedwait`` reports ``si_pid`` 0 for a terminal-generated signal.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

FORWARDED = tuple(
    getattr(signal, name)
    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")
    if hasattr(signal, name)
)
_POLL_SECONDS = 0.5


def run(argv: list[str], environ: Mapping[str, str]) -> int:
    """Run ``argv`` to completion; the child's return code (negative: killed by that signal)."""
    if sys.platform == "win32" or not hasattr(signal, "sigtimedwait"):
        return _run_simple(argv, environ)
    watched = {*FORWARDED, signal.SIGCHLD}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    try:
        child = subprocess.Popen(
            argv,
            env=dict(environ),
            preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_SETMASK, previous),  # noqa: PLW1509
        )
        while True:
            code = child.poll()
            if code is not None:
                return code
            info = signal.sigtimedwait(watched, _POLL_SECONDS)
            if info is None or info.si_signo == signal.SIGCHLD:
                continue
            if info.si_pid not in (0, child.pid, os.getpid()):
                _forward(child, info.si_signo)
    finally:
        _drain(watched)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _forward(child: subprocess.Popen[bytes], signo: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        child.send_signal(signo)


def _drain(watched: set[signal.Signals]) -> None:
    """Discard signals that arrived for the child (a terminal's Ctrl-C reached it already)."""
    while signal.sigtimedwait(watched, 0) is not None:
        pass


def _run_simple(argv: list[str], environ: Mapping[str, str]) -> int:
    """Windows: the console delivers Ctrl-C to the child too; we only wait."""
    child = subprocess.Popen(argv, env=dict(environ))
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return child.wait()
    finally:
        signal.signal(signal.SIGINT, previous)


def exit_like(code: int) -> int:
    """Exit as the child did: re-raise its fatal signal on ourselves, else return its status."""
    if code >= 0:
        return code
    signo = -code
    if sys.platform != "win32":
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            signal.signal(signo, signal.SIG_DFL)
            os.kill(os.getpid(), signo)
        except (OSError, ValueError):
            pass
    return 128 + signo
