"""``ScopeTracker`` as a state machine, without an event loop (h11's ``test_state.py`` style).

Facts go in as calls (enter, exit, cancel, task end, loop close) with fake tasks and real frames
of this module; what comes out is the records' state and the calls a recording sink received.
Async generators are stepped by hand (``send(None)``): they never await, so no loop is needed.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest

from scopewatch import semconv
from scopewatch._core import frames
from scopewatch._core.records import CancelInfo
from scopewatch._core.tracker import ExitFacts, ScopeTracker
from tests.support.fakes import FakeLoop, FakeTask, RecordingScopeSink, Scope

KIND = semconv.SPAN_ANYIO_CANCEL_SCOPE
OUTER = semconv.SPAN_ANYIO_FAIL_AFTER


def no_facts(scope: object) -> tuple[bool, bool, tuple[object, ...]]:
    """``read_facts`` of a scope nobody cancelled."""
    return (False, False, ())


def make(
    sink: RecordingScopeSink | None = None, **options: Any
) -> tuple[ScopeTracker, RecordingScopeSink]:
    sink = sink if sink is not None else RecordingScopeSink()
    options.setdefault("stack_depth", 8)
    options.setdefault("max_tracked", 100)
    return ScopeTracker(sink, **options), sink


def step(awaitable: Any) -> Any:
    """Run one step of an awaitable that never awaits; its result, or what it yielded."""
    try:
        awaitable.send(None)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("it awaited something: these tests have no event loop")


async def holds_scope(tracker: ScopeTracker, scope: Scope, task: FakeTask) -> Any:
    """An async generator entering ``scope`` and yielding inside it, then exiting it (in the
    task sent to it, or ``task``) and yielding the record."""
    tracker.enter(scope, KIND, True, task, sys._getframe())
    exit_task = yield
    yield tracker.exit_begin(scope, task if exit_task is None else exit_task, sys._getframe())


def here() -> int:
    """The caller's line."""
    return sys._getframe(1).f_lineno


# --- normal ends ------------------------------------------------------------------------------


def test_a_normal_user_scope_is_counted_without_calling_the_sink():
    tracker, sink = make(RecordingScopeSink(ok_counts={}))
    task, scope = FakeTask("main"), Scope()
    record = tracker.enter(scope, KIND, True, task, sys._getframe())
    line = here() - 1
    assert record is not None
    assert (record.kind, record.task_name, record.user) == (KIND, "main", True)
    assert record.frames[0] == (
        test_a_normal_user_scope_is_counted_without_calling_the_sink.__code__,
        line,
    )
    assert tracker.records_of(task) == [record] and tracker.record_of(scope) is record

    assert tracker.exit_begin(scope, task, sys._getframe()) is record
    tracker.exit_ok(record, task, scope, no_facts)

    assert record.violations == ()
    assert tracker.records_of(task) == [] and tracker.record_of(scope) is None
    assert sink.ok_counts == {(KIND, semconv.OUTCOME_OK): 1}
    assert sink.calls == []


def test_a_library_scope_ending_normally_is_not_counted():
    tracker, sink = make(RecordingScopeSink(ok_counts={}))
    task, scope = FakeTask("main"), Scope()
    record = tracker.enter(scope, KIND, False, task, None)
    assert record is not None and record.frames == ()
    assert tracker.exit_begin(scope, task, None) is record
    tracker.exit_ok(record, task, scope, no_facts)
    assert sink.ok_counts == {} and sink.calls == []


def test_without_ok_counts_every_end_reaches_the_sink_with_its_facts():
    tracker, sink = make()
    task, scope = FakeTask("main"), Scope()
    record = tracker.enter(scope, KIND, True, task, sys._getframe())
    assert record is not None
    tracker.exit_begin(scope, task, sys._getframe())
    tracker.exit_ok(record, task, scope, lambda _: (True, False, ()))
    assert sink.calls == [
        ("exited", record, ExitFacts("main", semconv.OUTCOME_OK, True, False, None))
    ]


def test_a_slow_scope_reaches_the_sink_even_with_ok_counts():
    tracker, sink = make(RecordingScopeSink(ok_counts={}, slow=-1.0))
    task, scope = FakeTask("main"), Scope()
    record = tracker.enter(scope, KIND, True, task, sys._getframe())
    assert record is not None
    tracker.exit_begin(scope, task, sys._getframe())
    tracker.exit_ok(record, task, scope, no_facts, exit_name="main")
    assert sink.events() == ["exited"] and sink.ok_counts == {}


