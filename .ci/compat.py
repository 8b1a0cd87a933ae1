"""Run the suite on every other CPython found, on anyios before 4.14, the oldest trio.

Wanted: 3.10-3.15 and the free-threaded 3.13t/3.14t/3.15t builds. Interpreters are discovered at
run time (``pythonX.Y`` / ``pythonX.Yt`` on PATH, then pyenv's versions folder); a version not found
is listed as such, so the summary says which versions really ran.
each gets its own virtual environment under ``.compat/`` (reused when present). The whole suite
also runs on the newest anyio before 4.14 that the installed ``mcp`` accepts (pip's resolver picks
it, with ``mcp`` pinned to the installed version), and the scope suites on anyio 4.0.0, the oldest
supported. Then anyio's own test suite runs with and without scopewatch (``.ci/peer_anyio.py``).
Exits non-zero if any run fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WANTED = ("3.10", "3.11", "3.12", "3.13", "3.14", "3.15", "3.13t", "3.14t", "3.15t")
VERSION_OF = (  # "3.13" or, on a free-threaded (no-GIL) build, "3.13t"
    "import sys, sysconfig; print('%d.%d' % sys.version_info[:2]"
    " + ('t' if sysconfig.get_config_var('Py_GIL_DISABLED') else ''))"
)
OLD_ANYIO = "anyio==4.0.0"  # the oldest supported; CancelScope became slotted in 4.14
NO_DEPS = "--no-deps "
BEFORE_SLOTS = "anyio<4.14"  # the newest of these that mcp accepts runs the whole suite
OLD_ANYIO_TESTS = [  # mcp needs a newer anyio, so only the scope suites run against 4.0
    "tests/instrumentation/test_anyio_scopes.py",
    "tests/instrumentation/test_asyncio_scopes.py",
    "tests/instrumentation/test_instrumentor.py",
    "tests/package/test_config.py",
]
OLD_TRIO = "trio==0.23.0"  # the oldest supported: no cancel reasons (0.31), loose groups (0.25)
OLD_TRIO_TESTS = [  # native trio: anyio's trio backend needs trio 0.32 (those tests skip)
    "tests/instrumentation/test_trio_tasks.py",
    "tests/instrumentation/test_trio_task_instrument.py",
    "tests/instrumentation/test_trio_scopes.py",
    "tests/instrumentation/test_trio_locks.py",
    "tests/instrumentation/test_trio_locks_semantics.py",
]


def find_interpreters() -> dict[str, Path]:
    """One interpreter per wanted version (``3.13`` and ``3.13t`` are different ones)."""
    found: dict[str, Path] = {}
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    for version in WANTED:
        candidates = [shutil.which(f"python{version}")]
        if pyenv_root.is_dir():
            candidates += sorted(
                str(path / "bin" / "python")
                for path in pyenv_root.iterdir()
                if _pyenv_matches(path.name, version)
            )
        for candidate in filter(None, candidates):
            path = Path(candidate)
            if path.exists() and _version_of(path) == version:
                found[version] = path
                break
    return found


def _pyenv_matches(folder: str, version: str) -> bool:
    """``3.13.1`` is a 3.13, ``3.13.1t`` (pyenv's free-threaded name) a 3.13t."""
    minor = version.rstrip("t")
    return folder.startswith(minor + ".") and folder.endswith("t") == version.endswith("t")


def _version_of(python: Path) -> str:
    result = subprocess.run(
        [str(python), "-c", VERSION_OF],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip()


def run_suite(name: str, python: Path, requirements: list[str], tests: list[str]) -> bool:
    """Create ``.compat/<name>``, install the project with ``requirements``, run pytest there.

    A requirement starting with ``NO_DEPS`` is forced in afterwards, outside the resolver.
    """
    venv = ROOT / ".compat" / name
    bin_dir = venv / "bin"
    print(f"\n=== compat {name}: {python}", flush=True)
    if not (bin_dir / "python").exists():
        subprocess.run([str(python), "-m", "venv", str(venv)], check=True)
    pip = [str(bin_dir / "python"), "-m", "pip", "install", "--quiet"]
    forced = [req[len(NO_DEPS) :] for req in requirements if req.startswith(NO_DEPS)]
    resolved = [req for req in requirements if not req.startswith(NO_DEPS)]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    # --upgrade: a reused venv gets the newest anyio its requirements allow, as a fresh one would
    subprocess.run([*pip, "--upgrade", "-e", f"{ROOT}[dev]", "anyio", *resolved], check=True)
    if forced:
        subprocess.run([*pip, "--no-deps", *forced], check=True)
    print(f"=== compat {name}: anyio {_anyio_in(bin_dir)}", flush=True)
    env = {**os.environ, "SCOPEWATCH_STRICT": "1"}
    result = subprocess.run(
        [str(bin_dir / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        cwd=ROOT,
        env=env,
        check=False,
    )
    print(f"=== compat {name}: {'ok' if result.returncode == 0 else 'FAILED'}", flush=True)
    return result.returncode == 0


def _anyio_in(bin_dir: Path) -> str:
    result = subprocess.run(
        [
            str(bin_dir / "python"),
            "-c",
            "from importlib.metadata import version as v; print(v('anyio'))",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() or "?"


def run_peers() -> bool:
    """Run anyio's own test suite, plain and instrumented, compared (``.ci/peer_anyio.py``)."""
    print("\n=== compat peer-anyio", flush=True)
    runner = Path(__file__).with_name("peer_anyio.py")
    result = subprocess.run([sys.executable, str(runner)], cwd=ROOT, check=False)
    return result.returncode == 0


def main() -> int:
    """Run every compatibility target; report a summary line with each target's minutes."""
    current = _version_of(Path(sys.executable))
    interpreters = find_interpreters()
    missing = [version for version in WANTED if version not in interpreters]
    print("compat: not found here: " + (", ".join(missing) or "none"), flush=True)
    targets: list[tuple[str, Path, list[str], list[str]]] = [
        (f"py{version}", path, [], [])
        for version, path in interpreters.items()
        if version != current
    ]
    before_slots = [BEFORE_SLOTS, f"mcp=={metadata.version('mcp')}"]
    targets.append((f"py{current}-anyio-before-4.14", Path(sys.executable), before_slots, []))
    old = OLD_ANYIO.replace("==", "")
    oldest = [NO_DEPS + OLD_ANYIO]
    targets.append((f"py{current}-{old}", Path(sys.executable), oldest, OLD_ANYIO_TESTS))
    old = OLD_TRIO.replace("==", "")
    oldest_trio = [NO_DEPS + OLD_TRIO]
    targets.append((f"py{current}-{old}", Path(sys.executable), oldest_trio, OLD_TRIO_TESTS))
    names = [target[0] for target in targets]
    print("compat targets: " + ", ".join([*names, "peer-anyio"]), flush=True)
    results: dict[str, tuple[bool, float]] = {}
    for name, python, requirements, tests in targets:
        started = time.monotonic()
        ok = run_suite(name, python, requirements, tests)
        results[name] = (ok, time.monotonic() - started)
    if "--no-peers" not in sys.argv:
        started = time.monotonic()
        results["peer-anyio"] = (run_peers(), time.monotonic() - started)
    print("\ncompat summary:", flush=True)
    for name, (ok, seconds) in results.items():
        print(f"  {name:<28} {'ok' if ok else 'FAILED':<7} {seconds / 60:5.1f} min", flush=True)
    failed = [name for name, (ok, _) in results.items() if not ok]
    print(f"compat: {len(results) - len(failed)} passed, {len(failed)} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
