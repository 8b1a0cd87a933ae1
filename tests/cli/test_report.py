"""``scopewatch report``: each violation kind and cause, the other sections, formats and errors.

Telemetry comes from real programs run here under the real SDK (the ``instrument`` fixture),
written with the real ``scopewatch_file`` exporters, and read by ``scopewatch report`` in a
subprocess.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest

from scopewatch import semconv
from scopewatch._core import hints
from scopewatch._core.explain import CAUSE_TEXT, HINTS
from scopewatch.export import FileMetricExporter, FileSpanExporter
from scopewatch.report.text import use_colour

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

SCOPEWATCH = [sys.executable, "-m", "scopewatch.cli"]
HERE = __file__
SOURCE = Path(HERE).read_text().splitlines()


def line_of(marker: str) -> int:
    """The line of this file that carries ``# <marker>``."""
    return next(n for n, text in enumerate(SOURCE, start=1) if text.endswith(f"# {marker}"))


def dump(telemetry: Any, path: Path) -> Path:
    """Write what the in-memory exporters got with the real file exporters."""
    FileSpanExporter(str(path)).export(telemetry.spans())
    data = telemetry.reader.get_metrics_data()
    if data is not None:
        FileMetricExporter(str(path)).export(data)
    return path


def report(path: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*SCOPEWATCH, "report", *args, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "NO_COLOR"},
        cwd=path.parent,  # this test file is outside it: its paths are shown in full
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def json_report(path: Path) -> dict[str, Any]:
    return dict(json.loads(report(path, "--format", "json").stdout))


def quiet_loop() -> None:
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: None)


# --- programs, one per cause ---------------------------------------------------------------------


async def holds_group() -> AsyncIterator[int]:
    async with anyio.create_task_group():  # enter:holds_group
        yield 1
        yield 2


async def finalizer_program() -> None:
    quiet_loop()

    async def consumer() -> None:
        async for _ in holds_group():  # consumer:iterates
            break

    try:
        await asyncio.create_task(consumer(), name="consumer")
        gc.collect()
        await asyncio.sleep(0.05)
    except asyncio.CancelledError:
        pass
    await asyncio.sleep(0.01)
    gc.collect()


keep: list[object] = []


async def shutdown_program() -> None:
    quiet_loop()
    gen = holds_group()
    keep.append(gen)
    await gen.__anext__()


class Client:
    def __init__(self) -> None:
        self.stack = AsyncExitStack()

    async def connect(self) -> None:
        await self.stack.enter_async_context(anyio.create_task_group())  # enter:client

    async def close(self) -> None:
        await self.stack.aclose()  # exit:client


async def other_task_program() -> None:
    client = Client()
    await asyncio.create_task(client.connect(), name="connector")
    try:
        await asyncio.create_task(client.close(), name="closer")
    except RuntimeError:
        pass


async def scoped_numbers(label: str) -> AsyncIterator[str]:
    with anyio.CancelScope():  # enter:scoped_numbers
        yield f"{label}1"
        yield f"{label}2"


async def per_step_program() -> None:
    quiet_loop()
    gen = scoped_numbers("x")
    await asyncio.ensure_future(gen.__anext__())
    try:
        await asyncio.ensure_future(gen.__anext__())
        await asyncio.ensure_future(gen.__anext__())
    except (RuntimeError, StopAsyncIteration):
        pass


async def interleaved_program() -> None:
    a, b = scoped_numbers("a"), scoped_numbers("b")
    await a.__anext__()
    await b.__anext__()
    try:
        await a.aclose()
    except RuntimeError:
        await b.aclose()


async def exit_order_program() -> None:
    first, second = AsyncExitStack(), AsyncExitStack()
    first.enter_context(anyio.CancelScope())  # enter:first
    second.enter_context(anyio.CancelScope())
    try:
        await first.aclose()  # exit:first
    except RuntimeError:
        await second.aclose()


async def leak_program() -> None:
    async def leaker() -> None:
        anyio.CancelScope().__enter__()  # enter:leaked

    await asyncio.create_task(leaker(), name="leaker")


async def swallow_program() -> None:
    async def stubborn() -> str:
        try:
            await asyncio.sleep(10)  # swallow:delivered
        except asyncio.CancelledError:
            return "swallowed"
        return "finished"

    task = asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0.01)
    task.cancel()  # swallow:cancel
    await task


