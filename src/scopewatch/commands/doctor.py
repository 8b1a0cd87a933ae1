"""``scopewatch doctor``: what is installed, registered and configured, and what needs fixing."""

from __future__ import annotations

import os
import platform
import socket
import sys
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping

EXAMPLES = """\
examples:
  scopewatch doctor
  OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 scopewatch doctor   (checks it is reachable)

Exit status: 0 when nothing needs fixing, 1 otherwise (each problem is one line starting with
"FIX").
"""

ENTRY_POINTS = (
    ("opentelemetry_instrumentor", "scopewatch", "opentelemetry-instrument loads scopewatch"),
    ("opentelemetry_environment_variables", "scopewatch", "--scopewatch_* launcher flags"),
    ("opentelemetry_traces_exporter", "scopewatch_file", "OTEL_TRACES_EXPORTER=scopewatch_file"),
    ("opentelemetry_metrics_exporter", "scopewatch_file", "OTEL_METRICS_EXPORTER=scopewatch_file"),
)
DISTRIBUTIONS = (
    ("anyio", "anyio"),
    ("opentelemetry-api", "OpenTelemetry API"),
    ("opentelemetry-sdk", "OpenTelemetry SDK"),
    ("opentelemetry-instrumentation", "opentelemetry-instrumentation"),
    ("opentelemetry-distro", "opentelemetry-distro"),
    ("debugpy", "debugpy"),
)
ASYNCIO_INSTRUMENTATION = (
    "opentelemetry-instrumentation-asyncio is installed too: opentelemetry-instrument loads it as "
    "well, and it wraps every coroutine given to asyncio.create_task/ensure_future/wait_for/"
    "gather in its own coroutine (an extra frame in every stack, task.get_coro() is its wrapper). "
    "scopewatch works alongside it; to keep stacks exact, set "
    "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=asyncio"
)
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
CONNECT_TIMEOUT = 1.0


@dataclass
class Finding:
    """One line of the doctor's output."""

    level: str
    """``ok``, ``info``, ``warn`` (worth knowing) or ``fix`` (needs fixing: non-zero exit)."""
    text: str


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Register ``scopewatch doctor``."""
    import argparse

    parser = subparsers.add_parser(
        "doctor",
        help="check versions, entry points, configuration and the OTLP endpoint",
        description="Check the installation and the effective configuration; every invalid "
        "setting is explained. Exits non-zero when something needs fixing.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=CONNECT_TIMEOUT,
        help="seconds to wait for the OTLP endpoint's TCP connect (default: 1)",
    )
    parser.set_defaults(handler=main)


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def versions() -> list[Finding]:
    """Python and the distributions scopewatch works with."""
    from scopewatch.version import __version__

    found = [
        Finding("info", f"scopewatch {__version__}"),
        Finding(
            "info",
            f"Python {platform.python_version()} ({sys.implementation.name}) {sys.executable}",
        ),
    ]
    for distribution, label in DISTRIBUTIONS:
        version = _version(distribution)
        if version is not None:
            found.append(Finding("info", f"{label} {version}"))
        elif distribution == "opentelemetry-sdk":
            found.append(Finding("warn", f"{label} not installed: no telemetry is exported"))
        elif distribution == "opentelemetry-distro":
            found.append(
                Finding(
                    "warn",
                    "opentelemetry-distro not installed: opentelemetry-instrument and scopewatch "
                    "run cannot configure the SDK (pip install 'scopewatch[cli]')",
                )
            )
        else:
            found.append(Finding("info", f"{label} not installed"))
    if _version("opentelemetry-instrumentation-asyncio") is not None:
        disabled = os.environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "")
        if "asyncio" in [part.strip() for part in disabled.split(",")]:
            found.append(
                Finding("info", "opentelemetry-instrumentation-asyncio is installed and disabled")
            )
        else:
            found.append(Finding("warn", ASYNCIO_INSTRUMENTATION))
    return found


def entry_points() -> list[Finding]:
    """Whether each of scopewatch's entry points is registered and loads."""
    found = []
    for group, name, purpose in ENTRY_POINTS:
        matches = [ep for ep in metadata.entry_points(group=group) if ep.name == name]
        if not matches:
            found.append(
                Finding(
                    "fix",
                    f"entry point {group}:{name} is not registered ({purpose}); reinstall "
                    "scopewatch (pip install scopewatch, or pip install -e . in a checkout)",
                )
            )
            continue
        try:
            matches[0].load()
        except ModuleNotFoundError as error:
            found.append(
                Finding(
                    "fix",
                    f"entry point {group}:{name} needs {error.name} ({purpose}); install it: "
                    "pip install 'scopewatch[cli]'",
                )
            )
            continue
        except Exception as error:
            found.append(Finding("fix", f"entry point {group}:{name} does not load: {error!r}"))
            continue
        found.append(Finding("ok", f"entry point {group}:{name} -> {matches[0].value}"))
    return found


