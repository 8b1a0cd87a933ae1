"""The targets table of issue 15: each target next to the figure measured for it, met or missed.

Each row names the benchmark and the figure(s) that measure it (by pattern, so a benchmark may
add kinds or reword a figure's tail); a row whose figure is absent from the run says so (N/A).
A missed target is information, never a failure.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks import common


@dataclass(frozen=True)
class Target:
    """One line of the issue's table."""

    label: str
    target: str
    benchmark: str
    pattern: str
    exclude: str = r"(?!)"


DEFAULT = r"(anomalies|default)"
SERVICE = r"^(throughput|requests per server CPU-s)"
TARGETS: tuple[Target, ...] = (
    Target("echo service, default / bare", ">= 0.95", "service", rf"{SERVICE} {DEFAULT}/bare$"),
    Target(
        "web stack (Starlette + uvicorn), default / scopewatch disabled",
        ">= 0.95",
        "web",
        rf"{SERVICE} {DEFAULT}/disabled$",
    ),
    Target(
        "echo service, SPANS=all / one hand-made span per scope and task",
        ">= 0.9",
        "service",
        rf"{SERVICE} all/manual$",
    ),
    Target(
        "web stack, SPANS=all / one hand-made span per scope and task",
        ">= 0.9",
        "web",
        rf"{SERVICE} all/manual$",
    ),
    Target(
        "scope enter+exit, default / bare",
        "<= 1.3",
        "scopes",
        rf"^(anyio|asyncio|trio)\.\S+ {DEFAULT}/bare$",
        exclude=r"internal|checkpoint",
    ),
    Target(
        "anyio-internal scope, default / bare",
        "<= 1.05",
        "scopes",
        rf"(internal|checkpoint).* {DEFAULT}/bare$",
    ),
    Target("task create+await / fan-out, default / bare", "<= 1.3", "tasks", rf" {DEFAULT}/bare$"),
    Target(
        "task create+await, all / opentelemetry-instrumentation-asyncio",
        "<= 0.5",
        "tasks",
        r"^create\+await all/otel-asyncio$",
    ),
    Target(
        "uncontended asyncio.Lock, default / bare",
        "<= 1.5",
        "locks",
        r"^asyncio\.Lock uncontended",
    ),
    Target("RSS growth after 1M scopes + 100k tasks (MiB)", "<= 10", "memory", r"^RSS growth"),
    Target("RSS trend, no trend (MiB/round)", "<= 0.5", "memory", r"^RSS trend anomalies"),
)

Row = tuple[str, str, str, str, str]


def rows(results: Sequence[dict[str, Any]]) -> list[Row]:
    """``(target figure, measured by, value, target, status)`` per target and matching figure."""
    by_name = {str(item.get("name")): item for item in results}
    table: list[Row] = []
    for target in TARGETS:
        item = by_name.get(target.benchmark)
        if item is None:
            continue
        matches = [
            entry
            for entry in item.get("figures", [])
            if re.search(target.pattern, str(entry.get("name", "")))
            and not re.search(target.exclude, str(entry.get("name", "")))
        ]
        if not matches:
            table.append(
                (target.label, f"{target.benchmark}: not measured", "-", target.target, "N/A")
            )
            continue
        for entry in matches:
            value = entry.get("value")
            judged = common.figure("", value, target.target)
            shown = str(entry.get("display") or "") or common.format_value(
                value, str(entry.get("unit", "ratio"))
            )
            status = {"PASS": "met", "MISS": "missed"}.get(judged["status"], judged["status"])
            table.append(
                (target.label, f"{target.benchmark}: {entry['name']}", shown, target.target, status)
            )
    return table


def format_text(results: Sequence[dict[str, Any]]) -> str:
    """The targets table for the terminal ('' when no benchmark of the table ran)."""
    table = rows(results)
    if not table:
        return ""
    header: Row = ("target (issue 15)", "measured by", "value", "target", "status")
    lines = [header, *table]
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    text = []
    for index, row in enumerate(lines):
        text.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if index == 0:
            text.append("  ".join("-" * width for width in widths))
    return "\n".join(text)


def format_markdown(results: Sequence[dict[str, Any]]) -> str:
    """The targets table as Markdown ('' when no benchmark of the table ran)."""
    table = rows(results)
    if not table:
        return ""
    lines = [
        "| target (issue 15) | measured by | value | target | status |",
        "|---|---|---|---|---|",
    ]
    for row in table:
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    return "\n".join(lines) + "\n"
