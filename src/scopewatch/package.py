"""What scopewatch instruments, as ``BaseInstrumentor`` dependency requirements."""

from __future__ import annotations

# Empty: asyncio is always there and anyio, mcp and the Claude Agent SDK are patched only when
# they are importable, so no requirement may stop ``opentelemetry-instrument`` from loading us.
_instruments: tuple[str, ...] = ()
