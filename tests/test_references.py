"""After scopes, tasks, generators, locks and sessions end, scopewatch holds no reference to them.

Each workload runs instrumented in every span mode on a fresh loop; after the loop closes and
``gc.collect()``, weak references to the objects it used must be dead and scopewatch's own maps
(scope tracker, task tracker, pending creations, lock holders, open sessions) empty.

How each kind of object is checked:

* tasks, coroutines, async generators, asyncio ``Timeout``/``TaskGroup``, locks, sessions and the
  user's exception classes: ``weakref.ref`` directly;
* frames (not weakly referenceable): a weakly referenceable *sentinel* kept only in a local
  variable of the frame dies with the frame;
* anyio cancel scopes: a weak reference where anyio allows one (the scope class has
  ``__weakref__`` in anyio 4.16; 4.14/4.15 scopes are slotted without it). Where it does not,
  :func:`held_by_scopewatch` checks through ``gc.get_referents`` that no scopewatch container or
  record refers to the scope; the same check covers scopes that anyio itself keeps alive (a scope
  left entered stays in anyio's per-task state, which holds its task: anyio's, not ours).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
import types
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import anyio
import pytest

from scopewatch import _runtime, semconv
from scopewatch._core import asyncgens, locks
from scopewatch._core import sessions as session_core
from scopewatch._core.records import CancelInfo, ScopeRecord, Violation
from scopewatch._core.tasks import TaskRecord
from scopewatch.instrumentation import _scope_state, anyio_scopes, asyncio_scopes
from scopewatch.instrumentation import tasks as task_instrumentation
from scopewatch.sessions import track_session
from scopewatch.telemetry.scopes import violation_listeners

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
MODES = ["all", "anomalies", "none"]
needs_311 = pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout is 3.11+")


class Sentinel:
    """A weakly referenceable object kept only in one frame's locals."""


class UserError(Exception):
    """A user exception (weakly referenceable, unlike the built-in ones)."""


class Probes:
    """Weak references to the objects a workload used, by name."""

    def __init__(self) -> None:
        self.refs: dict[str, weakref.ref[Any]] = {}
        self.strong_checks: dict[str, int] = {}
        """Objects that cannot be weakly referenced: name -> id, checked by referents."""

    def watch(self, name: str, obj: object) -> None:
        try:
            self.refs[name] = weakref.ref(obj)
        except TypeError:  # a slotted anyio scope without __weakref__ (anyio 4.14, 4.15)
            self.strong_checks[name] = id(obj)

    def frame(self, name: str) -> Sentinel:
        """A sentinel for the caller to keep in a local variable: it dies with that frame."""
        sentinel = Sentinel()
        self.refs[name] = weakref.ref(sentinel)
        return sentinel

    def alive(self) -> list[str]:
        for _ in range(3):
            gc.collect()
        return sorted(name for name, ref in self.refs.items() if ref() is not None)


def scopewatch_holders() -> list[object]:
    """Every container and record of scopewatch that could hold a user object."""
    holders: list[object] = [
        anyio_scopes._pending,
        asyncio_scopes._pending_kinds,
        locks.binary_holds,
        locks.multi_holds,
        session_core.open_sessions,
    ]
    tracker = _scope_state.tracker
    if tracker is not None:
        holders += [tracker._by_scope, tracker._by_task, tracker._exited_cancels]
        holders += [entry.records for entry in tracker._by_task.values()]
    record_types = (ScopeRecord, TaskRecord, Violation, CancelInfo, session_core.SessionRecord)
    holders += [obj for obj in gc.get_objects() if isinstance(obj, record_types)]
    for holder in list(holders):  # one level of tuples/lists inside the maps
        if isinstance(holder, dict):
            holders += [v for v in holder.values() if isinstance(v, tuple | list)]
    return holders


def held_by_scopewatch(object_id: int) -> bool:
    """Whether any scopewatch container or record refers to the object with this id."""
    for holder in scopewatch_holders():
        if any(id(referent) == object_id for referent in gc.get_referents(holder)):
            return True
    return False


