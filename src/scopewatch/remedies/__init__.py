"""Remedies: small helpers that remove the root causes of cancel-scope violations.

Each one makes the fix a one-line change where the violation report points:

* a client (or any async context manager) entered in one task and closed in another
  (``other_task``): :func:`hold_in_task` / :class:`OwnedContext` run its whole lifetime in a
  dedicated owner task, so ``await owned.aclose()`` works from any task::

      owned = await hold_in_task(client)   # not: await stack.enter_async_context(client)

* an async generator abandoned by ``break``, an exception or a cancellation and closed later by
  the event loop in another task (``asyncgen_finalizer``, ``asyncgen_shutdown``):
  :func:`safe_aiter` closes it in the consuming task, with a bounded close time::

      async with safe_aiter(ticks(), close_timeout=5) as it:
          async for tick in it: ...

* each step of an async generator run in a fresh task (``per_step_task``:
  ``ensure_future(anext(gen))``): :class:`OwnedGenerator` drives it from one owner task::

      stream = OwnedGenerator(ticks())           # ensure_future(anext(stream)) is safe now

:func:`safe_aiter` works for anyio code as well. :func:`anyio_hold_in_task` /
:class:`AnyioOwnedContext` and :class:`AnyioOwnedGenerator` are the owner-task remedies for anyio
code on any backend (trio included): their owner tasks run in a task group you pass.
"""

from __future__ import annotations

from scopewatch.remedies._anyio import AnyioOwnedContext as AnyioOwnedContext
from scopewatch.remedies._anyio import AnyioOwnedGenerator as AnyioOwnedGenerator
from scopewatch.remedies._anyio import anyio_hold_in_task as anyio_hold_in_task
from scopewatch.remedies._context import OwnedContext as OwnedContext
from scopewatch.remedies._context import hold_in_task as hold_in_task
from scopewatch.remedies._generators import DEFAULT_CLOSE_TIMEOUT as DEFAULT_CLOSE_TIMEOUT
from scopewatch.remedies._generators import OwnedGenerator as OwnedGenerator
from scopewatch.remedies._generators import SafeAsyncIterator as SafeAsyncIterator
from scopewatch.remedies._generators import safe_aiter as safe_aiter

__all__ = (
    "DEFAULT_CLOSE_TIMEOUT",
    "AnyioOwnedContext",
    "AnyioOwnedGenerator",
    "OwnedContext",
    "OwnedGenerator",
    "SafeAsyncIterator",
    "anyio_hold_in_task",
    "hold_in_task",
    "safe_aiter",
)
