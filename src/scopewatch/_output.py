"""Where the ``scopewatch_file`` exporters write, and how (no OpenTelemetry SDK needed here)."""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

_logger = logging.getLogger("scopewatch")

OUTPUT_VARIABLE = "SCOPEWATCH_OUTPUT"
"""Path of the OTLP/JSON lines file the ``scopewatch_file`` exporters append to."""


def default_output_path(environ: Mapping[str, str] | None = None) -> str:
    """``$SCOPEWATCH_OUTPUT``, or ``scopewatch-<pid>.jsonl`` in the current directory."""
    environ = os.environ if environ is None else environ
    configured = environ.get(OUTPUT_VARIABLE, "").strip()
    if configured:
        return os.path.abspath(configured)
    return os.path.abspath(f"scopewatch-{os.getpid()}.jsonl")


class LineWriter:
    """Appends one JSON document per line; logs the first failure once and keeps trying."""

    def __init__(self, path: str | None) -> None:
        self.path = os.path.abspath(path) if path else default_output_path()
        self._lock = threading.Lock()
        self._failed = False

    def write(self, document: dict[str, Any]) -> bool:
        try:
            data = (json.dumps(document, separators=(",", ":"), allow_nan=False) + "\n").encode()
        except ValueError:
            _logger.exception("scopewatch: telemetry could not be encoded as JSON; dropped")
            return False
        try:
            with self._lock:
                descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    written = 0
                    while written < len(data):
                        written += os.write(descriptor, data[written:])
                finally:
                    os.close(descriptor)
        except OSError as error:
            if not self._failed:
                self._failed = True
                _logger.error(
                    "scopewatch: cannot write telemetry to %s=%s (%s); set it to a writable path",
                    OUTPUT_VARIABLE,
                    self.path,
                    error.strerror or error,
                )
            return False
        return True