CASES: list[tuple[str, str, Callable[[], Any], dict[str, Any]]] = [
    (
        semconv.KIND_CROSS_TASK_EXIT,
        semconv.CAUSE_ASYNCGEN_FINALIZER,
        finalizer_program,
        {"enter_task": "consumer", "enter": "holds_group", "asyncgen": "holds_group"},
    ),
    (
        semconv.KIND_CROSS_TASK_EXIT,
        semconv.CAUSE_ASYNCGEN_SHUTDOWN,
        shutdown_program,
        {"enter": "holds_group", "asyncgen": "holds_group"},
    ),
    (
        semconv.KIND_CROSS_TASK_EXIT,
        semconv.CAUSE_OTHER_TASK,
        other_task_program,
        {"enter_task": "connector", "exit_task": "closer", "enter": "client", "exit": "client"},
    ),
    (
        semconv.KIND_CROSS_TASK_EXIT,
        semconv.CAUSE_PER_STEP_TASK,
        per_step_program,
        {"enter": "scoped_numbers", "asyncgen": "scoped_numbers"},
    ),
    (
        semconv.KIND_NON_LIFO_EXIT,
        semconv.CAUSE_INTERLEAVED_GENERATORS,
        interleaved_program,
        {"enter": "scoped_numbers", "asyncgen": "scoped_numbers"},
    ),
    (
        semconv.KIND_NON_LIFO_EXIT,
        semconv.CAUSE_EXIT_ORDER,
        exit_order_program,
        {"enter": "first", "exit": "first"},
    ),
    (
        semconv.KIND_SCOPE_LEAKED,
        semconv.CAUSE_TASK_FINISHED,
        leak_program,
        {"enter_task": "leaker", "enter": "leaked"},
    ),
]


def run_case(instrument: Any, program: Callable[[], Any], path: Path, **settings: Any) -> Path:
    telemetry = instrument(**settings)
    asyncio.run(program())
    telemetry.uninstrument()
    return dump(telemetry, path)


@pytest.mark.parametrize(
    ("kind", "cause", "program", "expect"),
    CASES,
    ids=[f"{kind}-{cause}" for kind, cause, _, _ in CASES],
)
def test_each_violation_is_explained(
    instrument: Any,
    tmp_path: Path,
    kind: str,
    cause: str,
    program: Callable[[], Any],
    expect: dict[str, Any],
) -> None:
    path = run_case(instrument, program, tmp_path / "t.jsonl")
    data = json_report(path)
    found = [v for v in data["violations"] if v["kind"] == kind]
    assert found, data["violations"]
    violation = found[0]
    assert violation["cause"] == cause
    assert violation["cause_text"] == CAUSE_TEXT.get(cause, "")
    # The hint of the note, chosen for the code's shape; a generator holding a task group
    # cannot be closed cleanly, so it is never told to close it with safe_aiter.
    assert violation["hint"] in {hint.text for hint in hints.ALL}
    if "holds_group" in violation["asyncgen"]:
        assert violation["hint"] == hints.GENERATOR_TASK_GROUP.text
    enter_line = line_of(f"enter:{expect['enter']}")
    assert violation["enter"]["location"] == f"{HERE}:{enter_line}"
    innermost = violation["enter"]["stack"][-1]
    assert (innermost["file"], innermost["line"]) == (HERE, enter_line)
    if "exit" in expect:
        assert violation["exit"]["location"] == f"{HERE}:{line_of('exit:' + expect['exit'])}"
    if "enter_task" in expect:
        assert violation["enter"]["task"] == expect["enter_task"]
    if "exit_task" in expect:
        assert violation["exit"]["task"] == expect["exit_task"]
    if kind == semconv.KIND_CROSS_TASK_EXIT:
        assert violation["exit"]["task"] not in ("", violation["enter"]["task"])
    assert violation["asyncgen"] == expect.get("asyncgen", "")
    assert data["summary"]["violations_by_kind"][kind] >= 1
    assert {"kind": kind, "cause": violation["cause"]}.items() <= next(
        row for row in data["violation_counts"] if row["kind"] == kind
    ).items()

    text = report(path, "--color", "never").stdout
    assert f"{kind} ({violation['cause']}) in {violation['scope_kind']}" in text
    assert f"entered in task {violation['enter']['task']!r}" in text
    assert (violation["enter"]["label"], violation["exit"]["label"]) == (
        "entered in task",
        "exited in task",
    )
    assert f"fix: {violation['hint']}" in text
    if violation["exit"]["task"]:
        assert f"exited in task  {violation['exit']['task']!r}" in text
    if violation["asyncgen"]:
        assert f"async generator: {violation['asyncgen']}" in text
    frame = violation["enter"]["stack"][-1]
    assert f"{frame['file']}:{frame['line']} in {frame['function']}" in text
    assert text.rstrip().splitlines()[-1].startswith(f"scopewatch: {len(data['violations'])} ")


