"""No reference kept to tasks, coroutines, frames, scopes, exceptions and async generators.

After each workload ends (every span mode), weak references to what it used are dead and
scopewatch's maps are empty; ``_references.py`` says how each kind of object is checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
from collections.abc import AsyncIterator

import anyio
import pytest

from scopewatch import semconv
from tests.support.markers import needs_311
from tests.support.references import (
    MODES,
    Probes,
    UserError,
    check,
    held_by_scopewatch,
    holder,
    run_on_fresh_loop,
)

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


async def scopes_and_tasks(probes: Probes) -> None:
    """Every scope kind, nested, cancelled, timed out and failed, in several kinds of task."""

    async def child(number: int) -> None:
        keep = probes.frame(f"child{number} frame")
        scope = anyio.CancelScope()
        probes.watch(f"child{number} CancelScope", scope)
        with scope:
            await asyncio.sleep(0)
        with anyio.move_on_after(0.001) as moved:
            probes.watch(f"child{number} move_on_after", moved)
            await asyncio.sleep(1)
        with contextlib.suppress(TimeoutError):
            with anyio.fail_after(0.001):
                await asyncio.sleep(1)
        try:
            with anyio.CancelScope():
                raise UserError("through a scope")  # the traceback holds this frame
        except UserError as error:
            probes.watch(f"child{number} exception", error)
        async with anyio.create_task_group() as group:
            group.start_soon(asyncio.sleep, 0)
        del keep

    async def cancelled() -> None:
        await asyncio.sleep(1)

    async def failing() -> None:
        raise UserError("in a task")

    tasks = [asyncio.create_task(child(number), name=f"child-{number}") for number in range(3)]
    for number, task in enumerate(tasks):
        probes.watch(f"task {number}", task)
        probes.watch(f"coroutine {number}", task.get_coro())
    victim = asyncio.create_task(cancelled())
    probes.watch("cancelled task", victim)
    await asyncio.sleep(0)
    victim.cancel()
    failed = asyncio.create_task(failing())
    probes.watch("failed task", failed)
    await asyncio.gather(*tasks, victim, failed, return_exceptions=True)
    del tasks, task, victim, failed
    async with anyio.create_task_group() as group:
        probes.watch("anyio TaskGroup", group)
        group.start_soon(child, 3)
    del group


async def asyncio_scopes_workload(probes: Probes) -> None:
    """``asyncio.timeout`` and ``asyncio.TaskGroup``, expiring and failing."""
    async with asyncio.timeout(5) as timeout:
        probes.watch("asyncio.timeout", timeout)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(0.001) as expired:
            probes.watch("expired asyncio.timeout", expired)
            await asyncio.sleep(1)

    async def fails() -> None:
        raise UserError("child")

    try:
        async with asyncio.TaskGroup() as group:
            probes.watch("asyncio.TaskGroup", group)
            group.create_task(asyncio.sleep(1))
            group.create_task(fails())
    except Exception as error:  # an ExceptionGroup (3.11+)
        probes.watch("TaskGroup's child error", error.exceptions[0])
    del timeout, expired, group


async def numbers(probes: Probes, name: str) -> AsyncIterator[int]:
    keep = probes.frame(f"{name} frame")
    with anyio.CancelScope():
        yield 1
        yield 2
    del keep


async def generators(probes: Probes) -> None:
    """A generator run to the end, one abandoned (finalized by the loop) and one left open."""
    finished = numbers(probes, "finished generator")
    probes.watch("finished generator", finished)
    async for _ in finished:
        pass

    async def abandon() -> None:
        abandoned = numbers(probes, "abandoned generator")
        probes.watch("abandoned generator", abandoned)
        async for _ in abandoned:
            break  # never closed: the loop's finalizer closes it in another task

    with contextlib.suppress(asyncio.CancelledError):  # anyio cancels the host task here
        await asyncio.create_task(abandon(), name="abandoning")
        gc.collect()
        await asyncio.sleep(0.01)
    open_one = numbers(probes, "generator closed at shutdown")
    probes.watch("generator closed at shutdown", open_one)
    await open_one.__anext__()
    holder.append(open_one)  # only shutdown_asyncgens() closes it
    del finished, open_one


@pytest.mark.parametrize("spans", MODES)
def test_tasks_coroutines_frames_scopes_and_exceptions_are_freed(instrument, spans):
    instrument(spans=spans)
    probes = Probes()
    run_on_fresh_loop(lambda: scopes_and_tasks(probes))
    assert len(probes.refs) + len(probes.strong_checks) == 25
    check(probes)


@needs_311
@pytest.mark.parametrize("spans", MODES)
def test_asyncio_timeouts_and_task_groups_are_freed(instrument, spans):
    instrument(spans=spans)
    probes = Probes()
    run_on_fresh_loop(lambda: asyncio_scopes_workload(probes))
    check(probes)


@pytest.mark.parametrize("spans", MODES)
def test_async_generators_finished_abandoned_and_shut_down_are_freed(instrument, spans):
    telemetry = instrument(spans=spans)
    probes = Probes()
    try:
        run_on_fresh_loop(lambda: generators(probes))
        holder.clear()
        causes = sorted(
            dict(span.attributes or {})[semconv.VIOLATION_CAUSE]
            for span in telemetry.violation_spans()
        )
        assert causes == [semconv.CAUSE_ASYNCGEN_FINALIZER, semconv.CAUSE_ASYNCGEN_SHUTDOWN]
        check(probes)
    finally:
        holder.clear()


async def cancelled_outside_their_lifetime(probes: Probes) -> None:
    """Scopes cancelled before they were entered and after they were exited."""
    early = anyio.CancelScope()
    probes.watch("scope cancelled before enter", early)
    early.cancel()
    with early:
        await asyncio.sleep(0)
    late = anyio.CancelScope()
    probes.watch("scope cancelled after exit", late)
    with late:
        await asyncio.sleep(0)
    late.cancel()
    keep = probes.frame("canceller frame")
    del early, late, keep


@pytest.mark.parametrize("spans", MODES)
def test_scopes_cancelled_before_enter_or_after_exit_are_freed(instrument, spans):
    """Regression: such cancels were kept, with the scope, until 1024 later ones evicted them."""
    instrument(spans=spans)
    probes = Probes()
    run_on_fresh_loop(lambda: cancelled_outside_their_lifetime(probes))
    check(probes)


def test_the_referent_check_sees_what_scopewatch_holds(instrument):
    """The check used for objects anyio keeps alive is not vacuous: an entered scope is held."""
    instrument()
    seen: list[bool] = []

    async def main() -> None:
        scope = anyio.CancelScope()
        task = asyncio.current_task()
        with scope:
            seen.extend((held_by_scopewatch(id(scope)), held_by_scopewatch(id(task))))
        seen.append(held_by_scopewatch(id(scope)))

    asyncio.run(main())
    assert seen == [True, True, False]


async def never_entered(probes: Probes) -> None:
    """Scopes created through the public API and never entered."""
    probes.watch("CancelScope never entered", anyio.CancelScope())
    probes.watch("move_on_after never entered", anyio.move_on_after(5))
    probes.watch("CancelScope(deadline=) never entered", anyio.CancelScope(deadline=5))
    if sys.version_info >= (3, 11):
        probes.watch("asyncio.timeout never entered", asyncio.timeout(5))
    await asyncio.sleep(0)


@pytest.mark.parametrize("spans", MODES)
def test_scopes_created_and_never_entered_are_freed(instrument, spans):
    """Regression: the pending-kind maps held them strongly (up to 4096 of them)."""
    instrument(spans=spans)
    probes = Probes()
    run_on_fresh_loop(lambda: never_entered(probes))
    check(probes)
