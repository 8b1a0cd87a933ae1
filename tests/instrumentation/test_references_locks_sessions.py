"""No reference kept to locks (asyncio and anyio, contended or not) and tracked sessions."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import anyio
import pytest

from scopewatch import semconv
from scopewatch._core import locks
from scopewatch.sessions import track_session
from tests.support.references import (
    MODES,
    Probes,
    UserError,
    check,
    run_on_fresh_loop,
)

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


async def lock_workload(probes: Probes) -> None:
    """asyncio and anyio locks, uncontended and contended, held across task switches."""
    made: list[Any] = [
        asyncio.Lock(),
        asyncio.Semaphore(1),
        asyncio.BoundedSemaphore(2),
        anyio.Lock(),
        anyio.Semaphore(1),
    ]
    condition = asyncio.Condition()
    limiter = anyio.CapacityLimiter(1)
    for lock in [*made, condition, limiter]:
        probes.watch(type(lock).__qualname__, lock)

    async def use(lock: Any) -> None:
        async with lock:
            await asyncio.sleep(0.001)

    for _ in range(300):  # past the hold sampling interval: some holds are timed
        for lock in made:
            async with lock:
                pass
    async with anyio.create_task_group() as group:
        for lock in [*made, condition, limiter]:
            for _ in range(3):
                group.start_soon(use, lock)
    del made, condition, limiter, lock, group


@pytest.mark.parametrize("spans", MODES)
def test_locks_are_freed_and_no_holder_is_kept(instrument, spans):
    instrument(spans=spans)
    before = _live_lock_ids()  # locks other tests keep alive on purpose (module-level ones)
    probes = Probes()
    run_on_fresh_loop(lambda: lock_workload(probes))
    check(probes)
    assert _live_lock_ids() <= before


def _live_lock_ids() -> set[int]:
    return {key for key, (ref, _) in list(locks._infos.items()) if ref() is not None}


class FakeMcpSession:
    """An MCP-like client session object (the real MCP SDK is tested in test_mcp_sessions)."""


async def session_workload(probes: Probes) -> None:
    """Sessions tracked with ``track_session``: closed normally, by error, and cross-task."""
    client = FakeMcpSession()
    probes.watch("session client", client)
    tracked = track_session("mcp.ClientSession", name="tools")
    probes.watch("TrackedSession", tracked)
    async with tracked:
        await asyncio.sleep(0)
    with contextlib.suppress(UserError):
        async with track_session("redis"):
            raise UserError("inside the session")
    stored = [track_session("websocket")]

    async def opens() -> None:
        keep = probes.frame("session opener frame")
        await stored[0].__aenter__()
        del keep

    async def closes() -> None:
        await stored[0].__aexit__(None, None, None)

    opener = asyncio.create_task(opens())
    probes.watch("session opener task", opener)
    await opener
    await asyncio.create_task(closes())
    stored.clear()
    del client, tracked, opener


@pytest.mark.parametrize("spans", MODES)
def test_sessions_are_freed(instrument, spans):
    telemetry = instrument(spans=spans)
    probes = Probes()
    run_on_fresh_loop(lambda: session_workload(probes))
    (span,) = telemetry.violation_spans(semconv.KIND_CROSS_TASK_EXIT)
    assert span.name == "session websocket"
    check(probes)
