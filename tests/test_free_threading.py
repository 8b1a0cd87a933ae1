"""Shared state stays exact when threads run Python at the same time (free-threaded builds).

On a free-threaded build (3.13t/3.14t, ``sys._is_gil_enabled()`` false) a check-then-set such
as "log the first failure" can run in two threads at once. These tests race real threads through
a barrier; under a GIL they pass trivially, on a free-threaded interpreter (``make compat`` runs
one where it is installed) they catch lost updates and double logs.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from scopewatch import _safety

if TYPE_CHECKING:
    from collections.abc import Callable

THREADS = 8
ROUNDS = 200


def race(action: Callable[[], None]) -> None:
    """Run ``action`` in ``THREADS`` threads released at the same instant."""
    barrier = threading.Barrier(THREADS)

    def run() -> None:
        barrier.wait()
        action()

    threads = [threading.Thread(target=run) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_warn_once_logs_once_when_threads_race(monkeypatch, caplog):
    monkeypatch.setattr(_safety, "_warned", set())
    caplog.set_level(logging.WARNING, logger="scopewatch")
    for round_ in range(ROUNDS):
        race(lambda round_=round_: _safety.warn_once(f"key-{round_}", "warned %s", round_))
    assert len(caplog.records) == ROUNDS


def test_a_part_fails_once_when_threads_race(monkeypatch, caplog):
    monkeypatch.setattr(_safety, "STRICT", False)  # strict mode re-raises in the first thread
    caplog.set_level(logging.ERROR, logger="scopewatch")
    for round_ in range(ROUNDS):
        part = _safety.Part(f"part {round_}")
        race(lambda part=part: part.fail(RuntimeError("broken")))
        assert part.enabled is False
    assert len(caplog.records) == ROUNDS
