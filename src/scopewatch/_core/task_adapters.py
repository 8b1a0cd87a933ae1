"""What the scope tracker needs to know about a task, for asyncio tasks and trio tasks.

The tracker holds tasks opaquely; an adapter, chosen by the task's type, reads a task's name,
tells when it is done, which event loop / trio run it belongs to, and whether it is closing
an abandoned async generator on the runtime's behalf. Pure: no patching, no trio import.
"""

from __future__ import annotations

import contextvars
import inspect
import os
from typing import TYPE_CHECKING, Any, Protocol

from scopewatch import semconv
from scopewatch._core import asyncgens

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType

    from scopewatch._core.records import ScopeRecord

_ACLOSE_TYPE = "async_generator_athrow"
_WALK_LIMIT = 64


class TaskAdapter(Protocol):
    """How to read one kind of task."""

    runner_ended: str
    """How the runtime ends, for explanations (``the event loop closed``)."""

    def name(self, task: Any) -> str:
        """The task's name."""

    def watch(self, task: Any, on_done: Callable[[Any], object]) -> None:
        """Call ``on_done(task)`` when ``task`` finishes (or let an instrument report it)."""

    def done(self, task: Any) -> bool:
        """Whether ``task`` has finished."""

    def runner(self, task: Any) -> Any:
        """The event loop / trio run ``task`` belongs to (compared by identity)."""

    def aclose_cause(self, task: Any, record: ScopeRecord, frame: FrameType | None) -> str:
        """The cause when ``task`` runs an async generator's ``aclose()`` (``""`` otherwise)."""


class AsyncioTasks:
    """``asyncio.Task`` (and look-alikes such as uvloop's)."""

    runner_ended = "the event loop closed"

    def name(self, task: Any) -> str:
        """``task.get_name()``."""
        return str(task.get_name())

    def watch(self, task: Any, on_done: Callable[[Any], object]) -> None:
        """``task.add_done_callback`` in a new empty context.

        A copy of the task's context (the default) would keep its context variables' values
        alive until the task ends; one shared context cannot run callbacks in two threads.
        """
        task.add_done_callback(on_done, context=contextvars.Context())

    def done(self, task: Any) -> bool:
        """``task.done()``."""
        return bool(task.done())

    def runner(self, task: Any) -> Any:
        """``task.get_loop()``."""
        get_loop = getattr(task, "get_loop", None)
        return get_loop() if get_loop is not None else None

    def aclose_cause(self, task: Any, record: ScopeRecord, frame: FrameType | None) -> str:
        """An ``aclose()`` task: from the loop's finalizer, its shutdown, or the program."""
        get_coro = getattr(task, "get_coro", None)
        coro = get_coro() if get_coro is not None else None
        if type(coro).__name__ != _ACLOSE_TYPE:
            return ""
        loop = self.runner(task)
        if getattr(loop, "_asyncgens_shutdown_called", False):
            return semconv.CAUSE_ASYNCGEN_SHUTDOWN
        if asyncgens.closed_by_finalizer(record.asyncgen_frame) or asyncgens.finalizing(frame):
            return semconv.CAUSE_ASYNCGEN_FINALIZER
        return semconv.CAUSE_OTHER_TASK  # the program ran aclose() itself in another task


def _is_trio_asyncgens(code: Any, name: str) -> bool:
    filename: str = code.co_filename
    return code.co_name == name and filename.replace(os.sep, "/").endswith(
        "trio/_core/_asyncgens.py"
    )


class TrioTasks:
    """``trio.lowlevel.Task``; its end is reported by a ``trio.abc.Instrument``."""

    runner_ended = "the trio run ended"

    def name(self, task: Any) -> str:
        """``task.name``."""
        return str(task.name)

    def watch(self, task: Any, on_done: Callable[[Any], object]) -> None:
        """Nothing: the scope instrument's ``task_exited`` reports every task's end."""
        del task, on_done

    def done(self, task: Any) -> bool:
        """Whether the task's coroutine has finished."""
        coro = getattr(task, "coro", None)
        return coro is None or bool(inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED)

    def runner(self, task: Any) -> Any:
        """The run's root task, found through the public ``parent_nursery`` links."""
        for _ in range(10_000):
            nursery = task.parent_nursery
            if nursery is None:
                return task
            task = nursery.parent_task
        return None

    def aclose_cause(self, task: Any, record: ScopeRecord, frame: FrameType | None) -> str:
        """Trio's own finalizer: a system task or, at run end, the init task closes the generator.

        Trio (not the asyncio loop hook) finalizes a garbage-collected generator in a system
        task running ``AsyncGenerators._finalize_one``; at the end of the run
        ``finalize_remaining`` calls the same coroutine from the init task.
        """
        del task, record
        finalizing = False
        for _ in range(_WALK_LIMIT):
            if frame is None:
                break
            code = frame.f_code
            if _is_trio_asyncgens(code, "finalize_remaining"):
                return semconv.CAUSE_ASYNCGEN_SHUTDOWN
            if _is_trio_asyncgens(code, "_finalize_one"):
                finalizing = True
            frame = frame.f_back
        return semconv.CAUSE_ASYNCGEN_FINALIZER if finalizing else ""


ASYNCIO = AsyncioTasks()
TRIO = TrioTasks()
_by_type: dict[type, TaskAdapter] = {}


def register(task_type: type, adapter: TaskAdapter) -> None:
    """Read tasks of ``task_type`` (exactly) with ``adapter``; others are asyncio tasks."""
    _by_type[task_type] = adapter


def adapter_of(task: Any) -> TaskAdapter:
    """The adapter for ``task`` (asyncio's unless its type was registered)."""
    return _by_type.get(type(task), ASYNCIO)


def task_name(task: Any) -> str:
    """The name of ``task``, ``""`` for ``None``."""
    return "" if task is None else adapter_of(task).name(task)
