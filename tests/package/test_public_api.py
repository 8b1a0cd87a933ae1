"""The public API: every exported name resolves, and importing the package stays cheap."""

from __future__ import annotations

import subprocess
import sys

import pytest

import scopewatch


@pytest.mark.parametrize("name", scopewatch.__all__)
def test_every_public_name_resolves(name):
    assert getattr(scopewatch, name) is not None


def test_unknown_attribute_raises_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = scopewatch.nope


def test_import_does_not_load_opentelemetry():
    """The pytest plugin imports scopewatch at every pytest start, active or not."""
    code = "import sys, scopewatch; print(sorted(m for m in sys.modules if 'opentelemetry' in m))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
