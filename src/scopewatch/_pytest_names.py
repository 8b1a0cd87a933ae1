"""Names the pytest plugin and its watch share (a leaf module: imports nothing of scopewatch)."""

from __future__ import annotations

MARKER = "scopewatch_allow"
"""The marker that allows violation kinds or causes in one test."""


class ScopewatchViolationWarning(UserWarning):
    """A violation happened during a test run with ``--scopewatch=warn``."""
