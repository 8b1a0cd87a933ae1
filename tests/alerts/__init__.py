"""``scopewatch.alerts``: rules, the engine, the span processor and the actions."""
