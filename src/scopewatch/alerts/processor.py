"""The ``SpanProcessor`` that evaluates alert rules on every finished span, and the actions."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.trace import StatusCode

from scopewatch import _safety, semconv
from scopewatch.alerts import debugger, explain
from scopewatch.alerts.engine import Engine, SpanFacts
from scopewatch.alerts.ratelimit import LogLimiter
from scopewatch.alerts.rules import DEFAULT_RULE_NAME
from scopewatch.environment_variables import (
    OTEL_PYTHON_SCOPEWATCH_DEFAULT_RULE,
    OTEL_PYTHON_SCOPEWATCH_LOG_LIMIT,
)
from scopewatch.telemetry import _sdk_calls

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import Span

    from scopewatch._runtime import Runtime
    from scopewatch.alerts.engine import Firing
    from scopewatch.alerts.rules import Rule

_logger = logging.getLogger("scopewatch")

_ERROR = StatusCode.ERROR
_OK = StatusCode.OK


class _SdkSpanFacts(SpanFacts[ReadableSpan]):
    def duration_ns(self, span: ReadableSpan) -> int:
        start, end = span.start_time, span.end_time
        return 0 if start is None or end is None else end - start

    def status(self, span: ReadableSpan) -> str:
        code = span.status.status_code  # identity tests: hashing an Enum runs Python code
        return "error" if code is _ERROR else "ok" if code is _OK else "unset"


FACTS = _SdkSpanFacts()
_NO_ATTRIBUTES: dict[str, Any] = {}


def span_attributes(span: ReadableSpan) -> Mapping[str, Any]:
    """The finished span's attributes, as cheaply as possible.

    ``ReadableSpan.attributes`` wraps the SDK's ``BoundedAttributes`` in a new
    ``MappingProxyType`` whose every lookup goes through Python-level ``Mapping`` methods
    (several times the cost of a dict lookup). An ended span's attributes no
    longer change, so the plain dict inside is read directly when the SDK has one; any other
    shape falls back to the public property.
    """
    inner = getattr(getattr(span, "_attributes", None), "_dict", None)
    if type(inner) is dict:
        return inner
    return span.attributes or _NO_ATTRIBUTES


def log_action(rule: Rule, span: ReadableSpan, count: int) -> None:
    """The ``log`` action: one WARNING explaining the match."""
    text = explain.violation(span)
    if rule.name == DEFAULT_RULE_NAME:
        _logger.warning(
            "%s\n  (logged once per %g s for this violation and place; %s=false turns this off)",
            text or explain.summary(span),
            rule.cooldown,
            OTEL_PYTHON_SCOPEWATCH_DEFAULT_RULE,
        )
        return
    _logger.warning(
        "scopewatch: alert rule %r fired%s on span %s%s",
        rule.name,
        f" ({count} matches within {rule.window:g} s)" if rule.count > 1 else "",
        explain.summary(span),
        f"\n{text}" if text else "",
    )


def log_suppressed(rule: str, suppressed: int, limiter: LogLimiter) -> None:
    """The summary line of the ``log`` action's rate limit."""
    _logger.warning(
        "scopewatch: alert rule %r: suppressed %d similar log lines (at most %d per %g s per "
        "rule; %s sets the limit)",
        rule,
        suppressed,
        limiter.limit,
        limiter.window,
        OTEL_PYTHON_SCOPEWATCH_LOG_LIMIT,
    )


class AlertProcessor(SpanProcessor):
    """Evaluates the rules on every finished span, exported or not.

    The SDK cannot remove a span processor, so :meth:`deactivate` makes it inert instead.
    """

    def __init__(self, runtime: Runtime, rules: Sequence[Rule]) -> None:
        self.active = True
        self._runtime = runtime
        self._part = _safety.Part("alert rule evaluation")
        self._action_parts: dict[tuple[str, str], _safety.Part] = {}
        self._metric_attributes: dict[tuple[str, str], dict[str, str]] = {}
        self.log_limiter = LogLimiter(runtime.settings.log_limit, time.monotonic)
        """Caps the ``log`` action's lines per rule (``OTEL_PYTHON_SCOPEWATCH_LOG_LIMIT``)."""
        self.engine: Engine[ReadableSpan] = Engine(rules, FACTS, time.monotonic, self._rule_failed)

    def set_rules(self, rules: Sequence[Rule]) -> None:
        """Replace the rules; unchanged rules keep their threshold and cooldown state."""
        self.engine = Engine(rules, FACTS, time.monotonic, self._rule_failed, self.engine)

    def deactivate(self) -> None:
        """Evaluate nothing from now on (and report log lines still suppressed)."""
        self.active = False
        self._report_suppressed()

    def _report_suppressed(self) -> None:
        for rule, suppressed in self.log_limiter.drain():
            log_suppressed(rule, suppressed, self.log_limiter)

    def reactivate(self, runtime: Runtime, rules: Sequence[Rule]) -> None:
        """Serve a new ``instrument()`` on the same tracer provider (not added twice)."""
        self._runtime = runtime
        self._part = _safety.Part("alert rule evaluation")
        self.log_limiter = LogLimiter(runtime.settings.log_limit, time.monotonic)
        self.set_rules(rules)
        self.active = True

    @staticmethod
    def _rule_failed(rule: Rule, error: Exception) -> None:
        _safety.Part(f"alert rule {rule.name!r}").fail(error)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Nothing: rules look at finished spans only."""

    def on_end(self, span: ReadableSpan) -> None:
        """Evaluate the rules; run the actions of those that fire, in this thread."""
        if not self.active or not self._part.enabled:
            return
        # span_attributes(span), inlined: this runs for every span of the process
        attributes = getattr(getattr(span, "_attributes", None), "_dict", None)
        if type(attributes) is not dict:
            attributes = span.attributes or _NO_ATTRIBUTES
        try:
            fired = self.engine.evaluate(span, span.name, attributes)
        except Exception as error:
            self._part.fail(error)
            return
        for firing in fired:
            self._fire(firing, span)

    def _fire(self, firing: Firing, span: ReadableSpan) -> None:
        rule = firing.rule
        for action in rule.actions:
            key = (rule.name, action)
            part = self._action_parts.get(key)
            if part is None:
                part = self._action_parts[key] = _safety.Part(
                    f"alert action {action!r} of rule {rule.name!r}"
                )
            if not part.enabled:
                continue
            try:
                self._runtime.instruments.alerts.add(1, self._attributes(key))
                if action == semconv.ALERT_ACTION_DEBUGPY:
                    debugger.run(rule, span, self._runtime.settings)
                else:
                    self._log(rule, span, firing.count)
            except Exception as error:
                part.fail(error)

    def _log(self, rule: Rule, span: ReadableSpan, count: int) -> None:
        """The ``log`` action, within the rule's log-line budget."""
        suppressed = self.log_limiter.admit(rule.name)
        if suppressed is None:
            return
        if suppressed:
            log_suppressed(rule.name, suppressed, self.log_limiter)
        log_action(rule, span, count)

    def _attributes(self, key: tuple[str, str]) -> dict[str, Any]:
        attributes = self._metric_attributes.get(key)
        if attributes is None:
            attributes = {semconv.ALERT_RULE: key[0], semconv.ALERT_ACTION: key[1]}
            self._metric_attributes[key] = attributes
        return attributes

    def shutdown(self) -> None:
        """The provider shuts down: become inert, and start no more scopewatch spans on it."""
        if self.active:
            self._report_suppressed()
            _sdk_calls.provider_shut_down(self._runtime)
        self.active = False

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered."""
        del timeout_millis
        return True
