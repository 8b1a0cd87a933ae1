"""The peer-suite tools of ``make compat`` (``.ci/peer_*.py``): outcome recording and comparison.

The recording plugin runs for real in a pytest subprocess on small generated test files; the
peer suite itself (anyio's) is never run here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.paths import ROOT

CI = ROOT / ".ci"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, CI / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


outcomes = _load("peer_outcomes")

GENERATED = """
import asyncio

import anyio
import pytest


def test_passes():
    pass


def test_fails():
    assert False


def test_skips():
    pytest.skip("not here")


@pytest.mark.xfail(reason="known", strict=True)
def test_xfails():
    assert False


@pytest.mark.xfail(reason="known", strict=True)
def test_strict_xpass_fails():
    pass


@pytest.mark.xfail(reason="known", strict=False)
def test_loose_xpass():
    pass


@pytest.fixture
def broken_setup():
    raise RuntimeError("setup")


@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("teardown")


def test_setup_error(broken_setup):
    pass


def test_fails_then_teardown_error(broken_teardown):
    assert False


def _uvloop_factory():
    pass


_uvloop_factory.__module__ = "uvloop"


@pytest.mark.parametrize(
    "anyio_backend",
    ["asyncio", ("asyncio", {"loop_factory": _uvloop_factory}), "trio"],
    ids=["asyncio", "asyncio+uvloop", "trio"],
)
def test_per_backend(anyio_backend):
    pass


def test_leaks_a_scope():
    async def main():
        async def opens():
            anyio.CancelScope().__enter__()  # never exited: scope_leaked

        await asyncio.create_task(opens(), name="opener")

    asyncio.run(main())
"""


def _record(tmp_path: Path, **env: str) -> dict:
    (tmp_path / "test_generated.py").write_text(GENERATED)
    results = tmp_path / "results.json"
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PYTEST_"))}
    environment.update(PYTHONPATH=str(CI), SCOPEWATCH_PEER_RESULTS=str(results), **env)
    subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "peer_plugin", "-q", "test_generated.py"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return outcomes.load(results)


def test_plugin_records_every_outcome_kind_and_backend(tmp_path):
    data = _record(tmp_path, SCOPEWATCH_PEER_BACKENDS="asyncio,trio")
    recorded = {nodeid.split("::")[1]: outcome for nodeid, outcome in data["outcomes"].items()}
    assert recorded == {
        "test_passes": "passed",
        "test_fails": "failed",
        "test_skips": "skipped",
        "test_xfails": "xfailed",
        "test_strict_xpass_fails": "failed",
        "test_loose_xpass": "xpassed",
        "test_setup_error": "error",
        "test_fails_then_teardown_error": "error",
        "test_per_backend[asyncio]": "passed",
        "test_per_backend[trio]": "passed",
        "test_leaks_a_scope": "passed",
    }
    backends = {nodeid.split("::")[1]: label for nodeid, label in data["backends"].items()}
    assert backends["test_per_backend[trio]"] == "trio"
    assert backends["test_passes"] == outcomes.NO_BACKEND
    assert data["deselected"] == 1  # asyncio+uvloop was not asked for
    assert data["instrumented"] is False
    assert data["spans"] == 0


def test_plugin_labels_uvloop_and_counts_violations_when_instrumented(tmp_path):
    data = _record(tmp_path, SCOPEWATCH_PEER_INSTRUMENT="1")
    uvloop = [nodeid for nodeid in data["outcomes"] if nodeid.endswith("[asyncio+uvloop]")]
    assert [data["backends"][nodeid] for nodeid in uvloop] == ["asyncio+uvloop"]
    assert data["instrumented"] is True
    assert data["spans"] > 0
    assert data["violations"] == {"scope_leaked/task_finished": 1}
    assert data["scopewatch_errors"] == []
    (culprit,) = data["violations_by_test"]
    assert culprit.endswith("::test_leaks_a_scope")


def test_differences_name_each_changed_or_missing_test():
    plain = {"a": "passed", "b": "failed", "c": "skipped"}
    instrumented = {"a": "passed", "b": "passed", "d": "error"}
    assert outcomes.differences(plain, instrumented) == {
        "b": ("failed", "passed"),
        "c": ("skipped", outcomes.MISSING),
        "d": (outcomes.MISSING, "error"),
    }
    assert outcomes.differences(plain, dict(plain)) == {}


def test_settle_calls_a_test_flaky_only_when_both_modes_shared_an_outcome():
    real, flaky = outcomes.settle(
        {"steady": ["passed", "passed", "passed"], "flaky": ["failed", "passed", "failed"]},
        {"steady": ["failed", "failed", "failed"], "flaky": ["passed", "failed", "failed"]},
    )
    assert (real, flaky) == (["steady"], ["flaky"])


def test_merge_keeps_the_most_severe_phase():
    assert outcomes.merge("passed", "error") == "error"
    assert outcomes.merge("failed", "error") == "error"
    assert outcomes.merge("error", None) == "error"
    assert outcomes.merge(None, "skipped") == "skipped"
    assert outcomes.merge("failed", "passed") == "failed"


def test_tally_counts_per_backend_and_overall():
    counts = outcomes.tally(
        {"t[asyncio]": "passed", "t[trio]": "failed", "u": "passed"},
        {"t[asyncio]": "asyncio", "t[trio]": "trio", "u": outcomes.NO_BACKEND},
    )
    assert counts["all"] == {"passed": 2, "failed": 1}
    assert counts["trio"] == {"failed": 1}
    assert counts[outcomes.NO_BACKEND] == {"passed": 1}


def test_results_round_trip_and_unknown_outcomes_are_refused(tmp_path):
    path = tmp_path / "r.json"
    outcomes.save(path, {"a": "passed"}, {"a": "asyncio"}, spans=3)
    assert outcomes.load(path)["spans"] == 3
    path.write_text(json.dumps({"outcomes": {"a": "exploded"}, "backends": {}}))
    with pytest.raises(ValueError, match="exploded"):
        outcomes.load(path)


def test_table_aligns_columns():
    rendered = outcomes.table(["id", "n"], [["long-name", 1], ["x", 22]])
    assert (
        rendered.splitlines()
        == textwrap.dedent(
            """\
        id         n
        ---------  --
        long-name  1
        x          22"""
        ).splitlines()
    )


compat = _load("compat")


def test_compat_tells_free_threaded_builds_apart():
    """pyenv names a free-threaded build ``3.13.1t``: it is the 3.13t target, never the 3.13 one."""
    assert compat._pyenv_matches("3.13.1t", "3.13t")
    assert compat._pyenv_matches("3.14.0", "3.14")
    assert not compat._pyenv_matches("3.13.1", "3.13t")
    assert not compat._pyenv_matches("3.13.1t", "3.13")
    assert not compat._pyenv_matches("3.1.4", "3.14")


def test_compat_reads_the_running_interpreters_version():
    """What ``make compat`` prints as this interpreter's target, run for real."""
    import sysconfig

    expected = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        expected += "t"
    assert compat._version_of(Path(sys.executable)) == expected
    assert set(compat.find_interpreters()) <= set(compat.WANTED)
