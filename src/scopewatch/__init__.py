"""scopewatch: OpenTelemetry spans for async cancel scopes and tasks, with explained misuse.

Load it with ``opentelemetry-instrument python app.py`` (entry point ``scopewatch``), or by hand::

    from scopewatch import ScopeWatchInstrumentor

    ScopeWatchInstrumentor().instrument(spans="anomalies")

Public helpers::

    scopewatch.name(lock, "db-pool")                 # name a lock in the lock metrics
    async with scopewatch.track_session("my.Client"):  # a session span and session metrics
        ...
    owned = await scopewatch.hold_in_task(client)     # remedies: see scopewatch.remedies
    scopewatch.add_rule("slow: span == anyio.* and duration > 5 -> log")

Every ``OTEL_PYTHON_SCOPEWATCH_*`` setting is documented in ``scopewatch.environment_variables``
and the README. Names are imported on first use, so ``import scopewatch`` (done by the inactive
pytest plugin at every pytest start) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from scopewatch.version import __version__ as __version__

if TYPE_CHECKING:
    from scopewatch.alerts import Condition as Condition
    from scopewatch.alerts import Rule as Rule
    from scopewatch.alerts import RuleError as RuleError
    from scopewatch.alerts import active_rules as active_rules
    from scopewatch.alerts import add_rule as add_rule
    from scopewatch.alerts import remove_rule as remove_rule
    from scopewatch.instrumentor import ScopeWatchInstrumentor as ScopeWatchInstrumentor
    from scopewatch.naming import name as name
    from scopewatch.remedies import AnyioOwnedContext as AnyioOwnedContext
    from scopewatch.remedies import AnyioOwnedGenerator as AnyioOwnedGenerator
    from scopewatch.remedies import OwnedContext as OwnedContext
    from scopewatch.remedies import OwnedGenerator as OwnedGenerator
    from scopewatch.remedies import SafeAsyncIterator as SafeAsyncIterator
    from scopewatch.remedies import anyio_hold_in_task as anyio_hold_in_task
    from scopewatch.remedies import hold_in_task as hold_in_task
    from scopewatch.remedies import safe_aiter as safe_aiter
    from scopewatch.sessions import track_session as track_session

_LAZY: dict[str, str] = {
    "ScopeWatchInstrumentor": "scopewatch.instrumentor",
    "name": "scopewatch.naming",
    "track_session": "scopewatch.sessions",
    "Condition": "scopewatch.alerts",
    "Rule": "scopewatch.alerts",
    "RuleError": "scopewatch.alerts",
    "active_rules": "scopewatch.alerts",
    "add_rule": "scopewatch.alerts",
    "remove_rule": "scopewatch.alerts",
    "AnyioOwnedContext": "scopewatch.remedies",
    "AnyioOwnedGenerator": "scopewatch.remedies",
    "OwnedContext": "scopewatch.remedies",
    "OwnedGenerator": "scopewatch.remedies",
    "SafeAsyncIterator": "scopewatch.remedies",
    "anyio_hold_in_task": "scopewatch.remedies",
    "hold_in_task": "scopewatch.remedies",
    "safe_aiter": "scopewatch.remedies",
}

__all__ = (
    "AnyioOwnedContext",
    "AnyioOwnedGenerator",
    "Condition",
    "OwnedContext",
    "OwnedGenerator",
    "Rule",
    "RuleError",
    "SafeAsyncIterator",
    "ScopeWatchInstrumentor",
    "__version__",
    "active_rules",
    "add_rule",
    "anyio_hold_in_task",
    "hold_in_task",
    "name",
    "remove_rule",
    "safe_aiter",
    "track_session",
)


def __getattr__(attribute: str) -> object:
    """Import a public name on first use (PEP 562)."""
    module = _LAZY.get(attribute)
    if module is None:
        raise AttributeError(f"module 'scopewatch' has no attribute {attribute!r}")
    value = getattr(importlib.import_module(module), attribute)
    globals()[attribute] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
