"""Several event loops in several threads at once, and code crossing threads into a loop.

scopewatch's trackers are module-level and shared by every thread; what they keep is keyed by
task and scope, and a loop's close judges only that loop's scopes. These tests run real loops in
real threads at the same time and check that nothing crosses over: each span names the tasks of
its own loop, a deliberate violation appears once and in its own loop's trace, ``scope_leaked``
at one loop's close names only that loop's scope while the other loops are inside scopes, and
code reaching a loop from another thread (``anyio.from_thread``, ``anyio.to_thread``,
``asyncio.run_coroutine_threadsafe``, ``loop.call_soon_threadsafe``) is attributed to the task
that actually runs it, with zero false violations.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import anyio.to_thread
import pytest

from scopewatch import semconv

if TYPE_CHECKING:
    from collections.abc import Iterator

    from conftest import Telemetry
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import Tracer

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

LOOPS = 4
VIOLATOR = 1
"""The loop whose tasks exit a stored scope in the wrong task."""
LEAKER = 3
"""The loop that closes with a scope still entered while the others are inside scopes."""
WORKERS = 5
TASK_KEYS = (
    semconv.TASK_NAME,
    semconv.TASK_PARENT,
    semconv.ENTER_TASK,
    semconv.EXIT_TASK,
    semconv.CANCEL_TASK,
)


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def loop_of_name(name: str) -> int:
    """Tasks are named ``L<loop>-...``."""
    assert name.startswith("L") and "-" in name, name
    return int(name[1 : name.index("-")])


class LoopRun:
    """One loop's workload; facts it saw are kept for the assertions."""

    def __init__(self, index: int, tracer: Tracer, barrier: threading.Barrier) -> None:
        self.index = index
        self.tracer = tracer
        self.barrier = barrier
        self.trace_id = 0
        self.names: set[str] = set()
        self.error: BaseException | None = None

    def name(self, what: str) -> str:
        name = f"L{self.index}-{what}"
        self.names.add(name)
        return name

    async def worker(self, number: int) -> None:
        with anyio.CancelScope():
            await asyncio.sleep(0.001)
        with anyio.move_on_after(0.001):  # cancelled by its deadline: an anomalous span
            await asyncio.sleep(1)
        if sys.version_info >= (3, 11):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.001):
                    await asyncio.sleep(1)
        async with anyio.create_task_group() as group:
            group.start_soon(asyncio.sleep, 0.001, name=self.name(f"child-{number}"))

    async def violate(self) -> None:
        """A stored anyio scope exited in another task: anyio refuses, scopewatch reports."""
        stored: list[anyio.CancelScope] = []

        async def enters() -> None:
            scope = anyio.CancelScope()
            scope.__enter__()
            stored.append(scope)

        async def exits() -> None:
            with contextlib.suppress(RuntimeError):
                stored[0].__exit__(None, None, None)

        await asyncio.create_task(enters(), name=self.name("enterer"))
        await asyncio.create_task(exits(), name=self.name("exiter"))

    async def leak(self) -> None:
        async def leaves_it_entered() -> None:
            anyio.CancelScope().__enter__()  # never exited: reported when this loop closes

        await asyncio.create_task(leaves_it_entered(), name=self.name("leaker"))

    async def main(self) -> None:
        asyncio.current_task().set_name(self.name("main"))  # type: ignore[union-attr]
        with self.tracer.start_as_current_span(f"loop {self.index}") as root:
            self.trace_id = root.get_span_context().trace_id
            workers = [
                asyncio.create_task(self.worker(number), name=self.name(f"worker-{number}"))
                for number in range(WORKERS)
            ]
            victim = asyncio.create_task(asyncio.sleep(10), name=self.name("victim"))
            await asyncio.sleep(0)
            victim.cancel()
            await asyncio.gather(*workers, victim, return_exceptions=True)
            if self.index == VIOLATOR:
                await self.violate()
            if self.index == LEAKER:
                await self.leak()
            with anyio.CancelScope():  # every loop is inside this scope at the barrier
                await asyncio.to_thread(self.barrier.wait)
                if self.index != LEAKER:  # the leaker's loop closes meanwhile
                    await asyncio.to_thread(self.barrier.wait)

    def run(self, runner: str) -> None:
        try:
            if runner == "asyncio":
                asyncio.run(self.main())
            else:
                anyio.run(self.main, backend="asyncio")
            if self.index == LEAKER:
                self.barrier.wait()  # only now, after this loop closed, may the others go on
        except BaseException as error:  # reported by the test thread
            self.error = error
            self.barrier.abort()


