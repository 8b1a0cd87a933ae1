"""pytest plugin: fail tests that commit cancel-scope violations (inactive until asked).

Turn it on with ``pytest --scopewatch`` (``--scopewatch=warn`` only warns) or the ini option
``scopewatch = true`` / ``fail`` / ``warn``. A path right after a bare ``--scopewatch``
(``pytest --scopewatch tests/``) is a test path, never a mode. While it is off, this module
only registers the option and the ``scopewatch_allow`` marker: nothing is imported, patched or
instrumented.

When on, the session is instrumented with private SDK providers (the global providers are not
touched) and every violation is attributed to the test during which it happened; a test with a
violation fails with the explanation (kind, cause, both tasks and locations, the async
generator, the fix). ``@pytest.mark.scopewatch_allow("cross_task_exit")`` allows expected ones.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

from scopewatch._pytest_names import MARKER, ScopewatchViolationWarning

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pytest

__all__ = ["MARKER", "MODES", "PLUGIN_NAME", "ScopewatchViolationWarning"]

MODES = ("fail", "warn", "off")
"""Values of ``--scopewatch``."""
_INI_VALUES = {
    "": "off",
    "false": "off",
    "off": "off",
    "no": "off",
    "0": "off",
    "true": "fail",
    "fail": "fail",
    "yes": "fail",
    "1": "fail",
    "warn": "warn",
}
PLUGIN_NAME = "scopewatch-watch"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--scopewatch[=fail|warn|off]`` and the ``scopewatch`` ini option."""
    group = parser.getgroup("scopewatch", "cancel-scope violations (scopewatch)")
    group.addoption(
        "--scopewatch",
        dest="scopewatch",
        nargs="?",
        const="fail",
        default=None,
        action=_ModeOrPath,
        metavar="fail|warn|off",
        help="instrument the session and fail (or only warn about) tests that commit "
        "cancel-scope violations (--scopewatch=warn only warns); a path right after a bare "
        "--scopewatch is a test path",
    )
    parser.addini(
        "scopewatch",
        "scopewatch violation checking: true/fail, warn or false (default false)",
        default="false",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker; start watching when asked to."""
    config.addinivalue_line(
        "markers",
        f"{MARKER}(*kinds): allow these scopewatch violation kinds or causes in this test "
        "(no argument: allow every violation)",
    )
    mode = _mode(config)
    if mode == "off":
        return
    from scopewatch._pytest_watch import ViolationWatch

    watch = ViolationWatch(mode)
    config.pluginmanager.register(watch, PLUGIN_NAME)
    watch.start()


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop watching (restores every patched original)."""
    watch = config.pluginmanager.get_plugin(PLUGIN_NAME)
    if watch is not None:
        config.pluginmanager.unregister(watch, PLUGIN_NAME)
        watch.stop()


class _ModeOrPath(argparse.Action):
    """``--scopewatch [MODE]``: a value that is not a mode but a path goes back to the paths."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        if not isinstance(values, str):
            setattr(namespace, self.dest, self.const)
            return
        mode = values.strip().lower()
        if mode in MODES:
            setattr(namespace, self.dest, mode)
            return
        if not _looks_like_path(values):
            raise argparse.ArgumentError(
                self,
                f"{values!r} is not accepted; use --scopewatch=fail, --scopewatch=warn or "
                "--scopewatch=off (a value that is not one of these must be an existing test "
                "path)",
            )
        setattr(namespace, self.dest, self.const)
        # argparse's own channel for arguments an action hands back (its subparsers use it):
        # they end up with the unrecognised arguments, which pytest adds to the test paths.
        vars(namespace).setdefault(_UNRECOGNIZED, []).append(values)


_UNRECOGNIZED = getattr(argparse, "_UNRECOGNIZED_ARGS_ATTR", "_unrecognized_args")


def _looks_like_path(value: str) -> bool:
    if os.path.exists(value.partition("::")[0]):
        return True
    return (
        "/" in value
        or os.sep in value
        or "::" in value
        or value.endswith(".py")
        or value.startswith(".")
    )


def _mode(config: pytest.Config) -> str:
    option = config.getoption("scopewatch")
    if option is not None:
        return str(option)
    raw = config.getini("scopewatch")
    value = str(raw).strip().lower()
    mode = _INI_VALUES.get(value)
    if mode is None:
        import pytest

        raise pytest.UsageError(
            f"ini option scopewatch: {raw!r} is not accepted; use true, fail, warn or false"
        )
    return mode
