"""Instruction counts per operation under callgrind: figures that do not move with machine load.

``python -m benchmarks.instructions [WORKLOAD ...]`` runs each workload's child process under
``valgrind --tool=callgrind`` twice per variant (``N`` and ``3N`` operations) and prints the
difference per operation, so start-up and import costs cancel out, with the ratio to ``bare``.
Workloads: ``create+await`` (one asyncio task created and awaited), ``fan-out`` (one task of an
``asyncio.TaskGroup`` of 1,000), ``asyncio.Lock`` (an uncontended ``async with``),
``trio fan-out`` (one task of a trio nursery of 1,000). Variants: ``bare``, ``anomalies`` (the
default), ``all`` (a span per task), ``otel-asyncio`` (opentelemetry-instrumentation-asyncio
tracing the task's coroutine) and ``locks`` (``instrument="locks"``). ``SLOW_THRESHOLD`` is
raised for the run: under valgrind every task would otherwise be slow, hence anomalous.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from typing import Any

WORKLOADS: dict[str, tuple[int, tuple[str, ...]]] = {
    "create+await": (1000, ("bare", "anomalies", "all", "otel-asyncio")),
    "fan-out": (2, ("bare", "anomalies")),
    "asyncio.Lock": (3000, ("bare", "locks")),
    "trio fan-out": (2, ("bare", "anomalies")),
}
"""Workload -> (``N``, variants); fan-outs count 1,000 tasks per unit."""
PER_UNIT = {"fan-out": 1000, "trio fan-out": 1000}


async def bench_task_body() -> int:
    """The task's coroutine."""
    return 1


async def _create_await(n: int) -> None:
    create_task = asyncio.create_task
    for _ in range(n):
        await create_task(bench_task_body())


async def _fan_out(n: int) -> None:
    for _ in range(n):
        if sys.version_info >= (3, 11):
            async with asyncio.TaskGroup() as group:
                for _ in range(1000):
                    group.create_task(bench_task_body())
        else:
            await asyncio.gather(*[asyncio.create_task(bench_task_body()) for _ in range(1000)])


async def _lock(n: int) -> None:
    lock = asyncio.Lock()
    for _ in range(n):
        async with lock:
            pass


def _trio_fan_out(n: int) -> None:
    import trio

    async def body() -> None:
        await trio.lowlevel.checkpoint()

    async def main() -> None:
        for _ in range(n):
            async with trio.open_nursery() as nursery:
                for _ in range(1000):
                    nursery.start_soon(body)

    trio.run(main)


def _run(workload: str, n: int) -> None:
    if workload == "trio fan-out":
        _trio_fan_out(n)
        return
    body = {"create+await": _create_await, "fan-out": _fan_out, "asyncio.Lock": _lock}[workload]
    asyncio.run(body(n))


def child(variant: str, workload: str, n: int) -> None:
    """The measured process: instrument as ``variant``, warm up, run ``n`` units."""
    from benchmarks import common

    sdk = common.Sdk()
    if variant == "otel-asyncio":
        from opentelemetry.instrumentation.asyncio import AsyncioInstrumentor

        os.environ["OTEL_PYTHON_ASYNCIO_COROUTINE_NAMES_TO_TRACE"] = bench_task_body.__name__
        AsyncioInstrumentor().instrument(
            tracer_provider=sdk.tracer_provider, meter_provider=sdk.meter_provider
        )
    elif variant != "bare":
        from scopewatch import ScopeWatchInstrumentor

        settings: dict[str, Any] = (
            {"spans": "none", "instrument": "locks"} if variant == "locks" else {"spans": variant}
        )
        ScopeWatchInstrumentor().instrument(
            tracer_provider=sdk.tracer_provider, meter_provider=sdk.meter_provider, **settings
        )
    _run(workload, 1 if workload in PER_UNIT else 100)  # warm caches
    _run(workload, n)
    common.flush_deferred()
    sdk.flush()


def _instructions(variant: str, workload: str, n: int) -> int:
    environment = {
        **os.environ,
        "PYTHONHASHSEED": "0",
        "OTEL_PYTHON_SCOPEWATCH_SLOW_THRESHOLD": "1000",
    }
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "benchmarks.instructions",
        "--child",
        variant,
        workload,
        str(n),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=environment, check=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(done.stderr[-2000:])
    return int(found.group(1))


def per_operation(variant: str, workload: str) -> float:
    """Instructions per task / acquisition: the ``3N - N`` difference over ``2N`` operations."""
    n = WORKLOADS[workload][0]
    low = _instructions(variant, workload, n)
    high = _instructions(variant, workload, 3 * n)
    return (high - low) / (2 * n * PER_UNIT.get(workload, 1))


def main(arguments: list[str]) -> None:
    """Print instructions per operation and the ratio to ``bare`` for each workload."""
    if arguments[:1] == ["--child"]:
        child(arguments[1], arguments[2], int(arguments[3]))
        return
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: no instruction counts")
        return
    for workload in arguments or list(WORKLOADS):
        counts = {variant: per_operation(variant, workload) for variant in WORKLOADS[workload][1]}
        bare = counts["bare"]
        row = ", ".join(
            f"{variant} {count:,.0f} ({count / bare:.2f}x bare)"
            for variant, count in counts.items()
        )
        print(f"{workload}: {row}", flush=True)
        if "otel-asyncio" in counts:
            print(f"{workload}: all/otel-asyncio {counts['all'] / counts['otel-asyncio']:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
