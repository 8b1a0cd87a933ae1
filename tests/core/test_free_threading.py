"""Shared state stays exact when threads run Python at the same time (free-threaded builds).

On a free-threaded build (3.13t/3.14t, ``sys._is_gil_enabled()`` false) a check-then-set such
as "log the first failure" can run in two threads at once. These tests race real threads through
a barrier; under a GIL they pass trivially, on a free-threaded interpreter (``make compat`` runs
one where it is installed) they catch lost updates and double logs.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
import threading
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from scopewatch import _runtime, _safety, semconv
from scopewatch.instrumentation import _session_wrappers
from scopewatch.telemetry import counts as counts_module
from scopewatch.telemetry.counts import FREE_THREADED, ThreadCounts, ThreadTally

if TYPE_CHECKING:
    from collections.abc import Callable

THREADS = 8
ROUNDS = 200


def race(action: Callable[[], object], threads: int = THREADS) -> None:
    """Run ``action`` in ``threads`` threads released at the same instant."""
    barrier = threading.Barrier(threads)

    def run() -> None:
        barrier.wait()
        action()

    started = [threading.Thread(target=run) for _ in range(threads)]
    for thread in started:
        thread.start()
    for thread in started:
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


def test_thread_counts_are_exact_when_threads_race():
    """The free-threaded build's counts: each thread its own part, summed when read."""
    counts: ThreadCounts[str] = ThreadCounts(("ok",))

    def count() -> None:
        for _ in range(ROUNDS):
            counts["ok"] += 1
            counts.setdefault("new", 0)
            counts["new"] += 1

    race(count)
    assert dict(counts.items()) == {"ok": THREADS * ROUNDS, "new": THREADS * ROUNDS}


@pytest.mark.skipif(FREE_THREADED, reason="the shared dict is the GIL build's; see above")
def test_the_shared_dict_loses_no_count_under_a_gil():
    """The GIL build's hot-path pattern, with thread switches as often as Python allows."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    counts: dict[tuple[str, str], int] = {}

    def count() -> None:
        for number in range(ROUNDS * 10):
            key = ("kind", str(number % 7))
            try:
                counts[key] += 1
            except KeyError:
                counts.setdefault(key, 0)
                counts[key] += 1

    try:
        race(count)
    finally:
        sys.setswitchinterval(previous)
    assert sum(counts.values()) == THREADS * ROUNDS * 10


def test_counts_without_a_gil_are_exact_with_loops_in_threads(monkeypatch, instrument):
    """The free-threaded build's counting path (forced here) with four event loops at once."""
    monkeypatch.setattr(counts_module, "FREE_THREADED", True)
    telemetry = instrument()
    loops, tasks_per_loop = 4, 300

    async def step() -> None:
        with anyio.move_on_after(5):
            await asyncio.sleep(0)

    async def main() -> None:
        await asyncio.gather(*(asyncio.create_task(step()) for _ in range(tasks_per_loop)))

    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        race(lambda: asyncio.run(main()), threads=loops)
    finally:
        sys.setswitchinterval(previous)
    runtime = _runtime.current
    assert runtime is not None
    assert isinstance(runtime.instruments.task_counts, ThreadCounts)
    assert isinstance(runtime.instruments.scope_counts, ThreadCounts)
    ended = sum(point.value for point in telemetry.points(semconv.METRIC_TASKS))
    assert ended == loops * (tasks_per_loop + 3)  # + main and asyncio.run's two shutdown tasks
    scopes = sum(point.value for point in telemetry.points(semconv.METRIC_SCOPES))
    assert scopes == loops * tasks_per_loop


def test_a_thread_inheriting_a_session_enter_is_not_inside_it():
    """3.14t threads inherit their starter's context (``sys.flags.thread_inherit_context``), as
    ``anyio.to_thread`` threads do everywhere: their own SDK sessions are not nested ones."""
    seen: dict[str, bool] = {}
    token = _session_wrappers.inside_session.set(threading.get_ident())
    try:
        seen["here"] = _session_wrappers.entering_session()
        inherited = contextvars.copy_context()
        thread = threading.Thread(
            target=inherited.run,
            args=(lambda: seen.__setitem__("thread", _session_wrappers.entering_session()),),
        )
        thread.start()
        thread.join()
    finally:
        _session_wrappers.inside_session.reset(token)
    assert seen == {"here": True, "thread": False}
    assert _session_wrappers.entering_session() is False


