"""Features as the unit of lifecycle: start a feature once, install its modules, undo both.

A feature (``OTEL_PYTHON_SCOPEWATCH_INSTRUMENT``) builds its tracker or telemetry once, puts it
on the :class:`~scopewatch._runtime.Runtime` or in its owner's module globals (which the
wrappers read), and only then installs its target modules (``FEATURE_MODULES``, in order). On
uninstrument the modules come off in reverse order and the feature stops once. There are no
reference counts: this module is the only caller of each ``start`` and ``stop``.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from scopewatch.instrumentation import FEATURE_MODULES, _scope_state, tasks
from scopewatch.telemetry import locks, sessions

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

    from scopewatch._runtime import Runtime

_logger = logging.getLogger("scopewatch")

_LIFECYCLES: dict[str, tuple[Callable[[Runtime], None], Callable[[], None]]] = {
    "scopes": (_scope_state.start, _scope_state.stop),
    "tasks": (tasks.start, tasks.stop),
    "locks": (locks.start, locks.stop),
    "sessions": (sessions.start, sessions.stop),
}
"""Feature -> ``(start, stop)`` of the state its modules share."""


def _nothing_to_start(runtime: Runtime) -> None:
    del runtime


def _nothing_to_stop() -> None:
    pass


@dataclass
class Installed:
    """A started feature and those of its modules that installed."""

    name: str
    stop: Callable[[], None]
    modules: list[ModuleType] = field(default_factory=list)


def install(
    name: str, runtime: Runtime, modules: tuple[str, ...] | None = None
) -> Installed | None:
    """Start feature ``name`` and install its modules; ``None`` if it could not start.

    ``modules`` defaults to the feature's ``FEATURE_MODULES``; a module that fails to install
    is logged and left out, its siblings still install.
    """
    start, stop = _LIFECYCLES.get(name, (_nothing_to_start, _nothing_to_stop))
    try:
        start(runtime)
    except Exception:
        _logger.exception("scopewatch: the %s feature could not be started and stays off", name)
        return None
    installed = Installed(name, stop)
    for module_name in FEATURE_MODULES.get(name, ()) if modules is None else modules:
        try:
            module = importlib.import_module(module_name)
            module.install(runtime)
        except Exception:
            _logger.exception("scopewatch: %s could not be installed and stays off", module_name)
            continue
        installed.modules.append(module)
    return installed


def uninstall(installed: Installed) -> None:
    """Uninstall the feature's modules in reverse order, then stop the feature."""
    for module in reversed(installed.modules):
        try:
            module.uninstall()
        except Exception:
            _logger.exception("scopewatch: %s could not be uninstalled", module.__name__)
    try:
        installed.stop()
    except Exception:
        _logger.exception("scopewatch: the %s feature could not be stopped", installed.name)
