"""The patch registry, import hooks and task helpers shared by the instrumentation modules."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import wrapt

if TYPE_CHECKING:
    import types
    from collections.abc import Callable, Iterable

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


MISSING: Any = object()
"""What :meth:`Target.read` gives for an attribute the owner only inherits."""


class Target:
    """One patched place: an attribute of a class or module, or a closure cell.

    ``original`` is what the place held before the first patch (by identity; ``MISSING`` for an
    inherited attribute). ``layers`` are the patches on it, innermost first.
    """

    __slots__ = ("layers", "name", "original", "owner")

    def __init__(self, owner: Any, name: str | None) -> None:
        self.owner = owner
        self.name = name
        """The attribute's name; ``None`` for a closure cell (the owner)."""
        self.original = self.read()
        self.layers: list[_Layer] = []

    def read(self) -> Any:
        """The owner's own attribute (``MISSING`` when inherited), or the cell's contents."""
        if self.name is None:
            return self.owner.cell_contents
        return vars(self.owner).get(self.name, MISSING)

    def write(self, value: Any) -> None:
        """Make :meth:`read` give ``value`` (``MISSING`` removes the owner's own attribute)."""
        if self.name is None:
            self.owner.cell_contents = value
        elif value is not MISSING:
            setattr(self.owner, self.name, value)
        elif self.name in vars(self.owner):
            delattr(self.owner, self.name)

    def wrap(self, make: Callable[[Any], Any]) -> Any:
        """``make(current)``, as the same kind of descriptor (classmethod, staticmethod)."""
        if self.name is None:
            return make(self.owner.cell_contents)
        found = _lookup(self.owner, self.name)
        if isinstance(found, (classmethod, staticmethod)):
            made = make(found.__func__)
            return made if isinstance(made, type(found)) else type(found)(made)
        return make(getattr(self.owner, self.name))

    def rebuild(self) -> None:
        """Back to the original, then every layer again in order (one was taken from below)."""
        self.write(self.original)
        for layer in self.layers:
            layer.value = self.wrap(layer.make)
            self.write(layer.value)


class _Layer:
    __slots__ = ("holder", "make", "value")

    def __init__(self, holder: object, make: Callable[[Any], Any], value: Any) -> None:
        self.holder = holder
        self.make = make
        self.value = value


def _lookup(owner: Any, name: str) -> Any:
    """``owner.name`` as stored (a classmethod object, not the bound method): own or inherited."""
    for space in getattr(owner, "__mro__", (owner,)):
        found = vars(space).get(name, MISSING)
        if found is not MISSING:
            return found
    return MISSING


class Registry:
    """Every patch in the process, by target; each holder's patches restored exactly.

    Two holders may patch one target (``BaseEventLoop.close``): the second wraps the first.
    Restoring the outer one puts the inner one back; restoring the inner one first rebuilds the
    outer one on the original (its ``make`` is called again), so any order ends at the original.
    Install time only: a wrapper never goes through the registry when it is called.
    """

    def __init__(self) -> None:
        self._targets: dict[tuple[int, str | None], Target] = {}
        """``(id(owner), name)`` -> target; the target holds its owner, so the id stays its."""

    def patch(
        self, holder: object, owner: Any, name: str | None, make: Callable[[Any], Any]
    ) -> Any:
        """Replace ``owner.name`` (or cell ``owner``, name ``None``) by ``make(current)``."""
        key = (id(owner), name)
        target = self._targets.get(key)
        if target is None:
            target = Target(owner, name)
        value = target.wrap(make)  # may raise: nothing is recorded then
        self._targets[key] = target
        target.layers.append(_Layer(holder, make, value))
        target.write(value)
        return value

    def restore(self, holder: object) -> None:
        """Take off every patch of ``holder``, latest first."""
        for key, target in reversed(list(self._targets.items())):
            kept = [layer for layer in target.layers if layer.holder is not holder]
            if len(kept) == len(target.layers):
                continue
            on_top = all(a is b for a, b in zip(kept, target.layers, strict=False))
            target.layers = kept
            if not kept:
                del self._targets[key]
                target.write(target.original)
            elif on_top:
                target.write(kept[-1].value)
            else:
                target.rebuild()

    def holds(self, holder: object) -> bool:
        """Whether ``holder`` has a patch in place."""
        return any(
            layer.holder is holder for target in self._targets.values() for layer in target.layers
        )

    def targets(self) -> list[Target]:
        """Every patched target, in the order first patched."""
        return list(self._targets.values())

    def __len__(self) -> int:
        return len(self._targets)


REGISTRY = Registry()
"""The registry every instrumentation module patches through."""


class Patches:
    """One module's patches, kept in :data:`REGISTRY` (or ``registry``)."""

    def __init__(self, registry: Registry | None = None) -> None:
        self._registry = REGISTRY if registry is None else registry

    def patch(self, owner: Any, name: str, make: Callable[[Any], Any]) -> None:
        """Replace ``owner.name`` by ``make(original)``; the original may be inherited.

        ``owner`` is a class or a module; a classmethod or staticmethod hands ``make`` its
        function and stays one. ``make`` builds the wrapper and does nothing else: it runs again
        when a patch under it is restored first.
        """
        self._registry.patch(self, owner, name, make)

    def cell(self, cell: Any, value: Any) -> None:
        """Set a closure cell's contents to ``value``."""
        self._registry.patch(self, cell, None, lambda _: value)

    def restore(self) -> None:
        """Put every original back (or remove the override when it was inherited)."""
        self._registry.restore(self)

    def __bool__(self) -> bool:
        return self._registry.holds(self)


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