def test_a_sink_that_starts_spans_hears_of_every_enter():
    tracker, sink = make(RecordingScopeSink(spans_at_enter=True))
    record = tracker.enter(Scope(), KIND, True, FakeTask("main"), None)
    assert sink.calls == [("entered", record)]


def test_pop_innermost_takes_only_the_entering_tasks_innermost_scope():
    tracker, _ = make()
    task, other = FakeTask("main"), FakeTask("other")
    outer, inner = Scope("outer"), Scope("inner")
    outer_record = tracker.enter(outer, OUTER, True, task, None)
    inner_record = tracker.enter(inner, KIND, True, task, None)
    assert outer_record is not None and inner_record is not None
    assert not tracker.pop_innermost(outer_record, outer, task)  # not innermost
    assert not tracker.pop_innermost(inner_record, inner, other)  # another task
    assert not tracker.pop_innermost(inner_record, outer, task)  # another scope's record
    assert tracker.records_of(task) == [outer_record, inner_record]
    assert tracker.pop_innermost(inner_record, inner, task)
    assert tracker.records_of(task) == [outer_record] and tracker.record_of(inner) is None


def test_exiting_an_unknown_scope_records_nothing():
    tracker, sink = make()
    assert tracker.exit_begin(Scope(), FakeTask("main"), None) is None
    assert sink.calls == []


# --- cross_task_exit --------------------------------------------------------------------------


def test_exit_in_another_task_is_cross_task_exit_by_other_task():
    tracker, _ = make()
    main, other, scope = FakeTask("main"), FakeTask("other"), Scope()
    record = tracker.enter(scope, KIND, True, main, sys._getframe())
    assert tracker.exit_begin(scope, other, sys._getframe()) is record
    assert record is not None
    (violation,) = record.violations
    assert (violation.kind, violation.cause) == (
        semconv.KIND_CROSS_TASK_EXIT,
        semconv.CAUSE_OTHER_TASK,
    )
    assert (violation.enter_task, violation.exit_task, violation.scope_kind) == (
        "main",
        "other",
        KIND,
    )
    assert violation.enter_frames == record.frames
    assert violation.exit_frames[0][0] is sys._getframe().f_code
    assert tracker.records_of(main) == []  # taken off the entering task's stack


def test_exit_outside_any_task_is_cross_task_exit_of_unknown_cause():
    tracker, _ = make()
    scope = Scope()
    record = tracker.enter(scope, KIND, True, FakeTask("main"), None)
    tracker.exit_begin(scope, None, None)
    assert record is not None
    (violation,) = record.violations
    assert (violation.cause, violation.exit_task) == (semconv.CAUSE_UNKNOWN, "")


def test_a_generator_step_in_a_fresh_task_is_per_step_task():
    """``ensure_future(anext(gen))``: each step of the generator runs in a new task."""
    tracker, _ = make()
    scope = Scope()
    first_step = FakeTask("step-1")
    generator = holds_scope(tracker, scope, first_step)
    step(generator.asend(None))
    record = tracker.record_of(scope)
    assert record is not None and record.asyncgen == holds_scope.__qualname__
    second_step = FakeTask("step-2")
    resumed = generator.asend(second_step)
    second_step.coro = resumed  # the new task runs the generator's asend
    assert step(resumed) is record
    (violation,) = record.violations
    assert (violation.kind, violation.cause, violation.asyncgen) == (
        semconv.KIND_CROSS_TASK_EXIT,
        semconv.CAUSE_PER_STEP_TASK,
        holds_scope.__qualname__,
    )
    assert violation.exit_task == second_step.get_name()
    step(generator.aclose())


# --- non_lifo_exit ----------------------------------------------------------------------------


def test_outer_scope_exited_first_is_non_lifo_exit_order():
    tracker, _ = make()
    task, outer, inner = FakeTask("main"), Scope("outer"), Scope("inner")
    outer_record = tracker.enter(outer, OUTER, True, task, sys._getframe())
    inner_record = tracker.enter(inner, KIND, True, task, sys._getframe())
    inner_line = here() - 1
    assert tracker.exit_begin(outer, task, sys._getframe()) is outer_record
    assert outer_record is not None and inner_record is not None
    (violation,) = outer_record.violations
    assert (violation.kind, violation.cause) == (
        semconv.KIND_NON_LIFO_EXIT,
        semconv.CAUSE_EXIT_ORDER,
    )
    assert violation.detail == f"{KIND} entered at {__file__}:{inner_line} was still open inside it"
    assert tracker.records_of(task) == [inner_record]  # the inner one is still entered
    assert tracker.exit_begin(inner, task, None) is inner_record
    assert inner_record.violations == ()


