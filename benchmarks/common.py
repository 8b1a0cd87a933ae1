"""Shared benchmark machinery: the SDK set-up, variants, interleaving, medians, the table.

Result shape (what every ``bench_*.run(quick) -> dict`` returns, and what the runner prints)::

    {"name": "scopes",
     "figures": [{"name": "...", "value": 1.12, "unit": "ratio", "target": "<= 1.3",
                  "status": "PASS", "note": "..."}],
     "raw": {...},            # per-variant medians, per-round samples, counts
     "notes": ["..."]}

``status`` is PASS, MISS (a target was not met: information, never a failure), INFO (no
target) or N/A (could not be measured, with a note saying why).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

PACKAGES = (
    "scopewatch",
    "anyio",
    "opentelemetry-api",
    "opentelemetry-sdk",
    "opentelemetry-instrumentation",
    "opentelemetry-instrumentation-asyncio",
    "wrapt",
)
QUEUE_SIZE = 1 << 20
SPAN_PROCESSOR = (
    f"BatchSpanProcessor (max_queue_size={QUEUE_SIZE}, so no span is dropped; other settings "
    "SDK defaults) -> a SpanExporter that drops every span"
)
METRIC_READER = "InMemoryMetricReader (collected once per variant run)"
TIMER = (
    "in-process figures use process CPU time (time.process_time: every thread of the process, "
    "so the span batch worker counts; other load on a shared machine does not)"
)
clock = time.process_time
"""The timer of in-process measurements (see ``TIMER``)."""


# --- machine -------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (or ``platform.processor()``)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """CPU, cores, OS, Python and the versions of the packages that matter."""
    versions: dict[str, str] = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 0
    commit = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            cwd=Path(__file__).parent,
            timeout=10,
        ).stdout.strip()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "packages": versions,
        "git_commit": commit,
        "span_processor": SPAN_PROCESSOR,
        "metric_reader": METRIC_READER,
        "timer": TIMER,
        "scopewatch_env": {
            name: value
            for name, value in sorted(os.environ.items())
            if name.startswith("OTEL_PYTHON_SCOPEWATCH_")
        },
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


# --- SDK and variants ----------------------------------------------------------------------


class DropSpanExporter(SpanExporter):
    """A real ``SpanExporter`` that counts and drops: the export cost without any I/O."""

    def __init__(self) -> None:
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exported += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


@dataclass
class Sdk:
    """Real SDK providers, as a deployment would configure them, minus the network."""

    exporter: DropSpanExporter = field(default_factory=DropSpanExporter)
    reader: InMemoryMetricReader = field(default_factory=InMemoryMetricReader)
    tracer_provider: TracerProvider = field(init=False)
    meter_provider: MeterProvider = field(init=False)

    def __post_init__(self) -> None:
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(
            BatchSpanProcessor(self.exporter, max_queue_size=QUEUE_SIZE)
        )
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def flush(self) -> None:
        """Export pending spans and collect metrics, outside any timed region."""
        self.tracer_provider.force_flush()
        self.reader.get_metrics_data()

    def shutdown(self) -> None:
        """Stop the batch worker thread and the meter provider."""
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


@contextlib.contextmanager
def scopewatch(sdk: Sdk, spans: str, **settings: Any) -> Iterator[None]:
    """Instrument with scopewatch for the duration of the block (in-process, then undone)."""
    from scopewatch import ScopeWatchInstrumentor

    instrumentor = ScopeWatchInstrumentor()
    processors = _span_processors(sdk.tracer_provider)
    instrumentor.instrument(
        tracer_provider=sdk.tracer_provider,
        meter_provider=sdk.meter_provider,
        spans=spans,
        **settings,
    )
    try:
        yield
    finally:
        instrumentor.uninstrument()
        sdk.flush()
        _restore_span_processors(sdk.tracer_provider, processors)


def _span_processors(provider: TracerProvider) -> tuple[Any, ...] | None:
    multi = getattr(provider, "_active_span_processor", None)
    return getattr(multi, "_span_processors", None)


def _restore_span_processors(provider: TracerProvider, processors: tuple[Any, ...] | None) -> None:
    """Drop the span processors an instrumentation added (the SDK has no public removal).

    ``instrument()`` adds scopewatch's alert-rule processor and ``uninstrument()`` can only make
    it inert; a deployment instruments once, but a benchmark instruments dozens of times, and
    every inert processor left behind would tax every later span (the bare SDK span included).
    """
    multi = getattr(provider, "_active_span_processor", None)
    if processors is not None and multi is not None:
        with multi._lock:
            multi._span_processors = processors


@contextlib.contextmanager
def nothing() -> Iterator[None]:
    """The bare variant: no instrumentation at all."""
    yield


# --- measuring -----------------------------------------------------------------------------


def interleave(
    variants: dict[str, Callable[[], contextlib.AbstractContextManager[Any]]],
    rounds: int,
    measure: Callable[[str], Any],
) -> dict[str, list[Any]]:
    """Run ``measure(variant)`` inside each variant's context, ``rounds`` times, interleaved.

    Round ``r`` starts with the ``r``-th variant (a rotation), so no variant always runs
    first or right after the same neighbour. Returns every sample per variant, in round order.
    """
    names = list(variants)
    samples: dict[str, list[Any]] = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            gc.collect()
            with variants[name]():
                samples[name].append(measure(name))
    return samples


def flush_deferred() -> None:
    """Replay scopewatch's deferred histograms now (what a metric collection does).

    Benchmarks call this once before timing (so a warm-up's buffer is not counted) and once
    inside the timed region (so every measured operation pays its one replay exactly once).
    """
    from scopewatch import _runtime

    runtime = _runtime.current
    if runtime is not None:
        runtime.instruments.flush()


def median(values: Sequence[float]) -> float:
    """The median (``nan`` for no values)."""
    return statistics.median(values) if values else float("nan")


def ratio(samples: dict[str, list[float]], numerator: str, denominator: str) -> float:
    """Median over rounds of the per-round ratio ``numerator / denominator``."""
    return median(
        [a / b for a, b in zip(samples[numerator], samples[denominator], strict=True) if b > 0]
    )


def per_op_ns(total_seconds: float, count: int) -> float:
    """Nanoseconds per operation."""
    return total_seconds / count * 1e9


# --- figures and the table -----------------------------------------------------------------


def figure(
    name: str,
    value: float | None,
    target: str | None = None,
    unit: str = "ratio",
    note: str = "",
    display: str = "",
) -> dict[str, Any]:
    """One line of the table; ``target`` is ``"<= 1.3"`` or ``">= 0.95"`` (or ``None``).

    ``display`` replaces the formatted value in the table (e.g. several numbers in one cell).
    """
    if value is None or value != value:  # None or NaN
        status = "N/A"
    elif target is None:
        status = "INFO"
    else:
        operator, limit = target.split()
        met = value <= float(limit) if operator == "<=" else value >= float(limit)
        status = "PASS" if met else "MISS"
    return {
        "name": name,
        "value": value,
        "unit": unit,
        "target": target,
        "status": status,
        "note": note,
        "display": display,
    }


def per_variant(
    label: str,
    medians: dict[str, dict[str, float]],
    key: str,
    variants: Sequence[str],
    unit: str,
    fmt: str,
) -> dict[str, Any]:
    """An INFO figure giving ``medians[variant][key]`` of every variant in one cell.

    Named ``"<label> a/b/c"``; its value is the first variant's (the baseline).
    """
    return figure(
        f"{label} " + "/".join(variants),
        medians[variants[0]][key],
        unit=unit,
        display=" / ".join(format(medians[variant][key], fmt) for variant in variants),
    )


def result(
    name: str,
    figures: list[dict[str, Any]],
    raw: dict[str, Any] | None = None,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """A benchmark's result in the shape the runner prints."""
    return {"name": name, "figures": figures, "raw": raw or {}, "notes": list(notes)}


def format_value(value: float | None, unit: str) -> str:
    """A figure's value for the table."""
    if value is None or value != value:
        return "-"
    if unit == "ratio":
        return f"{value:.2f}x"
    if unit in ("ns", "us", "ms"):
        return f"{value:,.0f} {unit}" if value >= 100 else f"{value:.2f} {unit}"
    return f"{value:,.2f} {unit}"


def table_rows(results: Sequence[dict[str, Any]]) -> list[tuple[str, str, str, str, str]]:
    """``(benchmark, figure, value, target, status)`` rows."""
    rows = []
    for item in results:
        for entry in item.get("figures", []):
            rows.append(
                (
                    str(item.get("name", "?")),
                    str(entry.get("name", "?")),
                    str(entry.get("display") or "")
                    or format_value(entry.get("value"), str(entry.get("unit", ""))),
                    str(entry.get("target") or ""),
                    str(entry.get("status", "INFO")),
                )
            )
    return rows


def format_table(results: Sequence[dict[str, Any]]) -> str:
    """A plain-text table for the terminal."""
    header = ("benchmark", "figure", "value", "target", "status")
    rows = [header, *table_rows(results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def format_markdown(results: Sequence[dict[str, Any]], machine: dict[str, Any]) -> str:
    """The results as Markdown, machine first (for RESULTS.md and the README)."""
    packages = ", ".join(f"{name} {version}" for name, version in machine["packages"].items())
    lines = [
        f"Machine: {machine['cpu']}, {machine['cores']} cores "
        f"({machine['usable_cores']} usable), {machine['os']}, {machine['python']}.  ",
        f"Packages: {packages}.  ",
        f"Spans: {machine['span_processor']}; metrics: {machine['metric_reader']}.  ",
        f"Timer: {machine['timer']}.  ",
        f"Run: {machine['date_utc']}, commit {machine['git_commit'] or 'unknown'}.",
        "",
        "| benchmark | figure | value | target | status |",
        "|---|---|---|---|---|",
    ]
    for row in table_rows(results):
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    notes = [note for item in results for note in item.get("notes", [])]
    notes += [
        f"{entry['name']}: {entry['note']}"
        for item in results
        for entry in item.get("figures", [])
        if entry.get("note")
    ]
    if notes:
        lines += ["", *[f"- {note}" for note in notes]]
    return "\n".join(lines) + "\n"


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` as indented JSON, creating the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``; else ``nan``).

    The service benchmarks divide requests by the server's CPU seconds: on a shared machine
    that figure moves far less with other load than throughput does.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def python_executable() -> str:
    """The interpreter running the benchmarks (used for subprocess variants)."""
    return sys.executable
