"""``cancel_swallowed``: a task finished normally with a cancellation still in force (3.11+)."""

from __future__ import annotations

import asyncio
import contextlib
import sys

import anyio
import pytest
from opentelemetry.trace import StatusCode

from scopewatch import _runtime, semconv
from scopewatch._core.explain import HINTS
from scopewatch.telemetry.scopes import violation_listeners
from tests.support.markers import needs_311
from tests.support.source_lines import marked_line

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

pytestmark = needs_311

HERE = __file__


def attrs(span):
    return dict(span.attributes or {})


def line(marker: str) -> int:
    return marked_line(HERE, marker)


async def swallower() -> str:
    try:
        await asyncio.sleep(10)  # <- delivered
    except asyncio.CancelledError:
        pass
    return "finished anyway"


async def cancel_soon(task: asyncio.Task[object]) -> None:
    await asyncio.sleep(0)
    task.cancel()  # <- requested


@pytest.mark.parametrize("spans", ["all", "anomalies", "none"])
def test_a_swallowed_cancellation_is_a_violation_on_the_task_span(instrument, spans):
    telemetry = instrument(spans=spans)
    heard = []
    violation_listeners(_runtime.current).append(lambda v, ctx: heard.append((v, ctx)))

    async def main() -> str:
        task = asyncio.create_task(swallower(), name="swallower")
        await asyncio.create_task(cancel_soon(task), name="canceller")
        return await task

    assert asyncio.run(main()) == "finished anyway"  # semantics unchanged
    (span,) = telemetry.violation_spans(semconv.KIND_CANCEL_SWALLOWED)
    a = attrs(span)
    assert span.name == "task swallower"
    assert a[semconv.TASK_NAME] == "swallower"
    assert a[semconv.TASK_OUTCOME] == semconv.OUTCOME_OK
    assert a[semconv.VIOLATION_CAUSE] == semconv.CAUSE_CANCEL_CAUGHT
    assert span.status.status_code == StatusCode.ERROR
    (event,) = telemetry.violation_events()
    assert event[semconv.ENTER_TASK] == "swallower"
    assert event[semconv.EXIT_TASK] == "canceller"
    # where the CancelledError was delivered, and where cancel() was called
    assert f"line {line('# <- delivered')}, in swallower" in event[semconv.CODE_STACKTRACE]
    assert f"line {line('# <- requested')}, in cancel_soon" in event[semconv.EXIT_STACKTRACE]
    message = event[semconv.EXCEPTION_MESSAGE]
    assert f"{HERE}:{line('# <- requested')}" in message
    assert "re-raise CancelledError" in message
    (point,) = telemetry.points(semconv.METRIC_VIOLATIONS)
    assert point.value == 1
    assert dict(point.attributes) == {
        semconv.VIOLATION_KIND: semconv.KIND_CANCEL_SWALLOWED,
        semconv.VIOLATION_CAUSE: semconv.CAUSE_CANCEL_CAUGHT,
        semconv.SCOPE_KIND: "task swallower",
    }
    ((violation, context),) = heard
    assert violation.kind == semconv.KIND_CANCEL_SWALLOWED
    assert context.span_id == span.context.span_id


def test_uncancel_or_reraise_is_not_a_violation(instrument):
    telemetry = instrument()

    async def uncancels() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            asyncio.current_task().uncancel()
        return "deliberately swallowed"

    async def reraises() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            await asyncio.sleep(0)

    async def main() -> None:
        first = asyncio.create_task(uncancels())
        second = asyncio.create_task(reraises())
        await asyncio.sleep(0)
        first.cancel()
        second.cancel()
        assert await first == "deliberately swallowed"
        with pytest.raises(asyncio.CancelledError):
            await second

    asyncio.run(main())
    assert telemetry.violation_spans() == []


