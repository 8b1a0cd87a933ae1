"""Span-based alert rules (placeholder until the alerts feature lands)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scopewatch._runtime import Runtime


def install(runtime: Runtime) -> None:
    """Add the rule-evaluating span processor to the runtime's tracer provider."""
    del runtime


def uninstall() -> None:
    """Remove the rule processor."""
