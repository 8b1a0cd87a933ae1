"""A small anyio/asyncio service with healthy traffic and, now and then, classic cancel-scope bugs.

Run it under ``opentelemetry-instrument`` (the docker-compose stack does) and scopewatch turns
every bug into a violation span in Jaeger and a ``scopewatch_violations_total`` increment in
Prometheus/Grafana. Every bug below is one that real code ships with; each runs in a task of its
own, so whatever anyio or asyncio does about it stays there and the service keeps serving.

Healthy traffic (every round): requests with ``anyio.move_on_after`` / ``asyncio.timeout``
deadlines (some exceeded), task groups fanning out, an explicit ``cancel_scope.cancel()``, an
external ``Task.cancel()``, and a contended ``asyncio.Lock``.

Bugs (every ``BUG_EVERY`` rounds, in turn):

1. an abandoned async generator holding a task group: the consumer stops iterating early and
   drops the generator, so the event loop's finalizer closes it in another task
   (``cross_task_exit``, cause ``asyncgen_finalizer``; anyio raises in that finalizer task);
2. an ``asyncio.timeout`` inside an async generator whose items are fetched with
   ``asyncio.ensure_future(anext(gen))``: each step runs in a fresh task, so the timeout is
   exited in another task than the one that entered it (``cross_task_exit``, cause
   ``per_step_task``; asyncio raises nothing and the timeout silently misbehaves);
3. a connection whose ``AsyncExitStack`` (holding an ``anyio.fail_after``) is opened by one task
   and closed by an idle-connection reaper task (``cross_task_exit``, cause ``other_task``;
   anyio raises in the reaper).

Environment: ``SCOPEWATCH_EXAMPLE_ROUNDS`` (0 = forever, the default),
``SCOPEWATCH_EXAMPLE_PACE`` (multiplies every sleep; default 1.0),
``SCOPEWATCH_EXAMPLE_BUG_EVERY`` (default 5). On Python 3.10, which has no ``asyncio.timeout``,
``anyio.move_on_after`` stands in for it (bug 2 then makes anyio raise in the step task).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import random
import sys
from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Coroutine

logger = logging.getLogger("scopewatch.example")


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    try:
        return float(raw) if raw else default
    except ValueError:
        logger.warning("%s=%r is not a number; using %s", name, raw, default)
        return default


PACE = _env_number("SCOPEWATCH_EXAMPLE_PACE", 1.0)
ROUNDS = int(_env_number("SCOPEWATCH_EXAMPLE_ROUNDS", 0))
BUG_EVERY = max(1, int(_env_number("SCOPEWATCH_EXAMPLE_BUG_EVERY", 5)))
ASYNCIO_TIMEOUT = sys.version_info >= (3, 11)


async def nap(seconds: float) -> None:
    """Sleep ``seconds`` scaled by the pace."""
    await anyio.sleep(seconds * PACE)


# --- healthy traffic ------------------------------------------------------------------------


async def fetch_price(item: int) -> float:
    """A backend call that is usually fast and sometimes slow."""
    await nap(random.choice((0.01, 0.02, 0.05, 0.4)))
    return item * 1.5


async def handle_request(request: int, lock: asyncio.Lock) -> None:
    """One request: a deadline around the backend calls, a fan-out, a shared lock."""
    with anyio.move_on_after(0.3 * PACE):  # the 0.4 s backend calls exceed it
        async with anyio.create_task_group() as tg:
            for item in range(3):
                tg.start_soon(fetch_price, request * 10 + item)
    async with lock:  # contended: every request of the round wants it
        await nap(0.005)
    if ASYNCIO_TIMEOUT:
        try:
            async with asyncio.timeout(0.2 * PACE):
                await nap(random.choice((0.01, 0.3)))
        except TimeoutError:
            pass
    else:
        with anyio.move_on_after(0.2 * PACE):
            await nap(random.choice((0.01, 0.3)))


async def search_with_fallback() -> None:
    """Two mirrors race; the first answer cancels the other (an explicit cancel)."""
    async with anyio.create_task_group() as tg:

        async def ask(delay: float) -> None:
            await nap(delay)
            tg.cancel_scope.cancel()

        tg.start_soon(ask, 0.02)
        tg.start_soon(ask, 0.2)


async def background_job() -> None:
    """A job with a generous deadline of its own."""
    if ASYNCIO_TIMEOUT:
        async with asyncio.timeout(10 * PACE):
            await nap(5)
    else:
        with anyio.fail_after(10 * PACE):
            await nap(5)


async def cancel_a_straggler() -> None:
    """A background job cancelled from outside (``Task.cancel()``)."""
    task = asyncio.create_task(background_job())
    await nap(0.01)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def healthy_round(round_no: int) -> None:
    """A burst of concurrent requests."""
    lock = asyncio.Lock()
    async with anyio.create_task_group() as tg:
        for request in range(5):
            tg.start_soon(handle_request, round_no * 100 + request, lock)
        tg.start_soon(search_with_fallback)
        tg.start_soon(cancel_a_straggler)


# --- bug 1: an abandoned async generator holding a task group --------------------------------


async def heartbeat() -> None:
    """A helper task started inside the generator's task group."""
    await nap(0.001)


