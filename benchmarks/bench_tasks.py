"""Tasks: create+await one task, and a 1,000-task fan-out in a task group.

Variants, interleaved in one process (instrument / uninstrument between them):

- ``bare``: no instrumentation;
- ``anomalies``: scopewatch with the default span mode (spans only for anomalous tasks);
- ``all``: scopewatch with a span per task;
- ``otel-asyncio``: opentelemetry-instrumentation-asyncio alone, told to trace the benchmark's
  coroutine (``OTEL_PYTHON_ASYNCIO_COROUTINE_NAMES_TO_TRACE``), so it too makes a span per
  task: what a developer gets today for "a span per task".

Targets: ``anomalies / bare <= 1.3`` (the always-on cost) and ``all / otel-asyncio <= 0.5``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from benchmarks import common
from scopewatch import semconv

FAN_OUT = 1000
TARGET_ANOMALIES = "<= 1.3"
TARGET_ALL = "<= 0.5"
CORO_NAME = "bench_task_body"
WORKLOADS = ("create+await", f"fan-out {FAN_OUT}")


async def bench_task_body() -> int:
    """The task's coroutine: one step, like a short request handler's sub-task."""
    return 1


@contextlib.contextmanager
def otel_asyncio(sdk: common.Sdk) -> Iterator[None]:
    """opentelemetry-instrumentation-asyncio, tracing the benchmark coroutine."""
    from opentelemetry.instrumentation.asyncio import AsyncioInstrumentor

    variable = "OTEL_PYTHON_ASYNCIO_COROUTINE_NAMES_TO_TRACE"
    previous = os.environ.get(variable)
    os.environ[variable] = CORO_NAME
    instrumentor = AsyncioInstrumentor()
    instrumentor.instrument(tracer_provider=sdk.tracer_provider, meter_provider=sdk.meter_provider)
    try:
        yield
    finally:
        instrumentor.uninstrument()
        if previous is None:
            del os.environ[variable]
        else:
            os.environ[variable] = previous
        sdk.flush()


def _workloads() -> dict[str, Callable[[int], Awaitable[float]]]:
    """``run(n) -> seconds`` per workload; module attributes are read now (a variant may wrap)."""
    create_task = asyncio.create_task
    clock = common.clock
    body = bench_task_body

    async def create_and_await(n: int) -> float:
        start = clock()
        for _ in range(n):
            await create_task(body())
        common.flush_deferred()
        return clock() - start

    async def fan_out(n: int) -> float:
        start = clock()
        for _ in range(n):
            if sys.version_info >= (3, 11):
                async with asyncio.TaskGroup() as group:
                    for _ in range(FAN_OUT):
                        group.create_task(body())
            else:
                await asyncio.gather(*[create_task(body()) for _ in range(FAN_OUT)])
        common.flush_deferred()
        return clock() - start

    return {WORKLOADS[0]: create_and_await, WORKLOADS[1]: fan_out}


def _sdk_histogram_ns(sdk: common.Sdk, n: int) -> float:
    """One SDK ``histogram.record(value, {outcome})``: what each task's duration costs."""
    histogram = sdk.meter_provider.get_meter("benchmarks").create_histogram("bench.duration")
    attributes = {semconv.TASK_OUTCOME: semconv.OUTCOME_OK}
    record = histogram.record
    clock = common.clock
    start = clock()
    for _ in range(n):
        record(0.001, attributes)
    return common.per_op_ns(clock() - start, n)


def run(quick: bool = False) -> dict[str, Any]:
    """Measure both workloads under every variant; return figures and raw samples."""
    counts = {WORKLOADS[0]: 300 if quick else 20_000, WORKLOADS[1]: 1 if quick else 20}
    rounds = 3 if quick else 9
    sdk = common.Sdk()
    variants = {
        "bare": common.nothing,
        "anomalies": lambda: common.scopewatch(sdk, "anomalies"),
        "all": lambda: common.scopewatch(sdk, "all"),
        "otel-asyncio": lambda: otel_asyncio(sdk),
    }

    def measure(variant: str) -> dict[str, float]:
        del variant
        workloads = _workloads()

        async def main() -> dict[str, float]:
            timings: dict[str, float] = {}
            for name, workload in workloads.items():
                count = counts[name]
                await workload(max(1, count // 20))  # warm caches
                common.flush_deferred()
                timings[name] = common.per_op_ns(await workload(count), count)
            return timings

        timings = asyncio.run(main())
        sdk.flush()
        return timings

    samples = common.interleave(variants, rounds, measure)
    histogram_ns = _sdk_histogram_ns(sdk, counts[WORKLOADS[0]])
    sdk.shutdown()
    per_workload: dict[str, dict[str, list[float]]] = {}
    for variant, rows in samples.items():
        for row in rows:
            for name, value in row.items():
                per_workload.setdefault(name, {}).setdefault(variant, []).append(value)
    figures = []
    medians: dict[str, dict[str, float]] = {}
    for name in WORKLOADS:
        timings = per_workload[name]
        medians[name] = {variant: common.median(values) for variant, values in timings.items()}
        figures.append(
            common.figure(
                f"{name} anomalies/bare",
                common.ratio(timings, "anomalies", "bare"),
                TARGET_ANOMALIES,
            )
        )
        figures.append(
            common.figure(
                f"{name} all/otel-asyncio",
                common.ratio(timings, "all", "otel-asyncio"),
                TARGET_ALL,
            )
        )
        figures.append(common.figure(f"{name} all/bare", common.ratio(timings, "all", "bare")))
    for name in WORKLOADS:
        row = medians[name]
        unit = "ns" if name == WORKLOADS[0] else "us"
        scale = 1.0 if unit == "ns" else 1e-3
        figures.append(
            common.figure(
                f"{name} {unit} bare/anomalies/all/otel-asyncio",
                row["bare"] * scale,
                unit=unit,
                display=" / ".join(
                    f"{row[variant] * scale:,.0f}"
                    for variant in ("bare", "anomalies", "all", "otel-asyncio")
                ),
            )
        )
    figures.append(
        common.figure(
            "one SDK histogram record (for scale)",
            histogram_ns,
            unit="ns",
            note="since 0.3 a task that ends normally makes no SDK call (counted in "
            "scopewatch.tasks); scopewatch.task.duration is measured for anomalous tasks only, "
            "one such record costing about as much as a whole bare task",
        )
    )
    return common.result(
        "tasks",
        figures,
        raw={
            "counts_per_sample": counts,
            "rounds": rounds,
            "median_ns": medians,
            "samples_ns": per_workload,
            "spans_exported": sdk.exporter.exported,
            "sdk_histogram_record_ns": histogram_ns,
        },
        notes=[
            f"tasks: create+await {counts[WORKLOADS[0]]} tasks / {counts[WORKLOADS[1]]} fan-outs "
            f"of {FAN_OUT} tasks per sample ("
            + ("asyncio.TaskGroup" if sys.version_info >= (3, 11) else "gather")
            + f"), {rounds} interleaved rounds (bare, anomalies, all, otel-asyncio), median of "
            "per-round ratios; otel-asyncio traces the benchmark coroutine (a span per task)",
        ],
    )


if __name__ == "__main__":
    result = run(quick="--quick" in sys.argv)
    print(common.format_table([result]))
