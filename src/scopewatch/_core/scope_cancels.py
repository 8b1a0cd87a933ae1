"""Who cancelled a scope: each request as it is made, and the source of a scope that did not.

A scope that did not cancel itself was cancelled by an enclosing scope, by its task's own
canceller, or from outside. A part of :class:`scopewatch._core.tracker.ScopeTracker`, kept
apart as the cold side of scope bookkeeping (cancels are rare next to enters and exits).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scopewatch import semconv
from scopewatch._core import frames, task_adapters
from scopewatch._core.records import CancelInfo

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from scopewatch._core.loose_cancels import LooseCancels
    from scopewatch._core.records import ScopeRecord


def _derived(source: CancelInfo, kind: str) -> CancelInfo:
    """A ``parent`` request passed on from an enclosing scope's ``source`` (of ``kind``)."""
    return CancelInfo(
        semconv.ORIGIN_PARENT,
        source.task,
        source.location,
        source.reason or f"{kind} was cancelled",
        source.span_context,
        source.failure,
        source.inherited or source.origin,
    )


class ScopeCancels:
    """The cancel side of the scope tracker; the tracker provides the state it reads."""

    sink: Any
    task_cancel_info: Callable[[Any], CancelInfo | None] | None
    _loose_cancels: LooseCancels

    def record_of(self, obj: object) -> ScopeRecord | None:
        """The record of an entered scope (the tracker's)."""
        raise NotImplementedError

    def _enclosing(self, record: ScopeRecord) -> list[ScopeRecord]:
        """The records entered around ``record`` in its task (the tracker's)."""
        raise NotImplementedError

    def cancel_requested(
        self,
        obj: object,
        origin: str,
        task: Any,
        location: str,
        reason: str,
        task_name: str | None = None,
        failure: bool = False,
    ) -> None:
        """Someone asked ``obj`` to cancel; the first request is the one that counts.

        A request without a location (a deadline timer) is placed where the scope was entered.
        ``task_name`` names the requester when only its name is known (``task`` is ``None``).
        ``failure``: a child's or sibling's error made a group cancel.
        """
        record = self.record_of(obj)
        if record is not None and record.cancel is not None:
            return
        info = CancelInfo(
            origin=origin,
            task=task_adapters.task_name(task) if task_name is None else task_name,
            location=location or (frames.location(record.frames) if record else ""),
            reason=reason,
            span_context=self.sink.current_span_context(),
            failure=failure,
        )
        if record is not None:
            record.cancel = info
            return
        self._loose_cancels.remember(obj, info)

    def cancel_of(self, obj: object) -> tuple[str, CancelInfo] | None:
        """The kind and cancel request of a scope, entered or recently exited, if any."""
        record = self.record_of(obj)
        if record is not None:
            return (record.kind, record.cancel) if record.cancel is not None else None
        info = self._loose_cancels.find(obj)
        return ("enclosing scope", info) if info is not None else None

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
                record.cancel = _derived(source, kind)
                return
        for outer in reversed(self._enclosing(record)):
            if outer.cancel is not None:
                record.cancel = _derived(outer.cancel, outer.kind)
                return
        info = self.task_cancel_info(record.task) if self.task_cancel_info else None
        record.cancel = info or CancelInfo(semconv.ORIGIN_EXTERNAL, "", "")
