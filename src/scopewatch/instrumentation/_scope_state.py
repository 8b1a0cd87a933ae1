"""The scope tracker shared by the anyio, asyncio and trio scope wrappers while instrumenting."""

from __future__ import annotations

import asyncio
import types
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from scopewatch import semconv
from scopewatch._core import frames
from scopewatch._core.tracker import ExitFacts, ScopeTracker
from scopewatch._current import safe_current_task
from scopewatch._safety import Part
from scopewatch.instrumentation import _running_loop
from scopewatch.instrumentation._patching import is_cancellation
from scopewatch.telemetry.counts import new_tally
from scopewatch.telemetry.metrics import warn_bound_reached
from scopewatch.telemetry.scopes import ScopeTelemetry

if TYPE_CHECKING:
    from scopewatch._core.records import ScopeRecord
    from scopewatch._runtime import Runtime

PART = Part("cancel-scope instrumentation")
tracker: ScopeTracker | None = None


def start(runtime: Runtime) -> None:
    """Build the scopes feature's tracker (before its modules install); put it on ``runtime``."""
    global tracker
    settings = runtime.settings
    scopes = ScopeTracker(ScopeTelemetry(runtime), settings.stack_depth, settings.max_tracked)
    scopes.bound_reached = warn_bound_reached
    scopes.untracked = new_tally()  # kept per thread without a GIL
    runtime.instruments.set_untracked(semconv.UNTRACKED_SCOPE, lambda: int(scopes.untracked))
    runtime.scopes = tracker = scopes
    PART.reset()


def stop() -> None:
    """Drop the tracker, after every scope module is uninstalled."""
    global tracker
    tracker = None


current_task = _running_loop.current_task_function()
"""The running asyncio task, or ``None`` (no loop, or not inside a task); no ``getpid()``
per call on 3.10/3.11 (:mod:`scopewatch.instrumentation._running_loop`)."""


def _task_of_loop_function() -> Callable[[Any], Any]:
    """``task_of_loop(loop)``: the task running in ``loop`` (a C call on every Python).

    Wrappers inline ``loop = running_loop()`` and, when it is not ``None``,
    ``task_of_loop(loop)``, the same answer as :func:`current_task` without its Python frame.
    """
    from asyncio import tasks

    if isinstance(asyncio.current_task, types.BuiltinFunctionType):
        return asyncio.current_task  # 3.12+: C, and given the loop it never raises
    table = getattr(tasks, "_current_tasks", None)
    if isinstance(table, dict):
        return table.get
    current = safe_current_task(asyncio.current_task)
    return lambda loop: current()


task_of_loop = _task_of_loop_function()
running_loop: Callable[[], Any] = _running_loop.running_loop
"""``asyncio._get_running_loop()`` without its ``getpid()`` on 3.10/3.11."""


ScopeFacts = Callable[[Any], tuple[bool, bool, Iterable[object]]]
"""Reads ``(cancel_called, cancelled_caught, enclosing scopes innermost first)`` off a scope."""


def finish_exit(
    scope: Any,
    record: ScopeRecord,
    exit_task: Any,
    error: BaseException | None,
    read_facts: ScopeFacts,
    exit_name: str | None = None,
) -> None:
    """Resolve the outcome and cancel origin of an exit and hand it to the sink (guarded).

    ``exit_name`` is the exiting task's name where it has no ``get_name()`` (trio).
    """
    scope_tracker = tracker
    if scope_tracker is None or not PART.enabled:
        return
    try:
        cancel_called, cancelled_caught, parents = read_facts(scope)
        result = outcome(record, error, cancelled_caught)
        if result in (semconv.OUTCOME_CANCELLED, semconv.OUTCOME_DEADLINE_EXCEEDED):
            scope_tracker.resolve_cancel(record, parents)
        if exit_name is None:
            exit_name = exit_task.get_name() if exit_task is not None else ""
        # Positional: keywords cost a slotted dataclass twice as much.
        scope_tracker.finish(
            record, ExitFacts(exit_name, result, cancel_called, cancelled_caught, error)
        )
    except Exception as failure:
        PART.fail(failure)


def outcome(record: ScopeRecord, error: BaseException | None, cancelled_caught: bool) -> str:
    """``ok``, ``cancelled``, ``deadline_exceeded`` or ``error`` for a scope's exit."""
    deadline = record.cancel is not None and record.cancel.origin == semconv.ORIGIN_DEADLINE
    if error is None:
        if cancelled_caught:
            return semconv.OUTCOME_DEADLINE_EXCEEDED if deadline else semconv.OUTCOME_CANCELLED
        return semconv.OUTCOME_OK
    if isinstance(error, asyncio.CancelledError) or is_cancellation(error):
        return semconv.OUTCOME_CANCELLED
    if _only_cancellations(error):  # e.g. a trio nursery's group of its children's Cancelled
        return semconv.OUTCOME_CANCELLED
    if isinstance(error, TimeoutError) and deadline:
        return semconv.OUTCOME_DEADLINE_EXCEEDED
    return semconv.OUTCOME_ERROR


def _only_cancellations(error: BaseException, depth: int = 0) -> bool:
    """Whether ``error`` is an exception group holding nothing but cancellations."""
    members = getattr(error, "exceptions", None)
    if not isinstance(members, tuple) or not members or depth > 32:
        return False
    return all(
        is_cancellation(member) or _only_cancellations(member, depth + 1) for member in members
    )


def user_location(frame: Any) -> str:
    """``file:line`` of the first user frame at or above ``frame``."""
    captured, _, _ = frames.capture(frame, 1)
    return frames.location(captured)
