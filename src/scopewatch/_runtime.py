"""What an ``instrument()`` call sets up, shared by every feature while it is active."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from opentelemetry.metrics import Meter, MeterProvider
    from opentelemetry.trace import Tracer, TracerProvider

    from scopewatch._core.tasks import TaskTracker
    from scopewatch._core.tracker import ScopeTracker
    from scopewatch.config import Settings
    from scopewatch.telemetry.metrics import Instruments
    from scopewatch.telemetry.scopes import ViolationListener


@dataclass
class Runtime:
    """Settings, providers and instruments of the active instrumentation."""

    settings: Settings
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    tracer: Tracer
    meter: Meter
    instruments: Instruments
    scopes: ScopeTracker | None = None
    """The scopes feature's tracker, once a scope module is installed."""
    tasks: TaskTracker | None = None
    """The tasks feature's tracker (asyncio's; trio tasks report to it too)."""
    violation_listeners: list[ViolationListener] = field(default_factory=list)
    """Callables told about every violation (sessions and the pytest plugin subscribe)."""
    on_provider_shutdown: list[Callable[[Tracer], None]] = field(default_factory=list)
    """Called with a no-op tracer when the tracer provider shuts down."""


current: Runtime | None = None
"""The active runtime, or ``None`` when scopewatch is not instrumenting."""
