"""Fault injection on the span pipeline: exporters and span processors that raise or hang, and
the tracer provider shut down while the application runs.

Each test runs the shared workload (``_faults.workload``) under one fault and asserts: the
application's event log is identical to the uninstrumented baseline; scopewatch logs exactly the
expected ERROR records (one per failing part, however many events hit it); and the rest keeps
working (violation spans reach the healthy exporter, metrics and alert rules go on).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pytest
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

from scopewatch import semconv
from tests.support.fault_parts import FaultyProcessor, HangingExporter, RaisingExporter
from tests.support.faults import (
    LOGGER,
    VIOLATIONS,
    Hang,
    alert_firings,
    baseline,
    errors,
    run_workload,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.support.faults import Setup


def run(caplog: pytest.LogCaptureFixture, between: Callable[[], None] | None = None) -> list[Any]:
    with caplog.at_level(logging.WARNING, LOGGER):
        return run_workload(between)


def assert_healthy_parts_work(setup: Setup, spans: bool = True) -> None:
    """Violations counted, alert rules fired, violation spans exported (if spans still flow)."""
    assert setup.total(semconv.METRIC_VIOLATIONS) == VIOLATIONS
    assert setup.total(semconv.METRIC_LOCK_CONTENTIONS) > 0
    if spans:
        assert len(setup.violation_spans()) == VIOLATIONS
        assert alert_firings(setup) == VIOLATIONS


@pytest.mark.parametrize("spans", ["anomalies", "all"])
def test_raising_exporter_changes_nothing_and_others_still_export(
    setup_factory: Callable[..., Setup], caplog: pytest.LogCaptureFixture, spans: str
) -> None:
    expected = baseline()
    exporter = RaisingExporter()
    setup = setup_factory(span_processors=(SimpleSpanProcessor(exporter),), spans=spans)
    assert run(caplog) == expected
    assert exporter.calls >= VIOLATIONS  # it was called, and failed, for every span
    # Nothing of scopewatch's failed: the SDK's SimpleSpanProcessor catches and logs the
    # exporter's error itself (once per span, its own policy), so scopewatch logs nothing.
    assert errors(caplog) == []
    assert_healthy_parts_work(setup)


def test_hanging_exporter_behind_a_batch_processor_does_not_hold_the_app(
    setup_factory: Callable[..., Setup], caplog: pytest.LogCaptureFixture
) -> None:
    expected = baseline()
    hang = Hang()
    batch = BatchSpanProcessor(
        HangingExporter(hang), schedule_delay_millis=1, max_queue_size=8, max_export_batch_size=4
    )
    setup = setup_factory(span_processors=(batch,), spans="all")
    try:
        assert run(caplog) == expected
        hang.entered.wait(5)
        assert hang.holding  # the app finished while the exporter was still stuck
    finally:
        hang.release()
    assert errors(caplog) == []
    assert_healthy_parts_work(setup)


@pytest.mark.parametrize("spans", ["anomalies", "all"])
def test_span_processor_raising_on_end_is_logged_once_and_the_rest_works(
    setup_factory: Callable[..., Setup], caplog: pytest.LogCaptureFixture, spans: str
) -> None:
    expected = baseline()
    faulty = FaultyProcessor(on_end=True)
    setup = setup_factory(span_processors=(faulty,), spans=spans)
    assert run(caplog) == expected
    assert faulty.ends >= VIOLATIONS
    (error,) = errors(caplog)
    assert "span processor" in error and "on_end" in error, error
    assert_healthy_parts_work(setup)


@pytest.mark.parametrize("spans", ["anomalies", "all"])
def test_span_processor_raising_on_start_is_logged_once_and_metrics_go_on(
    setup_factory: Callable[..., Setup], caplog: pytest.LogCaptureFixture, spans: str
) -> None:
    expected = baseline()
    faulty = FaultyProcessor(on_start=True)
    setup = setup_factory(span_processors=(faulty,), spans=spans)
    assert run(caplog) == expected
    assert faulty.starts >= VIOLATIONS
    (error,) = errors(caplog)
    assert "span processor" in error and "on_start" in error, error
    # No span can start, so none is exported; every violation is still detected and counted.
    assert_healthy_parts_work(setup, spans=False)


def test_span_processor_hanging_on_end_delays_but_does_not_change_the_app(
    setup_factory: Callable[..., Setup], caplog: pytest.LogCaptureFixture
) -> None:
    """A synchronous processor blocks the thread that ends the span: the SDK's contract. The
    app waits (here up to 0.2 s, three times) and its results stay the same."""
    expected = baseline()
    hang = Hang()
    faulty = FaultyProcessor(hang=hang)
    setup = setup_factory(span_processors=(faulty,), spans="all")
    hang.release_after(0.2)
    try:
        assert run(caplog) == expected
    finally:
        hang.release()
    assert hang.calls == 3
    assert errors(caplog) == []
    assert_healthy_parts_work(setup)


@pytest.mark.parametrize("spans", ["anomalies", "all"])
def test_tracer_provider_shut_down_while_the_app_runs(
    setup_factory: Callable[..., Setup], caplog: pytest.LogCaptureFixture, spans: str
) -> None:
    expected = baseline()
    setup = setup_factory(spans=spans)
    assert run(caplog, between=setup.tracer_provider.shutdown) == expected
    assert errors(caplog) == []
    # scopewatch starts no span on the shut-down provider: each would make its processor warn
    # "already shutdown". Only spans started before the shutdown and ended after it do
    # (in "all" mode, the main task's).
    late = [r for r in caplog.records if r.name.startswith("opentelemetry.sdk")]
    assert len(late) == (1 if spans == "all" else 0), [r.getMessage() for r in late]
    # Spans stop with the provider (the first half's were exported); metrics go on.
    assert setup.total(semconv.METRIC_VIOLATIONS) == VIOLATIONS
    assert len(setup.violation_spans()) == VIOLATIONS // 2
    assert alert_firings(setup) == VIOLATIONS // 2
