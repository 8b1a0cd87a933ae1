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

import logging
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from scopewatch import _otlp_json
from scopewatch._output import OUTPUT_VARIABLE, LineWriter, default_output_path

if TYPE_CHECKING:
    from collections.abc import Sequence

    from opentelemetry.sdk.metrics.export import MetricsData
    from opentelemetry.sdk.trace import ReadableSpan

_logger = logging.getLogger("scopewatch")

__all__ = ("OUTPUT_VARIABLE", "FileMetricExporter", "FileSpanExporter", "default_output_path")


class FileSpanExporter(SpanExporter):
    """Appends finished spans to the ``SCOPEWATCH_OUTPUT`` file as OTLP/JSON lines."""

    def __init__(self, path: str | None = None) -> None:
        """Create the exporter.

        Args:
            path: the file to append to; ``SCOPEWATCH_OUTPUT`` or ``scopewatch-<pid>.jsonl``
                when omitted (the SDK configurator passes no arguments).
        """
        self._writer = LineWriter(path)
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
        self._writer = LineWriter(path)
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
