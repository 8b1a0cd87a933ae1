"""Event loop hooks of the scopes feature: the async generator finalizer and loop close.

- ``_asyncgen_finalizer_hook``: the generator frames it hands to ``aclose()`` tell an
  ``asyncgen_finalizer`` exit from an explicit ``aclose()`` run in another task. The hook is read
  by ``run_forever`` when a loop starts, so loops started after instrumenting are watched; for a
  loop already running, every ``aclose()`` task counts as the finalizer's.
- ``close``: scopes still entered when their loop closes are reported as ``scope_leaked``.
"""

from __future__ import annotations

import asyncio.base_events
from typing import Any

from scopewatch._core import asyncgens
from scopewatch.instrumentation import _scope_state as state
from scopewatch.instrumentation._patching import Patches

_LOOP_CLASS = asyncio.base_events.BaseEventLoop
_patches = Patches()


def install(runtime: Any) -> None:
    """Wrap ``BaseEventLoop._asyncgen_finalizer_hook`` and ``BaseEventLoop.close``."""
    del runtime
    if _patches:
        return
    _patches.patch(_LOOP_CLASS, "_asyncgen_finalizer_hook", _finalizer_hook)
    _patches.patch(_LOOP_CLASS, "close", _close)
    asyncgens.hook_installed = True


def uninstall() -> None:
    """Restore the originals."""
    _patches.restore()
    asyncgens.reset()


def _finalizer_hook(original_hook: Any) -> Any:
    part = state.PART

    def _asyncgen_finalizer_hook(self: Any, agen: Any) -> None:
        if part.enabled:
            frame = getattr(agen, "ag_frame", None)
            if frame is not None:
                asyncgens.finalizer_scheduled(id(frame))
        original_hook(self, agen)

    return _asyncgen_finalizer_hook


def _close(original_close: Any) -> Any:
    part = state.PART

    def close(self: Any) -> None:
        tracker = state.tracker
        if tracker is not None and part.enabled and not self.is_running() and not self.is_closed():
            try:
                tracker.close_loop(self)
            except Exception as error:
                part.fail(error)
        original_close(self)

    close.__doc__ = original_close.__doc__
    return close
