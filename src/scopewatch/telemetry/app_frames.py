"""``scopewatch.enter.app`` / ``scopewatch.exit.app``: the application's own frames on a span.

Built from frames already captured (at enter, and at a violating exit); nothing is captured
here. Set only when ``code.*`` would point into a library (DESIGN section 2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scopewatch import semconv
from scopewatch._core import frames

if TYPE_CHECKING:
    from scopewatch._core.records import ScopeRecord


def attributes(record: ScopeRecord) -> dict[str, str]:
    """The app-frame attributes of a scope span (empty when its frames are the app's)."""
    found: dict[str, str] = {}
    violation = record.violations[0] if record.violations else None
    entered = frames.app_location(record.frames or (violation.enter_frames if violation else ()))
    if entered:
        found[semconv.ENTER_APP] = entered
    if violation is not None:
        exited = frames.app_location(violation.exit_frames)
        if exited:
            found[semconv.EXIT_APP] = exited
    return found
