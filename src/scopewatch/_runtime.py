"""What an ``instrument()`` call sets up, shared by every feature while it is active."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.metrics import Meter, MeterProvider
    from opentelemetry.trace import Tracer, TracerProvider

    from scopewatch.config import Settings
    from scopewatch.telemetry.metrics import Instruments


@dataclass
class Runtime:
    """Settings, providers and instruments of the active instrumentation."""

    settings: Settings
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    tracer: Tracer
    meter: Meter
    instruments: Instruments
    extras: dict[str, Any]
    """Per-feature state (e.g. the scope tracker), keyed by feature name."""


current: Runtime | None = None
"""The active runtime, or ``None`` when scopewatch is not instrumenting."""
