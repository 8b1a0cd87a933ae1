"""Records -> spans, events and metrics (no patching)."""
