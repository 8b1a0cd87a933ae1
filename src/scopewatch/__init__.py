"""scopewatch: OpenTelemetry spans for async cancel scopes and tasks, with explained misuse.

Load it with ``opentelemetry-instrument python app.py`` (entry point ``scopewatch``), or by hand::

    from scopewatch import ScopeWatchInstrumentor

    ScopeWatchInstrumentor().instrument(spans="anomalies")

Every ``OTEL_PYTHON_SCOPEWATCH_*`` setting is documented in ``scopewatch.environment_variables``
and the README.
"""

from __future__ import annotations

from scopewatch.instrumentor import ScopeWatchInstrumentor as ScopeWatchInstrumentor
from scopewatch.version import __version__ as __version__

__all__ = ("ScopeWatchInstrumentor", "__version__")