def test_two_generators_advanced_alternately_are_interleaved_generators():
    tracker, _ = make()
    task, first_scope, second_scope = FakeTask("main"), Scope("first"), Scope("second")
    first = holds_scope(tracker, first_scope, task)
    second = holds_scope(tracker, second_scope, task)
    step(first.asend(None))
    step(second.asend(None))
    record = step(first.asend(None))  # exits its scope while the second one's is innermost
    (violation,) = record.violations
    assert (violation.kind, violation.cause) == (
        semconv.KIND_NON_LIFO_EXIT,
        semconv.CAUSE_INTERLEAVED_GENERATORS,
    )
    for generator in (first, second):
        step(generator.aclose())


def test_a_scope_exited_while_a_generator_is_suspended_in_its_own_is_asyncgen_suspended():
    tracker, _ = make()
    task, outer, held = FakeTask("main"), Scope("outer"), Scope("held")
    outer_record = tracker.enter(outer, OUTER, True, task, sys._getframe())
    generator = holds_scope(tracker, held, task)
    step(generator.asend(None))
    tracker.exit_begin(outer, task, sys._getframe())
    assert outer_record is not None
    (violation,) = outer_record.violations
    assert violation.cause == semconv.CAUSE_ASYNCGEN_SUSPENDED
    step(generator.aclose())


def test_a_task_scope_ending_with_a_scope_still_open_is_task_returned():
    """anyio's per-task scope (entered by the library, no user frame) ends: the body returned."""
    tracker, _ = make()
    task, own, held = FakeTask("worker"), Scope("own"), Scope("held")
    own_record = tracker.enter(own, KIND, False, task, None)
    held_record = tracker.enter(held, OUTER, True, task, sys._getframe())
    held_line = here() - 1
    tracker.exit_begin(own, task, None)
    assert own_record is not None and held_record is not None
    (violation,) = own_record.violations
    assert violation.cause == semconv.CAUSE_TASK_RETURNED
    assert violation.detail == (
        "task 'worker' returned while a scope it entered was still open (held by an exit stack "
        f"or a connection object): {OUTER} entered at {__file__}:{held_line}"
    )
    assert violation.enter_frames == held_record.frames  # the task scope has none of its own


def test_a_task_scope_tracked_late_goes_below_the_first_tracked_scope():
    """A task's own scope whose enter was not seen (``task_scope``) is put under its stack."""
    tracker, _ = make()
    task, own, held = FakeTask("worker"), Scope("own"), Scope("held")
    tracker.task_scope = lambda of: (own, KIND, None, False) if of is task else None
    held_record = tracker.enter(held, OUTER, True, task, sys._getframe())
    own_record = tracker.record_of(own)
    assert own_record is not None and not own_record.user and own_record.frames == ()
    assert tracker.records_of(task) == [own_record, held_record]
    tracker.exit_begin(own, task, None)
    (violation,) = own_record.violations
    assert violation.cause == semconv.CAUSE_TASK_RETURNED


def test_a_task_scope_is_tracked_late_at_most_once():
    tracker, _ = make()
    task, own = FakeTask("worker"), Scope("own")
    asked: list[object] = []

    def task_scope(of: object) -> tuple[object, str, None, bool]:
        asked.append(of)
        return own, KIND, None, False

    tracker.task_scope = task_scope
    first, second = Scope("first"), Scope("second")
    tracker.enter(first, OUTER, True, task, sys._getframe())
    tracker.exit_begin(first, task, None)
    tracker.track_task(task)
    tracker.enter(second, OUTER, True, task, sys._getframe())
    assert asked == [task]
    assert [record.obj for record in tracker.records_of(task)] == [own, second]


def _enter_twice(tracker: ScopeTracker, task: FakeTask) -> tuple[Any, Any, int, int]:
    """Two scopes entered at two lines of this one frame, and a capture taken at the second."""
    one = tracker.enter(Scope("one"), KIND, True, task, sys._getframe())
    line_one = here() - 1
    two = tracker.enter(Scope("two"), KIND, True, task, sys._getframe())
    line_two = here() - 1
    return one, two, line_one, line_two


