"""A small service with healthy traffic next to the classic cancel-scope bugs.

``scopewatch demo`` runs it instrumented and prints the report; it needs no server and finishes
in about a second. Run it yourself with ``scopewatch run -- python -m
scopewatch.examples.demo_service``. Every bug is one that real code ships with; the service
catches what anyio raises about them and carries on, so the run ends with exit status 0:

1. ``abandoned generator``: an async generator holding a task group is left after the first item
   (``break``); the event loop's finalizer closes it in a new task (``cross_task_exit``,
   ``asyncgen_finalizer``; anyio raises in that finalizer task).
2. ``client closed from another task``: a client enters an anyio task group into its
   ``AsyncExitStack`` in the task ``client-connect`` and a ``shutdown`` task closes the stack
   (``cross_task_exit``, ``other_task``; anyio raises in ``shutdown``).
3. ``asyncio.timeout across tasks``: a request's ``asyncio.timeout`` is entered by one task and
   exited by a reaper task (``cross_task_exit``, ``other_task``; asyncio raises nothing and the
   timeout silently misbehaves). Python 3.10 has no ``asyncio.timeout``; the demo skips it.
4. ``exit stacks closed in the wrong order``: two ``AsyncExitStack`` s holding timeouts are
   closed first-in-first-out (``non_lifo_exit``, ``exit_order``).
5. ``swallowed cancellation``: a worker catches ``CancelledError`` and returns normally
   (``cancel_swallowed`` when the tasks feature is on).

Healthy traffic: request handlers with ``anyio.move_on_after`` deadlines (some exceeded), a task
group fanning out to backends and cancelled once the first answers, a contended
``asyncio.Lock``, and one slow scope.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


def say(text: str) -> None:
    """A line of the demo's own output."""
    print(f"demo: {text}", flush=True)


# --- healthy traffic --------------------------------------------------------------------------

CACHE_LOCK: asyncio.Lock | None = None


async def handle_request(number: int) -> str:
    """A request with a deadline: every third one is too slow and times out."""
    assert CACHE_LOCK is not None
    async with CACHE_LOCK:  # contended: requests run concurrently
        await asyncio.sleep(0.002)
    with anyio.move_on_after(0.03) as scope:
        await anyio.sleep(0.05 if number % 3 == 0 else 0.005)
    return "timeout" if scope.cancelled_caught else "ok"


async def ask_backend(name: str, delay: float, answers: list[str]) -> None:
    """One backend of a fan-out."""
    await anyio.sleep(delay)
    answers.append(name)


async def fan_out() -> str:
    """Ask three backends; the first answer wins and the others are cancelled."""
    answers: list[str] = []
    async with anyio.create_task_group() as group:
        for name, delay in (("primary", 0.01), ("replica", 0.2), ("archive", 0.3)):
            group.start_soon(ask_backend, name, delay, answers)
        while not answers:
            await anyio.sleep(0.002)
        group.cancel_scope.cancel()
    return answers[0]


async def slow_report() -> None:
    """A scope slower than the demo's slow threshold (0.1 s)."""
    with anyio.CancelScope():
        await anyio.sleep(0.15)


async def healthy_traffic() -> None:
    """Requests, a fan-out and a slow job, concurrently."""
    results = await asyncio.gather(*(handle_request(number) for number in range(9)))
    say(f"served {len(results)} requests ({results.count('timeout')} timed out as designed)")
    say(f"fan-out answered by {await fan_out()}")
    await slow_report()


# --- bug 1: an abandoned generator holding a task group ---------------------------------------


async def ticker() -> AsyncIterator[int]:
    """Yields ticks while a task group is open: the generator owns a cancel scope."""
    async with anyio.create_task_group():
        for tick in range(100):
            yield tick
            await anyio.sleep(0)


async def abandoned_generator() -> None:
    """Stop iterating after the first tick and drop the generator un-closed."""
    async for tick in ticker():
        if tick == 1:
            break
    gc.collect()
    await asyncio.sleep(0.01)  # the loop's finalizer closes the generator in a new task


# --- bug 2: a client closed from another task -------------------------------------------------


