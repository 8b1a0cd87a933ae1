"""Trio task records: who spawned a task, how it ended and who cancelled it, per trio run.

Pure bookkeeping, no OpenTelemetry, no patching and no trio import: the instrument of
``scopewatch.instrumentation.trio_tasks`` reports each task's spawn and end with the facts it
read from trio; a :class:`TrioRun` keeps the records (through the shared
:class:`~scopewatch._core.tasks.TaskTracker`, which names tasks and counts them) and hands
ended tasks to the task sink.

On trio a task is never cancelled directly: an enclosing cancel scope is. A nursery cancelling
because a child (or its body) raised is told from the failed sibling's own record (its name,
where it raised, its span). Otherwise who cancelled comes from the scope tracker when it knows
the cancelled scope (location, task, span link), else from trio's own facts: the ``Cancelled``
the task ended with carries (trio >= 0.31) the source (``deadline``, ``explicit``,
``nursery``, ``shutdown``, ``KeyboardInterrupt``), the ``repr`` of the task that asked and the
reason given to ``CancelScope.cancel(reason=...)``. Older trios give no source: the origin is
``deadline`` when the cancelled scope's deadline has passed, else ``parent``, without a task.
"""

from __future__ import annotations

import ast
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scopewatch import semconv
from scopewatch._core import cancels, frames
from scopewatch._core.records import CancelInfo, TaskRecord

if TYPE_CHECKING:
    from scopewatch._core.tasks import TaskSink, TaskTracker

_ENDED_KEPT = 256
"""Ended tasks remembered per run (failed or with a span), to name and link a canceller."""
_DEADLINE = "a cancel scope's deadline expired"
_EXPLICIT = "an enclosing cancel scope was cancelled"


@dataclass(slots=True, frozen=True)
class _Ended:
    name: str
    error_type: str
    """``""`` unless it failed."""
    location: str
    """Where it raised."""
    span_context: Any


class TrioRun:
    """The tracked tasks of one trio run."""

    def __init__(self, tracker: TaskTracker, sink: TaskSink) -> None:
        self.tracker = tracker
        self.sink = sink
        self.records: dict[Any, TaskRecord] = {}
        """Live trio task -> its record."""
        self._ended: dict[str, _Ended] = {}
        """``repr(task)`` of the newest tasks that ended with an error or had a span."""
        self._canceller: tuple[str, Any] = ("", None)
        """The last ``source_task`` looked up among the live tasks, and its span context."""

    # --- spawn ------------------------------------------------------------------------------

    def spawned(self, task: Any, coro: Any, parent: str, system: bool) -> TaskRecord | None:
        """``task`` (running ``coro``) was spawned by the task named ``parent``; its record."""
        tracker = self.tracker
        if tracker.active >= tracker.max_tracked:
            tracker.untracked += 1
            return None
        info = tracker.info_of(coro)
        if info is None:
            return None
        record = TaskRecord(info, tracker, time.perf_counter(), parent, self.sink.current_context())
        if system:
            record.system = True
        self.records[task] = record
        tracker.active += 1
        return record

    # --- exit -------------------------------------------------------------------------------

    def exited(
        self,
        task: Any,
        name: str,
        error: BaseException | None,
        scope: object,
        deadline_passed: bool,
        shutting_down: bool,
    ) -> None:
        """``task`` ended, raising ``error`` (``None``: it returned).

        Args:
            task: The trio task.
            name: Its name.
            error: What it raised, ``None`` if it returned.
            scope: For a cancelled task, the nearest cancelled scope enclosing it, if known.
            deadline_passed: That scope's deadline has passed.
            shutting_down: The run's main task had finished (system tasks are cancelled then).
        """
        record = self.records.pop(task, None)
        if record is None:
            return
        record.ended = True
        tracker = self.tracker
        tracker.active -= 1
        if (
            error is None
            and record.span is None
            and tracker.quick
            and time.perf_counter() - record.start <= tracker.slow
        ):
            tracker.counts[semconv.OUTCOME_OK] += 1  # a normal end: counted, nothing else
            return
        outcome = outcome_of(error)
        if outcome == semconv.OUTCOME_CANCELLED:
            record.cancel = self._cancel_info(error, scope, deadline_passed)
        if record.system and (
            outcome == semconv.OUTCOME_OK
            or (outcome == semconv.OUTCOME_CANCELLED and shutting_down)
        ):
            record.routine = True
        self.sink.ended(record, task, name, outcome, error)
        if outcome == semconv.OUTCOME_ERROR or record.span_context is not None:
            self._remember(task, name, error, record)
        record.span = record.parent_context = None

    def closed(self) -> None:
        """The run ended: tasks still tracked never reported their end (a crashed run)."""
        records, self.records = self.records, {}
        for task, record in records.items():
            record.ended = True
            self.tracker.active -= 1
            self.sink.abandoned(record, str(getattr(task, "name", "")), "trio run")
            record.span = record.parent_context = None
        self._ended.clear()

    def _remember(
        self, task: Any, name: str, error: BaseException | None, record: TaskRecord
    ) -> None:
        ended = self._ended
        if len(ended) >= _ENDED_KEPT:
            del ended[next(iter(ended))]
        failed = error is not None and outcome_of(error) == semconv.OUTCOME_ERROR
        key = repr(task)
        if key == self._canceller[0]:
            self._canceller = ("", None)  # that canceller ended: its span may be new
        ended[key] = _Ended(
            name,
            type(error).__name__ if failed else "",
            cancels.raise_location(error) if failed else "",
            record.span_context,
        )

    # --- cancel attribution -----------------------------------------------------------------

    def _cancel_info(
        self, error: BaseException | None, scope: object, deadline_passed: bool
    ) -> CancelInfo:
        cancelled = first_cancelled(error)
        source = str(getattr(cancelled, "source", None) or "unknown")
        reason = str(getattr(cancelled, "reason", None) or "")
        asker = str(getattr(cancelled, "source_task", None) or "")
        if source == "nursery":  # a sibling's failure is known best here: where, what, its span
            return self._nursery_cancel(asker, reason)
        tracked = self.tracker.scope_cancel(scope) if scope is not None else None
        if tracked is not None:
            kind, asked = tracked
            origin = (
                semconv.ORIGIN_DEADLINE
                if asked.origin == semconv.ORIGIN_DEADLINE
                else semconv.ORIGIN_PARENT
            )
            why = asked.reason or f"{kind} was cancelled"
            return CancelInfo(
                origin, asked.task, asked.location, why, asked.span_context, asked.failure
            )
        if source == "deadline" or (source == "unknown" and deadline_passed):
            return CancelInfo(semconv.ORIGIN_DEADLINE, "", self._entered_at(scope), _DEADLINE)
        if source in ("shutdown", "KeyboardInterrupt"):
            return CancelInfo(semconv.ORIGIN_EXTERNAL, "", "", reason or source)
        span_context = self._span_context_of(asker) if asker else None
        if source == "explicit":
            reason = reason or _EXPLICIT
        return CancelInfo(semconv.ORIGIN_PARENT, task_name(asker), "", reason, span_context)

    def _nursery_cancel(self, asker: str, reason: str) -> CancelInfo:
        """A nursery cancelled its children: a child or the nursery's body raised."""
        name = task_name(asker)
        failure = self._ended.get(asker)
        if reason.startswith("child task raised") and failure is not None and failure.error_type:
            why = f"sibling task {failure.name!r} failed with {failure.error_type}"
            return CancelInfo(
                semconv.ORIGIN_PARENT,
                failure.name,
                failure.location,
                why,
                failure.span_context,
                failure=True,
            )
        failed = True
        if reason.startswith("child task raised"):
            why = f"sibling task {name!r} failed with {raised_type(reason)}"
        elif reason.startswith("Code block inside nursery"):
            why = f"the body of its nursery raised {raised_type(reason)}"
        else:
            why = reason or "its nursery was cancelled"
            failed = False
        span_context = self._span_context_of(asker) if asker else None
        return CancelInfo(semconv.ORIGIN_PARENT, name, "", why, span_context, failure=failed)

    def _span_context_of(self, asker: str) -> Any:
        """The span context of the live or recently ended task whose ``repr`` is ``asker``."""
        if self._canceller[0] == asker:
            return self._canceller[1]
        wanted = _repr_id(asker)
        found = None
        for task, record in self.records.items():
            if id(task) == wanted and repr(task) == asker:
                found = record.span_context
                break
        else:
            ended = self._ended.get(asker)
            found = ended.span_context if ended is not None else None
        self._canceller = (asker, found)
        return found

    def _entered_at(self, scope: object) -> str:
        record = self.tracker.scope_of(scope)
        return frames.location(record.frames) if record is not None else ""


