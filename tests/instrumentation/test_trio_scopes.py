"""Native trio cancel scopes: spans, outcomes, cancel origins and violations."""

from __future__ import annotations

import gc
import logging
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
import trio

from scopewatch import semconv
from tests.support.markers import needs_311_tracebacks
from tests.support.scope_counts import duration_keys, scope_counts
from tests.support.source_lines import marked_line
from tests.support.tracebacks import files_of, own_wrapper_files

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

pytestmark = [
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

HERE = __file__
FAIL_AFTER_KIND = (
    semconv.SPAN_TRIO_FAIL_AFTER
    if hasattr(trio.fail_after, "__wrapped__")
    else semconv.SPAN_TRIO_FAIL_AT  # trio < 0.27: fail_after() only returns fail_at(...)
)
ANYIO_ON_TRIO = tuple(int(part) for part in trio.__version__.split(".")[:2]) >= (0, 32)
"""anyio 4.13's trio backend requires trio >= 0.32 (its own ``trio`` extra)."""


def attrs(span):
    return dict(span.attributes or {})


def line(marker: str) -> int:
    return marked_line(HERE, marker)


def trio_spans(telemetry):
    return [span for span in telemetry.spans() if span.name.startswith("trio.")]


# --- kinds, outcomes and origins ---------------------------------------------------------------


def test_move_on_after_deadline_is_a_span_with_deadline_origin(instrument):
    telemetry = instrument()

    async def main() -> bool:
        with trio.move_on_after(0.01) as scope:  # <- move_on
            await trio.sleep(1)
        return scope.cancelled_caught

    assert trio.run(main) is True
    (span,) = telemetry.spans(semconv.SPAN_TRIO_MOVE_ON_AFTER)
    a = attrs(span)
    assert a[semconv.SCOPE_KIND] == semconv.SPAN_TRIO_MOVE_ON_AFTER
    assert a[semconv.SCOPE_OUTCOME] == semconv.OUTCOME_DEADLINE_EXCEEDED
    assert a[semconv.CANCEL_ORIGIN] == semconv.ORIGIN_DEADLINE
    assert a[semconv.SCOPE_CANCELLED_CAUGHT] is True
    assert 0 < a[semconv.SCOPE_TIMEOUT] <= 0.01
    assert (a[semconv.CODE_FILE], a[semconv.CODE_LINE]) == (HERE, line("# <- move_on"))
    assert a[semconv.CANCEL_LOCATION] == f"{HERE}:{line('# <- move_on')}"
    assert a[semconv.ENTER_TASK] == a[semconv.EXIT_TASK]
    assert a[semconv.ENTER_TASK].endswith("main")
    assert not telemetry.violation_spans()


def test_fail_after_raises_too_slow_unchanged_and_is_deadline_exceeded(instrument):
    telemetry = instrument()

    async def main() -> None:
        with trio.fail_after(0.01):  # <- fail_after
            await trio.sleep(1)

    with pytest.raises(trio.TooSlowError):
        trio.run(main)
    (span,) = telemetry.spans(FAIL_AFTER_KIND)
    assert attrs(span)[semconv.SCOPE_OUTCOME] == semconv.OUTCOME_DEADLINE_EXCEEDED
    assert attrs(span)[semconv.CODE_LINE] == line("# <- fail_after")


def test_absolute_deadline_kinds(instrument):
    telemetry = instrument(spans="all")

    async def main() -> None:
        with trio.move_on_at(trio.current_time() + 5):
            pass
        with trio.fail_at(trio.current_time() + 5):
            pass
        with trio.CancelScope(deadline=trio.current_time() + 5):
            pass

    trio.run(main)
    assert [span.name for span in trio_spans(telemetry)] == [
        semconv.SPAN_TRIO_MOVE_ON_AT,
        semconv.SPAN_TRIO_FAIL_AT,
        semconv.SPAN_TRIO_CANCEL_SCOPE,
    ]
    assert all(4 < attrs(s)[semconv.SCOPE_TIMEOUT] <= 5 for s in trio_spans(telemetry))


def test_explicit_cancel_from_another_task_names_it_and_its_line(instrument):
    telemetry = instrument(spans="all")  # explicit cancel: a normal shutdown, no span by default

    async def main() -> None:
        scope = trio.CancelScope()

        async def canceller() -> None:
            await trio.sleep(0.01)
            scope.cancel()  # <- cancel

        async with trio.open_nursery() as nursery:
            nursery.start_soon(canceller, name="the-canceller")
            with scope:
                await trio.sleep(1)

    trio.run(main)
    (span,) = telemetry.spans(semconv.SPAN_TRIO_CANCEL_SCOPE)
    a = attrs(span)
    assert a[semconv.SCOPE_OUTCOME] == semconv.OUTCOME_CANCELLED
    assert a[semconv.CANCEL_ORIGIN] == semconv.ORIGIN_EXPLICIT
    assert a[semconv.CANCEL_TASK] == "the-canceller"
    assert a[semconv.CANCEL_LOCATION] == f"{HERE}:{line('# <- cancel')}"


def test_cancels_requested_before_the_scope_is_entered_keep_their_origin(instrument):
    telemetry = instrument(spans="all")  # the explicit one is a normal shutdown: no span by default

    async def main() -> None:
        with trio.move_on_after(0):  # <- expired at enter
            await trio.sleep(1)
        scope = trio.CancelScope()
        scope.cancel()  # <- cancelled early
        with scope:
            await trio.sleep(1)

    trio.run(main)
    (expired,) = telemetry.spans(semconv.SPAN_TRIO_MOVE_ON_AFTER)
    assert attrs(expired)[semconv.CANCEL_ORIGIN] == semconv.ORIGIN_DEADLINE
    (early,) = telemetry.spans(semconv.SPAN_TRIO_CANCEL_SCOPE)
    assert attrs(early)[semconv.CANCEL_ORIGIN] == semconv.ORIGIN_EXPLICIT
    assert attrs(early)[semconv.CANCEL_LOCATION] == f"{HERE}:{line('# <- cancelled early')}"


def test_scopes_cancelled_by_an_enclosing_deadline_have_parent_origin(instrument):
    telemetry = instrument()

    async def child() -> None:
        with trio.CancelScope():  # <- child scope
            await trio.sleep(1)

    async def main() -> None:
        with trio.move_on_after(0.01):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(child, name="child")
                with trio.CancelScope():  # <- inner
                    await trio.sleep(1)

    trio.run(main)
    scopes = telemetry.spans(semconv.SPAN_TRIO_CANCEL_SCOPE)
    by_line = {attrs(s)[semconv.CODE_LINE]: attrs(s) for s in scopes}
    assert set(by_line) == {line("# <- child scope"), line("# <- inner")}
    for a in by_line.values():
        assert a[semconv.SCOPE_OUTCOME] == semconv.OUTCOME_CANCELLED
        assert a[semconv.CANCEL_ORIGIN] == semconv.ORIGIN_PARENT
    assert by_line[line("# <- child scope")][semconv.ENTER_TASK] == "child"
    (nursery,) = telemetry.spans(semconv.SPAN_TRIO_NURSERY)
    assert attrs(nursery)[semconv.CANCEL_ORIGIN] == semconv.ORIGIN_PARENT
    assert not telemetry.violation_spans()


def test_nursery_cancelled_by_a_failing_child_names_the_child(instrument):
    telemetry = instrument()

    async def fails() -> None:
        await trio.sleep(0.01)
        raise ValueError("boom")

    async def waits() -> None:
        with trio.CancelScope():
            await trio.sleep(1)

    async def main() -> None:
        async with trio.open_nursery() as nursery:  # <- nursery
            nursery.start_soon(waits, name="waiter")
            nursery.start_soon(fails, name="failer")

    with pytest.raises(BaseExceptionGroup) as caught:
        trio.run(main, strict_exception_groups=True)  # the default from trio 0.25 on
    assert caught.group_contains(ValueError)
    (inner,) = telemetry.spans(semconv.SPAN_TRIO_CANCEL_SCOPE)
    assert attrs(inner)[semconv.CANCEL_ORIGIN] == semconv.ORIGIN_PARENT
    (nursery,) = telemetry.spans(semconv.SPAN_TRIO_NURSERY)
    a = attrs(nursery)
    assert a[semconv.SCOPE_OUTCOME] == semconv.OUTCOME_ERROR
    assert a[semconv.CODE_LINE] == line("# <- nursery")
    assert semconv.CANCEL_ORIGIN not in a  # it ended with the child's error, not cancelled
    if hasattr(trio.CancelScope, "_cancel"):  # trio >= 0.31 says which child failed
        assert attrs(inner)[semconv.CANCEL_TASK] == "failer"
    assert not telemetry.violation_spans()


# --- span modes ----------------------------------------------------------------------------------


async def nested_ok() -> None:
    with trio.CancelScope():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep, 0)
            shielded = trio.move_on_after(5)  # move_on_after(..., shield=True) needs trio 0.27
            shielded.shield = True
            with shielded:
                await trio.sleep(0)


