"""Per-task scope stacks: the facts of enter, exit and cancel, and the violations they reveal.

Pure bookkeeping: no patching and no OpenTelemetry. Wrappers in ``scopewatch.instrumentation``
feed it; a :class:`ScopeSink` (``scopewatch.telemetry.scopes``) turns records into telemetry.
Scope objects are keyed by ``id()`` and held strongly only while entered (anyio's slotted
scopes cannot be weakly referenced); task entries hold tasks weakly. Tasks are asyncio or trio
tasks, read through :mod:`scopewatch._core.task_adapters`.
"""

from __future__ import annotations

import functools
import inspect
import math
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from scopewatch import semconv
from scopewatch._core import classify, frames, task_adapters
from scopewatch._core.loose_cancels import LooseCancels
from scopewatch._core.records import CancelInfo, ScopeRecord, Violation
from scopewatch._core.scope_cancels import ScopeCancels
from scopewatch._core.scope_ends import ScopeEnds

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from types import FrameType


@dataclass(slots=True)
class ExitFacts:
    """How a scope ended, as seen by the wrapper of its exit."""

    exit_task: str
    outcome: str
    cancel_called: bool
    cancelled_caught: bool
    error: BaseException | None
    """The exception leaving the scope (raised by the exit or passed through it), if any."""


_perf_counter = time.perf_counter
_capture = frames.capture
_ASYNC_GENERATOR = inspect.CO_ASYNC_GENERATOR


class ScopeSink(Protocol):
    """Receives the facts; implemented by the telemetry layer."""

    def entered(self, record: ScopeRecord) -> None:
        """A scope was entered (called only when the sink's ``spans_at_enter`` is true).

        A sink may also offer ``context_now()`` (the context to keep as the later span's
        parent), ``ok_counts`` (the dict where the tracker counts normal ends itself, not
        calling :meth:`exited`) and ``slow`` (seconds past which every end is reported).
        """

    def exited(self, record: ScopeRecord, facts: ExitFacts) -> None:
        """A scope was exited (``record.violations`` holds any violation of this exit)."""

    def leaked(self, record: ScopeRecord, violation: Violation) -> None:
        """A scope outlived the task that entered it."""

    def current_span_context(self) -> Any:
        """The recording span context of the calling task, for cancel links, or ``None``."""


def _no_context() -> None:
    return None


_Capture = tuple[Any, Any, "frames.Captured", Any, Any]
"""The last capture kept for reuse: ``(key, code, captured, outer key, caller's code)``."""
TaskScope = tuple[object, str, float | None, bool]
"""``(scope, kind, timeout, shield)`` of a task's own scope, tracked late (``task_scope``)."""


class _TaskScopes:
    __slots__ = ("records", "task_ref")

    def __init__(self, task_ref: weakref.ref[Any]) -> None:
        self.task_ref = task_ref
        self.records: list[ScopeRecord] = []


