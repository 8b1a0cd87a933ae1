"""asyncio Lock/Semaphore/BoundedSemaphore/Condition metrics, naming, cap, restore, semantics."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from scopewatch import semconv
from scopewatch._core import locks as core
from scopewatch.naming import name
from scopewatch.telemetry import locks as lock_telemetry
from tests.support.markers import needs_311

LOCKS = "locks"
HERE = __name__


def _points(telemetry: Any, metric: str, kind: str | None = None) -> list[Any]:
    return [
        p
        for p in telemetry.points(metric)
        if kind is None or p.attributes[semconv.LOCK_KIND] == kind
    ]


async def _hold(lock: Any, seconds: float) -> None:
    async with lock:
        await asyncio.sleep(seconds)


def test_contended_lock_records_wait_hold_and_contention(
    instrument: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(core, "LONG_HOLD", 0.05)
    telemetry = instrument(instrument=LOCKS)

    async def main() -> asyncio.Lock:
        lock = asyncio.Lock()  # this line is the lock's name
        await asyncio.gather(_hold(lock, 0.02), _hold(lock, 0.06), _hold(lock, 0.0))
        return lock

    asyncio.run(main())
    site = f"{HERE}:{main.__code__.co_firstlineno + 1}"
    waits = _points(telemetry, semconv.METRIC_LOCK_WAIT_DURATION, semconv.LOCK_KIND_ASYNCIO_LOCK)
    assert len(waits) == 1
    assert dict(waits[0].attributes) == {
        semconv.LOCK_KIND: semconv.LOCK_KIND_ASYNCIO_LOCK,
        semconv.LOCK_NAME: site,
        semconv.LOCK_OUTCOME: semconv.LOCK_OUTCOME_ACQUIRED,
    }
    assert waits[0].count == 2  # the 2nd and 3rd acquisitions waited
    assert waits[0].sum > 0
    contentions = _points(telemetry, semconv.METRIC_LOCK_CONTENTIONS)
    assert [(dict(p.attributes), p.value) for p in contentions] == [
        ({semconv.LOCK_KIND: semconv.LOCK_KIND_ASYNCIO_LOCK, semconv.LOCK_NAME: site}, 2)
    ]
    holds = _points(telemetry, semconv.METRIC_LOCK_HOLD_DURATION)
    # the 1st hold is the sampled one; of the contended ones only the long (>= LONG_HOLD) 2nd
    assert [p.count for p in holds] == [2]
    assert holds[0].sum >= 0.08


def test_uncontended_holds_are_sampled_and_never_waits(instrument: Any) -> None:
    telemetry = instrument(instrument=LOCKS)

    async def main() -> None:
        lock = asyncio.Lock()
        for _ in range(core.HOLD_SAMPLE_EVERY * 2):
            async with lock:
                pass

    asyncio.run(main())
    assert _points(telemetry, semconv.METRIC_LOCK_WAIT_DURATION) == []
    assert _points(telemetry, semconv.METRIC_LOCK_CONTENTIONS) == []
    holds = _points(telemetry, semconv.METRIC_LOCK_HOLD_DURATION)
    assert [p.count for p in holds] == [2]  # the 1st and the 65th of 128


def test_cancelled_wait_outcome_and_semantics(instrument: Any) -> None:
    telemetry = instrument(instrument=LOCKS)

    async def main() -> tuple[bool, bool]:
        lock = name(asyncio.Lock(), "guarded")
        await lock.acquire()
        waiter = asyncio.create_task(lock.acquire())
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        lock.release()
        acquired = await lock.acquire()  # the original return value (True) comes through
        lock.release()
        return acquired, lock.locked()

    assert asyncio.run(main()) == (True, False)
    waits = _points(telemetry, semconv.METRIC_LOCK_WAIT_DURATION)
    assert [
        (p.attributes[semconv.LOCK_NAME], p.attributes[semconv.LOCK_OUTCOME]) for p in waits
    ] == [("guarded", semconv.LOCK_OUTCOME_CANCELLED)]
    assert waits[0].sum > 0


@needs_311
def test_timed_out_wait_with_scopes_feature(instrument: Any) -> None:
    telemetry = instrument(instrument="scopes,locks")

    async def main() -> None:
        lock = name(asyncio.Lock(), "slow")
        await lock.acquire()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await lock.acquire()
        lock.release()

    asyncio.run(main())
    waits = _points(telemetry, semconv.METRIC_LOCK_WAIT_DURATION)
    assert [p.attributes[semconv.LOCK_OUTCOME] for p in waits] == [semconv.LOCK_OUTCOME_TIMED_OUT]


def test_semaphores_and_condition(instrument: Any) -> None:
    telemetry = instrument(instrument=LOCKS)

    async def main() -> None:
        semaphore = name(asyncio.Semaphore(2), "sem")
        bounded = name(asyncio.BoundedSemaphore(1), "bounded")
        condition = name(asyncio.Condition(), "cond")
        await asyncio.gather(*(_hold(semaphore, 0.01) for _ in range(3)))
        await asyncio.gather(_hold(bounded, 0.01), _hold(bounded, 0.0))
        with pytest.raises(ValueError, match="released too many times"):
            bounded.release()  # the original error, unchanged

        ready = []

        async def consumer() -> None:
            async with condition:
                await condition.wait_for(lambda: ready)

        task = asyncio.create_task(consumer())
        await asyncio.sleep(0.01)
        async with condition:
            ready.append(1)
            condition.notify_all()
        await task
        await asyncio.gather(_hold(condition, 0.01), _hold(condition, 0.0))

    asyncio.run(main())
    contentions = {
        (p.attributes[semconv.LOCK_KIND], p.attributes[semconv.LOCK_NAME]): p.value
        for p in _points(telemetry, semconv.METRIC_LOCK_CONTENTIONS)
    }
    assert contentions[(semconv.LOCK_KIND_ASYNCIO_SEMAPHORE, "sem")] == 1
    assert contentions[(semconv.LOCK_KIND_ASYNCIO_BOUNDED_SEMAPHORE, "bounded")] == 1
    # measured through the condition's own lock, reported under the condition's kind and name
    assert contentions[(semconv.LOCK_KIND_ASYNCIO_CONDITION, "cond")] == 1
    assert not any(kind == semconv.LOCK_KIND_ASYNCIO_LOCK for kind, _ in contentions)


def test_name_cap_overflows_to_other(instrument: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core, "MAX_NAMES", 3)
    telemetry = instrument(instrument=LOCKS)

    async def main() -> None:
        for index in range(5):
            lock = name(asyncio.Lock(), f"lock-{index}")
            await asyncio.gather(_hold(lock, 0.001), _hold(lock, 0.0))

    asyncio.run(main())
    names = sorted(
        p.attributes[semconv.LOCK_NAME] for p in _points(telemetry, semconv.METRIC_LOCK_CONTENTIONS)
    )
    assert names == ["lock-0", "lock-1", "lock-2", semconv.LOCK_NAME_OVERFLOW]
    overflow = [
        p
        for p in _points(telemetry, semconv.METRIC_LOCK_CONTENTIONS)
        if p.attributes[semconv.LOCK_NAME] == semconv.LOCK_NAME_OVERFLOW
    ]
    assert overflow[0].value == 2  # lock-3 and lock-4 share "other"


def test_lock_created_before_instrumenting_is_unknown(instrument: Any) -> None:
    early = asyncio.Lock()
    telemetry = instrument(instrument=LOCKS)

    async def main() -> None:
        await asyncio.gather(_hold(early, 0.001), _hold(early, 0.0))

    asyncio.run(main())
    contentions = _points(telemetry, semconv.METRIC_LOCK_CONTENTIONS)
    assert [p.attributes[semconv.LOCK_NAME] for p in contentions] == [semconv.LOCK_NAME_UNKNOWN]


def test_held_locks_hook_and_event(instrument: Any) -> None:
    telemetry = instrument(instrument=LOCKS)
    seen: list[Any] = []

    async def main() -> None:
        lock = name(asyncio.Lock(), "leaked")
        semaphore = name(asyncio.Semaphore(2), "pool")

        async def forgetful() -> None:
            await lock.acquire()
            await semaphore.acquire()
            task = asyncio.current_task()
            seen.extend(core.held_locks(task))
            span = telemetry.tracer_provider.get_tracer("test").start_span("task forgetful")
            assert lock_telemetry.add_held_at_end_events(span, task) == 2
            span.end()

        await asyncio.create_task(forgetful())
        lock.release()  # another task may release an asyncio.Lock: the hold ends
        assert core.held_locks(asyncio.current_task()) == []

    asyncio.run(main())
    assert sorted((h.kind, h.name) for h in seen) == [
        (semconv.LOCK_KIND_ASYNCIO_LOCK, "leaked"),
        (semconv.LOCK_KIND_ASYNCIO_SEMAPHORE, "pool"),
    ]
    (span,) = telemetry.spans("task forgetful")
    events = [dict(e.attributes) for e in span.events if e.name == semconv.EVENT_LOCK_HELD_AT_END]
    assert sorted(e[semconv.LOCK_NAME] for e in events) == ["leaked", "pool"]
    by_name = {e[semconv.LOCK_NAME]: e for e in events}
    # the first hold after instrumenting is a sampled (timed) one; the next is not
    assert by_name["leaked"][semconv.LOCK_HELD_FOR] >= 0
    assert semconv.LOCK_HELD_FOR not in by_name["pool"]


def test_uninstrument_restores_originals(instrument: Any) -> None:
    originals = {
        (cls, attr): cls.__dict__[attr]
        for cls, attr in (
            (asyncio.Lock, "__init__"),
            (asyncio.Lock, "acquire"),
            (asyncio.Lock, "release"),
            (asyncio.Semaphore, "__init__"),
            (asyncio.Semaphore, "acquire"),
            (asyncio.Semaphore, "release"),
            (asyncio.Condition, "__init__"),
        )
    }
    bounded_release = asyncio.BoundedSemaphore.__dict__["release"]
    telemetry = instrument(instrument=LOCKS)
    assert asyncio.Lock.__dict__["acquire"] is not originals[(asyncio.Lock, "acquire")]
    assert "__aenter__" in asyncio.Lock.__dict__  # the uncontended fast path
    telemetry.uninstrument()
    assert "__aenter__" not in asyncio.Lock.__dict__  # inherited again
    assert "__aexit__" not in asyncio.Lock.__dict__
    for (cls, attr), original in originals.items():
        assert cls.__dict__[attr] is original, (cls, attr)
    assert asyncio.BoundedSemaphore.__dict__["release"] is bounded_release
    assert not core.ACTIVE


def test_condition_made_while_instrumenting_keeps_working_after(instrument: Any) -> None:
    telemetry = instrument(instrument=LOCKS)
    condition = asyncio.Condition()  # holds bound wrappers of its lock from now on
    telemetry.uninstrument()

    async def main() -> bool:
        async with condition:
            condition.notify_all()
            return condition.locked()

    assert asyncio.run(main()) is True
    assert _points(telemetry, semconv.METRIC_LOCK_CONTENTIONS) == []


def test_task_ending_with_locks_held_gets_held_at_end_events(instrument: Any) -> None:
    telemetry = instrument(instrument="locks,tasks", spans="all")

    async def forgetful(lock: asyncio.Lock, semaphore: asyncio.Semaphore) -> None:
        await lock.acquire()
        await semaphore.acquire()

    async def tidy(lock: asyncio.Lock) -> None:
        async with lock:
            pass

    async def main() -> None:
        lock = name(asyncio.Lock(), "leaked")
        semaphore = name(asyncio.Semaphore(2), "pool")
        await asyncio.create_task(forgetful(lock, semaphore))
        lock.release()
        await asyncio.create_task(tidy(lock))

    asyncio.run(main())
    events = {
        span.name: [
            (e.attributes or {}).get(semconv.LOCK_NAME)
            for e in span.events
            if e.name == semconv.EVENT_LOCK_HELD_AT_END
        ]
        for span in telemetry.spans()
        if span.name.startswith(semconv.SPAN_TASK_PREFIX)
    }
    assert sorted(events[next(n for n in events if n.endswith("forgetful"))]) == ["leaked", "pool"]
    assert events[next(n for n in events if n.endswith("tidy"))] == []


def _lock_scenario() -> list[Any]:
    """``async with`` on free, busy, queued and misused locks: what the program observes."""
    seen: list[Any] = []

    class Counting(asyncio.Lock):
        async def acquire(self) -> bool:
            seen.append("own acquire")
            return await super().acquire()

    async def main() -> None:
        lock = asyncio.Lock()
        async with lock as entered:
            seen.append((entered, lock.locked()))
        seen.append(lock.locked())
        order: list[str] = []

        async def worker(label: str) -> None:
            async with lock:
                order.append(label)
                await asyncio.sleep(0)

        await asyncio.gather(*(worker(label) for label in "abc"))
        seen.append("".join(order))
        with pytest.raises(KeyError):
            async with lock:
                raise KeyError("body")
        seen.append(lock.locked())
        try:
            await lock.__aexit__(None, None, None)
        except RuntimeError as error:
            seen.append(str(error))
        async with Counting():
            seen.append("counted")
        waiter = asyncio.create_task(worker("late"))
        async with lock:
            await asyncio.sleep(0)  # the waiter queues, then is cancelled
            waiter.cancel()
            await asyncio.sleep(0)
        seen.append((waiter.cancelled(), lock.locked(), order[-1]))

    asyncio.run(main())
    return seen


def test_async_with_fast_path_is_asyncios_own(instrument: Any) -> None:
    expected = _lock_scenario()
    telemetry = instrument(instrument=LOCKS)
    assert _lock_scenario() == expected
    assert expected[-1] == (True, False, "c")
    contended = sum(p.value for p in telemetry.points(semconv.METRIC_LOCK_CONTENTIONS))
    assert contended >= 2  # b and c waited for a (the fast path is taken only when free)


def test_short_waits_are_counted_exactly_but_not_measured(
    instrument: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(core, "LONG_WAIT", 60.0)  # every wait here is "short"
    telemetry = instrument(instrument=LOCKS)
    rounds = 20

    async def main() -> None:
        lock = asyncio.Lock()

        async def worker() -> None:
            for _ in range(rounds):
                async with lock:
                    await asyncio.sleep(0)

        await asyncio.gather(worker(), worker())

    asyncio.run(main())
    assert _points(telemetry, semconv.METRIC_LOCK_WAIT_DURATION) == []  # no SDK record
    (contentions,) = _points(telemetry, semconv.METRIC_LOCK_CONTENTIONS)
    assert contentions.value == 2 * rounds - 1  # every acquisition but the first waited
