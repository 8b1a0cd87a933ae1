"""Lock acquire+release cost: bare vs instrumented (`instrument="locks"`), interleaved.

Workloads, each for asyncio.Lock, asyncio.Semaphore and anyio.Lock:

- ``uncontended``: ``async with lock: pass`` in a loop (target: instrumented <= 3x bare);
- ``contended``: two tasks ping-pong one lock (``async with lock: await asyncio.sleep(0)``), so
  every acquisition but the first waits. Target: instrumented <= bare + one SDK histogram record
  per contended acquisition, on the event loop. The deferred histogram replay (wait + hold, done
  by the metric reader at collection time, normally on its own thread) is reported separately,
  in records per contended acquisition.

``record`` is the cost of one SDK ``histogram.record`` through the same kind of provider.
Times are process CPU time (``common.clock``); ratios are medians of per-round ratios.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

import anyio

from benchmarks import common

TARGET_UNCONTENDED = "<= 3"
TARGET_CONTENDED = "<= 1"
CASES: dict[str, Callable[[], Any]] = {
    "asyncio.Lock": asyncio.Lock,
    "asyncio.Semaphore": lambda: asyncio.Semaphore(1),
    "anyio.Lock": lambda: anyio.Lock(fast_acquire=True),
}


async def _uncontended(lock: Any, n: int) -> float:
    clock = common.clock
    start = clock()
    for _ in range(n):
        async with lock:
            pass
    return clock() - start


async def _contended(lock: Any, n: int) -> float:
    clock = common.clock

    async def worker() -> None:
        for _ in range(n):
            async with lock:
                await asyncio.sleep(0)

    start = clock()
    await asyncio.gather(worker(), worker())
    return clock() - start


def _replay_cost() -> float:
    """Seconds spent replaying deferred histograms now (the reader's work at collection)."""
    from scopewatch import _runtime

    runtime = _runtime.current
    if runtime is None:
        return 0.0
    start = common.clock()
    runtime.instruments.flush()
    return common.clock() - start


def _record_cost(n: int) -> float:
    sdk = common.Sdk()
    histogram = sdk.meter_provider.get_meter("bench").create_histogram("bench.record", unit="s")
    attributes = {"scopewatch.lock.kind": "asyncio.Lock", "scopewatch.lock.name": "m:1", "o": "a"}
    start = common.clock()
    for index in range(n):
        histogram.record(index * 1e-6, attributes)
    cost = (common.clock() - start) / n
    sdk.shutdown()
    return cost


def run(quick: bool) -> dict[str, Any]:
    """Measure and return the result in the runner's shape (also printed as a table)."""
    n = 3_000 if quick else 30_000
    rounds = 3 if quick else 9
    sdk = common.Sdk()
    variants = {
        "bare": common.nothing,
        "instrumented": lambda: common.scopewatch(sdk, "none", instrument="locks"),
    }
    figures = []
    raw: dict[str, Any] = {}
    record = _record_cost(n)
    raw["record_us"] = record * 1e6
    for label, factory in CASES.items():
        for workload, body in (("uncontended", _uncontended), ("contended", _contended)):
            replays: list[float] = []

            def measure(variant: str, body: Any = body, factory: Any = factory) -> float:
                async def main() -> float:
                    lock = factory()
                    await body(lock, n // 10)  # warm-up
                    _replay_cost()
                    return await body(lock, n)

                seconds = asyncio.run(main())
                if variant == "instrumented":
                    replays.append(_replay_cost())  # noqa: B023 - measured right away
                return seconds

            samples = common.interleave(variants, rounds, measure)
            operations = n if workload == "uncontended" else 2 * n
            bare = common.median(samples["bare"]) / operations
            instrumented = common.median(samples["instrumented"]) / operations
            key = f"{label} {workload}"
            raw[key] = {
                "bare_ns": bare * 1e9,
                "instrumented_ns": instrumented * 1e9,
                "replay_ns_per_op": common.median(replays) / operations * 1e9,
            }
            if workload == "uncontended":
                figures.append(
                    common.figure(
                        f"{key} (instrumented/bare)",
                        common.ratio(samples, "instrumented", "bare"),
                        TARGET_UNCONTENDED,
                        note=f"{bare * 1e9:.0f} ns bare, {instrumented * 1e9:.0f} ns instrumented",
                    )
                )
            else:
                extra_records = (instrumented - bare) / record
                figures.append(
                    common.figure(
                        f"{key} (extra cost in SDK records)",
                        extra_records,
                        TARGET_CONTENDED,
                        unit="records",
                        note=(
                            f"{bare * 1e6:.1f} us bare, {instrumented * 1e6:.1f} us instrumented, "
                            f"1 record = {record * 1e6:.1f} us; collection-time replay "
                            f"{common.median(replays) / operations / record:.2f} records"
                        ),
                    )
                )
    sdk.shutdown()
    result = common.result(
        "locks",
        figures,
        raw,
        notes=[
            "locks: uncontended acquisitions make no SDK call; contended waits and sampled holds "
            "are buffered (DeferredHistogram) and replayed at collection time",
        ],
    )
    print(common.format_table([result]))
    return result


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)