class ScopeTracker(ScopeCancels, ScopeEnds):
    """Scope records by scope and by task, and the rules that find violations."""

    def __init__(
        self,
        sink: ScopeSink,
        stack_depth: int,
        max_tracked: int,
        task_cancel_info: Callable[[Any], CancelInfo | None] | None = None,
    ) -> None:
        self.sink = sink
        self.stack_depth = stack_depth
        self.max_tracked = max_tracked
        self.untracked = 0
        """Scopes not tracked because ``max_tracked`` was reached."""
        self.bound_reached: Callable[[str, int], None] | None = None
        """Called with ``("scope", max_tracked)`` the first time a scope is not tracked."""
        self.bound_told = False
        self.task_cancel_info = task_cancel_info
        """Who called ``Task.cancel()`` on a task (set by the tasks feature)."""
        self._by_scope: dict[int, ScopeRecord] = {}
        self._by_task: dict[int, _TaskScopes] = {}
        self.by_scope = self._by_scope
        """``id(scope)`` -> record of every entered scope (wrappers read it directly)."""
        self.by_task = self._by_task
        """``id(task)`` -> that task's entered scopes (``.records``, outermost first), read
        directly by wrappers that inline :meth:`pop_innermost`."""
        self._last_capture: _Capture = (None, None, ((), "", 0), None, None)
        self.spans_at_enter = bool(getattr(sink, "spans_at_enter", True))
        """Whether the sink wants :meth:`ScopeSink.entered` (it starts spans at enter)."""
        self.context_now: Callable[[], Any] = getattr(sink, "context_now", _no_context)
        """The current OpenTelemetry context, kept as the parent of a span made later."""
        self.ok_counts: dict[tuple[str, str], int] | None = getattr(sink, "ok_counts", None)
        """``(kind, "ok")`` -> user scopes that ended normally, counted here with no call to
        the sink; ``None``: every exit goes to the sink (it has spans or durations to make)."""
        self.slow: float = getattr(sink, "slow", math.inf)
        """Seconds past which a scope is anomalous however it ended."""
        self._loose_cancels = LooseCancels()
        """Cancels of scopes not entered (exited already, or not yet entered)."""
        self.task_scope: Callable[[Any], TaskScope | None] | None = None
        """Finds the library scope around a whole task's body that is not tracked when it is
        entered (anyio's per-task scope, which every spawned task enters): asked once per
        task, at its first tracked scope or a cancel of that scope, which is tracked from
        then on, below the task's other scopes."""

    # --- enter ------------------------------------------------------------------------------

    def enter(
        self,
        obj: object,
        kind: str,
        user: bool,
        task: Any,
        frame: FrameType | None,
        timeout: float | None = None,
        shield: bool = False,
        task_name: str | None = None,
    ) -> ScopeRecord | None:
        """Record that ``task`` entered ``obj`` in ``frame`` (``task_name``: for trio tasks).

        The hot path of every scope: facts only (no span, no attribute dict); the wall-clock
        start is derived at export, from the monotonic one, for the scopes that need it.
        """
        by_scope = self._by_scope
        if len(by_scope) >= self.max_tracked:
            self.untracked += 1
            if not self.bound_told and self.bound_reached is not None:
                self.bound_told = True
                self.bound_reached(semconv.UNTRACKED_SCOPE, self.max_tracked)
            return None
        if self.stack_depth and frame is not None:
            # A loop entering scopes at one place walks the same stack each time: keep the
            # last capture for the same frame, instruction and caller (frame and instruction).
            back = frame.f_back
            key = (id(frame), frame.f_lasti, id(back), back.f_lasti if back is not None else -1)
            last = self._last_capture
            if last[0] == key and last[1] is frame.f_code:
                captured, asyncgen, asyncgen_frame = last[2]
            else:
                captured, asyncgen, asyncgen_frame = self._capture(frame, back, key)
        else:
            captured, asyncgen, asyncgen_frame = (), "", 0
        record = ScopeRecord(
            obj,
            kind,
            user,
            task,
            task.get_name() if task_name is None else task_name,
            0,
            _perf_counter(),
            captured,
            asyncgen,
            asyncgen_frame,
            timeout,
            shield,
        )
        entry = self._by_task.get(id(task))
        if entry is None or entry.task_ref() is not task:
            entry = self._scopes_of(task)
        entry.records.append(record)
        by_scope[id(obj)] = record
        if self._loose_cancels:
            record.cancel = self._loose_cancels.take(obj)
        record.parent_context = self.context_now()
        if self.spans_at_enter:
            self.sink.entered(record)
        return record

    def _capture(self, frame: FrameType, back: FrameType | None, key: Any) -> frames.Captured:
        """The enter stack from ``frame``, reusing the last one's outer part where it can.

        A scope entered under the same caller, at the same instruction, as the last capture
        (a second scope in the same function, the next scope of a loop) shares its frames
        beyond the first: only that one is read. Kept for reuse only when ``frame`` is itself
        the first kept (user) frame: beyond an internal frame (anyio's on trio) the user's
        frames differ under the same two innermost ones.
        """
        last = self._last_capture
        if last[3] is not None and back is not None and back.f_code is last[4]:
            cached_key = last[0]
            if cached_key[2] == key[2] and cached_key[3] == key[3]:
                outer = back.f_back
                if last[3] == (id(outer), outer.f_lasti if outer is not None else -1):
                    head = frames.plain_head(frame)
                    if head is not None:
                        cached, asyncgen, asyncgen_frame = last[2]
                        taken: frames.Captured = ((head, *cached[1:]), asyncgen, asyncgen_frame)
                        self._last_capture = (key, frame.f_code, taken, last[3], last[4])
                        return taken
        taken = _capture(frame, self.stack_depth)
        code = frame.f_code
        if taken[0] and taken[0][0][0] is code:
            if back is not None and not code.co_flags & _ASYNC_GENERATOR:
                # a generator's frame heads its own name and frame id: never reused
                outer = back.f_back
                outer_key = (id(outer), outer.f_lasti if outer is not None else -1)
                self._last_capture = (key, code, taken, outer_key, back.f_code)
            else:
                self._last_capture = (key, code, taken, None, None)
        return taken

    def _scopes_of(self, task: Any) -> _TaskScopes:
        key = id(task)
        entry = self._by_task.get(key)
        if entry is None or entry.task_ref() is not task:
            entry = _TaskScopes(weakref.ref(task, functools.partial(self._forget_task, key)))
            self._by_task[key] = entry
            task_adapters.adapter_of(task).watch(task, self._task_done)
            if self.task_scope is not None:
                found = self.task_scope(task)
                if found is not None:
                    self._track_task_scope(task, entry, *found)
        return entry

    def track_task(self, task: Any) -> None:
        """Track ``task``'s scopes from now on (its own scope included), if not yet."""
        entry = self._by_task.get(id(task))
        if entry is None or entry.task_ref() is not task:
            self._scopes_of(task)

    def _track_task_scope(
        self,
        task: Any,
        entry: _TaskScopes,
        obj: object,
        kind: str,
        timeout: float | None,
        shield: bool,
    ) -> None:
        """Put the task's own scope, entered before anything tracked, under its other scopes.

        Its start is when it is first tracked (its enter was not seen); it becomes a span
        only when violated (a task returning with a scope still open).
        """
        by_scope = self._by_scope
        if id(obj) in by_scope or len(by_scope) >= self.max_tracked:
            return
        record = ScopeRecord(
            obj, kind, False, task, task.get_name(), 0, _perf_counter(), (), "", 0, timeout, shield
        )
        entry.records.append(record)
        by_scope[id(obj)] = record
        if self._loose_cancels:
            record.cancel = self._loose_cancels.take(obj)
        record.parent_context = self.context_now()

    # --- lookups ----------------------------------------------------------------------------

    def records_of(self, task: Any) -> list[ScopeRecord]:
        """The scopes ``task`` has entered and not yet exited, outermost first."""
        entry = self._by_task.get(id(task))
        if entry is None or entry.task_ref() is not task:
            return []
        return list(entry.records)

    def record_of(self, obj: object) -> ScopeRecord | None:
        """The record of an entered scope, or ``None``."""
        record = self._by_scope.get(id(obj))
        return record if record is not None and record.obj is obj else None

    def _enclosing(self, record: ScopeRecord) -> list[ScopeRecord]:
        entry = self._by_task.get(id(record.task))
        if entry is None:
            return []
        stack = entry.records
        return stack[: stack.index(record)] if record in stack else list(stack)

    # --- exit -------------------------------------------------------------------------------

    def pop_innermost(self, record: ScopeRecord, obj: object, exit_task: Any) -> bool:
        """Take ``record`` (of ``obj``) off if ``exit_task`` entered it and it is innermost.

        Such an exit cannot be a violation, so nothing is recorded before the library's own
        exit runs; ``False``: nothing was changed, :meth:`exit_begin` decides.
        """
        if record.obj is not obj or exit_task is not record.task:
            return False
        entry = self._by_task.get(id(exit_task))
        if entry is None:
            return False
        stack = entry.records
        if not stack or stack[-1] is not record:
            return False
        stack.pop()
        self._by_scope.pop(id(obj), None)
        return True

    def exit_begin(
        self, obj: object, exit_task: Any, frame: FrameType | None
    ) -> ScopeRecord | None:
        """Take ``obj`` off its task's stack and record any violation of this exit."""
        record = self._by_scope.pop(id(obj), None)
        if record is None:
            return None
        if record.obj is not obj:  # an id reused by another object: not ours
            self._by_scope[id(obj)] = record
            return None
        entry = self._by_task.get(id(record.task))
        stack = entry.records if entry is not None else []
        if exit_task is not record.task:
            if record in stack:
                stack.remove(record)
            self._violate(
                record,
                semconv.KIND_CROSS_TASK_EXIT,
                classify.cross_task_cause(record, exit_task, frame),
                exit_task,
                frame,
            )
        elif stack and stack[-1] is record:
            stack.pop()
        elif record in stack:
            innermost = stack[-1]
            still_open = stack[stack.index(record) + 1 :]
            stack.remove(record)
            cause = classify.non_lifo_cause(record, innermost, frame)
            self._violate(
                record,
                semconv.KIND_NON_LIFO_EXIT,
                cause,
                exit_task,
                frame,
                detail=classify.non_lifo_detail(record, innermost, cause, still_open),
                enter_frames=classify.non_lifo_enter_frames(record, innermost),
            )
        return record

    def _violate(
        self,
        record: ScopeRecord,
        kind: str,
        cause: str,
        exit_task: Any,
        frame: FrameType | None,
        detail: str = "",
        enter_frames: frames.Frames | None = None,
    ) -> None:
        exit_frames, _, _ = frames.capture(frame, max(self.stack_depth, 1))
        record.add_violation(
            Violation(
                kind=kind,
                cause=cause,
                scope_kind=record.kind,
                enter_task=record.task_name,
                exit_task=task_adapters.task_name(exit_task),
                asyncgen=record.asyncgen,
                enter_frames=record.frames if enter_frames is None else enter_frames,
                exit_frames=exit_frames,
                detail=detail,
                asyncgen_managed=frames.managed_generator(record.asyncgen_frame, record.asyncgen),
            )
        )

    def exit_ok(
        self,
        record: ScopeRecord,
        exit_task: Any,
        scope: object,
        read_facts: Callable[[Any], tuple[bool, bool, Iterable[object]]],
        exit_name: str | None = None,
    ) -> None:
        """A scope :meth:`exit_begin` returned ended with no error and no caught cancellation.

        The common case is a dict increment (user scopes) or nothing (anyio's own); the sink
        hears only of slow or violated scopes, or of every one when it makes spans or
        durations for all.
        """
        counts = self.ok_counts
        if (
            counts is not None
            and not record.violations
            and _perf_counter() - record.start <= self.slow
        ):
            if record.user:
                key = (record.kind, semconv.OUTCOME_OK)
                try:  # += on the dict itself: no thread switch between its read and write
                    counts[key] += 1
                except KeyError:
                    counts.setdefault(key, 0)
                    counts[key] += 1
            return
        cancel_called = read_facts(scope)[0]
        if exit_name is None:
            exit_name = exit_task.get_name() if exit_task is not None else ""
        self.sink.exited(
            record, ExitFacts(exit_name, semconv.OUTCOME_OK, cancel_called, False, None)
        )

    def finish(self, record: ScopeRecord, facts: ExitFacts) -> None:
        """Hand a completed exit to the sink."""
        self.sink.exited(record, facts)
