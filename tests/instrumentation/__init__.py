"""``scopewatch.instrumentation``: one module per patched API, on real anyio, asyncio and trio."""
