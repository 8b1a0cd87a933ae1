"""Fault injection on the metric pipeline and the tracking bound: metric exporters and readers
that raise or hang, the meter provider shut down while the app runs, and ``MAX_TRACKED``
exceeded by a burst of concurrent scopes and tasks.

Each test runs the shared workload and asserts: the app's results equal the uninstrumented
baseline, the exact scopewatch records logged, and that the rest keeps working.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import TYPE_CHECKING, Any

import pytest
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

from scopewatch import _runtime, semconv
from tests.support.fault_parts import FaultyMetricExporter, RaisingReader
from tests.support.faults import (
    BURST,
    HANG_SECONDS,
    LOGGER,
    ROUNDS,
    VIOLATIONS,
    Hang,
    alert_firings,
    baseline,
    errors,
    run_workload,
    warnings,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.support.faults import Setup


def run(caplog: pytest.LogCaptureFixture, between: Callable[[], None] | None = None) -> list[Any]:
    with caplog.at_level(logging.WARNING, LOGGER):
        return run_workload(between)


def assert_everything_recorded(setup: Setup) -> None:
    assert setup.total(semconv.METRIC_VIOLATIONS) == VIOLATIONS
    assert len(setup.violation_spans()) == VIOLATIONS
    assert alert_firings(setup) == VIOLATIONS
    assert setup.total(semconv.METRIC_TASKS) >= ROUNDS * BURST
    # healthy scopes are counted, not measured (DESIGN section 3, 0.3)
    assert setup.total(semconv.METRIC_SCOPES) >= ROUNDS * BURST


def test_raising_metric_exporter_changes_nothing(
    setup_factory: Callable[..., Setup], caplog: pytest.LogCaptureFixture
) -> None:
    expected = baseline()
    exporter = FaultyMetricExporter()
    periodic = PeriodicExportingMetricReader(exporter, export_interval_millis=20)
    setup = setup_factory(metric_readers=(periodic,))
    assert exporter.called.wait(HANG_SECONDS)
    assert run(caplog) == expected
    # The reader's thread catches and logs its exporter's error (the SDK's policy, not ours).
    assert errors(caplog) == []
    assert_everything_recorded(setup)


def test_hanging_metric_exporter_does_not_hold_the_app(
    setup_factory: Callable[..., Setup], caplog: pytest.LogCaptureFixture
) -> None:
    expected = baseline()
    hang = Hang()
    periodic = PeriodicExportingMetricReader(FaultyMetricExporter(hang), export_interval_millis=20)
    setup = setup_factory(metric_readers=(periodic,))
    try:
        assert hang.entered.wait(HANG_SECONDS)  # the periodic export is stuck from now on
        assert run(caplog) == expected
        assert hang.holding  # the app finished while the export was still stuck
        assert_everything_recorded(setup)  # the healthy reader collects meanwhile
    finally:
        hang.release()
    assert errors(caplog) == []


def test_raising_metric_reader_changes_nothing_and_loses_no_measurement(
    setup_factory: Callable[..., Setup], caplog: pytest.LogCaptureFixture
) -> None:
    """The faulty reader collects between the rounds: its collection replays scopewatch's
    deferred measurements into the SDK, then fails; the healthy reader still gets all."""
    expected = baseline()
    faulty = RaisingReader()
    setup = setup_factory(metric_readers=(faulty,))

    def scrape_in_a_thread() -> None:
        scraper = threading.Thread(target=faulty.scrape)
        scraper.start()
        scraper.join()

    assert run(caplog, between=scrape_in_a_thread) == expected
    faulty.scrape()
    assert faulty.failures == 2
    assert errors(caplog) == []
    assert_everything_recorded(setup)


def test_meter_provider_shut_down_while_the_app_runs(
    setup_factory: Callable[..., Setup], caplog: pytest.LogCaptureFixture
) -> None:
    expected = baseline()
    setup = setup_factory()
    assert run(caplog, between=setup.meter_provider.shutdown) == expected
    assert errors(caplog) == []
    # Metrics end with the provider; spans and alert rules go on.
    assert len(setup.violation_spans()) == VIOLATIONS
    assert alert_firings_from_spans(setup) == VIOLATIONS


def alert_firings_from_spans(setup: Setup) -> int:
    """The cross-task rule matches every violation span (the alerts metric is gone)."""
    return sum(
        1
        for span in setup.violation_spans()
        if (span.attributes or {}).get(semconv.VIOLATION_KIND) == semconv.KIND_CROSS_TASK_EXIT
    )


def test_max_tracked_exceeded_counts_warns_once_and_keeps_reporting(
    setup_factory: Callable[..., Setup], caplog: pytest.LogCaptureFixture
) -> None:
    expected = baseline()
    bound = 8
    setup = setup_factory(max_tracked=bound)
    runtime = _runtime.current
    assert runtime is not None
    scopes, tasks = runtime.scopes, runtime.tasks
    assert run(caplog) == expected
    assert errors(caplog) == []
    bound_warnings = [w for w in warnings(caplog) if "OTEL_PYTHON_SCOPEWATCH_MAX_TRACKED" in w]
    assert len(bound_warnings) == 2, bound_warnings
    for kind, warning in zip(("scope", "task"), sorted(bound_warnings)):
        assert f"{bound} {kind}s are tracked at once" in warning
        assert f"scopewatch.untracked.kind={kind}" in warning
    assert scopes.untracked >= ROUNDS * (BURST - bound)
    assert tasks.untracked >= ROUNDS * (BURST - bound)
    assert setup.metric(semconv.METRIC_UNTRACKED) == {
        ((semconv.UNTRACKED_KIND, "scope"),): scopes.untracked,
        ((semconv.UNTRACKED_KIND, "task"),): tasks.untracked,
    }
    # Violations of scopes tracked before the bound was hit are still reported, including the
    # one exited (by an untracked task) while the burst held the bound.
    assert setup.total(semconv.METRIC_VIOLATIONS) == VIOLATIONS
    assert len(setup.violation_spans()) == VIOLATIONS
    if sys.version_info >= (3, 11):
        during_burst = [
            span
            for span in setup.violation_spans()
            if (span.attributes or {}).get(semconv.EXIT_TASK) == "burst-leaver"
        ]
        assert len(during_burst) == ROUNDS
