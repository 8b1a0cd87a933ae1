"""Every trio task, through a ``trio.abc.Instrument`` added to each trio run.

trio creates each run's ``Runner`` in ``trio._core._run.setup_runner`` (called by ``trio.run``
and ``trio.lowlevel.start_guest_run``, hence by ``anyio.run(backend="trio")``, however ``run``
was imported); that function is replaced by one calling it unchanged and adding scopewatch's
instrument to the new run. Instrumenting inside a running trio run adds it to that run too
(tasks spawned before are not tracked). Nothing else of trio is patched and no coroutine is
wrapped. ``uninstall()`` restores ``setup_runner`` and removes the instrument from the run of
the calling thread; instruments in runs of other threads are neutralised (they return at once),
since trio's instrument table must not be changed from another thread.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from scopewatch._core import frames
from scopewatch._core.trio_tasks import TrioRun
from scopewatch._safety import Part
from scopewatch.instrumentation._patching import Patches, when_imported
from scopewatch.telemetry.tasks import TaskTelemetry

if TYPE_CHECKING:
    from types import ModuleType

    from scopewatch._core.tasks import TaskTracker
    from scopewatch._runtime import Runtime

PART = Part("trio task instrumentation")

_tracker: TaskTracker | None = None
_telemetry: TaskTelemetry | None = None
_patches = Patches()
_instruments: weakref.WeakSet[Any] = weakref.WeakSet()
"""Instruments added to runs not yet ended."""


def install(runtime: Runtime) -> None:
    """Instrument every trio run started from now on (and the calling thread's current run)."""
    global _tracker, _telemetry
    tracker = runtime.tasks
    if tracker is None:
        return  # not started (``tasks.start`` builds the tracker trio tasks report to)
    _tracker = tracker
    _telemetry = tracker.sink if isinstance(tracker.sink, TaskTelemetry) else None
    PART.reset()
    when_imported("trio", _trio_imported)


def uninstall() -> None:
    """Restore ``setup_runner``; remove or neutralise the instruments of runs still going."""
    global _tracker, _telemetry
    _patches.restore()
    instruments = list(_instruments)
    _instruments.clear()
    if instruments:
        from scopewatch.instrumentation import _trio_task_instrument

        _trio_task_instrument.retire(instruments)
    _tracker, _telemetry = None, None


def _trio_imported(module: ModuleType) -> None:
    if _tracker is None:
        return
    frames.add_internal_package(module.__file__)
    run_module = getattr(getattr(module, "_core", None), "_run", None)
    original = getattr(run_module, "setup_runner", None)
    if run_module is None or original is None:
        PART.fail(RuntimeError("trio._core._run.setup_runner not found: trio tasks not tracked"))
        return
    _patches.patch(run_module, "setup_runner", _setup_runner)
    from scopewatch.instrumentation import _trio_task_instrument

    runner = _trio_task_instrument.running_runner()
    if runner is not None:
        _watch(runner)


def _setup_runner(original: Any) -> Any:
    """``setup_runner``, then scopewatch's instrument on the new run."""

    def setup_runner(*args: Any, **kwargs: Any) -> Any:
        runner = original(*args, **kwargs)
        if _tracker is not None and PART.enabled:
            _watch(runner)
        return runner

    setup_runner.__doc__ = original.__doc__
    setup_runner.__wrapped__ = original  # type: ignore[attr-defined]
    return setup_runner


def _watch(runner: Any) -> None:
    """Add a new instrument for ``runner``'s tasks to that run."""
    tracker = _tracker
    if tracker is None:
        return
    try:
        from scopewatch.instrumentation import _trio_task_instrument

        telemetry = _telemetry
        live = telemetry if telemetry is not None and telemetry.live_spans else None
        instrument = _trio_task_instrument.TaskInstrument(
            TrioRun(tracker, tracker.sink), live, runner, PART
        )
        runner.instruments.add_instrument(instrument)
        _instruments.add(instrument)
    except Exception as error:
        PART.fail(error)
