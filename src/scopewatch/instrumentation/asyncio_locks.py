"""``asyncio.Lock``, ``Semaphore``, ``BoundedSemaphore`` and ``Condition``.

They are pure-Python classes in ``asyncio.locks``, so their methods are replaced on the class
(every instance, including ones created before instrumenting, which report the name
``unknown``). ``Condition`` borrows its lock's bound ``acquire``/``release`` at ``__init__``, so
it is measured through that lock, which reports the Condition's name and kind. ``Lock``'s
``__aenter__`` / ``__aexit__`` take the uncontended path without the extra coroutine
(``_lock_contexts``); the others call ``acquire``/``release`` and need no patch.
``BoundedSemaphore.release`` ends in ``Semaphore.release`` and is measured there.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Any

from scopewatch import semconv
from scopewatch._core import locks as core
from scopewatch.instrumentation import _lock_contexts as contexts
from scopewatch.instrumentation import _lock_wrappers as wrappers
from scopewatch.instrumentation import _patching, _running_loop

if TYPE_CHECKING:
    from scopewatch._runtime import Runtime

_patches = _patching.Patches()
_current_task = _running_loop.current_task_function()
_KINDS: tuple[tuple[type, str], ...] = (
    (asyncio.BoundedSemaphore, semconv.LOCK_KIND_ASYNCIO_BOUNDED_SEMAPHORE),
    (asyncio.Semaphore, semconv.LOCK_KIND_ASYNCIO_SEMAPHORE),
    (asyncio.Condition, semconv.LOCK_KIND_ASYNCIO_CONDITION),
    (asyncio.Lock, semconv.LOCK_KIND_ASYNCIO_LOCK),
)
_kind_cache: dict[type, str] = {}


def kind_of(cls: type) -> str:
    """The reported kind of an asyncio lock class (a user subclass reports its asyncio base)."""
    kind = _kind_cache.get(cls)
    if kind is None:
        kind = next((k for base, k in _KINDS if issubclass(cls, base)), cls.__qualname__)
        _kind_cache[cls] = kind
    return kind


def _lock_contended(lock: Any) -> bool:
    """Exactly when asyncio's acquire waits: locked, or a live waiter queued (fairness)."""
    if lock._locked:
        return True
    for waiter in lock._waiters or ():  # noqa: SIM110 - a loop is cheaper than any(genexpr)
        if not waiter.cancelled():
            return True
    return False


def _semaphore_contended(lock: Any) -> bool:
    return bool(lock.locked())


def install(runtime: Runtime) -> None:
    """Patch the asyncio lock classes."""
    del runtime  # the feature's telemetry is started first (``telemetry.locks.start``)
    if _patches:
        return
    lock_kind = semconv.LOCK_KIND_ASYNCIO_LOCK
    semaphore_kind = semconv.LOCK_KIND_ASYNCIO_SEMAPHORE
    current = _current_task
    lock_release = asyncio.Lock.release
    for cls in (asyncio.Lock, asyncio.Semaphore):
        _patches.patch(cls, "__init__", lambda original: wrappers.make_init(original, kind_of))
    _patches.patch(
        asyncio.Lock,
        "acquire",
        lambda original: wrappers.make_acquire(
            original,
            lock_kind,
            wrappers.locked_or_waiters,
            _lock_contended,
            False,
            current,
        ),
    )
    _patches.patch(
        asyncio.Lock,
        "release",
        lambda original: wrappers.make_release(original, lock_kind, False, current),
    )
    _patches.patch(
        asyncio.Lock, "__aenter__", lambda _: contexts.make_aenter(asyncio.Lock.acquire, current)
    )
    _patches.patch(
        asyncio.Lock,
        "__aexit__",
        lambda _: contexts.make_aexit(asyncio.Lock.release, lock_release, lock_kind),
    )
    _patches.patch(
        asyncio.Semaphore,
        "acquire",
        lambda original: wrappers.make_acquire(
            original,
            semaphore_kind,
            wrappers.counter_or_waiters,
            _semaphore_contended,
            True,
            current,
        ),
    )
    _patches.patch(
        asyncio.Semaphore,
        "release",
        lambda original: wrappers.make_release(original, semaphore_kind, True, current),
    )
    _patches.patch(asyncio.Condition, "__init__", _condition_init)


def uninstall() -> None:
    """Restore every original method."""
    _patches.restore()


def _condition_init(original: Any) -> Any:
    def __init__(self: Any, lock: Any = None, *args: Any, **kwargs: Any) -> None:
        original(self, lock, *args, **kwargs)
        if core.ACTIVE:
            try:
                kind = kind_of(type(self))
                core.register(self, kind, core.creation_site(sys._getframe(1)))
                if lock is None:  # its own lock reports the Condition's name and kind
                    core.link(self._lock, semconv.LOCK_KIND_ASYNCIO_LOCK, self, kind)
            except Exception as error:
                wrappers.fail(error)

    return __init__
