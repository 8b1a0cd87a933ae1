"""The active half of the pytest plugin: instrument the session, judge each test's violations.

Loaded only when ``--scopewatch`` (or the ``scopewatch`` ini option) asks for it. Violations are
collected through :func:`scopewatch.telemetry.scopes.violation_listeners` into the list of the
test that is running; they are judged when the call report is made (setup and call violations)
and when the teardown report is made (the rest, after a ``gc.collect()`` so abandoned async
generators are finalized while the test's event loop still runs).
"""

from __future__ import annotations

import gc
import os
from typing import TYPE_CHECKING, Any

import _pytest
import pluggy
import pytest

from scopewatch import _runtime, semconv
from scopewatch._core import frames
from scopewatch._core.explain import explain
from scopewatch._pytest_names import MARKER, ScopewatchViolationWarning
from scopewatch.instrumentor import ScopeWatchInstrumentor
from scopewatch.telemetry.scopes import violation_listeners

if TYPE_CHECKING:
    from collections.abc import Generator, Iterable

    from opentelemetry.trace import SpanContext

    from scopewatch._core.records import Violation

KINDS: tuple[str, ...] = tuple(
    value for name, value in vars(semconv).items() if name.startswith("KIND_")
)
"""Every ``scopewatch.violation.kind`` (a ``scopewatch_allow`` argument may name one)."""
CAUSES: tuple[str, ...] = tuple(
    value for name, value in vars(semconv).items() if name.startswith("CAUSE_")
)
"""Every ``scopewatch.violation.cause`` (a ``scopewatch_allow`` argument may name one)."""
_ALLOW_ALL = "*"
_RUNNER_PREFIXES = tuple(
    os.path.dirname(os.path.abspath(module.__file__ or "")) + os.sep for module in (_pytest, pluggy)
)