def test_all_mode_nests_spans(instrument):
    telemetry = instrument(spans="all")
    trio.run(nested_ok)
    spans = {span.name: span for span in trio_spans(telemetry)}
    assert set(spans) == {
        semconv.SPAN_TRIO_CANCEL_SCOPE,
        semconv.SPAN_TRIO_NURSERY,
        semconv.SPAN_TRIO_MOVE_ON_AFTER,
    }
    outer = spans[semconv.SPAN_TRIO_CANCEL_SCOPE]
    nursery = spans[semconv.SPAN_TRIO_NURSERY]
    inner = spans[semconv.SPAN_TRIO_MOVE_ON_AFTER]
    assert nursery.parent is not None and nursery.parent.span_id == outer.context.span_id
    assert inner.parent is not None and inner.parent.span_id == nursery.context.span_id
    assert attrs(inner)[semconv.SCOPE_SHIELD] is True
    assert all(attrs(s)[semconv.SCOPE_OUTCOME] == semconv.OUTCOME_OK for s in spans.values())


def test_anomalies_mode_exports_only_anomalous_scopes_with_true_parent(instrument):
    telemetry = instrument()
    tracer = telemetry.tracer_provider.get_tracer("test")

    async def main() -> None:
        await nested_ok()
        with tracer.start_as_current_span("request"):
            with trio.move_on_after(0.01):
                await trio.sleep(1)

    trio.run(main)
    request = telemetry.spans("request")[0]
    (late,) = trio_spans(telemetry)
    assert late.name == semconv.SPAN_TRIO_MOVE_ON_AFTER
    assert late.parent is not None and late.parent.span_id == request.context.span_id


