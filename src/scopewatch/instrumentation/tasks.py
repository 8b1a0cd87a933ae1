"""Every asyncio task, however created, and every ``Task.cancel()`` call on it.

``BaseEventLoop.create_task`` (what ``asyncio.create_task``, ``ensure_future``, ``TaskGroup`` and
anyio call) is replaced by a function doing exactly what it did, except that without a task
factory it builds scopewatch's :class:`Task` (an ``asyncio.Task`` subclass whose only override
is ``cancel``, to see who asks). A task factory set by the user, before or after instrumenting,
is still the one called (its tasks are tracked, without cancel attribution);
``asyncio.eager_task_factory`` builds scopewatch's eager subclass; uvloop's loop class gets
the same treatment, and so does 3.14's ``create_task(coro, **kwargs)``, every keyword passed
on (:mod:`._task_loops` patches the loops, with this module's pieces). Coroutines are never
wrapped: ``task.get_coro()`` is the user's coroutine. ``loop.close()`` is observed to report
scopes and tasks still open on that loop.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Any, TypeVar

from scopewatch import semconv
from scopewatch._core import cancels, frames
from scopewatch._core.records import TaskRecord
from scopewatch._core.task_ends import FACTS_ATTRIBUTE, RECORD_ATTRIBUTE, carried, ended
from scopewatch._core.tasks import Facts, TaskTracker
from scopewatch._safety import Part
from scopewatch.instrumentation import _scope_state
from scopewatch.instrumentation._patching import Patches, when_imported
from scopewatch.instrumentation._suppression import SUPPRESS_KEYS, instrumentation_enabled
from scopewatch.telemetry.counts import new_tally
from scopewatch.telemetry.metrics import warn_bound_reached
from scopewatch.telemetry.tasks import TaskTelemetry

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

    from scopewatch._core.records import CancelInfo, ScopeRecord
    from scopewatch._runtime import Runtime

PART = Part("task instrumentation")
_T = TypeVar("_T")
PY311 = sys.version_info >= (3, 11)
KNOWN_CREATE_TASK = sys.version_info < (3, 14)
"""``create_task(coro, *, name, context)`` as on 3.10-3.13. Later Pythons get the keyword-forwarding
version of 3.14's ``create_task(coro, **kwargs)`` when theirs has that signature, otherwise a
plain wrapper (tasks tracked, built by asyncio itself: no canceller attribution)."""

# Done callbacks run in a copy of the creating code's context (asyncio's default, ~20 ns). One
# shared empty ``Context`` would be cheaper but cannot be entered by two threads at once: with
# event loops in several threads a done callback then failed ("cannot enter context") and the
# task's end was never recorded.

_tracker: TaskTracker | None = None
_telemetry: TaskTelemetry | None = None
_live = False
_patches = Patches()
_eager_hooked = False
"""Whether ``asyncio.eager_task_factory`` builds :class:`_EagerTask` (its closure cell is set)."""
_add_done_callback = asyncio.Task.add_done_callback
_remove_done_callback = asyncio.Task.remove_done_callback
CARRIER_ATTRIBUTE = "_scopewatch_carrier"


class Task(asyncio.Task):  # type: ignore[type-arg]
    """``asyncio.Task`` that tells scopewatch who calls ``cancel()``; otherwise identical.

    Its own done callback (:func:`~scopewatch._core.task_ends.ended`) rides in the first done
    callback anyone else adds, so a task costs the loop one callback handle, not two.
    """

    __slots__ = (RECORD_ATTRIBUTE, FACTS_ATTRIBUTE, CARRIER_ATTRIBUTE)
    _scopewatch_record: TaskRecord
    _scopewatch_facts: Facts | None
    _scopewatch_carrier: Any

    def add_done_callback(self, fn: Any, *, context: Any = None) -> None:
        """Add ``fn``; the first one added also carries scopewatch's own done callback."""
        if _remove_done_callback(self, ended):
            self._scopewatch_carrier = fn
            fn = carried
        if context is None:
            _add_done_callback(self, fn)
        else:
            _add_done_callback(self, fn, context=context)

    def remove_done_callback(self, fn: Any) -> int:
        """Remove ``fn`` (scopewatch's own callback stays, on its own again if it rode with it)."""
        carrier = getattr(self, CARRIER_ATTRIBUTE, None)
        if carrier is not None and (carrier is fn or carrier == fn):
            removed = _remove_done_callback(self, carried)
            if removed:
                self._scopewatch_carrier = None
                _add_done_callback(self, ended)
            # else the task is done and its callbacks are scheduled: asyncio still runs a
            # callback removed now, so the carried one still runs too
            return removed + _remove_done_callback(self, fn)
        return _remove_done_callback(self, fn)

    def cancel(self, msg: Any = None) -> bool:
        """Note the request (caller, reason, where this task is suspended), then cancel."""
        tracker = _tracker
        if tracker is not None and PART.enabled:
            record = tracker.record_of(self)
            if record is not None and record.tracker is tracker:
                try:
                    tracker.cancel_requested(self, record, msg, sys._getframe(1))
                except Exception as error:
                    PART.fail(error)
        return super().cancel(msg)

    if PY311:

        def uncancel(self) -> int:
            """Note who undoes a request (task groups on some Pythons never do), then undo."""
            tracker = _tracker
            if tracker is not None and PART.enabled:
                record = tracker.record_of(self)
                if record is not None and record.tracker is tracker:
                    try:
                        tracker.uncancel_requested(self, record, sys._getframe(1))
                    except Exception as error:
                        PART.fail(error)
            return super().uncancel()