class ViolationWatch:
    """pytest hooks of an active ``--scopewatch`` session (registered as a plugin object)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        """``fail`` or ``warn``."""
        self.outside: list[Violation] = []
        """Violations that happened while no test ran (collection, session start or end)."""
        self._pending: list[Violation] | None = None
        self._instrumentor = ScopeWatchInstrumentor()
        self._providers: tuple[Any, ...] = ()
        self._exporter: Any = None
        self._started_here = False

    # --- instrumentation --------------------------------------------------------------------

    def start(self) -> None:
        """Instrument with private providers (never the global ones) and subscribe."""
        if not self._instrumentor.is_instrumented_by_opentelemetry:
            self._instrument()
        self._subscribe()

    def stop(self) -> None:
        """Unsubscribe, uninstrument what we instrumented, shut our providers down."""
        runtime = _runtime.current
        if runtime is not None:
            listeners = violation_listeners(runtime)
            while self._on_violation in listeners:
                listeners.remove(self._on_violation)
        if self._started_here and self._instrumentor.is_instrumented_by_opentelemetry:
            self._instrumentor.uninstrument()
        self._started_here = False
        for provider in self._providers:
            provider.shutdown()
        self._providers = ()

    def _instrument(self) -> None:
        # The plugin explains violations itself: the default ``log`` rule would repeat them.
        self._instrumentor.instrument(default_rule=False, **self._private_providers())
        self._started_here = True

    def _private_providers(self) -> dict[str, Any]:
        try:
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import SimpleSpanProcessor
            from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
                InMemorySpanExporter,
            )
        except ImportError:  # no SDK: violations are still reported through the listener
            from opentelemetry.metrics import NoOpMeterProvider
            from opentelemetry.trace import NoOpTracerProvider

            return {"tracer_provider": NoOpTracerProvider(), "meter_provider": NoOpMeterProvider()}
        self._exporter = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self._exporter))
        meter_provider = MeterProvider()
        self._providers = (tracer_provider, meter_provider)
        return {"tracer_provider": tracer_provider, "meter_provider": meter_provider}

    def _subscribe(self) -> None:
        """Listen to the current runtime (a test may have uninstrumented or re-instrumented)."""
        if _runtime.current is None:
            self._instrument()
        runtime = _runtime.current
        if runtime is None:  # instrumentation failed (already logged); nothing to watch
            return
        listeners = violation_listeners(runtime)
        if self._on_violation not in listeners:
            listeners.append(self._on_violation)

    def _on_violation(self, violation: Violation, span_context: SpanContext | None) -> None:
        del span_context
        pending = self._pending
        if pending is not None:
            pending.append(violation)
        else:
            self.outside.append(violation)

    # --- hooks ------------------------------------------------------------------------------

    def pytest_report_header(self) -> str:
        """Say that the session is watched."""
        return f"scopewatch: cancel-scope violations {self.mode}"

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Generator[None, object, object]:
        """Collect the violations of ``item`` from its setup to the end of its teardown."""
        self._subscribe()
        if self._exporter is not None:
            self._exporter.clear()
        self._pending = []
        try:
            return (yield)
        finally:
            self._pending = None

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        """Reject a ``scopewatch_allow`` marker naming no known kind or cause."""
        known = set(KINDS) | set(CAUSES)
        for name in _allowed(item):
            if name != _ALLOW_ALL and name not in known:
                pytest.fail(
                    f"{MARKER}: {name!r} is not a scopewatch violation kind or cause; accepted: "
                    f"{', '.join(KINDS + CAUSES)}",
                    pytrace=False,
                )

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        """Judge the violations so far in the call report, the rest in the teardown report."""
        if call.when != "setup":
            # Finalize abandoned async generators now: their aclose() is scheduled on the
            # test's loop, which (pytest-asyncio, anyio) runs again while tearing down.
            gc.collect()
        report = yield
        if call.when == "setup" or self._pending is None or not self._pending:
            return report
        allowed = _allowed(item)
        violations = [v for v in self._pending if not _is_allowed(v, allowed)]
        self._pending.clear()
        if violations:
            self._judge(item, report, violations)
        return report

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        """List violations that happened outside any test."""
        if not self.outside:
            return
        terminalreporter.section("scopewatch: violations outside tests", sep="=", red=True)
        for violation in self.outside:
            terminalreporter.write_line(describe(violation))

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """A violation outside tests fails the session in ``fail`` mode."""
        if self.outside and self.mode == "fail" and session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    # --- judging ----------------------------------------------------------------------------

    def _judge(self, item: pytest.Item, report: pytest.TestReport, found: list[Violation]) -> None:
        phase = "" if report.when == "call" else f" (surfaced during {report.when})"
        text = (
            f"scopewatch: {len(found)} cancel-scope violation(s) during {item.nodeid}{phase}\n\n"
            + "\n\n".join(describe(v) for v in found)
            + f"\n\nIf this is expected, mark the test with "
            f"@pytest.mark.{MARKER}({', '.join(repr(k) for k in _kinds(found))})."
        )
        if self.mode == "warn" or report.skipped:
            try:
                item.warn(ScopewatchViolationWarning(text))
                return
            except ScopewatchViolationWarning:  # -W error: the warning is an error
                pass
        if report.passed:
            report.outcome = "failed"
            report.longrepr = text
            if hasattr(report, "wasxfail"):
                del report.wasxfail
        else:
            report.sections.append(("scopewatch violations", text))


def describe(violation: Violation) -> str:
    """The explanation of one violation followed by where the scope was entered and exited."""
    parts = [explain(violation)]
    for title, captured in (
        ("entered", violation.enter_frames),
        ("exited", violation.exit_frames),
    ):
        shown = tuple(frame for frame in captured if not _is_runner(frame[0].co_filename))
        if shown:
            text = frames.format_frames(shown).rstrip("\n").replace("\n", "\n  ")
            parts.append(f"  {title} at (most recent call last):\n  {text}")
    return "\n".join(parts)


def _is_runner(filename: str) -> bool:
    """Whether ``filename`` belongs to pytest or pluggy (noise in a test's stack)."""
    return filename.startswith(_RUNNER_PREFIXES)


def _kinds(found: Iterable[Violation]) -> list[str]:
    return sorted({violation.kind for violation in found})


def _allowed(item: pytest.Item) -> set[str]:
    allowed: set[str] = set()
    for marker in item.iter_markers(MARKER):
        if not marker.args:
            return {_ALLOW_ALL}
        allowed.update(str(arg) for arg in marker.args)
    return allowed


def _is_allowed(violation: Violation, allowed: set[str]) -> bool:
    return _ALLOW_ALL in allowed or violation.kind in allowed or violation.cause in allowed
