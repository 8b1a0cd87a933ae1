"""A real web stack: Starlette under uvicorn on loopback, run as users run it, loaded from outside.

The server is ``opentelemetry-instrument python -m benchmarks._web_stack serve`` (uvicorn's
defaults: uvloop when installed, h11), a fresh process per (round, variant), with OTLP/HTTP
exporters for traces and metrics pointed at a loopback receiver in this process
(``OTEL_METRIC_EXPORT_INTERVAL`` 5 s, so collections happen during every run; the SDK's batch
span processor at its defaults but for ``OTEL_BSP_MAX_QUEUE_SIZE``, raised as in the in-process
benchmarks so that no span is dropped: with the default 2048 ``SPANS=all`` drops spans under
this load, which would make it look cheaper). The app (``benchmarks._web_app``) cycles through
``/work`` (``move_on_after`` + ``anyio.Lock`` + a task in a task group), ``/background`` (a job
handed to the app's long-lived task group) and ``/stream`` (a ``StreamingResponse`` of four
chunks, each under a ``move_on_after``). The load generator is another process
(``_web_stack load``) with a fixed number of keep-alive connections, closed loop.

Variants, all under the same launcher; only scopewatch's instrumentor is active (the other
installed one, opentelemetry-instrumentation-asyncio, is disabled in every variant):

- ``disabled``: ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` names scopewatch too;
- ``default``: scopewatch with its default settings;
- ``all``: scopewatch with ``OTEL_PYTHON_SCOPEWATCH_SPANS=all``;
- ``manual``: scopewatch disabled, the app making one SDK span by hand per scope and task of its
  own (``BENCH_WEB_MANUAL=1``).

``all`` also makes spans for scopes and tasks the app does not write itself (uvicorn's task per
request, Starlette's streaming task group); the spans per request of each variant are counted
by the receiver and printed. Variants are interleaved round by round; figures are medians of
the per-round ratios. Two kinds of figure: throughput (requests per wall-clock second, what the
issue's targets are stated in) and requests per CPU second of the server process (user +
system, read from ``/proc`` around the measured load): the server is CPU-bound, so the second is
the same ratio with the machine's other load mostly taken out, the one to trust on a shared
machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks import _web_app, _web_stack, common

VARIANTS = ("disabled", "default", "all", "manual")
CONNECTIONS = 16
SHUTDOWN_SECONDS = 60.0
"""How long a server may take to flush its spans at shutdown (longer on a loaded machine)."""
ROOT = Path(__file__).resolve().parent.parent


def _launcher() -> str:
    """``opentelemetry-instrument`` next to this interpreter."""
    return str(Path(common.python_executable()).parent / "opentelemetry-instrument")


def _environment(variant: str, endpoint: str) -> dict[str, str]:
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("OTEL_", "BENCH_WEB_"))
    }
    environment.update(
        OTEL_SERVICE_NAME="bench-web",
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_METRICS_EXPORTER="otlp",
        OTEL_LOGS_EXPORTER="none",
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_METRIC_EXPORT_INTERVAL="5000",
        OTEL_BSP_MAX_QUEUE_SIZE=str(common.QUEUE_SIZE),
        OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="asyncio",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    if variant in ("disabled", "manual"):
        environment["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] = "asyncio,scopewatch"
    if variant == "all":
        environment["OTEL_PYTHON_SCOPEWATCH_SPANS"] = "all"
    if variant == "manual":
        environment[_web_app.MANUAL_ENV] = "1"
    return environment


def _one(
    variant: str, receiver: _web_stack.Receiver, total: int, seconds: float, warmup: int
) -> dict[str, float]:
    command = [_launcher(), common.python_executable(), "-m", "benchmarks._web_stack", "serve"]
    server = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=_environment(variant, receiver.endpoint),
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        if not line.strip().isdigit():
            raise RuntimeError(f"the {variant} server did not start (printed {line!r})")
        port = line.strip()
        loader = [
            common.python_executable(),
            "-m",
            "benchmarks._web_stack",
            "load",
            port,
            f"--connections={CONNECTIONS}",
            f"--warmup={warmup}",
            f"--total={total}",
            f"--seconds={seconds}",
            f"--server-pid={server.pid}",  # opentelemetry-instrument execs: same process
        ]
        load_environment = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        receiver.take()
        output = subprocess.run(
            loader,
            cwd=ROOT,
            env=load_environment,
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds * 2 + 60,
        ).stdout
        figures: dict[str, float] = json.loads(output.strip().splitlines()[-1])
    finally:
        server.terminate()  # uvicorn shuts down gracefully: the SDK flushes its last spans
        try:
            server.wait(timeout=SHUTDOWN_SECONDS)
            flushed = True
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
            flushed = False
    requests = figures["requests"] + warmup
    spans = receiver.take()
    figures["spans_per_request"] = spans / requests if requests and flushed else float("nan")
    return figures


def run(quick: bool = False) -> dict[str, Any]:
    """Interleave rounds of the four variants' servers; throughput and p99 ratios."""
    total = 600 if quick else 40_000
    seconds = 3.0 if quick else 12.0
    warmup = 60 if quick else 1_000
    rounds = 1 if quick else 5
    receiver = _web_stack.Receiver()
    samples: dict[str, list[dict[str, float]]] = {variant: [] for variant in VARIANTS}
    try:
        for round_index in range(rounds):
            shift = round_index % len(VARIANTS)
            for variant in VARIANTS[shift:] + VARIANTS[:shift]:
                samples[variant].append(_one(variant, receiver, total, seconds, warmup))
    finally:
        receiver.close()
    throughput = {v: [s["throughput"] for s in rows] for v, rows in samples.items()}
    per_cpu = {v: [s["per_cpu_second"] for s in rows] for v, rows in samples.items()}
    p99 = {v: [s["p99_ms"] for s in rows] for v, rows in samples.items()}
    medians = {
        variant: {key: common.median([s[key] for s in rows]) for key in rows[0]}
        for variant, rows in samples.items()
    }
    figures = [
        common.figure(
            "throughput default/disabled",
            common.ratio(throughput, "default", "disabled"),
            ">= 0.95",
        ),
        common.figure("throughput all/manual", common.ratio(throughput, "all", "manual"), ">= 0.9"),
        common.figure(
            "requests per server CPU-s default/disabled",
            common.ratio(per_cpu, "default", "disabled"),
            ">= 0.95",
        ),
        common.figure(
            "requests per server CPU-s all/manual",
            common.ratio(per_cpu, "all", "manual"),
            ">= 0.9",
        ),
        common.figure("throughput all/disabled", common.ratio(throughput, "all", "disabled")),
        common.figure("throughput manual/disabled", common.ratio(throughput, "manual", "disabled")),
        common.figure("p99 latency default/disabled", common.ratio(p99, "default", "disabled")),
        common.per_variant("requests/s", medians, "throughput", VARIANTS, "req/s", ",.0f"),
        common.per_variant("p99 ms", medians, "p99_ms", VARIANTS, "ms", ".2f"),
        common.figure(
            "spans per request " + "/".join(VARIANTS),
            medians["all"]["spans_per_request"],
            unit="spans",
            display=" / ".join(f"{medians[v]['spans_per_request']:.2f}" for v in VARIANTS),
        ),
    ]
    return common.result(
        "web",
        figures,
        raw={"rounds": rounds, "requests_per_run": total, "medians": medians, "samples": samples},
        notes=[
            f"web: Starlette under uvicorn (loop auto: uvloop if installed) run by "
            f"opentelemetry-instrument with OTLP/HTTP exporters to a loopback receiver, a fresh "
            f"server per run; load from a separate process, {CONNECTIONS} keep-alive "
            f"connections, {total} requests or {seconds:.0f} s per run, {rounds} interleaved "
            "rounds; disabled = OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=asyncio,scopewatch; "
            "manual = scopewatch disabled, one hand-made SDK span per app scope and task",
        ],
    )


if __name__ == "__main__":
    sys.stdout.write(json.dumps(run("--quick" in sys.argv), default=str) + "\n")
