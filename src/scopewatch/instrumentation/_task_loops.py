"""The loops' ``create_task`` and ``close()``: where asyncio and uvloop tasks are made.

Installed after :mod:`.tasks` (the tasks feature's second module): ``BaseEventLoop.create_task``
becomes :func:`.tasks._base_create_task` where its signature is known, else a ``create_task``
built from :mod:`.tasks`' pieces (3.14's ``create_task(coro, **kwargs)`` among them); uvloop's
loop class (not a ``BaseEventLoop``) gets the same treatment once uvloop is imported.
``loop.close()`` is observed to report the tasks and scopes still open on that loop. The state
(tracker, safety part) is :mod:`.tasks`' own, read at call time.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from typing import TYPE_CHECKING, Any

from scopewatch._core.records import TaskRecord
from scopewatch._core.task_ends import ended
from scopewatch.instrumentation import _scope_state
from scopewatch.instrumentation import tasks as _tasks
from scopewatch.instrumentation._patching import Patches, when_imported
from scopewatch.instrumentation._suppression import instrumentation_enabled

if TYPE_CHECKING:
    from types import ModuleType

    from scopewatch._runtime import Runtime


_HERE = os.path.dirname(os.path.abspath(__file__))
_FORWARDING = [
    inspect.Parameter.POSITIONAL_OR_KEYWORD,
    inspect.Parameter.POSITIONAL_OR_KEYWORD,
    inspect.Parameter.VAR_KEYWORD,
]
"""The parameter kinds of 3.14's ``BaseEventLoop.create_task(self, coro, **kwargs)``."""
_patches = Patches()


def install(runtime: Runtime) -> None:
    """Replace ``create_task`` / ``close`` of ``BaseEventLoop`` (and of uvloop's loop, imported)."""
    del runtime  # the tracker is the feature's (``tasks.start``, before any task module)
    loop_class = asyncio.BaseEventLoop
    wrap = _tasks._base_create_task if _tasks.KNOWN_CREATE_TASK else newer_create_task
    _patches.patch(loop_class, "create_task", wrap)
    _patches.patch(loop_class, "close", close_wrapper)
    when_imported("uvloop", patch_uvloop)


def uninstall() -> None:
    """Restore the loops' originals (tasks made meanwhile keep working)."""
    _patches.restore()


def generic_create_task(original: Any) -> Any:
    """``create_task`` of a loop class that is not a ``BaseEventLoop`` (uvloop).

    Keywords other than ``name`` and ``context`` (uvloop 0.23's ``eager_start``) go to the loop's
    own ``create_task`` unchanged, which builds the task; it is tracked all the same.
    """

    def create_task(
        self: Any, coro: Any, *, name: Any = None, context: Any = None, **more: Any
    ) -> Any:
        if more or self.get_task_factory() is not None or self.is_closed():
            keywords = {"name": name, "context": context, **more}
            return through_keywords(original, self, coro, keywords)
        record = _tasks._begin(coro, self)
        if record is None:
            return _tasks._call(original, self, coro, name, context)
        task = _tasks._built(record, context, lambda: _tasks._new_task(self, coro, name, context))
        _tasks._register(task, record)
        return task

    create_task.__doc__ = original.__doc__
    return create_task


def newer_create_task(original: Any) -> Any:
    """``create_task`` for a Python past 3.13: scopewatch's own for 3.14's signature, or a wrapper.

    3.14 (``Lib/asyncio/base_events.py``, ``BaseEventLoop.create_task(self, coro, **kwargs)``)
    hands every keyword to the task factory, or without one to ``tasks.Task(coro, loop=self,
    **kwargs)``; :func:`keywords_create_task` does the same with scopewatch's ``Task``. Any
    other signature gets :func:`wrapping_create_task`.
    """
    try:
        kinds = [parameter.kind for parameter in inspect.signature(original).parameters.values()]
    except (TypeError, ValueError):
        kinds = []
    if kinds == _FORWARDING:
        return keywords_create_task(original)
    return wrapping_create_task(original)


