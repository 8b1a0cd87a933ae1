"""The patch layer: one module per patched API, each with ``install(runtime)`` and ``uninstall()``.

Wrappers here only collect facts and hand them to ``scopewatch._core`` / ``scopewatch.telemetry``.
Every module patches through its own ``_patching.Patches``, one holder in the process-wide
``_patching.REGISTRY``, and its ``uninstall()`` restores that holder.
"""

from __future__ import annotations

FEATURE_MODULES: dict[str, tuple[str, ...]] = {
    "scopes": (
        "scopewatch.instrumentation.anyio_scopes",
        "scopewatch.instrumentation.asyncio_scopes",
        "scopewatch.instrumentation.trio_scopes",
        "scopewatch.instrumentation.loop_hooks",
    ),
    "tasks": (
        "scopewatch.instrumentation.tasks",
        "scopewatch.instrumentation._task_loops",
        "scopewatch.instrumentation.trio_tasks",
    ),
    "locks": (
        "scopewatch.instrumentation.asyncio_locks",
        "scopewatch.instrumentation.anyio_locks",
        "scopewatch.instrumentation.trio_locks",
    ),
    "sessions": (
        "scopewatch.instrumentation.mcp_sessions",
        "scopewatch.instrumentation.claude_sessions",
    ),
}
"""Feature name (``OTEL_PYTHON_SCOPEWATCH_INSTRUMENT``) -> modules installed for it, in order."""
