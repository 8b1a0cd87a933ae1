"""Async generator frames that the event loop's finalizer hook scheduled for ``aclose()``.

Tells a generator closed by the loop's finalizer (it was abandoned un-closed) from one whose
``aclose()`` a program ran explicitly in another task. Holds frame ids only, boundedly.
"""

from __future__ import annotations

_LIMIT = 1024
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


def reset() -> None:
    """Forget everything (uninstrument)."""
    global hook_installed
    hook_installed = False
    _scheduled.clear()
