"""What is running now, read the cheapest way: the current task and OpenTelemetry context.

Shared by the patch layer and the telemetry layer (which never imports the patch layer), so
each lookup is written once. The hot paths bind what these build once, when a wrapper or a
telemetry object is made.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from typing import TYPE_CHECKING, Any

from opentelemetry import context

if TYPE_CHECKING:
    from collections.abc import Callable


def context_reader() -> Callable[[], Any]:
    """``context.get_current``, or the ``ContextVar``'s own ``get`` when that is what it reads.

    OpenTelemetry's default runtime context keeps the current context in one ``ContextVar``
    (with the empty context as its default): its ``get`` gives the same answer without the
    API's two Python frames. Any other runtime context is asked through the API.
    """
    from opentelemetry.context import contextvars_context

    runtime_context = getattr(context, "_RUNTIME_CONTEXT", None)
    variable = getattr(runtime_context, "_current_context", None)
    if type(runtime_context) is contextvars_context.ContextVarsRuntimeContext and isinstance(
        variable, contextvars.ContextVar
    ):
        return variable.get
    return context.get_current


def safe_current_task(current: Callable[[], Any]) -> Callable[[], Any]:
    """``current()``, or ``None`` outside a task / event loop (``current`` raised)."""

    def current_task() -> Any:
        try:
            return current()
        except Exception:
            return None

    return current_task


def any_current_task() -> Any:
    """The running asyncio task, else the running trio task, else ``None``."""
    try:
        return asyncio.current_task()
    except RuntimeError:
        pass
    trio = sys.modules.get("trio")
    if trio is None:
        return None
    try:
        return trio.lowlevel.current_task()
    except RuntimeError:
        return None