def run_loops_in_threads(telemetry: Telemetry, runner: str) -> list[LoopRun]:
    tracer = telemetry.tracer_provider.get_tracer("test")
    barrier = threading.Barrier(LOOPS, timeout=60)
    runs = [LoopRun(index, tracer, barrier) for index in range(LOOPS)]
    threads = [
        threading.Thread(target=run.run, args=(runner,), name=f"loop-{run.index}") for run in runs
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for run in runs:
        assert run.error is None, run.error
    return runs


@pytest.fixture
def switch_often() -> Iterator[None]:
    """Make the interpreter switch threads every microsecond, so races show up."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


@pytest.mark.parametrize("runner", ["asyncio", "anyio"])
@pytest.mark.parametrize("spans", ["all", "anomalies"])
def test_four_loops_in_four_threads_do_not_cross_talk(instrument, spans, runner, switch_often):
    telemetry = instrument(spans=spans)
    runs = run_loops_in_threads(telemetry, runner)
    loop_of_trace = {run.trace_id: run.index for run in runs}
    spans_by_trace: dict[int, list[ReadableSpan]] = defaultdict(list)
    for span in telemetry.spans():
        spans_by_trace[span.context.trace_id].append(span)

    # every task named on a span belongs to the loop of the span's trace, and is that loop's
    for trace_id, spans_of_trace in spans_by_trace.items():
        loops = {
            loop_of_name(value)
            for span in spans_of_trace
            for key in TASK_KEYS
            if (value := attrs(span).get(key))
        }
        assert len(loops) <= 1, (trace_id, loops)
        if trace_id in loop_of_trace:
            assert loops <= {loop_of_trace[trace_id]}
    for run in runs:
        named = {
            value
            for span in spans_by_trace[run.trace_id]
            for key in TASK_KEYS
            if (value := attrs(span).get(key))
        }
        assert named <= run.names
        # cancelled, deadline-exceeded and violating spans exist in both modes
        assert f"L{run.index}-victim" in named
        assert {f"L{run.index}-worker-{n}" for n in range(WORKERS)} <= named

    # the two deliberate violations, once each, in their own loop's trace; nothing else
    violations = sorted(
        (attrs(span)[semconv.VIOLATION_KIND], loop_of_trace[span.context.trace_id])
        for span in telemetry.violation_spans()
    )
    assert violations == [
        (semconv.KIND_CROSS_TASK_EXIT, VIOLATOR),
        (semconv.KIND_SCOPE_LEAKED, LEAKER),
    ]
    (crossed,) = telemetry.violation_spans(semconv.KIND_CROSS_TASK_EXIT)
    assert (attrs(crossed)[semconv.ENTER_TASK], attrs(crossed)[semconv.EXIT_TASK]) == (
        f"L{VIOLATOR}-enterer",
        f"L{VIOLATOR}-exiter",
    )
    (leaked,) = telemetry.violation_spans(semconv.KIND_SCOPE_LEAKED)
    assert attrs(leaked)[semconv.ENTER_TASK] == f"L{LEAKER}-leaker"
    (point,) = telemetry.points(semconv.METRIC_TASK_ACTIVE)
    assert point.value == 0  # every task of every loop counted in and out once


def test_every_task_end_is_recorded_with_loops_in_threads_switching_often(instrument, switch_often):
    """Regression: done callbacks shared one ``Context``; two threads cannot enter it at once."""
    telemetry = instrument(spans="anomalies")
    tasks_per_loop = 1500
    handled: list[dict[str, Any]] = []

    async def step(number: int) -> None:
        with anyio.CancelScope():
            await asyncio.sleep(0)

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, context: handled.append(context))
        for start in range(0, tasks_per_loop, 100):
            await asyncio.gather(*(asyncio.create_task(step(n)) for n in range(start, start + 100)))

    threads = [threading.Thread(target=asyncio.run, args=(main(),)) for _ in range(LOOPS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert handled == []
    (active,) = telemetry.points(semconv.METRIC_TASK_ACTIVE)
    assert active.value == 0
    ended = sum(point.value for point in telemetry.points(semconv.METRIC_TASKS))
    assert ended == LOOPS * (tasks_per_loop + 3)  # + main and asyncio.run's two shutdown tasks


# --- code reaching a loop from another thread -------------------------------------------------


TIMED_OUT_KINDS = (semconv.SPAN_ANYIO_MOVE_ON_AFTER, semconv.SPAN_ASYNCIO_TIMEOUT)


def scope_spans(telemetry: Telemetry) -> list[ReadableSpan]:
    """The spans of the scopes :func:`timed_out_scopes` entered."""
    return [span for span in telemetry.spans() if span.name in TIMED_OUT_KINDS]


async def timed_out_scopes(ran_in: list[str]) -> None:
    """Scopes whose deadline cancels them (anomalous in every mode), noting the running task."""
    ran_in.append(asyncio.current_task().get_name())  # type: ignore[union-attr]
    with anyio.move_on_after(0.001):
        await asyncio.sleep(1)
    if sys.version_info >= (3, 11):
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.001):
                await asyncio.sleep(1)


def expected_scope_spans() -> int:
    return 2 if sys.version_info >= (3, 11) else 1


@pytest.mark.parametrize("spans", ["all", "anomalies"])
def test_to_thread_worker_calling_back_with_from_thread_run(instrument, spans):
    """A worker thread (``to_thread.run_sync``) runs async code in the loop (``from_thread``)."""
    telemetry = instrument(spans=spans)
    ran_in: list[str] = []

    def worker() -> str:
        anyio.from_thread.run(timed_out_scopes, ran_in)
        return threading.current_thread().name

    async def main() -> str:
        asyncio.current_task().set_name("anyio-main")  # type: ignore[union-attr]
        with anyio.CancelScope():
            return await anyio.to_thread.run_sync(worker)

    assert anyio.run(main) != threading.current_thread().name
    (runner,) = ran_in
    assert runner != "anyio-main"  # from_thread.run runs the coroutine in a task of its own
    found = scope_spans(telemetry)
    assert len(found) == expected_scope_spans()
    for span in found:
        assert attrs(span)[semconv.ENTER_TASK] == runner
        assert attrs(span)[semconv.EXIT_TASK] == runner
    if spans == "all":  # the task is named after the coroutine function, not anyio's wrapper
        (task_span,) = telemetry.spans("task timed_out_scopes")
        assert attrs(task_span)[semconv.TASK_NAME] == runner
        assert semconv.TASK_PARENT not in attrs(task_span)  # started by a loop callback
        (main_scope,) = telemetry.spans(semconv.SPAN_ANYIO_CANCEL_SCOPE)
        assert task_span.parent is not None  # the context travelled through both threads
        assert task_span.parent.span_id == main_scope.context.span_id
        for span in found:
            assert span.parent is not None
            assert span.parent.span_id == task_span.context.span_id
    assert telemetry.violation_spans() == []


@pytest.mark.parametrize("spans", ["all", "anomalies"])
def test_run_coroutine_threadsafe_from_a_plain_thread(instrument, spans):
    telemetry = instrument(spans=spans)
    ran_in: list[str] = []
    results: list[Any] = []

    async def main() -> None:
        asyncio.current_task().set_name("loop-main")  # type: ignore[union-attr]
        loop = asyncio.get_running_loop()

        def submit() -> None:
            future = asyncio.run_coroutine_threadsafe(timed_out_scopes(ran_in), loop)
            results.append(future.result(60))

        with anyio.CancelScope():
            thread = threading.Thread(target=submit, name="submitter")
            thread.start()
            await asyncio.to_thread(thread.join, 60)

    asyncio.run(main())
    assert results == [None]
    (runner,) = ran_in
    assert runner != "loop-main"
    found = scope_spans(telemetry)
    assert len(found) == expected_scope_spans()
    assert {attrs(span)[semconv.ENTER_TASK] for span in found} == {runner}
    if spans == "all":
        (task_span,) = [s for s in telemetry.spans() if attrs(s).get(semconv.TASK_NAME) == runner]
        assert semconv.TASK_PARENT not in attrs(task_span)  # created by a loop callback
        for span in found:
            assert span.parent is not None
            assert span.parent.span_id == task_span.context.span_id
    assert telemetry.violation_spans() == []


@pytest.mark.parametrize("spans", ["all", "anomalies"])
def test_call_soon_threadsafe_callback_creating_a_task(instrument, spans):
    telemetry = instrument(spans=spans)
    ran_in: list[str] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()

        async def from_callback() -> None:
            await timed_out_scopes(ran_in)
            done.set()

        created: list[asyncio.Task[None]] = []

        def callback() -> None:  # runs in the loop's thread, outside any task
            created.append(loop.create_task(from_callback(), name="from-callback"))

        thread = threading.Thread(target=loop.call_soon_threadsafe, args=(callback,))
        thread.start()
        await done.wait()
        thread.join()

    asyncio.run(main())
    assert ran_in == ["from-callback"]
    found = scope_spans(telemetry)
    assert len(found) == expected_scope_spans()
    assert {attrs(span)[semconv.ENTER_TASK] for span in found} == {"from-callback"}
    assert telemetry.violation_spans() == []
