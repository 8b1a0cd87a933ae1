"""Trio tasks: a 1,000-task fan-out in a nursery, per task, under scopewatch's trio instrument.

Variants, interleaved in one process (instrument / uninstrument between them): ``bare``,
``anomalies`` (the default span mode) and ``all`` (a span per task). Each sample is one
``trio.run`` (the instrument is added per run), timed inside the run. No target: there is
no OpenTelemetry instrumentation for trio to compare with; the ratios are for information.
"""

from __future__ import annotations

import sys
from typing import Any

import trio

from benchmarks import common

FAN_OUT = 1000


async def bench_task_body() -> int:
    """The task's coroutine: one step, like a short request handler's sub-task."""
    await trio.lowlevel.checkpoint()
    return 1


async def fan_out(n: int) -> float:
    """``n`` nurseries of ``FAN_OUT`` tasks; seconds taken."""
    clock = common.clock
    start = clock()
    for _ in range(n):
        async with trio.open_nursery() as nursery:
            for _ in range(FAN_OUT):
                nursery.start_soon(bench_task_body)
    common.flush_deferred()
    return clock() - start


def run(quick: bool = False) -> dict[str, Any]:
    """Measure the fan-out under every variant; return figures and raw samples."""
    count = 1 if quick else 10
    rounds = 3 if quick else 9
    sdk = common.Sdk()
    variants = {
        "bare": common.nothing,
        "anomalies": lambda: common.scopewatch(sdk, "anomalies"),
        "all": lambda: common.scopewatch(sdk, "all"),
    }

    async def main() -> float:
        await fan_out(1)  # warm caches
        common.flush_deferred()
        return common.per_op_ns(await fan_out(count), count * FAN_OUT)

    def measure(variant: str) -> float:
        del variant
        per_task_ns = trio.run(main)
        sdk.flush()
        return per_task_ns

    samples = common.interleave(variants, rounds, measure)
    sdk.shutdown()
    medians = {variant: common.median(values) for variant, values in samples.items()}
    figures = [
        common.figure(
            f"fan-out {FAN_OUT} anomalies/bare", common.ratio(samples, "anomalies", "bare")
        ),
        common.figure(f"fan-out {FAN_OUT} all/bare", common.ratio(samples, "all", "bare")),
        common.figure(
            "ns per task bare/anomalies/all",
            medians["bare"],
            unit="ns",
            display=" / ".join(f"{medians[v]:,.0f}" for v in ("bare", "anomalies", "all")),
        ),
    ]
    return common.result(
        "trio-tasks",
        figures,
        raw={
            "fan_outs_per_sample": count,
            "rounds": rounds,
            "median_ns_per_task": medians,
            "samples_ns_per_task": samples,
            "spans_exported": sdk.exporter.exported,
        },
        notes=[
            f"trio-tasks: {count} nursery fan-outs of {FAN_OUT} tasks per sample, {rounds} "
            "interleaved rounds (bare, anomalies, all), median of per-round ratios",
        ],
    )


if __name__ == "__main__":
    result = run(quick="--quick" in sys.argv)
    print(common.format_table([result]))