def test_swallowed_cancellation(instrument: Any, tmp_path: Path) -> None:
    path = run_case(instrument, swallow_program, tmp_path / "t.jsonl")
    data = json_report(path)
    if sys.version_info < (3, 11):  # no Task.cancelling(): a swallowed cancel cannot be told
        assert data["violations"] == []
        return
    (violation,) = [v for v in data["violations"] if v["kind"] == semconv.KIND_CANCEL_SWALLOWED]
    assert violation["enter"]["task"] == "stubborn"
    assert violation["enter"]["label"] == "swallowed in task"
    assert violation["enter"]["location"] == f"{HERE}:{line_of('swallow:delivered')}"
    assert violation["exit"]["label"] == "cancelled by task"
    assert violation["exit"]["location"] == f"{HERE}:{line_of('swallow:cancel')}"
    assert violation["hint"] == HINTS[semconv.KIND_CANCEL_SWALLOWED]
    assert violation["span"]["name"].startswith(semconv.SPAN_TASK_PREFIX)
    text = report(path, "--color", "never").stdout
    assert "cancel_swallowed" in text
    assert f"swallowed in task 'stubborn' at {HERE}:{line_of('swallow:delivered')}" in text
    canceller = violation["exit"]["task"]  # the main task: "Task-<n>", n counts per process
    assert f"cancelled by task {canceller!r} at {HERE}:{line_of('swallow:cancel')}" in text
    assert f"fix: {HINTS[semconv.KIND_CANCEL_SWALLOWED]}" in text


# --- the other sections ------------------------------------------------------------------------


async def traffic_program() -> None:
    lock = asyncio.Lock()

    async def request(number: int) -> None:
        async with lock:
            await asyncio.sleep(0.002)
        with anyio.move_on_after(0.01):  # deadline
            await anyio.sleep(0.05 if number % 2 else 0)

    await asyncio.gather(*(request(n) for n in range(4)))
    async with anyio.create_task_group() as group:
        group.start_soon(anyio.sleep, 1)
        await anyio.sleep(0.001)
        group.cancel_scope.cancel()  # explicit
    with anyio.CancelScope():  # slow
        await anyio.sleep(0.06)


def test_cancellations_slowest_scopes_and_locks(instrument: Any, tmp_path: Path) -> None:
    # every scope a span and measured: an explicit cancel is a normal shutdown, and healthy
    # scopes are not measured, in the default modes (0.3)
    path = run_case(
        instrument,
        traffic_program,
        tmp_path / "t.jsonl",
        slow_threshold=0.05,
        spans="all",
        durations="all",
    )
    data = json_report(path)
    cancellations = data["cancellations"]
    assert cancellations["by_origin"]["deadline"] == 2
    assert cancellations["by_origin"]["explicit"] >= 1
    deadline = next(i for i in cancellations["items"] if i["origin"] == "deadline")
    assert deadline["location"] == f"{HERE}:{line_of('deadline')}"
    assert deadline["count"] == 2
    explicit = next(i for i in cancellations["items"] if i["origin"] == "explicit")
    assert explicit["location"] == f"{HERE}:{line_of('explicit')}"
    slowest = data["slowest_scopes"][0]
    assert slowest["location"] == f"{HERE}:{line_of('slow')}"
    assert slowest["duration_s"] >= 0.06
    durations = [row["duration_s"] for row in data["slowest_scopes"]]
    assert durations == sorted(durations, reverse=True)
    (lock,) = data["locks"]
    assert lock["kind"] == semconv.LOCK_KIND_ASYNCIO_LOCK
    assert lock["contentions"] == 3  # four requests, the first one did not wait
    assert lock["wait_by_outcome"] == {"acquired": 3}  # the waits that had to wait
    assert data["scope_counts"]["source"] == semconv.METRIC_SCOPES
    kinds = {(r["scope_kind"], r["outcome"]): r["count"] for r in data["scope_counts"]["rows"]}
    assert kinds[(semconv.SPAN_ANYIO_MOVE_ON_AFTER, semconv.OUTCOME_DEADLINE_EXCEEDED)] == 2
    assert kinds[(semconv.SPAN_ANYIO_MOVE_ON_AFTER, semconv.OUTCOME_OK)] == 2

    text = report(path, "--color", "never").stdout
    assert "Cancellations (" in text and "deadline 2" in text
    assert f"2x deadline   anyio.move_on_after at {HERE}:{line_of('deadline')}" in text
    assert "Most contended locks" in text and "3 waits  asyncio.Lock" in text
    assert "Slowest scopes" in text
    assert text.rstrip().splitlines()[-1].startswith("scopewatch: 0 violations, ")


