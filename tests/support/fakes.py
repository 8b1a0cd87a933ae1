"""Stand-ins for the pure core's unit tests: tasks without a loop, sinks that record calls.

The core reads tasks through :mod:`scopewatch._core.task_adapters` (an unregistered type is read
as an asyncio task) and reports to a sink; these give it exactly the facts a test chooses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class FakeLoop:
    """An event loop only compared by identity (``TaskAdapter.runner``)."""


class FakeTask:
    """What the core reads of an ``asyncio.Task``, set by the test; ``finish()`` ends it."""

    def __init__(self, name: str, loop: Any = None, coro: Any = None) -> None:
        self.name = name
        self.loop = loop if loop is not None else FakeLoop()
        self.coro = coro
        self.callbacks: list[Callable[[Any], object]] = []
        self.is_done = False
        self.is_cancelled = False
        self._exception: BaseException | None = None
        self.cancel_requests = 0

    def get_name(self) -> str:
        return self.name

    def get_loop(self) -> Any:
        return self.loop

    def get_coro(self) -> Any:
        return self.coro

    def add_done_callback(self, callback: Callable[[Any], object], context: Any = None) -> None:
        self.callbacks.append(callback)

    def done(self) -> bool:
        return self.is_done

    def cancelled(self) -> bool:
        return self.is_cancelled

    def cancelling(self) -> int:
        return self.cancel_requests

    @property
    def _must_cancel(self) -> bool:
        """3.10's form of a request in force (no ``cancelling()`` there)."""
        return self.cancel_requests > 0

    def finish(self, cancelled: bool = False, error: BaseException | None = None) -> None:
        """End the task and run its done callbacks, as the loop would."""
        self.is_done = True
        self.is_cancelled = cancelled
        self._exception = error
        for callback in self.callbacks:
            callback(self)

    def __repr__(self) -> str:
        return f"<FakeTask {self.name}>"


class Scope:
    """A scope object: only its identity matters to the tracker."""

    def __init__(self, name: str = "scope") -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<Scope {self.name}>"


class RecordingScopeSink:
    """A :class:`~scopewatch._core.tracker.ScopeSink` keeping every call as ``(event, ...)``.

    ``ok_counts`` (a dict) makes the tracker count normal ends itself, as the telemetry does in
    the default configuration; ``None`` sends every exit here.
    """

    def __init__(
        self,
        spans_at_enter: bool = False,
        ok_counts: dict[tuple[str, str], int] | None = None,
        slow: float = float("inf"),
        span_context: Any = None,
    ) -> None:
        self.spans_at_enter = spans_at_enter
        self.ok_counts = ok_counts
        self.slow = slow
        self.span_context = span_context
        self.calls: list[tuple[Any, ...]] = []

    def entered(self, record: Any) -> None:
        self.calls.append(("entered", record))

    def exited(self, record: Any, facts: Any) -> None:
        self.calls.append(("exited", record, facts))

    def leaked(self, record: Any, violation: Any) -> None:
        self.calls.append(("leaked", record, violation))

    def current_span_context(self) -> Any:
        return self.span_context

    def events(self) -> list[str]:
        """The event names, in order."""
        return [call[0] for call in self.calls]


class RecordingTaskSink:
    """A :class:`~scopewatch._core.tasks.TaskSink` keeping every call as ``(event, ...)``."""

    def __init__(self, context: Any = None, span_context: Any = None) -> None:
        self.context = context
        self.span_context = span_context
        self.calls: list[tuple[Any, ...]] = []

    def current_context(self) -> Any:
        return self.context

    def current_span_context(self) -> Any:
        return self.span_context

    def finished(self, record: Any, task: Any, outcome: str, violation: Any) -> None:
        self.calls.append(("finished", task.get_name(), outcome, violation))

    def ended(self, record: Any, task: Any, name: str, outcome: str, error: Any) -> None:
        self.calls.append(("ended", name, outcome, error))

    def abandoned(self, record: Any, name: str, closed: str) -> None:
        self.calls.append(("abandoned", name, closed))
