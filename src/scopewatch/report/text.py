"""The report for a terminal: sections, short stacks, colour when wanted, a one-line summary."""

from __future__ import annotations

import os
from typing import IO, Any

from scopewatch import semconv
from scopewatch.report.analyze import OTHER_INSTRUMENTATION

STACK_FRAMES = 4
"""Innermost user frames shown per stack."""
ROWS = 10
"""Rows shown per table."""


def use_colour(stream: IO[str], choice: str = "auto") -> bool:
    """``always``/``never``, or ``auto``: a terminal, ``NO_COLOR`` unset and ``TERM`` not dumb."""
    if choice != "auto":
        return choice == "always"
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class _Style:
    def __init__(self, colour: bool) -> None:
        self.colour = colour

    def _wrap(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.colour and text else text

    def bold(self, text: str) -> str:
        return self._wrap("1", text)

    def dim(self, text: str) -> str:
        return self._wrap("2", text)

    def red(self, text: str) -> str:
        return self._wrap("1;31", text)

    def yellow(self, text: str) -> str:
        return self._wrap("33", text)

    def green(self, text: str) -> str:
        return self._wrap("32", text)

    def cyan(self, text: str) -> str:
        return self._wrap("36", text)


def short_path(path: str) -> str:
    """``path`` relative to the current directory when it is inside it."""
    if not path:
        return path
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return path
    return path if relative.startswith("..") else relative


def _short_location(location: str) -> str:
    path, _, line = location.rpartition(":")
    return f"{short_path(path)}:{line}" if path and line.isdigit() else short_path(location)


def user_frames(stack: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The innermost frames worth showing, outermost first."""
    kept = [frame for frame in stack if OTHER_INSTRUMENTATION not in frame["file"]]
    return kept[-STACK_FRAMES:]


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 0.001:
        return f"{value * 1e6:.0f}µs"
    if value < 1:
        return f"{value * 1e3:.1f}ms"
    return f"{value:.2f}s"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def summary_line(report: dict[str, Any]) -> str:
    """One line: violations by kind, cancellations, spans, traces and the files read."""
    summary = report["summary"]
    count = summary["violations"]
    text = _plural(count, "violation")
    if count:
        text += " (" + ", ".join(f"{n} {k}" for k, n in summary["violations_by_kind"].items()) + ")"
    files = ", ".join(short_path(path) for path in report["files"])
    return (
        f"scopewatch: {text}, {_plural(summary['cancellations'], 'cancellation')}, "
        f"{_plural(summary['spans'], 'span')} in {_plural(summary['traces'], 'trace')} "
        f"from {files}"
    )


def render(report: dict[str, Any], colour: bool = False) -> str:
    """The whole text report."""
    style = _Style(colour)
    lines: list[str] = []
    _violations(report, style, lines)
    _cancellations(report, style, lines)
    _scopes(report, style, lines)
    _tasks(report, style, lines)
    _locks(report, style, lines)
    _sessions(report, style, lines)
    _alerts(report, style, lines)
    summary = summary_line(report)
    ok = report["summary"]["violations"] == 0
    lines.append(style.green(summary) if ok else style.red(summary))
    return "\n".join(lines) + "\n"


def _heading(style: _Style, lines: list[str], title: str) -> None:
    lines.append(style.bold(title))


def _stack(style: _Style, lines: list[str], stack: list[dict[str, Any]]) -> None:
    for frame in user_frames(stack):
        where = f"{short_path(frame['file'])}:{frame['line']}"
        lines.append(style.dim(f"          {where} in {frame['function']}"))


def _violations(report: dict[str, Any], style: _Style, lines: list[str]) -> None:
    items = report["violations"]
    if not items:
        _heading(style, lines, "Violations: none")
        lines.append("")
        return
    _heading(style, lines, f"Violations ({len(items)})")
    for number, item in enumerate(items, start=1):
        lines.append(
            f"{number:>3}. {style.red(item['kind'])} ({item['cause']}) in {item['scope_kind']}"
            + (f": {_subject(item)}{item['kind_text']}" if item["kind_text"] else "")
        )
        enter, exit_ = item["enter"], item["exit"]
        width = max(len(enter["label"]), len(exit_["label"]))
        for role in (enter, exit_):
            if role is exit_ and not (exit_["task"] or exit_["stack"]):
                continue
            where = _where(role)
            lines.append(f"     {role['label']:<{width}} {style.cyan(repr(role['task']))}{where}")
            _stack(style, lines, role["stack"])
        if item["asyncgen"]:
            lines.append(f"     async generator: {item['asyncgen']}")
        if item["cause_text"]:
            lines.append(f"     cause: {item['cause_text']}")
        if item["hint"]:
            lines.append(f"     {style.green('fix:')} {item['hint']}")
        span = item["span"]
        lines.append(style.dim(f"     trace {span['trace_id']} span {span['span_id']}"))
    lines.append("")


def _where(role: dict[str, Any]) -> str:
    """`` at app.py:3 (library: mcp/client/session.py:475)``: the application's line first."""
    app, location = role.get("app_location", ""), role["location"]
    if app and app != location:
        library = f" (library: {_short_location(location)})" if location else ""
        return f" at {_short_location(app)}{library}"
    return f" at {_short_location(location)}" if location else ""


def _subject(item: dict[str, Any]) -> str:
    return "the cancellation " if item["kind"] == semconv.KIND_CANCEL_SWALLOWED else ""


def _cancellations(report: dict[str, Any], style: _Style, lines: list[str]) -> None:
    cancellations = report["cancellations"]
    if not cancellations["total"]:
        return
    by_origin = ", ".join(f"{origin} {n}" for origin, n in cancellations["by_origin"].items())
    _heading(style, lines, f"Cancellations ({cancellations['total']}: {by_origin})")
    for item in cancellations["items"][:ROWS]:
        where = _short_location(item["location"]) or "unknown location"
        who = f" by task {item['task']!r}" if item["task"] else ""
        origin = f"{item['origin']:<10}"
        lines.append(
            f"  {item['count']:>4}x {style.yellow(origin)} {item['span_name']} at {where}{who}"
        )
    lines.append("")


def _scopes(report: dict[str, Any], style: _Style, lines: list[str]) -> None:
    slowest = report["slowest_scopes"]
    if slowest:
        _heading(style, lines, "Slowest scopes")
        for item in slowest[:ROWS]:
            lines.append(
                f"  {_seconds(item['duration_s']):>9}  {item['scope_kind']:<22} "
                f"{item['outcome'] or '-':<17} {item['task']:<12} "
                f"{_short_location(item['location'])} {style.dim(item['function'])}"
            )
        lines.append("")
    counts = report["scope_counts"]
    if counts["rows"]:
        _heading(style, lines, f"Scopes by kind and outcome ({counts['source_text']})")
        for row in counts["rows"][:ROWS]:
            timed = ""
            if row["timed"]:
                timed = (
                    f"  {row['timed']} timed: mean {_seconds(row['mean_s'])}, "
                    f"max {_seconds(row['max_s'])}"
                )
            lines.append(
                f"  {row['scope_kind']:<22} {row['outcome']:<17} {row['count']:>7}"
                + style.dim(timed)
            )
        lines.append("")


def _tasks(report: dict[str, Any], style: _Style, lines: list[str]) -> None:
    tasks = report["tasks"]
    if not tasks["by_outcome"] and not tasks["spans"] and not tasks["durations"]:
        return
    counts = ", ".join(f"{k or '?'} {n}" for k, n in tasks["by_outcome"].items()) or "none"
    _heading(style, lines, f"Tasks by outcome ({tasks['counts_source_text']})")
    lines.append(f"  {counts}")
    outcomes = ", ".join(f"{k or '?'} {n}" for k, n in tasks["spans_by_outcome"].items())
    lines.append(f"  {_plural(tasks['spans'], 'task span')}{': ' + outcomes if outcomes else ''}")
    for row in tasks["durations"]:
        lines.append(
            f"  {row['outcome']:<10} {row['count']:>7} timed  mean {_seconds(row['mean_s']):>8}"
            f"  max {_seconds(row['max_s']):>8}"
        )
    lines.append("")


def _locks(report: dict[str, Any], style: _Style, lines: list[str]) -> None:
    locks = report["locks"]
    if not locks:
        return
    _heading(style, lines, "Most contended locks")
    for item in locks[:ROWS]:
        outcomes = ", ".join(f"{k} {n}" for k, n in item["wait_by_outcome"].items())
        lines.append(
            f"  {item['contentions']:>6} waits  {item['kind']:<18} {item['name']:<28} "
            f"waited {_seconds(item['wait_sum_s'])} (max {_seconds(item['wait_max_s'])})"
            + (f"  {style.dim(outcomes)}" if outcomes else "")
        )
    lines.append("")


def _sessions(report: dict[str, Any], style: _Style, lines: list[str]) -> None:
    sessions = report["sessions"]
    if not sessions["spans"] and not sessions["by_kind"]:
        return
    _heading(style, lines, "Sessions")
    for item in sessions["spans"][:ROWS]:
        outcome = item["outcome"] or "?"
        shown = style.green(outcome) if outcome == "ok" else style.yellow(outcome)
        extra = (
            f"  {style.red(_plural(item['violations'], 'violation'))}" if item["violations"] else ""
        )
        name = f" {item['session_name']}" if item["session_name"] else ""
        lines.append(f"  {item['kind']}{name}: {shown} after {_seconds(item['duration_s'])}{extra}")
    for row in sessions["by_kind"]:
        lines.append(
            f"  {row['kind']} {row['outcome']}: {row['count']} sessions, "
            f"mean {_seconds(row['mean_s'])}, max {_seconds(row['max_s'])}"
        )
    open_at_end = {k: n for k, n in sessions["active_at_end"].items() if n}
    if open_at_end:
        lines.append(
            "  still open at the end: " + ", ".join(f"{k} {n}" for k, n in open_at_end.items())
        )
    lines.append("")


def _alerts(report: dict[str, Any], style: _Style, lines: list[str]) -> None:
    if not report["alerts"]:
        return
    _heading(style, lines, "Alerts fired")
    for row in report["alerts"]:
        lines.append(f"  {row['count']:>5}x {row['rule']} -> {row['action']}")
    lines.append("")
