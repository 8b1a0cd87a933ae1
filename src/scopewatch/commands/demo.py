"""``scopewatch demo``: the bundled example service, run instrumented, and its report."""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from importlib import resources
from typing import TYPE_CHECKING, Any

from scopewatch.commands import run

if TYPE_CHECKING:
    import argparse

DEMO_MODULE = "demo_service.py"
DEMO_DEFAULTS = {
    "OTEL_PYTHON_SCOPEWATCH_SLOW_THRESHOLD": "0.1",
    "OTEL_PYTHON_SCOPEWATCH_DEFAULT_RULE": "false",
}
"""The demo's scopes are short, so a 0.1 s threshold shows its slow job; the report follows, so
the live log line per violation is off. The environment overrides both."""

EXAMPLES = """\
examples:
  scopewatch demo
  scopewatch demo --spans all --format html --report-file demo.html
  scopewatch demo --show-source              (print the example's code)

The example service (scopewatch/examples/demo_service.py) serves healthy traffic next to five
classic bugs: an abandoned generator holding a task group, a client closed from another task,
an asyncio.timeout exited by another task, exit stacks closed in the wrong order and a
swallowed cancellation. It needs no server and ends by itself in about a second.
"""


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Register ``scopewatch demo``."""
    import argparse

    parser = subparsers.add_parser(
        "demo",
        help="run the bundled example service with classic bugs and print its report",
        description="Run a small bundled service that exercises the classic cancel-scope bugs "
        "next to healthy traffic, instrumented exactly like `scopewatch run`, and print the "
        "report.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_run_options(parser)
    parser.add_argument(
        "--show-source", action="store_true", help="print the example's source and exit"
    )
    parser.set_defaults(handler=main)


def source() -> str:
    """The example service's source code."""
    return resources.files("scopewatch.examples").joinpath(DEMO_MODULE).read_text("utf-8")


def main(args: argparse.Namespace) -> int:
    """Run the example as a script of its own, then report.

    The example is copied to a temporary directory and run from there: inside the installed
    ``scopewatch`` package its frames would count as library frames and vanish from the stacks.
    The program and the report run in that directory, so stacks read ``demo_service.py:LINE``.
    """
    if args.show_source:
        sys.stdout.write(source())
        return 0
    if importlib.util.find_spec("anyio") is None:
        print(f"scopewatch demo needs anyio; install it: {run.INSTALL_HINT}", file=sys.stderr)
        return 2
    if args.output is None:
        args.output = os.path.join(tempfile.gettempdir(), f"scopewatch-demo-{os.getpid()}.jsonl")
    for name in ("output", "report_file"):
        if getattr(args, name):
            setattr(args, name, os.path.abspath(getattr(args, name)))
    previous = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="scopewatch-demo-") as directory:
        with open(os.path.join(directory, DEMO_MODULE), "w", encoding="utf-8") as file:
            file.write(source())
        os.chdir(directory)  # stacks in the report read demo_service.py:LINE
        try:
            return run.execute(args, [sys.executable, DEMO_MODULE], defaults=DEMO_DEFAULTS)
        finally:
            os.chdir(previous)
