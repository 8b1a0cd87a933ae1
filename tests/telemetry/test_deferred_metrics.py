"""Deferred histograms: exact values at collection, bounded memory, no long inline stall."""

from __future__ import annotations

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

from scopewatch import ScopeWatchInstrumentor
from scopewatch.telemetry import metrics
from scopewatch.telemetry.metrics import DeferredHistogram


def histogram_point(reader: InMemoryMetricReader):
    data = reader.get_metrics_data()
    (point,) = [
        p
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "h"
        for p in m.data.data_points
    ]
    return point


def test_values_are_replayed_exactly_at_collection():
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("t")
    deferred = DeferredHistogram(meter.create_histogram("h"))
    for value in (0.5, 1.5, 2.0):
        deferred.record(value, {"k": "v"})
    assert deferred._pending  # nothing recorded yet
    deferred.flush()
    point = histogram_point(reader)
    assert (point.count, point.sum) == (3, 4.0)


def test_a_full_buffer_replays_small_chunks_where_it_is_filled(monkeypatch):
    monkeypatch.setattr(metrics, "FLUSH_AT", 100)
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("t")
    deferred = DeferredHistogram(meter.create_histogram("h"))
    sizes = []
    for _ in range(1000):
        deferred.record(1.0, {})
        sizes.append(len(deferred._pending))
    assert max(sizes) <= 100  # bounded without any reader collecting
    assert min(sizes[200:]) >= 100 - metrics.FLUSH_CHUNK  # never one big inline flush
    deferred.flush()
    assert histogram_point(reader).count == 1000  # nothing lost


def test_reinstrumenting_reuses_the_alert_processor():
    provider = TracerProvider()
    instrumentor = ScopeWatchInstrumentor()
    for _ in range(3):
        instrumentor.instrument(tracer_provider=provider, meter_provider=MeterProvider())
        instrumentor.uninstrument()
    assert len(provider._active_span_processor._span_processors) == 1
