"""``ScopeWatchInstrumentor``: the ``BaseInstrumentor`` that ``opentelemetry-instrument`` loads."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opentelemetry import metrics, trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from scopewatch import _runtime, semconv
from scopewatch.config import load_settings
from scopewatch.instrumentation import FEATURE_MODULES, features
from scopewatch.package import _instruments
from scopewatch.telemetry.metrics import Instruments
from scopewatch.version import __version__

if TYPE_CHECKING:
    from collections.abc import Collection


ALERTS_MODULE = "scopewatch.alerts"


class ScopeWatchInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Instruments cancel scopes, tasks, locks and SDK sessions.

    Keyword arguments of ``instrument()``: ``tracer_provider``, ``meter_provider`` and any
    setting of DESIGN section 5 in lower case (``spans="all"``, ``slow_threshold=0.5`` ...);
    they take precedence over ``OTEL_PYTHON_SCOPEWATCH_*`` variables and the config file.
    """

    _installed: list[features.Installed]

    def instrumentation_dependencies(self) -> Collection[str]:
        """Nothing is required: every target is patched only when importable."""
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        settings = load_settings(kwargs)
        tracer_provider = kwargs.get("tracer_provider") or trace.get_tracer_provider()
        meter_provider = kwargs.get("meter_provider") or metrics.get_meter_provider()
        tracer = trace.get_tracer(
            semconv.INSTRUMENTATION_SCOPE, __version__, tracer_provider=tracer_provider
        )
        meter = metrics.get_meter(
            semconv.INSTRUMENTATION_SCOPE, __version__, meter_provider=meter_provider
        )
        runtime = _runtime.Runtime(
            settings=settings,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            tracer=tracer,
            meter=meter,
            instruments=Instruments(meter),
        )
        _runtime.current = runtime
        self._installed = []
        for feature in FEATURE_MODULES:
            if settings.enabled(feature):
                self._add(features.install(feature, runtime))
        self._add(features.install("alerts", runtime, (ALERTS_MODULE,)))

    def _add(self, installed: features.Installed | None) -> None:
        if installed is not None:
            self._installed.append(installed)

    def _uninstrument(self, **kwargs: Any) -> None:
        del kwargs
        for installed in reversed(getattr(self, "_installed", [])):
            features.uninstall(installed)
        self._installed = []
        runtime = _runtime.current
        if runtime is not None:
            runtime.instruments.flush()
        _runtime.current = None