cancels.register_role(Task.cancel.__code__, cancels.PROPAGATE)


class _EagerTask(Task):
    """What ``asyncio.eager_task_factory`` builds while instrumenting (3.12+).

    anyio builds tasks straight from that factory's constructor, so this class registers itself.
    """

    __slots__ = ()

    def __init__(self, coro: Any, *, loop: Any = None, **kwargs: Any) -> None:
        initialize = super().__init__
        record = _begin(coro, loop)
        if record is None:
            initialize(coro, loop=loop, **kwargs)
            return
        self._scopewatch_record = record  # the first step runs in initialize: it finds its record
        self._scopewatch_facts = None
        _built(record, kwargs.get("context"), lambda: initialize(coro, loop=loop, **kwargs))
        _register(self, record)


def start(runtime: Runtime) -> None:
    """Build the tasks feature's tracker (before its modules install); put it on ``runtime``."""
    global _tracker, _telemetry, _live
    telemetry = TaskTelemetry(runtime)
    settings = runtime.settings
    tracker = TaskTracker(
        telemetry,
        settings.stack_depth,
        settings.max_tracked,
        settings.exclude,
        _scope_record,
        _scope_cancel,
    )
    tracker.on_error = PART.fail
    tracker.bound_reached = warn_bound_reached
    tracker.active = new_tally()  # kept per thread without a GIL, plain ints with one
    tracker.untracked = new_tally()
    tracker.counts = runtime.instruments.task_counts
    tracker.slow = settings.slow_threshold
    tracker.quick = settings.durations != "all"
    runtime.instruments.set_untracked(semconv.UNTRACKED_TASK, lambda: int(tracker.untracked))
    _telemetry, _tracker, _live = telemetry, tracker, telemetry.live_spans
    runtime.tasks = tracker
    runtime.instruments.set_active_tasks(lambda: int(tracker.active))
    scopes = _scope_state.tracker
    if scopes is not None:
        scopes.task_cancel_info = tracker.cancel_info
    PART.reset()


def stop() -> None:
    """Drop the tracker, after every task module is uninstalled."""
    global _tracker, _telemetry, _live
    scopes = _scope_state.tracker
    if (
        scopes is not None
        and _tracker is not None
        and scopes.task_cancel_info == _tracker.cancel_info
    ):
        scopes.task_cancel_info = None
    _tracker, _telemetry, _live = None, None, False


def install(runtime: Runtime) -> None:
    """Hook eager tasks (the loops' ``create_task``: ``_task_loops``; the tracker: ``start``)."""
    global _eager_hooked
    del runtime
    factory = getattr(asyncio, "eager_task_factory", None)
    closure = getattr(factory, "__closure__", None)
    if closure and closure[0].cell_contents is asyncio.Task:
        _patches.cell(closure[0], _EagerTask)
        _eager_hooked = True
    when_imported("anyio", _anyio_is_library)


def uninstall() -> None:
    """Restore every original (tasks created meanwhile keep working as plain tasks)."""
    global _eager_hooked
    _patches.restore()
    _eager_hooked = False


def _scope_record(obj: object) -> ScopeRecord | None:
    scopes = _scope_state.tracker
    return scopes.record_of(obj) if scopes is not None else None


def _scope_cancel(obj: object) -> tuple[str, CancelInfo] | None:
    scopes = _scope_state.tracker
    return scopes.cancel_of(obj) if scopes is not None else None


def _anyio_is_library(module: ModuleType) -> None:
    if _tracker is not None:
        frames.add_internal_package(module.__file__)


# --- creation -------------------------------------------------------------------------------


def _begin(coro: Any, loop: Any) -> TaskRecord | None:
    tracker = _tracker
    if tracker is None or not PART.enabled or not instrumentation_enabled():
        return None
    try:
        if loop is None:
            loop = asyncio.get_running_loop()
        return tracker.begin(coro, _scope_state.task_of_loop(loop))
    except Exception as error:
        PART.fail(error)
        return None


def _register(task: Any, record: TaskRecord) -> None:
    tracker = record.tracker
    try:
        if isinstance(task, Task):
            setattr(task, RECORD_ATTRIBUTE, record)
            setattr(task, FACTS_ATTRIBUTE, None)
            _add_done_callback(task, ended)
        else:
            tracker.remember_foreign(task, record)
            task.add_done_callback(record.done)
        tracker.active += 1
    except Exception as error:
        PART.fail(error)


