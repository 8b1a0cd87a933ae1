"""Bookkeeping for instrumented locks: names, creation sites and current holders; no OpenTelemetry.

The lock wrappers call :func:`hold_started` after every acquisition and :func:`hold_ended`
after every release. Holders are kept in two dicts keyed by ``id(lock)`` whose entries hold the
lock strongly until it is released (so an id is never reused while an entry exists); their size
is bounded by :data:`limits` ``max_holds``. Names and creation sites live in a weak map.

Hooks for other features:

* :func:`held_locks` -- the locks a task still holds (the tasks feature calls it when a task ends
  and turns each into a ``scopewatch.lock.held_at_end`` event).
* :data:`deadline_probes` -- callables ``(task) -> bool`` telling whether the cancellation a task
  is receiving comes from an expired deadline (the lock wait outcome is then ``timed_out``).
"""

from __future__ import annotations

import functools
import sys
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scopewatch import semconv
from scopewatch._core import frames

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import CodeType, FrameType

MAX_NAMES = 100
"""Distinct ``scopewatch.lock.name`` values; later ones are reported as ``other``."""
HOLD_SAMPLE_EVERY = 256
"""One hold in this many (uncontended ones; see :data:`LONG_HOLD`) has its duration recorded."""
LONG_HOLD = 0.001
"""A hold that followed a contended acquisition is recorded when it lasts this long (seconds).

Such holds make others wait; recording them costs at most one SDK record per millisecond held.
Shorter holds after a contention are not recorded, so a contended acquisition costs one record
(its wait) and not two.
"""
LONG_WAIT = 0.001
"""A contended acquisition's wait is measured (``scopewatch.lock.wait.duration``) when it lasts
this long (seconds), or when it ended cancelled or timed out. Shorter waits are the normal life
of a busy lock: counted exactly in ``scopewatch.lock.contentions``, no SDK call (the cost
contract of DESIGN section 3)."""
MAX_HOLDERS = 4096
"""Holders remembered per semaphore / limiter."""
MAX_SITES = 10_000
"""Bound of the creation-site string cache."""

ACTIVE = False
"""Whether lock wrappers do anything (a plain module global: the hot path reads it first)."""


class _Limits:
    __slots__ = ("max_holds",)

    def __init__(self) -> None:
        self.max_holds = 100_000


limits = _Limits()
"""Bounds set from the settings at install (``max_holds`` = ``MAX_TRACKED``)."""

deadline_probes: list[Callable[[Any], bool]] = []
"""``(task) -> bool``: whether ``task`` is being cancelled because a deadline expired."""


class LockInfo:
    """What is known about one lock object: its kind, creation site and user-given name."""

    __slots__ = ("generation", "kind", "labels", "parent", "site", "user_name")

    def __init__(self, kind: str, site: str) -> None:
        self.kind = kind
        self.site = site
        self.user_name: str | None = None
        self.parent: LockInfo | None = None
        """The owner whose name and kind this lock reports (a Condition's own lock)."""
        self.labels: tuple[str, str] | None = None
        self.generation = -1


@dataclass(frozen=True)
class HeldLock:
    """A lock a task still held (see :func:`held_locks`)."""

    kind: str
    name: str
    held_for: float
    """Seconds since it was acquired, ``-1.0`` when unknown (only sampled holds are timed)."""


_infos: dict[int, tuple[weakref.ref[Any], LockInfo]] = {}
"""``id(lock)`` -> (weak reference, info); an entry leaves when its lock is collected."""
_names: set[str] = set()
_generation = 0
_sites: dict[tuple[CodeType, int], str] = {}

# id(lock) -> (lock, owner, start, record) for one-holder locks; -> (lock, [(owner, start,
# record), ...]) for semaphores and capacity limiters. ``record``: False (not timed), True (a
# sampled hold: record it) or a float (record it when it lasts at least that many seconds).
binary_holds: dict[int, tuple[Any, Any, float, bool | float]] = {}
multi_holds: dict[int, tuple[Any, list[tuple[Any, float, bool | float]]]] = {}
tick = [1]
"""Countdown to the next sampled uncontended hold (a list: the wrappers update it in place)."""