def test_sessions_and_their_outcomes(instrument: Any, tmp_path: Path) -> None:
    from scopewatch.sessions import track_session

    async def program() -> None:
        async with track_session("redis", name="cache"):
            await asyncio.sleep(0)
        try:
            async with track_session("redis", name="broken"):
                raise ValueError("boom")
        except ValueError:
            pass

    path = run_case(instrument, program, tmp_path / "t.jsonl", spans="all")
    data = json_report(path)
    outcomes = {(s["kind"], s["session_name"]): s["outcome"] for s in data["sessions"]["spans"]}
    assert outcomes == {("redis", "cache"): "ok", ("redis", "broken"): "error"}
    by_kind = {(r["kind"], r["outcome"]): r["count"] for r in data["sessions"]["by_kind"]}
    assert by_kind == {("redis", "ok"): 1, ("redis", "error"): 1}
    text = report(path, "--color", "never").stdout
    assert "Sessions" in text and "redis cache: ok after" in text and "redis broken: error" in text


# --- formats, colour, errors -------------------------------------------------------------------


def test_json_keys_are_stable(instrument: Any, tmp_path: Path) -> None:
    data = json_report(run_case(instrument, exit_order_program, tmp_path / "t.jsonl"))
    assert list(data) == [
        "schema",
        "generator",
        "files",
        "summary",
        "violations",
        "cancellations",
        "slowest_scopes",
        "scope_durations",
        "tasks",
        "locks",
        "sessions",
        "alerts",
        "violation_counts",
        "scope_counts",
    ]
    assert data["schema"] == "scopewatch.report/1"
    assert set(data["violations"][0]) == {
        "kind",
        "kind_text",
        "cause",
        "cause_text",
        "hint",
        "scope_kind",
        "asyncgen",
        "enter",
        "exit",
        "message",
        "time_unix_nano",
        "span",
    }
    assert set(data["violations"][0]["enter"]) == {
        "label",
        "task",
        "location",
        "app_location",
        "stack",
    }
    assert set(data["summary"]) >= {"violations", "violations_by_kind", "cancellations", "spans"}


def test_output_file_and_colour(instrument: Any, tmp_path: Path) -> None:
    path = run_case(instrument, exit_order_program, tmp_path / "t.jsonl")
    out = tmp_path / "r.txt"
    result = report(path, "-o", str(out))
    assert result.stdout == ""
    assert result.stderr == f"scopewatch report: wrote {out}\n"
    assert "\x1b[" not in out.read_text()
    assert "\x1b[1;31mnon_lifo_exit\x1b[0m" in report(path, "--color", "always").stdout
    assert "\x1b[" not in report(path).stdout  # not a terminal


def test_colour_auto_respects_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    master, slave = os.openpty()
    with os.fdopen(slave, "w") as terminal:
        monkeypatch.delenv("NO_COLOR", raising=False)
        monkeypatch.setenv("TERM", "xterm")
        assert use_colour(terminal) is True
        monkeypatch.setenv("NO_COLOR", "1")
        assert use_colour(terminal) is False
        assert use_colour(terminal, "always") is True
    os.close(master)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "t.jsonl: no such file"),
        ("", "t.jsonl: is empty (no telemetry was written)"),
        ('{"resourceSpans": []}\n{oops\n', "t.jsonl:2: not valid JSON"),
        ("[1, 2]\n", "t.jsonl: expected OTLP/JSON objects, found list"),
    ],
)
def test_unreadable_input_is_one_line(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "t.jsonl"
    if content is not None:
        path.write_text(content)
    result = report(path, check=False)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"scopewatch report: {tmp_path}/{message}")


def test_unknown_option_and_help(tmp_path: Path) -> None:
    result = subprocess.run(
        [*SCOPEWATCH, "report", "--frobnicate", "x.jsonl"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "unrecognized arguments: --frobnicate" in result.stderr
    help_text = subprocess.run(
        [*SCOPEWATCH, "report", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    assert "scopewatch report --format html -o report.html" in help_text


def test_pretty_printed_single_document_is_accepted(instrument: Any, tmp_path: Path) -> None:
    path = run_case(instrument, exit_order_program, tmp_path / "t.jsonl")
    first = json.loads(path.read_text().splitlines()[0])
    pretty = tmp_path / "pretty.json"
    pretty.write_text(json.dumps(first, indent=2))
    assert json_report(pretty)["summary"]["violations"] == 1


WITHOUT_SDK = (
    "import sys; sys.modules['opentelemetry.sdk'] = None; "  # as if it were not installed
    "from scopewatch.cli import main; sys.exit(main(sys.argv[1:]))"
)


def test_report_needs_no_sdk(instrument: Any, tmp_path: Path) -> None:
    path = run_case(instrument, exit_order_program, tmp_path / "t.jsonl")
    for args in (["report", str(path)], ["report", "--format", "html", str(path)]):
        result = subprocess.run(
            [sys.executable, "-c", WITHOUT_SDK, *args], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        assert "non_lifo_exit" in result.stdout
    run = subprocess.run(
        [sys.executable, "-c", WITHOUT_SDK, "run", "--", "python", "-c", "pass"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert run.stderr == (
        "scopewatch run needs opentelemetry-sdk; install it: pip install 'scopewatch[cli]'\n"
    )
