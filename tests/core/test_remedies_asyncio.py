"""The asyncio remedies: each buggy program commits a violation, the same with the remedy none."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest

from scopewatch import semconv
from scopewatch.remedies import OwnedContext, OwnedGenerator, hold_in_task, safe_aiter

ASYNCIO_KINDS = ["asyncio.timeout", "asyncio.TaskGroup"] if sys.version_info >= (3, 11) else []
CLIENT_KINDS = ["anyio.TaskGroup", *ASYNCIO_KINDS]
GENERATOR_KINDS = ["anyio.fail_after", *ASYNCIO_KINDS[:1]]
"""Scopes a generator yields inside. Not a task group: anyio's and asyncio's wrap the
GeneratorExit of any close in an exception group, so such a generator cannot be closed cleanly
in any task (it must be restructured: run its body in a task and stream the items)."""


class SyncScope:
    """``async with`` around a synchronous scope (anyio's ``fail_after``)."""

    def __init__(self, scope: Any) -> None:
        self.scope = scope

    async def __aenter__(self) -> Any:
        return self.scope.__enter__()

    async def __aexit__(self, *exc: Any) -> Any:
        return self.scope.__exit__(*exc)


def open_scope(kind: str) -> contextlib.AbstractAsyncContextManager[Any]:
    """A fresh async scope of ``kind`` (what SDK clients and generators open inside)."""
    if kind == "anyio.TaskGroup":
        return anyio.create_task_group()
    if kind == "anyio.fail_after":
        return SyncScope(anyio.fail_after(60))
    if kind == "asyncio.timeout":
        return asyncio.timeout(60)
    return asyncio.TaskGroup()


@pytest.fixture(params=["anomalies", "all"])
def telemetry(request: pytest.FixtureRequest, instrument: Callable[..., Any]) -> Any:
    return instrument(spans=request.param)


@pytest.fixture(params=CLIENT_KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=GENERATOR_KINDS)
def gen_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def violations(telemetry: Any) -> list[tuple[str, str]]:
    return [
        (event[semconv.VIOLATION_KIND], event[semconv.VIOLATION_CAUSE])
        for event in telemetry.violation_events()
    ]


# --- a client kept on an object and closed from another task ------------------------------------


class Client:
    """Like an SDK client: a scope is open between ``__aenter__`` and ``__aexit__``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.closed_in: str | None = None

    async def __aenter__(self) -> Client:
        self._scope = open_scope(self.kind)
        await self._scope.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> Any:
        task = asyncio.current_task()
        self.closed_in = task.get_name() if task else None
        return await self._scope.__aexit__(*exc)


class BuggyService:
    async def connect(self, kind: str) -> None:
        self._stack = contextlib.AsyncExitStack()
        self.client = await self._stack.enter_async_context(Client(kind))

    async def shutdown(self) -> None:
        await self._stack.aclose()


class FixedService:
    async def connect(self, kind: str) -> None:
        self._owned = await hold_in_task(Client(kind))  # the one-line fix
        self.client = self._owned.value

    async def shutdown(self) -> None:
        await self._owned.aclose()


async def connect_then_shut_down_elsewhere(service: Any, kind: str) -> Client:
    await service.connect(kind)
    with contextlib.suppress(RuntimeError):  # anyio refuses the cross-task exit
        await asyncio.create_task(service.shutdown(), name="shutdown hook")
    return service.client  # type: ignore[no-any-return]


def test_client_closed_from_another_task(telemetry: Any, kind: str) -> None:
    asyncio.run(connect_then_shut_down_elsewhere(BuggyService(), kind))
    assert (semconv.KIND_CROSS_TASK_EXIT, semconv.CAUSE_OTHER_TASK) in violations(telemetry)


def test_hold_in_task_closes_in_the_owner_task(telemetry: Any, kind: str) -> None:
    client = asyncio.run(connect_then_shut_down_elsewhere(FixedService(), kind))
    assert client.closed_in == "owner of Client"
    assert violations(telemetry) == []


def test_owned_context_dropped_unclosed_is_exited_by_its_owner(telemetry: Any, kind: str) -> None:
    async def main() -> Client:
        owned = OwnedContext(Client(kind))
        client = await owned.start()
        del owned
        gc.collect()
        for _ in range(5):
            await asyncio.sleep(0)
        assert client.closed_in == "owner of Client"
        return client

    asyncio.run(main())
    assert violations(telemetry) == []


def test_owned_context_as_context_manager_and_from_another_loop(telemetry: Any, kind: str) -> None:
    async def as_context_manager() -> None:
        async with OwnedContext(Client(kind), name="holder") as client:
            assert client.closed_in is None
        assert client.closed_in == "holder"

    asyncio.run(as_context_manager())

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever)
    thread.start()
    try:
        owned = asyncio.run_coroutine_threadsafe(hold_in_task(Client(kind)), loop).result(10)
        asyncio.run(owned.aclose())  # another thread, another loop
        assert owned.closed
        assert owned.value.closed_in == "owner of Client"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
    assert violations(telemetry) == []


def test_owned_context_errors_reach_the_caller(instrument: Callable[..., Any]) -> None:
    telemetry = instrument()

    class FailsToEnter:
        async def __aenter__(self) -> None:
            raise ConnectionError("refused")

        async def __aexit__(self, *exc: Any) -> None:
            raise AssertionError("never entered")

    class FailsToExit:
        async def __aenter__(self) -> str:
            return "value"

        async def __aexit__(self, *exc: Any) -> None:
            raise OSError("broken pipe")

    class HangsOnExit:
        cancelled = False

        async def __aenter__(self) -> None:
            return None

        async def __aexit__(self, *exc: Any) -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                HangsOnExit.cancelled = True
                raise

    async def main() -> None:
        with pytest.raises(ConnectionError, match="refused"):
            await hold_in_task(FailsToEnter())
        owned = await hold_in_task(FailsToExit())
        assert owned.value == "value"
        with pytest.raises(OSError, match="broken pipe"):
            await owned.aclose()
        hanging = await hold_in_task(HangsOnExit())
        await hanging.aclose(timeout=0.01)
        assert HangsOnExit.cancelled and hanging.closed

    asyncio.run(main())
    assert violations(telemetry) == []


# --- an async generator abandoned by break, an exception or a cancellation ---------------------


async def ticks(kind: str, closed: list[str], count: int = 10) -> AsyncIterator[int]:
    try:
        if kind == "anyio.fail_after":
            with anyio.fail_after(60):
                for tick in range(count):
                    yield tick
        else:
            async with open_scope(kind):
                for tick in range(count):
                    yield tick
    finally:
        task = asyncio.current_task()
        closed.append(task.get_name() if task else "")


async def consume(iterator: AsyncIterator[int], how: str) -> None:
    async for tick in iterator:
        if tick == 1:
            if how == "break":
                break
            if how == "raise":
                raise ValueError("consumer failed")
            asyncio.current_task().cancel()  # type: ignore[union-attr]
            await asyncio.sleep(0)


async def run_consumer(consumer: Any) -> None:
    task = asyncio.create_task(consumer, name="consumer")
    with contextlib.suppress(ValueError, asyncio.CancelledError):
        await task
    with contextlib.suppress(asyncio.CancelledError):  # anyio may cancel the host task
        for _ in range(10):
            await asyncio.sleep(0)


@pytest.mark.parametrize("how", ["break", "raise", "cancel"])
def test_abandoned_generator_is_closed_by_the_loop(telemetry: Any, gen_kind: str, how: str) -> None:
    closed: list[str] = []
    asyncio.run(run_consumer(consume(ticks(gen_kind, closed), how)))
    assert closed and closed != ["consumer"]
    assert {
        (semconv.KIND_CROSS_TASK_EXIT, semconv.CAUSE_ASYNCGEN_FINALIZER),
        (semconv.KIND_CROSS_TASK_EXIT, semconv.CAUSE_ASYNCGEN_SHUTDOWN),
    } & set(violations(telemetry))


@pytest.mark.parametrize("how", ["break", "raise", "cancel"])
def test_safe_aiter_closes_in_the_consuming_task(telemetry: Any, gen_kind: str, how: str) -> None:
    closed: list[str] = []

    async def consumer() -> None:
        async with safe_aiter(ticks(gen_kind, closed), close_timeout=5) as it:  # the fix
            await consume(it, how)

    asyncio.run(run_consumer(consumer()))
    assert closed == ["consumer"]
    assert violations(telemetry) == []


def test_safe_aiter_bounds_the_close(
    telemetry: Any, gen_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def slow_cleanup() -> AsyncIterator[int]:
        async with open_scope(gen_kind):
            try:
                yield 1
            finally:
                await asyncio.Event().wait()  # never set: only the close timeout ends it

    async def main() -> None:
        async with safe_aiter(slow_cleanup(), close_timeout=0.01) as it:
            async for _ in it:
                break

    with caplog.at_level(logging.WARNING, logger="scopewatch"):
        asyncio.run(main())
    assert "slow_cleanup took longer than close_timeout=0.01s; its cleanup was cancelled" in (
        caplog.text
    )
    assert violations(telemetry) == []


# --- each step of an async generator in a fresh task -------------------------------------------


async def step_in_fresh_tasks(stream: Any) -> list[int]:
    items = []
    while True:
        try:
            items.append(await asyncio.ensure_future(anext(stream)))
        except StopAsyncIteration:
            return items


def test_each_step_in_a_fresh_task(telemetry: Any, gen_kind: str) -> None:
    async def short(gen_kind: str) -> AsyncIterator[int]:
        async with open_scope(gen_kind):
            yield 1
            yield 2

    with contextlib.suppress(RuntimeError):
        asyncio.run(step_in_fresh_tasks(short(gen_kind)))
    assert (semconv.KIND_CROSS_TASK_EXIT, semconv.CAUSE_PER_STEP_TASK) in violations(telemetry)


def test_owned_generator_steps_in_its_owner(telemetry: Any, gen_kind: str) -> None:
    closed: list[str] = []

    async def main() -> list[int]:
        stream = OwnedGenerator(ticks(gen_kind, closed))  # the one-line fix
        return await step_in_fresh_tasks(stream)

    assert asyncio.run(main()) == list(range(10))
    assert closed == ["owner of ticks"]
    assert violations(telemetry) == []


def test_owned_generator_keeps_the_item_of_a_timed_out_step(telemetry: Any, gen_kind: str) -> None:
    async def main() -> None:
        release = asyncio.Event()

        async def gated() -> AsyncIterator[str]:
            async with open_scope(gen_kind):
                await release.wait()
                yield "a"
                yield "b"

        async with OwnedGenerator(gated()) as stream:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(anext(stream), 0.01)
            release.set()
            assert await anext(stream) == "a"
            assert await anext(stream) == "b"
            with pytest.raises(StopAsyncIteration):
                await anext(stream)

    asyncio.run(main())
    assert violations(telemetry) == []


def test_owned_generator_concurrent_consumers_close_and_errors(
    telemetry: Any, gen_kind: str
) -> None:
    closed: list[str] = []

    async def failing() -> AsyncIterator[int]:
        async with open_scope(gen_kind):
            yield 1
            raise LookupError("stream broke")

    async def main() -> None:
        stream = OwnedGenerator(ticks(gen_kind, closed))
        items = await asyncio.gather(*(asyncio.ensure_future(anext(stream)) for _ in range(4)))
        assert sorted(items) == [0, 1, 2, 3]
        await stream.aclose()  # mid-iteration: closed by the owner
        assert closed == ["owner of ticks"]
        with pytest.raises(StopAsyncIteration):
            await anext(stream)

        broken = OwnedGenerator(failing())
        assert [item async for item in _until(broken, LookupError)] == [1]

        dropped = OwnedGenerator(ticks(gen_kind, closed), name="dropped")
        assert await anext(dropped) == 0
        del dropped
        gc.collect()
        for _ in range(5):
            await asyncio.sleep(0)
        assert closed[-1] == "dropped"

    asyncio.run(main())
    assert violations(telemetry) == []


async def _until(stream: OwnedGenerator[int], error: type[Exception]) -> AsyncIterator[int]:
    with contextlib.suppress(error):
        async for item in stream:
            yield item
