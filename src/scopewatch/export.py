"""Span and metric exporters that append OTLP/JSON lines to a local file.

They are registered as the SDK exporters ``scopewatch_file`` (entry point groups
``opentelemetry_traces_exporter`` and ``opentelemetry_metrics_exporter``), so any program run
under ``opentelemetry-instrument`` can use them::

    export OTEL_TRACES_EXPORTER=otlp,scopewatch_file OTEL_METRICS_EXPORTER=otlp,scopewatch_file
    opentelemetry-instrument python app.py

Each export appends one line: an OTLP ``ExportTraceServiceRequest`` or
``ExportMetricsServiceRequest`` in the OTLP/JSON encoding (``scopewatch report`` reads it; so
does the OpenTelemetry Collector's ``otlpjsonfile`` receiver). The file is named by
``SCOPEWATCH_OUTPUT``, by default ``scopewatch-<pid>.jsonl`` in the current directory. Each line
is written with a single ``write`` on a file opened for appending, so processes forked by the
program can share the file.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from scopewatch import _otlp_json

if TYPE_CHECKING:
    from collections.abc import Sequence

    from opentelemetry.sdk.metrics.export import MetricsData
    from opentelemetry.sdk.trace import ReadableSpan

_logger = logging.getLogger("scopewatch")

OUTPUT_VARIABLE = "SCOPEWATCH_OUTPUT"
"""Path of the OTLP/JSON lines file the ``scopewatch_file`` exporters append to."""


def default_output_path(environ: dict[str, str] | os._Environ[str] | None = None) -> str:
    """``$SCOPEWATCH_OUTPUT``, or ``scopewatch-<pid>.jsonl`` in the current directory."""
    environ = os.environ if environ is None else environ
    configured = environ.get(OUTPUT_VARIABLE, "").strip()
    if configured:
        return os.path.abspath(configured)
    return os.path.abspath(f"scopewatch-{os.getpid()}.jsonl")


class _LineWriter:
    """Appends one JSON document per line; logs the first failure once and keeps trying."""

    def __init__(self, path: str | None) -> None:
        self.path = os.path.abspath(path) if path else default_output_path()
        self._lock = threading.Lock()
        self._failed = False

    def write(self, document: dict[str, Any]) -> bool:
        try:
            data = (json.dumps(document, separators=(",", ":"), allow_nan=False) + "\n").encode()
        except ValueError:
            _logger.exception("scopewatch: telemetry could not be encoded as JSON; dropped")
            return False
        try:
            with self._lock:
                descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    written = 0
                    while written < len(data):
                        written += os.write(descriptor, data[written:])
                finally:
                    os.close(descriptor)
        except OSError as error:
            if not self._failed:
                self._failed = True
                _logger.error(
                    "scopewatch: cannot write telemetry to %s=%s (%s); set it to a writable path",
                    OUTPUT_VARIABLE,
                    self.path,
                    error.strerror or error,
                )
            return False
        return True


class FileSpanExporter(SpanExporter):
    """Appends finished spans to the ``SCOPEWATCH_OUTPUT`` file as OTLP/JSON lines."""

    def __init__(self, path: str | None = None) -> None:
        """Create the exporter.

        Args:
            path: the file to append to; ``SCOPEWATCH_OUTPUT`` or ``scopewatch-<pid>.jsonl``
                when omitted (the SDK configurator passes no arguments).
        """
        self._writer = _LineWriter(path)
        self._shutdown = False

    @property
    def path(self) -> str:
        """The absolute path written to."""
        return self._writer.path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Append one ``ExportTraceServiceRequest`` line."""
        if self._shutdown:
            return SpanExportResult.FAILURE
        if not spans:
            return SpanExportResult.SUCCESS
        try:
            document = _otlp_json.encode_spans(spans)
        except Exception:
            _logger.exception("scopewatch: could not encode %d spans; they are dropped", len(spans))
            return SpanExportResult.FAILURE
        if self._writer.write(document):
            return SpanExportResult.SUCCESS
        return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        """Refuse further exports (every line is already on disk)."""
        self._shutdown = True

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered."""
        del timeout_millis
        return True


class FileMetricExporter(MetricExporter):
    """Appends metric collections to the ``SCOPEWATCH_OUTPUT`` file as OTLP/JSON lines.

    The SDK configurator wraps it in a ``PeriodicExportingMetricReader``
    (``OTEL_METRIC_EXPORT_INTERVAL``); the last collection is written at shutdown.
    """

    def __init__(
        self,
        path: str | None = None,
        preferred_temporality: dict[type, Any] | None = None,
        preferred_aggregation: dict[type, Any] | None = None,
    ) -> None:
        """Create the exporter (temporality and aggregation as for any ``MetricExporter``)."""
        super().__init__(
            preferred_temporality=preferred_temporality,
            preferred_aggregation=preferred_aggregation,
        )
        self._writer = _LineWriter(path)
        self._shutdown = False

    @property
    def path(self) -> str:
        """The absolute path written to."""
        return self._writer.path

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        """Append one ``ExportMetricsServiceRequest`` line (nothing when there are no points)."""
        del timeout_millis, kwargs
        if self._shutdown:
            return MetricExportResult.FAILURE
        if not any(
            metric.data.data_points
            for resource_metrics in metrics_data.resource_metrics
            for scope_metrics in resource_metrics.scope_metrics
            for metric in scope_metrics.metrics
        ):
            return MetricExportResult.SUCCESS
        try:
            document = _otlp_json.encode_metrics(metrics_data)
        except Exception:
            _logger.exception("scopewatch: could not encode metrics; this collection is dropped")
            return MetricExportResult.FAILURE
        if self._writer.write(document):
            return MetricExportResult.SUCCESS
        return MetricExportResult.FAILURE

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        """Nothing is buffered."""
        del timeout_millis
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Refuse further exports."""
        del timeout_millis, kwargs
        self._shutdown = True
