"""trio Lock/StrictFIFOLock/Semaphore/CapacityLimiter/Condition metrics, names and holds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing

from scopewatch import semconv
from scopewatch._core import locks as core
from scopewatch.naming import name
from scopewatch.telemetry import locks as lock_telemetry

LOCKS = "locks"
HERE = __name__

FACTORIES: dict[str, Callable[[], Any]] = {
    semconv.LOCK_KIND_TRIO_LOCK: trio.Lock,
    semconv.LOCK_KIND_TRIO_STRICT_FIFO_LOCK: trio.StrictFIFOLock,
    semconv.LOCK_KIND_TRIO_SEMAPHORE: lambda: trio.Semaphore(1),
    semconv.LOCK_KIND_TRIO_CAPACITY_LIMITER: lambda: trio.CapacityLimiter(1),
    semconv.LOCK_KIND_TRIO_CONDITION: trio.Condition,
}


def _points(telemetry: Any, metric: str) -> list[Any]:
    return list(telemetry.points(metric))


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
        await trio.sleep(seconds)


async def _contend(lock: Any, waiters: int = 1) -> None:
    """Hold ``lock`` until ``waiters`` other tasks are certainly parked on it."""
    async with trio.open_nursery() as nursery:
        await lock.acquire()
        for _ in range(waiters):
            nursery.start_soon(_hold, lock, 0.0)
        await trio.testing.wait_all_tasks_blocked()
        lock.release()


def test_contended_lock_records_wait_hold_and_contention(
    instrument: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(core, "LONG_HOLD", 0.05)
    telemetry = instrument(instrument=LOCKS)

    async def main() -> None:
        lock = trio.Lock()  # this line is the lock's name
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_hold, lock, 0.02)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(_hold, lock, 0.06)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(_hold, lock, 0.0)

    trio.run(main)
    site = f"{HERE}:{main.__code__.co_firstlineno + 1}"
    waits = _points(telemetry, semconv.METRIC_LOCK_WAIT_DURATION)
    assert len(waits) == 1
    assert dict(waits[0].attributes) == {
        semconv.LOCK_KIND: semconv.LOCK_KIND_TRIO_LOCK,
        semconv.LOCK_NAME: site,
        semconv.LOCK_OUTCOME: semconv.LOCK_OUTCOME_ACQUIRED,
    }
    assert waits[0].count == 2  # the 2nd and 3rd acquisitions waited
    assert waits[0].sum > 0
    assert _contentions(telemetry) == {(semconv.LOCK_KIND_TRIO_LOCK, site): 2}
    holds = _points(telemetry, semconv.METRIC_LOCK_HOLD_DURATION)
    # the 1st hold is the sampled one; of the contended ones only the long (>= LONG_HOLD) 2nd
    assert [p.count for p in holds] == [2]
    assert holds[0].sum >= 0.08


@pytest.mark.parametrize("kind", list(FACTORIES))
def test_every_kind_contended_with_its_name(
    instrument: Any, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    monkeypatch.setattr(core, "LONG_HOLD", 0.0)  # record every hold after a contention
    monkeypatch.setattr(core, "LONG_WAIT", 0.0)  # and every wait, however short
    telemetry = instrument(instrument=LOCKS)

    async def main() -> None:
        await _contend(name(FACTORIES[kind](), "shared"), waiters=2)

    trio.run(main)
    # a Condition is measured through its own trio.Lock, reported as the Condition
    assert _contentions(telemetry) == {(kind, "shared"): 2}
    assert _waits(telemetry) == [(kind, "shared", semconv.LOCK_OUTCOME_ACQUIRED, 2)]
    holds = _points(telemetry, semconv.METRIC_LOCK_HOLD_DURATION)
    assert [(p.attributes[semconv.LOCK_KIND], p.count) for p in holds] == [(kind, 3)]


@pytest.mark.parametrize("kind", list(FACTORIES))
def test_uncontended_holds_are_sampled_and_never_waits(instrument: Any, kind: str) -> None:
    telemetry = instrument(instrument=LOCKS)

    async def main() -> None:
        lock = FACTORIES[kind]()
        for _ in range(core.HOLD_SAMPLE_EVERY * 2):
            async with lock:
                pass
        for _ in range(core.HOLD_SAMPLE_EVERY):  # the *_nowait forms are sampled alike
            lock.acquire_nowait()
            lock.release()

    trio.run(main)
    assert _points(telemetry, semconv.METRIC_LOCK_WAIT_DURATION) == []
    assert _points(telemetry, semconv.METRIC_LOCK_CONTENTIONS) == []
    holds = _points(telemetry, semconv.METRIC_LOCK_HOLD_DURATION)
    assert [(p.attributes[semconv.LOCK_KIND], p.count) for p in holds] == [(kind, 3)]
    assert core.binary_holds == {}
    assert core.multi_holds == {}  # every hold ended with its release


def test_cancelled_wait_outcome_and_semantics(instrument: Any) -> None:
    telemetry = instrument(instrument=LOCKS)
    seen: list[type[BaseException]] = []

    async def waiter(lock: trio.Lock, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            try:
                await lock.acquire()
            except trio.Cancelled as cancelled:
                seen.append(type(cancelled))
                raise
        seen.append(type(None) if scope.cancelled_caught else RuntimeError)

    async def main() -> tuple[Any, ...]:
        lock = name(trio.Lock(), "guarded")
        await lock.acquire()
        async with trio.open_nursery() as nursery:
            scope = await nursery.start(waiter, lock)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
        statistics = lock.statistics()
        lock.release()
        acquired = await lock.acquire()  # the original return value (None) comes through
        lock.release()
        return acquired, statistics.locked, statistics.tasks_waiting, lock.locked()

    assert trio.run(main) == (None, True, 0, False)
    assert seen == [trio.Cancelled, type(None)]
    assert _waits(telemetry) == [
        (semconv.LOCK_KIND_TRIO_LOCK, "guarded", semconv.LOCK_OUTCOME_CANCELLED, 1)
    ]


def test_timed_out_waits_and_app_errors_unchanged(instrument: Any) -> None:
    telemetry = instrument(instrument=LOCKS)

    async def main() -> bool:
        lock = name(trio.Lock(), "slow")
        semaphore = name(trio.Semaphore(0), "empty")
        release = trio.Event()

        async def holder() -> None:
            async with lock:
                await release.wait()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(holder)
            await trio.testing.wait_all_tasks_blocked()
            with trio.move_on_after(0.01) as scope:
                await lock.acquire()
            with pytest.raises(trio.TooSlowError):
                with trio.fail_after(0.01):
                    await semaphore.acquire()
            release.set()
        return scope.cancelled_caught

    assert trio.run(main) is True
    assert _waits(telemetry) == [
        (semconv.LOCK_KIND_TRIO_LOCK, "slow", semconv.LOCK_OUTCOME_TIMED_OUT, 1),
        (semconv.LOCK_KIND_TRIO_SEMAPHORE, "empty", semconv.LOCK_OUTCOME_TIMED_OUT, 1),
    ]


def test_condition_wait_retakes_a_tracked_hold(instrument: Any) -> None:
    instrument(instrument=LOCKS)
    held: list[list[tuple[str, str]]] = []

    async def consumer(condition: trio.Condition, ready: list[int]) -> None:
        async with condition:
            while not ready:
                await condition.wait()  # woken on the lock's lot: no acquire() call
            held.append([(h.kind, h.name) for h in core.held_locks(trio.lowlevel.current_task())])

    async def main() -> None:
        condition = name(trio.Condition(), "cond")
        ready: list[int] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consumer, condition, ready)
            await trio.testing.wait_all_tasks_blocked()
            async with condition:
                ready.append(1)
                condition.notify_all()
        assert core.binary_holds == {}  # the consumer's release ended the re-taken hold

    trio.run(main)
    assert held == [[(semconv.LOCK_KIND_TRIO_CONDITION, "cond")]]


def test_capacity_limiter_on_behalf_of_a_borrower(instrument: Any) -> None:
    telemetry = instrument(instrument=LOCKS)
    borrower = object()  # e.g. trio.to_thread's placeholder for a thread

    async def main() -> list[tuple[str, str]]:
        limiter = name(trio.CapacityLimiter(1), "threads")
        await limiter.acquire_on_behalf_of(borrower)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_hold, limiter, 0.0)
            await trio.testing.wait_all_tasks_blocked()
            held = [(h.kind, h.name) for h in core.held_locks(borrower)]
            limiter.release_on_behalf_of(borrower)
        return held

    assert trio.run(main) == [(semconv.LOCK_KIND_TRIO_CAPACITY_LIMITER, "threads")]
    assert _contentions(telemetry) == {(semconv.LOCK_KIND_TRIO_CAPACITY_LIMITER, "threads"): 1}
    assert core.multi_holds == {}


def test_name_cap_overflows_to_other(instrument: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core, "MAX_NAMES", 3)
    telemetry = instrument(instrument=LOCKS)

    async def main() -> None:
        for index in range(5):
            await _contend(name(trio.Lock(), f"lock-{index}"))

    trio.run(main)
    assert _contentions(telemetry) == {
        (semconv.LOCK_KIND_TRIO_LOCK, "lock-0"): 1,
        (semconv.LOCK_KIND_TRIO_LOCK, "lock-1"): 1,
        (semconv.LOCK_KIND_TRIO_LOCK, "lock-2"): 1,
        (semconv.LOCK_KIND_TRIO_LOCK, semconv.LOCK_NAME_OVERFLOW): 2,  # lock-3 and lock-4
    }


def test_lock_created_before_instrumenting_is_unknown(instrument: Any) -> None:
    early = trio.Lock()
    telemetry = instrument(instrument=LOCKS)

    async def main() -> None:
        await _contend(early)

    trio.run(main)
    assert _contentions(telemetry) == {(semconv.LOCK_KIND_TRIO_LOCK, semconv.LOCK_NAME_UNKNOWN): 1}


def test_held_locks_hook_and_event(instrument: Any) -> None:
    telemetry = instrument(instrument=LOCKS)
    seen: list[Any] = []

    async def forgetful(lock: Any, semaphore: Any, limiter: Any) -> None:
        await lock.acquire()
        await semaphore.acquire()
        await limiter.acquire()
        task = trio.lowlevel.current_task()
        seen.extend(core.held_locks(task))
        span = telemetry.tracer_provider.get_tracer("test").start_span("task forgetful")
        assert lock_telemetry.add_held_at_end_events(span, task) == 3
        span.end()
        lock.release()  # only its owner may release a trio.Lock
        limiter.release()

    async def main() -> None:
        lock = name(trio.Lock(), "leaked")
        semaphore = name(trio.Semaphore(2), "pool")
        limiter = name(trio.CapacityLimiter(2), "limit")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(forgetful, lock, semaphore, limiter)
        semaphore.release()  # another task may release a trio.Semaphore: the hold ends
        assert core.held_locks(trio.lowlevel.current_task()) == []

    trio.run(main)
    assert sorted((h.kind, h.name) for h in seen) == [
        (semconv.LOCK_KIND_TRIO_CAPACITY_LIMITER, "limit"),
        (semconv.LOCK_KIND_TRIO_LOCK, "leaked"),
        (semconv.LOCK_KIND_TRIO_SEMAPHORE, "pool"),
    ]
    (span,) = telemetry.spans("task forgetful")
    events = [dict(e.attributes) for e in span.events if e.name == semconv.EVENT_LOCK_HELD_AT_END]
    by_name = {e[semconv.LOCK_NAME]: e for e in events}
    assert sorted(by_name) == ["leaked", "limit", "pool"]
    # the first hold after instrumenting is a sampled (timed) one; the semaphore's is not
    assert by_name["leaked"][semconv.LOCK_HELD_FOR] >= 0
    assert semconv.LOCK_HELD_FOR not in by_name["pool"]
    assert core.binary_holds == {}
    assert core.multi_holds == {}


def test_to_thread_limiter_borrowed_on_behalf_of_threads(instrument: Any) -> None:
    telemetry = instrument(instrument=LOCKS)
    started = []

    def blocking(index: int) -> int:
        started.append(index)
        return index * 2

    async def main() -> list[int]:
        limiter = name(trio.CapacityLimiter(1), "threads")
        results: list[int] = []

        async def one(index: int) -> None:
            results.append(await trio.to_thread.run_sync(blocking, index, limiter=limiter))

        async with trio.open_nursery() as nursery:
            for index in range(3):
                nursery.start_soon(one, index)
        return sorted(results)

    assert trio.run(main) == [0, 2, 4]
    assert sorted(started) == [0, 1, 2]
    contentions = _contentions(telemetry)
    # the 2nd and 3rd threads waited for the one token (the release comes from the run loop)
    assert contentions == {(semconv.LOCK_KIND_TRIO_CAPACITY_LIMITER, "threads"): 2}
    assert core.multi_holds == {}


def test_task_ending_with_locks_held_gets_held_at_end_events(instrument: Any) -> None:
    telemetry = instrument(instrument="locks,tasks", spans="all")

    async def forgetful(semaphore: trio.Semaphore, limiter: trio.CapacityLimiter) -> None:
        await semaphore.acquire()
        await limiter.acquire()

    async def tidy(lock: trio.Lock) -> None:
        async with lock:
            pass

    async def main() -> None:
        semaphore = name(trio.Semaphore(2), "pool")
        limiter = name(trio.CapacityLimiter(2), "limit")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(forgetful, semaphore, limiter)
            nursery.start_soon(tidy, trio.Lock())

    trio.run(main)
    events = {
        span.name: [
            (e.attributes or {}).get(semconv.LOCK_NAME)
            for e in span.events
            if e.name == semconv.EVENT_LOCK_HELD_AT_END
        ]
        for span in telemetry.spans()
        if span.name.startswith(semconv.SPAN_TASK_PREFIX)
    }
    assert sorted(events[next(n for n in events if n.endswith("forgetful"))]) == ["limit", "pool"]
    assert events[next(n for n in events if n.endswith("tidy"))] == []
