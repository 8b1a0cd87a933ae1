"""``TaskTracker`` and the task done callback, without an event loop.

Tasks are fakes whose outcome the test sets; coroutines are real (their code objects name the
task) and are closed unstarted. Library frames (a ``TaskGroup``'s) are this module's functions
given the library's role with :func:`scopewatch._core.cancels.register_role`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest

from scopewatch import semconv
from scopewatch._core import cancels, task_ends
from scopewatch._core.records import CancelInfo, TaskRecord
from scopewatch._core.tasks import TaskTracker
from tests.support.fakes import FakeTask, RecordingTaskSink
from tests.support.markers import needs_311
from tests.support.source_lines import marked_line


async def work() -> None:
    """The coroutine function the tasks here run."""


class Suspend:
    """An awaitable that suspends once (where a cancellation would be delivered)."""

    def __await__(self) -> Iterator[None]:
        yield


async def waits() -> None:
    await Suspend()  # <- suspended


def make(**options: Any) -> tuple[TaskTracker, RecordingTaskSink]:
    sink = RecordingTaskSink(context="context-at-creation", span_context="canceller-span")
    options.setdefault("stack_depth", 8)
    options.setdefault("max_tracked", 100)
    options.setdefault("exclude", ())
    return TaskTracker(sink, **options), sink


def tracked(tracker: TaskTracker, name: str, coro: Any = None) -> tuple[FakeTask, TaskRecord]:
    """A task and its record, as the instrumentation makes them at creation."""
    own = coro is None
    coro = work() if own else coro
    record = tracker.begin(coro, None)
    if own:
        coro.close()
    assert record is not None
    task = FakeTask(name, coro=None if own else coro)
    tracker.remember_foreign(task, record)
    task.add_done_callback(record.done)
    tracker.active += 1
    return task, record


def task_group_child_done(tracker: TaskTracker, victim: FakeTask, task: FakeTask) -> None:
    """Stands for ``TaskGroup._on_task_done``: ``task`` failed, so the group cancels."""
    record = tracker.record_of(victim)
    assert record is not None
    tracker.cancel_requested(victim, record, None, sys._getframe())


def task_group_aexit(tracker: TaskTracker, task: FakeTask) -> None:
    """Stands for ``TaskGroup.__aexit__`` undoing its request on the parent."""
    record = tracker.record_of(task)
    assert record is not None
    tracker.uncancel_requested(task, record, sys._getframe())


cancels.register_role(task_group_child_done.__code__, cancels.GROUP_CHILD_DONE)
cancels.register_role(task_group_aexit.__code__, cancels.GROUP_BODY)


def raised(error: BaseException) -> BaseException:
    """``error`` with the traceback of a raise on this line."""
    try:
        raise error  # <- raised
    except BaseException as caught:
        return caught


def line_of(marker: str) -> int:
    return marked_line(__file__, marker)


# --- creation ---------------------------------------------------------------------------------


def test_facts_of_a_new_task_name_its_coroutine_and_keep_the_context():
    tracker, _ = make()
    coro = work()
    facts = tracker.facts(coro, None)
    coro.close()
    assert facts is not None
    info, owner, start, parent, context = facts
    assert (info.span_name, info.qualname) == (semconv.SPAN_TASK_PREFIX + "work", "work")
    assert (info.file, info.line) == (__file__, work.__code__.co_firstlineno)
    assert owner is tracker and start > 0
    assert (parent, context) == ("", "context-at-creation")  # created outside any task


def test_facts_of_a_task_created_in_a_task_name_that_parent_and_keep_the_given_context():
    tracker, _ = make()
    coro = work()
    facts = tracker.facts(coro, FakeTask("parent"), "context-of-the-caller")
    coro.close()
    assert facts is not None
    assert facts[3:] == ("parent", "context-of-the-caller")


def test_an_excluded_coroutine_is_not_tracked():
    tracker, _ = make(exclude=("work",))
    coro = work()
    assert tracker.facts(coro, None) is None
    coro.close()


def test_past_max_tracked_tasks_are_counted_and_the_bound_reported_once():
    tracker, _ = make(max_tracked=1)
    reached: list[tuple[str, int]] = []
    tracker.bound_reached = lambda kind, bound: reached.append((kind, bound))
    tracked(tracker, "first")
    for _ in range(2):
        coro = work()
        assert tracker.begin(coro, None) is None
        coro.close()
    assert tracker.untracked == 2 and reached == [(semconv.UNTRACKED_TASK, 1)]


# --- ends -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cancelled", "error", "outcome"),
    [
        (False, None, semconv.OUTCOME_OK),
        (False, ValueError("boom"), semconv.OUTCOME_ERROR),
        (True, None, semconv.OUTCOME_CANCELLED),
    ],
)
def test_a_task_end_reaches_the_sink_with_its_outcome(cancelled, error, outcome):
    tracker, sink = make()
    task, record = tracked(tracker, "worker")
    record.span = "span"
    task.is_done, task.is_cancelled, task._exception = True, cancelled, error
    record.done(task)
    record.done(task)  # a second report of the same end changes nothing
    assert sink.calls == [("finished", "worker", outcome, None)]
    assert (record.ended, record.span, tracker.active) == (True, None, 0)


@needs_311
def test_a_task_ending_normally_while_cancelled_swallowed_the_cancellation():
    tracker, sink = make()
    task, record = tracked(tracker, "worker")
    record.cancel = CancelInfo(semconv.ORIGIN_EXTERNAL, "killer", "app.py:3")
    task.cancel_requests = 1
    task.finish()
    ((_, _, outcome, violation),) = sink.calls
    assert outcome == semconv.OUTCOME_OK
    assert (violation.kind, violation.cause) == (
        semconv.KIND_CANCEL_SWALLOWED,
        semconv.CAUSE_CANCEL_CAUGHT,
    )
    assert (violation.enter_task, violation.exit_task) == ("worker", "killer")
    assert violation.detail.startswith(
        "Task.cancel() was called by task 'killer' at app.py:3 (external); the CancelledError "
        "was delivered at an unknown location and the task then finished normally"
    )


@needs_311
def test_a_request_left_by_a_task_group_on_its_parent_is_not_the_tasks_to_re_raise():
    tracker, sink = make()
    parent, record = tracked(tracker, "parent")
    child, _ = tracked(tracker, "child")
    task_group_child_done(tracker, parent, child)
    assert record.group_requests == 1
    parent.cancel_requests = 1  # the group's request, never undone (3.11, early 3.12)
    parent.finish()
    assert sink.calls == [("finished", "parent", semconv.OUTCOME_OK, None)]


@needs_311
def test_the_group_undoing_its_request_is_counted_back():
    tracker, _ = make()
    parent, record = tracked(tracker, "parent")
    child, _ = tracked(tracker, "child")
    task_group_child_done(tracker, parent, child)
    task_group_aexit(tracker, parent)
    assert record.group_requests == 0


# --- cancellation -----------------------------------------------------------------------------


def test_a_cancel_from_outside_any_task_is_external_with_its_location_and_message():
    tracker, _ = make()
    coro = waits()
    coro.send(None)  # suspended in Suspend.__await__
    task, record = tracked(tracker, "victim", coro)
    tracker.cancel_requested(task, record, "enough", sys._getframe())
    line = sys._getframe().f_lineno - 1
    assert record.cancel == CancelInfo(
        semconv.ORIGIN_EXTERNAL, "", f"{__file__}:{line}", "enough", "canceller-span"
    )
    assert record.canceller_frames[0] == (sys._getframe().f_code, line)
    assert (waits.__code__, line_of("# <- suspended")) in record.delivered_frames
    assert record.converted is False
    coro.close()


def test_only_the_first_pending_request_counts():
    tracker, _ = make()
    task, record = tracked(tracker, "victim")
    tracker.cancel_requested(task, record, "first", sys._getframe())
    task.cancel_requests = 1  # delivered to the task, not yet handled
    tracker.cancel_requested(task, record, "second", sys._getframe())
    assert record.cancel is not None and record.cancel.reason == "first"


def test_a_cancel_of_a_done_task_is_ignored():
    tracker, _ = make()
    task, record = tracked(tracker, "victim")
    task.is_done = True
    tracker.cancel_requested(task, record, None, sys._getframe())
    assert record.cancel is None


@needs_311
def test_cancel_info_holds_while_the_request_is_in_force():
    tracker, _ = make()
    task, record = tracked(tracker, "victim")
    tracker.cancel_requested(task, record, None, sys._getframe())
    assert tracker.cancel_info(task) is None  # not delivered yet: cancelling() is 0
    task.cancel_requests = 1
    assert tracker.cancel_info(task) is record.cancel is not None


@needs_311
def test_a_sibling_failure_names_the_child_and_where_it_raised():
    tracker, _ = make()
    parent, record = tracked(tracker, "parent")
    child, child_record = tracked(tracker, "child")
    child_record.span_context = "child-span"
    child._exception = raised(ValueError("boom"))
    task_group_child_done(tracker, parent, child)
    assert record.cancel == CancelInfo(
        semconv.ORIGIN_PARENT,
        "child",
        f"{__file__}:{line_of('# <- raised')}",
        "sibling task 'child' failed with ValueError",
        "child-span",
        failure=True,
    )


def test_tasks_pending_when_their_loop_closes_are_abandoned_once():
    tracker, sink = make()
    pending, _ = tracked(tracker, "pending")
    finished, _ = tracked(tracker, "finished")
    finished.finish()
    untracked = FakeTask("untracked")
    tracker.loop_closing([pending, finished, untracked])
    tracker.loop_closing([pending])
    assert sink.calls == [
        ("finished", "finished", semconv.OUTCOME_OK, None),
        ("abandoned", "pending", "event loop"),
    ]
    assert tracker.active == 0
    record = tracker.record_of(pending)
    assert record is not None and record.ended and record.parent_context is None


# --- the done callback (task_ends) ------------------------------------------------------------


def with_facts(tracker: TaskTracker, name: str) -> FakeTask:
    """A task as scopewatch's ``Task`` holds it: creation facts in a slot, no record yet."""
    coro = work()
    facts = tracker.facts(coro, None)
    coro.close()
    task = FakeTask(name)
    task._scopewatch_facts = facts  # type: ignore[attr-defined]
    task._scopewatch_record = None  # type: ignore[attr-defined]
    tracker.active += 1
    return task


