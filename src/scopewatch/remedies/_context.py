"""Run an async context manager's whole lifetime in a dedicated owner task (asyncio flavour)."""

from __future__ import annotations

import asyncio
import weakref
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager
    from types import TracebackType

T = TypeVar("T")

_owners: set[asyncio.Task[None]] = set()
"""Owner tasks still running (the event loop only keeps weak references to tasks)."""


class OwnedContext(Generic[T]):
    """An async context manager entered and exited by one owner task, closable from any task.

    Cancel scopes and task groups must be exited by the task that entered them. A client kept
    on an object (``await stack.enter_async_context(client)`` in ``connect()``) and closed from a
    shutdown hook, another request or ``__del__`` breaks that rule. ``OwnedContext`` enters the
    manager in a new task that lives until :meth:`aclose`, so the exit always happens where the
    enter did, whoever asks for it::

        self._owned = await hold_in_task(stdio_client(params))
        read, write = self._owned.value
        ...
        await self._owned.aclose()  # from any task, or any event loop

    It is also an async context manager itself (``async with OwnedContext(cm) as value:``).
    The wrapped manager is always exited as if its block ended normally: an exception raised
    in another task is not passed to its ``__aexit__``. Context variables set by its
    ``__aenter__`` stay in the owner task. An ``OwnedContext`` dropped without :meth:`aclose`
    still exits the manager in the owner task; so does the owner's cancellation at loop end.
    """

    def __init__(self, manager: AbstractAsyncContextManager[T], *, name: str | None = None) -> None:
        """Wrap ``manager``; ``name`` names the owner task (default ``owner of <type>``)."""
        self._manager = manager
        self._name = name or f"owner of {type(manager).__qualname__}"
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._release: asyncio.Event | None = None
        self._value: T | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None

    @property
    def value(self) -> T:
        """What the manager's ``__aenter__`` returned (after :meth:`start`)."""
        if self._task is None:
            raise RuntimeError("OwnedContext.value before start(): await start() first")
        return self._value  # type: ignore[return-value]

    @property
    def closed(self) -> bool:
        """Whether the owner task has finished (the manager was exited)."""
        return self._task is not None and self._task.done()

    async def start(self) -> T:
        """Enter the manager in a new owner task and return what it returned.

        Raises:
            RuntimeError: when already started.
            Exception: whatever the manager's ``__aenter__`` raised.
        """
        if self._task is not None:
            raise RuntimeError("OwnedContext.start() called twice")
        loop = asyncio.get_running_loop()
        entered: asyncio.Future[T] = loop.create_future()
        release = asyncio.Event()
        task = loop.create_task(_own(self._manager, entered, release), name=self._name)
        _owners.add(task)
        task.add_done_callback(_owners.discard)
        self._task, self._loop, self._release = task, loop, release
        try:
            self._value = await asyncio.shield(entered)
        except BaseException:
            release.set()  # the owner exits as soon as it has entered
            raise
        self._finalizer = weakref.finalize(self, _release_soon, loop, release)
        self._finalizer.atexit = False
        return self._value

    async def aclose(self, timeout: float | None = None) -> None:
        """Exit the manager in its owner task and wait for that; callable from any task.

        Args:
            timeout: seconds to wait for the exit before the owner task is cancelled
                (``None`` waits for as long as the exit takes).

        Raises:
            Exception: whatever the manager's ``__aexit__`` raised.
        """
        task, loop = self._task, self._loop
        if task is None or loop is None:
            return
        if self._finalizer is not None:
            self._finalizer.detach()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "OwnedContext.aclose() runs under asyncio; from other code use "
                "asyncio.run_coroutine_threadsafe(owned.aclose(), loop)"
            ) from None
        if running is loop:
            await self._close_here(task, timeout)
            return
        if loop.is_closed():  # the loop's end cancelled the owner, which exited the manager
            return
        if not loop.is_running():
            raise RuntimeError(
                "OwnedContext.aclose(): the owner's event loop is not running; close it "
                "before that loop stops"
            )
        future = asyncio.run_coroutine_threadsafe(self._close_here(task, timeout), loop)
        await asyncio.wrap_future(future)

    async def _close_here(self, task: asyncio.Task[None], timeout: float | None) -> None:
        if self._release is not None:
            self._release.set()
        done, _ = await asyncio.wait([task], timeout=timeout)
        if not done:
            task.cancel()
            await asyncio.wait([task])
        if not task.cancelled():
            error = task.exception()
            if error is not None:
                raise error

    async def __aenter__(self) -> T:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


async def hold_in_task(
    manager: AbstractAsyncContextManager[T], *, name: str | None = None
) -> OwnedContext[T]:
    """Enter ``manager`` in a dedicated owner task; close it later with ``await owned.aclose()``.

    The one-line fix for a client entered in one task and closed in another::

        owned = await hold_in_task(client)   # instead of: await stack.enter_async_context(client)
        session = owned.value
    """
    owned = OwnedContext(manager, name=name)
    await owned.start()
    return owned


async def _own(
    manager: AbstractAsyncContextManager[T], entered: asyncio.Future[T], release: asyncio.Event
) -> None:
    try:
        value = await manager.__aenter__()
    except BaseException as error:
        if not entered.done():
            if isinstance(error, asyncio.CancelledError):
                entered.cancel()
            else:
                entered.set_exception(error)
        if isinstance(error, Exception):
            return  # delivered to start()
        raise
    try:
        if not entered.done():
            entered.set_result(value)
        await release.wait()
    except BaseException as error:
        if not await manager.__aexit__(type(error), error, error.__traceback__):
            raise
    else:
        await manager.__aexit__(None, None, None)


def _release_soon(loop: asyncio.AbstractEventLoop, release: asyncio.Event) -> None:
    """The ``OwnedContext`` was garbage-collected un-closed: let its owner exit the manager."""
    if not loop.is_closed():
        loop.call_soon_threadsafe(release.set)
