"""``scopewatch run``: a program under ``opentelemetry-instrument``, then its report.

The program is started through the real launcher
(``opentelemetry.instrumentation.auto_instrumentation.run``, what ``opentelemetry-instrument``
runs), so it is instrumented exactly as it would be there. Only the environment is prepared: the
``scopewatch_file`` exporters are added to ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER``
(alone when those are unset) and ``SCOPEWATCH_OUTPUT`` names the file. The program's stdin,
stdout and stderr are its own; the report goes to stderr after it exits; its exit status is
passed through, a death by signal included.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from typing import IO, TYPE_CHECKING, Any

from scopewatch._output import OUTPUT_VARIABLE
from scopewatch.commands import _child

if TYPE_CHECKING:
    import argparse
    from collections.abc import MutableMapping

FILE_EXPORTER = "scopewatch_file"
LAUNCHER = "from opentelemetry.instrumentation.auto_instrumentation import run; run()"
_PYTHON_NAME = re.compile(r"^python(\d+(\.\d+)?)?(\.exe)?$")
_SIGNALS = ("traces", "metrics")
INSTALL_HINT = "pip install 'scopewatch[cli]'"

EXAMPLES = """\
examples:
  scopewatch run -- python app.py --port 8000
  scopewatch run app.py                      (a .py file runs with this Python)
  scopewatch run --spans all --format html --report-file report.html -- python app.py
  OTEL_TRACES_EXPORTER=otlp scopewatch run -- python app.py   (to a collector as well)

The program's exit status, stdout and stderr are passed through unchanged; the report is
printed to stderr after it exits. Telemetry is kept in the --output file (default
scopewatch-<pid>.jsonl) for `scopewatch report`.
"""


class RunError(Exception):
    """``scopewatch run`` cannot start the program; the message is one line."""


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Register ``scopewatch run``."""
    import argparse

    parser = subparsers.add_parser(
        "run",
        help="run a Python program instrumented, then print its report",
        description="Run COMMAND under opentelemetry-instrument with scopewatch, write its "
        "telemetry to a local OTLP/JSON lines file and print the report when it exits.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_options(parser)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the program and its arguments")
    parser.set_defaults(handler=main)


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options ``run`` and ``demo`` share."""
    parser.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help=f"telemetry file (default: ${OUTPUT_VARIABLE} or scopewatch-<pid>.jsonl); "
        "emptied at start",
    )
    parser.add_argument(
        "--format",
        choices=("text", "json", "html"),
        default="text",
        help="report format (default: text)",
    )
    parser.add_argument(
        "--report-file",
        metavar="PATH",
        help="write the report there instead of stderr (html: default <output>.html)",
    )
    parser.add_argument("--no-report", action="store_true", help="only write the telemetry")
    parser.add_argument(
        "--spans",
        choices=("all", "anomalies", "none"),
        help="sets OTEL_PYTHON_SCOPEWATCH_SPANS for the program",
    )
    parser.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour in the text report (auto: when stderr is a terminal and NO_COLOR is unset)",
    )


def check_prerequisites() -> None:
    """The SDK and a configurator (opentelemetry-distro) must be installed."""
    import importlib.util
    from importlib.metadata import entry_points

    try:
        sdk = importlib.util.find_spec("opentelemetry.sdk")
    except (ImportError, ValueError):  # a broken or blocked installation
        sdk = None
    if sdk is None:
        raise RunError(f"scopewatch run needs opentelemetry-sdk; install it: {INSTALL_HINT}")
    if not list(entry_points(group="opentelemetry_configurator")):
        raise RunError(
            "scopewatch run needs opentelemetry-distro (it configures the SDK for "
            f"opentelemetry-instrument); install it: {INSTALL_HINT}"
        )


def with_file_exporter(value: str | None) -> str:
    """An ``OTEL_*_EXPORTER`` value that also includes ``scopewatch_file``."""
    names = [name.strip() for name in (value or "").split(",") if name.strip()]
    names = [name for name in names if name.lower() != "none"]
    if FILE_EXPORTER not in names:
        names.append(FILE_EXPORTER)
    return ",".join(names)


def prepare_environment(
    environ: MutableMapping[str, str], output: str, spans: str | None
) -> MutableMapping[str, str]:
    """The program's environment: exporters, output file and scopewatch settings."""
    embedded = not environ.get("OTEL_TRACES_EXPORTER", "").strip()
    for signal in _SIGNALS:
        variable = f"OTEL_{signal.upper()}_EXPORTER"
        environ[variable] = with_file_exporter(environ.get(variable))
    if embedded and not environ.get("OTEL_LOGS_EXPORTER", "").strip():
        environ["OTEL_LOGS_EXPORTER"] = "none"  # the distro's default (otlp) needs a collector
    environ[OUTPUT_VARIABLE] = output
    if spans:
        environ["OTEL_PYTHON_SCOPEWATCH_SPANS"] = spans
    return environ


