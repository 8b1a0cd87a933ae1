"""The remedies in anyio code: buggy programs violate, the same with the remedy do not.

Violations are detected on the asyncio backend; the fixed programs also run on trio, where
the remedies must simply work (scopewatch detects nothing there yet).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest

from scopewatch import semconv
from scopewatch.remedies import (
    AnyioOwnedContext,
    AnyioOwnedGenerator,
    OwnedGenerator,
    anyio_hold_in_task,
    hold_in_task,
    safe_aiter,
)

END = object()


@pytest.fixture(params=["anomalies", "all"])
def telemetry(request: pytest.FixtureRequest, instrument: Callable[..., Any]) -> Any:
    return instrument(spans=request.param)


@pytest.fixture(params=["asyncio", "trio"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def violations(telemetry: Any) -> list[tuple[str, str]]:
    return [
        (event[semconv.VIOLATION_KIND], event[semconv.VIOLATION_CAUSE])
        for event in telemetry.violation_events()
    ]


def task_name() -> str:
    return anyio.get_current_task().name or ""


# --- a client kept on an object and closed from another task ------------------------------------


class Client:
    """Like mcp's ``stdio_client``: a task group with a reader task between enter and exit."""

    def __init__(self) -> None:
        self.closed_in: str | None = None

    async def __aenter__(self) -> Client:
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        self._group.start_soon(anyio.sleep_forever)
        return self

    async def __aexit__(self, *exc: Any) -> Any:
        self.closed_in = task_name()
        self._group.cancel_scope.cancel()
        return await self._group.__aexit__(*exc)


class BuggyService:
    async def connect(self, group: Any) -> Client:
        self._stack = contextlib.AsyncExitStack()
        return await self._stack.enter_async_context(Client())

    async def shutdown(self) -> None:
        with contextlib.suppress(RuntimeError):  # anyio refuses; the app hides it
            await self._stack.aclose()


class FixedService:
    async def connect(self, group: Any) -> Client:
        self._owned = await anyio_hold_in_task(Client(), group, name="client owner")  # the fix
        return self._owned.value

    async def shutdown(self) -> None:
        await self._owned.aclose()


class FixedWithAsyncioFlavour(FixedService):
    async def connect(self, group: Any) -> Client:
        self._owned = await hold_in_task(Client(), name="client owner")  # type: ignore[assignment]
        return self._owned.value


async def shut_down_from_another_task(service: Any) -> Client:
    shut_down = anyio.Event()

    async def shutdown_hook() -> None:
        await service.shutdown()
        shut_down.set()

    async with anyio.create_task_group() as group:
        client = await service.connect(group)
        group.start_soon(shutdown_hook, name="shutdown hook")
        await shut_down.wait()
    return client  # type: ignore[no-any-return]


def test_client_closed_from_another_task(telemetry: Any) -> None:
    with contextlib.suppress(Exception):  # the broken exit may also break the enclosing group
        anyio.run(shut_down_from_another_task, BuggyService(), backend="asyncio")
    assert (semconv.KIND_CROSS_TASK_EXIT, semconv.CAUSE_OTHER_TASK) in violations(telemetry)


def test_anyio_hold_in_task_closes_in_the_owner(telemetry: Any, backend: str) -> None:
    client = anyio.run(shut_down_from_another_task, FixedService(), backend=backend)
    assert client.closed_in == "client owner"
    assert violations(telemetry) == []


def test_asyncio_flavour_in_anyio_code(telemetry: Any) -> None:
    client = anyio.run(shut_down_from_another_task, FixedWithAsyncioFlavour(), backend="asyncio")
    assert client.closed_in == "client owner"
    assert violations(telemetry) == []


def test_anyio_owned_context_errors_and_cancellation(telemetry: Any, backend: str) -> None:
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

    async def main() -> Client:
        async with anyio.create_task_group() as group:
            with pytest.raises(ConnectionError, match="refused"):
                await anyio_hold_in_task(FailsToEnter(), group)
            owned = await anyio_hold_in_task(FailsToExit(), group)
            assert owned.value == "value" and not owned.closed
            with pytest.raises(OSError, match="broken pipe"):
                await owned.aclose()
            assert owned.closed
            held = AnyioOwnedContext(Client(), name="held")
            client = await held.start(group)
            group.cancel_scope.cancel()  # never closed: the group's cancellation exits it
        assert held.closed
        return client

    client = anyio.run(main, backend=backend)
    assert client.closed_in == "held"
    assert violations(telemetry) == []


# --- an async generator abandoned by break, an exception or a cancellation ---------------------


async def ticks(closed: list[str]) -> AsyncIterator[int]:
    try:
        with anyio.fail_after(60):
            for tick in range(10):
                yield tick
    finally:
        closed.append(task_name())