def test_a_quick_normal_end_is_only_counted():
    tracker, sink = make()
    tracker.quick = True
    task = with_facts(tracker, "worker")
    task.add_done_callback(task_ends.ended)
    task.finish()
    assert sink.calls == [] and tracker.active == 0
    assert tracker.counts[semconv.OUTCOME_OK] == 1
    assert tracker.record_of(task) is tracker.ended_record
    assert tracker.cancel_info(task) is None


def test_an_end_that_is_not_quick_makes_the_record_and_reports_it():
    tracker, sink = make()
    tracker.quick = True
    task = with_facts(tracker, "worker")
    task.add_done_callback(task_ends.ended)
    task.finish(error=ValueError("boom"))
    assert sink.calls == [("finished", "worker", semconv.OUTCOME_ERROR, None)]
    record = tracker.record_of(task)
    assert record is not None and record.ended and record is not tracker.ended_record


def test_the_carried_callback_runs_after_and_is_let_go():
    tracker, _ = make()
    tracker.quick = True
    task = with_facts(tracker, "worker")
    woken: list[Any] = []
    task._scopewatch_carrier = woken.append  # type: ignore[attr-defined]
    task.add_done_callback(task_ends.carried)
    task.finish()
    assert woken == [task] and task._scopewatch_carrier is None  # type: ignore[attr-defined]
    assert tracker.counts[semconv.OUTCOME_OK] == 1