def test_a_thread_tally_is_exact_when_threads_race():
    """``TaskTracker.active`` without a GIL: ``+= 1`` / ``-= 1`` per thread, summed when read."""
    tally = ThreadTally()

    def count() -> None:
        nonlocal tally
        for _ in range(ROUNDS):
            tally += 2
            tally -= 1

    race(count)
    total = THREADS * ROUNDS
    assert int(tally) == total and tally == total and tally != total + 1
    assert tally >= total and tally <= total and tally > total - 1 and tally < total + 1


def tasks_tracker() -> Any:
    runtime = _runtime.current
    assert runtime is not None
    return runtime.tasks


def test_active_tasks_without_a_gil_are_exact_with_loops_in_threads(monkeypatch, instrument):
    """``scopewatch.task.active`` on the free-threaded path (forced here): four event loops in
    threads create and end tasks at once; read while all are pending, then once all ended."""
    monkeypatch.setattr(counts_module, "FREE_THREADED", True)
    telemetry = instrument()
    loops, tasks_per_loop = 4, 200
    all_pending = threading.Barrier(loops + 1)
    read = threading.Barrier(loops + 1)

    async def wait(event: asyncio.Event) -> None:
        await event.wait()

    async def main() -> None:
        event = asyncio.Event()
        children = [asyncio.create_task(wait(event)) for _ in range(tasks_per_loop)]
        await asyncio.sleep(0)
        all_pending.wait()  # this loop's tasks are all pending: the main thread reads now
        read.wait()
        event.set()
        await asyncio.gather(*children)

    def active() -> int:
        return sum(point.value for point in telemetry.points(semconv.METRIC_TASK_ACTIVE))

    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    threads = [threading.Thread(target=asyncio.run, args=(main(),)) for _ in range(loops)]
    try:
        for thread in threads:
            thread.start()
        all_pending.wait()
        during = active()
        read.wait()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(previous)
    assert isinstance(tasks_tracker().active, ThreadTally)
    assert during == loops * (tasks_per_loop + 1)  # + each loop's main task
    assert active() == 0


def test_untracked_tasks_without_a_gil_are_counted_and_warned_once(monkeypatch, instrument, caplog):
    """Past ``MAX_TRACKED`` on the free-threaded path (forced here): every task is either
    tracked (and counted when it ends) or counted as untracked, and one warning says so."""
    monkeypatch.setattr(counts_module, "FREE_THREADED", True)
    monkeypatch.setattr(_safety, "_warned", set())
    caplog.set_level(logging.WARNING, logger="scopewatch")
    bound, loops, tasks_per_loop = 40, 4, 100
    telemetry = instrument(max_tracked=bound)
    all_pending = threading.Barrier(loops)

    async def main() -> None:
        event = asyncio.Event()
        children = [asyncio.create_task(event.wait()) for _ in range(tasks_per_loop)]
        await asyncio.sleep(0)
        all_pending.wait()  # every loop's tasks pending at once: at most ``bound`` tracked
        event.set()
        await asyncio.gather(*children)

    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        race(lambda: asyncio.run(main()), threads=loops)
    finally:
        sys.setswitchinterval(previous)
    untracked = sum(
        point.value
        for point in telemetry.points(semconv.METRIC_UNTRACKED)
        if (point.attributes or {}).get(semconv.UNTRACKED_KIND) == semconv.UNTRACKED_TASK
    )
    ended = sum(point.value for point in telemetry.points(semconv.METRIC_TASKS))
    assert isinstance(tasks_tracker().untracked, ThreadTally)
    assert untracked >= loops * tasks_per_loop - bound
    assert ended + untracked == loops * (tasks_per_loop + 3)  # + main, asyncio.run's shutdown
    warnings = [r for r in caplog.records if "tasks are tracked at once" in r.getMessage()]
    assert len(warnings) == 1
