"""Library functions that enter and exit a cancel scope themselves, with no user code between.

Such a scope cannot be misused (DESIGN section 3, "Cost contract"): it is entered and exited by
one ``with`` statement of the library, and nothing but the library's own awaits run inside it
(a checkpoint, a task group waiting for its children, a lock's shielded wait). The wrappers
look the entering function's code object up here and pass such scopes straight through: not
tracked, not counted, never a span.

Keyed by ``id(code)`` (hashing a code object hashes its bytecode); the entry holds the code,
so its id cannot be reused while it is listed.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from scopewatch.instrumentation._patching import when_imported

if TYPE_CHECKING:
    from types import CodeType, ModuleType

codes: dict[int, CodeType] = {}
"""``id(code)`` -> code of every function known to enter a self-contained scope."""

_SITES: dict[str, tuple[tuple[str | None, str], ...]] = {
    "anyio._backends._asyncio": (
        ("AsyncIOBackend", "cancel_shielded_checkpoint"),
        ("AsyncIOBackend", "run_sync_in_worker_thread"),
        ("TaskGroup", "__aexit__"),  # the wait scope around the children
        ("TaskGroup", "start"),  # the shield while a failed start's task is cancelled
    ),
    "anyio._backends._trio": (
        ("TrioBackend", "cancel_shielded_checkpoint"),
        ("TrioBackend", "run_sync_in_worker_thread"),
    ),
    "anyio.lowlevel": ((None, "cancel_shielded_checkpoint"),),
    "anyio._core._synchronization": (("Condition", "wait"),),
    "trio._core._run": ((None, "checkpoint"), (None, "cancel_shielded_checkpoint")),
    "trio._timeouts": ((None, "sleep_until"),),
    "trio._sync": (("Condition", "wait"),),
}
"""Module -> ``(class or None, function)`` entering a self-contained scope (checked against
each supported version's source: a checkpoint, a shielded wait, a sleep's own deadline)."""


def is_closed(code: CodeType) -> bool:
    """Whether ``code`` enters only self-contained scopes."""
    return codes.get(id(code)) is code


def add(function: Any) -> None:
    """List ``function`` (a function, method, classmethod or KI-protected wrapper)."""
    function = getattr(function, "__func__", function)
    function = inspect.unwrap(function)
    code = getattr(function, "__code__", None)
    if code is not None:
        codes[id(code)] = code


def _learn(module: ModuleType) -> None:
    for class_name, name in _SITES.get(module.__name__, ()):
        owner: Any = module if class_name is None else getattr(module, class_name, None)
        member = inspect.getattr_static(owner, name, None) if owner is not None else None
        if member is not None:
            add(member)


def watch() -> None:
    """Learn every listed module now or when it is imported (idempotent)."""
    for name in _SITES:
        when_imported(name, _learn)
