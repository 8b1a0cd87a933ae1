"""The rarer ``create_task`` paths and ``loop.close()``, split out of :mod:`.tasks`.

uvloop's loop class (not a ``BaseEventLoop``) and Pythons whose ``create_task`` signature is
not known yet get a ``create_task`` built from :mod:`.tasks`' pieces; ``loop.close()`` is
observed to report the tasks and scopes still open on that loop. The state (tracker, safety
part) is :mod:`.tasks`' own, read at call time.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from scopewatch.instrumentation import _scope_state
from scopewatch.instrumentation import tasks as _tasks

if TYPE_CHECKING:
    from types import ModuleType


def generic_create_task(original: Any) -> Any:
    """``create_task`` of a loop class that is not a ``BaseEventLoop`` (uvloop)."""

    def create_task(self: Any, coro: Any, *, name: Any = None, context: Any = None) -> Any:
        if self.get_task_factory() is not None or self.is_closed():
            return _tasks._through(original, self, coro, name, context)
        record = _tasks._begin(coro, self)
        if record is None:
            return _tasks._call(original, self, coro, name, context)
        task = _tasks._built(record, context, lambda: _tasks._new_task(self, coro, name, context))
        _tasks._register(task, record)
        return task

    create_task.__doc__ = original.__doc__
    return create_task


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
        tracker.loop_closing(loop)
    scopes = _scope_state.tracker
    if scopes is not None and not isinstance(loop, asyncio.base_events.BaseEventLoop):
        scopes.close_loop(loop)  # BaseEventLoop's own close hook (loop_hooks) does it otherwise


def patch_uvloop(module: ModuleType) -> None:
    """Give uvloop's loop class the same ``create_task`` and ``close`` treatment."""
    loop_class = getattr(module, "Loop", None)
    if _tasks._tracker is None or loop_class is None or "create_task" in loop_class.__dict__:
        return
    wrap = generic_create_task if _tasks.KNOWN_CREATE_TASK else wrapping_create_task
    _tasks._patch(loop_class, "create_task", wrap(loop_class.create_task))
    _tasks._patch(loop_class, "close", close_wrapper(loop_class.close))
