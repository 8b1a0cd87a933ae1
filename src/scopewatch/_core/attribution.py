"""Cancel attribution: who asked a task to cancel, and the ``cancel_swallowed`` violation.

Builds a :class:`~scopewatch._core.records.CancelInfo` from a ``cancel()`` call's stack as
classified by :mod:`scopewatch._core.cancels`: the origin (``deadline``, ``explicit``,
``parent``, ``external``), the requesting task (for a task group: the child that failed), its
location and the reason, and the span context to link to. Pure bookkeeping, no OpenTelemetry.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from scopewatch import semconv
from scopewatch._core import cancels, frames
from scopewatch._core.records import CancelInfo, Violation

if TYPE_CHECKING:
    from types import FrameType

    from scopewatch._core.records import ScopeRecord, TaskRecord


class Lookups(Protocol):
    """What attribution needs from the task tracker."""

    def record_of(self, task: Any) -> TaskRecord | None:
        """The record of a tracked task."""

    def scope_of(self, obj: object) -> ScopeRecord | None:
        """The record of an entered scope."""

    def scope_cancel(self, obj: object) -> tuple[str, CancelInfo] | None:
        """``(scope kind, who cancelled it)`` for a cancelled scope, even one already exited."""

    def span_now(self) -> Any:
        """The calling code's recording span context."""


def describe(lookups: Lookups, task: Any, call: cancels.CancelCall, message: Any) -> CancelInfo:
    """Who asked ``task`` to cancel, from the classified stack of the ``cancel()`` call."""
    current = asyncio.current_task(task.get_loop())
    facts = _CallFacts(
        call,
        current.get_name() if current is not None else "",
        _location(call.user),
        "" if message is None else str(message),
    )
    role = call.first()
    if role == cancels.PROPAGATE:
        return _propagated(lookups, call.local(role, "self"), facts.location)
    if role == cancels.ANYIO_DELIVER:
        return _anyio(lookups, call, facts.reason, facts.location)
    if role in (cancels.GROUP_ABORT, cancels.GROUP_CHILD_DONE, cancels.GROUP_BODY):
        return _group(lookups, facts)
    if role:
        return _library(lookups, role, facts)
    origin = semconv.ORIGIN_EXPLICIT if current is task else semconv.ORIGIN_EXTERNAL
    return CancelInfo(origin, facts.task, facts.location, facts.reason, lookups.span_now())


def _library(lookups: Lookups, role: str, facts: _CallFacts) -> CancelInfo:
    """A timeout, ``wait_for``, ``gather`` or ``asyncio.run`` asked."""
    if role == cancels.TIMEOUT:
        scope = lookups.scope_of(facts.call.local(role, "self"))
        where = frames.location(scope.frames) if scope is not None else facts.location
        return CancelInfo(semconv.ORIGIN_DEADLINE, "", where, "asyncio.timeout expired")
    if role == cancels.WAIT_FOR:
        if not isinstance(sys.exc_info()[1], asyncio.CancelledError):
            why = "wait_for() timed out"
            return CancelInfo(semconv.ORIGIN_DEADLINE, facts.task, facts.location, why)
        why = "the task awaiting it in wait_for() was cancelled"
        return CancelInfo(semconv.ORIGIN_PARENT, facts.task, facts.location, why)
    if role == cancels.GATHER:
        why = "the gather() awaiting it was cancelled"
        return CancelInfo(
            semconv.ORIGIN_PARENT, facts.task, facts.location, why, lookups.span_now()
        )
    why = (
        "asyncio.run() received SIGINT"
        if role == cancels.SIGINT
        else "asyncio.run() cancelled the tasks still running at shutdown"
    )
    return CancelInfo(semconv.ORIGIN_EXTERNAL, "", "", why)


def _group(lookups: Lookups, facts: _CallFacts) -> CancelInfo:
    """An ``asyncio.TaskGroup`` aborted: a child failed, or its body raised."""
    child = facts.call.local(cancels.GROUP_CHILD_DONE, "task")
    if child is not None:
        return _sibling_failed(lookups, child, facts.location)
    group = lookups.scope_of(facts.call.local(facts.call.first(), "self"))
    where = facts.location or (frames.location(group.frames) if group is not None else "")
    raised = facts.call.local(cancels.GROUP_BODY, "et")
    failed = raised is not None and not issubclass(raised, asyncio.CancelledError)
    why = "the body of its asyncio.TaskGroup raised"
    return CancelInfo(
        semconv.ORIGIN_PARENT, facts.task, where, why, lookups.span_now(), failure=failed
    )


