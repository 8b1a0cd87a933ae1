"""The ``scopewatch`` command: ``run``, ``report``, ``demo`` and ``doctor``.

This module only builds the argument parser and dispatches; each subcommand lives in
``scopewatch.commands``.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from scopewatch.version import __version__

DESCRIPTION = """\
scopewatch: OpenTelemetry spans and explained violations for async cancel scopes and tasks.

Nothing to start: `scopewatch run` writes telemetry to a local file and prints the report."""

EXAMPLES = """\
examples:
  scopewatch demo                               the bundled buggy service and its report
  scopewatch run -- python app.py               run your program, then read its report
  scopewatch report --format html -o r.html scopewatch-1234.jsonl
  scopewatch doctor                             versions, entry points, configuration

`scopewatch COMMAND --help` shows each command's options and examples.
"""


class _Parser(argparse.ArgumentParser):
    """Errors as one line (with where to look for help) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand."""
    from scopewatch.commands import demo, doctor, report, run

    parser = _Parser(
        prog="scopewatch",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"scopewatch {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=_Parser)
    run.add_parser(subparsers)
    report.add_parser(subparsers)
    demo.add_parser(subparsers)
    doctor.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; its exit status."""
    from scopewatch.commands._child import exit_like

    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        status: int = handler(args)
    except KeyboardInterrupt:
        return 130
    return exit_like(status)


if __name__ == "__main__":
    sys.exit(main())
