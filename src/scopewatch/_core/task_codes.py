"""What a task runs: its span name and ``code.*`` facts, looked up once per code object.

Library coroutines that only wrap the user's one (anyio's, opentelemetry-instrumentation-
asyncio's) are looked through, so a task is named after the user's coroutine; coroutines matching
``OTEL_PYTHON_SCOPEWATCH_EXCLUDE`` are not tracked.
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scopewatch import semconv
from scopewatch._core import frames

if TYPE_CHECKING:
    from types import CodeType

MISSING: Any = object()
"""A cache miss in :attr:`TaskCodes.cache`."""

_WRAPPERS: dict[str, tuple[str, str, str]] = {
    "_run_coro": ("anyio/_core/_tasks.py", "self", "_coro"),
    "trace_coroutine": ("opentelemetry/instrumentation/asyncio/__init__.py", "coro", ""),
    "wrapper": ("anyio/_backends/_asyncio.py", "func", ""),
    "run_coro_with_task_status": ("anyio/_backends/_trio.py", "func", ""),
    "task_wrapper": ("anyio/_backends/_asyncio.py", "func", ""),
}
"""``co_name`` -> (file suffix, local, attribute): library coroutines that wrap the user's one
(anyio's ``TaskHandle._run_coro``, ``anyio.run``'s root ``wrapper``, the trio backend's
``TaskGroup.start()`` wrapper and ``anyio.from_thread.run``'s ``task_wrapper``,
opentelemetry-instrumentation-asyncio's ``trace_coroutine``): the task is named after the
coroutine (or coroutine function) they wrap."""


@dataclass(slots=True, frozen=True)
class CodeInfo:
    """What a task runs: its span name and the ``code.*`` facts of the coroutine function."""

    span_name: str
    qualname: str
    file: str = ""
    line: int = 0
    internal: bool = False
    """A library's coroutine (asyncio's own housekeeping, anyio's): a span only if anomalous."""


@dataclass(slots=True, frozen=True)
class Unwrap:
    """A wrapper coroutine: the wrapped one is its local ``local`` (its ``attribute``)."""

    local: str
    attribute: str


class TaskCodes:
    """Code object (or awaitable type) -> :class:`CodeInfo`, :class:`Unwrap` or ``None``."""

    def __init__(self, exclude: tuple[str, ...]) -> None:
        self.exclude = exclude
        self.cache: dict[Any, CodeInfo | Unwrap | None] = {}
        """Read directly by :meth:`TaskTracker.begin` (the hot path); filled by the methods."""

    def info_of(self, coro: Any) -> CodeInfo | None:
        """What ``coro`` runs, or ``None`` when it is excluded."""
        try:
            code = coro.cr_code
        except AttributeError:
            return self.info_of_awaitable(coro)
        found = self.cache.get(code, MISSING)
        if found is MISSING:
            found = self.classify(code)
        return self.unwrap(coro, found) if type(found) is Unwrap else found

    def classify(self, code: CodeType) -> CodeInfo | Unwrap | None:
        """Look ``code`` up for the first time and cache the answer."""
        wrapper = _WRAPPERS.get(code.co_name)
        if wrapper is not None and code.co_filename.replace(os.sep, "/").endswith(wrapper[0]):
            found: CodeInfo | Unwrap | None = Unwrap(wrapper[1], wrapper[2])
        else:
            qualname = frames.qualname(code)
            file = code.co_filename
            if self._excluded(qualname, file):
                found = None
            else:
                found = CodeInfo(
                    semconv.SPAN_TASK_PREFIX + qualname,
                    qualname,
                    file,
                    code.co_firstlineno,
                    frames.is_internal(code),
                )
        self.cache[code] = found
        return found

    def info_of_awaitable(self, awaitable: Any) -> CodeInfo | None:
        """What a coroutine without ``cr_code`` (a Cython or C coroutine) runs, by its type."""
        kind = type(awaitable)
        found = self.cache.get(kind, MISSING)
        if found is MISSING:
            qualname = kind.__qualname__
            if not asyncio.iscoroutine(awaitable) or self._excluded(qualname, ""):
                found = None  # not a task's coroutine: asyncio raises its own TypeError
            else:
                found = CodeInfo(semconv.SPAN_TASK_PREFIX + qualname, qualname, internal=True)
            self.cache[kind] = found
        return found if isinstance(found, CodeInfo) else None

    def unwrap(self, coro: Any, how: Unwrap) -> CodeInfo | None:
        """What the user's coroutine wrapped by the library coroutine ``coro`` runs."""
        inner = None
        frame = getattr(coro, "cr_frame", None)
        if frame is not None:
            inner = frames.local_of(frame, how.local)
            if inner is not None and how.attribute:
                inner = getattr(inner, how.attribute, None)
        code = getattr(inner, "cr_code", None) or getattr(inner, "__code__", None)
        if code is None:
            code = coro.cr_code
            qualname = frames.qualname(code)
            return CodeInfo(
                semconv.SPAN_TASK_PREFIX + qualname, qualname, code.co_filename, internal=True
            )
        info = self.cache.get(code, MISSING)
        if info is MISSING:
            info = self.classify(code)
        if isinstance(info, Unwrap):
            return self.unwrap(inner, info)
        return info if isinstance(info, CodeInfo) else None

    def _excluded(self, qualname: str, file: str) -> bool:
        return any(
            fnmatch.fnmatchcase(qualname, glob) or (file and fnmatch.fnmatchcase(file, glob))
            for glob in self.exclude
        )