def is_cancelled(error: BaseException) -> bool:
    """Whether ``error`` is trio's ``Cancelled``."""
    kind = type(error)
    return kind.__name__ == "Cancelled" and kind.__module__.startswith("trio")


def outcome_of(error: BaseException | None) -> str:
    """``ok``, ``cancelled`` (``Cancelled``, or a group of nothing else) or ``error``."""
    if error is None:
        return semconv.OUTCOME_OK
    return semconv.OUTCOME_CANCELLED if _only_cancelled(error) else semconv.OUTCOME_ERROR


def _only_cancelled(error: BaseException) -> bool:
    if is_cancelled(error):
        return True
    inner = getattr(error, "exceptions", None)  # an exception group (3.10: the backport)
    return isinstance(inner, tuple) and bool(inner) and all(map(_only_cancelled, inner))


def first_cancelled(error: BaseException | None) -> BaseException | None:
    """The first ``Cancelled`` in ``error`` (itself, or inside an exception group)."""
    if error is None or is_cancelled(error):
        return error
    for inner in getattr(error, "exceptions", None) or ():
        found = first_cancelled(inner)
        if found is not None:
            return found
    return None


def task_name(text: str) -> str:
    """The name in a trio task's ``repr``, ``<Task 'name' at 0x...>`` (else the text itself)."""
    if text.startswith("<Task ") and " at 0x" in text:
        quoted = text[len("<Task ") : text.rindex(" at 0x")]
        try:
            name = ast.literal_eval(quoted)
        except (ValueError, SyntaxError):
            return text
        return name if isinstance(name, str) else text
    return text


def _repr_id(text: str) -> int:
    try:
        return int(text.rsplit(" at ", 1)[1].rstrip(">"), 16)
    except (IndexError, ValueError):
        return 0


def raised_type(reason: str) -> str:
    """The exception type in trio's ``... raised exception ValueError('...')``, not the message."""
    _, found, rest = reason.partition("raised exception ")
    name = rest.split("(", 1)[0]
    if found and name and all(part.isidentifier() for part in name.split(".")):
        return name
    return "an exception"
