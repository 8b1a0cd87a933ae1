"""The ``OTEL_PYTHON_SCOPEWATCH_*`` environment variables.

``opentelemetry-instrument`` reads this module through the ``opentelemetry_environment_variables``
entry point and turns each name into a ``--scopewatch_...`` command-line flag.
"""

from __future__ import annotations

from typing import Final

OTEL_PYTHON_SCOPEWATCH_INSTRUMENT: Final = "OTEL_PYTHON_SCOPEWATCH_INSTRUMENT"
"""Comma-separated features to turn on: ``scopes``, ``tasks``, ``locks``, ``sessions`` (all)."""

OTEL_PYTHON_SCOPEWATCH_SPANS: Final = "OTEL_PYTHON_SCOPEWATCH_SPANS"
"""Which scopes and tasks become spans: ``all``, ``anomalies`` (default) or ``none``."""

OTEL_PYTHON_SCOPEWATCH_SLOW_THRESHOLD: Final = "OTEL_PYTHON_SCOPEWATCH_SLOW_THRESHOLD"
"""Seconds; a scope or task lasting longer is anomalous (default ``1.0``)."""

OTEL_PYTHON_SCOPEWATCH_STACK_DEPTH: Final = "OTEL_PYTHON_SCOPEWATCH_STACK_DEPTH"
"""Frames kept where a scope is entered (default ``8``; ``0`` disables stack capture)."""

OTEL_PYTHON_SCOPEWATCH_EXCEPTION_NOTES: Final = "OTEL_PYTHON_SCOPEWATCH_EXCEPTION_NOTES"
"""Add a PEP 678 note explaining the violation to the exception the user sees (default ``true``)."""

OTEL_PYTHON_SCOPEWATCH_EXCLUDE: Final = "OTEL_PYTHON_SCOPEWATCH_EXCLUDE"
"""Comma-separated globs on coroutine qualnames and ``code.file.path``; matches are skipped."""

OTEL_PYTHON_SCOPEWATCH_RULES: Final = "OTEL_PYTHON_SCOPEWATCH_RULES"
"""Alert rules in the inline form, separated by ``;``."""

OTEL_PYTHON_SCOPEWATCH_RULES_FILE: Final = "OTEL_PYTHON_SCOPEWATCH_RULES_FILE"
"""Path to a YAML or JSON alert rules file."""

OTEL_PYTHON_SCOPEWATCH_DEFAULT_RULE: Final = "OTEL_PYTHON_SCOPEWATCH_DEFAULT_RULE"
"""Log every violation once per cooldown with its explanation (default ``true``)."""

OTEL_PYTHON_SCOPEWATCH_DEBUGPY: Final = "OTEL_PYTHON_SCOPEWATCH_DEBUGPY"
"""Allow the ``debugpy`` alert action at all (default ``false``)."""

OTEL_PYTHON_SCOPEWATCH_DEBUGPY_HOST: Final = "OTEL_PYTHON_SCOPEWATCH_DEBUGPY_HOST"
"""Address the debugpy listener binds (default ``127.0.0.1``)."""

OTEL_PYTHON_SCOPEWATCH_DEBUGPY_PORT: Final = "OTEL_PYTHON_SCOPEWATCH_DEBUGPY_PORT"
"""Port the debugpy listener binds (default ``5678``)."""

OTEL_PYTHON_SCOPEWATCH_DEBUGPY_ALLOW_REMOTE: Final = "OTEL_PYTHON_SCOPEWATCH_DEBUGPY_ALLOW_REMOTE"
"""Allow a non-loopback ``DEBUGPY_HOST`` (default ``false``: debugpy has no authentication)."""

OTEL_PYTHON_SCOPEWATCH_DEBUGPY_WAIT: Final = "OTEL_PYTHON_SCOPEWATCH_DEBUGPY_WAIT"
"""Seconds the violating thread may wait for a debugger client before breaking (default ``0``)."""

OTEL_PYTHON_SCOPEWATCH_MAX_TRACKED: Final = "OTEL_PYTHON_SCOPEWATCH_MAX_TRACKED"
"""Bound on concurrently tracked scopes and tasks (default ``100000``); beyond it new ones are
counted in ``scopewatch.untracked`` but not tracked, and one warning says so."""

OTEL_PYTHON_SCOPEWATCH_DURATIONS: Final = "OTEL_PYTHON_SCOPEWATCH_DURATIONS"
"""Which ended scopes and tasks are measured in the duration histograms: ``anomalies`` (default:
the anomalous ones only, no SDK call for a scope or task that ends normally) or ``all``."""

OTEL_PYTHON_SCOPEWATCH_LOG_LIMIT: Final = "OTEL_PYTHON_SCOPEWATCH_LOG_LIMIT"
"""Log lines an alert rule's ``log`` action may write per 60 s (default ``10``; ``0``: no limit)."""

OTEL_PYTHON_SCOPEWATCH_CONFIG_FILE: Final = "OTEL_PYTHON_SCOPEWATCH_CONFIG_FILE"
"""A YAML or JSON file whose lower-case keys are the setting names above."""
