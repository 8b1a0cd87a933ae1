"""Read OTLP/JSON lines files (``ExportTraceServiceRequest`` / ``ExportMetricsServiceRequest``)."""

from __future__ import annotations

import json
from typing import Any

from scopewatch.report.model import Attributes, Event, Point, Span, Telemetry

_DELTA = 1


class ReportError(Exception):
    """The input cannot be read; the message is one line naming the file and the problem."""


def load(paths: list[str]) -> Telemetry:
    """Read every file; spans in file order, metric streams reduced to their latest value."""
    telemetry = Telemetry()
    streams: dict[tuple[Any, ...], Point] = {}
    for path in paths:
        telemetry.files.append(path)
        for document in _documents(path):
            telemetry.lines += 1
            if not isinstance(document, dict):
                raise ReportError(
                    f"{path}: expected OTLP/JSON objects, found {type(document).__name__}"
                )
            for resource_spans in document.get("resourceSpans") or []:
                telemetry.spans.extend(_spans(resource_spans))
            for resource_metrics in document.get("resourceMetrics") or []:
                _metrics(resource_metrics, streams)
    telemetry.points = list(streams.values())
    return telemetry


def _documents(path: str) -> list[Any]:
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ReportError(f"{path}: is a directory, expected an OTLP/JSON lines file") from None
    except OSError as error:
        raise ReportError(f"{path}: cannot be read ({error.strerror or error})") from None
    except UnicodeDecodeError:
        raise ReportError(f"{path}: is not a text file (expected OTLP/JSON lines)") from None
    documents: list[Any] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            documents.append(json.loads(line))
        except json.JSONDecodeError as error:
            try:  # one pretty-printed document rather than JSON lines
                return [json.loads(text)]
            except json.JSONDecodeError:
                pass
            raise ReportError(
                f"{path}:{number}: not valid JSON ({error.msg} at column {error.colno}); "
                "expected one OTLP/JSON export request per line"
            ) from None
    if not documents:
        raise ReportError(f"{path}: is empty (no telemetry was written)")
    return documents


def value_of(any_value: Any) -> Any:  # noqa: PLR0911
    """The Python value of an OTLP ``AnyValue``."""
    if not isinstance(any_value, dict):
        return any_value
    for key, value in any_value.items():
        if key in {"stringValue", "boolValue"}:
            return value
        if key == "intValue":
            return int(value)
        if key == "doubleValue":
            return float(value)
        if key == "arrayValue":
            return [value_of(item) for item in (value or {}).get("values") or []]
        if key == "kvlistValue":
            return attributes_of((value or {}).get("values"))
        if key == "bytesValue":
            return value
    return None


def attributes_of(key_values: Any) -> Attributes:
    """A ``KeyValue`` list as a dict."""
    return {
        item.get("key", ""): value_of(item.get("value"))
        for item in key_values or []
        if isinstance(item, dict)
    }


def _resource_key(resource: Any) -> str:
    attributes = attributes_of((resource or {}).get("attributes"))
    instance = attributes.get("service.instance.id")
    if instance:
        return str(instance)
    return json.dumps(attributes, sort_keys=True, default=str)


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _spans(resource_spans: dict[str, Any]) -> list[Span]:
    resource = _resource_key(resource_spans.get("resource"))
    spans = []
    for scope_spans in resource_spans.get("scopeSpans") or []:
        for raw in scope_spans.get("spans") or []:
            status = raw.get("status") or {}
            spans.append(
                Span(
                    trace_id=str(raw.get("traceId", "")),
                    span_id=str(raw.get("spanId", "")),
                    parent_span_id=str(raw.get("parentSpanId") or ""),
                    name=str(raw.get("name", "")),
                    start_ns=_int(raw.get("startTimeUnixNano")),
                    end_ns=_int(raw.get("endTimeUnixNano")),
                    attributes=attributes_of(raw.get("attributes")),
                    events=tuple(
                        Event(
                            name=str(event.get("name", "")),
                            time_ns=_int(event.get("timeUnixNano")),
                            attributes=attributes_of(event.get("attributes")),
                        )
                        for event in raw.get("events") or []
                    ),
                    status_code=_int(status.get("code")),
                    status_message=str(status.get("message") or ""),
                    links=tuple(
                        (str(link.get("traceId", "")), str(link.get("spanId", "")))
                        for link in raw.get("links") or []
                    ),
                    resource=resource,
                )
            )
    return spans


def _metrics(resource_metrics: dict[str, Any], streams: dict[tuple[Any, ...], Point]) -> None:
    resource = _resource_key(resource_metrics.get("resource"))
    for scope_metrics in resource_metrics.get("scopeMetrics") or []:
        for metric in scope_metrics.get("metrics") or []:
            name = str(metric.get("name", ""))
            for kind in ("sum", "gauge", "histogram"):
                data = metric.get(kind)
                if isinstance(data, dict):
                    delta = _int(data.get("aggregationTemporality")) == _DELTA
                    for raw in data.get("dataPoints") or []:
                        _merge(streams, resource, name, kind, delta, raw)


def _merge(
    streams: dict[tuple[Any, ...], Point],
    resource: str,
    name: str,
    kind: str,
    delta: bool,
    raw: dict[str, Any],
) -> None:
    attributes = attributes_of(raw.get("attributes"))
    key = (resource, name, kind, json.dumps(attributes, sort_keys=True, default=str))
    time_ns = _int(raw.get("timeUnixNano"))
    point = streams.get(key)
    if point is None:
        point = streams[key] = Point(metric=name, attributes=attributes, kind=kind)
    elif not delta and time_ns < point.time_ns:
        return  # an older cumulative point
    if kind == "histogram":
        count = _int(raw.get("count"))
        total = float(raw.get("sum") or 0.0)
        buckets = tuple(_int(bucket) for bucket in raw.get("bucketCounts") or [])
        minimum = _float_or_none(raw.get("min"))
        maximum = _float_or_none(raw.get("max"))
        if delta and point.count:
            point.count += count
            point.total += total
            point.buckets = tuple(a + b for a, b in zip(point.buckets, buckets, strict=False))
            point.minimum = _pick(min, point.minimum, minimum)
            point.maximum = _pick(max, point.maximum, maximum)
        else:
            point.count, point.total, point.buckets = count, total, buckets
            point.minimum, point.maximum = minimum, maximum
        point.bounds = tuple(float(bound) for bound in raw.get("explicitBounds") or [])
    else:
        value = float(raw["asInt"]) if "asInt" in raw else float(raw.get("asDouble") or 0.0)
        point.value = point.value + value if delta and kind == "sum" else value
    point.time_ns = max(point.time_ns, time_ns)


def _float_or_none(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _pick(choose: Any, first: float | None, second: float | None) -> float | None:
    if first is None:
        return second
    if second is None:
        return first
    result: float = choose(first, second)
    return result
