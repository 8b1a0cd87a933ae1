"""The running asyncio loop and task without a system call per lookup (3.10, 3.11).

On 3.10 and 3.11 the C ``asyncio._get_running_loop()`` calls ``getpid()`` on every call, to
hide a parent's loop from a forked child: a system call of some 250-450 ns, more than a whole
uncontended ``asyncio.Lock`` acquisition, and invisible to instruction counts. There,
:func:`running_loop` remembers the loop each thread last found running and asks the C function
again only when that loop is no longer running in the calling thread (``BaseEventLoop`` sets
``_thread_id`` for exactly the time ``run_forever`` runs, around its ``_set_running_loop``);
the memory is dropped in a forked child. From 3.12 the C function is cheap and is used as is.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from asyncio import events
from typing import TYPE_CHECKING, Any

from scopewatch._current import safe_current_task

if TYPE_CHECKING:
    from collections.abc import Callable

_LIMIT = 256
"""Threads remembered at most (a closed loop of a finished thread is kept until then)."""


def _running_loop_function() -> Callable[[], Any]:
    get_loop: Callable[[], Any] = events._get_running_loop
    if sys.version_info >= (3, 12):
        return get_loop
    get_ident = threading.get_ident
    base = asyncio.BaseEventLoop
    loops: dict[int, Any] = {}
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=loops.clear)

    def running_loop() -> Any:
        """The running loop of this thread, or ``None`` (``asyncio._get_running_loop()``)."""
        ident = get_ident()
        loop = loops.get(ident)
        if loop is not None and loop._thread_id == ident:
            return loop
        loop = get_loop()
        if isinstance(loop, base):  # other loop classes (uvloop) may not keep _thread_id
            if len(loops) >= _LIMIT:
                loops.clear()
            loops[ident] = loop
        return loop

    return running_loop


running_loop = _running_loop_function()


def current_task_function() -> Callable[[], Any]:
    """``current_task()``: the running asyncio task, or ``None`` outside a loop or a task.

    Where asyncio keeps its task table in a dict (3.10-3.13; 3.14 keeps the running task in the
    thread state) it reads that table with :func:`running_loop`, two C calls on 3.12 and 3.13,
    and carries ``table`` and ``get_loop`` for
    :func:`~scopewatch.instrumentation._patching.task_lookup`; elsewhere it is
    ``asyncio.current_task`` through :func:`~scopewatch._current.safe_current_task`.
    """
    table = getattr(asyncio.tasks, "_current_tasks", None)
    if not isinstance(table, dict) or sys.version_info >= (3, 14):
        return safe_current_task(asyncio.current_task)
    get = table.get

    def current_task() -> Any:
        return get(running_loop())

    current_task.table = table  # type: ignore[attr-defined]
    current_task.get_loop = running_loop  # type: ignore[attr-defined]
    return current_task
