"""anyio ``Lock``, ``Semaphore``, ``Condition`` and ``CapacityLimiter``.

``anyio.Lock()`` etc. are factories returning backend classes (``anyio._backends._asyncio.Lock``
...), which anyio imports lazily; each module is patched when it is imported (a post-import hook,
inert after ``uninstall()``). asyncio backend: all four. trio backend: ``Lock``, ``Semaphore``
and ``CapacityLimiter`` delegate to trio objects, which ``trio_locks`` measures; each is linked
to its trio object, which then reports the anyio kind and name. ``Condition`` is measured
through its lock, which reports the Condition's name and kind. The ``*Adapter`` classes
(created outside an event loop) report through the backend object they create on first use.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from scopewatch import semconv
from scopewatch._core import frames
from scopewatch._core import locks as core
from scopewatch._current import safe_current_task
from scopewatch.instrumentation import _lock_wrappers as wrappers
from scopewatch.instrumentation import _patching, _running_loop, trio_locks

if TYPE_CHECKING:
    from types import ModuleType

    from scopewatch._runtime import Runtime

ASYNCIO_BACKEND = "anyio._backends._asyncio"
TRIO_BACKEND = "anyio._backends._trio"
SYNCHRONIZATION = "anyio._core._synchronization"

_active = False
_patches = _patching.Patches()
_patched_modules: set[str] = set()

_KINDS = {
    "Lock": semconv.LOCK_KIND_ANYIO_LOCK,
    "Semaphore": semconv.LOCK_KIND_ANYIO_SEMAPHORE,
    "CapacityLimiter": semconv.LOCK_KIND_ANYIO_CAPACITY_LIMITER,
    "Condition": semconv.LOCK_KIND_ANYIO_CONDITION,
}


def _kind_of(cls: type) -> str:
    for base in cls.__mro__:
        kind = _KINDS.get(base.__name__.removesuffix("Adapter"))
        if kind is not None:
            return kind
    return cls.__qualname__


def install(runtime: Runtime) -> None:
    """Patch the anyio lock classes now, or when their modules are imported."""
    global _active
    del runtime  # the feature's telemetry is started first (``telemetry.locks.start``)
    _active = True
    if _asyncio_deadline not in core.deadline_probes:
        core.deadline_probes.append(_asyncio_deadline)
    for name in (ASYNCIO_BACKEND, TRIO_BACKEND, SYNCHRONIZATION):
        _patching.when_imported(name, _on_import)


def uninstall() -> None:
    """Restore every original and make the import hooks inert."""
    global _active
    _active = False
    _patches.restore()
    _patched_modules.clear()
    if _asyncio_deadline in core.deadline_probes:
        core.deadline_probes.remove(_asyncio_deadline)


def _on_import(module: ModuleType) -> None:
    if not _active or module.__name__ in _patched_modules:
        return
    try:
        import anyio

        frames.add_internal_package(anyio.__file__)
        if module.__name__ == ASYNCIO_BACKEND:
            _patch_asyncio_backend(module)
        elif module.__name__ == TRIO_BACKEND:
            _patch_trio_backend(module)
        else:
            _patch_synchronization(module)
        _patched_modules.add(module.__name__)
    except Exception as error:
        wrappers.fail(error)


# --- asyncio backend ---------------------------------------------------------------------------


_lock_busy = wrappers.owner_or_waiters
_semaphore_busy = wrappers.counter_or_waiters


def _limiter_busy(limiter: Any) -> Any:
    return limiter._wait_queue or len(limiter._borrowers) >= limiter._total_tokens


def _patch_asyncio_backend(module: ModuleType) -> None:

    current = _running_loop.current_task_function()
    lock_kind = semconv.LOCK_KIND_ANYIO_LOCK
    semaphore_kind = semconv.LOCK_KIND_ANYIO_SEMAPHORE
    limiter_kind = semconv.LOCK_KIND_ANYIO_CAPACITY_LIMITER
    for cls_name, kind, busy, multi in (
        ("Lock", lock_kind, _lock_busy, False),
        ("Semaphore", semaphore_kind, _semaphore_busy, True),
    ):
        cls = getattr(module, cls_name, None)
        if cls is None or "acquire" not in cls.__dict__:  # anyio < 4.5: no backend class
            continue
        _patch_common(cls, kind, busy, multi, current)
    limiter = getattr(module, "CapacityLimiter", None)
    if limiter is not None and "acquire_on_behalf_of" in limiter.__dict__:
        _patches.patch(limiter, "__init__", _init)
        _patches.patch(
            limiter,
            "acquire_on_behalf_of",
            lambda original: wrappers.make_borrower_acquire(
                original, limiter_kind, _limiter_busy, current
            ),
        )
        _patches.patch(
            limiter,
            "acquire_on_behalf_of_nowait",
            wrappers.make_borrower_acquire_nowait,
        )
        _patches.patch(
            limiter,
            "release_on_behalf_of",
            lambda original: wrappers.make_borrower_release(original, limiter_kind),
        )


def _patch_common(cls: type, kind: str, busy: Any, multi: bool, current: Any) -> None:
    _patches.patch(cls, "__init__", _init)
    _patches.patch(
        cls,
        "acquire",
        lambda original: wrappers.make_acquire(original, kind, busy, busy, multi, current),
    )
    if "acquire_nowait" in cls.__dict__:
        holder = wrappers.running_task(current)
        _patches.patch(
            cls,
            "acquire_nowait",
            lambda original: wrappers.make_acquire_nowait(original, multi, holder),
        )
    _patches.patch(
        cls, "release", lambda original: wrappers.make_release(original, kind, multi, current)
    )


def _init(original: Any) -> Any:
    return wrappers.make_init(original, _kind_of)


def _asyncio_deadline(task: Any) -> bool:
    """Whether an anyio scope of ``task`` was cancelled because its deadline passed."""
    module = sys.modules.get(ASYNCIO_BACKEND)
    if module is None:
        return False
    state = module._task_states.get(task)
    scope = state.cancel_scope if state is not None else None
    if scope is None:
        return False
    now = task.get_loop().time()
    depth = 0
    while scope is not None and depth < 64:
        if scope._cancel_called and scope.deadline <= now:
            return True
        scope = scope._parent_scope
        depth += 1
    return False


# --- trio backend ------------------------------------------------------------------------------

_TRIO_INNER = {
    "Lock": "_Lock__original",
    "Semaphore": "_Semaphore__original",
    "CapacityLimiter": "_CapacityLimiter__original",
}
"""anyio trio-backend class -> the slot holding the trio object it delegates to."""


def _patch_trio_backend(module: ModuleType) -> None:
    """Link each backend object to its trio object, which ``trio_locks`` measures.

    Only ``fast_acquire=True`` locks and semaphores need more: they take the trio object's
    ``acquire_nowait`` (measured) and park on its lot directly, so their waits are timed here.
    """
    import trio

    current = safe_current_task(trio.lowlevel.current_task)
    fast = {
        "Lock": (semconv.LOCK_KIND_ANYIO_LOCK, trio_locks.lock_busy, False),
        "Semaphore": (semconv.LOCK_KIND_ANYIO_SEMAPHORE, trio_locks.semaphore_busy, True),
    }
    for cls_name, attribute in _TRIO_INNER.items():
        cls = getattr(module, cls_name, None)
        if cls is None or "acquire" not in cls.__dict__:  # anyio < 4.5: no backend class
            continue
        _patch_trio_class(cls, attribute, fast.get(cls_name), current)


def _patch_trio_class(
    cls: type, attribute: str, fast: tuple[str, Any, bool] | None, current: Any
) -> None:
    _patches.patch(cls, "__init__", lambda original: _linking_init(original, attribute))
    if fast is not None:
        kind, busy, multi = fast
        _patches.patch(
            cls,
            "acquire",
            lambda original: _fast_acquire(original, attribute, kind, busy, multi, current),
        )


def _linking_init(original: Any, attribute: str) -> Any:
    init = wrappers.make_init(original, _kind_of)

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        if core.ACTIVE:
            try:
                inner = getattr(self, attribute, None)
                if inner is not None:
                    kind = _kind_of(type(self))
                    core.link(inner, kind, self, kind)
            except Exception as error:
                wrappers.fail(error)

    return __init__


def _fast_acquire(
    original: Any, attribute: str, kind: str, busy: Any, multi: bool, current: Any
) -> Any:
    """``acquire`` timing the contended ``fast_acquire`` path (others are measured by trio's)."""

    async def acquire(self: Any) -> Any:
        if not core.ACTIVE:
            return await original(self)
        try:
            inner = getattr(self, attribute) if self._fast_acquire else None
            waiting = inner is not None and busy(inner)
        except Exception as error:
            wrappers.fail(error)
            waiting = False
        if not waiting:
            return await original(self)
        return await wrappers.time_wait(inner, original(self), kind, multi, current)

    acquire.__wrapped__ = original  # type: ignore[attr-defined]
    return acquire


# --- backend-neutral classes -------------------------------------------------------------------


def _patch_synchronization(module: ModuleType) -> None:
    condition = module.Condition
    _patches.patch(condition, "__init__", _condition_init)
    _patch_generic_classes(module)
    for adapter_name, getter, attribute in (
        ("LockAdapter", "_lock", "_internal_lock"),
        ("SemaphoreAdapter", "_semaphore", "_internal_semaphore"),
        ("CapacityLimiterAdapter", "_limiter", "_internal_limiter"),
    ):
        adapter = getattr(module, adapter_name, None)
        if adapter is None or not isinstance(adapter.__dict__.get(getter), property):
            continue
        _patches.patch(adapter, "__init__", _init)
        _patches.patch(adapter, getter, _adapter_property(attribute))


def _patch_generic_classes(module: ModuleType) -> None:
    """Patch ``Lock`` and ``Semaphore`` of anyio < 4.5 (one class for every backend).

    Their ``acquire`` calls ``acquire_nowait`` first, which records uncontended holds.
    """
    current = _running_loop.current_task_function()
    for cls_name, kind, busy, multi in (
        ("Lock", semconv.LOCK_KIND_ANYIO_LOCK, _lock_busy, False),
        ("Semaphore", semconv.LOCK_KIND_ANYIO_SEMAPHORE, _semaphore_busy, True),
    ):
        cls = getattr(module, cls_name, None)
        if cls is None or "__new__" in cls.__dict__ or "acquire_nowait" not in cls.__dict__:
            continue  # anyio >= 4.5: a factory; its backend classes are patched instead
        _patch_generic(cls, kind, busy, multi, current)


def _patch_generic(cls: type, kind: str, busy: Any, multi: bool, current: Any) -> None:
    def acquire(original: Any) -> Any:
        return wrappers.make_delegating_acquire(original, kind, busy, multi, current)

    def acquire_nowait(original: Any) -> Any:
        return wrappers.make_acquire_nowait(original, multi, wrappers.running_task(current))

    def release(original: Any) -> Any:
        return wrappers.make_release(original, kind, multi, current)

    _patches.patch(cls, "__init__", _init)
    _patches.patch(cls, "acquire", acquire)
    _patches.patch(cls, "acquire_nowait", acquire_nowait)
    _patches.patch(cls, "release", release)


def _condition_init(original: Any) -> Any:
    def __init__(self: Any, lock: Any = None, *args: Any, **kwargs: Any) -> None:
        original(self, lock, *args, **kwargs)
        if core.ACTIVE:
            try:
                core.register(self, semconv.LOCK_KIND_ANYIO_CONDITION, _site())
                if lock is None:  # its own lock reports the Condition's name and kind
                    core.link(
                        self._lock, semconv.LOCK_KIND_ANYIO_LOCK,
                        self, semconv.LOCK_KIND_ANYIO_CONDITION,
                    )  # fmt: skip
            except Exception as error:
                wrappers.fail(error)

    return __init__


def _site() -> str:
    return core.creation_site(sys._getframe(2))


def _adapter_property(attribute: str) -> Any:
    def make(original: property) -> property:
        fget = original.fget
        assert fget is not None

        def getter(self: Any) -> Any:
            fresh = getattr(self, attribute) is None
            inner = fget(self)
            if fresh and core.ACTIVE:
                try:
                    kind = _kind_of(type(self))
                    core.link(inner, kind, self, kind)
                except Exception as error:
                    wrappers.fail(error)
            return inner

        return property(getter, original.fset, original.fdel, original.__doc__)

    return make
