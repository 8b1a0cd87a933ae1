"""The user-facing tools: the ``scopewatch`` CLI, its reports, and the pytest plugin."""
