"""``scopewatch report``: explain OTLP/JSON lines as text, JSON or a self-contained HTML page."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from scopewatch.report import ReportError, build_report, load

if TYPE_CHECKING:
    import argparse

EXAMPLES = """\
examples:
  scopewatch report scopewatch-1234.jsonl
  scopewatch report --format json scopewatch-1234.jsonl | jq '.violations[].kind'
  scopewatch report --format html -o report.html scopewatch-1234.jsonl
  scopewatch report worker-*.jsonl            (several files make one report)

Input: OTLP/JSON lines, as written by the scopewatch_file exporter (`scopewatch run`, or
OTEL_TRACES_EXPORTER=scopewatch_file) or by the collector's file exporter.
Exit status: 0 when the report was made (whatever it found), 1 when it could not be.
"""


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Register ``scopewatch report``."""
    import argparse

    parser = subparsers.add_parser(
        "report",
        help="explain a telemetry file: violations, cancellations, slow scopes, locks, sessions",
        description="Read OTLP/JSON lines and report every violation (with both tasks, both "
        "stacks, the cause and a fix), cancellations by origin, the slowest scopes, the most "
        "contended locks and the sessions.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="OTLP/JSON lines file(s)")
    parser.add_argument(
        "-f",
        "--format",
        choices=("text", "json", "html"),
        default="text",
        help="output format (default: text)",
    )
    parser.add_argument("-o", "--output", metavar="OUT", help="write to OUT instead of stdout")
    parser.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour in the text format (auto: when writing to a terminal and NO_COLOR is unset)",
    )
    parser.set_defaults(handler=main)


def render(paths: list[str], fmt: str, colour: bool) -> str:
    """The report of ``paths`` in ``fmt`` (``text``, ``json`` or ``html``).

    Raises:
        ReportError: a file is missing or unreadable.
    """
    telemetry = load(paths)
    report = build_report(telemetry)
    if fmt == "json":
        return json.dumps(report, indent=2, sort_keys=False) + "\n"
    if fmt == "html":
        from scopewatch.report import html

        return html.render(report, telemetry)
    from scopewatch.report import text

    return text.render(report, colour=colour)


def main(args: argparse.Namespace) -> int:
    """Write the report; 1 with one line on stderr when the input cannot be read."""
    from scopewatch.report.text import use_colour

    colour = use_colour(sys.stdout, args.color) if args.output is None else args.color == "always"
    try:
        output = render(list(args.files), args.format, colour)
    except ReportError as error:
        print(f"scopewatch report: {error}", file=sys.stderr)
        return 1
    if args.output is None:
        sys.stdout.write(output)
        return 0
    try:
        with open(args.output, "w", encoding="utf-8") as file:
            file.write(output)
    except OSError as error:
        print(f"scopewatch report: cannot write {args.output} ({error.strerror})", file=sys.stderr)
        return 1
    print(f"scopewatch report: wrote {args.output}", file=sys.stderr)
    return 0
