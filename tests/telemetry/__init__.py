"""``scopewatch.telemetry``: what reaches the SDK (spans, metrics, exports) and what it costs."""
