"""Run a child process transparently: its stdio, its exit status, and signals sent to us.

Every signal must reach the child exactly once: a second SIGINT would interrupt the child's own
cleanup (and the final export of its telemetry).

- In the foreground of a terminal the child stays in our process group, so a Ctrl-C from the
  terminal reaches it directly; we forward only signals sent by a process (``sigtimedwait``
  reports ``si_pid`` 0 for a terminal-generated one), e.g. ``kill -INT <our pid>``.
- Otherwise (no terminal, in the background, under a supervisor) the child gets a process group
  of its own and we forward every signal we receive: a ``kill`` of our pid or of our process
  group then reaches it once.
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
    own_group = not _terminal_foreground()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, watched)

    def prepare_child() -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        if own_group:
            os.setpgid(0, 0)

    try:
        child = subprocess.Popen(argv, env=dict(environ), preexec_fn=prepare_child)  # noqa: PLW1509
        while True:
            code = child.poll()
            if code is not None:
                return code
            info = signal.sigtimedwait(watched, _POLL_SECONDS)
            if info is None or info.si_signo == signal.SIGCHLD:
                continue
            if info.si_pid == child.pid or (info.si_pid == 0 and not own_group):
                continue  # from the child itself, or the terminal already told the child
            _forward(child, info.si_signo)
    finally:
        _drain(watched)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _terminal_foreground() -> bool:
    """Whether we are in the foreground process group of a controlling terminal."""
    try:
        descriptor = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return False
    try:
        return os.tcgetpgrp(descriptor) == os.getpgrp()
    except OSError:
        return False
    finally:
        os.close(descriptor)


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
