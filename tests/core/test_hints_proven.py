"""Every fix hint scopewatch can print is proven: the buggy program violates and prints it, the
program changed as the hint says does not violate (real asyncio, anyio, pytest-asyncio).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import pytest

from scopewatch import semconv
from scopewatch._core import hints
from scopewatch.remedies import (
    OwnedGenerator,
    anyio_hold_in_task,
    hold_in_task,
    safe_aiter,
)
from tests.support.markers import needs_311, needs_per_task_scope

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

PROVEN: dict[str, Callable[..., None]] = {}


def proves(hint: hints.Hint) -> Callable[[Callable[..., None]], Callable[..., None]]:
    def register(test: Callable[..., None]) -> Callable[..., None]:
        PROVEN[hint.key] = test
        return test

    return register


def printed(telemetry: Any) -> list[str]:
    """The explanations of the violations (what the note, the log line and the span say)."""
    return [str(event[semconv.EXCEPTION_MESSAGE]) for event in telemetry.violation_events()]


def assert_prints(telemetry: Any, hint: hints.Hint) -> list[str]:
    messages = printed(telemetry)
    assert messages, "the buggy program must violate"
    assert any(f"  fix: {hint.text}" in message for message in messages), messages
    return messages


def settle() -> Any:
    async def wait() -> None:
        gc.collect()
        for _ in range(10):
            await asyncio.sleep(0.005)

    return wait()


# --- async generators ------------------------------------------------------------------------


async def ticks_in_group() -> AsyncIterator[int]:
    async with anyio.create_task_group():
        yield 1
        yield 2


async def break_in_a_task(iterator: Callable[[], AsyncIterator[int]]) -> None:
    async def consumer() -> None:
        async for _ in iterator():
            break

    with contextlib.suppress(BaseException):
        await asyncio.create_task(consumer(), name="consumer")
    await settle()


@proves(hints.GENERATOR_TASK_GROUP)
def test_generator_in_a_task_group(instrument: Any) -> None:
    telemetry = instrument()
    asyncio.run(break_in_a_task(ticks_in_group))
    messages = assert_prints(telemetry, hints.GENERATOR_TASK_GROUP)
    assert any(f"  lint: {hints.LINT_RULE}" in message for message in messages)

    async def closed_with_aclosing() -> None:  # the old advice, which does not work here
        async with contextlib.aclosing(ticks_in_group()) as it:
            async for _ in it:
                break

    with pytest.raises(BaseExceptionGroup) as raised:
        asyncio.run(closed_with_aclosing())
    assert [type(e) for e in raised.value.exceptions] == [GeneratorExit]

    fixed = instrument()

    @asynccontextmanager
    async def ticking() -> AsyncIterator[int]:  # the fix: a context manager that yields once
        async with anyio.create_task_group():
            yield 1

    async def streamed() -> list[int]:  # or: the body in a task, items through a stream
        send, receive = anyio.create_memory_object_stream[int](1)

        async def produce() -> None:
            async with send:
                for tick in (1, 2, 3):
                    await send.send(tick)

        got = []
        async with anyio.create_task_group() as group, receive:
            group.start_soon(produce)
            async for tick in receive:
                got.append(tick)
                break
            group.cancel_scope.cancel()
        return got

    async def main() -> list[int]:
        async with ticking() as tick:
            first = tick
        return [first, *await streamed()]

    assert anyio.run(main, backend="asyncio") == [1, 1]
    asyncio.run(settle())
    assert fixed.violation_spans() == []


async def ticks_in_scope() -> AsyncIterator[int]:
    with anyio.move_on_after(60):
        yield 1
        yield 2


@proves(hints.GENERATOR_CLOSE)
def test_generator_in_a_cancel_scope_is_closed_where_it_is_iterated(instrument: Any) -> None:
    telemetry = instrument()
    asyncio.run(break_in_a_task(ticks_in_scope))
    assert_prints(telemetry, hints.GENERATOR_CLOSE)
    telemetry.uninstrument()

    fixed = instrument()

    async def main() -> None:
        async def consumer() -> None:
            async with safe_aiter(ticks_in_scope(), close_timeout=5) as it:  # the fix
                async for _ in it:
                    break

        await asyncio.create_task(consumer(), name="consumer")
        await settle()

    asyncio.run(main())
    assert fixed.violation_spans() == []


async def scoped(label: str) -> AsyncIterator[str]:
    with anyio.CancelScope():
        yield f"{label}1"
        yield f"{label}2"


@proves(hints.GENERATOR_INTERLEAVED)
def test_interleaved_generators_closed_last_first(instrument: Any) -> None:
    telemetry = instrument()

    async def main(fixed: bool) -> None:
        a, b = scoped("a"), scoped("b")
        await a.__anext__()
        await b.__anext__()
        first, second = (b, a) if fixed else (a, b)  # the fix: the last one opened first
        with contextlib.suppress(RuntimeError):
            await first.aclose()
        await second.aclose()

    asyncio.run(main(fixed=False))
    assert_prints(telemetry, hints.GENERATOR_INTERLEAVED)
    telemetry.uninstrument()
    fixed = instrument()
    asyncio.run(main(fixed=True))
    assert fixed.violation_spans() == []


@proves(hints.PER_STEP)
def test_steps_in_fresh_tasks_driven_by_one_owner(instrument: Any) -> None:
    telemetry = instrument()

    async def main(stream: Any) -> list[str]:
        got = [await asyncio.ensure_future(anext(stream))]
        with contextlib.suppress(RuntimeError, StopAsyncIteration):
            got.append(await asyncio.ensure_future(anext(stream)))
            await asyncio.ensure_future(anext(stream))
        with contextlib.suppress(RuntimeError):
            await stream.aclose()
        return got

    asyncio.run(main(scoped("x")))
    assert_prints(telemetry, hints.PER_STEP)
    telemetry.uninstrument()
    fixed = instrument()

    async def owned() -> list[str]:
        return await main(OwnedGenerator(scoped("x")))  # the fix

    assert asyncio.run(owned()) == ["x1", "x2"]
    assert fixed.violation_spans() == []


# --- clients, exit stacks, timeouts ----------------------------------------------------------


@asynccontextmanager
async def client() -> AsyncIterator[str]:
    """A client holding two task groups, like ``stdio_client`` + ``ClientSession``."""
    async with anyio.create_task_group(), anyio.create_task_group():
        yield "client"


class Connection:
    """The connection-manager pattern; ``fixed`` follows the ``task_returned`` hint."""

    def __init__(self, fixed: str = "") -> None:
        self.fixed = fixed
        self.stack = AsyncExitStack()
        self.owned: Any = None
        self.connected = anyio.Event()
        self.done = anyio.Event()

    async def connect(self, group: Any) -> None:
        if self.fixed == "hold_in_task":
            self.owned = await hold_in_task(client())
        elif self.fixed == "anyio_hold_in_task":
            self.owned = await anyio_hold_in_task(client(), group)
        else:
            await self.stack.enter_async_context(client())
        self.connected.set()

    async def cleanup(self) -> None:
        await self.done.wait()
        if self.owned is not None:
            await self.owned.aclose()
        await self.stack.aclose()


async def connection_manager(fixed: str = "") -> None:
    connection = Connection(fixed)
    with contextlib.suppress(RuntimeError, BaseExceptionGroup):
        async with anyio.create_task_group() as group:
            group.start_soon(connection.connect, group, name="startup")
            group.start_soon(connection.cleanup, name="shutdown")
            await connection.connected.wait()
            connection.done.set()


@needs_per_task_scope
@proves(hints.TASK_RETURNED)
@pytest.mark.parametrize(
    ("backend", "fix"),
    [
        ("asyncio", "hold_in_task"),
        ("asyncio", "anyio_hold_in_task"),
        ("trio", "anyio_hold_in_task"),
    ],
)
def test_connection_manager_keeps_the_client_in_one_owner_task(
    instrument: Any, backend: str, fix: str
) -> None:
    telemetry = instrument()
    with contextlib.suppress(Exception):  # on trio the corrupted scope stack ends the run
        anyio.run(connection_manager, backend=backend)
    assert_prints(telemetry, hints.TASK_RETURNED)
    telemetry.uninstrument()
    fixed = instrument()
    anyio.run(connection_manager, fix, backend=backend)
    assert fixed.violation_spans() == []


@proves(hints.OTHER_TASK)
def test_stored_client_closed_from_another_task_is_held_by_an_owner(instrument: Any) -> None:
    telemetry = instrument()

    async def main(fixed: bool) -> None:
        stack = AsyncExitStack()
        owned: list[Any] = []

        async def connect() -> None:
            if fixed:
                owned.append(await hold_in_task(client()))  # the fix
            else:
                await stack.enter_async_context(client())

        async def close() -> None:
            for held in owned:
                await held.aclose()
            await stack.aclose()

        await asyncio.create_task(connect(), name="connector")
        with contextlib.suppress(RuntimeError, BaseExceptionGroup):
            await asyncio.create_task(close(), name="closer")

    asyncio.run(main(fixed=False))
    messages = assert_prints(telemetry, hints.OTHER_TASK)
    assert any("cross_task_exit (other_task)" in message for message in messages)
    telemetry.uninstrument()
    fixed = instrument()
    asyncio.run(main(fixed=True))
    assert fixed.violation_spans() == []


@proves(hints.EXIT_ORDER)
def test_exit_stacks_closed_in_reverse_order(instrument: Any) -> None:
    telemetry = instrument()

    async def main(fixed: bool) -> None:
        first, second = AsyncExitStack(), AsyncExitStack()
        await first.enter_async_context(client())
        await second.enter_async_context(client())
        order = (second, first) if fixed else (first, second)  # the fix: last entered first
        with contextlib.suppress(RuntimeError, BaseExceptionGroup):
            await order[0].aclose()
        with contextlib.suppress(RuntimeError, BaseExceptionGroup):
            await order[1].aclose()

    anyio.run(main, False, backend="asyncio")
    assert_prints(telemetry, hints.EXIT_ORDER)
    telemetry.uninstrument()
    fixed = instrument()
    anyio.run(main, True, backend="asyncio")
    assert fixed.violation_spans() == []


@needs_311
@proves(hints.ASYNCIO_TIMEOUT)
def test_asyncio_timeout_entered_and_exited_in_one_task(instrument: Any) -> None:
    telemetry = instrument()

    async def main(fixed: bool) -> str:
        stack = AsyncExitStack()

        async def work() -> str:
            if fixed:
                try:
                    async with asyncio.timeout(0.01):  # the fix: around the awaits it limits
                        await asyncio.sleep(1)
                except TimeoutError:
                    return "timed out"
                return "not limited"
            await stack.enter_async_context(asyncio.timeout(0.01))
            return "entered"

        result = await asyncio.create_task(work(), name="worker")
        await asyncio.sleep(0.05)
        await asyncio.create_task(stack.aclose(), name="closer")  # asyncio raises nothing
        return result

    assert asyncio.run(main(fixed=False)) == "entered"
    assert_prints(telemetry, hints.ASYNCIO_TIMEOUT)
    telemetry.uninstrument()
    fixed = instrument()
    assert asyncio.run(main(fixed=True)) == "timed out"
    assert fixed.violation_spans() == []


@proves(hints.TASK_FINISHED)
def test_scope_left_entered_by_a_finished_task(instrument: Any) -> None:
    telemetry = instrument()
    stacks: list[contextlib.ExitStack] = []

    async def main(fixed: bool) -> None:
        async def opener() -> None:
            if fixed:
                with anyio.CancelScope():  # the fix: `with`, exited before the task ends
                    await asyncio.sleep(0)
                return
            stack = contextlib.ExitStack()
            stack.enter_context(anyio.CancelScope())
            stacks.append(stack)  # kept, never closed

        await asyncio.create_task(opener(), name="opener")

    asyncio.run(main(fixed=False))
    assert_prints(telemetry, hints.TASK_FINISHED)
    telemetry.uninstrument()
    fixed = instrument()
    asyncio.run(main(fixed=True))
    assert fixed.violation_spans() == []


# --- swallowed cancellations -----------------------------------------------------------------


@needs_311
@proves(hints.CANCEL_SWALLOWED)
def test_cancellation_re_raised_after_cleanup(instrument: Any) -> None:
    telemetry = instrument()

    async def main(fixed: bool) -> bool:
        async def worker() -> None:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if fixed:
                    raise  # the fix

        task = asyncio.create_task(worker(), name="worker")
        await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return task.cancelled()

    assert asyncio.run(main(fixed=False)) is False
    assert_prints(telemetry, hints.CANCEL_SWALLOWED)
    telemetry.uninstrument()
    fixed = instrument()
    assert asyncio.run(main(fixed=True)) is True
    assert fixed.violation_spans() == []


@needs_311
@proves(hints.TIMEOUT_CONVERTED)
def test_timeout_converted_cancel_re_raised(instrument: Any) -> None:
    telemetry = instrument()

    async def main(fixed: bool) -> bool:
        async def victim() -> str:
            asyncio.current_task().cancel()  # type: ignore[union-attr]
            try:
                async with asyncio.timeout(0):
                    await asyncio.sleep(1)
            except TimeoutError:
                if fixed and asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    raise asyncio.CancelledError from None  # the fix
                return "timed out"
            return "not reached"

        task = asyncio.create_task(victim(), name="victim")
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return task.cancelled()

    assert asyncio.run(main(fixed=False)) is False
    assert_prints(telemetry, hints.TIMEOUT_CONVERTED)
    telemetry.uninstrument()
    fixed = instrument()
    assert asyncio.run(main(fixed=True)) is True
    assert fixed.violation_spans() == []


# --- pytest-asyncio fixtures (pytest drives them) ----------------------------------------------


def run_pytest(pytester: pytest.Pytester, source: str) -> pytest.RunResult:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_app=textwrap.dedent(source))
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--scopewatch", timeout=120)


@proves(hints.FIXTURE_HOLD)
def test_fixture_holds_its_client_in_one_owner_task(pytester: pytest.Pytester) -> None:
    buggy = run_pytest(
        pytester,
        """
        import anyio
        import pytest
        import pytest_asyncio

        @pytest_asyncio.fixture
        async def group():
            async with anyio.create_task_group() as tg:  # setup task != teardown task
                yield tg

        @pytest.mark.asyncio
        async def test_uses_it(group):
            await anyio.sleep(0)
        """,
    )
    buggy.stdout.fnmatch_lines([f"*fix: {hints.FIXTURE_HOLD.text[:70]}*"])
    buggy.assert_outcomes(passed=1, errors=1)  # anyio's RuntimeError in the teardown
    fixed = run_pytest(
        pytester,
        """
        from contextlib import asynccontextmanager

        import anyio
        import pytest
        import pytest_asyncio

        import scopewatch.remedies

        @asynccontextmanager
        async def open_group():
            async with anyio.create_task_group() as tg:
                yield tg

        @pytest_asyncio.fixture
        async def group():
            owned = await scopewatch.remedies.hold_in_task(open_group())  # the fix
            yield owned.value
            await owned.aclose()

        @pytest.mark.asyncio
        async def test_uses_it(group):
            await anyio.sleep(0)
        """,
    )
    fixed.assert_outcomes(passed=1)
    assert "  fix: " not in fixed.stdout.str()


@needs_311
@proves(hints.FIXTURE_TIMEOUT)
def test_timeout_in_a_fixture_never_limits_the_test(pytester: pytest.Pytester) -> None:
    buggy = run_pytest(
        pytester,
        """
        import asyncio
        import time

        import pytest
        import pytest_asyncio

        @pytest_asyncio.fixture
        async def limit():
            async with asyncio.timeout(0.05):
                yield

        @pytest.mark.asyncio
        async def test_slow(limit):
            started = time.monotonic()
            await asyncio.sleep(0.3)  # not limited: the fixture's timeout is in another task
            assert time.monotonic() - started >= 0.3
        """,
    )
    buggy.stdout.fnmatch_lines([f"*fix: {hints.FIXTURE_TIMEOUT.text[:70]}*"])
    # The test body ran its full 0.3 s and passed; scopewatch's finding errors its teardown.
    buggy.assert_outcomes(passed=1, errors=1)
    fixed = run_pytest(
        pytester,
        """
        import asyncio

        import pytest

        @pytest.mark.asyncio
        async def test_slow():
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):  # the fix: in the test itself
                    await asyncio.sleep(0.3)
        """,
    )
    fixed.assert_outcomes(passed=1)
    assert "  fix: " not in fixed.stdout.str()


def test_every_hint_is_proven() -> None:
    assert {hint.key for hint in hints.ALL} == set(PROVEN)
    assert len({hint.text for hint in hints.ALL}) == len(hints.ALL)
