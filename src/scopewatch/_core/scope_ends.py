"""The ends of tasks and event loops: forgetting a task's stack, and the scopes that leaked.

A part of :class:`scopewatch._core.tracker.ScopeTracker`, kept apart as the cold side of scope
bookkeeping (a task ends once; a loop closes once).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scopewatch import semconv
from scopewatch._core import task_adapters
from scopewatch._core.records import Violation

if TYPE_CHECKING:
    from scopewatch._core.records import ScopeRecord


class ScopeEnds:
    """Task and loop ends; the tracker provides the state it reads."""

    sink: Any
    _by_scope: dict[int, ScopeRecord]
    _by_task: dict[int, Any]

    def task_done(self, task: Any) -> None:
        """``task`` finished (for runtimes whose tasks take no done callback, e.g. trio)."""
        self._task_done(task)

    def _task_done(self, task: Any) -> None:
        # Scopes still entered are orphaned, not yet leaked: a stored client or exit stack is
        # often closed later from another task (reported then as a cross-task exit), and an
        # abandoned generator is closed by the loop's finalizer. They stay in ``_by_scope``;
        # whatever is still entered when the loop closes is reported as leaked.
        self._by_task.pop(id(task), None)

    def _forget_task(self, key: int, _ref: object = None) -> None:
        entry = self._by_task.get(key)
        if entry is not None and entry.task_ref() is None:
            # pop: the garbage collector runs this in any thread, maybe while the task's
            # own thread or a closing loop removes the same entry
            self._by_task.pop(key, None)

    def close_loop(self, loop: Any = None) -> None:
        """``loop`` is closing (``None``: every loop): each scope still entered there leaked.

        ``loop`` is an asyncio event loop, or the root task of a trio run that ends. Only
        scopes entered by tasks of that loop are judged; each is reported once and
        forgotten, so a later exit of the same object is not tracked.
        """
        for key, record in list(self._by_scope.items()):
            adapter = task_adapters.adapter_of(record.task)
            if loop is not None and adapter.runner(record.task) is not loop:
                continue
            popped = self._by_scope.pop(key, None)
            if popped is not record:  # exited meanwhile, in another thread
                if popped is not None:  # and its id reused by a scope entered since: keep it
                    self._by_scope[key] = popped
                continue
            ended = adapter.runner_ended
            if record.task is not None and adapter.done(record.task):
                self._leak(
                    record,
                    semconv.CAUSE_TASK_FINISHED,
                    f"the task {record.task_name!r} that entered it finished and {ended} later",
                )
            else:
                self._leak(record, semconv.CAUSE_LOOP_CLOSED, ended)
        for key, entry in list(self._by_task.items()):
            task = entry.task_ref()
            if loop is None or task is None or task_adapters.adapter_of(task).runner(task) is loop:
                self._by_task.pop(key, None)

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
        record.add_violation(violation)
        self.sink.leaked(record, violation)
