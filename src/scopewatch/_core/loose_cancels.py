"""Cancel requests of scopes that are not entered: not yet, or not any more.

anyio 4.0-4.5 task groups exit their scope before waiting for their children, so the
children's scopes must still be able to name that cancelled scope as their parent; a deadline
can expire, or ``cancel()`` be called, before a scope is entered. Scopes are held weakly (an
exited scope pins its task's frames) and the map is bounded.
"""

from __future__ import annotations

import functools
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scopewatch._core.records import CancelInfo

LIMIT = 1024

_Entry = tuple["weakref.ref[Any] | None", "CancelInfo"]


class LooseCancels(dict[int, _Entry]):
    """``id(scope)`` -> (weak reference or ``None``, the cancel request)."""

    def remember(self, obj: object, info: CancelInfo) -> None:
        """Keep the cancel request of ``obj``, which is not entered.

        A scope that cannot be weakly referenced is remembered by ``id()`` alone: the next
        enter of an object with that id takes the entry, so a reused id is never mistaken for
        it by a scope that is entered.
        """
        key = id(obj)
        try:
            ref: weakref.ref[Any] | None = weakref.ref(obj, functools.partial(self._forget, key))
        except TypeError:
            ref = None
        if len(self) >= LIMIT:
            self.pop(next(iter(self), 0), None)  # another thread may have emptied it
        self[key] = (ref, info)

    def take(self, obj: object) -> CancelInfo | None:
        """The request made before ``obj`` was entered, forgotten now that it is."""
        entry = self.pop(id(obj), None)
        if entry is not None and entry[0] is not None and entry[0]() is obj:
            return entry[1]
        return None

    def find(self, obj: object) -> CancelInfo | None:
        """The remembered request of ``obj``, if any."""
        entry = self.get(id(obj))
        if entry is not None and (entry[0] is None or entry[0]() is obj):
            return entry[1]
        return None

    def _forget(self, key: int, ref: object) -> None:
        entry = self.get(key)
        if entry is not None and entry[0] is ref:
            self.pop(key, None)
