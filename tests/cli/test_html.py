"""``scopewatch report --format html`` rendered in a real headless Chromium.

The page must load without console errors or network requests, show every task of a known
trace in the timeline, and show a violation's details (both stacks, cause, hint) when its bar is
clicked. Screenshots are saved to test-artifacts/html-report-*.png.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import subprocess
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest

from scopewatch import semconv
from scopewatch._core.explain import CAUSE_TEXT, HINTS
from scopewatch.export import FileMetricExporter, FileSpanExporter
from scopewatch.report import load
from scopewatch.report.analyze import is_scope, is_task
from tests.support.chromium import Chromium
from tests.support.paths import ROOT

SCOPEWATCH = [sys.executable, "-m", "scopewatch.cli"]
HERE = __file__
SOURCE = Path(HERE).read_text().splitlines()
ARTIFACTS = ROOT / "test-artifacts"


def shown(text: str) -> str:
    """``text`` as the page shows it: code marked with backticks becomes ``<code>``."""
    return text.replace("`", "")


def line_of(marker: str) -> int:
    return next(n for n, text in enumerate(SOURCE, start=1) if text.endswith(f"# {marker}"))


async def worker() -> None:
    with anyio.move_on_after(0.005):  # worker deadline
        await anyio.sleep(0.05)


async def known_trace() -> None:
    """One trace: a task group with three named workers, and a scope closed by another task."""
    async with anyio.create_task_group() as group:
        for name in ("alpha", "beta", "gamma"):
            group.start_soon(worker, name=name)
        stack = AsyncExitStack()

        async def opener() -> None:
            stack.enter_context(anyio.CancelScope())  # enter:opener

        async def closer() -> None:
            try:
                await stack.aclose()  # exit:closer
            except RuntimeError:
                pass

        await asyncio.create_task(opener(), name="opener")
        await asyncio.create_task(closer(), name="closer")


def telemetry_file(instrument: Any, path: Path, features: str = "scopes,tasks") -> Path:
    telemetry = instrument(spans="all", instrument=features)
    asyncio.run(known_trace())
    telemetry.uninstrument()
    FileSpanExporter(str(path)).export(telemetry.spans())
    data = telemetry.reader.get_metrics_data()
    assert data is not None
    FileMetricExporter(str(path)).export(data)
    return path


def tasks_of_trace(path: Path) -> tuple[str, set[str]]:
    """The trace of the task group span, and the name of every task with a span in it."""
    spans = load([str(path)]).spans
    root = next(s for s in spans if s.name == semconv.SPAN_ANYIO_TASK_GROUP)
    names: set[str] = set()
    for span in spans:
        if span.trace_id != root.trace_id:
            continue
        if is_task(span):
            names.add(str(span.attributes[semconv.TASK_NAME]))
        elif is_scope(span):
            names.add(str(span.attributes[semconv.ENTER_TASK]))
            names.add(str(span.attributes[semconv.EXIT_TASK]))
    return root.trace_id, names


@pytest.fixture
def chromium(tmp_path: Path) -> Any:
    browser = Chromium(tmp_path / "profile")
    yield browser
    browser.close()


@pytest.mark.parametrize(
    "features", ["scopes,tasks", "scopes"], ids=["task spans", "scope spans only"]
)
def test_html_report_in_chromium(
    instrument: Any, tmp_path: Path, chromium: Chromium, features: str
) -> None:
    """With task spans the rows are tasks; without them scope spans are grouped by task."""
    path = telemetry_file(instrument, tmp_path / "t.jsonl", features)
    task_spans = [s for s in load([str(path)]).spans if is_task(s)]
    assert bool(task_spans) == ("tasks" in features)
    page = tmp_path / "report.html"
    result = subprocess.run(
        [*SCOPEWATCH, "report", "--format", "html", "-o", str(page), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    html = page.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing to fetch

    for domain in ("Runtime", "Log", "Page", "Network"):
        chromium.send(f"{domain}.enable")
    chromium.send("Page.navigate", url=page.as_uri())
    chromium.wait_for_event("Page.loadEventFired")
    assert chromium.evaluate("document.body.dataset.ready") == "true"

    errors = [
        event
        for event in chromium.events
        if event["method"] == "Runtime.exceptionThrown"
        or (
            event["method"] == "Runtime.consoleAPICalled"
            and event["params"]["type"] in ("error", "assert")
        )
        or (event["method"] == "Log.entryAdded" and event["params"]["entry"]["level"] == "error")
    ]
    assert errors == []
    requested = {
        event["params"]["request"]["url"]
        for event in chromium.events
        if event["method"] == "Network.requestWillBeSent"
    }
    assert requested <= {page.as_uri(), "data:,"}

    # every task of the known trace has a row once the timeline shows only that trace
    trace_id, tasks = tasks_of_trace(path)
    assert {"alpha", "beta", "gamma", "opener", "closer"} <= tasks
    chromium.evaluate(
        "(() => { const s = document.getElementById('trace-filter');"
        f" s.value = {trace_id!r}; s.dispatchEvent(new Event('change')); }})()"
    )
    visible = chromium.evaluate(
        "[...document.querySelectorAll('.row:not(.hidden)')].map(r => r.dataset.task)"
    )
    assert set(visible) == tasks

    # a real click on the violation's bar opens its details
    box = chromium.evaluate(
        "(() => { const bar = document.querySelector('.item.violation');"
        " bar.scrollIntoView({block: 'center', inline: 'center'});"
        " const r = bar.getBoundingClientRect();"
        " return {x: r.left + r.width / 2, y: r.top + r.height / 2}; })()"
    )
    assert chromium.evaluate("document.getElementById('details').hidden") is True
    chromium.click(box["x"], box["y"])
    assert chromium.evaluate("document.getElementById('details').hidden") is False
    details = chromium.evaluate("document.getElementById('details-body').innerText")
    for text in (
        semconv.KIND_CROSS_TASK_EXIT,
        semconv.CAUSE_OTHER_TASK,
        shown(CAUSE_TEXT[semconv.CAUSE_OTHER_TASK]),
        shown(HINTS[semconv.CAUSE_OTHER_TASK]),
        "opener",
        "closer",
    ):
        assert text in details
    enter_stack = chromium.evaluate("document.querySelector('#details .enter-stack').innerText")
    exit_stack = chromium.evaluate("document.querySelector('#details .exit-stack').innerText")
    assert f"{HERE}:{line_of('enter:opener')} in " in enter_stack
    assert f"{HERE}:{line_of('exit:closer')} in " in exit_stack
    assert chromium.evaluate("document.querySelector('.item.violation.selected') !== null")

    ARTIFACTS.mkdir(exist_ok=True)
    shot = chromium.send("Page.captureScreenshot", format="png")
    image = base64.b64decode(shot["data"])
    assert image.startswith(b"\x89PNG\r\n\x1a\n")
    shot_path = ARTIFACTS / f"html-report-{features.replace(',', '-')}.png"
    shot_path.write_bytes(image)
    assert os.path.getsize(shot_path) > 10_000


HOSTILE = "</script><img src=x onerror=\"document.title='pwned'\">"


async def hostile_names() -> None:
    """A task name is the user's text: it must stay text in the page."""
    await known_trace()
    await asyncio.create_task(worker(), name=HOSTILE)


