"""Features as the unit of lifecycle: each starts once before its modules, stops once after."""

from __future__ import annotations

import asyncio
import importlib
import logging
from typing import Any

import pytest

from scopewatch.instrumentation import FEATURE_MODULES, _scope_state, features
from scopewatch.instrumentation._patching import REGISTRY
from scopewatch.telemetry import locks


def _spy(monkeypatch: pytest.MonkeyPatch, calls: list[tuple[str, str]]) -> None:
    """Record every feature's start and stop, and every module's install and uninstall."""
    for name, (start, stop) in list(features._LIFECYCLES.items()):

        def spy_start(runtime: Any, name: str = name, start: Any = start) -> None:
            calls.append(("start", name))
            start(runtime)

        def spy_stop(name: str = name, stop: Any = stop) -> None:
            calls.append(("stop", name))
            stop()

        monkeypatch.setitem(features._LIFECYCLES, name, (spy_start, spy_stop))
    for modules in FEATURE_MODULES.values():
        for module_name in modules:
            module = importlib.import_module(module_name)
            install, uninstall = module.install, module.uninstall

            def spy_install(
                runtime: Any, install: Any = install, module: str = module_name
            ) -> None:
                calls.append(("install", module))
                install(runtime)

            def spy_uninstall(uninstall: Any = uninstall, module: str = module_name) -> None:
                calls.append(("uninstall", module))
                uninstall()

            monkeypatch.setattr(module, "install", spy_install)
            monkeypatch.setattr(module, "uninstall", spy_uninstall)


def test_each_feature_starts_once_before_its_modules_and_stops_once_after(
    instrument: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, str]] = []
    _spy(monkeypatch, calls)
    instrument().uninstrument()
    expected: list[tuple[str, str]] = []
    for name, modules in FEATURE_MODULES.items():
        expected += [("start", name), *(("install", module) for module in modules)]
    for name, modules in reversed(FEATURE_MODULES.items()):
        expected += [*(("uninstall", module) for module in reversed(modules)), ("stop", name)]
    assert calls == expected
    assert _scope_state.tracker is None
    assert locks.current is None
    assert len(REGISTRY) == 0


def test_a_feature_that_cannot_start_stays_off_and_the_others_work(
    instrument: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(runtime: Any) -> None:
        raise RuntimeError("scopewatch bug")

    _, stop = features._LIFECYCLES["scopes"]
    monkeypatch.setitem(features._LIFECYCLES, "scopes", (broken, stop))
    with caplog.at_level(logging.ERROR, logger="scopewatch"):
        telemetry = instrument(spans="all")
    assert "the scopes feature could not be started and stays off" in caplog.text
    assert _scope_state.tracker is None
    patched = {target.name for target in REGISTRY.targets()}
    assert "_asyncgen_finalizer_hook" not in patched  # loop_hooks, a scope module
    assert "create_task" in patched  # _task_loops

    async def main() -> None:
        async with asyncio.Lock():
            await asyncio.create_task(asyncio.sleep(0))

    asyncio.run(main())
    assert any(span.name.startswith("task") for span in telemetry.exporter.get_finished_spans())
    telemetry.uninstrument()
    assert len(REGISTRY) == 0