def activate(max_holds: int) -> None:
    """Start bookkeeping (a new ``instrument()``): names are counted afresh."""
    global ACTIVE, _generation
    limits.max_holds = max_holds
    _names.clear()
    _generation += 1
    tick[0] = 1
    binary_holds.clear()
    multi_holds.clear()
    ACTIVE = True


def deactivate() -> None:
    """Stop bookkeeping and forget every holder."""
    global ACTIVE
    ACTIVE = False
    binary_holds.clear()
    multi_holds.clear()


# --- names -------------------------------------------------------------------------------------


def creation_site(frame: FrameType | None) -> str:
    """``module:line`` of the first frame outside asyncio, anyio, contextlib and scopewatch."""
    walked = 0
    while frame is not None and walked < 32:
        code = frame.f_code
        if not frames.is_internal(code):
            key = (code, frame.f_lineno)
            site = _sites.get(key)
            if site is None:
                module = frame.f_globals.get("__name__") or code.co_filename
                site = f"{module}:{frame.f_lineno}"
                if len(_sites) < MAX_SITES:
                    _sites[key] = site
            return site
        frame = frame.f_back
        walked += 1
    return semconv.LOCK_NAME_UNKNOWN


def _find(lock: object) -> LockInfo | None:
    entry = _infos.get(id(lock))
    if entry is not None and entry[0]() is lock:
        return entry[1]
    return None


def _forget(key: int, ref: weakref.ref[Any]) -> None:
    entry = _infos.get(key)
    if entry is not None and entry[0] is ref:
        _infos.pop(key, None)  # weakref callbacks run in whichever thread collects


def register(lock: object, kind: str, site: str) -> LockInfo:
    """Remember the kind and creation site of a new lock."""
    info = _find(lock)
    if info is None:
        info = LockInfo(kind, site)
        key = id(lock)
        try:
            ref = weakref.ref(lock, functools.partial(_forget, key))
        except TypeError:  # not weak-referenceable: report it without a name
            return info
        _infos[key] = (ref, info)
    else:  # __init__ ran twice (anyio's __new__ + __init__): keep the user's name
        info.kind = kind
        info.site = site
        info.generation = -1
    return info


def info_for(lock: object, kind: str) -> LockInfo:
    """The info of ``lock``, created on first use for locks made before instrumenting."""
    info = _find(lock)
    if info is None:
        info = register(lock, kind, semconv.LOCK_NAME_UNKNOWN)
    return info


def link(inner: object, inner_kind: str, owner: object, owner_kind: str) -> None:
    """Make ``inner`` (e.g. a Condition's own lock) report the name and kind of ``owner``."""
    info_for(inner, inner_kind).parent = info_for(owner, owner_kind)
    _bump()


def set_name(lock: object, name: str, kind: str) -> None:
    """Give ``lock`` a user name (the public ``scopewatch.name``)."""
    info_for(lock, kind).user_name = name
    _bump()


def _bump() -> None:
    global _generation
    _generation += 1


def labels(info: LockInfo) -> tuple[str, str]:
    """``(kind, name)`` to report, with the name cardinality capped at :data:`MAX_NAMES`."""
    if info.labels is not None and info.generation == _generation:
        return info.labels
    source = info
    depth = 0
    while source.user_name is None and source.parent is not None and depth < 8:
        source = source.parent
        depth += 1
    name = source.user_name if source.user_name is not None else source.site
    if name not in _names:
        if len(_names) >= MAX_NAMES:
            name = semconv.LOCK_NAME_OVERFLOW
        else:
            _names.add(name)
    info.labels = (source.kind, name)
    info.generation = _generation
    return info.labels


# --- holders -----------------------------------------------------------------------------------


def sample() -> bool:
    """Whether this uncontended hold is the one in :data:`HOLD_SAMPLE_EVERY` to time.

    The one countdown every wrapper uses. The hot paths (``_lock_wrappers.make_acquire``,
    ``make_acquire_nowait``, ``_lock_contexts.make_aenter``) inline its first branch, a call
    costing more than the test::

        left = tick[0] - 1
        if left:
            tick[0] = left
            start = 0.0  # not sampled
        else:
            start = sampled_start()

    ``tests/instrumentation/test_hold_sampling.py`` checks that every lock kind samples alike.
    """
    left = tick[0] - 1
    if left:
        tick[0] = left
        return False
    tick[0] = HOLD_SAMPLE_EVERY
    return True


