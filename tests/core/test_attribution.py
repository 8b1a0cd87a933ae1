"""Cancel attribution (``_core.attribution``) from classified ``cancel()`` stacks, no loop.

Each library caller of ``Task.cancel()`` is a function of this module given that library's
role; its locals are what attribution reads (the timeout, the group, the failed child).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest

from scopewatch import semconv
from scopewatch._core import attribution, cancels
from scopewatch._core.records import CancelInfo, ScopeRecord, TaskRecord
from scopewatch._core.task_codes import CodeInfo
from tests.support.fakes import FakeTask


class Lookups:
    """What attribution asks the task tracker, answered from dicts."""

    def __init__(self) -> None:
        self.records: dict[Any, TaskRecord] = {}
        self.scopes: dict[Any, ScopeRecord] = {}
        self.cancels: dict[Any, tuple[str, CancelInfo]] = {}

    def record_of(self, task: Any) -> TaskRecord | None:
        return self.records.get(task)

    def scope_of(self, obj: object) -> ScopeRecord | None:
        return self.scopes.get(obj)

    def scope_cancel(self, obj: object) -> tuple[str, CancelInfo] | None:
        return self.cancels.get(obj)

    def span_now(self) -> Any:
        return "current-span"


def describe(lookups: Lookups, victim: Any, message: Any = None) -> CancelInfo:
    """Attribute a ``cancel()`` called by the caller of the caller (the library frame)."""
    return attribution.describe(lookups, victim, cancels.walk(sys._getframe(1)), message)


def on_timeout(lookups: Lookups, victim: Any, self: Any) -> CancelInfo:
    return describe(lookups, victim)


def wait_for(lookups: Lookups, victim: Any) -> CancelInfo:
    return describe(lookups, victim)


def gather_cancel(lookups: Lookups, victim: Any) -> CancelInfo:
    return describe(lookups, victim)


def run_shutdown(lookups: Lookups, victim: Any) -> CancelInfo:
    return describe(lookups, victim)


def group_aexit(lookups: Lookups, victim: Any, self: Any, et: Any) -> CancelInfo:
    return describe(lookups, victim)


def propagate(lookups: Lookups, victim: Any, self: Any) -> CancelInfo:
    return describe(lookups, victim)


def deliver_cancellation(lookups: Lookups, victim: Any, self: Any, origin: Any) -> CancelInfo:
    return describe(lookups, victim)


for function, role in [
    (on_timeout, cancels.TIMEOUT),
    (wait_for, cancels.WAIT_FOR),
    (gather_cancel, cancels.GATHER),
    (run_shutdown, cancels.SHUTDOWN),
    (group_aexit, cancels.GROUP_BODY),
    (propagate, cancels.PROPAGATE),
    (deliver_cancellation, cancels.ANYIO_DELIVER),
]:
    cancels.register_role(function.__code__, role)


def scope_record(obj: object, kind: str = semconv.SPAN_ASYNCIO_TIMEOUT) -> ScopeRecord:
    frames = ((scope_record.__code__, 7),)
    return ScopeRecord(obj, kind, True, None, "main", 0, 0.0, frames)


def test_a_user_cancel_outside_the_task_is_external_from_its_line():
    lookups, victim = Lookups(), FakeTask("victim")
    info = describe_here(lookups, victim, "stop")
    line = sys._getframe().f_lineno - 1
    assert info == CancelInfo(
        semconv.ORIGIN_EXTERNAL, "", f"{__file__}:{line}", "stop", "current-span"
    )


def describe_here(lookups: Lookups, victim: Any, message: Any) -> CancelInfo:
    """A user function calling ``cancel()``: the caller's line is the location."""
    return attribution.describe(lookups, victim, cancels.walk(sys._getframe(1)), message)


def test_an_asyncio_timeout_is_a_deadline_placed_where_the_timeout_was_entered():
    lookups, timeout = Lookups(), object()
    lookups.scopes[timeout] = scope_record(timeout)
    info = on_timeout(lookups, FakeTask("victim"), timeout)
    assert info == CancelInfo(
        semconv.ORIGIN_DEADLINE, "", f"{__file__}:7", "asyncio.timeout expired"
    )


def test_wait_for_is_a_deadline_unless_its_caller_was_cancelled():
    lookups, victim = Lookups(), FakeTask("victim")
    assert wait_for(lookups, victim).reason == "wait_for() timed out"
    assert wait_for(lookups, victim).origin == semconv.ORIGIN_DEADLINE
    try:
        raise asyncio.CancelledError
    except asyncio.CancelledError:
        info = wait_for(lookups, victim)
    assert (info.origin, info.reason) == (
        semconv.ORIGIN_PARENT,
        "the task awaiting it in wait_for() was cancelled",
    )