async def consume(iterator: AsyncIterator[int], how: str, scope: anyio.CancelScope) -> None:
    async for tick in iterator:
        if tick == 1:
            if how == "break":
                break
            if how == "raise":
                raise ValueError("consumer failed")
            scope.cancel()
            await anyio.sleep(0)


async def run_consumer(consumer: Callable[[], Any]) -> None:
    async def guarded() -> None:
        with contextlib.suppress(ValueError):
            await consumer()

    async with anyio.create_task_group() as group:
        group.start_soon(guarded, name="consumer")
    for _ in range(10):
        await anyio.sleep(0)


@pytest.mark.parametrize("how", ["break", "raise", "cancel"])
def test_abandoned_generator_is_closed_by_the_loop(telemetry: Any, how: str) -> None:
    closed: list[str] = []

    async def consumer() -> None:
        with anyio.CancelScope() as scope:
            await consume(ticks(closed), how, scope)

    with contextlib.suppress(Exception):
        anyio.run(run_consumer, consumer, backend="asyncio")
    assert closed and closed != ["consumer"]
    # The consumer's own scope is also exited out of order: the abandoned generator's scope
    # was still open above it.
    assert {
        (semconv.KIND_CROSS_TASK_EXIT, semconv.CAUSE_ASYNCGEN_FINALIZER),
        (semconv.KIND_CROSS_TASK_EXIT, semconv.CAUSE_ASYNCGEN_SHUTDOWN),
    } & set(violations(telemetry))


@pytest.mark.parametrize("how", ["break", "raise", "cancel"])
def test_safe_aiter_closes_in_the_consuming_task(telemetry: Any, backend: str, how: str) -> None:
    closed: list[str] = []

    async def consumer() -> None:
        with anyio.CancelScope() as scope:
            # The fix; innermost, so the generator is closed before any scope around it exits.
            async with safe_aiter(ticks(closed)) as it:
                await consume(it, how, scope)  # "cancel": closed inside the cancelled scope

    anyio.run(run_consumer, consumer, backend=backend)
    assert closed == ["consumer"]
    assert violations(telemetry) == []


# --- each step of an async generator in a fresh task -------------------------------------------


async def step_in_fresh_tasks(stream: Any) -> list[int]:
    items: list[int] = []
    while True:
        result: list[Any] = []

        async def step() -> None:
            try:
                result.append(await stream.__anext__())
            except StopAsyncIteration:
                result.append(END)

        async with anyio.create_task_group() as group:
            group.start_soon(step)
        if result[0] is END:
            return items
        items.append(result[0])


def test_each_step_in_a_fresh_task(telemetry: Any) -> None:
    closed: list[str] = []
    with contextlib.suppress(Exception):
        anyio.run(step_in_fresh_tasks, ticks(closed), backend="asyncio")
    # The generator's scope is exited in another task than the first step's. (From anyio 4.14
    # the first step task also ends with that scope still open above anyio's own per-task
    # scope: a non_lifo_exit, and anyio's "...isn't the current task's current cancel scope".)
    kinds = {kind for kind, _ in violations(telemetry)}
    assert semconv.KIND_CROSS_TASK_EXIT in kinds


def test_anyio_owned_generator_steps_in_its_owner(telemetry: Any, backend: str) -> None:
    closed: list[str] = []

    async def main() -> list[int]:
        async with anyio.create_task_group() as group:
            stream = AnyioOwnedGenerator(ticks(closed), group, name="owner")  # the fix
            items = await step_in_fresh_tasks(stream)
            await stream.aclose()
        return items

    assert anyio.run(main, backend=backend) == list(range(10))
    assert closed == ["owner"]
    assert violations(telemetry) == []


def test_asyncio_flavour_owned_generator_in_anyio_code(telemetry: Any) -> None:
    closed: list[str] = []

    async def main() -> list[int]:
        async with OwnedGenerator(ticks(closed), name="owner") as stream:
            return await step_in_fresh_tasks(stream)

    assert anyio.run(main, backend="asyncio") == list(range(10))
    assert closed == ["owner"]
    assert violations(telemetry) == []


def test_anyio_owned_generator_keeps_items_of_cancelled_steps(telemetry: Any, backend: str) -> None:
    async def main() -> None:
        release = anyio.Event()

        async def gated() -> AsyncIterator[str]:
            with anyio.fail_after(60):
                await release.wait()
                yield "a"
                yield "b"

        async with anyio.create_task_group() as group:
            async with AnyioOwnedGenerator(gated(), group) as stream:
                with anyio.move_on_after(0.01) as timed_out:
                    await stream.anext()
                assert timed_out.cancelled_caught
                release.set()
                assert await stream.anext() == "a"
                assert [item async for item in stream] == ["b"]
            with pytest.raises(StopAsyncIteration):
                await stream.anext()

    anyio.run(main, backend=backend)
    assert violations(telemetry) == []
