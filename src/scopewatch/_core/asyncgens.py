"""Async generator frames that the event loop's finalizer hook scheduled for ``aclose()``.

Tells a generator closed by the loop's finalizer (it was abandoned un-closed) from one whose
``aclose()`` a program ran explicitly in another task. Holds frame ids only, boundedly.
"""

from __future__ import annotations

from typing import Any

_LIMIT = 1024
_WALK_LIMIT = 64
_scheduled: dict[int, None] = {}
hook_installed = False
"""Whether the finalizer hook is being watched (otherwise every ``aclose()`` task counts)."""


def finalizer_scheduled(frame_id: int) -> None:
    """The loop's finalizer hook scheduled ``aclose()`` of the generator running ``frame_id``."""
    if len(_scheduled) >= _LIMIT:
        _scheduled.pop(next(iter(_scheduled), 0), None)  # loops in other threads evict too
    _scheduled[frame_id] = None


def closed_by_finalizer(frame_id: int) -> bool:
    """Whether an ``aclose()`` of the generator running ``frame_id`` came from the finalizer."""
    return not hook_installed or frame_id in _scheduled


def finalizing(frame: Any) -> bool:
    """Whether a generator on the stack from ``frame`` outwards was scheduled by the finalizer.

    A scope of a generator or context manager nested in the abandoned one is closed by the
    same ``aclose()``: one event, one cause.
    """
    if not _scheduled:
        return False
    for _ in range(_WALK_LIMIT):
        if frame is None:
            return False
        if id(frame) in _scheduled:
            return True
        frame = frame.f_back
    return False


def reset() -> None:
    """Forget everything (uninstrument)."""
    global hook_installed
    hook_installed = False
    _scheduled.clear()
