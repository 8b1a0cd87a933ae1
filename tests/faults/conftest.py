"""Fixtures of the fault-injection tests: production mode, instrumented setups, a fresh listener."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from scopewatch import _safety
from scopewatch.alerts import debugger
from tests.support.faults import CROSS_TASK_RULE, Setup


@pytest.fixture(autouse=True)
def production(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run scopewatch as in production: our errors are logged and disable the failing part.

    The suite sets ``SCOPEWATCH_STRICT=1`` so that a bug of ours re-raises instead of hiding
    behind the log-and-disable path. Fault injection tests that very path, so it is switched
    off here; every test still asserts the exact set of ERROR records, so an unexpected
    failure of ours cannot hide either.
    """
    monkeypatch.setattr(_safety, "STRICT", False)
    monkeypatch.setattr(_safety, "_warned", set())


@pytest.fixture
def setup_factory() -> Iterator[Callable[..., Setup]]:
    """``make(span_processors=[...], metric_readers=[...], **settings)`` instruments; undone after.

    The healthy exporter's processor is added first, then the given span processors; the
    healthy reader comes first, then the given readers.
    """
    made: list[Setup] = []

    def make(
        span_processors: tuple[Any, ...] = (),
        metric_readers: tuple[Any, ...] = (),
        **settings: Any,
    ) -> Setup:
        healthy = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(healthy))
        for processor in span_processors:
            tracer_provider.add_span_processor(processor)
        reader = InMemoryMetricReader()
        meter_provider = MeterProvider(metric_readers=[reader, *metric_readers])
        setup = Setup(tracer_provider, meter_provider, healthy, reader)
        settings.setdefault("rules", CROSS_TASK_RULE)
        settings.setdefault("default_rule", False)
        setup.instrumentor.instrument(
            tracer_provider=tracer_provider, meter_provider=meter_provider, **settings
        )
        made.append(setup)
        return setup

    yield make
    for setup in made:
        if setup.instrumentor.is_instrumented_by_opentelemetry:
            setup.instrumentor.uninstrument()
        setup.tracer_provider.shutdown()
        setup.meter_provider.shutdown()


@pytest.fixture
def root_handler() -> Iterator[Callable[[logging.Handler], None]]:
    """Add a handler to the root logger after caplog's (so caplog still sees each record)."""
    added: list[logging.Handler] = []

    def add(handler: logging.Handler) -> None:
        logging.getLogger().addHandler(handler)
        added.append(handler)

    yield add
    for handler in added:
        logging.getLogger().removeHandler(handler)


@pytest.fixture
def fresh_listener(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> debugger.Listener:
    """A new process-wide listener, and ``debugpy`` importable only from ``tmp_path``."""
    listener = debugger.Listener()
    monkeypatch.setattr(debugger, "listener", listener)
    for name in [name for name in sys.modules if name == "debugpy" or name.startswith("debugpy.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(tmp_path))
    return listener
