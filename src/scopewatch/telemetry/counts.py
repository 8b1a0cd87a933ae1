"""Exact counts with threads: one plain dict under a GIL, one dict per thread without one.

The hot paths count with ``counts[key] += 1`` (``setdefault`` first for a new key): under a GIL no
thread switch falls between that read and write (the interpreter checks for switches only at
calls and backward jumps), so a shared dict loses nothing. A free-threaded build (3.13t+, GIL
off) runs that read and write in two threads at once; there each thread counts in its own dict
and readers sum them, so the count stays exact with no lock per count.
"""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import ItemsView, Iterable, ValuesView

K = TypeVar("K")

FREE_THREADED = not getattr(sys, "_is_gil_enabled", lambda: True)()
"""``True`` on a free-threaded build running without its GIL."""


def new_counts(keys: Iterable[K] = ()) -> dict[K, int]:
    """The counts hot paths increment: a plain dict, or :class:`ThreadCounts` without a GIL."""
    if FREE_THREADED:
        return ThreadCounts(keys)
    return dict.fromkeys(keys, 0)


class ThreadCounts(dict[K, int]):
    """``key -> count`` kept per thread, summed when read.

    Each thread reads and writes its own part (``counts[key] += 1`` stays one thread's read and
    write, and so does ``get``); ``items()`` and ``values()`` sum every thread's part, threads
    that ended keep theirs. The ``dict`` base itself stays empty.
    """

    __slots__ = ("_keys", "_local", "_lock", "_parts")

    def __init__(self, keys: Iterable[K] = ()) -> None:
        super().__init__()
        self._keys = tuple(keys)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._parts: list[dict[K, int]] = []

    def _mine(self) -> dict[K, int]:
        try:
            part: dict[K, int] = self._local.part
        except AttributeError:
            part = dict.fromkeys(self._keys, 0)
            with self._lock:
                self._parts.append(part)
            self._local.part = part
        return part

    def __getitem__(self, key: K) -> int:
        """This thread's count (what ``counts[key] += 1`` reads)."""
        return self._mine()[key]

    def __setitem__(self, key: K, value: int) -> None:
        self._mine()[key] = value

    def setdefault(self, key: K, default: int) -> int:  # type: ignore[override]
        """``dict.setdefault`` on this thread's part."""
        return self._mine().setdefault(key, default)

    def _totals(self) -> dict[K, int]:
        with self._lock:
            parts = list(self._parts)
        totals: dict[K, int] = {}
        for part in parts:
            for key, count in list(part.items()):
                totals[key] = totals.get(key, 0) + count
        return totals

    def items(self) -> ItemsView[K, int]:  # type: ignore[override]
        """Every key with its count summed over all threads."""
        return self._totals().items()

    def values(self) -> ValuesView[int]:  # type: ignore[override]
        """Every count summed over all threads."""
        return self._totals().values()

    def get(self, key: K, default: int = 0) -> int:  # type: ignore[override]
        """This thread's count of ``key``, as ``counts[key]`` reads it."""
        return self._mine().get(key, default)
