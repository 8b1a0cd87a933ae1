"""``scopewatch report``: read OTLP/JSON lines and explain what happened.

``load`` reads files into :class:`~scopewatch.report.model.Telemetry`; ``build_report`` turns it
into one plain dict (schema ``scopewatch.report/1``, documented in docs/report.md) that the text,
JSON and HTML renderers share.
"""

from __future__ import annotations

from scopewatch.report.build import build_report as build_report
from scopewatch.report.load import ReportError as ReportError
from scopewatch.report.load import load as load

__all__ = ("ReportError", "build_report", "load")
