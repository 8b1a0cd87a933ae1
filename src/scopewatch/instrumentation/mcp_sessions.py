"""MCP client sessions: ``mcp.ClientSession`` and the high-level ``mcp.Client``.

``Client`` enters a ``ClientSession`` inside its own ``__aenter__``; that inner session is not
counted again (one connection, one ``session mcp.Client`` span). Patched when ``mcp`` is
imported (a post-import hook, inert after ``uninstall()``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scopewatch import semconv
from scopewatch.instrumentation import _session_wrappers as wrappers
from scopewatch.instrumentation._patching import Patches, when_imported
from scopewatch.telemetry import sessions as telemetry

if TYPE_CHECKING:
    from types import ModuleType

    from scopewatch._runtime import Runtime

SESSION_MODULE = "mcp.client.session"
CLIENT_MODULE = "mcp.client.client"

_active = False
_patches = Patches()
_patched: set[str] = set()


def install(runtime: Runtime) -> None:
    """Patch ``mcp`` now, or when it is imported."""
    global _active
    del runtime  # the feature's telemetry is started first (``telemetry.sessions.start``)
    _active = True
    for name in (SESSION_MODULE, CLIENT_MODULE):
        when_imported(name, _on_import)


def uninstall() -> None:
    """Restore the originals; the import hooks become inert."""
    global _active
    _active = False
    _patches.restore()
    _patched.clear()


def _on_import(module: ModuleType) -> None:
    if not _active or module.__name__ in _patched:
        return
    try:
        if module.__name__ == SESSION_MODULE:
            cls, kind = module.ClientSession, semconv.SESSION_KIND_MCP_CLIENT_SESSION
        else:
            cls, kind = getattr(module, "Client", None), semconv.SESSION_KIND_MCP_CLIENT
        if cls is None:
            return
        _patches.patch(cls, "__aenter__", lambda original: wrappers.make_aenter(original, kind))
        _patches.patch(cls, "__aexit__", wrappers.make_aexit)
        _patched.add(module.__name__)
    except Exception as error:
        telemetry.PART.fail(error)
