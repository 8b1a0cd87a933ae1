"""deploy/app/service.py under ``opentelemetry-instrument`` exports OTLP/HTTP to a real receiver.

This is the compose stack's app path minus the containers: the example service runs in a
subprocess under ``opentelemetry-instrument`` (scopewatch is loaded from its entry point, the SDK
is configured by opentelemetry-distro from ``OTEL_*`` variables) and exports OTLP/HTTP protobuf to
an HTTP server in this test that decodes ``ExportTraceServiceRequest`` /
``ExportMetricsServiceRequest`` with opentelemetry-proto. The violation spans and the metrics must
arrive with the contract's names (DESIGN.md sections 2-4).
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from scopewatch import semconv
from tests.support.paths import ROOT

SERVICE = ROOT / "deploy" / "app" / "service.py"
INSTRUMENT = Path(sys.executable).parent / "opentelemetry-instrument"
SERVICE_NAME = "scopewatch-e2e"
CONTRACT_KINDS = {
    semconv.KIND_CROSS_TASK_EXIT,
    semconv.KIND_NON_LIFO_EXIT,
    semconv.KIND_SCOPE_LEAKED,
    semconv.KIND_CANCEL_SWALLOWED,
}
SCOPE_SPAN_NAMES = {
    semconv.SPAN_ANYIO_CANCEL_SCOPE,
    semconv.SPAN_ANYIO_MOVE_ON_AFTER,
    semconv.SPAN_ANYIO_MOVE_ON_AT,
    semconv.SPAN_ANYIO_FAIL_AFTER,
    semconv.SPAN_ANYIO_FAIL_AT,
    semconv.SPAN_ANYIO_TASK_GROUP,
    semconv.SPAN_ASYNCIO_TIMEOUT,
    semconv.SPAN_ASYNCIO_TIMEOUT_AT,
    semconv.SPAN_ASYNCIO_TASK_GROUP,
}


def value(any_value: AnyValue) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def attrs(items: Any) -> dict[str, Any]:
    return {item.key: value(item.value) for item in items if isinstance(item, KeyValue)}


@dataclass
class Received:
    """Everything the receiver decoded."""

    traces: list[ExportTraceServiceRequest] = field(default_factory=list)
    metrics: list[ExportMetricsServiceRequest] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def spans(self) -> list[tuple[dict[str, Any], str, Any]]:
        """(resource attributes, instrumentation scope name, span) of every span."""
        with self.lock:
            return [
                (attrs(rs.resource.attributes), ss.scope.name, span)
                for request in self.traces
                for rs in request.resource_spans
                for ss in rs.scope_spans
                for span in ss.spans
            ]

    def metric_list(self) -> list[tuple[dict[str, Any], str, Any]]:
        """(resource attributes, instrumentation scope name, metric) of every metric."""
        with self.lock:
            return [
                (attrs(rm.resource.attributes), sm.scope.name, metric)
                for request in self.metrics
                for rm in request.resource_metrics
                for sm in rm.scope_metrics
                for metric in sm.metrics
            ]


@pytest.fixture
def receiver() -> Iterator[tuple[str, Received]]:
    """An OTLP/HTTP protobuf receiver on a free loopback port."""
    received = Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            response: Any
            if self.path == "/v1/traces":
                request: Any = ExportTraceServiceRequest.FromString(body)
                response = ExportTraceServiceResponse()
                target: list[Any] = received.traces
            elif self.path == "/v1/metrics":
                request = ExportMetricsServiceRequest.FromString(body)
                response = ExportMetricsServiceResponse()
                target = received.metrics
            else:
                self.send_response(404)
                self.end_headers()
                return
            with received.lock:
                target.append(request)
                received.paths.append(self.path)
            payload = response.SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            del format, args

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def run_example(receiver: tuple[str, Received]) -> Iterator[Received]:
    """Run three rounds of the example service, a bug in each, exporting to the receiver."""
    endpoint, received = receiver
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        OTEL_SERVICE_NAME=SERVICE_NAME,
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_METRICS_EXPORTER="otlp",
        OTEL_LOGS_EXPORTER="none",
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_METRIC_EXPORT_INTERVAL="500",
        OTEL_BSP_SCHEDULE_DELAY="200",
        SCOPEWATCH_EXAMPLE_ROUNDS="3",
        SCOPEWATCH_EXAMPLE_BUG_EVERY="1",
        SCOPEWATCH_EXAMPLE_PACE="0.1",
    )
    proc = subprocess.Popen(
        [str(INSTRUMENT), sys.executable, str(SERVICE)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 0, output
    assert "done after 3 rounds" in output, output
    yield received


def test_violation_spans_arrive_with_contract_names(run_example: Received) -> None:
    spans = run_example.spans()
    assert spans, run_example.paths
    violated = [
        (resource, scope, span)
        for resource, scope, span in spans
        if semconv.VIOLATION_KIND in attrs(span.attributes)
    ]
    for resource, scope, span in violated:
        assert resource["service.name"] == SERVICE_NAME
        assert scope == semconv.INSTRUMENTATION_SCOPE
        assert span.status.code == Status.STATUS_CODE_ERROR
        assert attrs(span.attributes)[semconv.VIOLATION_KIND] in CONTRACT_KINDS
    violations = [
        (resource, scope, span)
        for resource, scope, span in violated
        if attrs(span.attributes)[semconv.VIOLATION_KIND] == semconv.KIND_CROSS_TASK_EXIT
    ]
    causes = set()
    for _, _, span in violations:
        assert span.name in SCOPE_SPAN_NAMES
        span_attrs = attrs(span.attributes)
        assert span_attrs[semconv.SCOPE_KIND] == span.name
        assert span_attrs[semconv.CROSS_TASK] is True
        (event,) = [e for e in span.events if e.name == semconv.EVENT_VIOLATION]
        event_attrs = attrs(event.attributes)
        assert event_attrs[semconv.VIOLATION_KIND] == semconv.KIND_CROSS_TASK_EXIT
        assert event_attrs[semconv.ENTER_TASK] != event_attrs[semconv.EXIT_TASK]
        assert event_attrs[semconv.CODE_STACKTRACE]
        causes.add(event_attrs[semconv.VIOLATION_CAUSE])
    # The three bugs of deploy/app/service.py, each recognised for what it is (other kinds
    # may accompany them as scopewatch learns more, but only the contract's).
    assert causes == {
        semconv.CAUSE_ASYNCGEN_FINALIZER,
        semconv.CAUSE_PER_STEP_TASK,
        semconv.CAUSE_OTHER_TASK,
    }
    by_cause = {
        attrs(e.attributes)[semconv.VIOLATION_CAUSE]: span.name
        for _, _, span in violations
        for e in span.events
        if e.name == semconv.EVENT_VIOLATION
    }
    assert by_cause[semconv.CAUSE_ASYNCGEN_FINALIZER] == semconv.SPAN_ANYIO_TASK_GROUP
    assert by_cause[semconv.CAUSE_OTHER_TASK] == semconv.SPAN_ANYIO_FAIL_AFTER
    expected_timeout = (
        semconv.SPAN_ASYNCIO_TIMEOUT
        if sys.version_info >= (3, 11)
        else semconv.SPAN_ANYIO_MOVE_ON_AFTER
    )
    assert by_cause[semconv.CAUSE_PER_STEP_TASK] == expected_timeout

    # The traffic's anomalous cancellations are explained by origin (what spanmetrics counts);
    # an explicit cancel is a normal shutdown, counted in scopewatch.scopes, not exported (0.3).
    origins = {attrs(span.attributes).get(semconv.CANCEL_ORIGIN) for _, _, span in spans}
    assert {semconv.ORIGIN_DEADLINE, semconv.ORIGIN_EXTERNAL} <= origins


def test_metrics_arrive_with_contract_names(run_example: Received) -> None:
    metrics = {
        metric.name: (resource, scope, metric)
        for resource, scope, metric in run_example.metric_list()
    }
    for name in (
        semconv.METRIC_VIOLATIONS,
        semconv.METRIC_SCOPE_DURATION,
        semconv.METRIC_SCOPES,
        semconv.METRIC_TASK_ACTIVE,
    ):
        assert name in metrics, sorted(metrics)
        resource, scope, _ = metrics[name]
        assert resource["service.name"] == SERVICE_NAME
        assert scope == semconv.INSTRUMENTATION_SCOPE

    _, _, violations = metrics[semconv.METRIC_VIOLATIONS]
    assert violations.unit == semconv.UNIT_VIOLATION
    assert violations.sum.is_monotonic
    assert (
        violations.sum.aggregation_temporality
        == AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    )
    points = {
        (
            attrs(p.attributes)[semconv.VIOLATION_KIND],
            attrs(p.attributes)[semconv.VIOLATION_CAUSE],
            attrs(p.attributes)[semconv.SCOPE_KIND],
        ): p.as_int
        for p in violations.sum.data_points
    }
    assert {kind for kind, _, _ in points} <= CONTRACT_KINDS
    cross_task = {
        (cause, scope_kind): count
        for (kind, cause, scope_kind), count in points.items()
        if kind == semconv.KIND_CROSS_TASK_EXIT
    }
    assert {cause for cause, _ in cross_task} == {
        semconv.CAUSE_ASYNCGEN_FINALIZER,
        semconv.CAUSE_PER_STEP_TASK,
        semconv.CAUSE_OTHER_TASK,
    }
    assert all(count == 1 for count in cross_task.values()), cross_task  # one of each bug

    _, _, duration = metrics[semconv.METRIC_SCOPE_DURATION]
    assert duration.unit == semconv.UNIT_SECONDS
    outcomes = set()
    for point in duration.histogram.data_points:
        assert list(point.explicit_bounds) == list(semconv.SECONDS_BUCKETS)
        outcomes.add(attrs(point.attributes)[semconv.SCOPE_OUTCOME])
    # Deadlines exceeded are anomalous, so they are measured whatever DURATIONS is (with the
    # default, ok scopes and normal shutdowns are only counted, in scopewatch.scopes).
    assert semconv.OUTCOME_DEADLINE_EXCEEDED in outcomes, outcomes
    _, _, scopes = metrics[semconv.METRIC_SCOPES]
    assert scopes.unit == semconv.UNIT_SCOPE
    counted = {attrs(p.attributes)[semconv.SCOPE_OUTCOME]: p.as_int for p in scopes.sum.data_points}
    assert counted[semconv.OUTCOME_OK] > 0 and counted[semconv.OUTCOME_CANCELLED] > 0
