"""Patch bookkeeping, import hooks and task helpers shared by the instrumentation modules."""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

import wrapt

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

_MISSING = object()
_import_hooks: set[tuple[str, Callable[[types.ModuleType], None]]] = set()


def when_imported(name: str, on_import: Callable[[types.ModuleType], None]) -> None:
    """Run ``on_import(module)`` now if ``name`` is imported, else when it is imported.

    Import hooks cannot be unregistered, so each ``(name, on_import)`` is registered once per
    process; ``on_import`` must do nothing while its feature is not installed.
    """
    module = sys.modules.get(name)
    if module is not None:
        on_import(module)
    elif (name, on_import) not in _import_hooks:
        _import_hooks.add((name, on_import))
        wrapt.register_post_import_hook(on_import, name)


def factory_kinds(
    module: types.ModuleType, kinds: Iterable[tuple[str, str]]
) -> dict[int, tuple[types.CodeType, str]]:
    """``id(code)`` -> ``(code, kind)`` of the scope factories ``module`` has, by name.

    A decorated factory (``contextmanager``, KI protection) is looked at through ``__wrapped__``:
    the frame seen on the stack when it creates a scope is the undecorated function's.
    """
    found: dict[int, tuple[types.CodeType, str]] = {}
    for name, kind in kinds:
        function = getattr(module, name, None)
        function = getattr(function, "__wrapped__", function)
        if function is not None:
            found[id(function.__code__)] = (function.__code__, kind)
    return found


class Patches:
    """Attributes replaced on classes, restored exactly by :meth:`restore`."""

    def __init__(self) -> None:
        self._saved: list[tuple[type, str, Any]] = []

    def patch(self, cls: type, name: str, make: Callable[[Any], Any]) -> None:
        """Replace ``cls.name`` by ``make(original)``; the original may be inherited."""
        own = cls.__dict__.get(name, _MISSING)
        self._saved.append((cls, name, own))
        setattr(cls, name, make(getattr(cls, name)))

    def restore(self) -> None:
        """Put every original back (or remove the override when it was inherited)."""
        while self._saved:
            cls, name, own = self._saved.pop()
            if own is _MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, own)

    def __bool__(self) -> bool:
        return bool(self._saved)


def asyncio_current_task() -> Callable[[], Any]:
    """The fastest ``asyncio.current_task`` returning ``None`` outside a loop or task."""
    import asyncio
    from asyncio import events, tasks

    current = asyncio.current_task
    table = getattr(tasks, "_current_tasks", None)
    get_loop = getattr(events, "_get_running_loop", None)
    if isinstance(current, types.BuiltinFunctionType) or table is None or get_loop is None:
        return safe_current_task(current)
    get = table.get  # Python-level current_task (3.10, 3.11): skip its extra call

    def current_task() -> Any:
        return get(get_loop())

    current_task.table = table  # type: ignore[attr-defined]
    current_task.get_loop = get_loop  # type: ignore[attr-defined]
    return current_task


def safe_current_task(current: Callable[[], Any]) -> Callable[[], Any]:
    """``current()``, or ``None`` outside a task / event loop."""

    def current_task() -> Any:
        try:
            return current()
        except Exception:
            return None

    return current_task


def is_cancellation(error: BaseException) -> bool:
    """Whether ``error`` is asyncio's ``CancelledError`` or trio's ``Cancelled``."""
    name = type(error).__name__
    return name == "CancelledError" or (
        name == "Cancelled" and type(error).__module__.startswith("trio")
    )


def no_loop() -> None:
    return None


def task_lookup(current_task: Callable[[], Any]) -> tuple[Callable[[Any], Any], Any]:
    """``(get, get_loop)`` with ``get(get_loop())`` = the current task, as cheap as it gets."""
    table = getattr(current_task, "table", None)
    if table is not None:
        return table.get, current_task.get_loop  # type: ignore[attr-defined]
    return (lambda _: current_task()), no_loop


_HIDES_FRAMES = sys.version_info >= (3, 11)


def hide_own_frame(error: BaseException) -> None:
    """Take the calling wrapper's own entry off ``error``'s traceback; then re-raise bare.

    Call it in the wrapper's ``except`` block, right before a bare ``raise``. From 3.11 a bare
    ``raise`` adds no traceback entry for the re-raising frame, so the user's traceback goes
    from their line straight to the wrapped original. Before 3.11 the frame stays (a bare
    ``raise`` re-raises the saved traceback). The exception object, type and propagation are
    untouched; only an entry for the caller's own frame is ever removed.
    """
    if not _HIDES_FRAMES:
        return
    tb = error.__traceback__
    if tb is not None and tb.tb_next is not None and tb.tb_frame is sys._getframe(1):
        error.__traceback__ = tb.tb_next
