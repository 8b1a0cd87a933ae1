"""Lock instrumentation cost: bare vs instrumented, interleaved in one process.

Prints ratios (instrumented / bare) and returns them; never asserts times. Targets (README):
uncontended ``async with lock`` at most 3x bare; a contended acquisition at most bare plus one
SDK histogram record (measured here too, as ``record_us``).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from typing import Any

import anyio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

from scopewatch import ScopeWatchInstrumentor


async def _uncontended(lock: Any, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        async with lock:
            pass
    return (time.perf_counter() - start) / n


async def _contended(lock: Any, n: int) -> float:
    """Two tasks ping-pong one lock: every acquisition after the first waits."""

    async def worker() -> None:
        for _ in range(n):
            async with lock:
                await asyncio.sleep(0)

    start = time.perf_counter()
    await asyncio.gather(worker(), worker())
    return (time.perf_counter() - start) / (2 * n)


def _record_cost(n: int) -> float:
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    histogram = provider.get_meter("bench").create_histogram("bench.record", unit="s")
    attributes = {"a": "b", "c": "d", "e": "f"}
    start = time.perf_counter()
    for i in range(n):
        histogram.record(i * 1e-6, attributes)
    cost = (time.perf_counter() - start) / n
    provider.shutdown()
    return cost


def _measure(factory: Any, n: int, contended: bool) -> float:
    async def main() -> float:
        lock = factory()
        run = _contended if contended else _uncontended
        await run(lock, n // 10)  # warm-up
        return await run(lock, n)

    return asyncio.run(main())


def run(quick: bool) -> dict[str, float]:
    """Measure bare vs instrumented lock cost, alternating rounds; return the median ratios."""
    n = 2_000 if quick else 20_000
    rounds = 3 if quick else 7
    cases = {
        "asyncio.Lock": asyncio.Lock,
        "asyncio.Semaphore": lambda: asyncio.Semaphore(1),
        "anyio.Lock": lambda: anyio.Lock(fast_acquire=True),
    }
    samples: dict[str, list[tuple[float, float]]] = {}
    for _ in range(rounds):
        for label, factory in cases.items():
            for contended in (False, True):
                key = f"{label} {'contended' if contended else 'uncontended'}"
                bare = _measure(factory, n, contended)
                instrumentor = ScopeWatchInstrumentor()
                meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
                instrumentor.instrument(
                    tracer_provider=TracerProvider(),
                    meter_provider=meter_provider,
                    instrument="locks",
                )
                try:
                    instrumented = _measure(factory, n, contended)
                finally:
                    instrumentor.uninstrument()
                    meter_provider.shutdown()
                samples.setdefault(key, []).append((bare, instrumented))
    results: dict[str, float] = {}
    record_us = _record_cost(n) * 1e6
    results["record_us"] = record_us
    for key, pairs in samples.items():
        bare_us = statistics.median(b for b, _ in pairs) * 1e6
        inst_us = statistics.median(i for _, i in pairs) * 1e6
        results[f"{key} bare_us"] = bare_us
        results[f"{key} instrumented_us"] = inst_us
        results[f"{key} ratio"] = inst_us / bare_us
        if key.endswith(" contended"):
            results[f"{key} extra_in_records"] = (inst_us - bare_us) / record_us
    for key, value in results.items():
        print(f"{key:48s} {value:10.3f}")
    return results


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)
