"""Instrumentation keeps nothing alive that the application dropped (found by anyio's own suite).

anyio's tests assert that an exception leaving a task group, or a context variable's old value,
has no referrers; under scopewatch two did: the task-name lookup left a snapshot of anyio's
``_run_coro`` frame locals (3.10-3.12), and the scope tracker's done callback held a copy of the
task's context.
"""

from __future__ import annotations

import gc
import sys
import types
from contextvars import ContextVar

import anyio

from scopewatch._core import frames

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup


class _Done(Exception):
    pass


class _Value:
    pass


def referrers(obj: object) -> list[object]:
    """Who refers to ``obj``, besides the test's own frames and coroutine (the locals)."""
    own = (types.FrameType, types.CoroutineType)
    return [ref for ref in gc.get_referrers(obj) if not isinstance(ref, own)]


def test_exception_out_of_a_nested_task_group_has_no_referrers(instrument):
    instrument(spans="all")

    async def main() -> None:
        inner = anyio.create_task_group()

        async def child() -> None:
            async with inner:
                raise _Done

        try:
            async with anyio.create_task_group() as outer:
                outer.start_soon(child)
        except BaseExceptionGroup as group:
            exc = group.exceptions[0].exceptions[0]
        assert isinstance(exc, _Done)
        assert referrers(exc) == []

    anyio.run(main)


def test_old_context_variable_value_is_not_kept_by_a_scope(instrument):
    instrument(spans="all")
    variable: ContextVar[_Value] = ContextVar("variable")

    async def main() -> None:
        old = _Value()
        variable.set(old)
        with anyio.CancelScope():
            await anyio.lowlevel.checkpoint()
        variable.set(_Value())
        gc.collect()
        assert referrers(old) == []

    anyio.run(main)


def test_reading_a_local_sees_the_current_value_and_keeps_the_local():
    def function() -> tuple[object, object, int]:
        value = 1
        first = frames.local_of(sys._getframe(), "value")
        value = 2
        return first, frames.local_of(sys._getframe(), "value"), value

    assert function() == (1, 2, 2)


def test_reading_a_class_body_local_leaves_the_namespace_alone():
    seen = {}

    class Probe:
        marker = "kept"
        seen["marker"] = frames.local_of(sys._getframe(), "marker")

    assert seen == {"marker": "kept"}
    assert Probe.marker == "kept"
