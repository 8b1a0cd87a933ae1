"""Helpers of the reference tests: after scopes, tasks, generators, locks and sessions end,
scopewatch holds no reference to them.

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
import gc
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

from scopewatch._core import asyncgens, locks
from scopewatch._core import sessions as session_core
from scopewatch._core.records import CancelInfo, ScopeRecord, TaskRecord, Violation
from scopewatch.instrumentation import _scope_state, anyio_scopes, asyncio_scopes
from scopewatch.instrumentation import tasks as task_instrumentation

MODES = ["all", "anomalies", "none"]


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
        holders += [tracker._by_scope, tracker._by_task, tracker._loose_cancels]
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
    assert tracker._loose_cancels == {}
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

holder: list[object] = []
"""Objects a workload keeps alive on purpose until the test has looked at the telemetry."""
