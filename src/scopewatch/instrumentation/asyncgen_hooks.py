"""The event loop's async generator finalizer hook, to recognise ``asyncgen_finalizer`` exits.

The hook is read by ``run_forever`` when a loop starts, so loops started after instrumenting
are watched; for a loop already running, every ``aclose()`` task counts as the finalizer's.
"""

from __future__ import annotations

import asyncio.base_events
from typing import Any

from scopewatch._core import asyncgens
from scopewatch.instrumentation import _scope_state as state

_LOOP_CLASS = asyncio.base_events.BaseEventLoop
_original: Any = None


def install(runtime: Any) -> None:
    """Wrap ``BaseEventLoop._asyncgen_finalizer_hook``."""
    del runtime
    global _original
    if _original is not None:
        return
    original = _LOOP_CLASS.__dict__["_asyncgen_finalizer_hook"]
    part = state.PART

    def _asyncgen_finalizer_hook(self: Any, agen: Any) -> None:
        if part.enabled:
            frame = getattr(agen, "ag_frame", None)
            if frame is not None:
                asyncgens.finalizer_scheduled(id(frame))
        original(self, agen)

    _original = original
    _LOOP_CLASS._asyncgen_finalizer_hook = _asyncgen_finalizer_hook  # type: ignore[attr-defined]
    asyncgens.hook_installed = True


def uninstall() -> None:
    """Restore the original hook."""
    global _original
    if _original is not None:
        _LOOP_CLASS._asyncgen_finalizer_hook = _original  # type: ignore[attr-defined]
        _original = None
    asyncgens.reset()