def test_scopes_under_one_caller_share_its_frames_each_with_its_own_line(monkeypatch):
    from scopewatch._core import tracker as tracker_module

    walks: list[object] = []
    walk = tracker_module._capture
    monkeypatch.setattr(tracker_module, "_capture", lambda *a: walks.append(a) or walk(*a))
    tracker, _ = make()
    one, two, line_one, line_two = _enter_twice(tracker, FakeTask("main"))
    called_at = here() - 1
    code = _enter_twice.__code__
    assert one.frames[0] == (code, line_one) and two.frames[0] == (code, line_two)
    assert two.frames[1:] == one.frames[1:]
    here_and_out = frames.capture(sys._getframe(), 7)[0]  # what a capture reads from here
    assert two.frames[1] == (here_and_out[0][0], called_at)
    assert two.frames[2:] == here_and_out[1:]
    assert len(walks) == 1  # the second scope read only its own frame


async def _generator_enters(tracker: ScopeTracker, task: FakeTask) -> Any:
    yield tracker.enter(Scope("gen"), KIND, True, task, sys._getframe())


def test_a_generator_frame_is_captured_with_its_own_name_not_reused():
    tracker, _ = make()
    task = FakeTask("main")
    plain = tracker.enter(Scope("plain"), KIND, True, task, sys._getframe())
    generator = _generator_enters(tracker, task)
    in_generator = step(generator.__anext__())
    assert plain is not None and in_generator is not None
    assert in_generator.asyncgen == _generator_enters.__qualname__
    assert in_generator.frames[0][0] is _generator_enters.__code__
    assert plain.asyncgen == ""


# --- task end and loop close ------------------------------------------------------------------


def test_a_finished_task_leaves_its_scopes_orphaned_not_leaked():
    tracker, sink = make()
    task, other, scope = FakeTask("worker"), FakeTask("closer"), Scope()
    record = tracker.enter(scope, KIND, True, task, None)
    task.finish()
    assert tracker.records_of(task) == [] and tracker.record_of(scope) is record
    assert sink.calls == []
    tracker.exit_begin(scope, other, None)  # closed later from another task
    assert record is not None
    assert [v.kind for v in record.violations] == [semconv.KIND_CROSS_TASK_EXIT]


def test_closing_a_loop_reports_its_scopes_still_entered_as_leaked():
    tracker, sink = make()
    loop, other_loop = FakeLoop(), FakeLoop()
    finished, pending = FakeTask("finished", loop), FakeTask("pending", loop)
    elsewhere = FakeTask("elsewhere", other_loop)
    finished_record = tracker.enter(Scope("a"), KIND, True, finished, None)
    pending_record = tracker.enter(Scope("b"), KIND, True, pending, None)
    kept = Scope("c")
    elsewhere_record = tracker.enter(kept, KIND, True, elsewhere, None)
    finished.finish()

    tracker.close_loop(loop)

    leaks = {call[1].task_name: call[2] for call in sink.calls if call[0] == "leaked"}
    assert set(leaks) == {"finished", "pending"}
    assert leaks["finished"].cause == semconv.CAUSE_TASK_FINISHED
    assert leaks["finished"].detail == (
        "It was never exited: the task 'finished' that entered it finished and the event loop "
        "closed later with the scope still entered."
    )
    assert leaks["pending"].cause == semconv.CAUSE_LOOP_CLOSED
    assert finished_record is not None and pending_record is not None
    assert finished_record.violations == (leaks["finished"],)
    assert pending_record.violations == (leaks["pending"],)
    assert leaks["pending"].kind == semconv.KIND_SCOPE_LEAKED
    assert tracker.record_of(kept) is elsewhere_record  # another loop's scope is not judged
    assert tracker.records_of(pending) == []


def test_a_leaked_scope_is_forgotten_so_its_late_exit_is_not_tracked():
    tracker, _ = make()
    loop = FakeLoop()
    task, scope = FakeTask("main", loop), Scope()
    tracker.enter(scope, KIND, True, task, None)
    tracker.close_loop(loop)
    assert tracker.exit_begin(scope, task, None) is None


# --- the tracking bound -----------------------------------------------------------------------


