"""Owner-task remedies for anyio code, on any anyio backend (asyncio or trio).

Owner tasks run in a task group you give, as structured concurrency wants: close what you
hold (``aclose()``) before that group's block ends, or cancel the group. anyio is imported
when a remedy is used, so this module loads without it. (``safe_aiter`` needs no anyio flavour:
it works on both backends.)
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from scopewatch.remedies._common import (
    END,
    Leftovers,
    Outcome,
    Request,
    Steps,
    hand_over,
)
from scopewatch.remedies._generators import DEFAULT_CLOSE_TIMEOUT, close_bounded

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from contextlib import AbstractAsyncContextManager
    from types import TracebackType

    from anyio.abc import TaskGroup, TaskStatus
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

T = TypeVar("T")


class AnyioOwnedContext(Generic[T]):
    """:class:`~scopewatch.remedies.OwnedContext` for anyio: the owner runs in your task group.

    ::

        async with anyio.create_task_group() as tg:            # e.g. the app's lifetime group
            owned = await anyio_hold_in_task(stdio_client(params), tg)
            ...
            await owned.aclose()                               # from any task of this loop

    From another thread use ``anyio.from_thread.run(owned.aclose)``. The manager is exited as if
    its block ended normally. If the task group is cancelled first, the owner exits the manager
    (with the cancellation) in its own task.
    """

    def __init__(self, manager: AbstractAsyncContextManager[T], *, name: str | None = None) -> None:
        """Wrap ``manager``; ``name`` names the owner task (default ``owner of <type>``)."""
        self._manager = manager
        self._name = name or f"owner of {type(manager).__qualname__}"
        self._events: tuple[Any, Any] | None = None
        self._value: T | None = None
        self._error: Exception | None = None

    @property
    def value(self) -> T:
        """What the manager's ``__aenter__`` returned (after :meth:`start`)."""
        if self._events is None:
            raise RuntimeError("AnyioOwnedContext.value before start(): await start() first")
        return self._value  # type: ignore[return-value]

    @property
    def closed(self) -> bool:
        """Whether the owner task has exited the manager."""
        return self._events is not None and bool(self._events[1].is_set())

    async def start(self, task_group: TaskGroup) -> T:
        """Enter the manager in a new task of ``task_group`` and return what it returned."""
        import anyio

        if self._events is not None:
            raise RuntimeError("AnyioOwnedContext.start() called twice")
        self._events = (anyio.Event(), anyio.Event())
        value: T = await task_group.start(self._own, name=self._name)
        self._value = value
        return value

    async def _own(self, *, task_status: TaskStatus[T]) -> None:
        assert self._events is not None
        release, done = self._events
        try:
            async with self._manager as value:
                task_status.started(value)
                await release.wait()
        except Exception as error:
            if not release.is_set():
                raise  # failed to enter (start() raises it) or failed on its own
            self._error = error  # aclose() raises it
        finally:
            done.set()

    async def aclose(self) -> None:
        """Exit the manager in its owner task and wait for that; callable from any task.

        Raises:
            Exception: whatever the manager's ``__aexit__`` raised.
        """
        if self._events is None:
            return
        release, done = self._events
        release.set()
        await done.wait()
        error, self._error = self._error, None
        if error is not None:
            raise error


async def anyio_hold_in_task(
    manager: AbstractAsyncContextManager[T], task_group: TaskGroup, *, name: str | None = None
) -> AnyioOwnedContext[T]:
    """Enter ``manager`` in a dedicated task of ``task_group``; ``await owned.aclose()`` later."""
    owned = AnyioOwnedContext(manager, name=name)
    await owned.start(task_group)
    return owned


