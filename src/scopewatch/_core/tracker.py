"""Per-task scope stacks: the facts of enter, exit and cancel, and the violations they reveal.

Pure bookkeeping: no patching and no OpenTelemetry. Wrappers in ``scopewatch.instrumentation``
feed it; a :class:`ScopeSink` (``scopewatch.telemetry.scopes``) turns records into telemetry.
Scope objects are keyed by ``id()`` and held strongly only while entered (anyio's slotted
scopes cannot be weakly referenced); task entries hold tasks weakly.
"""

from __future__ import annotations

import contextvars
import functools
import time
import weakref
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Protocol

from scopewatch import semconv
from scopewatch._core import classify, frames
from scopewatch._core.records import CancelInfo, ScopeRecord, Violation

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


_EXITED_CANCELS_LIMIT = 1024
_QUIET = contextvars.Context()
"""The done callback runs in this empty context: a copy of the task's current one would keep
its context variables' values alive until the task ends, after the task has replaced them."""
_time_ns = time.time_ns
_perf_counter = time.perf_counter
_POSITIONAL_FIELDS = (
    "obj",
    "kind",
    "user",
    "task",
    "task_name",
    "start_ns",
    "start",
    "frames",
    "asyncgen",
    "asyncgen_frame",
    "timeout",
    "shield",
)
"""The leading fields of :class:`ScopeRecord`, in the order ``enter`` passes them."""
if tuple(f.name for f in fields(ScopeRecord))[: len(_POSITIONAL_FIELDS)] != _POSITIONAL_FIELDS:
    raise ImportError("ScopeRecord's leading fields changed: update ScopeTracker.enter")


class ScopeSink(Protocol):
    """Receives the facts; implemented by the telemetry layer."""

    def entered(self, record: ScopeRecord) -> None:
        """A scope was entered."""

    def exited(self, record: ScopeRecord, facts: ExitFacts) -> None:
        """A scope was exited (``record.violations`` holds any violation of this exit)."""

    def leaked(self, record: ScopeRecord, violation: Violation) -> None:
        """A scope outlived the task that entered it."""

    def current_span_context(self) -> Any:
        """The recording span context of the calling task, for cancel links, or ``None``."""


class _TaskScopes:
    __slots__ = ("records", "task_ref")

    def __init__(self, task_ref: weakref.ref[Any]) -> None:
        self.task_ref = task_ref
        self.records: list[ScopeRecord] = []