def _propagated(lookups: Lookups, outer: Any, location: str) -> CancelInfo:
    outer_record = lookups.record_of(outer) if outer is not None else None
    outer_name = outer.get_name() if outer is not None else ""
    source = outer_record.cancel if outer_record is not None else None
    why = f"the task {outer_name!r} awaiting it was cancelled"
    if source is None:
        return CancelInfo(semconv.ORIGIN_PARENT, outer_name, location, why)
    origin = (
        semconv.ORIGIN_DEADLINE
        if source.origin == semconv.ORIGIN_DEADLINE
        else semconv.ORIGIN_PARENT
    )
    reason = f"{why}: {source.reason}" if source.reason else why
    return CancelInfo(
        origin, source.task, source.location, reason, source.span_context, source.failure
    )


def _sibling_failed(lookups: Lookups, child: Any, location: str) -> CancelInfo:
    error = getattr(child, "_exception", None)
    failure = type(error).__name__ if error is not None else "CancelledError"
    name = child.get_name()
    child_record = lookups.record_of(child)
    where = cancels.raise_location(error) or location
    return CancelInfo(
        semconv.ORIGIN_PARENT,
        name,
        where,
        f"sibling task {name!r} failed with {failure}",
        child_record.span_context if child_record is not None else None,
        failure=True,
    )


def _anyio(lookups: Lookups, call: cancels.CancelCall, reason: str, location: str) -> CancelInfo:
    origin = call.local(cancels.ANYIO_DELIVER, "origin")
    if origin is None:  # anyio < 4.x delivers without naming the origin: the outermost scope
        origin = call.local(cancels.ANYIO_DELIVER, "self", outermost=True)
    child = call.local(cancels.ANYIO_CHILD_DONE, "_task")
    if child is not None:
        return _sibling_failed(lookups, child, location)
    found = lookups.scope_cancel(origin) if origin is not None else None
    if found is None:
        scope = lookups.scope_of(origin)
        where = frames.location(scope.frames) if scope is not None else location
        return CancelInfo(semconv.ORIGIN_PARENT, "", where, reason)
    kind, source = found
    derived = (
        semconv.ORIGIN_DEADLINE
        if source.origin == semconv.ORIGIN_DEADLINE
        else semconv.ORIGIN_PARENT
    )
    why = source.reason or f"{kind} was cancelled"
    return CancelInfo(
        derived, source.task, source.location, why, source.span_context, source.failure
    )


STDLIB_TIMEOUT_BUG = "CPython gh-134471"
"""Why ``timeout_converted`` happens: ``Timeout.__aexit__`` treats every cancellation counted at
its entry (``self._cancelling``) as settled, so one requested before entry and delivered while the
timeout is expiring becomes its ``TimeoutError`` (Lib/asyncio/timeouts.py, 3.11 to 3.15)."""


def swallowed(record: TaskRecord, task: Any) -> Violation:
    """The ``cancel_swallowed`` violation of a task that ended normally while cancelled."""
    info = record.cancel
    name = task.get_name()
    delivered = frames.location(record.delivered_frames) or "an unknown location"
    if info is not None:
        by = f"task {info.task!r}" if info.task else "a callback"
        asked = f"{by} at {info.location or 'an unknown location'} ({info.origin})"
    else:
        asked = "code scopewatch did not see"
    if record.converted:
        cause = semconv.CAUSE_TIMEOUT_CONVERTED
        detail = (
            f"Task.cancel() was called by {asked} before this task entered an asyncio.timeout "
            "and was still pending when that timeout expired; asyncio turned both into one "
            "TimeoutError, the task handled it as a timeout and the cancellation was lost "
            f"(cancelling()={task.cancelling()}). It was delivered at {delivered}. This is "
            f"asyncio's own bug {STDLIB_TIMEOUT_BUG} (a timeout counts a cancellation requested "
            "before it was entered as its own, typically with timeout(0) or an expired "
            "deadline), not a mistake in the code that handled the TimeoutError."
        )
    else:
        cause = semconv.CAUSE_CANCEL_CAUGHT
        detail = (
            f"Task.cancel() was called by {asked}; the CancelledError was delivered at "
            f"{delivered} and the task then finished normally (cancelling()="
            f"{task.cancelling()})."
        )
    return Violation(
        kind=semconv.KIND_CANCEL_SWALLOWED,
        cause=cause,
        scope_kind=record.info.span_name,
        enter_task=name,
        exit_task=info.task if info is not None else "",
        asyncgen="",
        enter_frames=record.delivered_frames,
        exit_frames=record.canceller_frames,
        detail=detail,
    )


@dataclass(slots=True)
class _CallFacts:
    call: cancels.CancelCall
    task: str
    """Name of the task running the ``cancel()`` call (``""`` in a callback)."""
    location: str
    reason: str


def _location(frame: FrameType | None) -> str:
    if frame is None:
        return ""
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"