def test_gather_passes_its_cancellation_on_as_parent():
    info = gather_cancel(Lookups(), FakeTask("victim"))
    assert (info.origin, info.reason, info.span_context) == (
        semconv.ORIGIN_PARENT,
        "the gather() awaiting it was cancelled",
        "current-span",
    )


def test_asyncio_run_shutting_down_is_external():
    info = run_shutdown(Lookups(), FakeTask("victim"))
    assert info == CancelInfo(
        semconv.ORIGIN_EXTERNAL,
        "",
        "",
        "asyncio.run() cancelled the tasks still running at shutdown",
    )


@pytest.mark.parametrize(
    ("raised", "failure"), [(ValueError, True), (asyncio.CancelledError, False)]
)
def test_a_task_group_body_raising_cancels_its_children_as_parent(raised, failure):
    lookups, group = Lookups(), object()
    lookups.scopes[group] = scope_record(group, semconv.SPAN_ASYNCIO_TASK_GROUP)
    info = group_aexit(lookups, FakeTask("child"), group, raised)
    assert (info.origin, info.reason, info.failure) == (
        semconv.ORIGIN_PARENT,
        "the body of its asyncio.TaskGroup raised",
        failure,
    )


def test_a_cancelled_awaiter_passes_its_own_canceller_on():
    lookups, outer = Lookups(), FakeTask("outer")
    outer_record = TaskRecord(None, None, 0.0, "", None)  # type: ignore[arg-type]
    outer_record.cancel = CancelInfo(
        semconv.ORIGIN_DEADLINE, "timer", "app.py:2", "too slow", "timer-span"
    )
    lookups.records[outer] = outer_record
    info = propagate(lookups, FakeTask("inner"), outer)
    assert info == CancelInfo(
        semconv.ORIGIN_DEADLINE,
        "timer",
        "app.py:2",
        "the task 'outer' awaiting it was cancelled: too slow",
        "timer-span",
    )
    unknown = propagate(Lookups(), FakeTask("inner"), outer)
    assert (unknown.origin, unknown.task) == (semconv.ORIGIN_PARENT, "outer")


def test_anyio_delivering_a_scopes_cancellation_names_who_cancelled_that_scope():
    lookups, scope = Lookups(), object()
    lookups.cancels[scope] = (
        semconv.SPAN_ANYIO_FAIL_AFTER,
        CancelInfo(semconv.ORIGIN_DEADLINE, "", "app.py:4", ""),
    )
    info = deliver_cancellation(lookups, FakeTask("victim"), scope, scope)
    assert info == CancelInfo(
        semconv.ORIGIN_DEADLINE, "", "app.py:4", f"{semconv.SPAN_ANYIO_FAIL_AFTER} was cancelled"
    )
    lookups.cancels.clear()
    lookups.scopes[scope] = scope_record(scope, semconv.SPAN_ANYIO_CANCEL_SCOPE)
    unknown = deliver_cancellation(lookups, FakeTask("victim"), scope, scope)
    assert (unknown.origin, unknown.location) == (semconv.ORIGIN_PARENT, f"{__file__}:7")


@pytest.mark.parametrize("converted", [False, True])
def test_a_swallowed_cancellation_says_who_asked_and_why_it_was_lost(converted):
    record = TaskRecord(CodeInfo("task work", "work"), None, 0.0, "", None)  # type: ignore[arg-type]
    record.cancel = CancelInfo(semconv.ORIGIN_EXPLICIT, "main", "app.py:8")
    record.converted = converted
    task = FakeTask("worker")
    task.cancel_requests = 1
    violation = attribution.swallowed(record, task)
    assert (violation.kind, violation.scope_kind, violation.exit_task) == (
        semconv.KIND_CANCEL_SWALLOWED,
        "task work",
        "main",
    )
    if converted:
        assert violation.cause == semconv.CAUSE_TIMEOUT_CONVERTED
        assert attribution.STDLIB_TIMEOUT_BUG in violation.detail
    else:
        assert violation.cause == semconv.CAUSE_CANCEL_CAUGHT
        assert violation.detail == (
            "Task.cancel() was called by task 'main' at app.py:8 (explicit); the "
            "CancelledError was delivered at an unknown location and the task then finished "
            "normally (cancelling()=1)."
        )
