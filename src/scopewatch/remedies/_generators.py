"""Async generators closed in the consuming task, or driven by one owner task (asyncio flavour)."""

from __future__ import annotations

import asyncio
import sys
import weakref
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from scopewatch.remedies._common import (
    END,
    Leftovers,
    Outcome,
    Request,
    Steps,
    hand_over,
    warn_slow_close,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from types import TracebackType

T = TypeVar("T")
IteratorT = TypeVar("IteratorT", bound="AsyncIterator[Any]")

DEFAULT_CLOSE_TIMEOUT = 5.0
"""Seconds a generator's cleanup may take when it is closed by a remedy."""

_owners: set[asyncio.Task[None]] = set()


class SafeAsyncIterator(Generic[IteratorT]):
    """The async context manager returned by :func:`safe_aiter`."""

    def __init__(self, iterator: IteratorT, close_timeout: float | None) -> None:
        self._iterator = iterator
        self._close_timeout = close_timeout

    async def __aenter__(self) -> IteratorT:
        return self._iterator

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await close_bounded(self._iterator, self._close_timeout)


def safe_aiter(
    iterator: IteratorT, *, close_timeout: float | None = DEFAULT_CLOSE_TIMEOUT
) -> SafeAsyncIterator[IteratorT]:
    """Iterate an async generator so it is always closed here, in the consuming task.

    ``break``, an exception or a cancellation leaves an async generator suspended; Python then
    closes it later from the event loop's finalizer, in a new task, and every cancel scope or
    task group open inside it is exited in the wrong task. This closes it when the block ends,
    in the task that iterated it, and bounds how long its cleanup may take::

        async with safe_aiter(ticks(), close_timeout=5) as it:
            async for tick in it:
                break

    It works in anyio code too, on either backend (on trio the close is not time-bounded).

    Args:
        iterator: the async generator (any async iterator; one without ``aclose`` is left as is).
        close_timeout: seconds the generator's cleanup may take; it is then cancelled and a
            warning is logged (``None``: no bound).
    """
    return SafeAsyncIterator(iterator, close_timeout)


async def close_bounded(iterator: object, timeout: float | None) -> None:
    """``await iterator.aclose()`` in this task, cancelled after ``timeout`` seconds.

    The bound is a timer that cancels this task, not a cancel scope: a scope entered here
    would be exited after the generator's own scopes, out of order (anyio refuses that). On a
    backend without asyncio tasks (trio) the close is not bounded.
    """
    aclose = getattr(iterator, "aclose", None)
    if aclose is None:
        return
    try:
        task = asyncio.current_task()
    except RuntimeError:  # not running under asyncio (trio)
        task = None
    if task is None or timeout is None:
        await aclose()
        return
    cancelling = task.cancelling() if sys.version_info >= (3, 11) else 0
    fired = False

    def expire() -> None:
        nonlocal fired
        fired = True
        task.cancel()

    handle = asyncio.get_running_loop().call_later(timeout, expire)
    try:
        await aclose()
    except asyncio.CancelledError:
        if not fired or (sys.version_info >= (3, 11) and task.uncancel() > cancelling):
            raise  # not (only) our timer: a real cancellation
        warn_slow_close(iterator, timeout)
    else:
        if fired and sys.version_info >= (3, 11):
            task.uncancel()  # the generator absorbed our cancellation
    finally:
        handle.cancel()


class OwnedGenerator(Generic[T]):
    """An async generator driven by one owner task; ``anext()`` may come from any task.

    Running each step of a generator in a fresh task (``ensure_future(anext(gen))``,
    ``wait_for(anext(gen), t)`` before 3.12, racing two streams with ``asyncio.wait``) enters a
    cancel scope inside the generator in one task and exits it in another. Wrapping the
    generator moves every step, and its close, into one owner task; the calling code is
    unchanged::

        stream = OwnedGenerator(ticks())       # instead of: stream = ticks()
        step = asyncio.ensure_future(anext(stream))

    A step whose requester gives up (a timeout around ``anext``) is not cancelled: its item is
    kept for the next ``anext()``, so timeouts no longer destroy the generator. Use it from the
    event loop of its first ``anext()``; close it with :meth:`aclose` or ``async with``. An
    ``OwnedGenerator`` dropped un-closed is closed by its owner task.
    """

    def __init__(
        self,
        generator: AsyncIterator[T],
        *,
        name: str | None = None,
        close_timeout: float | None = DEFAULT_CLOSE_TIMEOUT,
    ) -> None:
        """Wrap ``generator``; ``close_timeout`` bounds its cleanup (see :func:`safe_aiter`)."""
        self._generator = generator
        qualname = getattr(generator, "__qualname__", type(generator).__qualname__)
        self._name = name or f"owner of {qualname}"
        self._close_timeout = close_timeout
        self._leftovers: Leftovers[T] = Leftovers()
        self._queue: asyncio.Queue[Request[T] | None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._closed = False

    def __aiter__(self) -> OwnedGenerator[T]:
        return self

    async def __anext__(self) -> T:
        return await self.anext()

    async def anext(self) -> T:
        """The next item, produced by the owner task.

        Raises:
            StopAsyncIteration: the generator is exhausted or closed.
            Exception: whatever the generator raised.
        """
        if self._closed:
            raise StopAsyncIteration
        loop = asyncio.get_running_loop()
        queue, task = self._owner(loop)
        if task.done():
            kept = self._leftovers.take()
            if kept is None:
                raise StopAsyncIteration
            return kept.unwrap()
        request: Request[T] = Request(loop.create_future())
        queue.put_nowait(request)
        try:
            await request.waker
        except BaseException:
            if request.outcome is not None:  # produced, but we were cancelled meanwhile
                self._leftovers.put(request.outcome, first=True)
            else:
                request.abandoned = True
            raise
        assert request.outcome is not None
        return request.outcome.unwrap()

    def _owner(
        self, loop: asyncio.AbstractEventLoop
    ) -> tuple[asyncio.Queue[Request[T] | None], asyncio.Task[None]]:
        if self._queue is None or self._task is None:
            queue: asyncio.Queue[Request[T] | None] = asyncio.Queue()
            task = loop.create_task(
                _drive(self._generator, queue, self._leftovers, self._close_timeout),
                name=self._name,
            )
            _owners.add(task)
            task.add_done_callback(_owners.discard)
            self._queue, self._task, self._loop = queue, task, loop
            self._finalizer = weakref.finalize(self, _close_soon, loop, queue)
            self._finalizer.atexit = False
        elif loop is not self._loop:
            raise RuntimeError("OwnedGenerator used from another event loop than its first one")
        return self._queue, self._task

    async def aclose(self) -> None:
        """Close the generator in its owner task (after a step in progress) and wait for it.

        Raises:
            Exception: whatever the generator's cleanup raised.
        """
        self._closed = True
        task, queue = self._task, self._queue
        if task is None or queue is None:  # never stepped: nothing was entered yet
            await close_bounded(self._generator, self._close_timeout)
            return
        if self._finalizer is not None:
            self._finalizer.detach()
        if not task.done():
            queue.put_nowait(None)
        await asyncio.wait([task])
        if not task.cancelled():
            error = task.exception()
            if error is not None:
                raise error

    async def __aenter__(self) -> OwnedGenerator[T]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


async def _drive(
    generator: AsyncIterator[T],
    queue: asyncio.Queue[Request[T] | None],
    leftovers: Leftovers[T],
    close_timeout: float | None,
) -> None:
    """The owner task: run one step per request, then close the generator here."""
    steps = Steps(generator, leftovers)
    try:
        while True:
            request = await queue.get()
            if request is None:
                return
            if request.abandoned:
                continue
            try:
                outcome = await steps.next_outcome()
            except BaseException:  # the owner itself is cancelled: the stream ends
                _wake(request, Outcome(END), leftovers)
                raise
            _wake(request, outcome, leftovers)
    finally:
        await close_bounded(generator, close_timeout)
        while not queue.empty():
            waiting = queue.get_nowait()
            if waiting is not None:
                _wake(waiting, steps.final_outcome(), leftovers)


def _wake(request: Request[T], outcome: Outcome[T], leftovers: Leftovers[T]) -> None:
    if hand_over(request, outcome, leftovers) and not request.waker.done():
        request.waker.set_result(None)


def _close_soon(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any]) -> None:
    """The ``OwnedGenerator`` was garbage-collected un-closed: its owner closes the generator."""
    if not loop.is_closed():
        loop.call_soon_threadsafe(queue.put_nowait, None)