def test_violation_list_click_and_hostile_names(
    instrument: Any, tmp_path: Path, chromium: Chromium
) -> None:
    telemetry = instrument(spans="all")
    asyncio.run(hostile_names())
    telemetry.uninstrument()
    path = tmp_path / "t.jsonl"
    FileSpanExporter(str(path)).export(telemetry.spans())
    page = tmp_path / "report.html"
    subprocess.run(
        [*SCOPEWATCH, "report", "--format", "html", "-o", str(page), str(path)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    chromium.send("Page.enable")
    chromium.send("Page.navigate", url=page.as_uri())
    chromium.wait_for_event("Page.loadEventFired")
    assert chromium.evaluate("document.body.dataset.ready") == "true"
    assert chromium.evaluate("document.title") == "scopewatch report"
    assert chromium.evaluate("document.querySelectorAll('img').length") == 0
    labels = chromium.evaluate("[...document.querySelectorAll('.row')].map(r => r.dataset.task)")
    assert HOSTILE in labels

    chromium.evaluate("document.querySelector('#violation-list li').click()")
    assert shown(HINTS[semconv.CAUSE_OTHER_TASK]) in chromium.evaluate(
        "document.getElementById('details-body').innerText"
    )
    chromium.evaluate("document.getElementById('close-details').click()")
    assert chromium.evaluate("document.getElementById('details').hidden") is True
