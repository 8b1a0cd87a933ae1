"""pytest plugin: fail tests that commit cancel-scope violations (inactive until asked).

Turn it on with ``pytest --scopewatch`` (``--scopewatch=warn`` only warns) or the ini option
``scopewatch = true`` / ``fail`` / ``warn``. While it is off, this module only registers the
option and the ``scopewatch_allow`` marker: nothing is imported, patched or instrumented.

When on, the session is instrumented with private SDK providers (the global providers are not
touched) and every violation is attributed to the test during which it happened; a test with a
violation fails with the explanation (kind, cause, both tasks and locations, the async
generator, the fix). ``@pytest.mark.scopewatch_allow("cross_task_exit")`` allows expected ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

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
MARKER = "scopewatch_allow"
PLUGIN_NAME = "scopewatch-watch"


class ScopewatchViolationWarning(UserWarning):
    """A violation happened during a test run with ``--scopewatch=warn``."""


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--scopewatch[=fail|warn|off]`` and the ``scopewatch`` ini option."""
    group = parser.getgroup("scopewatch", "cancel-scope violations (scopewatch)")
    group.addoption(
        "--scopewatch",
        dest="scopewatch",
        nargs="?",
        const="fail",
        default=None,
        type=_parse_mode,
        metavar="fail|warn|off",
        help="instrument the session and fail (or only warn about) tests that commit "
        "cancel-scope violations; write --scopewatch=warn, or put a bare --scopewatch after "
        "the test paths",
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


def _parse_mode(value: str) -> str:
    mode = value.strip().lower()
    if mode in MODES:
        return mode
    import argparse

    raise argparse.ArgumentTypeError(
        f"{value!r} is not accepted; use --scopewatch=fail, --scopewatch=warn or "
        "--scopewatch=off (a bare --scopewatch must come after the test paths)"
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
