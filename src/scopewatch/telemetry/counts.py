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
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

K = TypeVar("K")

FREE_THREADED = not getattr(sys, "_is_gil_enabled", lambda: True)()
"""``True`` on a free-threaded build running without its GIL."""


class ThreadCounts(Generic[K]):
    """``key -> count`` kept per thread, summed when read.

    Each thread reads and writes its own part; ``items()`` sums every thread's part (threads
    that ended keep theirs).
    """

    __slots__ = ("_keys", "_local", "_lock", "_parts")

    def __init__(self, keys: Iterable[K] = ()) -> None:
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

    def setdefault(self, key: K, default: int) -> int:
        """``dict.setdefault`` on this thread's part."""
        return self._mine().setdefault(key, default)

    def items(self) -> list[tuple[K, int]]:
        """Every key with its count summed over all threads."""
        with self._lock:
            parts = list(self._parts)
        totals: dict[K, int] = {}
        for part in parts:
            for key, count in list(part.items()):
                totals[key] = totals.get(key, 0) + count
        return list(totals.items())

    def __iter__(self) -> Iterator[K]:
        return iter([key for key, _ in self.items()])