def test_timeout_zero_with_a_pending_cancel_loses_it_and_is_reported(instrument):
    """A cancellation pending when ``asyncio.timeout(0)`` expires is turned into TimeoutError.

    asyncio cannot tell the two requests apart, so the task sees a timeout, handles it, and
    finishes with ``cancelling() == 1``: the cancellation is lost and will resurface later (a
    later TaskGroup or timeout in that task misbehaves). scopewatch reports it as
    ``cancel_swallowed`` with cause ``timeout_converted``, naming the lost request.
    """
    telemetry = instrument()

    def stop_everything(tasks: list[asyncio.Task[object]]) -> None:
        for task in tasks:
            task.cancel()  # <- pending

    async def victim(registry: list[asyncio.Task[object]]) -> str:
        stop_everything(registry)  # the request is pending: this task is running
        try:
            async with asyncio.timeout(0):
                await asyncio.sleep(1)
        except TimeoutError:
            return "timed out"
        return "not reached"

    async def main() -> tuple[str, int]:
        registry: list[asyncio.Task[object]] = []
        task = asyncio.create_task(victim(registry), name="victim")
        registry.append(task)
        result = await task
        return result, task.cancelling()

    assert asyncio.run(main()) == ("timed out", 1)  # what asyncio does, with or without us
    (span,) = telemetry.violation_spans(semconv.KIND_CANCEL_SWALLOWED)
    assert attrs(span)[semconv.VIOLATION_CAUSE] == semconv.CAUSE_TIMEOUT_CONVERTED
    (event,) = telemetry.violation_events()
    stack = event[semconv.EXIT_STACKTRACE]
    assert f"line {line('# <- pending')}, in " in stack
    assert stack.splitlines()[-1].endswith("stop_everything")  # innermost last
    message = event[semconv.EXCEPTION_MESSAGE]
    assert "turned both into one TimeoutError" in message
    assert "asyncio's own bug CPython gh-134471" in message  # not blamed on the handler
    assert "before this task entered an asyncio.timeout" in message


def test_timeout_zero_handled_as_the_hint_says_swallows_nothing(instrument):
    """The ``timeout_converted`` hint, followed: re-raise when a cancellation is still in force."""
    telemetry = instrument()
    hint = HINTS[semconv.CAUSE_TIMEOUT_CONVERTED]
    assert "current_task().cancelling()" in hint and "raise asyncio.CancelledError" in hint

    async def victim() -> str:
        asyncio.current_task().cancel()
        try:
            async with asyncio.timeout(0):
                await asyncio.sleep(1)
        except TimeoutError:
            if asyncio.current_task().cancelling():
                raise asyncio.CancelledError from None
            return "timed out"
        return "not reached"

    async def main() -> bool:
        task = asyncio.create_task(victim(), name="victim")
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return task.cancelled()

    assert asyncio.run(main()) is True
    assert telemetry.violation_spans() == []


def test_correct_programs_swallow_nothing(instrument):
    telemetry = instrument()

    async def fails() -> None:
        await asyncio.sleep(0.005)
        raise ValueError

    async def main() -> None:
        # asyncio: timeouts that expire, wait_for, task groups with a failing child
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.001):
                await asyncio.sleep(1)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.sleep(1), 0.001)
        with pytest.raises(BaseExceptionGroup):
            async with asyncio.TaskGroup() as tg:
                tg.create_task(asyncio.sleep(1))
                tg.create_task(fails())
        with pytest.raises(BaseExceptionGroup):
            async with asyncio.TaskGroup() as tg:
                tg.create_task(fails())
                await asyncio.sleep(1)  # the body is cancelled too
        # anyio: deadlines, explicit cancels, failing children, shields
        with anyio.move_on_after(0.001):
            await anyio.sleep(1)
        with pytest.raises(TimeoutError):
            with anyio.fail_after(0.001):
                await anyio.sleep(1)
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.sleep, 1)
            await anyio.sleep(0)
            tg.cancel_scope.cancel()
        with pytest.raises(BaseExceptionGroup):
            async with anyio.create_task_group() as tg:
                tg.start_soon(anyio.sleep, 1)
                tg.start_soon(fails)
        with anyio.move_on_after(0.001):
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0.005)
            await anyio.sleep(1)

    async def spawner() -> None:
        await asyncio.create_task(main(), name="worker")

    asyncio.run(spawner())
    anyio.run(main)
    assert telemetry.violation_spans() == []


def test_after_a_task_group_abort_a_later_swallow_is_still_seen_and_attributed(instrument):
    """asyncio 3.11/3.12.1 leave the group's request on the parent (not the task's fault)."""
    telemetry = instrument()

    async def fails() -> None:
        await asyncio.sleep(0.001)
        raise ValueError

    async def parent() -> str:
        with pytest.raises(BaseExceptionGroup):
            async with asyncio.TaskGroup() as tg:
                tg.create_task(asyncio.sleep(1))
                tg.create_task(fails())
        try:
            await asyncio.sleep(10)  # <- second delivery
        except asyncio.CancelledError:
            pass
        return "swallowed"

    async def main() -> str:
        task = asyncio.create_task(parent(), name="parent")
        await asyncio.sleep(0.05)
        task.cancel()  # <- later request
        return await task

    assert asyncio.run(main()) == "swallowed"
    (event,) = telemetry.violation_events()
    assert event[semconv.EXIT_TASK] != ""  # the later request, not the group's
    assert f"line {line('# <- later request')}, in " in event[semconv.EXIT_STACKTRACE]
    assert f"line {line('# <- second delivery')}, in " in event[semconv.CODE_STACKTRACE]
