"""``asyncio.timeout`` / ``timeout_at`` and ``asyncio.TaskGroup`` (Python 3.11+)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from tests.support.markers import needs_311, needs_311_tracebacks

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

from scopewatch import semconv
from tests.support.tracebacks import files_of, own_wrapper_files

pytestmark = needs_311

HERE = __file__


def attrs(span):
    return dict(span.attributes or {})


def scope_spans(telemetry):
    return [span for span in telemetry.spans() if span.name.startswith("asyncio.")]


def test_timeout_exited_in_another_task_is_reported_though_asyncio_raises_nothing(instrument):
    telemetry = instrument()

    async def main() -> str:
        timeout = asyncio.timeout(10)

        async def enter() -> None:
            await timeout.__aenter__()

        async def leave() -> None:
            await timeout.__aexit__(None, None, None)

        await asyncio.create_task(enter(), name="enterer")
        await asyncio.create_task(leave(), name="leaver")
        return "no exception"

    assert asyncio.run(main()) == "no exception"
    (span,) = telemetry.violation_spans()
    a = attrs(span)
    assert span.name == semconv.SPAN_ASYNCIO_TIMEOUT
    assert a[semconv.VIOLATION_KIND] == semconv.KIND_CROSS_TASK_EXIT
    assert a[semconv.VIOLATION_CAUSE] == semconv.CAUSE_OTHER_TASK
    assert (a[semconv.ENTER_TASK], a[semconv.EXIT_TASK]) == ("enterer", "leaver")
    assert a[semconv.CODE_FUNCTION].endswith("enter")
    assert 9 < a[semconv.SCOPE_TIMEOUT] <= 10


def test_timeout_entered_by_another_task_cancels_the_wrong_task(instrument):
    """The silent misbehaviour: the deadline cancels the entering task, not the timed work."""
    telemetry = instrument()

    async def main() -> tuple[bool, bool]:
        asyncio.current_task().set_name("main")
        timeout = asyncio.timeout(0.01)
        entered = asyncio.Event()
        bystander_cancelled = False

        async def bystander() -> None:
            nonlocal bystander_cancelled
            await timeout.__aenter__()  # e.g. a helper that "sets up" the request's deadline
            entered.set()
            try:
                await asyncio.sleep(1)
            except asyncio.CancelledError:
                bystander_cancelled = True

        task = asyncio.create_task(bystander(), name="bystander")
        await entered.wait()
        await asyncio.sleep(0.05)  # the timed work overruns its deadline undisturbed
        await timeout.__aexit__(None, None, None)  # asyncio checks no task: nothing raised
        await task
        return bystander_cancelled, timeout.expired()

    assert asyncio.run(main()) == (True, True)
    (span,) = telemetry.violation_spans(semconv.KIND_CROSS_TASK_EXIT)
    a = attrs(span)
    assert (a[semconv.ENTER_TASK], a[semconv.EXIT_TASK]) == ("bystander", "main")
    assert a[semconv.CROSS_TASK] is True


def test_timeout_deadline_raises_timeout_error_unchanged(instrument):
    telemetry = instrument()

    async def main() -> None:
        async with asyncio.timeout(0.01):
            await asyncio.sleep(1)

    with pytest.raises(TimeoutError):
        asyncio.run(main())
    (span,) = telemetry.spans(semconv.SPAN_ASYNCIO_TIMEOUT)
    a = attrs(span)
    assert a[semconv.SCOPE_OUTCOME] == semconv.OUTCOME_DEADLINE_EXCEEDED
    assert a[semconv.CANCEL_ORIGIN] == semconv.ORIGIN_DEADLINE
    assert a[semconv.SCOPE_CANCEL_CALLED] is True
    assert a[semconv.CODE_FILE] == HERE


def test_timeout_at_kind_and_ok_outcome_in_all_mode(instrument):
    telemetry = instrument(spans="all")

    async def main() -> int:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout_at(loop.time() + 5):
            async with asyncio.timeout(None):
                return 7

    assert asyncio.run(main()) == 7
    names = sorted(span.name for span in scope_spans(telemetry))
    assert names == [semconv.SPAN_ASYNCIO_TIMEOUT, semconv.SPAN_ASYNCIO_TIMEOUT_AT]
    inner = telemetry.spans(semconv.SPAN_ASYNCIO_TIMEOUT)[0]
    outer = telemetry.spans(semconv.SPAN_ASYNCIO_TIMEOUT_AT)[0]
    assert inner.parent is not None and inner.parent.span_id == outer.context.span_id
    assert semconv.SCOPE_TIMEOUT not in attrs(inner)


def test_task_group_child_failure_is_unchanged_and_not_a_violation(instrument):
    telemetry = instrument()

    async def fails() -> None:
        raise ValueError("child")

    async def main() -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(fails())
            group.create_task(asyncio.sleep(1))

    with pytest.raises(ExceptionGroup) as caught:  # noqa: F821 - 3.11+ module
        asyncio.run(main())
    assert caught.group_contains(ValueError)
    (span,) = telemetry.spans(semconv.SPAN_ASYNCIO_TASK_GROUP)
    a = attrs(span)
    assert a[semconv.SCOPE_OUTCOME] == semconv.OUTCOME_ERROR
    assert a[semconv.SCOPE_CANCEL_CALLED] is True
    assert telemetry.violation_spans() == []


def test_task_group_exited_in_another_task(instrument):
    telemetry = instrument()

    async def main() -> None:
        group = asyncio.TaskGroup()

        async def enter() -> None:
            await group.__aenter__()

        await asyncio.create_task(enter(), name="opener")
        await group.__aexit__(None, None, None)

    asyncio.run(main())
    (span,) = telemetry.violation_spans()
    assert span.name == semconv.SPAN_ASYNCIO_TASK_GROUP
    assert attrs(span)[semconv.ENTER_TASK] == "opener"


def test_correct_asyncio_programs_produce_zero_violations(instrument):
    telemetry = instrument(spans="all")

    async def main() -> list[int]:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(asyncio.sleep(0, i)) for i in range(3)]
            async with asyncio.timeout(5):
                await asyncio.sleep(0)
        try:
            async with asyncio.timeout(0.001):
                await asyncio.sleep(1)
        except TimeoutError:
            pass
        return [task.result() for task in tasks]

    assert asyncio.run(main()) == [0, 1, 2]
    assert telemetry.violation_spans() == []
    assert len(scope_spans(telemetry)) == 3


@needs_311_tracebacks
def test_wrapper_frames_are_not_in_the_users_tracebacks(instrument):
    """What ``TaskGroup.__aexit__`` raises reaches the user without scopewatch's frames."""
    instrument()

    async def child_fails() -> None:
        raise LookupError("child failure")

    async def main() -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(child_fails())

    with pytest.raises(BaseExceptionGroup) as raised:
        asyncio.run(main())
    assert any(name.endswith("taskgroups.py") for name in files_of(raised.value))
    assert own_wrapper_files(raised.value) == []
