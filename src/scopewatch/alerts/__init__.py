"""Span-based alert rules: match finished spans, then log or open a debugger at the violation.

Rules come from ``OTEL_PYTHON_SCOPEWATCH_RULES_FILE`` (YAML/JSON), ``OTEL_PYTHON_SCOPEWATCH_RULES``
(inline) and this Python API; a built-in ``default`` rule logs every violation once per
cooldown (``OTEL_PYTHON_SCOPEWATCH_DEFAULT_RULE=false`` turns it off)::

    from scopewatch.alerts import Rule, add_rule

    add_rule("slow-timeouts: span == asyncio.timeout and duration > 5 over 3/60 -> log")
    add_rule(Rule(name="cross-task", attributes={"scopewatch.violation.kind": "cross_task_exit"},
                  actions=("debugpy", "log")))

Rules are evaluated by a ``SpanProcessor`` added to the SDK ``TracerProvider`` that
``instrument()`` used; rules added through the API survive ``uninstrument()``.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from scopewatch.alerts.inline import parse_rules
from scopewatch.alerts.rules import (
    DEFAULT_COOLDOWN,
    DEFAULT_RULE_NAME,
    Condition,
    Rule,
    RuleError,
    rule_from_mapping,
)

if TYPE_CHECKING:
    from scopewatch._runtime import Runtime
    from scopewatch.alerts.processor import AlertProcessor

__all__ = (
    "DEFAULT_COOLDOWN",
    "Condition",
    "Rule",
    "RuleError",
    "active_rules",
    "add_rule",
    "install",
    "remove_rule",
    "uninstall",
)

_logger = logging.getLogger("scopewatch")
_lock = threading.Lock()
_api_rules: dict[str, Rule] = {}
_configured: list[Rule] = []
_processor: AlertProcessor | None = None
_by_provider: weakref.WeakKeyDictionary[object, AlertProcessor] = weakref.WeakKeyDictionary()
"""One processor per tracer provider: the SDK cannot remove one, so re-instrumenting reuses it."""


def _effective() -> list[Rule]:
    merged = {rule.name: rule for rule in _configured}
    merged.update(_api_rules)
    return list(merged.values())


def _apply() -> None:
    if _processor is not None:
        _processor.set_rules(_effective())


def add_rule(rule: Rule | str | Mapping[str, object]) -> list[Rule]:
    """Add rules, or replace those with the same names (configured ones included).

    Args:
        rule: a :class:`Rule`, inline text (one or more rules separated by ``;``) or a mapping
            in the rules-file form.

    Returns:
        The rules added.

    Raises:
        RuleError: the rule is malformed or named ``default``; nothing was added.
    """
    if isinstance(rule, Rule):
        new = [rule]
    elif isinstance(rule, str):
        new = parse_rules(rule, "scopewatch.alerts.add_rule()")
    elif isinstance(rule, Mapping):
        new = [rule_from_mapping(rule)]
    else:
        raise RuleError(f"expected a Rule, inline text or a mapping, got {type(rule).__name__}")
    for item in new:
        if item.name == DEFAULT_RULE_NAME:
            raise RuleError("the name is reserved for the built-in rule", rule=item.name)
    with _lock:
        for item in new:
            _api_rules[item.name] = item
        _apply()
    return new


def remove_rule(name: str) -> bool:
    """Remove a rule added with :func:`add_rule`; whether there was one."""
    with _lock:
        found = _api_rules.pop(name, None) is not None
        if found:
            _apply()
    return found


def active_rules() -> tuple[Rule, ...]:
    """The rules in effect (configured and API rules while instrumenting, else API rules)."""
    with _lock:
        return tuple(_effective() if _processor is not None else _api_rules.values())


def install(runtime: Runtime) -> None:
    """Load the configured rules and add the rule processor to the SDK tracer provider."""
    global _processor
    provider = runtime.tracer_provider
    try:
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        TracerProvider = None  # type: ignore[assignment,misc]
    if TracerProvider is None or not isinstance(provider, TracerProvider):
        _logger.debug(
            "scopewatch: alert rules are off: the tracer provider %s is not an OpenTelemetry "
            "SDK TracerProvider, so no span processor can be added",
            type(provider).__name__,
        )
        return
    from scopewatch.alerts.processor import AlertProcessor
    from scopewatch.alerts.sources import configured_rules

    configured, errors = configured_rules(runtime.settings)
    for error in errors:
        _logger.warning("scopewatch: %s", error)
    with _lock:
        if _processor is not None:  # never two live processors
            _processor.deactivate()
        _configured[:] = configured
        processor = _by_provider.get(provider)
        if processor is not None:  # an earlier instrument() on this provider: reuse its processor
            processor.reactivate(runtime, _effective())
            _processor = processor
            return
        processor = AlertProcessor(runtime, _effective())
        _by_provider[provider] = processor
        _processor = processor
    _add_first(provider, processor)


def _add_first(provider: Any, processor: AlertProcessor) -> None:
    """Add ``processor`` to ``provider`` ahead of the processors already there.

    The SDK calls span processors in order and stops at the first whose ``on_end`` raises: a
    broken processor of the application's must not keep rules from seeing spans. Reordering
    reads the SDK's multi-processor (no public API for it); any other shape keeps the order.
    """
    provider.add_span_processor(processor)
    multi = getattr(provider, "_active_span_processor", None)
    lock = getattr(multi, "_lock", None)
    if lock is None or type(getattr(multi, "_span_processors", None)) is not tuple:
        return
    with lock:
        current = multi._span_processors  # type: ignore[union-attr]
        if current and current[-1] is processor:
            multi._span_processors = (processor, *current[:-1])  # type: ignore[union-attr]


def uninstall() -> None:
    """Make the rule processor inert (the SDK cannot remove a span processor)."""
    global _processor
    with _lock:
        if _processor is not None:
            _processor.deactivate()
        _processor = None
        _configured.clear()
