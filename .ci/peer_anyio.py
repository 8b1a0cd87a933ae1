"""Run anyio's own test suite plain and with scopewatch instrumented; the outcomes must match.

The suite comes from the sdist of the anyio installed next to this interpreter (downloaded once
into ``.compat/peer-anyio/``). A virtual environment there gets the project, that anyio (with
its ``trio`` extra) and anyio's test dependencies (the sdist's ``test`` dependency group or
extra), constrained to the versions installed here; it is reused while its requirements are
unchanged. The suite runs twice with ``peer_plugin.py`` recording each test's outcome; the
second run instruments with ``ScopeWatchInstrumentor`` in span mode ``all`` on the real SDK.
Differing tests are rerun both ways (``--retries``); a test counts as a difference only when
the two modes never produced the same outcome. An error scopewatch logs (a part of it failed and
switched itself off, leaving the rest of the run less instrumented) fails too. Violations
scopewatch saw are reported (anyio's suite misuses scopes on purpose in places), not judged.
Exits non-zero on any difference or error.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import time
from collections import Counter
from importlib.metadata import distributions, version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peer_outcomes

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
WORK = ROOT / ".compat" / "peer-anyio"
BACKENDS = "asyncio,asyncio+uvloop,asyncio+eager,trio"
"""Every backend anyio's suite parametrises (``asyncio+eager`` exists on Python 3.12+ only)."""


def fetch_suite(anyio_version: str) -> Path:
    """The extracted sdist of ``anyio_version`` (downloaded and unpacked once)."""
    source = WORK / f"anyio-{anyio_version}"
    if (source / "tests").is_dir():
        return source
    archive = WORK / f"anyio-{anyio_version}.tar.gz"
    if not archive.exists():
        download = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
        _run_checked(
            [*download, "--no-binary", ":all:", f"anyio=={anyio_version}", "-d", str(WORK)]
        )
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(WORK, filter="data")
        else:  # pragma: no cover - Pythons without extraction filters
            tar.extractall(WORK)
    return source


def test_requirements(source: Path) -> list[str]:
    """Read anyio's test dependencies: the ``test`` dependency group, else the ``test`` extra."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: pip's vendored copy of the same parser
        from pip._vendor import tomli as tomllib
    project = tomllib.loads((source / "pyproject.toml").read_text())
    group = project.get("dependency-groups", {}).get("test")
    if group is None:
        group = project.get("project", {}).get("optional-dependencies", {}).get("test", [])
    return [" ".join(item.split()) for item in group if isinstance(item, str)]


def prepare_venv(anyio_version: str, source: Path) -> Path:
    """The peer venv's python; (re)installs only when the requirements changed."""
    tag = f"py{sys.version_info[0]}.{sys.version_info[1]}"
    venv = WORK / f"venv-anyio-{anyio_version}-{tag}"
    python = venv / "bin" / "python"
    requirements = [f"-e{ROOT}[sdk]", f"anyio[trio]=={anyio_version}", *test_requirements(source)]
    installed = {dist.metadata["Name"]: dist.version for dist in distributions()}
    constraints = sorted(
        f"{name}=={installed[name]}"
        for name in installed
        if name and name.lower() not in {"scopewatch", "pip"}
    )
    wanted = "\n".join([*requirements, "--", *constraints]) + "\n"
    stamp = venv / ".peer-requirements"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    if not python.exists():
        _run_checked([sys.executable, "-m", "venv", str(venv)])
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    _run_checked([*pip, "--upgrade", "pip"])
    constraints_file = venv / "constraints.txt"
    constraints_file.write_text("\n".join(constraints) + "\n")
    _run_checked([*pip, "--constraint", str(constraints_file), *requirements])
    stamp.write_text(wanted)
    return python


def run_suite(
    python: Path, source: Path, name: str, instrument: bool, backends: str, tests: list[str]
) -> dict[str, object]:
    """One pytest run of anyio's suite; returns the results file's content."""
    results = WORK / f"{name}.json"
    log = WORK / f"{name}.log"
    results.unlink(missing_ok=True)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OTEL_", "SCOPEWATCH_", "PYTEST_"))
    }
    env.update(
        PYTHONPATH=str(HERE),
        SCOPEWATCH_PEER_RESULTS=str(results),
        SCOPEWATCH_PEER_BACKENDS=backends,
        SCOPEWATCH_PEER_INSTRUMENT="1" if instrument else "0",
    )
    arguments = WORK / f"{name}.args"  # node ids can be many: pytest reads them from @file
    arguments.write_text("\n".join(tests or ["tests"]) + "\n")
    command = [str(python), "-m", "pytest", "-p", "peer_plugin", "-p", "no:cacheprovider"]
    started = time.monotonic()
    with log.open("w") as output:
        subprocess.run(
            [*command, f"@{arguments}"],
            cwd=source,
            env=env,
            stdout=output,
            stderr=output,
            check=False,
        )
    seconds = time.monotonic() - started
    if not results.exists():
        sys.exit(f"peer-anyio: {name} wrote no results; see {log}")
    tail = log.read_text().rstrip().splitlines()[-1:] or ["(no output)"]
    print(f"  {name:<24} {seconds / 60:5.1f} min  {tail[0].strip('= ')}", flush=True)
    return peer_outcomes.load(results)