def test_none_mode_exports_no_scope_spans_but_measures(instrument):
    telemetry = instrument(spans="none")

    async def main() -> None:
        await nested_ok()
        with trio.move_on_after(0.001):
            await trio.sleep(1)

    trio.run(main)
    assert trio_spans(telemetry) == []
    # every user scope is counted; only the anomalous one is measured (DESIGN section 3)
    assert {kind for kind, _ in scope_counts(telemetry)} == {
        semconv.SPAN_TRIO_CANCEL_SCOPE,
        semconv.SPAN_TRIO_NURSERY,
        semconv.SPAN_TRIO_MOVE_ON_AFTER,
    }
    assert duration_keys(telemetry) == {
        (semconv.SPAN_TRIO_MOVE_ON_AFTER, semconv.OUTCOME_DEADLINE_EXCEEDED)
    }


# --- violations ----------------------------------------------------------------------------------


@pytest.mark.parametrize("spans", ["all", "anomalies", "none"])
def test_stored_scope_closed_from_another_task_is_reported_though_trio_raises_nothing(
    instrument, spans
):
    """The opener's nursery closed first, so trio treats the scope as abandoned: silence."""
    telemetry = instrument(spans=spans)

    async def main() -> str:
        stored: list[trio.CancelScope] = []

        async def opener() -> None:
            scope = trio.CancelScope()
            scope.__enter__()  # <- stored
            stored.append(scope)

        async def closer() -> None:
            stored[0].__exit__(None, None, None)  # <- closed elsewhere

        async with trio.open_nursery() as nursery:
            nursery.start_soon(opener, name="opener")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(closer, name="closer")
        return "no exception"

    assert trio.run(main) == "no exception"
    (span,) = telemetry.violation_spans()
    a = attrs(span)
    assert span.name == semconv.SPAN_TRIO_CANCEL_SCOPE
    assert a[semconv.VIOLATION_KIND] == semconv.KIND_CROSS_TASK_EXIT
    assert a[semconv.VIOLATION_CAUSE] == semconv.CAUSE_OTHER_TASK
    assert (a[semconv.ENTER_TASK], a[semconv.EXIT_TASK]) == ("opener", "closer")
    assert a[semconv.CROSS_TASK] is True
    (event,) = telemetry.violation_events()
    assert f'File "{HERE}", line {line("# <- stored")}' in event[semconv.CODE_STACKTRACE]
    assert f"line {line('# <- closed elsewhere')}" in event[semconv.EXIT_STACKTRACE]
    (point,) = telemetry.points(semconv.METRIC_VIOLATIONS)
    assert dict(point.attributes) == {
        semconv.VIOLATION_KIND: semconv.KIND_CROSS_TASK_EXIT,
        semconv.VIOLATION_CAUSE: semconv.CAUSE_OTHER_TASK,
        semconv.SCOPE_KIND: semconv.SPAN_TRIO_CANCEL_SCOPE,
    }


