"""OTLP/JSON encoding of SDK spans and metrics, without protobuf.

Follows the OTLP/HTTP JSON encoding (opentelemetry-proto's ``ExportTraceServiceRequest`` and
``ExportMetricsServiceRequest`` in the protobuf JSON mapping): lowerCamelCase keys, trace and span
ids as hex strings, enums as integers, 64-bit integers as decimal strings. The structure mirrors
``opentelemetry-exporter-otlp-proto-common``'s encoders field for field (the tests parse our JSON
back into those protobuf messages and compare), so any OTLP/JSON reader, such as the collector's
``otlpjsonfile`` receiver, can read the files.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.metrics.export import (
    ExponentialHistogram,
    Gauge,
    Histogram,
    MetricsData,
    Sum,
)
from opentelemetry.trace import SpanKind

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext

JSON = dict[str, Any]

_SPAN_KIND = {
    SpanKind.INTERNAL: 1,
    SpanKind.SERVER: 2,
    SpanKind.CLIENT: 3,
    SpanKind.PRODUCER: 4,
    SpanKind.CONSUMER: 5,
}
_FLAG_HAS_IS_REMOTE = 0x100
_FLAG_IS_REMOTE = 0x200


def _int64(value: int) -> str:
    return str(int(value))


def _double(value: float) -> float | str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def encode_value(value: Any) -> JSON:  # noqa: PLR0911
    """An ``AnyValue``."""
    if value is None:
        return {}
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, int):
        return {"intValue": _int64(value)}
    if isinstance(value, float):
        return {"doubleValue": _double(value)}
    if isinstance(value, bytes):
        import base64

        return {"bytesValue": base64.b64encode(value).decode("ascii")}
    if isinstance(value, Sequence):
        return {"arrayValue": {"values": [encode_value(item) for item in value]}}
    if isinstance(value, Mapping):
        return {"kvlistValue": {"values": encode_attributes(value)}}
    return {"stringValue": str(value)}


def encode_attributes(attributes: Mapping[str, Any] | None) -> list[JSON]:
    """A list of ``KeyValue``."""
    if not attributes:
        return []
    return [{"key": str(key), "value": encode_value(value)} for key, value in attributes.items()]


def _trace_id(trace_id: int) -> str:
    return f"{trace_id:032x}"


def _span_id(span_id: int) -> str:
    return f"{span_id:016x}"


def _span_flags(parent: SpanContext | None) -> int:
    flags = _FLAG_HAS_IS_REMOTE
    if parent is not None and parent.is_remote:
        flags |= _FLAG_IS_REMOTE
    return flags


def _resource(resource: Resource) -> JSON:
    return {"attributes": encode_attributes(resource.attributes)}


def _scope(scope: InstrumentationScope | None) -> JSON:
    if scope is None:
        return {}
    encoded: JSON = {"name": scope.name}
    if scope.version:
        encoded["version"] = scope.version
    attributes = encode_attributes(getattr(scope, "attributes", None))
    if attributes:
        encoded["attributes"] = attributes
    return encoded


def _dropped(count: int) -> JSON:
    return {"droppedAttributesCount": count} if count else {}


def _encode_span(span: ReadableSpan) -> JSON:
    context = span.get_span_context()
    assert context is not None
    encoded: JSON = {
        "traceId": _trace_id(context.trace_id),
        "spanId": _span_id(context.span_id),
    }
    trace_state = ",".join(f"{key}={value}" for key, value in context.trace_state.items())
    if trace_state:
        encoded["traceState"] = trace_state
    if span.parent is not None:
        encoded["parentSpanId"] = _span_id(span.parent.span_id)
    encoded["flags"] = _span_flags(span.parent)
    encoded["name"] = span.name
    encoded["kind"] = _SPAN_KIND.get(span.kind, 0)
    encoded["startTimeUnixNano"] = _int64(span.start_time or 0)
    encoded["endTimeUnixNano"] = _int64(span.end_time or 0)
    encoded["attributes"] = encode_attributes(span.attributes)
    if span.dropped_attributes:
        encoded["droppedAttributesCount"] = span.dropped_attributes
    encoded["events"] = [
        {
            "timeUnixNano": _int64(event.timestamp),
            "name": event.name,
            "attributes": encode_attributes(event.attributes),
            **(
                {"droppedAttributesCount": event.dropped_attributes}
                if event.dropped_attributes
                else {}
            ),
        }
        for event in span.events
    ]
    if span.dropped_events:
        encoded["droppedEventsCount"] = span.dropped_events
    encoded["links"] = [
        {
            "traceId": _trace_id(link.context.trace_id),
            "spanId": _span_id(link.context.span_id),
            "attributes": encode_attributes(link.attributes),
            "flags": _span_flags(link.context),
            **(
                {"droppedAttributesCount": link.dropped_attributes}
                if link.dropped_attributes
                else {}
            ),
        }
        for link in span.links
    ]
    if span.dropped_links:
        encoded["droppedLinksCount"] = span.dropped_links
    status: JSON = {"code": span.status.status_code.value}
    if span.status.description:
        status["message"] = span.status.description
    encoded["status"] = status
    return encoded


def encode_spans(spans: Sequence[ReadableSpan]) -> JSON:
    """An ``ExportTraceServiceRequest``: spans grouped by resource, then instrumentation scope."""
    grouped: dict[Resource, dict[InstrumentationScope | None, list[JSON]]] = {}
    for span in spans:
        by_scope = grouped.setdefault(span.resource, {})
        by_scope.setdefault(span.instrumentation_scope or None, []).append(_encode_span(span))
    resource_spans = []
    for resource, by_scope in grouped.items():
        scope_spans = []
        for scope, encoded in by_scope.items():
            entry: JSON = {"scope": _scope(scope), "spans": encoded}
            if scope is not None and scope.schema_url:
                entry["schemaUrl"] = scope.schema_url
            scope_spans.append(entry)
        item: JSON = {"resource": _resource(resource), "scopeSpans": scope_spans}
        if resource.schema_url:
            item["schemaUrl"] = resource.schema_url
        resource_spans.append(item)
    return {"resourceSpans": resource_spans}


def _exemplars(exemplars: Sequence[Any]) -> list[JSON]:
    encoded = []
    for exemplar in exemplars:
        item: JSON = {
            "timeUnixNano": _int64(exemplar.time_unix_nano),
            "filteredAttributes": encode_attributes(exemplar.filtered_attributes),
        }
        if exemplar.span_id is not None and exemplar.trace_id is not None:
            item["spanId"] = _span_id(exemplar.span_id)
            item["traceId"] = _trace_id(exemplar.trace_id)
        if isinstance(exemplar.value, float):
            item["asDouble"] = _double(exemplar.value)
        elif isinstance(exemplar.value, int):
            item["asInt"] = _int64(exemplar.value)
        encoded.append(item)
    return encoded


def _number_point(point: Any, with_start: bool) -> JSON:
    encoded: JSON = {"attributes": encode_attributes(point.attributes)}
    if with_start:
        encoded["startTimeUnixNano"] = _int64(point.start_time_unix_nano)
    encoded["timeUnixNano"] = _int64(point.time_unix_nano)
    if isinstance(point.value, int):
        encoded["asInt"] = _int64(point.value)
    else:
        encoded["asDouble"] = _double(point.value)
    encoded["exemplars"] = _exemplars(point.exemplars)
    return encoded


def _histogram_point(point: Any) -> JSON:
    return {
        "attributes": encode_attributes(point.attributes),
        "startTimeUnixNano": _int64(point.start_time_unix_nano),
        "timeUnixNano": _int64(point.time_unix_nano),
        "count": _int64(point.count),
        "sum": _double(point.sum),
        "bucketCounts": [_int64(count) for count in point.bucket_counts],
        "explicitBounds": [_double(bound) for bound in point.explicit_bounds],
        "exemplars": _exemplars(point.exemplars),
        "min": _double(point.min),
        "max": _double(point.max),
    }


def _buckets(buckets: Any) -> JSON | None:
    if not buckets.bucket_counts:
        return None
    return {
        "offset": buckets.offset,
        "bucketCounts": [_int64(count) for count in buckets.bucket_counts],
    }


def _exponential_point(point: Any) -> JSON:
    encoded: JSON = {
        "attributes": encode_attributes(point.attributes),
        "startTimeUnixNano": _int64(point.start_time_unix_nano),
        "timeUnixNano": _int64(point.time_unix_nano),
        "count": _int64(point.count),
        "sum": _double(point.sum),
        "scale": point.scale,
        "zeroCount": _int64(point.zero_count),
        "flags": point.flags,
        "exemplars": _exemplars(point.exemplars),
        "min": _double(point.min),
        "max": _double(point.max),
    }
    for key, buckets in (("positive", point.positive), ("negative", point.negative)):
        encoded_buckets = _buckets(buckets)
        if encoded_buckets is not None:
            encoded[key] = encoded_buckets
    return encoded


def _encode_metric(metric: Any) -> JSON | None:
    encoded: JSON = {"name": metric.name, "description": metric.description, "unit": metric.unit}
    data = metric.data
    if isinstance(data, Gauge):
        points = [_number_point(point, with_start=False) for point in data.data_points]
        encoded["gauge"] = {"dataPoints": points}
    elif isinstance(data, Sum):
        encoded["sum"] = {
            "dataPoints": [_number_point(point, with_start=True) for point in data.data_points],
            "aggregationTemporality": int(data.aggregation_temporality),
            "isMonotonic": data.is_monotonic,
        }
    elif isinstance(data, Histogram):
        encoded["histogram"] = {
            "dataPoints": [_histogram_point(point) for point in data.data_points],
            "aggregationTemporality": int(data.aggregation_temporality),
        }
    elif isinstance(data, ExponentialHistogram):
        encoded["exponentialHistogram"] = {
            "dataPoints": [_exponential_point(point) for point in data.data_points],
            "aggregationTemporality": int(data.aggregation_temporality),
        }
    else:
        return None
    return encoded


def encode_metrics(data: MetricsData) -> JSON:
    """An ``ExportMetricsServiceRequest``."""
    resource_metrics = []
    for item in data.resource_metrics:
        scope_metrics = []
        for scoped in item.scope_metrics:
            metrics = [m for m in (_encode_metric(metric) for metric in scoped.metrics) if m]
            entry: JSON = {"scope": _scope(scoped.scope), "metrics": metrics}
            if scoped.schema_url:
                entry["schemaUrl"] = scoped.schema_url
            scope_metrics.append(entry)
        encoded: JSON = {"resource": _resource(item.resource), "scopeMetrics": scope_metrics}
        if item.schema_url:
            encoded["schemaUrl"] = item.schema_url
        resource_metrics.append(encoded)
    return {"resourceMetrics": resource_metrics}