def _start(record: TaskRecord, context: Any = None) -> object:
    """``all`` mode: start the span of a user task and make it current around its creation."""
    telemetry = _telemetry
    if not _live or telemetry is None or record.info.internal:
        return None
    try:
        if context is None:
            return telemetry.start(record)
        telemetry.start_in(record, context)
    except Exception as error:
        PART.fail(error)
    return None


def _release(token: object) -> None:
    telemetry = _telemetry
    if telemetry is not None:
        try:
            telemetry.release(token)
        except Exception as error:
            PART.fail(error)


def _built(record: TaskRecord, context: Any, build: Callable[[], _T]) -> _T:
    """Run ``build()`` with the task's span current (``all`` mode); discard it if that fails."""
    token = _start(record, context)
    try:
        return build()
    except BaseException:
        _discard(record)
        raise
    finally:
        if token is not None:
            _release(token)


def _new_task(loop: Any, coro: Any, name: Any, context: Any) -> Task:
    if context is None:
        return Task(coro, loop=loop, name=name)
    return Task(coro, loop=loop, name=name, context=context)


def _discard(record: TaskRecord) -> None:
    if _telemetry is not None:
        try:
            _telemetry.discard(record)
        except Exception as error:
            PART.fail(error)


def _created_live(loop: Any, coro: Any, name: Any, context: Any, record: TaskRecord) -> Task:
    """``all`` mode: the task is built with its span current (made when it is created)."""
    token = _start(record, context)
    try:
        task = _new_task(loop, coro, name, context)
    except BaseException:
        _discard(record)
        raise
    finally:
        if token is not None:
            _release(token)
    source_traceback = task._source_traceback  # type: ignore[attr-defined]
    if source_traceback:
        del source_traceback[-1]
    task._scopewatch_record = record
    task._scopewatch_facts = None
    _add_done_callback(task, ended)
    record.tracker.active += 1
    return task


def _base_create_task(original: Any) -> Any:
    """``BaseEventLoop.create_task``, building scopewatch's ``Task`` when there is no factory."""
    suppress_key, plain_key = SUPPRESS_KEYS
    task_of_loop = _scope_state.task_of_loop

    def create_task(self: Any, coro: Any, *, name: Any = None, context: Any = None) -> Any:
        tracker = _tracker
        if (
            tracker is None
            or self._task_factory is not None
            or (context is not None and not PY311)
            or not PART.enabled
        ):
            return _through(original, self, coro, name, context)
        current = tracker.current_context()  # instrumentation_enabled() inlined, on the
        if current and (current.get(suppress_key) or current.get(plain_key)):  # same context
            return _call(original, self, coro, name, context)  # suppressed: a plain task
        self._check_closed()
        try:  # the hot path: _begin and _register inlined
            facts = tracker.facts(coro, task_of_loop(self), current)
        except Exception as error:
            PART.fail(error)
            facts = None
        if facts is None:
            return _call(original, self, coro, name, context)
        if _live:
            return _created_live(self, coro, name, context, TaskRecord(*facts))
        if context is None:  # _new_task inlined
            task = Task(coro, loop=self, name=name)
        else:
            task = Task(coro, loop=self, name=name, context=context)
        if self._debug:  # asyncio's Task keeps a traceback in debug mode: end it at the caller
            source_traceback = task._source_traceback  # type: ignore[attr-defined]
            if source_traceback:
                del source_traceback[-1]
        task._scopewatch_facts = facts
        _add_done_callback(task, ended)
        tracker.active += 1
        return task

    create_task.__doc__ = original.__doc__
    return create_task


def _call(original: Any, loop: Any, coro: Any, name: Any, context: Any) -> Any:
    if context is None:
        return original(loop, coro, name=name)
    return original(loop, coro, name=name, context=context)


def _through(original: Any, loop: Any, coro: Any, name: Any, context: Any) -> Any:
    """Let the loop's own path (its task factory) build the task, then track that task."""
    if _tracker is None:
        return _call(original, loop, coro, name, context)
    factory = loop.get_task_factory()
    if _eager_hooked and factory is getattr(asyncio, "eager_task_factory", None):
        return _call(original, loop, coro, name, context)  # builds an _EagerTask: tracked
    record = _begin(coro, loop)
    if record is None:
        return _call(original, loop, coro, name, context)
    task = _built(record, context, lambda: _call(original, loop, coro, name, context))
    _track_built(task, record)
    return task


def _track_built(task: Any, record: TaskRecord) -> None:
    """Track ``task``, built by the loop's own path, unless it tracked itself (``_EagerTask``)."""
    if record.tracker.record_of(task) is None:
        _register(task, record)
    else:
        _discard(record)
