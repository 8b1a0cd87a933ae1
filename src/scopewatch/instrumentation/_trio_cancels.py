"""Who cancelled a trio cancel scope: a deadline, ``cancel()``, a nursery's failing child, Ctrl-C.

trio 0.31+ passes a ``CancelReason`` to ``CancelScope._cancel``; older trio calls ``cancel()``
for every cancellation, and the caller tells a deadline from an explicit request.
"""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING, Any

from scopewatch import semconv
from scopewatch._core import frames
from scopewatch.instrumentation import _scope_state as state
from scopewatch.instrumentation._patching import is_cancellation

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import CodeType, FrameType

_TASK_REPR = re.compile(r"<Task '(.*)' at 0x[0-9a-f]+>\Z", re.DOTALL)
_DEADLINE_CALLERS = frozenset({"expire", "cancel_called", "__enter__"})
"""trio (before cancel reasons) cancels a scope whose deadline passed from these functions."""

anyio_cancel: CodeType | None = None
"""``anyio._backends._trio.CancelScope.cancel``: passes the user's call on to trio."""

ki_file = ""
"""The file of trio's ``enable_ki_protection``: before trio 0.28 (code-object marking) it wraps
each protected function, so a patched method's caller is that wrapper, not trio or the user."""


def no_task() -> Any:
    """No task: ``current_task`` while trio is not patched."""
    return None


current_task: Callable[[], Any] = no_task
"""The running trio task or ``None`` (set by ``trio_scopes`` when it patches trio)."""


def caller(frame: FrameType | None) -> FrameType | None:
    """``frame``, or the first frame above it outside trio's KI-protection wrappers."""
    while frame is not None and frame.f_code.co_filename == ki_file:
        frame = frame.f_back
    return frame


def wrap(original: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
    """``CancelScope._cancel`` recording the first request's origin, requester and place."""
    part = state.PART

    def _cancel(self: Any, cancel_reason: Any) -> None:
        if part.enabled and state.tracker is not None:
            try:
                _on_cancel_reason(self, cancel_reason, sys._getframe(1))
            except Exception as error:
                part.fail(error)
        original(self, cancel_reason)

    return _cancel


def _on_cancel_reason(scope: Any, cancel_reason: Any, frame: FrameType) -> None:
    """Who cancelled, from trio's ``CancelReason``: a deadline, ``cancel()``, a nursery, Ctrl-C."""
    tracker = state.tracker
    # Not ``cancel_called``: that property cancels an expired scope, calling back in here.
    if tracker is None or getattr(scope, "_cancel_called", False):
        return
    source = getattr(cancel_reason, "source", "")
    text = getattr(cancel_reason, "reason", None) or ""
    if source == "deadline":
        tracker.cancel_requested(scope, semconv.ORIGIN_DEADLINE, None, "", "deadline exceeded")
    elif source == "explicit":
        _explicit(scope, caller(frame.f_back), text)  # frame is trio's cancel()
    elif source == "KeyboardInterrupt":
        tracker.cancel_requested(scope, semconv.ORIGIN_EXTERNAL, None, "", "KeyboardInterrupt")
    elif _passing_on(frame):
        return
    else:  # "nursery": a child task raised; trio runs this outside any task
        match = _TASK_REPR.match(getattr(cancel_reason, "source_task", None) or "")
        tracker.cancel_requested(
            scope,
            semconv.ORIGIN_PARENT,
            None,
            "",
            text or f"{source} cancelled it",
            match.group(1) if match else "",
            failure=failing(frame),
        )


def _passing_on(frame: FrameType | None) -> bool:
    """Whether a nursery cancels because a child or its body raised ``Cancelled``.

    That cancellation came from an enclosing scope, already in effect: it is not recorded as
    the nursery's own request, so the nursery's exit names the enclosing scope's request.
    """
    if frame is None or frame.f_code.co_name != "_add_exc" or not frames.is_internal(frame.f_code):
        return False
    error = frames.local_of(frame, "exc")
    return isinstance(error, BaseException) and is_cancellation(error)


def failing(frame: FrameType | None) -> bool:
    """Whether ``frame`` is a nursery's ``_add_exc`` cancelling for an error, not a ``Cancelled``.

    trio cancels a nursery from ``_add_exc`` when a child or the body raised; the body's
    exception is a ``Cancelled`` when an enclosing scope's cancellation reached it.
    """
    if frame is None or frame.f_code.co_name != "_add_exc" or not frames.is_internal(frame.f_code):
        return False
    error = frames.local_of(frame, "exc")
    return isinstance(error, BaseException) and not is_cancellation(error)


def _explicit(scope: Any, requester: FrameType | None, reason: str) -> None:
    tracker = state.tracker
    if tracker is None or requester is None:
        return
    if requester.f_code is anyio_cancel and requester.f_back is not None:
        requester = requester.f_back  # anyio's CancelScope.cancel() passing the user's call on
    internal = frames.is_internal(requester.f_code)
    if internal and _passing_on(requester):
        return
    origin = semconv.ORIGIN_PARENT if internal else semconv.ORIGIN_EXPLICIT
    tracker.cancel_requested(
        scope,
        origin,
        current_task(),
        state.user_location(requester),
        reason,
        failure=internal and failing(requester),
    )


def wrap_legacy(original: Callable[..., None]) -> Callable[..., None]:
    """``CancelScope.cancel`` of trio before cancel reasons (it also ran for deadlines)."""
    part = state.PART

    def cancel(self: Any, *args: Any, **kwargs: Any) -> None:
        if part.enabled and not getattr(self, "_cancel_called", True):
            try:
                _on_legacy_cancel(self, caller(sys._getframe(1)), args, kwargs)
            except Exception as error:
                part.fail(error)
        original(self, *args, **kwargs)

    return cancel


def _on_legacy_cancel(scope: Any, requester: FrameType | None, args: Any, kwargs: Any) -> None:
    """A deadline if trio's deadline code asked, else whoever called ``cancel()``."""
    tracker = state.tracker
    if tracker is None or requester is None:
        return
    code = requester.f_code
    if code.co_name in _DEADLINE_CALLERS and frames.is_internal(code):
        tracker.cancel_requested(scope, semconv.ORIGIN_DEADLINE, None, "", "deadline exceeded")
    else:
        _explicit(scope, requester, str(kwargs.get("reason", args[0] if args else "")))
