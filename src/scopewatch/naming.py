"""``scopewatch.name(lock, "db-pool")``: a readable ``scopewatch.lock.name`` for a lock."""

from __future__ import annotations

import asyncio
from typing import TypeVar

from scopewatch._core import locks as core

L = TypeVar("L")

# anyio classes whose measured lock is another object: attribute holding it.
_ANYIO_INNER = {
    "Condition": "_lock",
    "LockAdapter": "_internal_lock",
    "SemaphoreAdapter": "_internal_semaphore",
    "CapacityLimiterAdapter": "_internal_limiter",
}


def name(lock: L, lock_name: str) -> L:
    """Report ``lock`` as ``scopewatch.lock.name=lock_name`` instead of its creation site.

    Works for asyncio ``Lock``/``Semaphore``/``BoundedSemaphore``/``Condition`` and anyio
    ``Lock``/``Semaphore``/``Condition``/``CapacityLimiter``, before or during instrumentation.
    Names count towards the cap of distinct lock names (beyond it: ``other``).

    Args:
        lock: the lock, semaphore, condition or capacity limiter.
        lock_name: a short, low-cardinality name such as ``"db-pool"``.

    Returns:
        ``lock`` itself, so ``lock = scopewatch.name(asyncio.Lock(), "cache")`` works.
    """
    text = str(lock_name)
    cls = type(lock)
    kind = f"{cls.__module__.split('.')[0]}.{cls.__name__.removesuffix('Adapter')}"
    try:
        core.set_name(lock, text, kind)
        inner = None
        if isinstance(lock, asyncio.Condition):
            inner = getattr(lock, "_lock", None)
        elif cls.__module__.startswith("anyio.") and cls.__name__ in _ANYIO_INNER:
            inner = getattr(lock, _ANYIO_INNER[cls.__name__], None)
        if inner is not None:
            core.link(inner, kind, lock, kind)
    except TypeError:  # not weak-referenceable: nothing to name
        pass
    return lock