def compare(python: Path, source: Path, backends: str, retries: int) -> tuple[dict, dict, list]:
    """Run both ways, retry differing tests; returns (plain, instrumented, real differences)."""
    plain = run_suite(python, source, "plain", False, backends, [])
    instrumented = run_suite(python, source, "instrumented", True, backends, [])
    differing = peer_outcomes.differences(plain["outcomes"], instrumented["outcomes"])
    if not differing:
        return plain, instrumented, []
    history_plain = {nodeid: [pair[0]] for nodeid, pair in differing.items()}
    history_instrumented = {nodeid: [pair[1]] for nodeid, pair in differing.items()}
    print(f"  {len(differing)} tests differ; rerunning them both ways {retries}x", flush=True)
    for attempt in range(1, retries + 1):
        nodeids = sorted(differing)
        for mode, history in (("plain", history_plain), ("instrumented", history_instrumented)):
            rerun = run_suite(
                python, source, f"retry{attempt}-{mode}", mode != "plain", backends, nodeids
            )
            for nodeid in nodeids:
                history[nodeid].append(rerun["outcomes"].get(nodeid, peer_outcomes.MISSING))
    real, flaky = peer_outcomes.settle(history_plain, history_instrumented)
    rows = [
        (
            nodeid,
            "flaky" if nodeid in flaky else "DIFFERS",
            " ".join(history_plain[nodeid]),
            " ".join(history_instrumented[nodeid]),
        )
        for nodeid in sorted(differing)
    ]
    print("\nretried (outcomes of every attempt):")
    print(peer_outcomes.table(["node id", "verdict", "plain", "instrumented"], rows))
    return plain, instrumented, real


def summarise(anyio_version: str, plain: dict, instrumented: dict, real: list[str]) -> None:
    """Print the figures: outcome counts per backend both ways, differences, violations."""
    print(f"\npeer-anyio summary: anyio {anyio_version}, Python {sys.version.split()[0]}")
    counts_plain = peer_outcomes.tally(plain["outcomes"], plain["backends"])
    counts_instr = peer_outcomes.tally(instrumented["outcomes"], instrumented["backends"])
    rows = []
    for backend in sorted(counts_plain.keys() | counts_instr.keys(), key=_backend_order):
        both = (counts_plain.get(backend, Counter()), counts_instr.get(backend, Counter()))
        rows.append(
            [backend, sum(both[0].values())]
            + [f"{both[0][outcome]}/{both[1][outcome]}" for outcome in peer_outcomes.OUTCOMES]
        )
    headers = ["backend", "tests", *(f"{outcome} p/i" for outcome in peer_outcomes.OUTCOMES)]
    print(peer_outcomes.table(headers, rows))
    print(
        f"deselected (other backends): {plain['deselected']}; wall time plain "
        f"{plain['seconds'] / 60:.1f} min, instrumented {instrumented['seconds'] / 60:.1f} min"
    )
    violations = Counter(instrumented["violations"])
    print(
        f"instrumented run: {instrumented['spans']} spans, {sum(violations.values())} "
        f"violations in {len(instrumented['violations_by_test'])} tests"
    )
    if violations:
        print(peer_outcomes.table(["kind/cause", "count"], violations.most_common()))
    for line in Counter(instrumented["scopewatch_log"]).most_common(10):
        print(f"  scopewatch log x{line[1]}: {line[0]}")
    print(
        f"scopewatch errors (a part failed and switched itself off): {len(errors_of(instrumented))}"
    )
    for line in errors_of(instrumented):
        print(f"  ERROR {line}")
    print(f"differences: {len(real)}")
    for nodeid in real:
        print(f"  DIFFERS {nodeid}")


def errors_of(results: dict) -> list[str]:
    """Errors scopewatch logged during a run: each is a failure of compat."""
    return list(results.get("scopewatch_errors", []))


def _backend_order(label: str) -> tuple[int, str]:
    return ({"all": 2, peer_outcomes.NO_BACKEND: 1}.get(label, 0), label)


def _run_checked(command: list[str]) -> None:
    subprocess.run(command, check=True)


def main() -> int:
    """Parse options, run, compare, summarise."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default=BACKENDS, help=f"default: {BACKENDS}")
    parser.add_argument("--retries", type=int, default=2, help="reruns of differing tests")
    arguments = parser.parse_args()
    started = time.monotonic()
    WORK.mkdir(parents=True, exist_ok=True)
    anyio_version = version("anyio")
    source = fetch_suite(anyio_version)
    python = prepare_venv(anyio_version, source)
    print(f"peer-anyio: anyio {anyio_version} suite, backends {arguments.backends}", flush=True)
    plain, instrumented, real = compare(python, source, arguments.backends, arguments.retries)
    summarise(anyio_version, plain, instrumented, real)
    print(f"peer-anyio wall time: {(time.monotonic() - started) / 60:.1f} min", flush=True)
    return 1 if real or errors_of(instrumented) else 0


if __name__ == "__main__":
    sys.exit(main())