def configuration(environ: Mapping[str, str]) -> list[Finding]:
    """The effective settings, and every invalid value with what is accepted."""
    from scopewatch.config import load_settings

    settings = load_settings(environ=environ, warn=False)
    found = [
        Finding(
            "info",
            "settings: "
            f"instrument={','.join(sorted(settings.instrument)) or '(none)'} "
            f"spans={settings.spans} slow_threshold={settings.slow_threshold:g}s "
            f"stack_depth={settings.stack_depth} exception_notes={settings.exception_notes} "
            f"debugpy={settings.debugpy} max_tracked={settings.max_tracked}",
        )
    ]
    if settings.exclude:
        found.append(Finding("info", f"exclude: {', '.join(settings.exclude)}"))
    if settings.rules or settings.rules_file:
        found.append(Finding("info", "alert rules configured (RULES / RULES_FILE)"))
    found.extend(Finding("fix", problem) for problem in settings.problems)
    for name in (
        "OTEL_TRACES_EXPORTER",
        "OTEL_METRICS_EXPORTER",
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS",
    ):
        value = environ.get(name)
        if value:
            found.append(Finding("info", f"{name}={value}"))
    disabled = [
        part.strip() for part in environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "").split(",")
    ]
    if "scopewatch" in disabled:
        found.append(Finding("warn", "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS turns scopewatch off"))
    return found


def endpoint(environ: Mapping[str, str], timeout: float) -> list[Finding]:
    """Whether the configured OTLP endpoint accepts a TCP connection (only when one is set)."""
    for variable in ENDPOINT_VARIABLES:
        value = environ.get(variable, "").strip()
        if not value:
            continue
        parts = urlsplit(value if "://" in value else f"http://{value}")
        try:
            port = parts.port
        except ValueError:
            port = None
            return [Finding("fix", f"{variable}={value!r} has an invalid port")]
        host = parts.hostname
        if not host:
            return [Finding("fix", f"{variable}={value!r} is not a URL like http://host:4318")]
        if port is None:
            port = 443 if parts.scheme == "https" else 4318
        try:
            with socket.create_connection((host, port), timeout=timeout):
                pass
        except OSError as error:
            reason = error.strerror or type(error).__name__
            return [
                Finding(
                    "fix",
                    f"{variable}={value} is not reachable ({host}:{port}: {reason}); start the "
                    "collector or unset it (scopewatch run needs no collector)",
                )
            ]
        return [Finding("ok", f"{variable}={value} is reachable ({host}:{port})")]
    return [Finding("info", "no OTLP endpoint configured (scopewatch run writes a local file)")]


def main(args: argparse.Namespace) -> int:
    """Print every finding; 1 when one needs fixing."""
    findings = [
        *versions(),
        *entry_points(),
        *configuration(os.environ),
        *endpoint(os.environ, args.timeout),
    ]
    for finding in findings:
        print(f"{finding.level.upper():<4} {finding.text}")
    problems = sum(1 for finding in findings if finding.level == "fix")
    if problems:
        print(f"scopewatch doctor: {problems} problem{'s' if problems != 1 else ''} to fix")
        return 1
    print("scopewatch doctor: nothing to fix")
    return 0
