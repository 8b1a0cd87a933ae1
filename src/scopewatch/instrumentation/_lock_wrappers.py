"""Wrapper factories shared by the asyncio and anyio lock modules.

Hot path (uncontended acquisition): one module-global read, one cheap "would this wait?" check
on the lock's own state, the original coroutine, and a dict store of the holder. Only contended
acquisitions are timed and reported, on a separate slow path.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from scopewatch import semconv
from scopewatch._core import locks as core
from scopewatch.instrumentation._patching import is_cancellation, task_lookup
from scopewatch.telemetry import locks as telemetry

Check = Callable[[Any], Any]


fail = telemetry.PART.fail
"""Switch every lock wrapper off (the locks feature's one part) and log once."""


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


def locked_or_waiters(lock: Any) -> Any:
    """Might an ``asyncio.Lock`` wait: locked, or waiters queued."""
    return lock._locked or lock._waiters


def counter_or_waiters(lock: Any) -> Any:
    """Might a counting semaphore wait (asyncio's, anyio's asyncio backend): at zero, or queued."""
    return lock._value <= 0 or lock._waiters


def owner_or_waiters(lock: Any) -> Any:
    """Might anyio's asyncio ``Lock`` wait: an owner, or waiters queued."""
    return lock._owner_task is not None or lock._waiters


_INLINED: dict[Check, int] = {locked_or_waiters: 1, counter_or_waiters: 2, owner_or_waiters: 3}
"""The ``busy`` tests :func:`make_acquire` inlines (a call costs more than the test)."""


def make_acquire(
    original: Any,
    kind: str,
    busy: Check,
    contended_check: Check,
    multi: bool,
    current_task: Callable[[], Any],
) -> Any:
    """An async no-argument ``acquire`` that records every hold itself (asyncio, anyio >= 4.5).

    Args:
        original: the unbound original coroutine function.
        kind: the lock kind reported when the lock has no recorded kind.
        busy: cheap "might this wait?" test on the lock's own state; the ``*_or_waiters`` tests
            of this module are inlined.
        contended_check: exact "will this wait?" test, run only when ``busy`` said yes.
        multi: several holders at once (semaphores).
        current_task: the running task (the holder), ``None`` outside one.
    """
    shape = _INLINED.get(busy, 0)
    holds = core.binary_holds
    multi_holds = core.multi_holds
    tick = core.tick
    sampled_start = core.sampled_start
    get_task, get_loop = task_lookup(current_task)

    contended = _make_contended(original, kind, contended_check, multi, current_task)

    async def acquire(self: Any) -> Any:  # noqa: PLR0912 - one flat hot path
        # Lock / Semaphore ``acquire()`` take no argument: no packing on the hot path.
        if not core.ACTIVE:
            return await original(self)
        try:
            if shape == 1:  # locked_or_waiters
                waiting = self._locked or self._waiters
            elif shape == 2:  # counter_or_waiters
                waiting = self._value <= 0 or self._waiters
            elif shape == 3:  # owner_or_waiters
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
            left = tick[0] - 1  # core.sample(), inlined
            if left:
                tick[0] = left
                start = 0.0
            else:
                start = sampled_start()
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

    async def contended(self: Any) -> Any:
        if will_wait(contended_check, self):
            return await time_wait(self, original(self), kind, multi, current_task)
        result = await original(self)  # busy, but free after all: an uncontended hold
        if core.ACTIVE:
            try:
                core.hold_started(self, current_task(), core.sample(), multi)
            except Exception as error:
                fail(error)
        return result

    return contended


def make_delegating_acquire(
    original: Any, kind: str, busy: Check, multi: bool, current_task: Callable[[], Any]
) -> Any:
    """An async no-argument ``acquire`` whose original calls the wrapped ``acquire_nowait``.

    That wrapper records the uncontended holds (trio, anyio < 4.5); this one times the waits.
    """

    async def acquire(self: Any) -> Any:
        if core.ACTIVE and will_wait(busy, self):
            return await time_wait(self, original(self), kind, multi, current_task)
        return await original(self)

    acquire.__wrapped__ = original  # type: ignore[attr-defined]
    return acquire


def make_borrower_acquire(
    original: Any, kind: str, busy: Check, current_task: Callable[[], Any]
) -> Any:
    """A CapacityLimiter's ``acquire_on_behalf_of(borrower)``.

    Its original calls the wrapped ``acquire_on_behalf_of_nowait``, which records uncontended
    holds; this one times the waits.
    """

    async def acquire_on_behalf_of(self: Any, *args: Any, **kwargs: Any) -> Any:
        if core.ACTIVE and will_wait(busy, self):
            acquiring = original(self, *args, **kwargs)
            return await time_wait(self, acquiring, kind, True, current_task, lambda: args[0])
        return await original(self, *args, **kwargs)

    acquire_on_behalf_of.__wrapped__ = original  # type: ignore[attr-defined]
    return acquire_on_behalf_of


def will_wait(check: Check, lock: Any) -> bool:
    """``check(lock)``; a check that raises switches the wrappers off and says no."""
    try:
        return bool(check(lock))
    except Exception as error:
        fail(error)
        return False


async def time_wait(
    lock: Any,
    acquiring: Awaitable[Any],
    kind: str,
    multi: bool,
    current_task: Callable[[], Any],
    holder: Callable[[], Any] | None = None,
) -> Any:
    """Await ``acquiring``, a contended acquisition of ``lock``; report the wait and the hold.

    Args:
        lock: the lock whose wait and hold are reported (anyio's trio backend objects pass the
            trio lock they delegate to).
        acquiring: the original acquire's awaitable.
        kind: the lock kind reported when the lock has no recorded kind.
        multi: several holders at once.
        current_task: the running task (whose deadline may end the wait).
        holder: the new holder (a CapacityLimiter borrower); the running task by default.
    """
    start = time.perf_counter()
    try:
        result = await acquiring
    except BaseException as raised:
        if core.ACTIVE and is_cancellation(raised):
            _report_failed_wait(lock, kind, time.perf_counter() - start, current_task)
        raise
    if core.ACTIVE:
        waited = time.perf_counter() - start
        try:
            metrics = telemetry.current
            if metrics is not None:
                metrics.waited(lock, kind, waited, semconv.LOCK_OUTCOME_ACQUIRED)
            owner = (holder or current_task)()
            # a sampled hold, or one long enough to matter (see core.LONG_HOLD)
            core.hold_started(lock, owner, core.sample() or core.LONG_HOLD, multi)
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


def make_acquire_nowait(original: Any, multi: bool, holder: Check) -> Any:
    """A synchronous no-argument ``acquire_nowait`` (it raises instead of waiting).

    ``holder(lock)`` is the new holder (trio's own ``_owner``, or the running task).
    """
    holds = core.binary_holds
    multi_holds = core.multi_holds
    tick = core.tick
    sampled_start = core.sampled_start

    def acquire_nowait(self: Any) -> Any:
        result = original(self)
        if core.ACTIVE:
            try:
                left = tick[0] - 1  # core.sample(), inlined
                if left:
                    tick[0] = left
                    start = 0.0
                else:
                    start = sampled_start()
                if not multi:
                    holds[id(self)] = (self, holder(self), start, not left)
                else:
                    entry = multi_holds.get(id(self))
                    if entry is None:
                        multi_holds[id(self)] = (self, [(holder(self), start, not left)])
                    elif len(entry[1]) < core.MAX_HOLDERS:
                        entry[1].append((holder(self), start, not left))
            except Exception as error:
                fail(error)
        return result

    acquire_nowait.__wrapped__ = original  # type: ignore[attr-defined]
    return acquire_nowait


def running_task(current_task: Callable[[], Any]) -> Check:
    """A ``holder`` for :func:`make_acquire_nowait`: the running task."""
    return lambda _lock: current_task()


def make_borrower_acquire_nowait(original: Any) -> Any:
    """A CapacityLimiter's ``acquire_on_behalf_of_nowait(borrower)``."""

    def acquire_on_behalf_of_nowait(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        if core.ACTIVE:
            try:
                core.hold_started(self, args[0], core.sample(), True)
            except Exception as error:
                fail(error)
        return result

    acquire_on_behalf_of_nowait.__wrapped__ = original  # type: ignore[attr-defined]
    return acquire_on_behalf_of_nowait


def make_release(original: Any, kind: str, multi: bool, current_task: Callable[[], Any]) -> Any:
    """A no-argument ``release()`` wrapper ending the hold.

    ``current_task`` finds the releasing task among several holders of a semaphore.
    """
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

    chosen: Any = release_multi if multi else release_binary
    chosen.__wrapped__ = original
    return chosen


def make_borrower_release(original: Any, kind: str) -> Any:
    """A CapacityLimiter's ``release_on_behalf_of(borrower)`` ending the borrower's hold."""

    def release_on_behalf_of(self: Any, borrower: Any) -> Any:
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

    release_on_behalf_of.__wrapped__ = original  # type: ignore[attr-defined]
    return release_on_behalf_of