class Client:
    """A client that keeps its connection's exit stack, like many SDK clients do."""

    def __init__(self) -> None:
        self._stack = contextlib.AsyncExitStack()

    async def connect(self) -> None:
        """Open the connection: a task group for its reader, entered in the calling task."""
        await self._stack.enter_async_context(anyio.create_task_group())

    async def close(self) -> None:
        """Close it (from whichever task calls this)."""
        await self._stack.aclose()


async def client_closed_from_another_task() -> None:
    """``client-connect`` opens the client; ``shutdown`` closes it."""
    client = Client()
    await asyncio.create_task(client.connect(), name="client-connect")
    try:
        await asyncio.create_task(client.close(), name="shutdown")
    except RuntimeError as error:
        say(f"closing the client from another task raised: {error}")


# --- bug 3: an asyncio.timeout exited by another task -----------------------------------------


async def timeout_across_tasks() -> None:
    """A request's deadline is entered by the handler and exited by a reaper."""
    if sys.version_info < (3, 11):
        say("asyncio.timeout needs Python 3.11; skipped")
        return
    stack = contextlib.AsyncExitStack()

    async def handler() -> None:
        await stack.enter_async_context(asyncio.timeout(5))

    await asyncio.create_task(handler(), name="request-handler")
    await asyncio.create_task(stack.aclose(), name="reaper")
    say("an asyncio.timeout was exited by another task: asyncio said nothing")


# --- bug 4: exit stacks closed in the wrong order ---------------------------------------------


async def exit_stacks_in_wrong_order() -> None:
    """Two stacks, each holding a timeout, closed first-in-first-out."""
    outer = contextlib.AsyncExitStack()
    inner = contextlib.AsyncExitStack()
    outer.enter_context(anyio.move_on_after(5))
    inner.enter_context(anyio.move_on_after(5))
    try:
        await outer.aclose()
    except RuntimeError as error:
        say(f"closing the outer stack first raised: {error}")
    with contextlib.suppress(RuntimeError):
        await inner.aclose()


# --- bug 5: a swallowed cancellation ----------------------------------------------------------


async def stubborn_worker() -> str:
    """Catches the cancellation and returns as if nothing happened."""
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        return "ignored the cancellation"
    return "finished"


async def swallowed_cancellation() -> None:
    """Cancel a worker that swallows it."""
    worker = asyncio.create_task(stubborn_worker(), name="stubborn-worker")
    await asyncio.sleep(0.01)
    worker.cancel()
    say(f"the cancelled worker {await worker}")


# --- main -------------------------------------------------------------------------------------


def _quiet_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """One line per asyncio complaint (anyio raises in the finalizer task of bug 1)."""
    del loop
    error = context.get("exception")
    detail = f"{type(error).__name__}: {error}" if error is not None else ""
    say(f"asyncio reported: {context.get('message')} {detail}".rstrip())


async def main() -> None:
    """Healthy traffic and the bugs, concurrently where that is realistic."""
    global CACHE_LOCK
    CACHE_LOCK = asyncio.Lock()
    asyncio.get_running_loop().set_exception_handler(_quiet_handler)
    say("starting: healthy traffic and five classic cancel-scope bugs")
    traffic = asyncio.create_task(healthy_traffic(), name="traffic")
    reader = asyncio.create_task(abandoned_generator(), name="ticker-reader")
    try:
        await reader
    except asyncio.CancelledError:
        cancelling = getattr(asyncio.current_task(), "cancelling", None)  # 3.11+
        if cancelling is not None and cancelling():
            raise
        say("anyio cancelled ticker-reader when the finalizer closed its generator's task group")
    await asyncio.sleep(0.01)
    gc.collect()  # the finalizer's task is freed now: asyncio reports what anyio raised in it
    await client_closed_from_another_task()
    await timeout_across_tasks()
    await exit_stacks_in_wrong_order()
    await swallowed_cancellation()
    await traffic
    say("done")


def run() -> None:
    """Run the service once."""
    asyncio.run(main())


if __name__ == "__main__":
    run()
