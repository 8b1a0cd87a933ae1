"""pytest plugin loaded into a peer project's test run (``-p peer_plugin``) by ``peer_anyio.py``.

Both the plain and the instrumented run load it, so the only difference between them is
scopewatch. Driven by environment variables:

- ``SCOPEWATCH_PEER_RESULTS``: JSON file written at session end (see ``peer_outcomes.save``):
  outcome and backend per node id, plus spans and violations when instrumented.
- ``SCOPEWATCH_PEER_BACKENDS``: comma-separated backend labels to run (``asyncio``,
  ``asyncio+uvloop``, ``asyncio+eager``, ``trio``); tests of other backends are deselected.
  Tests not parametrised by backend always run. Unset: every backend.
- ``SCOPEWATCH_PEER_INSTRUMENT=1``: instrument with ``ScopeWatchInstrumentor`` in span mode
  ``all`` (every feature) on a real SDK whose only processor counts spans and violations.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import peer_outcomes
import pytest

if TYPE_CHECKING:
    from collections.abc import Generator

    from opentelemetry.sdk.trace import ReadableSpan


class _Recorder:
    """Collects outcomes, backends and (when instrumented) scopewatch's spans and violations."""

    def __init__(self, results: Path, backends: set[str] | None, instrument: bool) -> None:
        self.results = results
        self.backends = backends
        self.outcomes: dict[str, str | None] = {}
        self.labels: dict[str, str] = {}
        self.deselected = 0
        self.current: str | None = None
        self.spans = 0
        self.violations: Counter[str] = Counter()
        self.violations_by_test: Counter[str] = Counter()
        self.log: list[str] = []
        self.errors: list[str] = []
        self.started = time.monotonic()
        self.instrumentor: Any = None
        if instrument:
            self._instrument()

    def _instrument(self) -> None:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

        from scopewatch import ScopeWatchInstrumentor, semconv

        recorder = self

        class CountingProcessor(SpanProcessor):  # type: ignore[misc]
            def on_end(self, span: ReadableSpan) -> None:
                recorder.spans += 1
                attributes = span.attributes or {}
                kind = attributes.get(semconv.VIOLATION_KIND)
                if kind is not None:
                    cause = attributes.get(semconv.VIOLATION_CAUSE, "?")
                    recorder.violations[f"{kind}/{cause}"] += 1
                    recorder.violations_by_test[recorder.current or "(between tests)"] += 1

        class LogCollector(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                line = f"{record.levelname}: {record.getMessage().splitlines()[0]}"
                recorder.log.append(line)
                if record.levelno >= logging.ERROR:  # a part of scopewatch failed (and stopped)
                    recorder.errors.append(f"{recorder.current or '(between tests)'}: {line}")

        logging.getLogger("scopewatch").addHandler(LogCollector(logging.WARNING))
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(CountingProcessor())
        meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
        self.instrumentor = ScopeWatchInstrumentor()
        self.instrumentor.instrument(
            tracer_provider=tracer_provider, meter_provider=meter_provider, spans="all"
        )

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[Any]) -> None:
        kept, dropped = [], []
        for item in items:
            label = backend_label(item)
            self.labels[item.nodeid] = label
            wanted = self.backends is None or label in (*self.backends, peer_outcomes.NO_BACKEND)
            (kept if wanted else dropped).append(item)
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = kept
        self.deselected = len(dropped)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: Any) -> Generator[None, object, object]:
        self.current = item.nodeid
        try:
            return (yield)
        finally:
            self.current = None

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        outcome = peer_outcomes.outcome_of(
            report.when, report.passed, report.failed, hasattr(report, "wasxfail")
        )
        previous = self.outcomes.get(report.nodeid)
        self.outcomes[report.nodeid] = peer_outcomes.merge(previous, outcome)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:  # a module that cannot be imported is one error, as in pytest
            self.outcomes[report.nodeid] = "error"

    def pytest_sessionfinish(self) -> None:
        outcomes = {nodeid: out for nodeid, out in self.outcomes.items() if out is not None}
        peer_outcomes.save(
            self.results,
            outcomes,
            {nodeid: self.labels.get(nodeid, peer_outcomes.NO_BACKEND) for nodeid in outcomes},
            instrumented=self.instrumentor is not None,
            deselected=self.deselected,
            spans=self.spans,
            violations=dict(self.violations),
            violations_by_test=dict(self.violations_by_test),
            scopewatch_log=self.log,
            scopewatch_errors=self.errors,
            seconds=round(time.monotonic() - self.started, 1),
        )

    def pytest_unconfigure(self) -> None:
        if self.instrumentor is not None and self.instrumentor.is_instrumented_by_opentelemetry:
            self.instrumentor.uninstrument()


def backend_label(item: Any) -> str:
    """``asyncio``, ``asyncio+uvloop``, ``asyncio+eager``, ``trio``... or ``-`` (no backend)."""
    callspec = getattr(item, "callspec", None)
    if callspec is None or "anyio_backend" not in callspec.params:
        return peer_outcomes.NO_BACKEND
    value = callspec.params["anyio_backend"]
    if isinstance(value, str):
        return value
    name, options = value[0], (value[1] if len(value) > 1 else {})
    factory = options.get("loop_factory")
    if factory is None:
        return str(name)
    if getattr(factory, "__module__", "").startswith(("uvloop", "winloop")):
        return f"{name}+uvloop"
    factory_name = getattr(factory, "__name__", "loop")
    return f"{name}+eager" if "eager" in factory_name else f"{name}+{factory_name}"


def pytest_configure(config: pytest.Config) -> None:
    """Register the recorder when ``SCOPEWATCH_PEER_RESULTS`` names a results file."""
    results = os.environ.get("SCOPEWATCH_PEER_RESULTS")
    if not results:
        return
    backends = os.environ.get("SCOPEWATCH_PEER_BACKENDS")
    wanted = {name.strip() for name in backends.split(",") if name.strip()} if backends else None
    instrument = os.environ.get("SCOPEWATCH_PEER_INSTRUMENT") == "1"
    config.pluginmanager.register(_Recorder(Path(results), wanted, instrument), "peer-recorder")
