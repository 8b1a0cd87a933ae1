"""The ``log`` action's rate limit: ``LOG_LIMIT`` lines per rule per 60 s, then a summary."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pytest

from scopewatch import semconv
from scopewatch.alerts.ratelimit import WINDOW_SECONDS, LogLimiter
from scopewatch.config import Settings, load_settings

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import Telemetry

LOGGER = "scopewatch"


class Clock:
    """A clock the test moves by hand (the limiter is pure bookkeeping)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def end_spans(telemetry: Telemetry, count: int, attributes: dict[str, Any]) -> None:
    tracer = telemetry.tracer_provider.get_tracer("app")
    for _ in range(count):
        with tracer.start_as_current_span("work", attributes=attributes):
            pass


def rule_lines(caplog: pytest.LogCaptureFixture, rule: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == LOGGER and f"alert rule {rule!r} fired" in r.getMessage()
    ]


def suppressed_counts(caplog: pytest.LogCaptureFixture, rule: str) -> list[int]:
    prefix = f"scopewatch: alert rule {rule!r}: suppressed "
    return [
        int(r.getMessage()[len(prefix) :].split()[0])
        for r in caplog.records
        if r.name == LOGGER and r.getMessage().startswith(prefix)
    ]


def test_limiter_admits_limit_lines_per_window_then_reports_the_rest() -> None:
    clock = Clock()
    limiter = LogLimiter(3, clock)
    assert [limiter.admit("a") for _ in range(5)] == [0, 0, 0, None, None]
    assert limiter.admit("b") == 0  # per key
    clock.now += WINDOW_SECONDS - 0.001
    assert limiter.admit("a") is None
    clock.now += 0.001  # a new window: the first line reports the three held back
    assert limiter.admit("a") == 3
    assert limiter.admit("a") == 0
    assert limiter.drain() == []
    limiter.admit("a")
    assert limiter.admit("a") is None
    assert limiter.drain() == [("a", 1)]
    assert limiter.drain() == []


def test_limit_zero_means_no_limit() -> None:
    limiter = LogLimiter(0, Clock())
    assert {limiter.admit("a") for _ in range(1000)} == {0}


def test_a_rule_firing_on_every_match_logs_limit_lines_and_one_summary(
    instrument: Callable[..., Telemetry], caplog: pytest.LogCaptureFixture
) -> None:
    telemetry = instrument(rules="noisy: app.kind == x cooldown 0 -> log", log_limit=4)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        end_spans(telemetry, 50, {"app.kind": "x"})
        assert len(rule_lines(caplog, "noisy")) == 4
        assert suppressed_counts(caplog, "noisy") == []
        telemetry.uninstrument()  # the rules are switched off: what was held back is reported
    assert suppressed_counts(caplog, "noisy") == [46]
    (point,) = [
        p
        for p in telemetry.points(semconv.METRIC_ALERTS)
        if p.attributes[semconv.ALERT_RULE] == "noisy"
    ]
    assert point.value == 50  # every firing is counted, logged or not


def test_log_limit_setting_is_validated(caplog: pytest.LogCaptureFixture) -> None:
    variable = "OTEL_PYTHON_SCOPEWATCH_LOG_LIMIT"
    assert load_settings(environ={variable: "25"}).log_limit == 25
    assert load_settings(environ={variable: "0"}).log_limit == 0
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        settings = load_settings(environ={variable: "lots"})
    assert settings.log_limit == Settings().log_limit == 10
    (record,) = caplog.records
    message = record.getMessage()
    assert f"{variable}='lots'" in message and "an integer >= 0" in message
