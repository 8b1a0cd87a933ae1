"""The moving parts of ``bench_web``: the server process, the load generator, the OTLP receiver.

``python -m benchmarks._web_stack serve`` binds a loopback socket, prints its port and runs the
app of ``benchmarks._web_app`` under uvicorn on it (``bench_web`` starts it through
``opentelemetry-instrument``). ``python -m benchmarks._web_stack load PORT ...`` is the load
generator: a separate process holding a fixed number of keep-alive HTTP/1.1 connections, each
sending its next request as soon as the previous answer is read (closed loop), cycling through
the app's endpoints; it prints one JSON line. The OTLP/HTTP receiver runs in the benchmark's own
process, answers every export with 200 and counts the spans it received.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PATHS = ("/work", "/background", "/stream")


# --- server (child process, under opentelemetry-instrument) --------------------------------


def serve() -> None:
    """Run the app under uvicorn on a fresh loopback port; print the port first."""
    import uvicorn

    from benchmarks import _web_app

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    config = uvicorn.Config(
        _web_app.build(), log_level="warning", access_log=False, lifespan="on", loop="auto"
    )
    server = uvicorn.Server(config)
    # uvicorn re-raises the signal that stopped it once it has shut down; with SIGTERM's default
    # action the process would die there, before atexit shuts the SDK down and flushes the spans
    # still queued (only full batches of 512 would ever arrive).
    signal.signal(signal.SIGTERM, _interrupt)
    sys.stdout.write(f"{listener.getsockname()[1]}\n")
    sys.stdout.flush()
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[listener])


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


# --- load generator (child process, never instrumented) ------------------------------------


async def _read_response(reader: asyncio.StreamReader) -> None:
    """Read one HTTP/1.1 response (Content-Length or chunked body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"unexpected response {head[:60]!r}")
    lowered = head.lower()
    marker = lowered.find(b"content-length:")
    if marker >= 0:
        end = lowered.index(b"\r\n", marker)
        await reader.readexactly(int(lowered[marker + 15 : end]))
        return
    while True:  # Transfer-Encoding: chunked
        size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
        await reader.readexactly(size + 2)
        if size == 0:
            return


async def _load(
    port: int, connections: int, total: int, seconds: float
) -> tuple[int, float, list[float]]:
    latencies: list[float] = []
    remaining = total
    perf_counter = time.perf_counter
    deadline = perf_counter() + seconds
    requests = [f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode() for path in PATHS]

    async def connection(index: int) -> None:
        nonlocal remaining
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        step = index
        try:
            while remaining > 0 and perf_counter() < deadline:
                remaining -= 1
                step += 1
                sent = perf_counter()
                writer.write(requests[step % len(requests)])
                await _read_response(reader)
                latencies.append(perf_counter() - sent)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    start = perf_counter()
    await asyncio.wait_for(
        asyncio.gather(*(connection(index) for index in range(connections))), seconds + 30
    )
    return len(latencies), perf_counter() - start, latencies


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def load(
    port: int, connections: int, warmup: int, total: int, seconds: float, server_pid: int
) -> dict[str, float]:
    """Warm up, then measure; the figures of one run (server CPU read around the measurement)."""
    from benchmarks import common

    runner: Any = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        runner = uvloop.run  # the client's own cost stays small: it shares the machine
    runner(_load(port, connections, warmup, seconds))
    cpu = common.process_cpu_seconds(server_pid)
    done, elapsed, latencies = runner(_load(port, connections, total, seconds))
    cpu = common.process_cpu_seconds(server_pid) - cpu
    return {
        "requests": done,
        "seconds": elapsed,
        "throughput": done / elapsed if elapsed > 0 else float("nan"),
        "per_cpu_second": done / cpu if cpu > 0 else float("nan"),
        "p50_ms": _percentile(latencies, 0.50) * 1e3,
        "p99_ms": _percentile(latencies, 0.99) * 1e3,
    }


# --- OTLP/HTTP receiver (in the benchmark's process) ---------------------------------------


class Receiver:
    """A loopback OTLP/HTTP endpoint: 200 for every export, spans counted."""

    def __init__(self) -> None:
        self.spans = 0
        self.exports = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.endswith("/v1/traces"):
                    receiver._count(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                del format, args

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _count(self, body: bytes) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        count = sum(
            len(scope.spans)
            for resource in request.resource_spans
            for scope in resource.scope_spans
        )
        with self._lock:
            self.spans += count
            self.exports += 1

    def take(self) -> int:
        """Spans received since the last call."""
        with self._lock:
            spans, self.spans = self.spans, 0
        return spans

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._web_stack")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve")
    loader = commands.add_parser("load")
    loader.add_argument("port", type=int)
    loader.add_argument("--connections", type=int, default=16)
    loader.add_argument("--warmup", type=int, default=500)
    loader.add_argument("--total", type=int, default=20_000)
    loader.add_argument("--seconds", type=float, default=10.0)
    loader.add_argument("--server-pid", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve()
        return
    figures = load(
        args.port, args.connections, args.warmup, args.total, args.seconds, args.server_pid
    )
    sys.stdout.write(json.dumps(figures) + "\n")


if __name__ == "__main__":
    main()
