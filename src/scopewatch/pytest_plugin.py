"""pytest plugin: fail tests that commit cancel-scope violations (inactive until asked)."""

from __future__ import annotations