def test_scope_closed_from_an_unrelated_task_gets_a_note_on_trios_error(instrument):
    telemetry = instrument()

    async def main() -> BaseException | None:
        stored: list[trio.CancelScope] = []
        entered = trio.Event()
        errors: list[BaseException] = []

        async def opener() -> None:
            with trio.CancelScope() as scope:  # <- held open
                stored.append(scope)
                entered.set()
                await trio.sleep(0.05)

        async def closer() -> None:
            await entered.wait()
            try:
                stored[0].__exit__(None, None, None)
            except RuntimeError as error:
                errors.append(error)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(opener, name="opener")
            nursery.start_soon(closer, name="closer")
        return errors[0] if errors else None

    error = trio.run(main)
    assert isinstance(error, RuntimeError)
    assert str(error).startswith("Cancel scope stack corrupted")
    (span,) = telemetry.violation_spans()
    assert attrs(span)[semconv.VIOLATION_KIND] == semconv.KIND_CROSS_TASK_EXIT
    assert attrs(span)[semconv.VIOLATION_CAUSE] == semconv.CAUSE_OTHER_TASK
    if sys.version_info >= (3, 11):
        (note,) = error.__notes__
        assert "cross_task_exit (other_task)" in note
        assert "'opener'" in note and "'closer'" in note
        assert f"{HERE}:{line('# <- held open')}" in note


