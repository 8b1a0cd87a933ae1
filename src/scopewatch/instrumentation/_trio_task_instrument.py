"""The ``trio.abc.Instrument`` that reports one trio run's tasks (imported once trio is).

``task_spawned(task)`` runs in the spawning task: its name is the parent, the OpenTelemetry
context current there is the parent span, and in ``all`` mode the task's span is made current
in the new task's own context before its first step. ``task_exited(task)`` is not given the
task's outcome, so it is read from the caller, trio's ``Runner.task_exited(task, outcome)``
(for the main task, ``Runner.main_task_outcome``); for a cancelled task the nearest cancelled
scope enclosing it is found from its nursery's cancel status. These are trio internals, read
defensively: when they cannot be read, the outcome is taken as ``ok`` and a warning is logged
once. System tasks (the init task, ``spawn_system_task``, the ``run_sync_soon`` task) are
internal tasks: spans only when anomalous, and their end at the run's shutdown is routine.
"""

from __future__ import annotations

import contextlib
import os
import sys
import weakref
from typing import TYPE_CHECKING, Any

import trio

from scopewatch import semconv
from scopewatch._core import frames
from scopewatch._core.trio_tasks import outcome_of
from scopewatch._safety import warn_once
from scopewatch.instrumentation._suppression import instrumentation_enabled

if TYPE_CHECKING:
    from collections.abc import Iterable
    from types import CodeType, FrameType

    from scopewatch._core.trio_tasks import TrioRun
    from scopewatch._safety import Part
    from scopewatch.telemetry.tasks import TaskTelemetry

_RUN_FILE = os.path.join("trio", "_core", "_run.py")
_FRAMES_UP = 4
"""Frames examined above ``task_exited`` (trio's ``Instruments.call``, then the runner's)."""
_STATUS_DEPTH = 1000
_UNKNOWN: Any = object()
_exit_codes: dict[CodeType, bool] = {}


class TaskInstrument(trio.abc.Instrument):
    """Tells a :class:`~scopewatch._core.trio_tasks.TrioRun` about each task of its run."""

    def __init__(self, run: TrioRun, live: TaskTelemetry | None, runner: Any, part: Part) -> None:
        self.run = run
        self.part = part
        """The trio task feature's on/off switch (a failing hook turns it off)."""
        self.live = live
        """The telemetry, in ``all`` mode (spans start at spawn)."""
        self.active = True
        """False once scopewatch stopped instrumenting: every hook returns at once."""
        try:
            self._runner: Any = weakref.ref(runner)
        except TypeError:
            self._runner = lambda: runner

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        """Track ``task`` (not when spawned under suppression); ``all`` mode: start its span."""
        if not self.active or not self.part.enabled or not instrumentation_enabled():
            return
        try:
            self._spawned(task)
        except Exception as error:
            self.part.fail(error)

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        """Report how ``task`` ended and, if cancelled, the scope that cancelled it."""
        if not self.active or not self.part.enabled or task not in self.run.records:
            return
        try:
            self._exited(task, sys._getframe(1))
        except Exception as error:
            self.part.fail(error)

    def after_run(self) -> None:
        """The run is over: anything still tracked never ended."""
        if not self.active or not self.part.enabled:
            return
        self.active = False
        try:
            self.run.closed()
        except Exception as error:
            self.part.fail(error)

    def _spawned(self, task: trio.lowlevel.Task) -> None:
        runner = self._runner()
        init_task = getattr(runner, "init_task", None)
        nursery = task.parent_nursery
        system = nursery is None or (
            nursery.parent_task is init_task and getattr(runner, "main_task", None) is not None
        )  # the init task spawns the main task first (main_task is set just after)
        try:
            spawner: Any = trio.lowlevel.current_task()
        except RuntimeError:
            spawner = None
        parent = spawner.name if spawner is not None and spawner is not init_task else ""
        record = self.run.spawned(task, task.coro, parent, system)
        live = self.live
        if live is not None and record is not None and not system and not record.info.internal:
            live.start_in(record, task.context)

    def _exited(self, task: trio.lowlevel.Task, frame: FrameType | None) -> None:
        runner = self._runner()
        outcome = _outcome(task, runner, frame)
        if outcome is _UNKNOWN:
            warn_once(
                "trio-task-outcome",
                "scopewatch: cannot read how trio tasks end with trio %s; their outcome is "
                "reported as ok",
                trio.__version__,
            )
            outcome = None
        error = getattr(outcome, "error", None)
        scope, deadline_passed = None, False
        if error is not None and outcome_of(error) == semconv.OUTCOME_CANCELLED:
            scope = _cancelled_scope(task)
            if scope is not None:
                deadline_passed = scope.deadline <= trio.current_time()
        shutting_down = getattr(runner, "main_task_outcome", None) is not None
        self.run.exited(task, task.name, error, scope, deadline_passed, shutting_down)


def _outcome(task: Any, runner: Any, frame: FrameType | None) -> Any:
    """The ``outcome`` trio's ``Runner.task_exited`` was called with, or ``_UNKNOWN``."""
    for _ in range(_FRAMES_UP):
        if frame is None:
            break
        if _is_task_exited(frame.f_code):
            if runner is not None and task is getattr(runner, "main_task", None):
                return getattr(runner, "main_task_outcome", _UNKNOWN)
            found = frames.local_of(frame, "outcome")
            return _UNKNOWN if found is None else found
        frame = frame.f_back
    return _UNKNOWN


def _is_task_exited(code: CodeType) -> bool:
    known = _exit_codes.get(code)
    if known is None:
        known = _exit_codes[code] = code.co_name == "task_exited" and code.co_filename.endswith(
            _RUN_FILE
        )
    return known


def _cancelled_scope(task: Any) -> Any:
    """The scope whose cancellation reached ``task``, through trio's cancel statuses.

    The task's nursery cancels its own scope when the task exits with ``Cancelled`` (before
    the instrument hears of it), so the origin is looked for upwards, as long as the
    cancellation can come from there: the outermost cancelled scope carrying the same
    ``CancelReason`` as the nearest one (trio >= 0.31 passes the origin's reason down), or
    simply the outermost cancelled one on older trios.
    """
    status = getattr(task.parent_nursery, "_cancel_status", None)
    found, reason = None, None
    for _ in range(_STATUS_DEPTH):
        if status is None or not getattr(status, "effectively_cancelled", False):
            break
        scope = getattr(status, "_scope", None)
        if getattr(scope, "_cancel_called", False):
            scope_reason = getattr(scope, "_cancel_reason", None)
            if found is None:
                found, reason = scope, scope_reason
            elif scope_reason is reason:
                found = scope
        if getattr(scope, "shield", False):
            break
        status = getattr(status, "parent", None)
    return found


def running_runner() -> Any:
    """The runner of the trio run on the calling thread, or ``None``."""
    try:
        trio.lowlevel.current_root_task()
    except RuntimeError:
        return None
    return getattr(getattr(trio._core._run, "GLOBAL_RUN_CONTEXT", None), "runner", None)


def retire(instruments: Iterable[TaskInstrument]) -> None:
    """Neutralise ``instruments``; remove those in the calling thread's run from it."""
    for instrument in instruments:
        instrument.active = False
        # not in this thread's run (or no run here): it stays there, inert, until that run ends
        with contextlib.suppress(RuntimeError, KeyError):
            trio.lowlevel.remove_instrument(instrument)
