"""Faulty parts for the fault-injection tests: exporters, processors, readers, logging
handlers and a ``debugpy`` package that raise or hang (bounded by :class:`_faults.Hang`)."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricReader
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from tests.support.faults import LOGGER, Hang, InjectedFault

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from opentelemetry.sdk.trace import ReadableSpan


# --- spans ------------------------------------------------------------------------------------


class RaisingExporter(SpanExporter):
    """An exporter whose every export raises."""

    def __init__(self) -> None:
        self.calls = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls += 1
        raise InjectedFault("exporter down")

    def shutdown(self) -> None:
        """Nothing to release."""


class HangingExporter(SpanExporter):
    """An exporter whose every export blocks until released (bounded)."""

    def __init__(self, hang: Hang) -> None:
        self.hang = hang

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.hang.wait()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing to release."""


class FaultyProcessor(SpanProcessor):
    """A span processor that raises (or hangs) in ``on_start`` and/or ``on_end``."""

    def __init__(self, on_start: bool = False, on_end: bool = False, hang: Hang | None = None):
        self.raise_on_start = on_start
        self.raise_on_end = on_end
        self.hang = hang
        self.starts = 0
        self.ends = 0

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.starts += 1
        if self.raise_on_start:
            raise InjectedFault("on_start bug")

    def on_end(self, span: ReadableSpan) -> None:
        self.ends += 1
        if self.hang is not None and self.ends <= 3:  # the first few ends hang
            self.hang.wait()
        if self.raise_on_end:
            raise InjectedFault("on_end bug")


# --- metrics -----------------------------------------------------------------------------------


class FaultyMetricExporter(MetricExporter):
    """A metric exporter whose every export raises, or hangs (bounded) when given a hang."""

    def __init__(self, hang: Hang | None = None) -> None:
        super().__init__()
        self.hang = hang
        self.called = threading.Event()

    def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> Any:
        self.called.set()
        if self.hang is not None:
            self.hang.wait()
            return MetricExportResult.SUCCESS
        raise InjectedFault("metrics backend down")

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Nothing to release."""


class RaisingReader(MetricReader):
    """A pull reader (think of a scrape endpoint) whose handling of collected data raises."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 0

    def _receive_metrics(self, metrics_data: Any, timeout_millis: float = 10_000, **_: Any) -> None:
        raise InjectedFault("scrape handler bug")

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Nothing to release."""

    def scrape(self) -> None:
        """What a scrape thread does: collect, and survive the reader's failure."""
        try:
            self.collect()
        except InjectedFault:
            self.failures += 1


# --- alert actions -----------------------------------------------------------------------------


class BrokenHandler(logging.Handler):
    """A logging handler whose ``emit`` raises (or first hangs) on scopewatch's records."""

    def __init__(self, hang: Hang | None = None) -> None:
        super().__init__()
        self.hang = hang
        self.calls = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.name != LOGGER:
            return
        self.calls += 1
        if self.hang is not None:
            self.hang.wait()
            return
        raise InjectedFault("log shipper down")


def fake_debugpy(tmp_path: Path, body: str) -> None:
    package = tmp_path / "debugpy"
    package.mkdir()
    (package / "__init__.py").write_text(body)
