"""DESIGN rule 5: ``uninstrument()`` puts back every original, for every feature and backend.

Nothing here names a target: they are what the patch registry holds while everything is
instrumented and every target library is imported and run. A snapshot of those targets taken
before instrumenting must be back, by identity, after ``uninstrument()``, with the registry empty.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

import anyio
import anyio._backends._asyncio
import anyio._backends._trio
import claude_agent_sdk.client
import mcp.client.client
import mcp.client.session
import pytest
import trio
import uvloop

from scopewatch.instrumentation import FEATURE_MODULES
from scopewatch.instrumentation._patching import REGISTRY, Target

TARGET_LIBRARIES = (anyio._backends._asyncio, anyio._backends._trio, claude_agent_sdk, mcp, trio)
"""Imported above so that their import hooks patch them (they are not read otherwise)."""


async def asyncio_work() -> None:
    """A scope, a task, a lock and an async generator finalized by the loop."""
    lock = asyncio.Lock()
    async with lock:
        await asyncio.create_task(asyncio.sleep(0))
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(1), asyncio.TaskGroup() as group:
            group.create_task(asyncio.sleep(0))

    async def numbers() -> Any:
        yield 1
        yield 2

    async for _ in numbers():
        break


async def anyio_work() -> None:
    lock = anyio.Lock()
    async with lock:
        with anyio.move_on_after(1):
            async with anyio.create_task_group() as group:
                group.start_soon(anyio.sleep, 0)


async def trio_work() -> None:
    async with trio.Lock():
        with trio.move_on_after(1):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.sleep, 0)


BACKENDS: dict[str, Callable[[], object]] = {
    "asyncio": lambda: asyncio.run(asyncio_work()),
    "uvloop": lambda: uvloop.run(asyncio_work()),
    "trio": lambda: trio.run(trio_work),
    "anyio-asyncio": lambda: anyio.run(anyio_work, backend="asyncio"),
    "anyio-trio": lambda: anyio.run(anyio_work, backend="trio"),
}


def run_every_backend() -> None:
    for run in BACKENDS.values():
        run()


def key(target: Target) -> tuple[int, str | None]:
    return id(target.owner), target.name


def discover(instrument: Callable[..., Any]) -> list[Target]:
    """Every target patched with every feature on, after each backend ran once."""
    assert len(REGISTRY) == 0, [(t.owner, t.name) for t in REGISTRY.targets()]
    telemetry = instrument()
    run_every_backend()
    targets = REGISTRY.targets()
    telemetry.uninstrument()
    return targets


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("feature", [*FEATURE_MODULES, "all"])
def test_uninstrument_restores_every_original(instrument, feature, backend):
    targets = discover(instrument)
    assert len(targets) > 20  # every feature patched something
    before = [target.read() for target in targets]
    assert all(now is target.original for now, target in zip(before, targets, strict=True))
    known = {key(target) for target in targets}
    settings = {} if feature == "all" else {"instrument": feature}
    for _cycle in range(2):  # instrument, uninstrument, instrument again
        telemetry = instrument(**settings)
        BACKENDS[backend]()
        patched = REGISTRY.targets()
        assert patched
        assert {key(target) for target in patched} <= known
        assert all(target.read() is not target.original for target in patched)
        telemetry.uninstrument()
        assert len(REGISTRY) == 0
        after = [target.read() for target in targets]
        assert all(now is then for now, then in zip(after, before, strict=True))
        BACKENDS[backend]()  # and the restored originals still work


def test_both_wrappers_of_loop_close_are_taken_off_in_either_order(instrument):
    """``BaseEventLoop.close`` is wrapped by the scopes and the tasks features."""
    from scopewatch.instrumentation import _task_loops, loop_hooks

    original = asyncio.BaseEventLoop.__dict__["close"]
    for first, second in ((loop_hooks, _task_loops), (_task_loops, loop_hooks)):
        telemetry = instrument()
        first.uninstall()
        assert asyncio.BaseEventLoop.__dict__["close"] is not original
        asyncio.run(asyncio_work())
        second.uninstall()
        assert asyncio.BaseEventLoop.__dict__["close"] is original
        telemetry.uninstrument()
        assert len(REGISTRY) == 0
