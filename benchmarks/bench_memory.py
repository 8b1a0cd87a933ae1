"""Memory: RSS after 1,000,000 scopes and 100,000 tasks, over repeated rounds (no upward trend).

Each variant runs in its own subprocess reading ``VmRSS`` from ``/proc/self/status``: a
baseline after instrumenting and a small warm-up, then one reading after every round (a round
is the full scope and task workload; ``gc.collect()`` before each reading). Growth is the last
reading minus the baseline; the trend is the least-squares slope over rounds 2..N, in MiB per
round (round 1 may legitimately grow caches and allocator arenas once).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks import common

VARIANTS = ("bare", "anomalies")
MIB = 1024 * 1024


def rss_bytes() -> int:
    """Resident set size of this process, from ``/proc/self/status``."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS line in /proc/self/status (Linux only)")


async def _workload(scopes: int, tasks: int) -> None:
    import anyio

    move_on_after = anyio.move_on_after
    for _ in range(scopes):
        with move_on_after(60):
            pass

    async def child() -> None:
        await asyncio.sleep(0)

    batch = 1_000
    for start in range(0, tasks, batch):
        async with anyio.create_task_group() as group:
            for _ in range(min(batch, tasks - start)):
                group.start_soon(child)


def child(variant: str, scopes: int, tasks: int, rounds: int) -> dict[str, Any]:
    """In the subprocess: baseline, then RSS after each round of the workload."""
    sdk = common.Sdk()
    instrumentor = None
    if variant != "bare":
        from scopewatch import ScopeWatchInstrumentor

        instrumentor = ScopeWatchInstrumentor()
        instrumentor.instrument(
            tracer_provider=sdk.tracer_provider, meter_provider=sdk.meter_provider, spans=variant
        )
    asyncio.run(_workload(min(scopes, 10_000), min(tasks, 1_000)))
    sdk.flush()
    gc.collect()
    baseline = rss_bytes()
    readings = []
    for _ in range(rounds):
        asyncio.run(_workload(scopes, tasks))
        sdk.flush()
        gc.collect()
        readings.append(rss_bytes())
    if instrumentor is not None:
        instrumentor.uninstrument()
    return {"baseline": baseline, "readings": readings, "spans": sdk.exporter.exported}


def _slope(values: list[float]) -> float:
    """Least-squares slope per step (0 for fewer than two values)."""
    count = len(values)
    if count < 2:
        return 0.0
    mean_x = (count - 1) / 2
    mean_y = sum(values) / count
    numerator = sum((x - mean_x) * (y - mean_y) for x, y in enumerate(values))
    denominator = sum((x - mean_x) ** 2 for x in range(count))
    return numerator / denominator


def run(quick: bool = False) -> dict[str, Any]:
    """RSS growth and trend per variant, each in a fresh subprocess."""
    scopes = 20_000 if quick else 1_000_000
    tasks = 2_000 if quick else 100_000
    rounds = 3 if quick else 4
    measured: dict[str, dict[str, Any]] = {}
    for variant in VARIANTS:
        command = [
            common.python_executable(),
            "-m",
            "benchmarks.bench_memory",
            "--child",
            variant,
            f"--scopes={scopes}",
            f"--tasks={tasks}",
            f"--rounds={rounds}",
        ]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        measured[variant] = json.loads(output.strip().splitlines()[-1])
    figures = []
    for variant in VARIANTS:
        data = measured[variant]
        growth = (data["readings"][-1] - data["baseline"]) / MIB
        trend = _slope([value / MIB for value in data["readings"][1:]])
        data["growth_mib"] = growth
        data["trend_mib_per_round"] = trend
        target = variant != "bare"
        figures.append(
            common.figure(
                f"RSS growth {variant} (MiB)",
                growth,
                "<= 10" if target else None,
                unit="MiB",
                display=f"{growth:.1f} MiB",
            )
        )
        figures.append(
            common.figure(
                f"RSS trend {variant} rounds 2..{rounds} (MiB/round)",
                trend,
                "<= 1" if target else None,
                unit="MiB",
                display=f"{trend:+.2f} MiB/round",
            )
        )
    readings = {
        variant: " ".join(f"{value / MIB:.0f}" for value in measured[variant]["readings"])
        for variant in VARIANTS
    }
    return common.result(
        "memory",
        figures,
        raw={"scopes": scopes, "tasks": tasks, "rounds": rounds, "variants": measured},
        notes=[
            f"memory: {scopes:,} move_on_after scopes + {tasks:,} tasks (task groups of 1,000) "
            f"per round, {rounds} rounds, each variant in its own subprocess; RSS after each "
            f"round (MiB): " + "; ".join(f"{variant} {text}" for variant, text in readings.items()),
        ],
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", choices=VARIANTS, required=True)
    parser.add_argument("--scopes", type=int, required=True)
    parser.add_argument("--tasks", type=int, required=True)
    parser.add_argument("--rounds", type=int, required=True)
    arguments = parser.parse_args()
    result = child(arguments.child, arguments.scopes, arguments.tasks, arguments.rounds)
    sys.stdout.write(json.dumps(result) + "\n")
