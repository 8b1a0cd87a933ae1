"""A per-rule cap on the log lines of the ``log`` action, with a count of what it held back.

A violation storm (a loop exiting a stored scope in the wrong task thousands of times a second)
must not flood the log: each rule may write at most ``limit`` lines per window; the lines beyond
are counted, and the next line written for that rule (or :meth:`LogLimiter.drain`, when the
rules are switched off) reports how many were suppressed. Pure bookkeeping: no logging here.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

WINDOW_SECONDS = 60.0
"""Length of the window ``limit`` applies to."""


class _Window:
    __slots__ = ("lines", "start", "suppressed")

    def __init__(self, start: float) -> None:
        self.start = start
        self.lines = 0
        self.suppressed = 0


class LogLimiter:
    """At most ``limit`` lines per :data:`WINDOW_SECONDS` per key; ``limit`` 0 means no cap.

    Thread-safe: rules fire in whichever thread ended the span.
    """

    def __init__(
        self, limit: int, clock: Callable[[], float], window: float = WINDOW_SECONDS
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}

    def admit(self, key: str) -> int | None:
        """Whether a line for ``key`` may be written now.

        Returns:
            ``None`` when the line is to be suppressed; otherwise the number of lines for
            ``key`` suppressed since the last one written (to report before this one).
        """
        if self.limit <= 0:
            return 0
        now = self._clock()
        with self._lock:
            window = self._windows.get(key)
            if window is None:
                window = self._windows[key] = _Window(now)
            elif now - window.start >= self.window:
                window.start = now
                window.lines = 0
            if window.lines >= self.limit:
                window.suppressed += 1
                return None
            window.lines += 1
            suppressed, window.suppressed = window.suppressed, 0
            return suppressed

    def drain(self) -> list[tuple[str, int]]:
        """``(key, suppressed)`` for every key with lines suppressed and not yet reported."""
        with self._lock:
            found = [(key, w.suppressed) for key, w in self._windows.items() if w.suppressed]
            for window in self._windows.values():
                window.suppressed = 0
        return found
