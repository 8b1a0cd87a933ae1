"""Scope enter+exit: anyio move_on_after / CancelScope / task group, asyncio timeout / TaskGroup,
trio move_on_after / CancelScope / nursery, and an anyio-internal scope
(``anyio.lowlevel.cancel_shielded_checkpoint()``, which must cost next to nothing).

Variants, interleaved in one process (instrument / uninstrument between them):

- ``bare``: no instrumentation;
- ``anomalies``: scopewatch with the default span mode (spans only for anomalous scopes);
- ``all``: scopewatch with a span per scope;
- ``manual``: no scopewatch, the scope wrapped by hand in ``tracer.start_as_current_span`` (what
  a developer would write to trace it; opentelemetry-instrumentation-asyncio has no scope spans).

``sdk span`` is one bare ``tracer.start_span(...).end()`` through the same provider, the unit of
the ``all`` target: ``all / (bare + 1.25 x sdk span) <= 1.0``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import trio

from benchmarks import common
from scopewatch import semconv

WORKLOADS = (
    "anyio.move_on_after",
    "anyio.CancelScope",
    "anyio.TaskGroup",
    "asyncio.timeout",
    "asyncio.TaskGroup",
    "trio.move_on_after",
    "trio.CancelScope",
    "trio.Nursery",
    "anyio-internal scope",
)
HEADLINE = "anyio.move_on_after"
INTERNAL = "anyio-internal scope"
"""``anyio.lowlevel.cancel_shielded_checkpoint()``: a scope anyio enters and exits itself."""
TARGET_ANOMALIES = "<= 1.3"
TARGET_INTERNAL = "<= 1.05"
TARGET_ALL = "<= 1.0"
SPAN_WEIGHT = 1.25

Workload = Callable[[int], Awaitable[float]]


def _timed(body: Callable[[int], Awaitable[None]]) -> Workload:
    async def run(n: int) -> float:
        start = common.clock()
        await body(n)
        common.flush_deferred()
        return common.clock() - start

    return run


def _workloads(tracer: Any, manual: bool) -> dict[str, tuple[str, Workload]]:
    """``kind -> (backend, run(n) -> seconds)`` doing ``n`` enter+exit of one scope kind."""
    move_on_after = anyio.move_on_after
    cancel_scope = anyio.CancelScope
    create_task_group = anyio.create_task_group
    shielded_checkpoint = anyio.lowlevel.cancel_shielded_checkpoint

    def spanned(name: str) -> Any:
        return tracer.start_as_current_span(name)

    async def move_on(n: int) -> None:
        if manual:
            for _ in range(n):
                with spanned(HEADLINE), move_on_after(60):
                    pass
        else:
            for _ in range(n):
                with move_on_after(60):
                    pass

    async def scope(n: int) -> None:
        if manual:
            for _ in range(n):
                with spanned("anyio.CancelScope"), cancel_scope():
                    pass
        else:
            for _ in range(n):
                with cancel_scope():
                    pass

    async def anyio_group(n: int) -> None:
        if manual:
            for _ in range(n):
                with spanned("anyio.TaskGroup"):
                    async with create_task_group():
                        pass
        else:
            for _ in range(n):
                async with create_task_group():
                    pass

    async def internal(n: int) -> None:
        for _ in range(n):
            await shielded_checkpoint()

    workloads: dict[str, tuple[str, Workload]] = {
        "anyio.move_on_after": ("asyncio", _timed(move_on)),
        "anyio.CancelScope": ("asyncio", _timed(scope)),
        "anyio.TaskGroup": ("asyncio", _timed(anyio_group)),
    }
    if sys.version_info >= (3, 11):
        timeout = asyncio.timeout
        task_group = asyncio.TaskGroup

        async def asyncio_timeout(n: int) -> None:
            if manual:
                for _ in range(n):
                    with spanned("asyncio.timeout"):
                        async with timeout(60):
                            pass
            else:
                for _ in range(n):
                    async with timeout(60):
                        pass

        async def asyncio_group(n: int) -> None:
            if manual:
                for _ in range(n):
                    with spanned("asyncio.TaskGroup"):
                        async with task_group():
                            pass
            else:
                for _ in range(n):
                    async with task_group():
                        pass

        workloads["asyncio.timeout"] = ("asyncio", _timed(asyncio_timeout))
        workloads["asyncio.TaskGroup"] = ("asyncio", _timed(asyncio_group))
    trio_move_on_after = trio.move_on_after
    trio_scope = trio.CancelScope
    open_nursery = trio.open_nursery

    async def trio_move_on(n: int) -> None:
        if manual:
            for _ in range(n):
                with spanned("trio.move_on_after"), trio_move_on_after(60):
                    pass
        else:
            for _ in range(n):
                with trio_move_on_after(60):
                    pass

    async def trio_cancel_scope(n: int) -> None:
        if manual:
            for _ in range(n):
                with spanned("trio.CancelScope"), trio_scope():
                    pass
        else:
            for _ in range(n):
                with trio_scope():
                    pass

    async def nursery(n: int) -> None:
        if manual:
            for _ in range(n):
                with spanned("trio.Nursery"):
                    async with open_nursery():
                        pass
        else:
            for _ in range(n):
                async with open_nursery():
                    pass

    workloads["trio.move_on_after"] = ("trio", _timed(trio_move_on))
    workloads["trio.CancelScope"] = ("trio", _timed(trio_cancel_scope))
    workloads["trio.Nursery"] = ("trio", _timed(nursery))
    workloads[INTERNAL] = ("asyncio", _timed(internal))
    return workloads


def kinds() -> list[str]:
    """The scope kinds this Python can measure."""
    return list(_workloads(None, manual=False))


def runner(kind: str) -> Callable[[int], float]:
    """``run(n)``: ``n`` enter+exit of ``kind`` in a fresh event loop (seconds)."""
    backend, workload = _workloads(None, manual=False)[kind]

    def run(n: int) -> float:
        if backend == "trio":
            return float(trio.run(workload, n))
        return asyncio.run(workload(n))

    return run


def _run_all(workloads: dict[str, tuple[str, Workload]], count: int) -> dict[str, float]:
    """Warm up and time every workload; asyncio ones in one loop, trio ones in one run."""

    async def on(backend: str) -> dict[str, float]:
        timings: dict[str, float] = {}
        for name, (where, workload) in workloads.items():
            if where != backend:
                continue
            await workload(max(10, count // 20))  # warm caches (frame cache, attributes)
            common.flush_deferred()
            timings[name] = common.per_op_ns(await workload(count), count)
        return timings

    timings = asyncio.run(on("asyncio"))
    timings.update(trio.run(on, "trio"))
    return timings


async def _floor_parts(histogram: Any, n: int) -> dict[str, float]:
    """Per-scope costs scopewatch cannot avoid by design, measured at a workload's depth.

    One SDK histogram record (``scopewatch.scope.duration``, replayed at collection) and one
    ``frames.capture`` of ``STACK_DEPTH`` (8) user frames from this very stack.
    """
    from scopewatch._core import frames

    frame = sys._getframe()
    capture = frames.capture
    clock = common.clock
    capture(frame, 8)
    start = clock()
    for _ in range(n):
        capture(frame, 8)
    captured = clock() - start
    attributes = {semconv.SCOPE_KIND: HEADLINE, semconv.SCOPE_OUTCOME: semconv.OUTCOME_OK}
    record = histogram.record
    start = clock()
    for index in range(n):
        record(index * 1e-7, attributes)
    recorded = clock() - start
    return {"capture": common.per_op_ns(captured, n), "record": common.per_op_ns(recorded, n)}


def _sdk_span_seconds(tracer: Any, n: int) -> float:
    start_span = tracer.start_span
    clock = common.clock
    start = clock()
    for _ in range(n):
        start_span("sdk span").end()
    return clock() - start


def run(quick: bool = False) -> dict[str, Any]:
    """Measure every scope kind under every variant; return figures and raw samples."""
    count = 300 if quick else 20_000
    rounds = 3 if quick else 9
    sdk = common.Sdk()
    tracer = sdk.tracer_provider.get_tracer("benchmarks")
    histogram = sdk.meter_provider.get_meter("benchmarks").create_histogram(
        "benchmarks.scope.duration",
        unit="s",
        explicit_bucket_boundaries_advisory=list(semconv.SECONDS_BUCKETS),
    )
    variants = {
        "bare": common.nothing,
        "anomalies": lambda: common.scopewatch(sdk, "anomalies"),
        "all": lambda: common.scopewatch(sdk, "all"),
        "manual": common.nothing,
    }

    def measure(variant: str) -> dict[str, float]:
        timings = _run_all(_workloads(tracer, manual=variant == "manual"), count)
        if variant == "bare":
            timings.update(asyncio.run(_floor_parts(histogram, count)))
            _sdk_span_seconds(tracer, max(10, count // 20))
            timings["sdk span"] = common.per_op_ns(_sdk_span_seconds(tracer, count), count)
        sdk.flush()
        return timings

    samples = common.interleave(variants, rounds, measure)
    sdk.shutdown()
    per_workload: dict[str, dict[str, list[float]]] = {}
    for variant, rows in samples.items():
        for row in rows:
            for name, value in row.items():
                per_workload.setdefault(name, {}).setdefault(variant, []).append(value)
    span_ns = per_workload["sdk span"]["bare"]
    figures = []
    medians: dict[str, dict[str, float]] = {}
    for name in WORKLOADS:
        if name not in per_workload:
            figures.append(
                common.figure(f"{name} anomalies/bare", None, TARGET_ANOMALIES, note="needs 3.11+")
            )
            continue
        timings = per_workload[name]
        medians[name] = {variant: common.median(values) for variant, values in timings.items()}
        figures.append(
            common.figure(
                f"{name} anomalies/bare",
                common.ratio(timings, "anomalies", "bare"),
                TARGET_INTERNAL if name == INTERNAL else TARGET_ANOMALIES,
            )
        )
        if name == INTERNAL:
            continue  # no span of its own: the all and manual figures say nothing here
        budget = [
            bare + SPAN_WEIGHT * span for bare, span in zip(timings["bare"], span_ns, strict=True)
        ]
        figures.append(
            common.figure(
                f"{name} all/(bare+1.25 span)",
                common.ratio({"all": timings["all"], "budget": budget}, "all", "budget"),
                TARGET_ALL,
            )
        )
        figures.append(
            common.figure(f"{name} all/manual span", common.ratio(timings, "all", "manual"))
        )
    for name in WORKLOADS:
        if name in medians:
            row = medians[name]
            figures.append(
                common.figure(
                    f"{name} ns bare/anomalies/all/manual",
                    row["bare"],
                    unit="ns",
                    display=" / ".join(
                        f"{row[variant]:.0f}" for variant in ("bare", "anomalies", "all", "manual")
                    ),
                )
            )
    figures.append(
        common.figure("one bare SDK span (start+end)", common.median(span_ns), unit="ns")
    )
    record_ns = per_workload["record"]["bare"]
    capture_ns = per_workload["capture"]["bare"]
    figures.append(
        common.figure(
            "one SDK histogram record (replayed per scope)", common.median(record_ns), unit="ns"
        )
    )
    figures.append(
        common.figure(
            "frames.capture, 8 user frames, this stack", common.median(capture_ns), unit="ns"
        )
    )
    headline = per_workload[HEADLINE]["bare"]
    floor = [
        (bare + record + capture) / bare
        for bare, record, capture in zip(headline, record_ns, capture_ns, strict=True)
    ]
    figures.append(
        common.figure(
            f"{HEADLINE} floor (bare + record + capture)/bare",
            common.median(floor),
            note="the least anomalies/bare can be while every scope is one histogram measurement "
            "and keeps 8 frames, before any wrapper or bookkeeping cost",
        )
    )
    return common.result(
        "scopes",
        figures,
        raw={
            "count_per_sample": count,
            "rounds": rounds,
            "median_ns": medians,
            "sdk_span_ns": common.median(span_ns),
            "samples_ns": per_workload,
            "spans_exported": sdk.exporter.exported,
            "record_ns": common.median(record_ns),
            "capture_ns": common.median(capture_ns),
        },
        notes=[
            f"scopes: {count} enter+exit per sample, {rounds} interleaved rounds "
            "(bare, anomalies, all, manual), median of per-round ratios",
        ],
    )
