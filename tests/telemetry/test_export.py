"""The ``scopewatch_file`` exporters: OTLP/JSON lines equal to the official protobuf encoding."""

from __future__ import annotations

import base64
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk._configuration import _import_exporters
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    MetricExportResult,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from scopewatch.export import OUTPUT_VARIABLE, FileMetricExporter, FileSpanExporter
from scopewatch.report import load

_ID_KEYS = {"traceId", "spanId", "parentSpanId"}


def _hex_ids_to_base64(value: Any) -> Any:
    """OTLP/JSON ids are hex; the protobuf JSON mapping wants base64 for bytes fields."""
    if isinstance(value, dict):
        return {
            key: base64.b64encode(bytes.fromhex(item)).decode()
            if key in _ID_KEYS and isinstance(item, str)
            else _hex_ids_to_base64(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_hex_ids_to_base64(item) for item in value]
    return value


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _spans(tmp_path: Path) -> tuple[list[Any], Path]:
    path = tmp_path / "spans.jsonl"
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "export-test"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.add_span_processor(SimpleSpanProcessor(FileSpanExporter(str(path))))
    tracer = provider.get_tracer("scopewatch", "1.2.3")
    with tracer.start_as_current_span("parent", kind=SpanKind.SERVER) as parent:
        with tracer.start_as_current_span(
            "anyio.CancelScope",
            attributes={
                "text": "x",
                "flag": True,
                "number": 42,
                "ratio": 0.25,
                "names": ["a", "b"],
                "numbers": [1, 2],
            },
            links=[Link(parent.get_span_context(), {"why": "cancelled by"})],
        ) as child:
            child.add_event("scopewatch.violation", {"code.stacktrace": 'File "a.py", line 1'})
            child.set_status(Status(StatusCode.ERROR, "cross_task_exit (other_task)"))
    provider.shutdown()
    return list(memory.get_finished_spans()), path


def test_spans_are_the_official_otlp_encoding(tmp_path: Path) -> None:
    spans, path = _spans(tmp_path)
    lines = _lines(path)
    assert len(lines) == 2  # one line per export (SimpleSpanProcessor exports each span)
    for line, span in zip(lines, spans, strict=True):
        parsed = json_format.ParseDict(_hex_ids_to_base64(line), ExportTraceServiceRequest())
        assert parsed == encode_spans([span])
    child = lines[0]["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert child["traceId"] == f"{spans[0].context.trace_id:032x}"
    assert child["parentSpanId"] == f"{spans[1].context.span_id:016x}"
    assert child["status"] == {"code": 2, "message": "cross_task_exit (other_task)"}


def test_spans_read_back_by_the_report_loader(tmp_path: Path) -> None:
    spans, path = _spans(tmp_path)
    telemetry = load([str(path)])
    by_name = {span.name: span for span in telemetry.spans}
    child = by_name["anyio.CancelScope"]
    expected = {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in (spans[0].attributes or {}).items()
    }
    assert child.attributes == expected
    assert child.parent_span_id == by_name["parent"].span_id
    assert child.events[0].name == "scopewatch.violation"
    assert child.status_code == 2
    assert child.start_ns == spans[0].start_time and child.end_ns == spans[0].end_time
    assert child.links == ((by_name["parent"].trace_id, by_name["parent"].span_id),)


def test_metrics_are_the_official_otlp_encoding(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    memory = InMemoryMetricReader()
    exporter = FileMetricExporter(str(path))
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(metric_readers=[memory, reader])
    meter = provider.get_meter("scopewatch")
    meter.create_counter("scopewatch.violations").add(2, {"scopewatch.violation.kind": "k"})
    meter.create_up_down_counter("scopewatch.session.active").add(-1)
    meter.create_histogram("scopewatch.scope.duration", unit="s").record(0.5, {"a": "b"})
    meter.create_gauge("g").set(1.5)
    expected = memory.get_metrics_data()
    reader.force_flush()
    provider.shutdown()
    lines = _lines(path)
    assert lines, "nothing written"
    parsed = json_format.ParseDict(_hex_ids_to_base64(lines[0]), ExportMetricsServiceRequest())
    official = encode_metrics(expected)
    # the two collections happened at different instants: compare without timestamps
    for message in (parsed, official):
        for resource_metrics in message.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    for kind in ("sum", "gauge", "histogram"):
                        if metric.HasField(kind):
                            for point in getattr(metric, kind).data_points:
                                point.ClearField("time_unix_nano")
                                point.ClearField("start_time_unix_nano")
    assert parsed == official
    points = {p.metric: p for p in load([str(path)]).points}
    assert points["scopewatch.violations"].value == 2
    assert points["scopewatch.session.active"].value == -1
    assert points["scopewatch.scope.duration"].count == 1
    assert points["scopewatch.scope.duration"].total == 0.5


def test_empty_collections_write_nothing(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    reader = PeriodicExportingMetricReader(
        FileMetricExporter(str(path)), export_interval_millis=3_600_000
    )
    MeterProvider(metric_readers=[reader]).shutdown()
    assert not path.exists()


def test_default_path_is_output_variable_or_pid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(OUTPUT_VARIABLE, raising=False)
    assert FileSpanExporter().path == str(tmp_path / f"scopewatch-{os.getpid()}.jsonl")
    monkeypatch.setenv(OUTPUT_VARIABLE, "sub/out.jsonl")
    assert FileMetricExporter().path == str(tmp_path / "sub" / "out.jsonl")


def test_unwritable_file_fails_the_export_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    exporter = FileSpanExporter(str(tmp_path / "missing-dir" / "out.jsonl"))
    spans, _ = _spans(tmp_path)
    with caplog.at_level(logging.ERROR, logger="scopewatch"):
        assert exporter.export(spans) == SpanExportResult.FAILURE
        assert exporter.export(spans) == SpanExportResult.FAILURE
    messages = [r.getMessage() for r in caplog.records if OUTPUT_VARIABLE in r.getMessage()]
    assert len(messages) == 1
    assert "missing-dir" in messages[0]


def test_shut_down_exporters_refuse(tmp_path: Path) -> None:
    spans, _ = _spans(tmp_path)
    exporter = FileSpanExporter(str(tmp_path / "x.jsonl"))
    exporter.shutdown()
    assert exporter.export(spans) == SpanExportResult.FAILURE
    metrics = FileMetricExporter(str(tmp_path / "y.jsonl"))
    metrics.shutdown()
    assert metrics.export(None) == MetricExportResult.FAILURE  # type: ignore[arg-type]


def test_sdk_configurator_finds_them_by_name() -> None:
    spans, metrics, logs = _import_exporters(["scopewatch_file"], ["scopewatch_file"], [])
    assert spans == {"scopewatch_file": FileSpanExporter}
    assert metrics == {"scopewatch_file": FileMetricExporter}
    assert logs == {}
