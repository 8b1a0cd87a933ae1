"""trio ``Lock``, ``StrictFIFOLock``, ``Semaphore``, ``CapacityLimiter`` and ``Condition``.

Patched on the classes when ``trio`` is imported (a post-import hook, inert after
``uninstall()``), so locks created before instrumenting are measured too (name ``unknown``).

trio's async ``acquire`` first tries its own (patched) ``acquire_nowait`` and parks on the
lock's ``ParkingLot`` only when that raises ``WouldBlock``. So the ``*_nowait`` wrappers record
uncontended holds (whoever calls them: ``acquire``, the user, anyio's ``fast_acquire`` path),
and the ``acquire`` wrappers only decide, from the lock's state before the call, whether the
acquisition will wait; a waiting one is timed and reported. ``CapacityLimiter.acquire`` /
``acquire_nowait`` / ``release`` call the ``*_on_behalf_of*`` methods with the current task, so
only those are patched. ``Condition`` is measured through its lock, which reports the
Condition's name and kind; ``Condition.wait`` re-takes the lock without ``acquire`` (it is
woken on the lock's parking lot), so the re-taken hold is recorded after ``wait`` returns.

anyio's trio backend objects wrap these classes; ``anyio_locks`` links each to the trio object
inside it, which then reports the anyio kind and name (one measurement, not two).

KeyboardInterrupt protection: trio marks ``acquire``/``release`` as protected by their code
objects. The wrappers are not marked, so they inherit their caller's protection; an interrupt
in a wrapper's own code is the same as one in the caller just before or after the call.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from scopewatch import semconv
from scopewatch._core import frames
from scopewatch._core import locks as core
from scopewatch._current import safe_current_task
from scopewatch._safety import warn_once
from scopewatch.instrumentation import _lock_wrappers as wrappers
from scopewatch.instrumentation import _patching

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

    from scopewatch._runtime import Runtime

TRIO = "trio"

_active = False
_patches = _patching.Patches()
_KINDS = {
    "Lock": semconv.LOCK_KIND_TRIO_LOCK,
    "StrictFIFOLock": semconv.LOCK_KIND_TRIO_STRICT_FIFO_LOCK,
    "Semaphore": semconv.LOCK_KIND_TRIO_SEMAPHORE,
    "CapacityLimiter": semconv.LOCK_KIND_TRIO_CAPACITY_LIMITER,
    "Condition": semconv.LOCK_KIND_TRIO_CONDITION,
}
_MAX_SCOPE_DEPTH = 64


def kind_of(cls: type) -> str:
    """The reported kind of a trio lock class."""
    return _KINDS.get(cls.__name__, cls.__qualname__)


def install(runtime: Runtime) -> None:
    """Patch the trio lock classes now, or when trio is imported."""
    global _active
    del runtime  # the feature's telemetry is started first (``telemetry.locks.start``)
    _active = True
    if _trio_deadline not in core.deadline_probes:
        core.deadline_probes.append(_trio_deadline)
    _patching.when_imported(TRIO, _on_import)


def uninstall() -> None:
    """Restore every original and make the import hook inert."""
    global _active
    _active = False
    _patches.restore()
    if _trio_deadline in core.deadline_probes:
        core.deadline_probes.remove(_trio_deadline)


def _on_import(module: ModuleType) -> None:
    if not _active or _patches:
        return
    try:
        frames.add_internal_package(module.__file__)
        _patch(module)
    except Exception as error:
        wrappers.fail(error)


# --- "will this acquisition wait?" (exactly trio's own acquire_nowait tests) ---------------------


def lock_busy(lock: Any) -> Any:
    """A trio ``Lock`` waits when it has an owner or queued waiters."""
    return lock._owner is not None or lock._lot


def semaphore_busy(semaphore: Any) -> Any:
    """A trio ``Semaphore`` waits at zero (its waiters imply zero)."""
    return semaphore._value <= 0


def limiter_busy(limiter: Any) -> Any:
    """A trio ``CapacityLimiter`` waits with every token borrowed or waiters queued."""
    return len(limiter._borrowers) >= limiter._total_tokens or limiter._lot


def _usable(cls: type, busy: Callable[[Any], Any], *args: Any) -> bool:
    """Whether ``busy`` can read a fresh ``cls(*args)`` (trio's internals are as expected)."""
    try:
        busy(cls(*args))
    except Exception:
        warn_once(
            f"trio-locks-{cls.__name__}",
            "scopewatch: trio.%s has an unexpected layout in this trio version; not measured",
            cls.__name__,
        )
        return False
    return True


def _patch(trio: ModuleType) -> None:
    current = safe_current_task(trio.lowlevel.current_task)
    for cls in (trio.Lock, trio.StrictFIFOLock):
        if _usable(cls, lock_busy):
            _patch_simple(cls, kind_of(cls), lock_busy, False, current)
    if _usable(trio.Semaphore, semaphore_busy, 1):
        _patch_simple(
            trio.Semaphore, semconv.LOCK_KIND_TRIO_SEMAPHORE, semaphore_busy, True, current
        )
    if _usable(trio.CapacityLimiter, limiter_busy, 1):
        _patch_limiter(trio.CapacityLimiter, current)
    _patches.patch(trio.Condition, "__init__", _condition_init)
    _patches.patch(trio.Condition, "wait", lambda original: _condition_wait(original, current))


def _patch_simple(
    cls: type, kind: str, busy: Callable[[Any], Any], multi: bool, current: Callable[[], Any]
) -> None:
    _patches.patch(cls, "__init__", lambda original: wrappers.make_init(original, kind_of))
    # trio's acquire calls acquire_nowait, which records the uncontended holds
    _patches.patch(
        cls,
        "acquire",
        lambda original: wrappers.make_delegating_acquire(original, kind, busy, multi, current),
    )
    holder = wrappers.running_task(current) if multi else _owner
    _patches.patch(
        cls,
        "acquire_nowait",
        lambda original: wrappers.make_acquire_nowait(original, multi, holder),
    )
    _patches.patch(
        cls, "release", lambda original: wrappers.make_release(original, kind, multi, current)
    )


def _owner(lock: Any) -> Any:
    """A trio ``Lock``'s holder, as its ``acquire_nowait`` just set it."""
    return lock._owner


def _patch_limiter(cls: type, current: Callable[[], Any]) -> None:
    kind = semconv.LOCK_KIND_TRIO_CAPACITY_LIMITER
    _patches.patch(cls, "__init__", lambda original: wrappers.make_init(original, kind_of))
    _patches.patch(
        cls,
        "acquire_on_behalf_of",
        lambda original: wrappers.make_borrower_acquire(original, kind, limiter_busy, current),
    )
    _patches.patch(cls, "acquire_on_behalf_of_nowait", wrappers.make_borrower_acquire_nowait)
    _patches.patch(
        cls,
        "release_on_behalf_of",
        lambda original: wrappers.make_borrower_release(original, kind),
    )


# --- Condition ---------------------------------------------------------------------------------


def _condition_init(original: Any) -> Any:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if core.ACTIVE:
            lock = args[0] if args else kwargs.get("lock")
            try:
                core.register(
                    self, semconv.LOCK_KIND_TRIO_CONDITION, core.creation_site(sys._getframe(1))
                )
                if lock is None:  # its own lock reports the Condition's name and kind
                    core.link(
                        self._lock, semconv.LOCK_KIND_TRIO_LOCK,
                        self, semconv.LOCK_KIND_TRIO_CONDITION,
                    )  # fmt: skip
            except Exception as error:
                wrappers.fail(error)

    return __init__


def _condition_wait(original: Any, current: Callable[[], Any]) -> Any:
    async def wait(self: Any) -> None:
        try:
            await original(self)
        finally:
            if core.ACTIVE:
                _record_retaken(self._lock, current)

    wait.__wrapped__ = original  # type: ignore[attr-defined]
    return wait


def _record_retaken(lock: Any, current: Callable[[], Any]) -> None:
    """After ``Condition.wait``: the waiting task holds ``lock`` again, taken without acquire."""
    try:
        owner = lock._owner
        if owner is not None and id(lock) not in core.binary_holds and owner is current():
            core.hold_started(lock, owner, core.sample(), False)
    except Exception as error:
        wrappers.fail(error)


# --- deadlines ---------------------------------------------------------------------------------


def _trio_deadline(task: Any) -> bool:
    """Whether a cancel scope of the trio ``task`` was cancelled because its deadline passed."""
    status = getattr(task, "_cancel_status", None)
    trio = sys.modules.get(TRIO)
    if status is None or trio is None:
        return False
    try:
        now = trio.current_time()
    except RuntimeError:  # not inside trio.run
        return False
    depth = 0
    while status is not None and depth < _MAX_SCOPE_DEPTH:
        scope = status._scope
        if scope._cancel_called and scope._deadline <= now:
            return True
        if scope._shield:
            return False
        status = status._parent
        depth += 1
    return False
