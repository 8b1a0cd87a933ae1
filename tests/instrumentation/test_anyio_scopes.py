"""anyio cancel scopes on both backends: spans, outcomes, cancel origins and violations.

Scenarios that anyio can express run on asyncio and on trio (the ``backend`` fixture);
those built on asyncio tasks or the asyncio loop's generator hooks run on asyncio only
(their trio counterparts are in ``test_trio_scopes.py``).
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from importlib.metadata import version

import anyio
import pytest
import trio

from scopewatch import semconv
from tests.support.markers import needs_311_tracebacks
from tests.support.scope_counts import duration_keys, scope_counts
from tests.support.tracebacks import files_of, own_wrapper_files

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

HERE = __file__
ANYIO_VERSION = tuple(int(part) for part in version("anyio").split(".")[:2])


def _anyio_trio_threads_work() -> bool:
    """Whether anyio's trio backend can start threads on the installed trio.

    anyio 4.0 passes ``cancellable=`` to ``trio.to_thread.run_sync``; trio renamed it
    ``abandon_on_cancel`` and has since dropped the old name.
    """
    from anyio._backends._trio import TrioBackend

    anyio_passes = inspect.signature(TrioBackend.run_sync_in_worker_thread).parameters
    trio_takes = inspect.signature(trio.to_thread.run_sync).parameters
    return "cancellable" not in anyio_passes or "cancellable" in trio_takes


@pytest.fixture(params=["asyncio", "trio"])
def backend(request) -> str:
    return request.param


def attrs(span):
    return dict(span.attributes or {})


def event(span, name):
    return next(dict(e.attributes or {}) for e in span.events if e.name == name)


# --- kinds, outcomes and origins ---------------------------------------------------------------


def test_move_on_after_deadline_is_a_span_with_deadline_origin(backend, instrument):
    telemetry = instrument()

    async def main() -> bool:
        with anyio.move_on_after(0.01) as scope:
            await anyio.sleep(1)
        return scope.cancelled_caught

    assert anyio.run(main, backend=backend) is True
    (span,) = telemetry.spans(semconv.SPAN_ANYIO_MOVE_ON_AFTER)
    a = attrs(span)
    assert a[semconv.SCOPE_OUTCOME] == semconv.OUTCOME_DEADLINE_EXCEEDED
    assert a[semconv.CANCEL_ORIGIN] == semconv.ORIGIN_DEADLINE
    assert a[semconv.SCOPE_CANCELLED_CAUGHT] is True
    assert 0 < a[semconv.SCOPE_TIMEOUT] <= 0.01
    assert a[semconv.CODE_FILE] == HERE
    assert a[semconv.CODE_FUNCTION].endswith("main")
    assert a[semconv.CANCEL_LOCATION] == f"{HERE}:{a[semconv.CODE_LINE]}"
    assert event(span, semconv.EVENT_CANCEL)[semconv.CANCEL_REASON]
    assert not telemetry.violation_spans()


def test_fail_after_raises_timeout_error_unchanged_and_is_deadline_exceeded(backend, instrument):
    telemetry = instrument()

    async def main() -> None:
        with anyio.fail_after(0.01):
            await anyio.sleep(1)

    with pytest.raises(TimeoutError):
        anyio.run(main, backend=backend)
    (span,) = telemetry.spans(semconv.SPAN_ANYIO_FAIL_AFTER)
    assert attrs(span)[semconv.SCOPE_OUTCOME] == semconv.OUTCOME_DEADLINE_EXCEEDED
    assert attrs(span)[semconv.CODE_FILE] == HERE


@pytest.mark.skipif(not hasattr(anyio, "move_on_at"), reason="anyio < 4.15 has no move_on_at")
def test_move_on_at_and_fail_at_kinds(backend, instrument):
    telemetry = instrument(spans="all")

    async def main() -> None:
        with anyio.move_on_at(anyio.current_time() + 5):
            pass
        with anyio.fail_at(anyio.current_time() + 5):
            pass

    anyio.run(main, backend=backend)
    names = [span.name for span in telemetry.spans()]
    assert semconv.SPAN_ANYIO_MOVE_ON_AT in names
    assert semconv.SPAN_ANYIO_FAIL_AT in names


def test_explicit_cancel_names_the_cancelling_task_and_line(backend, instrument):
    telemetry = instrument(spans="all")  # explicit cancel: a normal shutdown, no span by default

    async def main() -> None:
        scope = anyio.CancelScope()

        async def canceller() -> None:
            await anyio.sleep(0.01)
            scope.cancel()  # CANCEL-LINE

        async with anyio.create_task_group() as tg:
            tg.start_soon(canceller, name="the-canceller")
            with scope:
                await anyio.sleep(1)

    anyio.run(main, backend=backend)
    (span,) = telemetry.spans(semconv.SPAN_ANYIO_CANCEL_SCOPE)
    a = attrs(span)
    assert a[semconv.SCOPE_OUTCOME] == semconv.OUTCOME_CANCELLED
    assert a[semconv.CANCEL_ORIGIN] == semconv.ORIGIN_EXPLICIT
    assert a[semconv.CANCEL_TASK] == "the-canceller"
    line = next(n for n, text in enumerate(open(HERE), 1) if "# CANCEL-LINE" in text)
    assert a[semconv.CANCEL_LOCATION] == f"{HERE}:{line}"


def test_inner_scope_cancelled_by_outer_has_parent_origin(backend, instrument):
    telemetry = instrument()

    async def main() -> None:
        with anyio.move_on_after(0.01):
            with anyio.CancelScope():
                await anyio.sleep(1)

    anyio.run(main, backend=backend)
    (inner,) = telemetry.spans(semconv.SPAN_ANYIO_CANCEL_SCOPE)
    assert attrs(inner)[semconv.SCOPE_OUTCOME] == semconv.OUTCOME_CANCELLED
    assert attrs(inner)[semconv.CANCEL_ORIGIN] == semconv.ORIGIN_PARENT


def test_child_task_scope_cancelled_by_failing_sibling_has_parent_origin(backend, instrument):
    telemetry = instrument()

    async def fails() -> None:
        await anyio.sleep(0.01)
        raise ValueError("boom")

    async def waits() -> None:
        with anyio.CancelScope():
            await anyio.sleep(1)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(waits)
            tg.start_soon(fails)

    with pytest.raises(BaseExceptionGroup) as caught:
        anyio.run(main, backend=backend)
    assert caught.group_contains(ValueError)
    (inner,) = telemetry.spans(semconv.SPAN_ANYIO_CANCEL_SCOPE)
    assert attrs(inner)[semconv.CANCEL_ORIGIN] == semconv.ORIGIN_PARENT
    if ANYIO_VERSION >= (4, 6):
        # anyio 4.0-4.5 exit the group's scope before waiting for the children, so the scope
        # itself ends "ok" there and the exception group is raised after it.
        (group,) = telemetry.spans(semconv.SPAN_ANYIO_TASK_GROUP)
        assert attrs(group)[semconv.SCOPE_OUTCOME] == semconv.OUTCOME_ERROR
    assert not telemetry.violation_spans()


# --- span modes ----------------------------------------------------------------------------------


async def nested_ok() -> None:
    with anyio.CancelScope():
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.sleep, 0)
            with anyio.move_on_after(5, shield=True):
                await anyio.sleep(0)


def test_all_mode_nests_spans_and_internal_scopes_are_not_spans(backend, instrument):
    telemetry = instrument(spans="all")
    anyio.run(nested_ok, backend=backend)
    spans = {span.name: span for span in telemetry.spans() if span.name.startswith("anyio.")}
    assert set(spans) == {
        semconv.SPAN_ANYIO_CANCEL_SCOPE,
        semconv.SPAN_ANYIO_TASK_GROUP,
        semconv.SPAN_ANYIO_MOVE_ON_AFTER,
    }
    outer = spans[semconv.SPAN_ANYIO_CANCEL_SCOPE]
    group = spans[semconv.SPAN_ANYIO_TASK_GROUP]
    inner = spans[semconv.SPAN_ANYIO_MOVE_ON_AFTER]
    assert group.parent is not None and group.parent.span_id == outer.context.span_id
    assert inner.parent is not None and inner.parent.span_id == group.context.span_id
    assert attrs(inner)[semconv.SCOPE_SHIELD] is True
    assert all(attrs(s)[semconv.SCOPE_OUTCOME] == semconv.OUTCOME_OK for s in spans.values())


def test_anomalies_mode_exports_only_anomalous_scopes_with_true_parent(backend, instrument):
    telemetry = instrument()
    tracer = telemetry.tracer_provider.get_tracer("test")

    async def main() -> None:
        anyio.run
        await nested_ok()
        with tracer.start_as_current_span("request"):
            with anyio.move_on_after(0.01):
                await anyio.sleep(1)

    anyio.run(main, backend=backend)
    request = telemetry.spans("request")[0]
    (late,) = [s for s in telemetry.spans() if s.name.startswith("anyio.")]
    assert late.name == semconv.SPAN_ANYIO_MOVE_ON_AFTER
    assert late.parent is not None and late.parent.span_id == request.context.span_id
    assert late.start_time < late.end_time


def test_slow_scope_is_anomalous(backend, instrument):
    telemetry = instrument(slow_threshold=0.01)

    async def main() -> None:
        with anyio.CancelScope():
            await anyio.sleep(0.03)

    anyio.run(main, backend=backend)
    (span,) = telemetry.spans(semconv.SPAN_ANYIO_CANCEL_SCOPE)
    assert attrs(span)[semconv.SCOPE_OUTCOME] == semconv.OUTCOME_OK


def test_none_mode_exports_nothing_but_violations(backend, instrument):
    telemetry = instrument(spans="none")

    async def main() -> None:
        await nested_ok()
        with anyio.move_on_after(0.001):
            await anyio.sleep(1)

    anyio.run(main, backend=backend)
    assert [s for s in telemetry.spans() if s.name.startswith("anyio.")] == []
    # every scope is counted; only the anomalous one is measured (DESIGN section 3)
    counts = scope_counts(telemetry)
    assert counts[(semconv.SPAN_ANYIO_MOVE_ON_AFTER, semconv.OUTCOME_OK)] == 1
    assert counts[(semconv.SPAN_ANYIO_MOVE_ON_AFTER, semconv.OUTCOME_DEADLINE_EXCEEDED)] == 1
    assert duration_keys(telemetry) == {
        (semconv.SPAN_ANYIO_MOVE_ON_AFTER, semconv.OUTCOME_DEADLINE_EXCEEDED)
    }


@pytest.mark.parametrize("durations", ["all", "anomalies"])
def test_scope_duration_histogram_uses_seconds_buckets(backend, instrument, durations):
    telemetry = instrument(durations=durations, slow_threshold=0.05)

    async def main() -> None:
        await nested_ok()
        with anyio.CancelScope():  # a slow scope is anomalous
            await anyio.sleep(0.06)

    anyio.run(main, backend=backend)
    points = telemetry.points(semconv.METRIC_SCOPE_DURATION)
    kinds = {p.attributes[semconv.SCOPE_KIND] for p in points}
    assert semconv.SPAN_ANYIO_CANCEL_SCOPE in kinds
    assert (semconv.SPAN_ANYIO_MOVE_ON_AFTER in kinds) is (durations == "all")
    assert all(tuple(p.explicit_bounds) == semconv.SECONDS_BUCKETS for p in points)


# --- violations ----------------------------------------------------------------------------------


async def holds_group() -> AsyncIterator[int]:
    async with anyio.create_task_group():  # GEN-ENTER
        yield 1
        yield 2


def gen_enter_line() -> int:
    return next(n for n, text in enumerate(open(HERE), 1) if "# GEN-ENTER" in text)


def test_abandoned_generator_closed_by_finalizer_is_explained(instrument):
    telemetry = instrument()
    errors: list[BaseException] = []

    async def consumer() -> None:
        async for _ in holds_group():
            break

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(
            lambda loop, ctx: errors.append(ctx["exception"])
        )
        task = asyncio.create_task(consumer(), name="consumer")
        try:
            await task
            gc.collect()
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            pass  # the finalizer's cross-task exit really cancels the host task (anyio's bug)
        await asyncio.sleep(0.01)
        gc.collect()  # the finished aclose() task reports its unretrieved RuntimeError when freed

    asyncio.run(main())
    (span,) = telemetry.violation_spans(semconv.KIND_CROSS_TASK_EXIT)
    a = attrs(span)
    assert span.name == semconv.SPAN_ANYIO_TASK_GROUP
    assert a[semconv.VIOLATION_CAUSE] == semconv.CAUSE_ASYNCGEN_FINALIZER
    assert a[semconv.ASYNCGEN] == "holds_group"
    assert a[semconv.ENTER_TASK] == "consumer"
    assert a[semconv.EXIT_TASK] != "consumer"
    assert a[semconv.CROSS_TASK] is True
    assert a[semconv.CODE_LINE] == gen_enter_line()
    assert span.status.status_code.name == "ERROR"
    ev = event(span, semconv.EVENT_VIOLATION)
    assert f"line {gen_enter_line()}, in holds_group" in ev[semconv.CODE_STACKTRACE]
    assert "holds_group" in ev[semconv.EXIT_STACKTRACE]
    (error,) = [e for e in errors if isinstance(e, RuntimeError)]
    assert str(error) == "Attempted to exit cancel scope in a different task than it was entered in"
    if sys.version_info >= (3, 11):
        (note,) = error.__notes__
        assert "cross_task_exit (asyncgen_finalizer)" in note
        assert "'consumer'" in note and f"{HERE}:{gen_enter_line()}" in note
        assert "holds_group" in note and "aclosing" in note
    (point,) = telemetry.points(semconv.METRIC_VIOLATIONS)
    assert point.value == 1
    assert dict(point.attributes) == {
        semconv.VIOLATION_KIND: semconv.KIND_CROSS_TASK_EXIT,
        semconv.VIOLATION_CAUSE: semconv.CAUSE_ASYNCGEN_FINALIZER,
        semconv.SCOPE_KIND: semconv.SPAN_ANYIO_TASK_GROUP,
    }


def test_scope_entered_by_hand_leaks_at_loop_close_with_the_scopes_feature_alone(instrument):
    telemetry = instrument(instrument="scopes")

    async def main() -> None:
        async def opens() -> None:
            anyio.CancelScope().__enter__()  # never exited

        await asyncio.create_task(opens(), name="opener")

    asyncio.run(main())
    (span,) = telemetry.violation_spans(semconv.KIND_SCOPE_LEAKED)
    assert attrs(span)[semconv.ENTER_TASK] == "opener"
    assert attrs(span)[semconv.CODE_FUNCTION].endswith("opens")


def test_explicit_aclose_from_another_task_is_not_blamed_on_the_finalizer(instrument):
    telemetry = instrument()

    async def main() -> None:
        gen = holds_group()
        await asyncio.create_task(gen.__anext__(), name="stepper")
        try:
            await asyncio.ensure_future(gen.aclose())
        except RuntimeError:
            pass

    asyncio.run(main())
    (span,) = telemetry.violation_spans(semconv.KIND_CROSS_TASK_EXIT)
    assert attrs(span)[semconv.VIOLATION_CAUSE] == semconv.CAUSE_OTHER_TASK
    assert attrs(span)[semconv.ENTER_TASK] == "stepper"


def test_generator_open_at_loop_end_is_closed_by_shutdown_asyncgens(instrument):
    telemetry = instrument()
    keep: list[object] = []

    async def main() -> None:
        gen = holds_group()
        keep.append(gen)  # still referenced: only shutdown_asyncgens() will close it
        await gen.__anext__()

    asyncio.run(main())
    (span,) = telemetry.violation_spans(semconv.KIND_CROSS_TASK_EXIT)
    assert attrs(span)[semconv.VIOLATION_CAUSE] == semconv.CAUSE_ASYNCGEN_SHUTDOWN
    assert attrs(span)[semconv.ASYNCGEN] == "holds_group"


class Client:
    """A client that keeps its resources on an exit stack, like many SDK clients do."""

    def __init__(self) -> None:
        self.stack = AsyncExitStack()

    async def connect(self) -> None:
        await self.stack.enter_async_context(anyio.create_task_group())

    async def close(self) -> None:
        await self.stack.aclose()


def test_exit_stack_closed_from_another_task(instrument):
    telemetry = instrument()

    async def main() -> BaseException | None:
        client = Client()
        await asyncio.create_task(client.connect(), name="connector")
        try:
            await asyncio.create_task(client.close(), name="closer")
        except RuntimeError as error:
            return error
        return None

    error = asyncio.run(main())
    assert isinstance(error, RuntimeError)
    (span,) = telemetry.violation_spans()
    a = attrs(span)
    assert a[semconv.VIOLATION_KIND] == semconv.KIND_CROSS_TASK_EXIT
    assert a[semconv.VIOLATION_CAUSE] == semconv.CAUSE_OTHER_TASK
    assert (a[semconv.ENTER_TASK], a[semconv.EXIT_TASK]) == ("connector", "closer")
    assert a[semconv.CODE_FUNCTION].endswith("connect")  # "Client.connect" from 3.11 (co_qualname)
    if sys.version_info >= (3, 11):
        assert "'connector'" in error.__notes__[0] and "'closer'" in error.__notes__[0]


def test_asynccontextmanager_closed_from_another_task_is_other_task(instrument):
    telemetry = instrument()

    @asynccontextmanager
    async def connection() -> AsyncIterator[None]:
        async with anyio.create_task_group():
            yield

    async def main() -> None:
        stack = AsyncExitStack()

        async def connect() -> None:
            await stack.enter_async_context(connection())

        await asyncio.create_task(connect(), name="opener")
        try:
            await asyncio.create_task(stack.aclose(), name="closer")
        except (RuntimeError, BaseExceptionGroup):
            pass

    asyncio.run(main())
    (span,) = telemetry.violation_spans(semconv.KIND_CROSS_TASK_EXIT)
    assert attrs(span)[semconv.VIOLATION_CAUSE] == semconv.CAUSE_OTHER_TASK
    assert attrs(span)[semconv.ASYNCGEN].endswith("connection")


def test_exit_stacks_closed_first_in_first_out(backend, instrument):
    telemetry = instrument()

    async def main() -> BaseException | None:
        first, second = AsyncExitStack(), AsyncExitStack()
        first.enter_context(anyio.CancelScope())
        second.enter_context(anyio.CancelScope())
        try:
            await first.aclose()
        except RuntimeError as error:
            await second.aclose()
            return error
        return None

    error = anyio.run(main, backend=backend)
    assert isinstance(error, RuntimeError)
    (span,) = telemetry.violation_spans()
    assert attrs(span)[semconv.VIOLATION_KIND] == semconv.KIND_NON_LIFO_EXIT
    assert attrs(span)[semconv.VIOLATION_CAUSE] == semconv.CAUSE_EXIT_ORDER


async def scoped_numbers(label: str) -> AsyncIterator[str]:
    with anyio.CancelScope():
        yield f"{label}1"
        yield f"{label}2"


def test_interleaved_generators(backend, instrument):
    telemetry = instrument()

    async def main() -> BaseException | None:
        a, b = scoped_numbers("a"), scoped_numbers("b")
        await a.__anext__()
        await b.__anext__()
        try:
            await a.aclose()
        except RuntimeError as error:
            await b.aclose()
            return error
        return None

    assert isinstance(anyio.run(main, backend=backend), RuntimeError)
    (span,) = telemetry.violation_spans()
    assert attrs(span)[semconv.VIOLATION_KIND] == semconv.KIND_NON_LIFO_EXIT
    assert attrs(span)[semconv.VIOLATION_CAUSE] == semconv.CAUSE_INTERLEAVED_GENERATORS
    assert attrs(span)[semconv.ASYNCGEN] == "scoped_numbers"


def test_scope_exited_around_a_suspended_generator(backend, instrument):
    telemetry = instrument()

    async def main() -> BaseException | None:
        gen = scoped_numbers("s")
        try:
            with anyio.CancelScope():  # OUTER
                await gen.__anext__()  # the generator stays suspended inside its scope
        except RuntimeError as error:  # anyio refuses to exit OUTER: it is not innermost
            return error
        return None

    assert isinstance(anyio.run(main, backend=backend), RuntimeError)
    spans = telemetry.violation_spans(semconv.KIND_NON_LIFO_EXIT)
    assert [attrs(s)[semconv.VIOLATION_CAUSE] for s in spans] == [semconv.CAUSE_ASYNCGEN_SUSPENDED]


def test_all_mode_cross_task_exit_never_detaches_in_the_wrong_task(instrument, caplog):
    instrument(spans="all")

    async def main() -> None:
        async def consumer() -> None:
            async for _ in holds_group():
                break

        try:
            await asyncio.create_task(consumer(), name="consumer")
            gc.collect()
            await asyncio.sleep(0.02)
        except asyncio.CancelledError:
            pass

    asyncio.run(main())
    assert "Failed to detach context" not in caplog.text


def test_each_step_in_a_fresh_task(instrument):
    telemetry = instrument()

    async def main() -> list[str]:
        gen = scoped_numbers("x")
        first = await asyncio.ensure_future(gen.__anext__())
        try:
            await asyncio.ensure_future(gen.__anext__())
            await asyncio.ensure_future(gen.__anext__())
        except (RuntimeError, StopAsyncIteration):
            pass
        return [first]

    assert asyncio.run(main()) == ["x1"]
    spans = telemetry.violation_spans(semconv.KIND_CROSS_TASK_EXIT)
    assert spans
    assert attrs(spans[0])[semconv.VIOLATION_CAUSE] == semconv.CAUSE_PER_STEP_TASK


# --- correct programs ----------------------------------------------------------------------------


def test_correct_programs_produce_zero_violations(backend, instrument):
    if backend == "trio" and not _anyio_trio_threads_work():
        pytest.skip(
            f"anyio {version('anyio')}'s trio backend cannot run threads on trio "
            f"{trio.__version__} (it passes cancellable=, which this trio no longer takes)"
        )
    telemetry = instrument(spans="all")

    async def child_fails() -> None:
        raise KeyError("child")

    def in_thread() -> str:
        async def scoped() -> str:
            with anyio.move_on_after(1):
                await anyio.sleep(0)
            return "thread-ok"

        return anyio.from_thread.run(scoped)

    async def main() -> str:
        await nested_ok()
        with anyio.move_on_after(0.001):
            await anyio.sleep(1)
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(0.001):
                await anyio.sleep(1)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(child_fails)
                tg.start_soon(anyio.sleep, 1)
        except BaseExceptionGroup:
            pass
        lock = anyio.Lock()
        async with lock:
            await anyio.to_thread.run_sync(lambda: None)
        return await anyio.to_thread.run_sync(in_thread)

    assert anyio.run(main, backend=backend) == "thread-ok"
    assert telemetry.violation_spans() == []
    assert telemetry.points(semconv.METRIC_VIOLATIONS) == []
    assert len([s for s in telemetry.spans() if s.name.startswith("anyio.")]) >= 5


@needs_311_tracebacks
def test_wrapper_frames_are_not_in_the_users_tracebacks(instrument):
    """anyio's own errors from ``__exit__`` reach the user without scopewatch's frames."""
    instrument()

    async def exited_in_another_task() -> None:
        scope = anyio.CancelScope()
        entered = anyio.Event()

        async def enter() -> None:
            scope.__enter__()
            entered.set()
            await anyio.sleep(0.05)

        async def leave() -> None:
            await entered.wait()
            scope.__exit__(None, None, None)  # anyio: "... in a different task ..."

        async with anyio.create_task_group() as group:
            group.start_soon(enter)
            group.start_soon(leave)

    async def exited_out_of_order() -> None:
        outer, inner = anyio.CancelScope(), anyio.CancelScope()
        outer.__enter__()
        inner.__enter__()
        try:
            outer.__exit__(None, None, None)
        finally:
            inner.__exit__(None, None, None)
            outer.__exit__(None, None, None)

    for program in (exited_in_another_task, exited_out_of_order):
        with pytest.raises((RuntimeError, BaseExceptionGroup)) as raised:
            anyio.run(program)
        files = files_of(raised.value)
        assert any(f.endswith("_asyncio.py") for f in files), files  # anyio's frame is kept
        assert own_wrapper_files(raised.value) == []