def sampled_start() -> float:
    """The sampled branch of :func:`sample`: restart the countdown, return the hold's start."""
    tick[0] = HOLD_SAMPLE_EVERY
    if len(binary_holds) + len(multi_holds) >= limits.max_holds:  # room_for_holds(), inlined
        trim_holds()
    return time.perf_counter()


def timed_start() -> float:
    """The start of a timed hold (the holder tables are trimmed first when full)."""
    if not room_for_holds():
        trim_holds()
    return time.perf_counter()


def room_for_holds() -> bool:
    """Whether the holder tables are below their bound (checked on sampled holds only)."""
    return len(binary_holds) + len(multi_holds) < limits.max_holds


def trim_holds() -> None:
    """Forget the oldest half of the holders (locks acquired and never released)."""
    for table in (binary_holds, multi_holds):
        for key in list(table)[: len(table) // 2 + 1]:
            table.pop(key, None)


def due(record: bool | float, start: float) -> float | None:
    """The hold's seconds if it is to be recorded (see the holder tables), else ``None``."""
    if record is False:
        return None
    seconds = time.perf_counter() - start
    if record is True or seconds >= record:
        return seconds
    return None


def hold_started(lock: object, owner: Any, record: bool | float, multi: bool) -> None:
    """``owner`` (a task, or a CapacityLimiter borrower) now holds ``lock``.

    ``record``: ``False`` (not timed: start ``0.0``), ``True`` (a sampled hold, see
    :func:`sample`) or a float (record it when at least that long).
    """
    start = timed_start() if record is not False else 0.0
    if not multi:
        binary_holds[id(lock)] = (lock, owner, start, record)
        return
    entry = multi_holds.get(id(lock))
    if entry is None:
        multi_holds[id(lock)] = (lock, [(owner, start, record)])
    elif len(entry[1]) < MAX_HOLDERS:
        entry[1].append((owner, start, record))


def hold_ended(
    lock: object, owner: Any, multi: bool, current_task: Callable[[], Any] | None = None
) -> float | None:
    """``lock`` was released; the hold's seconds if it was sampled.

    Args:
        lock: the lock.
        owner: the releasing holder (a CapacityLimiter borrower), or ``None``.
        multi: the lock has several holders (semaphores, limiters).
        current_task: finds the releasing task when ``owner`` is ``None`` and several hold it.
    """
    if not multi:
        entry = binary_holds.pop(id(lock), None)
        return None if entry is None else due(entry[3], entry[2])
    found = multi_holds.get(id(lock))
    if found is None:
        return None
    holders = found[1]
    index = 0
    if owner is None and current_task is not None and len(holders) > 1:
        owner = current_task()
    for position, holder in enumerate(holders):
        if holder[0] is owner:
            index = position
            break
    _, start, sampled = holders.pop(index)
    if not holders:
        multi_holds.pop(id(lock), None)  # trim_holds() may run in another loop's thread
    return due(sampled, start)


def held_locks(task: Any) -> list[HeldLock]:
    """The locks ``task`` holds right now (call it when the task ends).

    Cost is proportional to the number of locks currently held in the process.
    """
    now = time.perf_counter()
    held: list[HeldLock] = []
    for lock, owner, start, _ in list(binary_holds.values()):
        if owner is task:
            kind, name = labels(_info_or_unknown(lock))
            held.append(HeldLock(kind, name, now - start if start else -1.0))
    for lock, holders in list(multi_holds.values()):
        for owner, start, _ in holders:
            if owner is task:
                kind, name = labels(_info_or_unknown(lock))
                held.append(HeldLock(kind, name, now - start if start else -1.0))
    return held


def _info_or_unknown(lock: object) -> LockInfo:
    info = _find(lock)
    return info if info is not None else LockInfo(type(lock).__name__, semconv.LOCK_NAME_UNKNOWN)


def deadline_expired(task: Any) -> bool:
    """Whether any probe says ``task``'s cancellation comes from an expired deadline."""
    for probe in list(deadline_probes):
        try:
            if probe(task):
                return True
        except Exception:  # a probe reading another library's internals must never hurt
            deadline_probes.remove(probe)
    return False


def caller_frame(depth: int) -> FrameType | None:
    """``sys._getframe(depth + 1)``, or ``None`` when the stack is shorter."""
    try:
        return sys._getframe(depth + 1)
    except ValueError:
        return None