async def stream_updates() -> AsyncIterator[int]:
    """Yields inside a task group: the classic 'async generator holding a scope' bug."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(heartbeat)
        for update in range(100):
            await nap(0.002)
            yield update


async def bug_abandoned_generator() -> None:
    """Stop after the first update and drop the generator without ``aclose()``."""
    async for update in stream_updates():
        if update >= 1:
            break  # the generator is left suspended inside its task group
    gc.collect()
    await nap(0.05)  # the loop's finalizer closes it in a new task meanwhile


# --- bug 2: asyncio.timeout exited in another task --------------------------------------------


async def ticker() -> AsyncIterator[int]:
    """A generator with a timeout around its whole life."""
    if ASYNCIO_TIMEOUT:
        async with asyncio.timeout(30):
            for tick in range(3):
                await nap(0.002)
                yield tick
    else:
        with anyio.move_on_after(30):
            for tick in range(3):
                await nap(0.002)
                yield tick


async def bug_per_step_tasks() -> None:
    """Fetch every item in a fresh task (e.g. to race it against a shutdown event)."""
    gen = ticker()
    with contextlib.suppress(StopAsyncIteration):
        while True:
            await asyncio.ensure_future(anext(gen))


# --- bug 3: an AsyncExitStack closed from another task -----------------------------------------


class Connection:
    """Opened by one task, closed by whoever notices it is idle."""

    def __init__(self) -> None:
        self._stack = contextlib.AsyncExitStack()

    async def open(self) -> None:
        """Enter the connection's deadline on the exit stack."""
        await self._stack.__aenter__()
        self._stack.enter_context(anyio.fail_after(60))

    async def close(self) -> None:
        """Close the stack, whichever task calls this."""
        await self._stack.aclose()


async def bug_exit_stack_other_task() -> None:
    """Open here, let an idle-connection reaper task close it: anyio refuses and raises there."""
    conn = Connection()
    await conn.open()
    reaper = asyncio.create_task(conn.close())
    await asyncio.wait([reaper])
    if not reaper.cancelled() and reaper.exception() is not None:
        # anyio: "Attempted to exit cancel scope in a different task than it was entered in"
        logger.info("the reaper could not close the connection: %s", reaper.exception())


BUGS = (bug_abandoned_generator, bug_per_step_tasks, bug_exit_stack_other_task)


async def run_isolated(bug: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run one bug in a task of its own: the damage it does stays there, the service goes on.

    Bug 1 shows why: when the finalizer task exits the abandoned generator's task group, anyio
    cancels the task that entered it, i.e. whoever iterated the generator.
    """
    task = asyncio.create_task(bug())
    await asyncio.wait([task])
    if task.cancelled():
        logger.info("%s: the task that committed it was cancelled as collateral", bug.__name__)
    elif task.exception() is not None:
        logger.info("%s failed: %r", bug.__name__, task.exception())


async def main() -> None:
    """Serve rounds of traffic; commit one of the bugs every ``BUG_EVERY`` rounds."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logger.info("serving (pace %s, a bug every %s rounds)", PACE, BUG_EVERY)
    round_no = 0
    while not ROUNDS or round_no < ROUNDS:
        await healthy_round(round_no)
        if round_no % BUG_EVERY == BUG_EVERY - 1:
            bug = BUGS[(round_no // BUG_EVERY) % len(BUGS)]
            logger.info("round %d: %s", round_no, bug.__name__)
            await run_isolated(bug)
        round_no += 1
        await nap(0.5)
    logger.info("done after %d rounds", round_no)


if __name__ == "__main__":
    asyncio.run(main())