class ScopeTracker:
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
        self.task_cancel_info = task_cancel_info
        """Who called ``Task.cancel()`` on a task (set by the tasks feature)."""
        self._by_scope: dict[int, ScopeRecord] = {}
        self._by_task: dict[int, _TaskScopes] = {}
        self._exited_cancels: dict[int, tuple[object, CancelInfo]] = {}
        """Cancels of scopes already exited (anyio 4.0 task groups exit their scope before
        waiting for children), so the children's scopes can still name them as parent."""

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
    ) -> ScopeRecord | None:
        """Record that ``task`` entered ``obj``; ``frame`` is the frame that entered it."""
        if len(self._by_scope) >= self.max_tracked:
            self.untracked += 1
            return None
        if self.stack_depth:
            captured, asyncgen, asyncgen_frame = frames.capture(frame, self.stack_depth)
        else:
            captured, asyncgen, asyncgen_frame = (), "", 0
        # Positional: a slotted dataclass takes keywords at twice the cost (~250 ns here).
        record = ScopeRecord(
            obj,
            kind,
            user,
            task,
            task.get_name(),
            _time_ns(),
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
        self._by_scope[id(obj)] = record
        self.sink.entered(record)
        return record

    def _scopes_of(self, task: Any) -> _TaskScopes:
        key = id(task)
        entry = self._by_task.get(key)
        if entry is None or entry.task_ref() is not task:
            entry = _TaskScopes(weakref.ref(task, functools.partial(self._forget_task, key)))
            self._by_task[key] = entry
            task.add_done_callback(self._task_done, context=_QUIET)
        return entry

    # --- cancel -----------------------------------------------------------------------------

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

    def cancel_requested(
        self, obj: object, origin: str, task: Any, location: str, reason: str
    ) -> None:
        """Someone asked ``obj`` to cancel; the first request is the one that counts.

        A request without a location (a deadline timer) is placed where the scope was entered.
        """
        record = self.record_of(obj)
        if record is not None and record.cancel is not None:
            return
        info = CancelInfo(
            origin=origin,
            task=task.get_name() if task is not None else "",
            location=location or (frames.location(record.frames) if record else ""),
            reason=reason,
            span_context=self.sink.current_span_context(),
        )
        if record is not None:
            record.cancel = info
            return
        if len(self._exited_cancels) >= _EXITED_CANCELS_LIMIT:
            del self._exited_cancels[next(iter(self._exited_cancels))]
        self._exited_cancels[id(obj)] = (obj, info)

    def cancel_of(self, obj: object) -> tuple[str, CancelInfo] | None:
        """The kind and cancel request of a scope, entered or recently exited, if any."""
        record = self.record_of(obj)
        if record is not None:
            return (record.kind, record.cancel) if record.cancel is not None else None
        exited = self._exited_cancels.get(id(obj))
        if exited is not None and exited[0] is obj:
            return ("enclosing scope", exited[1])
        return None

    def resolve_cancel(self, record: ScopeRecord, parents: Iterable[object]) -> None:
        """Fill in who cancelled a scope that did not cancel itself.

        Args:
            record: the scope that ended cancelled.
            parents: enclosing scope objects, innermost first (the scope library's own chain).
        """
        if record.cancel is not None:
            return
        for parent in parents:
            found = self.cancel_of(parent)
            if found is not None:
                kind, source = found
                record.cancel = CancelInfo(
                    semconv.ORIGIN_PARENT,
                    source.task,
                    source.location,
                    source.reason or f"{kind} was cancelled",
                    source.span_context,
                )
                return
        for outer in reversed(self._enclosing(record)):
            if outer.cancel is not None:
                source = outer.cancel
                record.cancel = CancelInfo(
                    semconv.ORIGIN_PARENT,
                    source.task,
                    source.location,
                    source.reason or f"{outer.kind} was cancelled",
                    source.span_context,
                )
                return
        info = self.task_cancel_info(record.task) if self.task_cancel_info else None
        record.cancel = info or CancelInfo(semconv.ORIGIN_EXTERNAL, "", "")

    def _enclosing(self, record: ScopeRecord) -> list[ScopeRecord]:
        entry = self._by_task.get(id(record.task))
        if entry is None:
            return []
        stack = entry.records
        return stack[: stack.index(record)] if record in stack else list(stack)

    # --- exit -------------------------------------------------------------------------------

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
                classify.cross_task_cause(record, exit_task, frames.frame_ids(frame)),
                exit_task,
                frame,
            )
        elif stack and stack[-1] is record:
            stack.pop()
        elif record in stack:
            innermost = stack[-1]
            stack.remove(record)
            self._violate(
                record,
                semconv.KIND_NON_LIFO_EXIT,
                classify.non_lifo_cause(record, innermost),
                exit_task,
                frame,
                detail=f"{innermost.kind} entered at {frames.location(innermost.frames)} "
                "was still open inside it",
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
    ) -> None:
        exit_frames, _, _ = frames.capture(frame, max(self.stack_depth, 1))
        record.violations.append(
            Violation(
                kind=kind,
                cause=cause,
                scope_kind=record.kind,
                enter_task=record.task_name,
                exit_task=exit_task.get_name() if exit_task is not None else "",
                asyncgen=record.asyncgen,
                enter_frames=record.frames,
                exit_frames=exit_frames,
                detail=detail,
            )
        )

    def finish(self, record: ScopeRecord, facts: ExitFacts) -> None:
        """Hand a completed exit to the sink."""
        self.sink.exited(record, facts)

    # --- task end ---------------------------------------------------------------------------

    def _task_done(self, task: Any) -> None:
        # Scopes still entered are orphaned, not yet leaked: a stored client or exit stack is
        # often closed later from another task (reported then as a cross-task exit), and an
        # abandoned generator is closed by the loop's finalizer. They stay in ``_by_scope``;
        # whatever is still entered when the loop closes is reported as leaked.
        self._by_task.pop(id(task), None)

    def _forget_task(self, key: int, _ref: object = None) -> None:
        entry = self._by_task.get(key)
        if entry is not None and entry.task_ref() is None:
            del self._by_task[key]

    def close_loop(self, loop: Any = None) -> None:
        """``loop`` is closing (``None``: every loop): each scope still entered there leaked.

        Only scopes entered by tasks of that loop are judged; each is reported once and
        forgotten, so a later exit of the same object is not tracked.
        """
        for key, record in list(self._by_scope.items()):
            if loop is not None and _loop_of(record.task) is not loop:
                continue
            del self._by_scope[key]
            if record.task is not None and record.task.done():
                self._leak(
                    record,
                    semconv.CAUSE_TASK_FINISHED,
                    f"the task {record.task_name!r} that entered it finished and the event "
                    "loop then closed",
                )
            else:
                self._leak(record, semconv.CAUSE_LOOP_CLOSED, "the event loop closed")
        for key, entry in list(self._by_task.items()):
            task = entry.task_ref()
            if loop is None or task is None or _loop_of(task) is loop:
                del self._by_task[key]

    def _leak(self, record: ScopeRecord, cause: str, why: str) -> None:
        detail = f"It was never exited: {why} with the scope still entered."
        if record.asyncgen:
            detail += f" It was entered in async generator {record.asyncgen}, never closed."
        violation = Violation(
            kind=semconv.KIND_SCOPE_LEAKED,
            cause=cause,
            scope_kind=record.kind,
            enter_task=record.task_name,
            exit_task="",
            asyncgen=record.asyncgen,
            enter_frames=record.frames,
            exit_frames=(),
            detail=detail,
        )
        record.violations.append(violation)
        self.sink.leaked(record, violation)


def _loop_of(task: Any) -> Any:
    get_loop = getattr(task, "get_loop", None)
    return get_loop() if get_loop is not None else None
