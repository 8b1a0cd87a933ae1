"""Paths of the repository the tests read (configs, deploy files, helper scripts)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The repository's root directory."""
TESTS = ROOT / "tests"
