"""anyio Lock/Semaphore/Condition/CapacityLimiter metrics: the same on asyncio and on trio."""

from __future__ import annotations

import asyncio
import importlib
import sys
from typing import Any

import anyio
import pytest

from scopewatch import semconv
from scopewatch._core import locks as core
from scopewatch.naming import name

LOCKS = "locks"
BACKENDS = pytest.mark.parametrize("backend", ["asyncio", "trio"])


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


def _current_task(backend: str) -> Any:
    """The backend's own task object (what scopewatch records as the holder)."""
    if backend == "trio":
        import trio

        return trio.lowlevel.current_task()
    return asyncio.current_task()


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


@BACKENDS
def test_all_kinds(instrument: Any, monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    monkeypatch.setattr(core, "LONG_HOLD", 0.0)  # record every hold after a contention
    telemetry = instrument(instrument=LOCKS)

    async def main() -> None:
        lock = anyio.Lock()  # creation site: this line
        await _contend(lock)
        await _contend(name(anyio.Semaphore(1), "sem"))
        await _contend(name(anyio.CapacityLimiter(1), "limiter"))
        await _contend(name(anyio.Condition(), "cond"))

    anyio.run(main, backend=backend)
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


@BACKENDS
def test_timed_out_and_cancelled_waits(instrument: Any, backend: str) -> None:
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

    anyio.run(waits, backend=backend)
    assert _waits(telemetry) == [
        (semconv.LOCK_KIND_ANYIO_LOCK, "db", semconv.LOCK_OUTCOME_CANCELLED, 1),
        (semconv.LOCK_KIND_ANYIO_LOCK, "db", semconv.LOCK_OUTCOME_TIMED_OUT, 1),
    ]


@BACKENDS
def test_semantics_unchanged(instrument: Any, backend: str) -> None:
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

    anyio.run(main, backend=backend)


@BACKENDS
def test_lock_made_outside_event_loop_reports_its_name(instrument: Any, backend: str) -> None:
    telemetry = instrument(instrument=LOCKS)
    lock = name(anyio.Lock(), "module-level")  # no loop yet: an anyio LockAdapter
    limiter = name(anyio.CapacityLimiter(1), "module-limiter")

    async def main() -> None:
        await _contend(lock)
        await _contend(limiter)

    anyio.run(main, backend=backend)
    assert _contentions(telemetry) == {
        (semconv.LOCK_KIND_ANYIO_LOCK, "module-level"): 1,
        (semconv.LOCK_KIND_ANYIO_CAPACITY_LIMITER, "module-limiter"): 1,
    }


@BACKENDS
def test_fast_acquire_waits_are_measured(instrument: Any, backend: str) -> None:
    telemetry = instrument(instrument=LOCKS)

    async def main() -> None:
        await _contend(name(anyio.Lock(fast_acquire=True), "fast-lock"))
        await _contend(name(anyio.Semaphore(1, fast_acquire=True), "fast-sem"))
        for _ in range(10):  # uncontended: no wait, no contention
            async with name(anyio.Lock(fast_acquire=True), "fast-lock"):
                pass

    anyio.run(main, backend=backend)
    assert _contentions(telemetry) == {
        (semconv.LOCK_KIND_ANYIO_LOCK, "fast-lock"): 1,
        (semconv.LOCK_KIND_ANYIO_SEMAPHORE, "fast-sem"): 1,
    }
    assert [outcome for _, _, outcome, _ in _waits(telemetry)] == [
        semconv.LOCK_OUTCOME_ACQUIRED,
        semconv.LOCK_OUTCOME_ACQUIRED,
    ]
    assert core.binary_holds == {}
    assert core.multi_holds == {}


@BACKENDS
def test_held_by_task_that_finished(instrument: Any, backend: str) -> None:
    instrument(instrument=LOCKS)
    found: list[Any] = []

    async def main() -> None:
        lock = name(anyio.Lock(), "orphan")
        semaphore = name(anyio.Semaphore(1), "orphan-sem")

        async def forgetful() -> None:
            await lock.acquire()
            await semaphore.acquire()
            found.extend(core.held_locks(_current_task(backend)))
            lock.release()  # a trio lock's owner must release it before it ends

        async with anyio.create_task_group() as group:
            group.start_soon(forgetful)

    anyio.run(main, backend=backend)
    assert sorted((h.kind, h.name) for h in found) == [
        (semconv.LOCK_KIND_ANYIO_LOCK, "orphan"),
        (semconv.LOCK_KIND_ANYIO_SEMAPHORE, "orphan-sem"),
    ]


@BACKENDS
def test_backend_patched_on_import_and_restored(instrument: Any, backend: str) -> None:
    module = importlib.import_module(f"anyio._backends._{backend}")
    # anyio >= 4.5 has backend lock classes; before, anyio.Lock is the class itself
    generic = "__new__" not in anyio.Lock.__dict__
    classes = [anyio.Lock] if generic else [module.Lock, module.Semaphore, module.CapacityLimiter]
    attributes = ("__init__", "acquire", "acquire_nowait", "release", "acquire_on_behalf_of")
    originals = {(cls, attr): cls.__dict__.get(attr) for cls in classes for attr in attributes}
    condition_init = anyio.Condition.__dict__["__init__"]
    telemetry = instrument(instrument=LOCKS)
    assert classes[0].__dict__["__init__"] is not originals[classes[0], "__init__"]
    telemetry.uninstrument()
    for (cls, attr), original in originals.items():
        assert cls.__dict__.get(attr) is original, (cls, attr)
    assert anyio.Condition.__dict__["__init__"] is condition_init
    assert "trio" in sys.modules  # imported by a trio test or now; patched only while active
