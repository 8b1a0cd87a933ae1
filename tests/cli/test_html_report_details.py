"""The HTML report's details, in a real headless Chromium (issue 16 item 7).

The trace selector counts what the header counts; timeline rows whose names start alike stay
distinguishable; fix texts show code as code, not backticks; the legend has the error colour the
bars use; the violation list shows where without a click. The telemetry is a real program under
the real SDK, with one span of another instrumentation in a trace of its own.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest

from scopewatch import semconv
from scopewatch.export import FileMetricExporter, FileSpanExporter
from tests.support.chromium import Chromium

SCOPEWATCH = [sys.executable, "-m", "scopewatch.cli"]
PREFIX = "mcp.client.stdio.stdio_client.<locals>."
NAMES = (PREFIX + "stdin_writer", PREFIX + "stdout_reader", PREFIX + "stdout_reader_2")


async def program() -> None:
    async def named() -> None:
        await asyncio.sleep(0)

    async def fails() -> None:
        raise LookupError("boom")

    for name in NAMES:
        await asyncio.create_task(named(), name=name)
    failing = asyncio.create_task(fails(), name="failing")
    await asyncio.gather(failing, return_exceptions=True)
    stack = AsyncExitStack()

    async def opener() -> None:
        stack.enter_context(anyio.CancelScope())

    async def closer() -> None:
        try:
            await stack.aclose()
        except RuntimeError:
            pass

    await asyncio.create_task(opener(), name="opener")
    await asyncio.create_task(closer(), name="closer")


@pytest.fixture
def page(instrument: Any, tmp_path: Path) -> Any:
    telemetry = instrument(spans="all")
    asyncio.run(program())
    with telemetry.tracer_provider.get_tracer("other.instrumentation").start_as_current_span(
        "GET /health"
    ):
        pass
    telemetry.uninstrument()
    path = tmp_path / "t.jsonl"
    FileSpanExporter(str(path)).export(telemetry.spans())
    data = telemetry.reader.get_metrics_data()
    assert data is not None
    FileMetricExporter(str(path)).export(data)
    html = tmp_path / "report.html"
    result = subprocess.run(
        [*SCOPEWATCH, "report", "--format", "html", "-o", str(html), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    browser = Chromium(tmp_path / "profile")
    browser.send("Page.enable")
    browser.send("Page.navigate", url=html.as_uri())
    browser.wait_for_event("Page.loadEventFired")
    assert browser.evaluate("document.body.dataset.ready") == "true"
    yield browser
    browser.close()


def test_trace_selector_agrees_with_the_header(page: Chromium) -> None:
    summary = page.evaluate("document.querySelector('.summary-line').textContent")
    options = page.evaluate(
        "[...document.querySelectorAll('#trace-filter option')].map(o => o.text)"
    )
    traces = len(options) - 1
    assert traces >= 2  # the other instrumentation's trace has no scopewatch bar, and counts
    assert f"in {traces} traces" in summary
    assert options[0] == f"all traces ({traces})"
    violations = sum(
        int(text.split(", ")[1].split()[0]) for text in options[1:] if "violation" in text
    )
    assert f"{violations} violation" in summary and violations >= 1


def test_rows_that_start_alike_are_distinguishable(page: Chromium) -> None:
    rows = page.evaluate(
        "[...document.querySelectorAll('.row')].map(r => ({task: r.dataset.task,"
        " shown: r.querySelector('.label .mono').textContent,"
        " title: r.querySelector('.label').title,"
        " fits: r.querySelector('.label .mono').getBoundingClientRect().right <="
        " r.querySelector('.label').getBoundingClientRect().right}))"
    )
    ours = [row for row in rows if row["task"] in NAMES]
    assert sorted(row["task"] for row in ours) == sorted(NAMES)
    shown = [row["shown"] for row in ours]
    assert len(set(shown)) == len(NAMES), shown
    for row in ours:
        assert row["title"] == row["task"]  # the full name on hover
        assert row["fits"], row
        assert row["task"].endswith(row["shown"].rpartition("\u2026")[2])  # the tail is kept


def test_fix_text_shows_code_not_backticks(page: Chromium) -> None:
    listed = page.evaluate("document.getElementById('violation-list').innerText")
    assert "fix:" in listed
    assert "`" not in listed
    codes = page.evaluate(
        "[...document.querySelectorAll('#violation-list .muted code')].map(c => c.textContent)"
    )
    assert any("hold_in_task" in code for code in codes), codes
    page.evaluate("document.querySelector('#violation-list li').click()")
    details = page.evaluate("document.getElementById('details').innerText")
    assert "Fix:" in details and "`" not in details


def test_legend_has_the_error_colour_of_the_bars(page: Chromium) -> None:
    legend = page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('.legend > span')].map(s =>"
        " [s.textContent.trim(), getComputedStyle(s.querySelector('.swatch')).backgroundColor]))"
    )
    error_bar = page.evaluate(
        "getComputedStyle(document.querySelector('.item.task.error')).backgroundColor"
    )
    assert legend["error"] == error_bar
    assert len(set(legend.values())) == len(legend)  # every colour means one thing


def test_violation_list_shows_where_without_a_click(page: Chromium) -> None:
    assert page.evaluate("document.getElementById('details').hidden") is True
    listed = page.evaluate("document.querySelector('#violation-list li').innerText")
    locations = page.evaluate(
        "[...document.querySelectorAll('#violation-list li')[0].querySelectorAll('.location')]"
        ".map(c => c.textContent)"
    )
    assert len(locations) == 2, listed  # where it was entered and where it was exited
    assert all(location.startswith(__file__ + ":") for location in locations), locations
    assert "entered in task opener at " + locations[0] in listed.replace("\n", " ")
    assert "exited in task closer at " + locations[1] in listed.replace("\n", " ")
    assert semconv.KIND_CROSS_TASK_EXIT in listed