def test_past_max_tracked_scopes_are_counted_and_the_bound_reported_once():
    tracker, _ = make(max_tracked=1)
    reached: list[tuple[str, int]] = []
    tracker.bound_reached = lambda kind, bound: reached.append((kind, bound))
    task = FakeTask("main")
    assert tracker.enter(Scope(), KIND, True, task, None) is not None
    assert tracker.enter(Scope(), KIND, True, task, None) is None
    assert tracker.enter(Scope(), KIND, True, task, None) is None
    assert tracker.untracked == 2
    assert reached == [(semconv.UNTRACKED_SCOPE, 1)]


def test_stack_depth_zero_keeps_no_frames():
    tracker, _ = make(stack_depth=0)
    record = tracker.enter(Scope(), KIND, True, FakeTask("main"), sys._getframe())
    assert record is not None and record.frames == ()


# --- who cancelled a scope --------------------------------------------------------------------


def test_the_first_cancel_request_is_the_one_that_counts():
    tracker, _ = make(RecordingScopeSink(span_context="span-of-canceller"))
    task, scope = FakeTask("main"), Scope()
    record = tracker.enter(scope, KIND, True, task, None)
    tracker.cancel_requested(scope, semconv.ORIGIN_EXPLICIT, task, "app.py:3", "done")
    tracker.cancel_requested(scope, semconv.ORIGIN_DEADLINE, None, "", "")
    assert record is not None
    assert record.cancel == CancelInfo(
        semconv.ORIGIN_EXPLICIT, "main", "app.py:3", "done", "span-of-canceller"
    )
    assert tracker.cancel_of(scope) == (KIND, record.cancel)


def test_a_deadline_request_without_location_is_placed_where_the_scope_was_entered():
    tracker, _ = make()
    scope = Scope()
    record = tracker.enter(scope, KIND, True, FakeTask("main"), sys._getframe())
    line = here() - 1
    tracker.cancel_requested(scope, semconv.ORIGIN_DEADLINE, None, "", "", task_name="")
    assert record is not None and record.cancel is not None
    assert record.cancel.location == f"{__file__}:{line}"
    assert frames.location(record.frames) == record.cancel.location


def test_a_request_made_before_enter_is_taken_at_enter():
    tracker, _ = make()
    task, scope = FakeTask("main"), Scope()
    tracker.cancel_requested(scope, semconv.ORIGIN_EXPLICIT, task, "app.py:9", "")
    assert tracker.cancel_of(scope) is not None  # remembered while not entered
    record = tracker.enter(scope, KIND, True, task, None)
    assert record is not None and record.cancel is not None
    assert (record.cancel.origin, record.cancel.location) == (semconv.ORIGIN_EXPLICIT, "app.py:9")


@pytest.mark.parametrize("through", ["parents", "stack"])
def test_a_scope_cancelled_by_an_enclosing_one_names_it_as_parent(through):
    tracker, _ = make()
    task, outer, inner = FakeTask("main"), Scope("outer"), Scope("inner")
    tracker.enter(outer, OUTER, True, task, None)
    inner_record = tracker.enter(inner, KIND, True, task, None)
    tracker.cancel_requested(outer, semconv.ORIGIN_DEADLINE, None, "app.py:1", "", task_name="")
    assert inner_record is not None
    tracker.resolve_cancel(inner_record, [outer] if through == "parents" else [])
    assert inner_record.cancel == CancelInfo(
        semconv.ORIGIN_PARENT, "", "app.py:1", f"{OUTER} was cancelled", inherited="deadline"
    )


def test_a_scope_nobody_in_scope_cancelled_asks_the_tasks_feature_then_says_external():
    asked: list[Any] = []
    told = CancelInfo(semconv.ORIGIN_EXTERNAL, "killer", "app.py:5")

    def task_cancel_info(task: Any) -> CancelInfo | None:
        asked.append(task)
        return told if task.get_name() == "victim" else None

    tracker, _ = make(task_cancel_info=task_cancel_info)
    victim, bystander = FakeTask("victim"), FakeTask("bystander")
    first = tracker.enter(Scope(), KIND, True, victim, None)
    second = tracker.enter(Scope(), KIND, True, bystander, None)
    assert first is not None and second is not None
    tracker.resolve_cancel(first, [])
    tracker.resolve_cancel(second, [])
    assert first.cancel is told
    assert second.cancel == CancelInfo(semconv.ORIGIN_EXTERNAL, "", "")
    assert asked == [victim, bystander]
