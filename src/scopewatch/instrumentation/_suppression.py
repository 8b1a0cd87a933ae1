"""``instrumentation_enabled()``: OpenTelemetry's ``is_instrumentation_enabled()``, made cheap.

Every scope enter and task creation asks it (DESIGN rule 2: suppressed, straight through), so
it reads what ``opentelemetry.instrumentation.utils.is_instrumentation_enabled`` reads without
its call chain: the current context from the runtime context's ``ContextVar`` (any other
runtime context is asked through the API), an empty context at once, else its two keys.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
from opentelemetry.instrumentation import utils

from scopewatch import _current

if TYPE_CHECKING:
    from collections.abc import Callable

_PLAIN_KEY: str = getattr(utils, "_SUPPRESS_INSTRUMENTATION_KEY_PLAIN", "suppress_instrumentation")
"""The key ``suppress_instrumentation()`` also sets, for code that reads it by name."""
SUPPRESS_KEYS = (_SUPPRESS_INSTRUMENTATION_KEY, _PLAIN_KEY)
"""The context keys :func:`instrumentation_enabled` reads, for a hot path that inlines it."""


def _enabled_function() -> Callable[[], bool]:
    """``instrumentation_enabled()``, remembering its answer for the last context it read.

    A ``Context`` never changes, and one stays current for a whole request (every scope and
    task in it asks), so the answer for the same object is an identity test, not two key
    lookups. That one context is kept alive until another is asked about.
    """
    current_context = _current.context_reader()
    key, plain = _SUPPRESS_INSTRUMENTATION_KEY, _PLAIN_KEY
    last: tuple[object, bool] = (None, True)

    def instrumentation_enabled() -> bool:
        """False inside ``suppress_instrumentation()``, as ``is_instrumentation_enabled`` says."""
        nonlocal last
        current = current_context()
        if not current:
            return True
        seen = last
        if seen[0] is current:
            return seen[1]
        enabled = not (current.get(key) or current.get(plain))
        last = (current, enabled)
        return enabled

    return instrumentation_enabled


instrumentation_enabled = _enabled_function()
