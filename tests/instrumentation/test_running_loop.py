"""``_running_loop``: the same answers as asyncio's own lookups, without its system call."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from typing import Any

import pytest

from scopewatch.instrumentation import _running_loop

get_running = asyncio.events._get_running_loop


def test_none_outside_a_loop() -> None:
    assert _running_loop.running_loop() is None
    assert _running_loop.current_task_function()() is None


def test_the_running_loop_and_task_in_successive_loops() -> None:
    current_task = _running_loop.current_task_function()
    seen: list[tuple[Any, Any, Any, Any]] = []

    async def main() -> None:
        seen.append(
            (_running_loop.running_loop(), get_running(), current_task(), asyncio.current_task())
        )

    for _ in range(3):  # a new loop each time, in the same thread
        asyncio.run(main())
        assert _running_loop.running_loop() is None  # the finished loop is not taken for running
    for mine, asyncio_loop, my_task, asyncio_task in seen:
        assert mine is asyncio_loop
        assert my_task is asyncio_task
    assert len({id(loop) for loop, *_ in seen}) == 3


def test_a_loop_callback_outside_any_task() -> None:
    current_task = _running_loop.current_task_function()
    seen: list[tuple[Any, Any]] = []
    loop = asyncio.new_event_loop()
    try:
        loop.call_soon(lambda: seen.append((_running_loop.running_loop(), current_task())))
        loop.call_soon(loop.stop)
        loop.run_forever()
    finally:
        loop.close()
    assert seen == [(loop, None)]


def test_each_thread_sees_its_own_loop() -> None:
    current_task = _running_loop.current_task_function()
    barrier = threading.Barrier(2)
    seen: dict[str, tuple[Any, Any, Any, Any]] = {}

    async def main(name: str) -> None:
        await asyncio.get_running_loop().run_in_executor(None, barrier.wait)
        seen[name] = (
            _running_loop.running_loop(),
            get_running(),
            current_task(),
            asyncio.current_task(),
        )

    threads = [threading.Thread(target=asyncio.run, args=(main(name),)) for name in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen["a"][0] is not seen["b"][0]
    for mine, asyncio_loop, my_task, asyncio_task in seen.values():
        assert mine is asyncio_loop
        assert my_task is asyncio_task


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork() is POSIX only")
def test_a_forked_child_sees_no_running_loop() -> None:
    """As asyncio's own lookup: a loop running in the parent is not the child's."""

    async def main() -> int:
        assert _running_loop.running_loop() is asyncio.get_running_loop()
        pid = os.fork()
        if pid == 0:  # the child: report and leave at once, without running anything else
            same = _running_loop.running_loop() is get_running()
            os._exit(0 if same else 1)
        _, status = os.waitpid(pid, 0)
        return status

    assert os.waitstatus_to_exitcode(asyncio.run(main())) == 0


def test_the_c_lookup_is_used_where_it_is_cheap() -> None:
    if sys.version_info >= (3, 12):
        assert _running_loop.running_loop is get_running
    else:
        assert _running_loop.running_loop is not get_running