def resolve_command(command: list[str]) -> list[str]:
    """``app.py`` and ``python`` mean this interpreter; other programs are looked up on PATH."""
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise RunError("scopewatch run: no command given; e.g. scopewatch run -- python app.py")
    first = command[0]
    if first.endswith(".py"):
        return [sys.executable, *command]
    if os.sep not in first and _PYTHON_NAME.match(first):
        return [sys.executable, *command[1:]]
    if shutil.which(first) is None:
        beside = os.path.join(os.path.dirname(sys.executable), first)
        if shutil.which(beside) is None:
            raise RunError(f"scopewatch run: command not found: {first}")
        return [beside, *command[1:]]
    return command


def main(args: argparse.Namespace) -> int:
    """Run the program, print the report, return the program's exit status."""
    return execute(args, list(args.command))


def execute(
    args: argparse.Namespace, command: list[str], defaults: dict[str, str] | None = None
) -> int:
    """Run ``command`` with the options of ``args`` (``scopewatch run`` and ``demo`` share it).

    Args:
        args: the parsed run options.
        command: the program and its arguments.
        defaults: environment variables for the program unless the environment sets them.
    """
    try:
        check_prerequisites()
        command = resolve_command(command)
    except RunError as error:
        print(str(error), file=sys.stderr)
        return 127 if "not found" in str(error) else 2
    output = os.path.abspath(
        args.output or os.environ.get(OUTPUT_VARIABLE) or f"scopewatch-{os.getpid()}.jsonl"
    )
    try:
        with open(output, "w", encoding="utf-8"):
            pass
    except OSError as error:
        print(f"scopewatch run: cannot write {output} ({error.strerror})", file=sys.stderr)
        return 2
    environ = prepare_environment({**(defaults or {}), **os.environ}, output, args.spans)
    status = _child.run([sys.executable, "-c", LAUNCHER, *command], environ)
    if not args.no_report:
        _report(args, output)
    return status


def _report(args: argparse.Namespace, output: str) -> None:
    from scopewatch.commands.report import render
    from scopewatch.report.text import use_colour

    stream: IO[str] = sys.stderr
    if args.format == "html" and not args.report_file:  # a page is no use on a terminal
        args.report_file = os.path.splitext(output)[0] + ".html"
    colour = args.report_file is None and use_colour(stream, args.color)
    try:
        text = render([output], args.format, colour)
    except Exception as error:  # the report must never change the program's exit status
        print(f"scopewatch: no report: {error}", file=stream)
        return
    if args.report_file:
        try:
            with open(args.report_file, "w", encoding="utf-8") as file:
                file.write(text)
        except OSError as error:
            print(f"scopewatch: cannot write {args.report_file} ({error.strerror})", file=stream)
            return
        print(f"scopewatch: report written to {args.report_file}", file=stream)
    else:
        stream.write(text)
    print(f"scopewatch: telemetry in {output} (scopewatch report {output})", file=stream)
    stream.flush()
