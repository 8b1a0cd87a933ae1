"""Task records: what a task runs, who spawned it, who asked it to cancel, how it ended.

Pure bookkeeping, no OpenTelemetry and no patching: ``scopewatch.instrumentation.tasks`` feeds
a :class:`TaskTracker` and a :class:`TaskSink` (``scopewatch.telemetry.tasks``) makes telemetry.
The hot path (:meth:`TaskTracker.begin`) is a dictionary lookup per coroutine code object, one
clock read and one small object; names are formatted only when a task is reported.
"""

from __future__ import annotations

import sys
import time
import weakref
from typing import TYPE_CHECKING, Any, Protocol

from scopewatch import semconv
from scopewatch._core import attribution, cancels
from scopewatch._core.records import TaskRecord
from scopewatch._core.task_codes import MISSING, CodeInfo, TaskCodes, Unwrap
from scopewatch._core.task_ends import FACTS_ATTRIBUTE, RECORD_ATTRIBUTE

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from types import FrameType

    from scopewatch._core.records import CancelInfo, ScopeRecord, Violation

PY311 = sys.version_info >= (3, 11)
_perf_counter = time.perf_counter


Facts = tuple[CodeInfo, "TaskTracker", float, str, Any]
"""What is known of a task at creation: the arguments of :class:`TaskRecord`."""


class TaskSink(Protocol):
    """Receives task facts; implemented by the telemetry layer."""

    def current_context(self) -> Any:
        """The OpenTelemetry context current now (the parent of a task created now)."""

    def current_span_context(self) -> Any:
        """The calling task's recording span context, for cancel links, or ``None``."""

    def finished(
        self, record: TaskRecord, task: Any, outcome: str, violation: Violation | None
    ) -> None:
        """A task ended with ``outcome``; ``violation`` is a swallowed cancellation, if any."""

    def ended(
        self,
        record: TaskRecord,
        task: Any,
        name: str,
        outcome: str,
        error: BaseException | None,
    ) -> None:
        """The trio ``task`` named ``name`` ended with ``outcome`` (``error`` for ``error``)."""

    def abandoned(self, record: TaskRecord, name: str, closed: str) -> None:
        """The task's ``closed`` (``event loop``, ``trio run``) closed while it was pending."""


def _pending_cancel(task: Any, record: TaskRecord) -> bool:
    """Whether a cancellation was requested and not yet undone (3.10: not yet delivered).

    A task group's request on its parent is left out: some Pythons never undo it, and a
    later request must not be taken for part of it.
    """
    if PY311:
        return bool(task.cancelling() > record.group_requests)
    if getattr(task, "_must_cancel", False):
        return True
    waiter = getattr(task, "_fut_waiter", None)
    return waiter is not None and waiter.cancelled()