class AnyioOwnedGenerator(Generic[T]):
    """:class:`~scopewatch.remedies.OwnedGenerator` for anyio: one owner task in your group.

    ::

        async with anyio.create_task_group() as tg:
            stream = AnyioOwnedGenerator(ticks(), tg)   # instead of: stream = ticks()
            tg.start_soon(consume_one, stream)          # steps from any task are safe now
            ...
            await stream.aclose()

    The owner starts at the first ``anext()``. A step whose requester is cancelled keeps its
    item for the next ``anext()``. Close it before the task group's block ends.
    """

    def __init__(
        self,
        generator: AsyncIterator[T],
        task_group: TaskGroup,
        *,
        name: str | None = None,
        close_timeout: float | None = DEFAULT_CLOSE_TIMEOUT,
    ) -> None:
        """Wrap ``generator``; its owner task will run in ``task_group``."""
        self._generator = generator
        self._task_group = task_group
        qualname = getattr(generator, "__qualname__", type(generator).__qualname__)
        self._name = name or f"owner of {qualname}"
        self._close_timeout = close_timeout
        self._leftovers: Leftovers[T] = Leftovers()
        self._steps = Steps(generator, self._leftovers)
        self._send: MemoryObjectSendStream[Request[T] | None] | None = None
        self._done: Any = None
        self._error: list[Exception] = []
        self._closed = False

    def __aiter__(self) -> AnyioOwnedGenerator[T]:
        return self

    async def __aenter__(self) -> AnyioOwnedGenerator[T]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def __anext__(self) -> T:
        return await self.anext()

    async def anext(self) -> T:
        """The next item, produced by the owner task (see ``OwnedGenerator.anext``)."""
        import anyio

        if self._closed:
            raise StopAsyncIteration
        request: Request[T] = Request(anyio.Event())
        try:
            self._owner().send_nowait(request)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):  # the owner has ended
            kept = self._leftovers.take()
            if kept is None:
                raise StopAsyncIteration from None
            return kept.unwrap()
        try:
            await request.waker.wait()
        except BaseException:
            if request.outcome is not None:
                self._leftovers.put(request.outcome, first=True)
            else:
                request.abandoned = True
            raise
        assert request.outcome is not None
        return request.outcome.unwrap()

    def _owner(self) -> MemoryObjectSendStream[Request[T] | None]:
        import anyio

        if self._send is None:
            streams: tuple[
                MemoryObjectSendStream[Request[T] | None],
                MemoryObjectReceiveStream[Request[T] | None],
            ] = anyio.create_memory_object_stream(math.inf)  # no [T]: anyio 4.0 has no subscript
            send, receive = streams
            self._send, self._done = send, anyio.Event()
            self._task_group.start_soon(self._drive, receive, name=self._name)
        return self._send

    async def _drive(self, receive: MemoryObjectReceiveStream[Request[T] | None]) -> None:
        steps = self._steps
        try:
            async for request in receive:
                if request is None:
                    break
                if request.abandoned:
                    continue
                try:
                    outcome = await steps.next_outcome()
                except BaseException:  # the owner itself is cancelled: the stream ends
                    self._wake(request, Outcome(END))
                    raise
                self._wake(request, outcome)
        finally:
            await self._finish(receive)

    async def _finish(self, receive: MemoryObjectReceiveStream[Request[T] | None]) -> None:
        import anyio

        try:
            await close_bounded(self._generator, self._close_timeout)
        except Exception as error:
            if not self._closed:
                raise
            self._error.append(error)  # aclose() raises it
        finally:
            while True:
                try:
                    waiting = receive.receive_nowait()
                except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                    break
                if waiting is not None:
                    self._wake(waiting, self._steps.final_outcome())
            receive.close()
            if self._send is not None:
                self._send.close()
            self._done.set()

    def _wake(self, request: Request[T], outcome: Outcome[T]) -> None:
        if hand_over(request, outcome, self._leftovers):
            request.waker.set()

    async def aclose(self) -> None:
        """Close the generator in its owner task (after a step in progress) and wait for it.

        Raises:
            Exception: whatever the generator's cleanup raised.
        """
        import anyio

        self._closed = True
        if self._send is None:  # never stepped: nothing was entered yet
            await close_bounded(self._generator, self._close_timeout)
            return
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            self._send.send_nowait(None)
        self._send.close()
        await self._done.wait()
        if self._error:
            raise self._error.pop()
