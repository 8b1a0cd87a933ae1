"""``scopewatch.name(lock, "db-pool")``: a readable ``scopewatch.lock.name`` for a lock."""

from __future__ import annotations

import asyncio
from typing import TypeVar

from scopewatch._core import locks as core

L = TypeVar("L")

# Classes whose measured lock is another object: (top-level package, class name) -> attribute
# holding it. anyio's trio backend objects delegate to a trio object (absent on asyncio).
_INNER = {
    ("anyio", "Condition"): "_lock",
    ("anyio", "LockAdapter"): "_internal_lock",
    ("anyio", "SemaphoreAdapter"): "_internal_semaphore",
    ("anyio", "CapacityLimiterAdapter"): "_internal_limiter",
    ("anyio", "Lock"): "_Lock__original",
    ("anyio", "Semaphore"): "_Semaphore__original",
    ("anyio", "CapacityLimiter"): "_CapacityLimiter__original",
    ("trio", "Condition"): "_lock",
}


def name(lock: L, lock_name: str) -> L:
    """Report ``lock`` as ``scopewatch.lock.name=lock_name`` instead of its creation site.

    Works for asyncio ``Lock``/``Semaphore``/``BoundedSemaphore``/``Condition``, anyio
    ``Lock``/``Semaphore``/``Condition``/``CapacityLimiter`` (either backend) and trio
    ``Lock``/``StrictFIFOLock``/``Semaphore``/``Condition``/``CapacityLimiter``, before or
    during instrumentation.
    Names count towards the cap of distinct lock names (beyond it: ``other``).

    Args:
        lock: the lock, semaphore, condition or capacity limiter.
        lock_name: a short, low-cardinality name such as ``"db-pool"``.

    Returns:
        ``lock`` itself, so ``lock = scopewatch.name(asyncio.Lock(), "cache")`` works.
    """
    text = str(lock_name)
    cls = type(lock)
    package = cls.__module__.split(".")[0]
    kind = f"{package}.{cls.__name__.removesuffix('Adapter')}"
    try:
        core.set_name(lock, text, kind)
        inner = None
        if isinstance(lock, asyncio.Condition):
            inner = getattr(lock, "_lock", None)
        elif (package, cls.__name__) in _INNER:
            inner = getattr(lock, _INNER[package, cls.__name__], None)
        if inner is not None:
            core.link(inner, kind, lock, kind)
    except TypeError:  # not weak-referenceable: nothing to name
        pass
    return lock
