"""Violation records hold plain data (strings, numbers, code objects), never frames or user objects;
the tasks and scopes of a cross-task exit, a non-LIFO exit, leaks and a swallowed cancel are freed.
"""

from __future__ import annotations

import asyncio
import contextlib
import types
from typing import Any

import anyio
import pytest

from scopewatch import _runtime, semconv
from scopewatch._core.records import Violation
from scopewatch.telemetry.scopes import violation_listeners
from tests.support.markers import needs_311
from tests.support.references import (
    MODES,
    Probes,
    check,
    held_by_scopewatch,
    holder,
    run_on_fresh_loop,
)

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def plain_values(value: object) -> bool:
    """Whether ``value`` is made of strings, numbers, bools, ``None``, code objects and tuples."""
    if isinstance(value, tuple):
        return all(plain_values(item) for item in value)
    return value is None or isinstance(value, str | int | float | bool | types.CodeType)


async def violations_workload(probes: Probes, anyio_held: list[int]) -> None:
    """A cross-task exit, a non-LIFO exit, leaked scopes and a swallowed cancellation."""
    stored: list[Any] = []

    async def enters() -> None:
        keep = probes.frame("entering frame")
        timeout = asyncio.timeout(60)
        await timeout.__aenter__()
        scope = anyio.CancelScope()
        scope.__enter__()
        stored.extend((timeout, scope))
        del keep

    async def exits() -> None:
        keep = probes.frame("exiting frame")
        timeout, scope = stored
        await timeout.__aexit__(None, None, None)  # asyncio raises nothing
        with contextlib.suppress(RuntimeError):  # anyio refuses (and keeps the scope entered)
            scope.__exit__(None, None, None)
        del keep

    entering = asyncio.create_task(enters(), name="entering")
    await entering
    anyio_held.append(id(entering))  # the anyio scope left entered keeps its host task
    exiting = asyncio.create_task(exits(), name="exiting")
    probes.watch("exiting task", exiting)
    await exiting
    probes.watch("cross-task asyncio.timeout", stored[0])
    anyio_held.append(id(stored[1]))  # anyio's task state keeps it: checked by referents
    holder.append(stored[1])

    async def out_of_order() -> None:
        outer, inner = asyncio.timeout(60), asyncio.timeout(60)
        probes.watch("non-LIFO outer", outer)
        await outer.__aenter__()
        await inner.__aenter__()
        await outer.__aexit__(None, None, None)
        await inner.__aexit__(None, None, None)

    async def leaks() -> None:
        leaked = asyncio.timeout(60)
        probes.watch("leaked asyncio.timeout", leaked)
        await leaked.__aenter__()

    async def swallows() -> None:
        keep = probes.frame("swallowing frame")
        try:
            await asyncio.sleep(1)
        except asyncio.CancelledError:
            pass
        del keep

    await asyncio.create_task(out_of_order(), name="out-of-order")
    leaker = asyncio.create_task(leaks(), name="leaker")
    probes.watch("leaking task", leaker)
    await leaker
    swallower = asyncio.create_task(swallows(), name="swallower")
    probes.watch("swallowing task", swallower)
    await asyncio.sleep(0)
    swallower.cancel()
    await swallower
    stored.clear()
    del entering, exiting, leaker, swallower


@needs_311
@pytest.mark.parametrize("spans", MODES)
def test_violation_records_keep_plain_data_and_pin_nothing(instrument, spans):
    telemetry = instrument(spans=spans)
    heard: list[Violation] = []
    assert _runtime.current is not None
    violation_listeners(_runtime.current).append(lambda violation, _: heard.append(violation))
    probes = Probes()
    anyio_held: list[int] = []
    try:
        run_on_fresh_loop(lambda: violations_workload(probes, anyio_held))
        kinds = sorted(
            dict(span.attributes or {})[semconv.VIOLATION_KIND]
            for span in telemetry.violation_spans()
        )
        assert kinds == sorted(
            [
                semconv.KIND_CROSS_TASK_EXIT,  # asyncio.timeout
                semconv.KIND_CROSS_TASK_EXIT,  # anyio CancelScope
                semconv.KIND_NON_LIFO_EXIT,
                semconv.KIND_SCOPE_LEAKED,
                semconv.KIND_CANCEL_SWALLOWED,
            ]
        )
        assert len(heard) == len(kinds)
        for violation in heard:
            for name in Violation.__slots__:
                value = getattr(violation, name)
                assert plain_values(value), (violation.kind, name, type(value))
            assert violation.enter_frames or violation.kind == semconv.KIND_CANCEL_SWALLOWED
        del violation
        check(probes)
        assert len(anyio_held) == 2  # the entering task and the anyio scope
        for object_id in anyio_held:
            assert not held_by_scopewatch(object_id)
    finally:
        holder.clear()
