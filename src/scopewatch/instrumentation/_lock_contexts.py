"""``async with`` an ``asyncio.Lock``: the uncontended acquisition without a coroutine per layer.

``Lock.__aenter__`` awaits ``acquire()``, which is scopewatch's wrapper, which awaits the
original ``acquire``: three coroutines for what asyncio does in two. When the lock is free with
nobody queued, asyncio's ``acquire`` only sets ``_locked`` and returns (identical on 3.10-3.13),
so the replacement ``__aenter__`` does exactly that and notes the holder, as the wrapper would;
anything else (a busy lock, a queue, a subclass with its own ``acquire``) goes through
``self.acquire()`` as before. Likewise ``release`` of a locked lock with nobody queued only
clears ``_locked`` (its ``_wake_up_first`` returns at once): ``__aexit__`` does that and ends
the hold itself when ``release`` is scopewatch's wrapper, else calls the original ``release``.
"""

from __future__ import annotations

from typing import Any

from scopewatch._core import locks as core
from scopewatch.instrumentation._lock_wrappers import fail
from scopewatch.instrumentation._patching import task_lookup
from scopewatch.telemetry import locks as telemetry


def make_aenter(acquire: Any, current_task: Any) -> Any:
    """``__aenter__`` for ``asyncio.Lock`` whose ``acquire`` is the wrapper ``acquire``."""
    holds = core.binary_holds
    tick = core.tick
    sampled_start = core.sampled_start
    get_task, get_loop = task_lookup(current_task)

    async def __aenter__(self: Any) -> None:
        if core.ACTIVE and not self._locked and not self._waiters and type(self).acquire is acquire:
            self._locked = True  # asyncio's own uncontended acquire, nothing more
            try:
                left = tick[0] - 1  # core.sample(), inlined
                if left:
                    tick[0] = left
                    start = 0.0
                else:
                    start = sampled_start()
                holds[id(self)] = (self, get_task(get_loop()), start, not left)
            except Exception as error:
                fail(error)
            return None
        await self.acquire()
        return None

    return __aenter__


def make_aexit(release: Any, original_release: Any, kind: str) -> Any:
    """``__aexit__`` for ``asyncio.Lock`` whose ``release`` is the wrapper ``release``."""
    holds = core.binary_holds

    async def __aexit__(self: Any, exc_type: Any, exc: Any, tb: Any) -> None:
        if type(self).release is not release:
            self.release()
            return
        if self._locked and not self._waiters:
            self._locked = False  # asyncio's own release with nobody to wake, nothing more
        else:
            original_release(self)
        if holds:
            try:
                entry = holds.pop(id(self), None)
                if entry is not None and entry[3] is not False:
                    seconds = core.due(entry[3], entry[2])
                    metrics = telemetry.current
                    if seconds is not None and metrics is not None and core.ACTIVE:
                        metrics.held(self, kind, seconds)
            except Exception as error:
                fail(error)

    return __aexit__
