"""anyio Lock/Semaphore/Condition/CapacityLimiter metrics (asyncio and trio backends)."""

from __future__ import annotations

import sys
from typing import Any

import anyio
import pytest

from scopewatch import semconv
from scopewatch._core import locks as core
from scopewatch.naming import name

LOCKS = "locks"


def _contentions(telemetry: Any) -> dict[tuple[str, str], int]:
    return {
        (p.attributes[semconv.LOCK_KIND], p.attributes[semconv.LOCK_NAME]): p.value
        for p in telemetry.points(semconv.METRIC_LOCK_CONTENTIONS)
    }


def _waits(telemetry: Any) -> list[tuple[str, str, str, int]]:
    return sorted(
        (
            p.attributes[semconv.LOCK_KIND],
            p.attributes[semconv.LOCK_NAME],
            p.attributes[semconv.LOCK_OUTCOME],
            p.count,
        )
        for p in telemetry.points(semconv.METRIC_LOCK_WAIT_DURATION)
    )


async def _hold(lock: Any, seconds: float) -> None:
    async with lock:
        await anyio.sleep(seconds)


def _waiting(lock: Any) -> int:
    statistics = lock.statistics()
    inner = getattr(statistics, "lock_statistics", None)  # a Condition waits on its lock
    return int((inner or statistics).tasks_waiting)


async def _contend(lock: Any) -> None:
    """One task holds ``lock`` until a second one is certainly waiting for it."""
    held = anyio.Event()
    release = anyio.Event()

    async def holder() -> None:
        async with lock:
            held.set()
            await release.wait()
            await anyio.sleep(0.001)

    async with anyio.create_task_group() as group:
        group.start_soon(holder)
        await held.wait()
        group.start_soon(_hold, lock, 0.0)
        while _waiting(lock) == 0:
            await anyio.sleep(0.001)
        release.set()


def test_all_kinds_on_asyncio_backend(instrument: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core, "LONG_HOLD", 0.0)  # record every hold after a contention
    telemetry = instrument(instrument=LOCKS)

    async def main() -> None:
        lock = anyio.Lock()  # creation site: this line
        await _contend(lock)
        await _contend(name(anyio.Semaphore(1), "sem"))
        await _contend(name(anyio.CapacityLimiter(1), "limiter"))
        await _contend(name(anyio.Condition(), "cond"))

    anyio.run(main, backend="asyncio")
    site = f"{__name__}:{main.__code__.co_firstlineno + 1}"
    assert _contentions(telemetry) == {
        (semconv.LOCK_KIND_ANYIO_LOCK, site): 1,
        (semconv.LOCK_KIND_ANYIO_SEMAPHORE, "sem"): 1,
        (semconv.LOCK_KIND_ANYIO_CAPACITY_LIMITER, "limiter"): 1,
        (semconv.LOCK_KIND_ANYIO_CONDITION, "cond"): 1,
    }
    assert all(outcome == semconv.LOCK_OUTCOME_ACQUIRED for _, _, outcome, _ in _waits(telemetry))
    waits = telemetry.points(semconv.METRIC_LOCK_WAIT_DURATION)
    assert all(p.sum > 0 for p in waits)
    holds = {
        p.attributes[semconv.LOCK_NAME]: p.count
        for p in telemetry.points(semconv.METRIC_LOCK_HOLD_DURATION)
    }
    assert holds["sem"] == holds["limiter"] == holds["cond"] == 1


def test_timed_out_and_cancelled_waits(instrument: Any) -> None:
    telemetry = instrument(instrument=LOCKS)

    async def waits() -> None:
        lock = name(anyio.Lock(), "db")
        async with anyio.create_task_group() as group:
            await lock.acquire()

            async def timed() -> None:
                with anyio.move_on_after(0.01):
                    await lock.acquire()

            async def cancelled(scope: anyio.CancelScope) -> None:
                with scope:
                    await lock.acquire()

            scope = anyio.CancelScope()
            group.start_soon(timed)
            group.start_soon(cancelled, scope)
            await anyio.sleep(0.03)
            scope.cancel()
            await anyio.sleep(0.01)
            lock.release()

    anyio.run(waits, backend="asyncio")
    assert _waits(telemetry) == [
        (semconv.LOCK_KIND_ANYIO_LOCK, "db", semconv.LOCK_OUTCOME_CANCELLED, 1),
        (semconv.LOCK_KIND_ANYIO_LOCK, "db", semconv.LOCK_OUTCOME_TIMED_OUT, 1),
    ]


