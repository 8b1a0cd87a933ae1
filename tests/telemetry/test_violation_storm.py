"""A violation storm: 100,000 violations in one run keep scopewatch's memory and log bounded.

The storm is 100,000 non-LIFO exits (two ``asyncio.timeout`` scopes entered by hand and exited
outer first, in one task), with alert rules on them: a ``log`` rule firing on every match, a
``log`` rule with a long cooldown and a ``debugpy`` rule with a threshold and a long cooldown.
The test's own in-memory span exporter is emptied as the storm goes (it would otherwise hold
100,000 spans: that is the exporter's memory, not scopewatch's); scopewatch's retention is what
is left after the storm, measured two ways: allocated blocks over the whole storm
(``sys.getallocatedblocks``, no overhead) and bytes over its last part with ``tracemalloc``
(too slow for the whole storm on a shared machine).

No timing is asserted; the log-line bound is derived from the storm's own duration (the limit
applies per 60 s window).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import sys
import time
import tracemalloc
from typing import TYPE_CHECKING, Any

import pytest

from scopewatch import semconv
from scopewatch.alerts import debugger
from scopewatch.alerts.ratelimit import WINDOW_SECONDS
from tests.support.markers import needs_311

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import Telemetry

pytestmark = [
    needs_311,
    pytest.mark.timeout(900),  # a load test: 100,000 violations through a real SDK
]

VIOLATIONS = 100_000
TRACED = 10_000
"""The last violations of the storm, run under ``tracemalloc``."""
BATCH = 500
"""Violations between two yields to the loop (asyncio drops cancelled timer handles then)."""
LOG_LIMIT = 10
RULES = (
    "every-match: scopewatch.violation.kind == non_lifo_exit cooldown 0 -> log; "
    "once: scopewatch.violation.kind == non_lifo_exit cooldown 3600 -> log; "
    "debug: scopewatch.violation.kind exists over 1000/60 cooldown 3600 -> debugpy"
)
MAX_RETAINED_BLOCKS_PER_VIOLATION = 0.05
"""A leaked record per violation is at least one block (a ScopeRecord with its list: three)."""
MAX_RETAINED_BYTES_PER_VIOLATION = 16
"""A leaked ScopeRecord alone is over 150 bytes; a float kept per match is 24."""


class CountingHandler(logging.Handler):
    """Counts the scopewatch logger's lines (keeping 100,000 records would be a leak itself)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines = 0
        self.fired: dict[str, int] = {}
        self.summaries: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines += 1
        message = record.getMessage()
        if "suppressed" in message and "similar log lines" in message:
            self.summaries.append(message)
        elif message.startswith("scopewatch: alert rule '"):
            rule = message.split("'")[1]
            self.fired[rule] = self.fired.get(rule, 0) + 1


class Storm:
    """Runs the violations and empties the test's exporter as it goes."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry
        self.violation_spans = 0

    def drain_exporter(self) -> None:
        exporter = self.telemetry.exporter
        self.violation_spans += sum(
            1
            for span in exporter.get_finished_spans()
            if (span.attributes or {}).get(semconv.VIOLATION_KIND) == semconv.KIND_NON_LIFO_EXIT
        )
        exporter.clear()

    async def run(self, count: int) -> None:
        for done in range(count):
            outer, inner = asyncio.timeout(60), asyncio.timeout(60)
            await outer.__aenter__()
            await inner.__aenter__()
            await outer.__aexit__(None, None, None)  # <- non-LIFO: inner is still entered
            await inner.__aexit__(None, None, None)
            if done % BATCH == BATCH - 1:
                await asyncio.sleep(0)
                self.drain_exporter()
        self.drain_exporter()


def settle(telemetry: Telemetry) -> None:
    """Empty what is bounded by design and refilled by any work: metric buffers, garbage."""
    telemetry.reader.get_metrics_data()  # replays scopewatch's deferred histogram buffers
    for _ in range(3):
        gc.collect()


def alert_firings(telemetry: Telemetry) -> dict[tuple[str, str], int]:
    return {
        (p.attributes[semconv.ALERT_RULE], p.attributes[semconv.ALERT_ACTION]): p.value
        for p in telemetry.points(semconv.METRIC_ALERTS)
    }


def test_a_storm_of_100k_violations_keeps_memory_alerts_and_log_bounded(
    instrument: Callable[..., Telemetry], monkeypatch: pytest.MonkeyPatch
) -> None:
    telemetry = instrument(spans="none", rules=RULES, default_rule=False, log_limit=LOG_LIMIT)
    debugpy_calls: list[str] = []
    real_run = debugger.run

    def counting_run(rule: Any, span: Any, settings: Any) -> None:
        debugpy_calls.append(rule.name)
        real_run(rule, span, settings)  # the real action (DEBUGPY is off: it says so once)

    monkeypatch.setattr(debugger, "run", counting_run)
    handler = CountingHandler()
    logger = logging.getLogger("scopewatch")
    logger.addHandler(handler)
    storm = Storm(telemetry)
    measured: dict[str, float] = {}

    async def main() -> None:
        await storm.run(1000)  # warm-up: caches, the SDK's metric streams, the first firings
        settle(telemetry)
        blocks_before = sys.getallocatedblocks()
        started = time.monotonic()
        await storm.run(VIOLATIONS - 1000 - TRACED)
        tracemalloc.start()
        try:
            await storm.run(TRACED)
            settle(telemetry)
            measured["traced_bytes"], measured["traced_peak"] = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        measured["elapsed"] = time.monotonic() - started
        settle(telemetry)
        measured["blocks"] = sys.getallocatedblocks() - blocks_before

    try:
        asyncio.run(main())
        telemetry.uninstrument()  # reports the log lines still held back
    finally:
        logger.removeHandler(handler)

    # every violation happened and was reported
    assert storm.violation_spans == VIOLATIONS
    (point,) = telemetry.points(semconv.METRIC_VIOLATIONS)
    assert point.value == VIOLATIONS

    # memory: scopewatch keeps nothing per violation
    blocks_per_violation = measured["blocks"] / (VIOLATIONS - 1000)
    assert blocks_per_violation < MAX_RETAINED_BLOCKS_PER_VIOLATION, measured
    assert measured["traced_bytes"] / TRACED < MAX_RETAINED_BYTES_PER_VIOLATION, measured

    # cooldowns and thresholds: firings are what the rules allow
    firings = alert_firings(telemetry)
    assert firings == {
        ("every-match", "log"): VIOLATIONS,  # cooldown 0: every match fires
        ("once", "log"): 1,  # cooldown 3600 s
        ("debug", "debugpy"): 1,  # the 1000th match, then cooldown 3600 s
    }
    assert debugpy_calls == ["debug"]

    # log lines: rate-limited per rule, and everything held back is accounted for
    windows = math.floor(measured["elapsed"] / WINDOW_SECONDS) + 2  # warm-up and storm
    assert handler.fired["once"] == 1
    assert 1 <= handler.fired["every-match"] <= LOG_LIMIT * windows
    suppressed = sum(
        int(line.split("suppressed ")[1].split()[0])
        for line in handler.summaries
        if "'every-match'" in line
    )
    print(  # for the record, with -s
        f"storm: {VIOLATIONS} violations, measured {measured}, log lines {handler.lines} "
        f"(rule lines {handler.fired}, {suppressed} suppressed in {len(handler.summaries)} "
        f"summaries), firings {firings}"
    )
    assert handler.fired["every-match"] + suppressed == VIOLATIONS
    assert handler.lines <= 3 * LOG_LIMIT * windows + 5  # not one line per violation