class BrokenSink(RecordingTaskSink):
    def finished(self, record: Any, task: Any, outcome: str, violation: Any) -> None:
        raise RuntimeError("telemetry broke")


def test_an_error_of_ours_in_the_done_callback_goes_to_on_error():
    tracker = TaskTracker(BrokenSink(), 8, 100, ())
    errors: list[Exception] = []
    tracker.on_error = errors.append
    task = with_facts(tracker, "worker")
    task.add_done_callback(task_ends.ended)
    task.finish(error=ValueError("boom"))  # not quick: reported, and the sink raises
    assert [str(error) for error in errors] == ["telemetry broke"]


@pytest.mark.parametrize(
    ("cancelled", "error", "outcome"),
    [
        (False, None, semconv.OUTCOME_OK),
        (False, KeyError("k"), semconv.OUTCOME_ERROR),
        (True, None, semconv.OUTCOME_CANCELLED),
    ],
)
def test_outcome_of_a_done_task(cancelled, error, outcome):
    task = FakeTask("t")
    task.is_cancelled, task._exception = cancelled, error
    assert task_ends.outcome_of(task) == outcome


@pytest.mark.parametrize(
    ("origin", "anomalous"),
    [(semconv.ORIGIN_DEADLINE, True), (semconv.ORIGIN_PARENT, False)],
)
def test_a_task_cancelled_by_a_deadline_is_anomalous(origin, anomalous):
    cancel = CancelInfo(origin, "", "")
    assert task_ends.task_anomalous(semconv.OUTCOME_CANCELLED, cancel, 0.0, 1.0) is anomalous
