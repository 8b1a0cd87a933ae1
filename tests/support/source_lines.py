"""Find a test program's own lines by a marker comment, so assertions name lines, not numbers."""

from __future__ import annotations

from pathlib import Path


def marked_line(path: str | Path, marker: str) -> int:
    """The number of the first line of ``path`` that ends with ``marker``."""
    for number, text in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if text.rstrip().endswith(marker):
            return number
    raise AssertionError(f"no line ends with {marker!r} in {path}")
