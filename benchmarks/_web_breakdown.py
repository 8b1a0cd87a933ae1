"""Microseconds scopewatch adds per request of ``bench_web``'s app, by endpoint and by feature.

``python -m benchmarks._web_breakdown [--requests 2000] [--rounds 3]`` calls the Starlette app
of ``bench_web`` in this process through ASGI directly (no uvicorn, no sockets, no client), so
what remains is the app's own CPU per request; each endpoint is timed bare and with scopewatch
(default settings, without enter stacks, then each feature alone), best of ``rounds``,
interleaved. Not part of ``make bench``: it says where the cost of a web request goes, the
served benchmark says what a user sees.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from benchmarks import _web_app, common
from scopewatch.config import FEATURES

PATHS = ("/work", "/background", "/stream")


async def _request(app: Any, path: str) -> None:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [],
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 1),
        "root_path": "",
    }
    body_sent = False

    async def receive() -> dict[str, Any]:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client never disconnects
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        return None

    await app(scope, receive, send)


def _per_request(requests: int) -> dict[str, float]:
    """Microseconds per request of each endpoint, in a fresh app and event loop."""
    app = _web_app.build()
    timings: dict[str, float] = {}

    async def main() -> None:
        async with app.router.lifespan_context(app):
            for path in PATHS:
                for _ in range(max(10, requests // 10)):  # warm caches and lazy imports
                    await _request(app, path)
                start = time.perf_counter()
                for _ in range(requests):
                    await _request(app, path)
                timings[path] = (time.perf_counter() - start) / requests * 1e6

    asyncio.run(main())
    return timings


def measure(requests: int, rounds: int) -> dict[str, dict[str, float]]:
    """``variant -> path -> best microseconds per request``.

    Variants: bare, default, default without enter stacks, and each feature alone.
    """
    sdk = common.Sdk()
    variants: dict[str, dict[str, Any] | None] = {"bare": None, "default": {}}
    variants["STACK_DEPTH=0"] = {"stack_depth": 0}
    variants.update({f"only {feature}": {"instrument": feature} for feature in FEATURES})
    best: dict[str, dict[str, float]] = {name: {} for name in variants}
    for _ in range(rounds):
        for name, settings in variants.items():
            if settings is None:
                timings = _per_request(requests)
            else:
                with common.scopewatch(sdk, "anomalies", **settings):
                    timings = _per_request(requests)
            for path, value in timings.items():
                best[name][path] = min(best[name].get(path, value), value)
    return best


def report(best: dict[str, dict[str, float]]) -> str:
    """One line per variant: microseconds per request and added over bare, per endpoint."""
    bare = best["bare"]
    lines = [f"{'variant':16s}" + "".join(f"{path:>26s}" for path in PATHS)]
    for name, timings in best.items():
        cells = []
        for path in PATHS:
            added = timings[path] - bare[path]
            cell = f"{timings[path]:.1f} us" if name == "bare" else f"{added:+.1f} us"
            cells.append(f"{cell:>14s} ({bare[path] / timings[path]:.2f}x)")
        lines.append(f"{name:16s}" + "".join(f"{cell:>26s}" for cell in cells))
    return "\n".join(lines)


def main() -> None:
    """Print the breakdown."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks._web_breakdown")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    print(report(measure(arguments.requests, arguments.rounds)))


if __name__ == "__main__":
    main()
