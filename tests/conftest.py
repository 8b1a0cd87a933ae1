"""Shared fixtures: a real OpenTelemetry SDK with in-memory exporters, and instrumentation."""

from __future__ import annotations

import os

os.environ["SCOPEWATCH_STRICT"] = "1"  # our own errors re-raise under our tests

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import hypothesis  # noqa: F401 - see below
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from scopewatch import ScopeWatchInstrumentor, semconv

# hypothesis' pytest plugin imports hypothesis at session end when no test did; under pytest's
# assertion rewriting that deep import trips a CPython 3.11.7 AST bug ("AST constructor
# recursion depth mismatch"). Importing it here, at a shallow stack, avoids it.

for _variable in [name for name in os.environ if name.startswith("OTEL_PYTHON_SCOPEWATCH_")]:
    del os.environ[_variable]  # a developer's own settings must not change test results


@dataclass
class Telemetry:
    """What an instrumented test produced, read from real SDK in-memory exporters."""

    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    instrumentor: ScopeWatchInstrumentor

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        """Finished spans, optionally only those called ``name``."""
        spans = list(self.exporter.get_finished_spans())
        return [span for span in spans if name is None or span.name == name]

    def violation_spans(self, kind: str | None = None) -> list[ReadableSpan]:
        """Spans carrying a violation, optionally of one kind."""
        return [
            span
            for span in self.spans()
            if (span.attributes or {}).get(semconv.VIOLATION_KIND) is not None
            and (kind is None or (span.attributes or {}).get(semconv.VIOLATION_KIND) == kind)
        ]

    def violation_events(self) -> list[dict[str, Any]]:
        """Attributes of every ``scopewatch.violation`` event."""
        return [
            dict(event.attributes or {})
            for span in self.spans()
            for event in span.events
            if event.name == semconv.EVENT_VIOLATION
        ]

    def points(self, metric: str) -> list[Any]:
        """Data points of one metric, collected now."""
        data = self.reader.get_metrics_data()
        found: list[Any] = []
        if data is None:
            return found
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for item in scope_metrics.metrics:
                    if item.name == metric:
                        found.extend(item.data.data_points)
        return found

    def uninstrument(self) -> None:
        """Stop instrumenting (idempotent)."""
        if self.instrumentor.is_instrumented_by_opentelemetry:
            self.instrumentor.uninstrument()


@pytest.fixture
def instrument() -> Iterator[Callable[..., Telemetry]]:
    """``instrument(**settings)`` instruments with in-memory exporters; undone at teardown."""
    created: list[Telemetry] = []

    def start(**settings: Any) -> Telemetry:
        exporter = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        reader = InMemoryMetricReader()
        meter_provider = MeterProvider(metric_readers=[reader])
        instrumentor = ScopeWatchInstrumentor()
        instrumentor.instrument(
            tracer_provider=tracer_provider, meter_provider=meter_provider, **settings
        )
        telemetry = Telemetry(exporter, reader, tracer_provider, meter_provider, instrumentor)
        created.append(telemetry)
        return telemetry

    yield start
    for telemetry in created:
        telemetry.uninstrument()
        telemetry.tracer_provider.shutdown()
        telemetry.meter_provider.shutdown()


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(autouse=True)
def no_trio_instrument_dropped() -> Iterator[None]:
    """trio logs and drops an instrument that raised (scopewatch's own errors re-raise under
    these tests): such a log fails the test instead of passing unnoticed."""
    logger = logging.getLogger("trio.abc.Instrument")
    collect = _Collect()
    logger.addHandler(collect)
    try:
        yield
    finally:
        logger.removeHandler(collect)
    assert collect.messages == []