def test_nursery_scope_closed_by_its_own_child_is_reported(instrument):
    """trio issue 1940: the child shares the nursery's cancel status, so trio checks nothing."""
    telemetry = instrument()
    exited_quietly: list[bool] = []

    async def child(nursery: trio.Nursery) -> None:
        nursery.cancel_scope.__exit__(None, None, None)
        exited_quietly.append(True)

    async def main() -> None:
        async with trio.open_nursery() as nursery:  # <- the nursery
            nursery.start_soon(child, nursery, name="child")
            await trio.sleep(0.01)

    with pytest.raises(RuntimeError):  # trio notices only later, when the nursery exits
        trio.run(main)
    assert exited_quietly == [True]
    (span,) = telemetry.violation_spans()
    a = attrs(span)
    assert span.name == semconv.SPAN_TRIO_NURSERY
    assert a[semconv.VIOLATION_KIND] == semconv.KIND_CROSS_TASK_EXIT
    assert a[semconv.EXIT_TASK] == "child"
    assert a[semconv.CODE_LINE] == line("# <- the nursery")


def test_non_lifo_exit_becomes_a_violation_with_a_note_on_trios_error(instrument):
    telemetry = instrument()

    async def main() -> BaseException | None:
        outer, inner = trio.CancelScope(), trio.CancelScope()
        outer.__enter__()  # <- fifo outer
        inner.__enter__()  # <- fifo inner
        try:
            outer.__exit__(None, None, None)
        except RuntimeError as error:
            inner.__exit__(None, None, None)
            return error
        return None

    error = trio.run(main)
    assert isinstance(error, RuntimeError)
    assert "Cancel scope stack corrupted" in str(error)
    (span,) = telemetry.violation_spans()
    a = attrs(span)
    assert a[semconv.VIOLATION_KIND] == semconv.KIND_NON_LIFO_EXIT
    assert a[semconv.VIOLATION_CAUSE] == semconv.CAUSE_EXIT_ORDER
    assert a[semconv.CODE_LINE] == line("# <- fifo outer")
    (event,) = telemetry.violation_events()
    assert f"{HERE}:{line('# <- fifo inner')}" in event[semconv.EXCEPTION_MESSAGE]
    if sys.version_info >= (3, 11):
        (note,) = error.__notes__
        assert "non_lifo_exit (exit_order)" in note


async def scoped_numbers() -> AsyncIterator[int]:
    with trio.CancelScope():  # <- generator scope
        yield 1
        yield 2


def test_abandoned_generator_closed_by_trios_finalizer_is_explained(instrument, caplog):
    telemetry = instrument()

    async def consumer() -> None:
        async for _ in scoped_numbers():
            break

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consumer, name="consumer")
        gc.collect()
        await trio.sleep(0.05)

    with caplog.at_level(logging.ERROR, logger="trio.async_generator_errors"):
        trio.run(main)
    (span,) = telemetry.violation_spans()
    a = attrs(span)
    assert a[semconv.VIOLATION_KIND] == semconv.KIND_CROSS_TASK_EXIT
    assert a[semconv.VIOLATION_CAUSE] == semconv.CAUSE_ASYNCGEN_FINALIZER
    assert a[semconv.ASYNCGEN] == "scoped_numbers"
    assert a[semconv.ENTER_TASK] == "consumer"
    assert "abandoned" in a[semconv.EXIT_TASK]  # trio's "close asyncgen ... (abandoned)"
    assert a[semconv.CODE_LINE] == line("# <- generator scope")
    logged = [r for r in caplog.records if r.name == "trio.async_generator_errors"]
    if logged and sys.version_info >= (3, 11):  # trio logs the RuntimeError it raised
        error = logged[0].exc_info[1]
        assert "cross_task_exit (asyncgen_finalizer)" in error.__notes__[0]


def test_generator_open_at_run_end_is_closed_by_trios_shutdown(instrument):
    telemetry = instrument()
    keep: list[object] = []

    async def main() -> None:
        numbers = scoped_numbers()
        keep.append(numbers)  # still referenced: only the end of the run closes it
        await numbers.__anext__()

    trio.run(main)
    (span,) = telemetry.violation_spans()
    assert attrs(span)[semconv.VIOLATION_CAUSE] == semconv.CAUSE_ASYNCGEN_SHUTDOWN
    assert attrs(span)[semconv.ASYNCGEN] == "scoped_numbers"