def assert_maps_empty() -> None:
    """Scopewatch keeps nothing per scope, task, lock or session once the loop has closed."""
    tracker = _scope_state.tracker
    assert tracker is not None
    assert tracker._by_scope == {}
    assert tracker._by_task == {}
    assert tracker._exited_cancels == {}
    # scopes created and never entered leave a dead weak reference (bounded), nothing more
    assert all(entry[0]() is None for entry in anyio_scopes._pending.values())
    assert all(entry[0]() is None for entry in asyncio_scopes._pending_kinds.values())
    assert locks.binary_holds == {} and locks.multi_holds == {}
    assert session_core.open_sessions == {}
    assert len(asyncgens._scheduled) <= asyncgens._LIMIT  # frame ids (ints) only, bounded
    task_tracker = task_instrumentation._tracker
    assert task_tracker is not None
    assert task_tracker.active == 0
    assert len(task_tracker._foreign) == 0


def run_on_fresh_loop(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``main`` like ``asyncio.run`` but drop what the exception handler is given."""
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(lambda loop, context: None)  # keeps no exception (no frames)
    try:
        loop.run_until_complete(main())
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()


def check(probes: Probes) -> None:
    assert probes.alive() == []
    for name, object_id in probes.strong_checks.items():
        assert not held_by_scopewatch(object_id), name
    assert_maps_empty()


# --- workloads -------------------------------------------------------------------------------


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


holder: list[object] = []


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


async def lock_workload(probes: Probes) -> None:
    """asyncio and anyio locks, uncontended and contended, held across task switches."""
    made: list[Any] = [
        asyncio.Lock(),
        asyncio.Semaphore(1),
        asyncio.BoundedSemaphore(2),
        anyio.Lock(),
        anyio.Semaphore(1),
    ]
    condition = asyncio.Condition()
    limiter = anyio.CapacityLimiter(1)
    for lock in [*made, condition, limiter]:
        probes.watch(type(lock).__qualname__, lock)

    async def use(lock: Any) -> None:
        async with lock:
            await asyncio.sleep(0.001)

    for _ in range(300):  # past the hold sampling interval: some holds are timed
        for lock in made:
            async with lock:
                pass
    async with anyio.create_task_group() as group:
        for lock in [*made, condition, limiter]:
            for _ in range(3):
                group.start_soon(use, lock)
    del made, condition, limiter, lock, group


@pytest.mark.parametrize("spans", MODES)
def test_locks_are_freed_and_no_holder_is_kept(instrument, spans):
    instrument(spans=spans)
    probes = Probes()
    run_on_fresh_loop(lambda: lock_workload(probes))
    check(probes)
    assert not any(ref() is not None for ref, _ in locks._infos.values())


class FakeMcpSession:
    """An MCP-like client session object (the real MCP SDK is tested in test_mcp_sessions)."""


async def session_workload(probes: Probes) -> None:
    """Sessions tracked with ``track_session``: closed normally, by error, and cross-task."""
    client = FakeMcpSession()
    probes.watch("session client", client)
    tracked = track_session("mcp.ClientSession", name="tools")
    probes.watch("TrackedSession", tracked)
    async with tracked:
        await asyncio.sleep(0)
    with contextlib.suppress(UserError):
        async with track_session("redis"):
            raise UserError("inside the session")
    stored = [track_session("websocket")]

    async def opens() -> None:
        keep = probes.frame("session opener frame")
        await stored[0].__aenter__()
        del keep

    async def closes() -> None:
        await stored[0].__aexit__(None, None, None)

    opener = asyncio.create_task(opens())
    probes.watch("session opener task", opener)
    await opener
    await asyncio.create_task(closes())
    stored.clear()
    del client, tracked, opener


@pytest.mark.parametrize("spans", MODES)
def test_sessions_are_freed(instrument, spans):
    telemetry = instrument(spans=spans)
    probes = Probes()
    run_on_fresh_loop(lambda: session_workload(probes))
    (span,) = telemetry.violation_spans(semconv.KIND_CROSS_TASK_EXIT)
    assert span.name == "session websocket"
    check(probes)


def plain_values(value: object) -> bool:
    """Whether ``value`` is made of strings, numbers, bools, ``None``, code objects and tuples."""
    if isinstance(value, tuple):
        return all(plain_values(item) for item in value)
    return value is None or isinstance(value, str | int | float | bool | types.CodeType)


async def violations_workload(probes: Probes, anyio_held: list[int]) -> None:
    """A cross-task exit, a non-LIFO exit, leaked scopes and a swallowed cancellation."""
    stored: list[Any] = []

    async def enters() -> None:
        keep = probes.frame("entering frame")
        timeout = asyncio.timeout(60)
        await timeout.__aenter__()
        scope = anyio.CancelScope()
        scope.__enter__()
        stored.extend((timeout, scope))
        del keep

    async def exits() -> None:
        keep = probes.frame("exiting frame")
        timeout, scope = stored
        await timeout.__aexit__(None, None, None)  # asyncio raises nothing
        with contextlib.suppress(RuntimeError):  # anyio refuses (and keeps the scope entered)
            scope.__exit__(None, None, None)
        del keep

    entering = asyncio.create_task(enters(), name="entering")
    await entering
    anyio_held.append(id(entering))  # the anyio scope left entered keeps its host task
    exiting = asyncio.create_task(exits(), name="exiting")
    probes.watch("exiting task", exiting)
    await exiting
    probes.watch("cross-task asyncio.timeout", stored[0])
    anyio_held.append(id(stored[1]))  # anyio's task state keeps it: checked by referents
    holder.append(stored[1])

    async def out_of_order() -> None:
        outer, inner = asyncio.timeout(60), asyncio.timeout(60)
        probes.watch("non-LIFO outer", outer)
        await outer.__aenter__()
        await inner.__aenter__()
        await outer.__aexit__(None, None, None)
        await inner.__aexit__(None, None, None)

    async def leaks() -> None:
        leaked = asyncio.timeout(60)
        probes.watch("leaked asyncio.timeout", leaked)
        await leaked.__aenter__()

    async def swallows() -> None:
        keep = probes.frame("swallowing frame")
        try:
            await asyncio.sleep(1)
        except asyncio.CancelledError:
            pass
        del keep

    await asyncio.create_task(out_of_order(), name="out-of-order")
    leaker = asyncio.create_task(leaks(), name="leaker")
    probes.watch("leaking task", leaker)
    await leaker
    swallower = asyncio.create_task(swallows(), name="swallower")
    probes.watch("swallowing task", swallower)
    await asyncio.sleep(0)
    swallower.cancel()
    await swallower
    stored.clear()
    del entering, exiting, leaker, swallower


@needs_311
@pytest.mark.parametrize("spans", MODES)
def test_violation_records_keep_plain_data_and_pin_nothing(instrument, spans):
    telemetry = instrument(spans=spans)
    heard: list[Violation] = []
    assert _runtime.current is not None
    violation_listeners(_runtime.current).append(lambda violation, _: heard.append(violation))
    probes = Probes()
    anyio_held: list[int] = []
    try:
        run_on_fresh_loop(lambda: violations_workload(probes, anyio_held))
        kinds = sorted(
            dict(span.attributes or {})[semconv.VIOLATION_KIND]
            for span in telemetry.violation_spans()
        )
        assert kinds == sorted(
            [
                semconv.KIND_CROSS_TASK_EXIT,  # asyncio.timeout
                semconv.KIND_CROSS_TASK_EXIT,  # anyio CancelScope
                semconv.KIND_NON_LIFO_EXIT,
                semconv.KIND_SCOPE_LEAKED,
                semconv.KIND_CANCEL_SWALLOWED,
            ]
        )
        assert len(heard) == len(kinds)
        for violation in heard:
            for name in Violation.__slots__:
                value = getattr(violation, name)
                assert plain_values(value), (violation.kind, name, type(value))
            assert violation.enter_frames or violation.kind == semconv.KIND_CANCEL_SWALLOWED
        del violation
        check(probes)
        assert len(anyio_held) == 2  # the entering task and the anyio scope
        for object_id in anyio_held:
            assert not held_by_scopewatch(object_id)
    finally:
        holder.clear()


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
