"""Wrapper factories shared by the asyncio and anyio lock modules.

Hot path (uncontended acquisition): one module-global read, one cheap "would this wait?" check
on the lock's own state, the original coroutine, and a dict store of the holder. Only contended
acquisitions are timed and reported, on a separate slow path.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from scopewatch import semconv
from scopewatch._core import locks as core
from scopewatch.instrumentation._patching import is_cancellation, task_lookup
from scopewatch.telemetry import locks as telemetry

Check = Callable[[Any], Any]

SHAPE_LOCKED_FLAG = 1
"""``lock._locked or lock._waiters`` (asyncio.Lock)."""
SHAPE_COUNTER = 2
"""``lock._value <= 0 or lock._waiters`` (asyncio.Semaphore, anyio's asyncio Semaphore)."""
SHAPE_OWNER = 3
"""``lock._owner_task is not None or lock._waiters`` (anyio's asyncio Lock)."""


def fail(error: Exception) -> None:
    """Switch every lock wrapper off and log once (re-raises under the project's tests)."""
    core.ACTIVE = False
    telemetry.PART.fail(error)


def make_init(original: Any, kind_of: Callable[[type], str]) -> Any:
    """``__init__`` that also records the creation site."""

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if core.ACTIVE:
            try:
                core.register(self, kind_of(type(self)), core.creation_site(sys._getframe(1)))
            except Exception as error:
                fail(error)

    return __init__


def make_acquire(
    original: Any,
    kind: str,
    busy: Check,
    contended_check: Check,
    multi: bool,
    current_task: Callable[[], Any],
    borrower_arg: bool = False,
    nowait_inside: bool = False,
    shape: int = 0,
) -> Any:
    """An async ``acquire`` (or ``acquire_on_behalf_of``) wrapper.

    Args:
        original: the unbound original coroutine function.
        kind: the lock kind reported when the lock has no recorded kind.
        busy: cheap "might this wait?" test on the lock's own state.
        contended_check: exact "will this wait?" test, run only when ``busy`` said yes.
        multi: several holders at once (semaphores, limiters).
        current_task: the running task (the holder), ``None`` outside one.
        borrower_arg: the holder is the first positional argument (CapacityLimiter).
        nowait_inside: the original calls an (also wrapped) ``*_nowait`` method that records
            uncontended holds itself.
        shape: one of the ``SHAPE_*`` layouts whose ``busy`` test is inlined, or ``0``.
    """
    if borrower_arg or nowait_inside:
        return _make_general_acquire(
            original, kind, contended_check, busy, multi, current_task, borrower_arg,
            nowait_inside,
        )  # fmt: skip
    holds = core.binary_holds
    multi_holds = core.multi_holds
    tick = core.tick
    perf_counter = time.perf_counter
    every = core.HOLD_SAMPLE_EVERY
    get_task, get_loop = task_lookup(current_task)

    contended = _make_contended(original, kind, contended_check, multi, current_task)

    async def acquire(self: Any) -> Any:  # noqa: PLR0912 - one flat hot path
        # Lock / Semaphore ``acquire()`` take no argument: no packing on the hot path.
        if not core.ACTIVE:
            return await original(self)
        try:
            # The common lock layouts are tested inline (a call costs more than the test).
            if shape == 1:  # SHAPE_LOCKED_FLAG
                waiting = self._locked or self._waiters
            elif shape == 2:  # SHAPE_COUNTER
                waiting = self._value <= 0 or self._waiters
            elif shape == 3:  # SHAPE_OWNER
                waiting = self._owner_task is not None or self._waiters
            else:
                waiting = busy(self)
        except Exception as error:
            fail(error)
            waiting = False
        if waiting:
            return await contended(self)
        result = await original(self)
        try:
            left = tick[0] - 1
            if left:
                tick[0] = left
                start = 0.0
            else:
                tick[0] = every
                if not core.room_for_holds():
                    core.trim_holds()
                start = perf_counter()
            if not multi:
                holds[id(self)] = (self, get_task(get_loop()), start, not left)
            else:
                entry = multi_holds.get(id(self))
                if entry is None:
                    multi_holds[id(self)] = (self, [(get_task(get_loop()), start, not left)])
                elif len(entry[1]) < core.MAX_HOLDERS:
                    entry[1].append((get_task(get_loop()), start, not left))
        except Exception as error:
            fail(error)
        return result

    acquire.__wrapped__ = original  # type: ignore[attr-defined]
    return acquire


def _make_contended(
    original: Any,
    kind: str,
    contended_check: Check,
    multi: bool,
    current_task: Callable[[], Any],
) -> Callable[[Any], Any]:
    """The slow path of :func:`make_acquire` (the lock looked busy)."""
    holds = core.binary_holds
    perf_counter = time.perf_counter
    get_task, get_loop = task_lookup(current_task)

    async def contended(self: Any) -> Any:
        """The slow path: time the wait, report it, remember the holder."""
        try:
            really = contended_check(self)
        except Exception as error:
            fail(error)
            really = False
        start = perf_counter()
        try:
            result = await original(self)
        except BaseException as raised:
            if really and core.ACTIVE and is_cancellation(raised):
                _report_failed_wait(self, kind, perf_counter() - start, current_task)
            raise
        end = perf_counter()
        try:
            if really:
                metrics = telemetry.current
                if metrics is not None:
                    metrics.waited(self, kind, end - start, semconv.LOCK_OUTCOME_ACQUIRED)
                # a sampled hold, or one long enough to matter (see core.LONG_HOLD)
                record = core.sample() or core.LONG_HOLD
            else:
                record = core.sample()
            task = get_task(get_loop())
            if not multi:
                holds[id(self)] = (self, task, end, record)
            else:
                core.hold_started(self, task, record, True)
        except Exception as error:
            fail(error)
        return result

    return contended


def _make_general_acquire(
    original: Any,
    kind: str,
    contended_check: Check,
    busy: Check,
    multi: bool,
    current_task: Callable[[], Any],
    borrower_arg: bool,
    nowait_inside: bool,
) -> Any:
    async def acquire(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not core.ACTIVE:
            return await original(self, *args, **kwargs)
        try:
            waiting = busy(self)
        except Exception as error:
            fail(error)
            waiting = False
        if waiting:
            return await timed_acquire(
                self, original, args, kwargs, kind, contended_check, multi, current_task,
                borrower_arg, nowait_inside,
            )  # fmt: skip
        result = await original(self, *args, **kwargs)
        if not nowait_inside and core.ACTIVE:
            try:
                owner = args[0] if borrower_arg else current_task()
                core.hold_started(self, owner, core.sample(), multi)
            except Exception as error:
                fail(error)
        return result

    acquire.__wrapped__ = original  # type: ignore[attr-defined]
    return acquire


async def timed_acquire(
    lock: Any,
    original: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    kind: str,
    contended_check: Check,
    multi: bool,
    current_task: Callable[[], Any],
    borrower_arg: bool,
    nowait_inside: bool,
    measured: Any = None,
) -> Any:
    """Time a wait in ``original(lock, ...)``; report it and the hold on ``measured``.

    ``measured`` is the lock whose state is checked and whose hold ``release`` ends, when it is
    not ``lock`` itself (anyio's trio backend objects delegate to a trio lock).
    """
    caller = lock
    if measured is not None:
        lock = measured
    try:
        contended = bool(contended_check(lock))
    except Exception as error:
        fail(error)
        contended = False
    start = time.perf_counter()
    try:
        result = await original(caller, *args, **kwargs)
    except BaseException as raised:
        if contended and core.ACTIVE and is_cancellation(raised):
            _report_failed_wait(lock, kind, time.perf_counter() - start, current_task)
        raise
    if core.ACTIVE:
        waited = time.perf_counter() - start
        try:
            owner = args[0] if borrower_arg else current_task()
            metrics = telemetry.current
            if contended:
                if metrics is not None:
                    metrics.waited(lock, kind, waited, semconv.LOCK_OUTCOME_ACQUIRED)
                # a sampled hold, or one long enough to matter (see core.LONG_HOLD)
                core.hold_started(lock, owner, core.sample() or core.LONG_HOLD, multi)
            elif not nowait_inside:
                core.hold_started(lock, owner, core.sample(), multi)
        except Exception as error:
            fail(error)
    return result


def _report_failed_wait(
    lock: Any, kind: str, waited: float, current_task: Callable[[], Any]
) -> None:
    """A contended wait ended by a cancellation: ``timed_out`` if a deadline caused it."""
    try:
        task = current_task()
        outcome = (
            semconv.LOCK_OUTCOME_TIMED_OUT
            if task is not None and core.deadline_expired(task)
            else semconv.LOCK_OUTCOME_CANCELLED
        )
        metrics = telemetry.current
        if metrics is not None:
            metrics.waited(lock, kind, waited, outcome)
    except Exception as error:
        fail(error)


def make_acquire_nowait(
    original: Any,
    multi: bool,
    current_task: Callable[[], Any],
    borrower_arg: bool = False,
) -> Any:
    """A synchronous ``acquire_nowait`` wrapper (never contended: it raises instead of waiting)."""

    def acquire_nowait(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        if core.ACTIVE:
            try:
                owner = args[0] if borrower_arg else current_task()
                core.hold_started(self, owner, core.sample(), multi)
            except Exception as error:
                fail(error)
        return result

    acquire_nowait.__wrapped__ = original  # type: ignore[attr-defined]
    return acquire_nowait


def make_release(
    original: Any,
    kind: str,
    multi: bool,
    current_task: Callable[[], Any],
    borrower_arg: bool = False,
) -> Any:
    """A ``release()`` (or ``release_on_behalf_of(borrower)``) wrapper ending the hold."""
    holds = core.binary_holds
    multi_holds = core.multi_holds

    def release_binary(self: Any) -> Any:
        result = original(self)
        if holds:
            try:
                entry = holds.pop(id(self), None)
                if entry is not None and entry[3] is not False:
                    seconds = core.due(entry[3], entry[2])
                    metrics = telemetry.current
                    if seconds is not None and metrics is not None and core.ACTIVE:
                        metrics.held(self, kind, seconds)
            except Exception as error:
                fail(error)
        return result

    def release_multi(self: Any) -> Any:
        result = original(self)
        if multi_holds:
            try:
                entry = multi_holds.get(id(self))
                if entry is not None:
                    holders = entry[1]
                    seconds = None
                    if len(holders) == 1:
                        del multi_holds[id(self)]
                        seconds = core.due(holders[0][2], holders[0][1])
                    else:
                        seconds = core.hold_ended(self, None, True, current_task)
                    if seconds is not None:
                        metrics = telemetry.current
                        if metrics is not None and core.ACTIVE:
                            metrics.held(self, kind, seconds)
            except Exception as error:
                fail(error)
        return result

    def release_borrowed(self: Any, borrower: Any) -> Any:
        result = original(self, borrower)
        if core.ACTIVE:
            try:
                seconds = core.hold_ended(self, borrower, True)
                if seconds is not None:
                    metrics = telemetry.current
                    if metrics is not None:
                        metrics.held(self, kind, seconds)
            except Exception as error:
                fail(error)
        return result

    chosen: Any = release_borrowed if borrower_arg else release_multi if multi else release_binary
    chosen.__wrapped__ = original
    return chosen
