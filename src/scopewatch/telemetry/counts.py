"""Exact counts with threads: plain dicts and ints under a GIL, one part per thread without one.

The hot paths count with ``counts[key] += 1`` (``setdefault`` first for a new key) and
``tracker.active += 1``: under a GIL no thread switch falls between that read and write (the
interpreter checks for switches only at calls and backward jumps), so a shared dict or int loses
nothing. A free-threaded build (3.13t+, GIL off) runs that read and write in two threads at
once; there each thread counts in its own part and readers sum them, so the count stays exact
with no lock per count. :func:`new_counts` and :func:`new_tally` pick the kind when called.
"""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, TypeVar, cast

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


def new_tally() -> int:
    """A count the hot paths change with ``+= 1`` / ``-= 1``: ``0``, or a tally without a GIL.

    The :class:`ThreadTally` is typed as the ``int`` it stands for; read it with ``int()``
    where an ``int`` is due.
    """
    if FREE_THREADED:
        return cast("int", ThreadTally())
    return 0


class ThreadTally:
    """An ``int`` kept per thread, summed when read.

    ``tally += n`` and ``tally -= n`` change this thread's part and give the tally itself back,
    so ``obj.count += 1`` stores the same object again; ``int()``, ``==`` and the order
    comparisons read the sum over every thread (threads that ended keep their part). A part may
    go below zero (a task created in one thread and ended in another): the sum stays exact.
    """

    __slots__ = ("_local", "_parts")

    def __init__(self) -> None:
        self._local = threading.local()
        self._parts: list[list[int]] = []
        """One ``[count]`` per thread that counted; ``list.append`` and ``list()`` are atomic
        on free-threaded builds too (the list's own lock), so no lock of ours is needed."""

    def _mine(self) -> list[int]:
        try:
            part: list[int] = self._local.part
        except AttributeError:
            part = [0]
            self._parts.append(part)
            self._local.part = part
        return part

    def __iadd__(self, amount: int) -> ThreadTally:
        self._mine()[0] += amount
        return self

    def __isub__(self, amount: int) -> ThreadTally:
        self._mine()[0] -= amount
        return self

    def __int__(self) -> int:
        return sum(part[0] for part in list(self._parts))

    __index__ = __int__

    def __eq__(self, other: object) -> bool:
        return int(self) == other

    __hash__ = None  # type: ignore[assignment]

    def __lt__(self, other: int) -> bool:
        return int(self) < other

    def __le__(self, other: int) -> bool:
        return int(self) <= other

    def __gt__(self, other: int) -> bool:
        return int(self) > other

    def __ge__(self, other: int) -> bool:
        return int(self) >= other

    def __repr__(self) -> str:
        return f"ThreadTally({int(self)})"