def test_scope_left_entered_by_a_finished_task_leaks_at_run_end(instrument):
    telemetry = instrument(instrument="scopes")

    async def opens() -> None:
        trio.CancelScope().__enter__()  # <- left entered

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(opens, name="opener")

    trio.run(main)
    (span,) = telemetry.violation_spans()
    a = attrs(span)
    assert a[semconv.VIOLATION_KIND] == semconv.KIND_SCOPE_LEAKED
    assert a[semconv.VIOLATION_CAUSE] == semconv.CAUSE_TASK_FINISHED
    assert a[semconv.ENTER_TASK] == "opener"
    assert a[semconv.CODE_LINE] == line("# <- left entered")


# --- correct programs ----------------------------------------------------------------------------


@pytest.mark.parametrize("spans", ["all", "anomalies", "none"])
def test_correct_trio_programs_produce_zero_violations(instrument, spans):
    telemetry = instrument(spans=spans)

    async def child_fails() -> None:
        raise KeyError("child")

    def in_thread() -> str:
        async def scoped() -> str:
            with trio.move_on_after(1):
                await trio.sleep(0)
            return "thread-ok"

        return trio.from_thread.run(scoped)

    async def main() -> str:
        await nested_ok()
        with trio.move_on_after(0.001):
            await trio.sleep(1)
        with trio.CancelScope(shield=True):
            with trio.move_on_after(0.001):
                await trio.sleep(1)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(child_fails)
                nursery.start_soon(trio.sleep, 1)
        except BaseExceptionGroup:
            pass
        try:
            with trio.fail_after(0.001):
                await trio.sleep(1)
        except trio.TooSlowError:
            pass
        async with trio.Lock():
            await trio.to_thread.run_sync(lambda: None)
        return await trio.to_thread.run_sync(in_thread)

    assert trio.run(main, strict_exception_groups=True) == "thread-ok"
    assert telemetry.violation_spans() == []
    assert telemetry.points(semconv.METRIC_VIOLATIONS) == []
    if spans == "all":
        assert len(trio_spans(telemetry)) >= 8


LATE_IMPORT = """
import sys
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from scopewatch import ScopeWatchInstrumentor

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
ScopeWatchInstrumentor().instrument(tracer_provider=provider, spans="all")
assert "trio" not in sys.modules and "anyio" not in sys.modules
import anyio
import trio

async def main():
    with anyio.move_on_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(anyio.sleep, 0)
    with trio.fail_after(5):
        pass

anyio.run(main, backend="trio")
print(sorted(s.name for s in exporter.get_finished_spans() if not s.name.startswith("task ")))
"""


@pytest.mark.skipif(not ANYIO_ON_TRIO, reason="anyio's trio backend requires trio >= 0.32")
def test_trio_and_anyio_imported_after_instrumenting_are_patched():
    result = subprocess.run(
        [sys.executable, "-c", LATE_IMPORT], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(
        sorted(
            [
                semconv.SPAN_ANYIO_MOVE_ON_AFTER,
                semconv.SPAN_ANYIO_TASK_GROUP,
                semconv.SPAN_TRIO_FAIL_AFTER,
            ]
        )
    )


@needs_311_tracebacks
def test_wrapper_frames_are_not_in_the_users_tracebacks(instrument):
    """trio's own error from ``CancelScope.__exit__`` reaches the user without our frames."""
    instrument()

    async def exited_out_of_order() -> BaseException:
        outer, inner = trio.CancelScope(), trio.CancelScope()
        outer.__enter__()
        inner.__enter__()
        try:
            outer.__exit__(None, None, None)  # trio: "Cancel scope stack corrupted ..."
        except RuntimeError as raised:
            error: BaseException = raised
        inner.__exit__(None, None, None)
        return error

    error = trio.run(exited_out_of_order)
    assert any("trio" in name for name in files_of(error))
    assert own_wrapper_files(error) == []