def keywords_create_task(original: Any) -> Any:
    """3.14's ``create_task(coro, **kwargs)``, building scopewatch's ``Task`` without a factory.

    Every keyword is passed on unchanged (``name``, ``context``, ``eager_start`` and whatever a
    later ``asyncio.Task`` accepts): to the user's factory through the loop's own
    ``create_task`` (a factory accepting none gets none unless the caller gave some, as without
    scopewatch), or to ``Task``, an ``asyncio.Task`` (C task) subclass. An eager task
    (``eager_start=True``) runs its first step inside the constructor, so its creation facts
    are in its slot before that.
    """
    task_class = _tasks.Task
    enabled = instrumentation_enabled
    task_of_loop = _scope_state.task_of_loop

    def create_task(self: Any, coro: Any, **kwargs: Any) -> Any:
        tracker = _tasks._tracker
        if tracker is None or self._task_factory is not None or not _tasks.PART.enabled:
            return through_keywords(original, self, coro, kwargs)
        if not enabled():  # suppressed: a plain task, not tracked
            return original(self, coro, **kwargs)
        self._check_closed()
        try:
            facts = tracker.facts(coro, task_of_loop(self))
        except Exception as error:
            _tasks.PART.fail(error)
            facts = None
        if facts is None:
            return original(self, coro, **kwargs)
        if _tasks._live or kwargs.get("eager_start"):
            task = _facts_first(task_class, self, coro, kwargs, facts)
        else:
            task = task_class(coro, loop=self, **kwargs)
            source_traceback = task._source_traceback  # type: ignore[attr-defined]
            if source_traceback:
                del source_traceback[-1]
            task._scopewatch_facts = facts
        _tasks._add_done_callback(task, ended)
        tracker.active += 1
        return task

    create_task.__doc__ = original.__doc__
    return create_task


def _facts_first(
    task_class: type[_tasks.Task], loop: Any, coro: Any, kwargs: dict[str, Any], facts: Any
) -> _tasks.Task:
    """A task whose facts (``all`` mode: its record, its span current) precede its constructor."""
    task = task_class.__new__(task_class)
    if _tasks._live:
        record = TaskRecord(*facts)
        task._scopewatch_record = record
        task._scopewatch_facts = None
        _tasks._built(
            record,
            kwargs.get("context"),
            lambda: task_class.__init__(task, coro, loop=loop, **kwargs),
        )
    else:
        task._scopewatch_facts = facts
        task_class.__init__(task, coro, loop=loop, **kwargs)
    source_traceback = task._source_traceback  # type: ignore[attr-defined]
    while source_traceback and source_traceback[-1].filename.startswith(_HERE):
        del source_traceback[-1]  # debug mode: the stack ends at the caller, as asyncio's does
    return task


def through_keywords(original: Any, loop: Any, coro: Any, kwargs: dict[str, Any]) -> Any:
    """The loop's own ``create_task`` (its task factory) with these keywords; the task tracked."""
    if _tasks._tracker is None:
        return original(loop, coro, **kwargs)
    factory = loop.get_task_factory()
    if _tasks._eager_hooked and factory is getattr(asyncio, "eager_task_factory", None):
        return original(loop, coro, **kwargs)  # builds an _EagerTask: tracked
    record = _tasks._begin(coro, loop)
    if record is None:
        return original(loop, coro, **kwargs)
    task = _tasks._built(record, kwargs.get("context"), lambda: original(loop, coro, **kwargs))
    _tasks._track_built(task, record)
    return task


def wrapping_create_task(original: Any) -> Any:
    """``create_task`` of an untested Python: call it unchanged, then track the task."""

    def create_task(self: Any, coro: Any, **kwargs: Any) -> Any:
        record = _tasks._begin(coro, self)
        if record is None:
            return original(self, coro, **kwargs)
        task = _tasks._built(record, kwargs.get("context"), lambda: original(self, coro, **kwargs))
        _tasks._register(task, record)
        return task

    create_task.__doc__ = original.__doc__
    return create_task


def close_wrapper(original: Any) -> Any:
    """``loop.close()`` that first reports the tasks (and scopes) still open on the loop."""

    def close(self: Any) -> None:
        if (
            _tasks._tracker is not None
            and _tasks.PART.enabled
            and not self.is_running()
            and not self.is_closed()
        ):
            try:
                _loop_closing(self)
            except Exception as error:
                _tasks.PART.fail(error)
        original(self)

    close.__doc__ = original.__doc__
    return close


def _loop_closing(loop: Any) -> None:
    tracker = _tasks._tracker
    if tracker is not None:
        tracker.loop_closing(asyncio.all_tasks(loop))
    scopes = _scope_state.tracker
    if scopes is not None and not isinstance(loop, asyncio.base_events.BaseEventLoop):
        scopes.close_loop(loop)  # BaseEventLoop's own close hook (loop_hooks) does it otherwise


def patch_uvloop(module: ModuleType) -> None:
    """Give uvloop's loop class the same ``create_task`` and ``close`` treatment."""
    loop_class = getattr(module, "Loop", None)
    if _tasks._tracker is None or loop_class is None or "create_task" in loop_class.__dict__:
        return
    # uvloop's own signature (name, context, and further keywords passed on), on every Python
    _patches.patch(loop_class, "create_task", generic_create_task)
    _patches.patch(loop_class, "close", close_wrapper)
