"""Our code never breaks the application.

A failure in scopewatch's own code is caught (``Exception`` only, never ``BaseException``, so
``CancelledError`` and ``KeyboardInterrupt`` pass untouched), logged once with its traceback,
and the part that failed is switched off for the rest of the process. Code that is not ours but
that scopewatch calls (a span processor of the user's tracer provider) cannot be switched off:
its failure is logged once and scopewatch carries on. Logging itself never raises into the
application (a broken logging handler is ignored). Under scopewatch's own test suite
(``SCOPEWATCH_STRICT=1``) the error is re-raised instead, so bugs cannot hide.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
from typing import TYPE_CHECKING, ParamSpec, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

_logger = logging.getLogger("scopewatch")

P = ParamSpec("P")
R = TypeVar("R")

STRICT = os.environ.get("SCOPEWATCH_STRICT", "") == "1"
_ONCE = threading.Lock()
"""Makes "the first time" exact on free-threaded builds too; taken only off the normal path."""


class Part:
    """A piece of instrumentation that can be switched off when it misbehaves."""

    __slots__ = ("enabled", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.enabled = True

    def fail(self, error: Exception) -> None:
        """Disable this part and log the error once."""
        with _ONCE:
            first, self.enabled = self.enabled, False
        if not first:
            return
        _log(
            logging.ERROR,
            "scopewatch: %s failed and is disabled for the rest of this process; the "
            "application is not affected. Please report this with the traceback below.",
            self.name,
            exc_info=error,
        )
        if STRICT:
            raise error

    def reset(self) -> None:
        """Re-enable the part (a new ``instrument()`` call)."""
        self.enabled = True


def guarded(part: Part, default: R) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Run the function while ``part`` is enabled; on error disable it, return ``default``."""

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            if not part.enabled:
                return default
            try:
                return function(*args, **kwargs)
            except Exception as error:
                part.fail(error)
                return default

        return wrapper

    return decorate


_warned: set[str] = set()


def _first_time(key: str) -> bool:
    """``True`` once per ``key``, also when threads race without a GIL."""
    if key in _warned:
        return False
    with _ONCE:
        if key in _warned:
            return False
        _warned.add(key)
        return True


def warn_once(key: str, message: str, *args: object) -> None:
    """Log a warning the first time ``key`` is seen."""
    if _first_time(key):
        _log(logging.WARNING, message, *args)


def outside_failed(key: str, what: str, error: Exception) -> None:
    """Code that is not scopewatch's, called by it, raised ``error``: log it once per ``key``.

    Such code (``what``, e.g. "a span processor's on_end") is not ours to switch off, so
    scopewatch carries on and calls it again next time; only the first failure is logged.

    Raises:
        Exception: ``error`` again under ``SCOPEWATCH_STRICT=1`` (it may be our own bug).
    """
    if _first_time(key):
        _log(
            logging.ERROR,
            "scopewatch: %s raised %s; scopewatch carries on without it and the application "
            "is not affected (logged once: later failures are silent). This is not an error "
            "of scopewatch: see the traceback below.",
            what,
            type(error).__name__,
            exc_info=error,
        )
    if STRICT:
        raise error


def _log(level: int, message: str, *args: object, exc_info: Exception | None = None) -> None:
    """Log, never raising: a broken logging handler must not reach the application."""
    with contextlib.suppress(Exception):
        _logger.log(level, message, *args, exc_info=exc_info)