class TaskTracker:
    """Task records, cancel attribution and swallowed-cancellation detection."""

    def __init__(
        self,
        sink: TaskSink,
        stack_depth: int,
        max_tracked: int,
        exclude: tuple[str, ...],
        scope_lookup: Callable[[object], ScopeRecord | None] | None = None,
        cancel_lookup: Callable[[object], tuple[str, CancelInfo] | None] | None = None,
    ) -> None:
        self.sink = sink
        self.stack_depth = stack_depth
        self.max_tracked = max_tracked
        self.scope_lookup = scope_lookup
        self.cancel_lookup = cancel_lookup
        self.active = 0
        """Tracked tasks not yet done (``scopewatch.task.active``). Changed only by ``+= 1`` and
        ``-= 1``, so the instrumentation may set a count kept per thread instead (free-threaded
        builds, ``telemetry.counts.new_tally``); read it with ``int()``."""
        self.on_error: Callable[[Exception], None] = _raise
        """Called with an error of scopewatch's own in a done callback (the safety part)."""
        self.untracked = 0
        """Tasks not tracked because ``max_tracked`` tracked tasks were running (like
        :attr:`active`: ``+= 1`` only, read with ``int()``)."""
        self.bound_reached: Callable[[str, int], None] | None = None
        """Called with ``("task", max_tracked)`` the first time a task is not tracked (without a
        GIL two threads may both call it first: it must say things once itself)."""
        self.bound_told = False
        self._task_codes = TaskCodes(exclude)
        self._codes = self._task_codes.cache
        self._foreign: weakref.WeakKeyDictionary[Any, TaskRecord] = weakref.WeakKeyDictionary()
        self.current_context: Callable[[], Any] = sink.current_context
        """The OpenTelemetry context current now (the sink's reader: a C call by default)."""
        self.counts: dict[str, int] = dict.fromkeys(
            (semconv.OUTCOME_OK, semconv.OUTCOME_ERROR, semconv.OUTCOME_CANCELLED), 0
        )
        """Outcome -> tasks ended (``scopewatch.tasks``); the telemetry's own dict once set."""
        self.slow = float("inf")
        """``SLOW_THRESHOLD``: a longer task is anomalous."""
        self.quick = False
        """A normal end needs nothing but a count (no measurement of every task asked for)."""
        self.ended_record = TaskRecord(_ENDED_INFO, self, 0.0, "", None)
        """The record of every task that ended normally without ever needing one of its own
        (what :meth:`record_of` answers for it: tracked, ended, nothing else known)."""
        self.ended_record.ended = True

    # --- creation ---------------------------------------------------------------------------

    def facts(self, coro: Any, parent: Any, parent_context: Any = None) -> Facts | None:
        """The creation facts of a task about to be created for ``coro``, or ``None``.

        ``(info, tracker, start, parent name, parent_context)``, the arguments of
        :class:`TaskRecord`: scopewatch's ``Task`` keeps them in a slot and a record is made
        only when one is needed (a cancellation, a span, an anomalous end). ``None``: the task
        is not tracked (excluded, or ``max_tracked`` tasks are tracked). ``parent``: the task
        creating it (the one its loop is running), ``None`` outside any task.
        ``parent_context``: :attr:`current_context` read already by the caller, else read here.
        """
        if self.active >= self.max_tracked:
            self.untracked += 1
            if not self.bound_told and self.bound_reached is not None:
                self.bound_told = True
                self.bound_reached(semconv.UNTRACKED_TASK, self.max_tracked)
            return None
        try:
            code = coro.cr_code
        except AttributeError:
            info = self._task_codes.info_of_awaitable(coro)
        else:
            found = self._codes.get(code, MISSING)
            if found is MISSING:
                found = self._task_codes.classify(code)
            info = self._task_codes.unwrap(coro, found) if type(found) is Unwrap else found
        if info is None:
            return None
        return (
            info,
            self,
            _perf_counter(),
            parent.get_name() if parent is not None else "",
            self.current_context() if parent_context is None else parent_context,
        )

    def begin(self, coro: Any, parent: Any) -> TaskRecord | None:
        """A record for a task about to be created for ``coro`` by ``parent``, or ``None``."""
        facts = self.facts(coro, parent)
        return None if facts is None else TaskRecord(*facts)

    def materialize(self, task: Any, facts: Facts) -> TaskRecord:
        """Turn the creation facts kept in ``task``'s slot into its record, kept there instead."""
        record = TaskRecord(*facts)
        setattr(task, RECORD_ATTRIBUTE, record)
        setattr(task, FACTS_ATTRIBUTE, None)
        return record

    def info_of(self, coro: Any) -> CodeInfo | None:
        """What ``coro`` runs (span name, ``code.*`` facts), or ``None`` when it is excluded.

        :meth:`begin` does the same lookup inline (one call less per asyncio task).
        """
        return self._task_codes.info_of(coro)

    def remember_foreign(self, task: Any, record: TaskRecord) -> None:
        """Keep the record of a task that is not scopewatch's ``Task`` subclass."""
        self._foreign[task] = record

    def record_of(self, task: Any) -> TaskRecord | None:
        """The record of a tracked task (made from its creation facts if need be), or ``None``."""
        record = getattr(task, RECORD_ATTRIBUTE, None)
        if record is None:
            facts = getattr(task, FACTS_ATTRIBUTE, None)
            if facts is not None:
                return facts[1].materialize(task, facts)  # type: ignore[no-any-return]
            try:
                record = self._foreign.get(task)
            except TypeError:
                return None
        return record

    # --- cancellation -----------------------------------------------------------------------

    def cancel_requested(
        self, task: Any, record: TaskRecord, message: Any, frame: FrameType | None
    ) -> None:
        """``task.cancel(message)`` is being called by ``frame`` (before it takes effect)."""
        if task.done():
            return
        caller_role = cancels.role_of(frame.f_code) if frame is not None else ""
        if caller_role == cancels.GROUP_CHILD_DONE and PY311:
            record.group_requests += 1
        if record.cancel is not None and _pending_cancel(task, record):
            if caller_role == cancels.TIMEOUT:
                record.converted = record.cancel.origin != semconv.ORIGIN_DEADLINE
            return
        call = cancels.walk(frame)
        record.cancel = attribution.describe(self, task, call, message)
        depth = max(self.stack_depth, 1)
        record.canceller_frames = cancels.requester_frames(frame, depth)
        record.delivered_frames = cancels.suspended_frames(task.get_coro(), depth)
        record.converted = False

    def cancel_info(self, task: Any) -> CancelInfo | None:
        """Who asked ``task`` to cancel, while that request is still in force."""
        if getattr(task, FACTS_ATTRIBUTE, None) is not None:
            return None  # tracked, and no record yet: nobody asked
        record = self.record_of(task)
        if record is None or record.cancel is None:
            return None
        if PY311 and not task.cancelling():
            return None
        return record.cancel

    def uncancel_requested(self, task: Any, record: TaskRecord, frame: FrameType | None) -> None:
        """``task.uncancel()`` is being called by ``frame``."""
        if (
            record.group_requests
            and frame is not None
            and cancels.role_of(frame.f_code) == cancels.GROUP_BODY
        ):
            record.group_requests -= 1

    def scope_of(self, obj: object) -> ScopeRecord | None:
        """The record of an entered scope object (for cancel attribution), or ``None``."""
        if obj is None or self.scope_lookup is None:
            return None
        return self.scope_lookup(obj)

    def scope_cancel(self, obj: object) -> tuple[str, CancelInfo] | None:
        """``(scope kind, who cancelled it)`` for a cancelled scope, even one already exited."""
        if self.cancel_lookup is None:
            return None
        return self.cancel_lookup(obj)

    def span_now(self) -> Any:
        """The calling code's recording span context (for a link), or ``None``."""
        return self.sink.current_span_context()

    # --- end --------------------------------------------------------------------------------

    def task_done(self, record: TaskRecord, task: Any) -> None:
        """The task ended: outcome, swallowed cancellation, telemetry."""
        record.ended = True
        self.active -= 1
        if task.cancelled():
            outcome = semconv.OUTCOME_CANCELLED
        elif getattr(task, "_exception", None) is not None:
            outcome = semconv.OUTCOME_ERROR
        else:
            outcome = semconv.OUTCOME_OK
        violation = None
        if PY311 and outcome == semconv.OUTCOME_OK and task.cancelling() > record.group_requests:
            violation = attribution.swallowed(record, task)
        self.sink.finished(record, task, outcome, violation)
        record.span = record.parent_context = None  # a done task may live long: keep it light

    def loop_closing(self, tasks: Iterable[Any]) -> None:
        """A loop is closing with ``tasks`` not done: they will never finish."""
        for task in tasks:
            record = self.record_of(task)
            if record is not None and not record.ended:
                record.ended = True
                self.active -= 1
                self.sink.abandoned(record, task.get_name(), "event loop")
                record.span = record.parent_context = None


_ENDED_INFO = CodeInfo(semconv.SPAN_TASK_PREFIX + "(ended)", "(ended)")


def _raise(error: Exception) -> None:
    raise error
