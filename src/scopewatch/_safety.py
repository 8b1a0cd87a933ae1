"""Our code never breaks the application.

A failure in scopewatch's own code is caught (``Exception`` only, never ``BaseException``, so
``CancelledError`` and ``KeyboardInterrupt`` pass untouched), logged once with its traceback,
and the part that failed is switched off for the rest of the process. Under scopewatch's own
test suite (``SCOPEWATCH_STRICT=1``) the error is re-raised instead, so bugs cannot hide.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import TYPE_CHECKING, ParamSpec, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

_logger = logging.getLogger("scopewatch")

P = ParamSpec("P")
R = TypeVar("R")

STRICT = os.environ.get("SCOPEWATCH_STRICT", "") == "1"


class Part:
    """A piece of instrumentation that can be switched off when it misbehaves."""

    __slots__ = ("enabled", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.enabled = True

    def fail(self, error: Exception) -> None:
        """Disable this part and log the error once."""
        if not self.enabled:
            return
        self.enabled = False
        _logger.error(
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


def warn_once(key: str, message: str, *args: object) -> None:
    """Log a warning the first time ``key`` is seen."""
    if key in _warned:
        return
    _warned.add(key)
    _logger.warning(message, *args)
