"""A realistic service: an anyio TCP echo server on loopback, throughput and p99 latency.

Each request runs under ``anyio.move_on_after``, takes an ``anyio.Lock`` (held across a
checkpoint, so concurrent connections contend) and spawns a task in a task group that sends the
echo. The server runs in a fresh subprocess per (round, variant) so each variant starts from the
same clean interpreter; the client is this (never instrumented) process, with a bounded number
of requests and a time limit, loopback only. Variants are interleaved round by round.

Variants: ``bare`` (no instrumentation), ``anomalies`` (scopewatch, default settings), ``all``
(scopewatch, ``SPANS=all``) and ``manual``: no scopewatch, the service's own scopes and task
wrapped by hand in ``tracer.start_as_current_span`` (one SDK span per user scope and task: the
``move_on_after``, the task group and the reply task), what a developer would write to trace
them. ``all/manual`` is the price of scopewatch's spans over hand-made ones.

Besides throughput, requests per CPU second of the server process (``/proc``, read around the
measured load) are compared: the server is CPU-bound, so that ratio is the throughput ratio
with most of a shared machine's other load taken out.

opentelemetry-instrumentation-asyncio is not a variant here: it wraps ``asyncio.create_task``
and friends, but anyio spawns with ``loop.create_task``, so it would trace nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import time
from typing import Any

from benchmarks import common

VARIANTS = ("bare", "anomalies", "all", "manual")
CONCURRENCY = 16
PAYLOAD = b"x" * 63 + b"\n"


# --- server (child process) ----------------------------------------------------------------


async def _serve(tracer: Any = None) -> None:
    """Serve until killed; with ``tracer``, one hand-made span per user scope and task."""
    import anyio
    from anyio.abc import SocketAttribute
    from anyio.streams.buffered import BufferedByteReceiveStream

    lock = anyio.Lock()
    handled = 0
    span: Any = tracer.start_as_current_span if tracer is not None else None

    async def reply(client: Any, line: bytes) -> None:
        await client.send(line)

    async def reply_spanned(client: Any, line: bytes) -> None:
        with span("task reply"):
            await client.send(line)

    async def handle(client: Any) -> None:
        nonlocal handled
        async with client:
            buffered = BufferedByteReceiveStream(client)
            while True:
                try:
                    line = await buffered.receive_until(b"\n", 65536)
                except (anyio.EndOfStream, anyio.IncompleteRead, OSError):
                    return
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    return
                if tracer is None:
                    with anyio.move_on_after(5):
                        async with lock:
                            handled += 1
                            await anyio.lowlevel.checkpoint()
                        async with anyio.create_task_group() as group:
                            group.start_soon(reply, client, line + b"\n")
                    continue
                with span("anyio.move_on_after"), anyio.move_on_after(5):
                    async with lock:
                        handled += 1
                        await anyio.lowlevel.checkpoint()
                    with span("anyio.TaskGroup"):
                        async with anyio.create_task_group() as group:
                            group.start_soon(reply_spanned, client, line + b"\n")

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(SocketAttribute.local_port)
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()
    await listener.serve(handle)


def serve(variant: str) -> None:
    """Run the echo server under ``variant`` until killed."""
    import anyio

    sdk = common.Sdk()
    context: contextlib.AbstractContextManager[Any] = (
        common.nothing() if variant in ("bare", "manual") else common.scopewatch(sdk, variant)
    )
    tracer = sdk.tracer_provider.get_tracer("bench.manual") if variant == "manual" else None
    with context, contextlib.suppress(KeyboardInterrupt):
        anyio.run(_serve, tracer)


# --- client (this process) -----------------------------------------------------------------


async def _load(port: int, total: int, seconds: float) -> tuple[int, float, list[float]]:
    latencies: list[float] = []
    remaining = total
    perf_counter = time.perf_counter
    deadline = perf_counter() + seconds

    async def connection() -> None:
        nonlocal remaining
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while remaining > 0 and perf_counter() < deadline:
                remaining -= 1
                sent = perf_counter()
                writer.write(PAYLOAD)
                await reader.readuntil(b"\n")
                latencies.append(perf_counter() - sent)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    start = perf_counter()
    await asyncio.wait_for(
        asyncio.gather(*(connection() for _ in range(CONCURRENCY))), seconds + 30
    )
    return len(latencies), perf_counter() - start, latencies


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _one(variant: str, total: int, seconds: float, warmup: int) -> dict[str, float]:
    command = [common.python_executable(), "-m", "benchmarks.bench_service", "--serve", variant]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        if not line.strip().isdigit():
            raise RuntimeError(f"the {variant} server did not start (printed {line!r})")
        port = int(line)
        asyncio.run(_load(port, warmup, seconds))
        cpu = common.process_cpu_seconds(server.pid)
        done, elapsed, latencies = asyncio.run(_load(port, total, seconds))
        cpu = common.process_cpu_seconds(server.pid) - cpu
    finally:
        server.kill()
        server.wait()
    return {
        "requests": done,
        "throughput": done / elapsed,
        "per_cpu_second": done / cpu if cpu > 0 else float("nan"),
        "p50_ms": _percentile(latencies, 0.50) * 1e3,
        "p99_ms": _percentile(latencies, 0.99) * 1e3,
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Interleave rounds of every variant's server; throughput and p99 ratios."""
    total = 400 if quick else 20_000
    seconds = 5.0 if quick else 15.0
    warmup = 50 if quick else 1_000
    rounds = 2 if quick else 5
    samples: dict[str, list[dict[str, float]]] = {variant: [] for variant in VARIANTS}
    for round_index in range(rounds):
        shift = round_index % len(VARIANTS)
        for variant in VARIANTS[shift:] + VARIANTS[:shift]:
            samples[variant].append(_one(variant, total, seconds, warmup))
    throughput = {v: [s["throughput"] for s in rows] for v, rows in samples.items()}
    per_cpu = {v: [s["per_cpu_second"] for s in rows] for v, rows in samples.items()}
    p99 = {v: [s["p99_ms"] for s in rows] for v, rows in samples.items()}
    medians = {
        variant: {key: common.median([s[key] for s in rows]) for key in rows[0]}
        for variant, rows in samples.items()
    }
    figures = [
        common.figure(
            "throughput anomalies/bare", common.ratio(throughput, "anomalies", "bare"), ">= 0.95"
        ),
        common.figure(
            "requests per server CPU-s anomalies/bare",
            common.ratio(per_cpu, "anomalies", "bare"),
            ">= 0.95",
        ),
        common.figure(
            "requests per server CPU-s all/manual",
            common.ratio(per_cpu, "all", "manual"),
            ">= 0.9",
        ),
        common.figure("throughput all/bare", common.ratio(throughput, "all", "bare")),
        common.figure("throughput all/manual", common.ratio(throughput, "all", "manual"), ">= 0.9"),
        common.figure("throughput manual/bare", common.ratio(throughput, "manual", "bare")),
        common.figure("p99 latency anomalies/bare", common.ratio(p99, "anomalies", "bare")),
        common.figure("p99 latency all/bare", common.ratio(p99, "all", "bare")),
        common.per_variant("requests/s", medians, "throughput", VARIANTS, "req/s", ",.0f"),
        common.per_variant("p99 ms", medians, "p99_ms", VARIANTS, "ms", ".2f"),
    ]
    return common.result(
        "service",
        figures,
        raw={"rounds": rounds, "requests_per_run": total, "medians": medians, "samples": samples},
        notes=[
            f"service: anyio echo server in a fresh subprocess per run, {CONCURRENCY} loopback "
            f"connections, {total} requests or {seconds:.0f} s per run, {rounds} interleaved "
            "rounds; per request: move_on_after + anyio.Lock + a task in a task group; "
            "manual: one hand-made SDK span per user scope and task (3 per request)",
        ],
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", choices=VARIANTS, required=True)
    serve(parser.parse_args().serve)
