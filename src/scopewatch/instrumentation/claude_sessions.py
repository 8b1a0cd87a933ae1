"""Claude Agent SDK sessions: `ClaudeSDKClient` from `connect()` to `disconnect()`.

``async with ClaudeSDKClient()`` calls both, so it is covered too; the ``async with`` body's
exception (passed to ``__aexit__``) decides the outcome. The span is not made current: connect
and disconnect are separate calls, not one lexical block. Patched when ``claude_agent_sdk`` is
imported (a post-import hook, inert after ``uninstall()``).
"""

from __future__ import annotations

import contextvars
import sys
from typing import TYPE_CHECKING, Any

from scopewatch import semconv
from scopewatch.instrumentation import _session_wrappers as wrappers
from scopewatch.instrumentation._patching import Patches, hide_own_frame, when_imported
from scopewatch.telemetry import sessions as telemetry

if TYPE_CHECKING:
    from types import ModuleType

    from scopewatch._runtime import Runtime

MODULE = "claude_agent_sdk.client"
KIND = semconv.SESSION_KIND_CLAUDE_SDK_CLIENT

_active = False
_patches = Patches()
_connecting: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "scopewatch_claude_connecting", default=None
)


def install(runtime: Runtime) -> None:
    """Patch ``claude_agent_sdk`` now, or when it is imported."""
    global _active
    del runtime  # the feature's telemetry is started first (``telemetry.sessions.start``)
    _active = True
    when_imported(MODULE, _on_import)


def uninstall() -> None:
    """Restore the originals; the import hook becomes inert."""
    global _active
    _active = False
    _patches.restore()


def _on_import(module: ModuleType) -> None:
    if not _active or _patches:
        return
    try:
        cls = module.ClaudeSDKClient
        _patches.patch(cls, "connect", _connect)
        _patches.patch(cls, "disconnect", _disconnect)
        _patches.patch(cls, "__aexit__", _aexit)
    except Exception as error:
        telemetry.PART.fail(error)


def _connect(original: Any) -> Any:
    async def connect(self: Any, *args: Any, **kwargs: Any) -> Any:
        record = wrappers.open_session(self, KIND, False, _user_frame())
        if record is None:
            try:
                return await original(self, *args, **kwargs)
            except BaseException as raised:
                hide_own_frame(raised)
                raise
        token = _connecting.set(self)
        try:
            result = await original(self, *args, **kwargs)
        except BaseException as raised:
            _connecting.reset(token)
            wrappers.close_session(self, raised, sys._getframe(0))
            hide_own_frame(raised)
            raise
        _connecting.reset(token)
        return result

    connect.__wrapped__ = original  # type: ignore[attr-defined]
    return connect


def _disconnect(original: Any) -> Any:
    async def disconnect(self: Any, *args: Any, **kwargs: Any) -> Any:
        record = wrappers.records.get(self)
        if record is None or _connecting.get() is self:  # a failed connect cleans up
            try:
                return await original(self, *args, **kwargs)
            except BaseException as raised:
                hide_own_frame(raised)
                raise
        frame = _user_frame()
        try:
            result = await original(self, *args, **kwargs)
        except BaseException as raised:
            wrappers.close_session(self, raised, frame)
            hide_own_frame(raised)
            raise
        wrappers.close_session(self, record.exit_error, frame)
        return result

    disconnect.__wrapped__ = original  # type: ignore[attr-defined]
    return disconnect


def _aexit(original: Any) -> Any:
    async def __aexit__(self: Any, exc_type: Any, exc: Any, tb: Any) -> Any:
        record = wrappers.records.get(self)
        if record is not None:
            record.exit_error = exc
        try:
            return await original(self, exc_type, exc, tb)
        except BaseException as raised:
            hide_own_frame(raised)
            raise

    __aexit__.__wrapped__ = original  # type: ignore[attr-defined]
    return __aexit__


def _user_frame() -> Any:
    return sys._getframe(2)
