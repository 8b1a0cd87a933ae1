"""Fault injection on alert actions: the ``log`` action behind a logging handler that raises or
hangs, and ``import debugpy`` raising or hanging (a real module named ``debugpy`` first on
``sys.path``, really imported by the action's listener thread).

The alert engine has two actions only (``log``, ``debugpy``; rules are validated against that
list), so there is no custom action to break. Each test runs the shared workload and asserts the
app's results equal the uninstrumented baseline, the exact scopewatch records logged, and that
the rest keeps working.
"""

from __future__ import annotations

import logging
import sys
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from scopewatch import semconv
from scopewatch.alerts import debugger
from tests.support.fault_parts import BrokenHandler, fake_debugpy
from tests.support.faults import (
    HANG_SECONDS,
    LOGGER,
    VIOLATIONS,
    Hang,
    baseline,
    errors,
    run_workload,
    warnings,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.support.faults import Setup


DEBUGPY_RULE = "dbg: scopewatch.violation.kind == cross_task_exit cooldown 0 -> debugpy, log"


def alert_counts(setup: Setup) -> dict[str, int]:
    """``scopewatch.alerts`` by action."""
    return {
        dict(key)[semconv.ALERT_ACTION]: int(value)
        for key, value in setup.metric(semconv.METRIC_ALERTS).items()
    }


def test_log_action_behind_a_raising_handler_is_disabled_and_logged_once(
    setup_factory: Callable[..., Setup],
    caplog: pytest.LogCaptureFixture,
    root_handler: Callable[[logging.Handler], None],
) -> None:
    expected = baseline()
    setup = setup_factory()
    broken = BrokenHandler()
    with caplog.at_level(logging.WARNING, LOGGER):
        root_handler(broken)
        assert run_workload() == expected
    (error,) = errors(caplog)
    assert "alert action 'log' of rule 'cross' failed and is disabled" in error
    # The failing action ran once, then stayed off; detection and export went on.
    assert alert_counts(setup) == {semconv.ALERT_ACTION_LOG: 1}
    assert broken.calls == 2  # the action's warning, then the one error record about it
    assert setup.total(semconv.METRIC_VIOLATIONS) == VIOLATIONS
    assert len(setup.violation_spans()) == VIOLATIONS


def test_log_action_behind_a_hanging_handler_delays_but_does_not_change_the_app(
    setup_factory: Callable[..., Setup],
    caplog: pytest.LogCaptureFixture,
    root_handler: Callable[[logging.Handler], None],
) -> None:
    """Logging is synchronous: a stuck handler holds the thread that logs, by the logging
    module's design. The app waits (here 0.2 s) and its results stay the same."""
    expected = baseline()
    setup = setup_factory(log_limit=0)  # every firing logs, so every one meets the hang
    hang = Hang()
    hang.release_after(0.2)
    with caplog.at_level(logging.WARNING, LOGGER):
        root_handler(BrokenHandler(hang))
        try:
            assert run_workload() == expected
        finally:
            hang.release()
    assert errors(caplog) == []
    assert alert_counts(setup) == {semconv.ALERT_ACTION_LOG: VIOLATIONS}
    assert len(warnings(caplog)) == VIOLATIONS


def test_debugpy_import_raising_is_reported_once_and_rules_go_on(
    setup_factory: Callable[..., Setup],
    caplog: pytest.LogCaptureFixture,
    fresh_listener: debugger.Listener,
    tmp_path: Path,
) -> None:
    expected = baseline()
    fake_debugpy(tmp_path, "raise RuntimeError('broken debugpy install')\n")
    setup = setup_factory(rules=DEBUGPY_RULE, debugpy=True)
    with caplog.at_level(logging.WARNING, LOGGER):
        assert run_workload() == expected
        assert fresh_listener.ready.wait(HANG_SECONDS)
    assert errors(caplog) == []
    (import_warning,) = [w for w in warnings(caplog) if "debugpy" in w]
    assert "debugpy cannot be imported (RuntimeError: broken debugpy install)" in import_warning
    assert not fresh_listener.available
    assert "debugpy" not in sys.modules
    assert alert_counts(setup) == {
        semconv.ALERT_ACTION_DEBUGPY: VIOLATIONS,
        semconv.ALERT_ACTION_LOG: VIOLATIONS,
    }
    assert setup.total(semconv.METRIC_VIOLATIONS) == VIOLATIONS


def test_debugpy_import_hanging_does_not_hold_the_app(
    setup_factory: Callable[..., Setup],
    caplog: pytest.LogCaptureFixture,
    fresh_listener: debugger.Listener,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The import runs in the listener's thread: the app finishes while it is still stuck, and
    firings meanwhile (which see a half-imported ``debugpy`` in ``sys.modules``) do nothing."""
    expected = baseline()
    gate = f"_scopewatch_gate_{uuid.uuid4().hex}"
    (tmp_path / f"{gate}.py").write_text("import threading\nrelease = threading.Event()\n")
    fake_debugpy(
        tmp_path,
        f"import {gate}\n{gate}.release.wait({HANG_SECONDS})\nraise ImportError('gave up')\n",
    )
    setup = setup_factory(rules=DEBUGPY_RULE, debugpy=True)
    released: Any = None
    try:
        with caplog.at_level(logging.WARNING, LOGGER):
            assert run_workload() == expected
            assert not fresh_listener.ready.is_set()  # the import is still hanging
            released = sys.modules[gate].release
            released.set()
            assert fresh_listener.ready.wait(HANG_SECONDS)
    finally:
        if released is None and gate in sys.modules:
            sys.modules[gate].release.set()
        monkeypatch.delitem(sys.modules, gate, raising=False)
    assert errors(caplog) == []
    (import_warning,) = [w for w in warnings(caplog) if "debugpy" in w]
    assert "debugpy cannot be imported (ImportError: gave up)" in import_warning
    assert alert_counts(setup) == {
        semconv.ALERT_ACTION_DEBUGPY: VIOLATIONS,
        semconv.ALERT_ACTION_LOG: VIOLATIONS,
    }