def test_semantics_unchanged(instrument: Any) -> None:
    instrument(instrument=LOCKS)

    async def main() -> None:
        lock = anyio.Lock()
        async with lock:
            with pytest.raises(RuntimeError, match="already held"):
                await lock.acquire()
            with pytest.raises(RuntimeError, match="already held"):
                lock.acquire_nowait()
        assert lock.acquire_nowait() is None
        lock.release()
        semaphore = anyio.Semaphore(1, max_value=1)
        async with anyio.create_task_group() as group:
            await semaphore.acquire()

            async def try_nowait() -> None:
                with pytest.raises(anyio.WouldBlock):
                    semaphore.acquire_nowait()

            group.start_soon(try_nowait)
        semaphore.release()
        with pytest.raises(ValueError, match="too many"):
            semaphore.release()
        limiter = anyio.CapacityLimiter(1)
        with pytest.raises(RuntimeError, match="isn't holding"):
            limiter.release()
        async with limiter:
            assert limiter.borrowed_tokens == 1
        assert limiter.borrowed_tokens == 0

    anyio.run(main, backend="asyncio")


def test_lock_made_outside_event_loop_reports_its_name(instrument: Any) -> None:
    telemetry = instrument(instrument=LOCKS)
    lock = name(anyio.Lock(), "module-level")  # no loop yet: an anyio LockAdapter

    async def main() -> None:
        await _contend(lock)

    anyio.run(main, backend="asyncio")
    assert _contentions(telemetry) == {(semconv.LOCK_KIND_ANYIO_LOCK, "module-level"): 1}


def test_trio_backend_lock_and_semaphore(instrument: Any) -> None:
    telemetry = instrument(instrument=LOCKS)

    async def main() -> None:
        await _contend(name(anyio.Lock(), "trio-lock"))
        await _contend(name(anyio.Semaphore(1), "trio-sem"))

    anyio.run(main, backend="trio")
    assert _contentions(telemetry) == {
        (semconv.LOCK_KIND_ANYIO_LOCK, "trio-lock"): 1,
        (semconv.LOCK_KIND_ANYIO_SEMAPHORE, "trio-sem"): 1,
    }


def test_held_by_task_that_finished(instrument: Any) -> None:
    instrument(instrument=LOCKS)
    found: list[Any] = []

    async def main() -> None:
        lock = name(anyio.Lock(), "orphan")
        owner: list[Any] = []

        async def forgetful() -> None:
            await lock.acquire()
            owner.append(anyio.get_current_task())
            found.extend(core.held_locks(__import__("asyncio").current_task()))

        async with anyio.create_task_group() as group:
            group.start_soon(forgetful)

    anyio.run(main, backend="asyncio")
    assert [(h.kind, h.name) for h in found] == [(semconv.LOCK_KIND_ANYIO_LOCK, "orphan")]


def test_backend_patched_on_import_and_restored(instrument: Any) -> None:
    import anyio._backends._asyncio as backend

    # anyio >= 4.5 has backend lock classes; before, anyio.Lock is the class itself
    lock_class = backend.Lock if "__new__" in anyio.Lock.__dict__ else anyio.Lock
    originals = {attr: lock_class.__dict__[attr] for attr in ("__init__", "acquire", "release")}
    limiter_original = backend.CapacityLimiter.__dict__["acquire_on_behalf_of"]
    condition_init = anyio.Condition.__dict__["__init__"]
    telemetry = instrument(instrument=LOCKS)
    assert lock_class.__dict__["acquire"] is not originals["acquire"]
    telemetry.uninstrument()
    for attr, original in originals.items():
        assert lock_class.__dict__[attr] is original
    assert backend.CapacityLimiter.__dict__["acquire_on_behalf_of"] is limiter_original
    assert anyio.Condition.__dict__["__init__"] is condition_init
    assert "trio" in sys.modules  # imported by the trio test or now; patched only while active
