"""Helper process for tests/deploy/test_live.py: commits real violations, serves /metrics.

scopewatch instruments the process with the OpenTelemetry Prometheus exporter
(``PrometheusMetricReader`` + ``prometheus_client.start_http_server`` on a free loopback port),
then, in a loop, enters an ``asyncio.timeout`` in one task and exits it in another (a
``cross_task_exit`` violation counted by scopewatch's own instrumentation; on 3.10 an anyio
``CancelScope`` with a deadline) next to healthy scopes. It prints ``PORT <n>`` once serving
and stops by itself after ``argv[1]`` seconds.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import anyio
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import start_http_server

from scopewatch import ScopeWatchInstrumentor


async def enter_here(scope: Any) -> None:
    if hasattr(scope, "__aenter__"):
        await scope.__aenter__()
    else:
        scope.__enter__()


async def exit_there(scope: Any) -> None:
    try:
        if hasattr(scope, "__aexit__"):
            await scope.__aexit__(None, None, None)
        else:
            scope.__exit__(None, None, None)
    except RuntimeError:
        pass  # anyio refuses a cross-task exit (asyncio.timeout silently misbehaves instead)


def deadline_scope() -> Any:
    """``asyncio.timeout`` (3.11+), else anyio's ``CancelScope`` with a deadline."""
    if sys.version_info >= (3, 11):
        return asyncio.timeout(60)
    return anyio.CancelScope(deadline=anyio.current_time() + 60)


async def commit_violations(lifetime: float) -> None:
    deadline = time.monotonic() + lifetime
    while time.monotonic() < deadline:
        scope = deadline_scope()
        await asyncio.create_task(enter_here(scope))  # entered in one task ...
        await asyncio.create_task(exit_there(scope))  # ... exited in another
        with anyio.move_on_after(0.01):  # healthy scopes, some cancelled by their deadline
            await anyio.sleep(0.02)
        with anyio.fail_after(1):
            await asyncio.sleep(0)
        await asyncio.sleep(0.1)


def main() -> None:
    lifetime = float(sys.argv[1]) if len(sys.argv) > 1 else 120.0
    reader = PrometheusMetricReader()
    meter_provider = MeterProvider(
        metric_readers=[reader], resource=Resource.create({"service.name": "violator"})
    )
    ScopeWatchInstrumentor().instrument(
        tracer_provider=TracerProvider(), meter_provider=meter_provider
    )
    server, _thread = start_http_server(0, addr="127.0.0.1")
    print(f"PORT {server.server_port}", flush=True)
    try:
        asyncio.run(commit_violations(lifetime))
    finally:
        server.shutdown()
        meter_provider.shutdown()


if __name__ == "__main__":
    main()
