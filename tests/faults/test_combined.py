"""Every fault at once: a raising exporter, a span processor raising on end, a raising metric
exporter, a broken logging handler under the log action, ``import debugpy`` raising and a small
``MAX_TRACKED``. The app's results still equal the baseline, each failing part is logged exactly
once, and violations are still detected, counted and exported to the healthy exporter.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pytest
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from scopewatch import semconv
from tests.support.fault_parts import (
    BrokenHandler,
    FaultyMetricExporter,
    FaultyProcessor,
    RaisingExporter,
    fake_debugpy,
)
from tests.support.faults import (
    HANG_SECONDS,
    LOGGER,
    VIOLATIONS,
    baseline,
    errors,
    run_workload,
    warnings,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from scopewatch.alerts import debugger
    from tests.support.faults import Setup


def test_every_fault_at_once(
    setup_factory: Callable[..., Setup],
    caplog: pytest.LogCaptureFixture,
    root_handler: Callable[[logging.Handler], None],
    fresh_listener: debugger.Listener,
    tmp_path: Path,
) -> None:
    expected = baseline()
    fake_debugpy(tmp_path, "raise OSError('debugpy wheel for another platform')\n")
    metric_exporter = FaultyMetricExporter()
    setup = setup_factory(
        span_processors=(SimpleSpanProcessor(RaisingExporter()), FaultyProcessor(on_end=True)),
        metric_readers=(PeriodicExportingMetricReader(metric_exporter, export_interval_millis=20),),
        rules="dbg: scopewatch.violation.kind == cross_task_exit cooldown 0 -> debugpy, log",
        debugpy=True,
        max_tracked=8,
    )
    assert metric_exporter.called.wait(HANG_SECONDS)
    with caplog.at_level(logging.WARNING, LOGGER):
        root_handler(BrokenHandler())
        assert run_workload() == expected
        assert fresh_listener.ready.wait(HANG_SECONDS)
    assert sorted(errors(caplog)) == [
        "scopewatch: a span processor's on_end (run when scopewatch ended a span) raised "
        "InjectedFault; scopewatch carries on without it and the application is not affected "
        "(logged once: later failures are silent). This is not an error of scopewatch: see the "
        "traceback below.",
        "scopewatch: alert action 'log' of rule 'dbg' failed and is disabled for the rest of "
        "this process; the application is not affected. Please report this with the traceback "
        "below.",
    ]
    assert len([w for w in warnings(caplog) if "debugpy cannot be imported" in w]) == 1
    assert len([w for w in warnings(caplog) if "MAX_TRACKED" in w]) == 2
    assert setup.total(semconv.METRIC_VIOLATIONS) == VIOLATIONS
    assert len(setup.violation_spans()) == VIOLATIONS
    assert setup.total(semconv.METRIC_UNTRACKED) > 0
