"""The alert span processor on a real SDK: rules from settings and the API, actions, metrics."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from scopewatch import _safety, alerts, semconv
from scopewatch.alerts import debugger, processor

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from conftest import Telemetry

LOGGER = "scopewatch"


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """warn_once keys are per process; each test starts with none seen."""
    monkeypatch.setattr(_safety, "_warned", set())
    yield


def alert_points(telemetry: Telemetry) -> dict[tuple[str, str], int]:
    return {
        (p.attributes[semconv.ALERT_RULE], p.attributes[semconv.ALERT_ACTION]): p.value
        for p in telemetry.points(semconv.METRIC_ALERTS)
    }


def end_span(telemetry: Telemetry, name: str, attributes: dict[str, Any]) -> None:
    tracer = telemetry.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span(name, attributes=attributes):
        pass


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelname == "WARNING"]


async def _ticks() -> AsyncIterator[int]:
    with anyio.CancelScope():
        yield 1
        yield 2


async def cross_task_violation() -> None:
    """A real cross-task exit: a generator entered a scope in one task, is closed in another."""
    generator = _ticks()
    await asyncio.ensure_future(generator.__anext__())
    with pytest.raises(RuntimeError, match="different task"):
        await asyncio.ensure_future(generator.aclose())  # anyio refuses the exit; we report it


def test_inline_rule_fires_log_action_and_counts(
    instrument: Callable[..., Telemetry], caplog: pytest.LogCaptureFixture
) -> None:
    telemetry = instrument(rules="slow-job: span == job.* and queue glob 'q-*' -> log")
    with caplog.at_level(logging.WARNING, LOGGER):
        end_span(telemetry, "job.run", {"queue": "q-1"})
        end_span(telemetry, "job.run", {"queue": "other"})
        end_span(telemetry, "other", {"queue": "q-1"})
    (message,) = warnings(caplog)
    assert message.startswith("scopewatch: alert rule 'slow-job' fired on span 'job.run', lasted")
    assert alert_points(telemetry) == {("slow-job", "log"): 1}


def test_default_rule_explains_a_real_violation_once_per_place(
    instrument: Callable[..., Telemetry], caplog: pytest.LogCaptureFixture
) -> None:
    telemetry = instrument(instrument="scopes")

    async def main() -> None:
        await cross_task_violation()
        await cross_task_violation()  # same place: within the cooldown, not logged again

    with caplog.at_level(logging.WARNING, LOGGER):
        asyncio.run(main())
    assert len(telemetry.violation_spans(semconv.KIND_CROSS_TASK_EXIT)) == 2
    logged = [m for m in warnings(caplog) if "cross_task_exit" in m]
    assert len(logged) == 1
    (message,) = logged
    assert "entered in task" in message
    assert "exited in task" in message
    assert "inside async generator" in message
    assert __file__ in message
    assert "OTEL_PYTHON_SCOPEWATCH_DEFAULT_RULE=false turns this off" in message
    assert alert_points(telemetry) == {("default", "log"): 1}


def test_default_rule_can_be_turned_off(
    instrument: Callable[..., Telemetry], caplog: pytest.LogCaptureFixture
) -> None:
    telemetry = instrument(instrument="scopes", default_rule=False)
    with caplog.at_level(logging.WARNING, LOGGER):
        asyncio.run(cross_task_violation())
    assert telemetry.violation_spans(semconv.KIND_CROSS_TASK_EXIT)
    assert not [m for m in warnings(caplog) if "cross_task_exit" in m]
    assert alert_points(telemetry) == {}


def test_rules_file_and_bad_rules_are_reported_without_failing(
    instrument: Callable[..., Telemetry], caplog: pytest.LogCaptureFixture, tmp_path: Any
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "rules:\n"
        "  - name: from-file\n"
        "    match: {span: 'job', attributes: {size: {ge: 10}}}\n"
        "    actions: [log]\n"
        "  - name: broken\n"
        "    match: {attributes: {size: {between: [1, 2]}}}\n"
    )
    with caplog.at_level(logging.WARNING, LOGGER):
        telemetry = instrument(rules_file=str(path), rules="inline: size > 100 -> log; oops: ->")
        end_span(telemetry, "job", {"size": 500})
    messages = warnings(caplog)
    assert any(
        "rule 'broken' at match.attributes.size: unknown operator 'between'" in m for m in messages
    )
    assert any("rule 'oops' at character" in m and "expected a condition" in m for m in messages)
    assert alert_points(telemetry) == {("from-file", "log"): 1, ("inline", "log"): 1}


def test_api_rules_apply_immediately_and_survive_reinstrumentation(
    instrument: Callable[..., Telemetry],
) -> None:
    telemetry = instrument(default_rule=False)
    try:
        alerts.add_rule("api: marker exists cooldown 0 -> log")
        end_span(telemetry, "x", {"marker": 1})
        assert alert_points(telemetry) == {("api", "log"): 1}
        assert [rule.name for rule in alerts.active_rules()] == ["api"]
        telemetry.uninstrument()
        again = instrument(default_rule=False)
        end_span(again, "x", {"marker": 1})
        assert alert_points(again) == {("api", "log"): 1}
    finally:
        alerts.remove_rule("api")


def test_uninstall_makes_the_processor_inert(instrument: Callable[..., Telemetry]) -> None:
    telemetry = instrument(rules="r: marker exists cooldown 0 -> log")
    end_span(telemetry, "x", {"marker": 1})
    telemetry.uninstrument()
    end_span(telemetry, "x", {"marker": 1})  # the provider still has the processor
    assert alert_points(telemetry) == {("r", "log"): 1}
    assert alerts.active_rules() == ()


def test_non_sdk_provider_is_skipped_with_a_debug_line(
    instrument: Callable[..., Telemetry], caplog: pytest.LogCaptureFixture
) -> None:
    from scopewatch import ScopeWatchInstrumentor

    instrumentor = ScopeWatchInstrumentor()
    with caplog.at_level(logging.DEBUG, LOGGER):
        instrumentor.instrument(tracer_provider=trace.NoOpTracerProvider(), instrument="scopes")
    try:
        debug = [r.getMessage() for r in caplog.records if r.levelname == "DEBUG"]
        assert any(
            "NoOpTracerProvider is not an OpenTelemetry SDK TracerProvider" in m for m in debug
        )
        assert alerts._processor is None
    finally:
        instrumentor.uninstrument()


def test_a_failing_action_is_disabled_and_logged_once(
    instrument: Callable[..., Telemetry],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_safety, "STRICT", False)  # the production behaviour, not the test one
    calls: list[str] = []

    def broken(rule: Any, span: Any, count: int) -> None:
        calls.append(rule.name)
        raise LookupError("action bug")

    monkeypatch.setattr(processor, "log_action", broken)
    telemetry = instrument(rules="r: marker exists cooldown 0 -> log", default_rule=False)
    with caplog.at_level(logging.ERROR, LOGGER):
        for _ in range(3):
            end_span(telemetry, "x", {"marker": 1})
    assert calls == ["r"]
    (record,) = [r for r in caplog.records if "alert action" in r.getMessage()]
    assert "alert action 'log' of rule 'r' failed and is disabled" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[0] is LookupError


def test_a_failing_rule_is_disabled_and_logged_once_while_others_work(
    instrument: Callable[..., Telemetry],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_safety, "STRICT", False)  # the production behaviour, not the test one

    class BrokenDurations(processor._SdkSpanFacts):
        def duration_ns(self, span: Any) -> int:
            raise OverflowError("clock bug")

    monkeypatch.setattr(processor, "FACTS", BrokenDurations())
    telemetry = instrument(
        rules=(
            "timed: marker exists and duration > 1 -> log; plain: marker exists cooldown 0 -> log"
        ),
        default_rule=False,
    )
    with caplog.at_level(logging.ERROR, LOGGER):
        for _ in range(3):
            end_span(telemetry, "x", {"marker": 1})
    (record,) = [r for r in caplog.records if "alert rule" in r.getMessage()]
    assert "alert rule 'timed' failed and is disabled" in record.getMessage()
    assert alert_points(telemetry) == {("plain", "log"): 3}


def test_debugpy_action_without_the_setting_says_why_once(
    instrument: Callable[..., Telemetry], caplog: pytest.LogCaptureFixture
) -> None:
    telemetry = instrument(rules="dbg: marker exists cooldown 0 -> debugpy", default_rule=False)
    with caplog.at_level(logging.WARNING, LOGGER):
        end_span(telemetry, "x", {"marker": 1})
        end_span(telemetry, "x", {"marker": 1})
    (message,) = warnings(caplog)
    assert (
        "rule 'dbg' has the debugpy action but OTEL_PYTHON_SCOPEWATCH_DEBUGPY is not true"
        in message
    )
    assert not debugger.listener.started
    assert alert_points(telemetry) == {("dbg", "debugpy"): 2}


def test_debugpy_refuses_a_non_loopback_host(
    instrument: Callable[..., Telemetry], caplog: pytest.LogCaptureFixture
) -> None:
    telemetry = instrument(
        rules="dbg: marker exists -> debugpy",
        default_rule=False,
        debugpy=True,
        debugpy_host="0.0.0.0",
        debugpy_port=5999,
    )
    with caplog.at_level(logging.WARNING, LOGGER):
        end_span(telemetry, "x", {"marker": 1})
    (message,) = warnings(caplog)
    assert message.startswith("scopewatch: refusing to open a debugpy listener on 0.0.0.0:5999")
    assert "debugpy has no authentication" in message
    assert "OTEL_PYTHON_SCOPEWATCH_DEBUGPY_ALLOW_REMOTE=true" in message
    assert not debugger.listener.started  # nothing was bound, no adapter spawned


def test_status_rule_on_a_real_error_span(instrument: Callable[..., Telemetry]) -> None:
    telemetry = instrument(rules="errors: span == job and status == error cooldown 0 -> log")
    tracer = telemetry.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("job") as span:
        span.set_status(Status(StatusCode.ERROR))
    with tracer.start_as_current_span("job"):
        pass
    assert alert_points(telemetry) == {("errors", "log"): 1}


def test_spans_not_built_by_the_sdk_tracer_are_read_through_the_public_api(
    instrument: Callable[..., Telemetry],
) -> None:
    from opentelemetry.sdk.trace import ReadableSpan

    telemetry = instrument(rules="r: marker == 1 cooldown 0 -> log", default_rule=False)
    span = ReadableSpan(name="made-by-hand", attributes={"marker": 1}, start_time=1, end_time=2)
    assert processor.span_attributes(span) == {"marker": 1}
    alerts._processor.on_end(span)  # type: ignore[union-attr]
    assert alert_points(telemetry) == {("r", "log"): 1}
