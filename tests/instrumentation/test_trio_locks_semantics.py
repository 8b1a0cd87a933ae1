"""trio locks behave identically with and without scopewatch; patches come and go cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import trio
import trio.testing

from scopewatch import semconv
from scopewatch._core import locks as core
from scopewatch.naming import name

LOCKS = "locks"
BROKEN_LOCKS = hasattr(trio.lowlevel.ParkingLot(), "broken_by")
"""trio >= 0.27 breaks a lock whose owner exits holding it; before, its waiters wait forever."""


def _contentions(telemetry: Any) -> dict[tuple[str, str], int]:
    return {
        (p.attributes[semconv.LOCK_KIND], p.attributes[semconv.LOCK_NAME]): p.value
        for p in telemetry.points(semconv.METRIC_LOCK_CONTENTIONS)
    }


async def _contend(lock: Any) -> None:
    """Hold ``lock`` until another task is certainly parked on it."""
    async with trio.open_nursery() as nursery:
        await lock.acquire()
        nursery.start_soon(lock.acquire)
        await trio.testing.wait_all_tasks_blocked()
        lock.release()


async def _scenario() -> list[Any]:
    """Fairness, errors, statistics and cancellation of every trio lock, as a log."""
    log: list[Any] = []

    async def queued(lock: Any, index: int) -> None:
        async with lock:
            log.append(("got", type(lock).__name__, index))
            await trio.sleep(0)

    def outcome(call: Callable[[], Any]) -> Any:
        try:
            return ("ok", call())
        except Exception as error:  # the app's exact error, compared between the two runs
            return (type(error).__name__, str(error))

    for lock in (trio.Lock(), trio.StrictFIFOLock(), trio.Semaphore(1), trio.CapacityLimiter(1)):
        async with trio.open_nursery() as nursery:
            await lock.acquire()
            for index in range(3):
                nursery.start_soon(queued, lock, index)
                await trio.testing.wait_all_tasks_blocked()
            statistics = lock.statistics()
            log.append(("waiting", statistics.tasks_waiting))
            log.append(("nowait", outcome(lock.acquire_nowait)))
            lock.release()
    lock = trio.Lock()
    async with lock:
        log.append(("reacquire", outcome(lock.acquire_nowait)))
        with trio.CancelScope() as scope:
            scope.cancel()
            log.append(("owned", lock.statistics().owner is trio.lowlevel.current_task()))
    log.append(("release unheld", outcome(lock.release)))
    with trio.CancelScope() as scope:
        scope.cancel()
        try:
            await lock.acquire()  # already cancelled: raises before taking the free lock
        except trio.Cancelled:
            log.append(("cancelled before taking", lock.locked()))
            raise
    bounded = trio.Semaphore(1, max_value=1)
    log.append(("too many", outcome(bounded.release)))
    limiter = trio.CapacityLimiter(1)
    async with limiter:
        log.append(("limiter twice", outcome(limiter.acquire_nowait)))
        log.append(("borrowed", limiter.borrowed_tokens, limiter.available_tokens))
    log.append(("limiter unheld", outcome(limiter.release)))
    condition = trio.Condition()
    log.append(("wait unheld", outcome(lambda: condition.wait().send(None))))
    if BROKEN_LOCKS:
        await _broken_lock(log)
    return log


async def _broken_lock(log: list[Any]) -> None:
    """A lock whose owner exits holding it breaks; the task waiting for it is told."""
    broken = trio.Lock()

    async def leaves_it_locked() -> None:
        await broken.acquire()

    async def blocked() -> None:
        try:
            await broken.acquire()
        except trio.BrokenResourceError as error:
            log.append(("broken", str(error).split(":")[0]))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(leaves_it_locked)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(blocked)


def test_app_sees_identical_results_with_and_without_scopewatch(instrument: Any) -> None:
    bare = trio.run(_scenario)
    telemetry = instrument(instrument=LOCKS)
    instrumented = trio.run(_scenario)
    assert instrumented == bare
    assert [entry for entry in bare if entry[0] == "got"] == [
        ("got", kind, index)
        for kind in ("Lock", "StrictFIFOLock", "Semaphore", "CapacityLimiter")
        for index in range(3)
    ]  # FIFO fairness
    assert ("too many", ("ValueError", "semaphore released too many times")) in bare
    assert (("broken", "Owner of this lock exited without releasing") in bare) is BROKEN_LOCKS
    assert sum(_contentions(telemetry).values()) == 12  # and scopewatch did measure it


def test_uninstrument_restores_originals(instrument: Any) -> None:
    lock_impl = trio.Lock.__mro__[1]  # trio._sync._LockImpl, where Lock's methods live
    own = {
        (cls, attr): cls.__dict__.get(attr)
        for cls in (trio.Lock, trio.StrictFIFOLock, lock_impl, trio.Semaphore)
        for attr in ("__init__", "acquire", "acquire_nowait", "release")
    }
    own.update(
        {
            (trio.CapacityLimiter, attr): trio.CapacityLimiter.__dict__[attr]
            for attr in (
                "__init__",
                "acquire_on_behalf_of",
                "acquire_on_behalf_of_nowait",
                "release_on_behalf_of",
            )
        }
    )
    own.update(
        {(trio.Condition, attr): trio.Condition.__dict__[attr] for attr in ("__init__", "wait")}
    )
    telemetry = instrument(instrument=LOCKS)
    assert trio.Lock.__dict__.get("acquire") is not None  # patched on the class itself
    assert trio.Semaphore.__dict__["acquire"] is not own[(trio.Semaphore, "acquire")]
    assert trio.Condition.__dict__["wait"] is not own[(trio.Condition, "wait")]
    telemetry.uninstrument()
    for (cls, attr), original in own.items():
        assert cls.__dict__.get(attr) is original, (cls, attr)
    assert not core.ACTIVE


def test_reinstrument_after_uninstrument_measures_again(instrument: Any) -> None:
    instrument(instrument=LOCKS).uninstrument()
    telemetry = instrument(instrument=LOCKS)

    async def main() -> None:
        await _contend(name(trio.Lock(), "again"))

    trio.run(main)
    assert _contentions(telemetry) == {(semconv.LOCK_KIND_TRIO_LOCK, "again"): 1}


def test_trio_imported_after_instrumenting_is_patched_then(tmp_path: Any) -> None:
    script = tmp_path / "late_import.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import InMemoryMetricReader
            from scopewatch import ScopeWatchInstrumentor

            assert "trio" not in sys.modules
            reader = InMemoryMetricReader()
            ScopeWatchInstrumentor().instrument(
                meter_provider=MeterProvider(metric_readers=[reader]), instrument="locks"
            )
            import trio
            import trio.testing

            async def main():
                lock = trio.Lock()
                async with trio.open_nursery() as nursery:
                    await lock.acquire()
                    nursery.start_soon(lock.acquire)
                    await trio.testing.wait_all_tasks_blocked()
                    lock.release()

            trio.run(main)
            points = [
                (dict(p.attributes), p.value)
                for rm in reader.get_metrics_data().resource_metrics
                for sm in rm.scope_metrics
                for m in sm.metrics
                if m.name == "scopewatch.lock.contentions"
                for p in m.data.data_points
            ]
            print(points)
            """
        )
    )
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_PYTHON_")}
    process = subprocess.run(
        [sys.executable, str(script)],
        env={**environment, "SCOPEWATCH_STRICT": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert process.returncode == 0, process.stderr
    line = script.read_text().splitlines().index("    lock = trio.Lock()") + 1
    assert process.stdout.strip() == (
        f"[({{'scopewatch.lock.kind': 'trio.Lock', 'scopewatch.lock.name': '__main__:{line}'}}, 1)]"
    )
