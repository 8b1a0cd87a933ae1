"""Every lock wrapper samples and times uncontended holds alike (the one ``core.sample``).

The hot paths inline the countdown of ``_core.locks.sample``; these tests take each way of
acquiring each kind of lock, asyncio, anyio and trio, through the same number of uncontended
acquisitions and check the same holds are sampled, timed from ``time.perf_counter``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
import trio

from scopewatch._core import locks as core

LOCKS = "locks"
ROUNDS = core.HOLD_SAMPLE_EVERY * 2 + 1
EXPECTED = [0, core.HOLD_SAMPLE_EVERY, core.HOLD_SAMPLE_EVERY * 2]
"""The acquisitions whose hold is sampled, counting from a fresh ``instrument()``."""


async def _async_with(lock: Any) -> Callable[[], Any]:
    context = lock.__aenter__()
    await context
    return lambda: lock.__aexit__(None, None, None)


async def _acquire(lock: Any) -> Callable[[], Any]:
    await lock.acquire()
    return lock.release


async def _acquire_nowait(lock: Any) -> Callable[[], Any]:
    lock.acquire_nowait()
    return lock.release


Way = Callable[[Any], Awaitable[Callable[[], Any]]]
ASYNCIO_CASES: dict[str, tuple[Callable[[], Any], Way]] = {
    "asyncio.Lock async with": (asyncio.Lock, _async_with),
    "asyncio.Lock acquire": (asyncio.Lock, _acquire),
    "asyncio.Semaphore acquire": (lambda: asyncio.Semaphore(1), _acquire),
    "anyio.Lock acquire": (anyio.Lock, _acquire),
    "anyio.Lock acquire_nowait": (anyio.Lock, _acquire_nowait),
    "anyio.Semaphore acquire": (lambda: anyio.Semaphore(1), _acquire),
    "anyio.CapacityLimiter acquire": (lambda: anyio.CapacityLimiter(1), _acquire),
}
TRIO_CASES: dict[str, tuple[Callable[[], Any], Way]] = {
    "trio.Lock acquire": (trio.Lock, _acquire),
    "trio.Lock acquire_nowait": (trio.Lock, _acquire_nowait),
    "trio.Semaphore acquire": (lambda: trio.Semaphore(1), _acquire),
    "trio.CapacityLimiter acquire": (lambda: trio.CapacityLimiter(1), _acquire),
}


def _hold(lock: Any) -> tuple[float, bool | float]:
    """``(start, record)`` of the newest hold of ``lock``."""
    entry = core.binary_holds.get(id(lock))
    if entry is not None:
        return entry[2], entry[3]
    _, start, record = core.multi_holds[id(lock)][1][-1]
    return start, record


async def _sampled(factory: Callable[[], Any], way: Way) -> list[int]:
    """The acquisitions (of ``ROUNDS``) whose hold is timed; asserts each hold's shape."""
    lock = factory()
    sampled: list[int] = []
    for index in range(ROUNDS):
        before = time.perf_counter()
        release = await way(lock)
        start, record = _hold(lock)
        if record is True:
            assert before <= start <= time.perf_counter()
            sampled.append(index)
        else:
            assert (start, record) == (0.0, False)  # not timed
        result = release()
        if result is not None:
            await result
    assert core.binary_holds == {}
    assert core.multi_holds == {}
    return sampled


def test_core_sample_is_the_reference(instrument: Any) -> None:
    instrument(instrument=LOCKS)
    assert [index for index in range(ROUNDS) if core.sample()] == EXPECTED


@pytest.mark.parametrize("case", list(ASYNCIO_CASES))
def test_asyncio_and_anyio_sample_alike(instrument: Any, case: str) -> None:
    instrument(instrument=LOCKS)
    assert asyncio.run(_sampled(*ASYNCIO_CASES[case])) == EXPECTED


@pytest.mark.parametrize("case", list(TRIO_CASES))
def test_trio_samples_alike(instrument: Any, case: str) -> None:
    instrument(instrument=LOCKS)
    assert trio.run(_sampled, *TRIO_CASES[case]) == EXPECTED
