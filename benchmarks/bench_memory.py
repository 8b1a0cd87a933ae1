"""Memory: RSS after 1,000,000 scopes and 100,000 tasks, and over repeated rounds (no trend).

Each variant (bare, scopewatch ``anomalies``) runs in its own fresh subprocess reading
``VmRSS`` from ``/proc/self/status``: a baseline after instrumenting and a small warm-up, then
one reading after every round (``gc.collect()`` first). A round is a quarter of the workload
(250,000 ``move_on_after`` scopes and 25,000 tasks in task groups of 1,000); eight rounds run,
so the workload is done twice.

Figures: growth after the first full workload (rounds 1-4) over the baseline, for both
variants, and scopewatch's share (anomalies minus bare: CPython's allocator keeps some freed
arenas, so the bare program grows too); the trend is the least-squares slope of rounds 5-8,
in MiB per round, after the allocator has settled.
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
    for index in range(scopes):
        with move_on_after(60):
            pass
        if index % 1_000 == 999:
            # Yield to the loop like a real program: it purges the cancelled deadline timers
            # (otherwise anyio's own TimerHandles pile up: 250,000 of them, ~40 MiB, per round).
            await asyncio.sleep(0)

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
    scopes = 5_000 if quick else 250_000
    tasks = 500 if quick else 25_000
    rounds = 8
    half = rounds // 2
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
    for data in measured.values():
        data["growth_mib"] = (data["readings"][half - 1] - data["baseline"]) / MIB
        data["trend_mib_per_round"] = _slope([value / MIB for value in data["readings"][half:]])
    bare, anomalies = measured["bare"], measured["anomalies"]
    total = f"{scopes * half:,} scopes + {tasks * half:,} tasks"
    figures = [
        common.figure(
            "RSS growth anomalies minus bare (MiB)",
            anomalies["growth_mib"] - bare["growth_mib"],
            "<= 10",
            unit="MiB",
            display=f"{anomalies['growth_mib'] - bare['growth_mib']:.1f} MiB",
            note=f"growth after {total}: bare {bare['growth_mib']:.1f} MiB, "
            f"anomalies {anomalies['growth_mib']:.1f} MiB",
        ),
        common.figure(
            f"RSS trend anomalies, rounds {half + 1}-{rounds} (MiB/round)",
            anomalies["trend_mib_per_round"],
            "<= 0.5",
            unit="MiB",
            display=f"{anomalies['trend_mib_per_round']:+.2f} MiB/round",
        ),
        common.figure(
            f"RSS trend bare, rounds {half + 1}-{rounds} (MiB/round)",
            bare["trend_mib_per_round"],
            unit="MiB",
            display=f"{bare['trend_mib_per_round']:+.2f} MiB/round",
        ),
    ]
    readings = {
        variant: " ".join(f"{value / MIB:.0f}" for value in measured[variant]["readings"])
        for variant in VARIANTS
    }
    baselines = {variant: f"{measured[variant]['baseline'] / MIB:.0f}" for variant in VARIANTS}
    return common.result(
        "memory",
        figures,
        raw={"scopes_per_round": scopes, "tasks_per_round": tasks, "rounds": rounds, **measured},
        notes=[
            f"memory: {rounds} rounds of {scopes:,} move_on_after scopes + {tasks:,} tasks, each "
            "variant in its own subprocess; RSS in MiB, baseline then after each round: "
            + "; ".join(
                f"{variant} {baselines[variant]} | {text}" for variant, text in readings.items()
            ),
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
