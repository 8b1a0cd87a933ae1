"""Run the tests on every other CPython 3.10-3.13 found, an anyio before 4.14, the oldest trio.

Interpreters are discovered at run time (``pythonX.Y`` on PATH, then pyenv's versions folder);
each gets its own virtual environment under ``.compat/``. Exits non-zero if any run fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WANTED = ("3.10", "3.11", "3.12", "3.13")
OLD_ANYIO = "anyio==4.0.0"  # the oldest supported; CancelScope became slotted in 4.14
OLD_ANYIO_TESTS = [  # mcp needs a newer anyio, so only the scope suites run against 4.0
    "tests/test_anyio_scopes.py",
    "tests/test_asyncio_scopes.py",
    "tests/test_instrumentor.py",
    "tests/test_config.py",
]
OLD_TRIO = "trio==0.23.0"  # the oldest supported: no cancel reasons (0.31), loose groups (0.25)
OLD_TRIO_TESTS = [  # native trio only: anyio's trio backend needs a newer trio
    "tests/test_trio_tasks.py",
    "tests/test_trio_task_instrument.py",
]


def find_interpreters() -> dict[str, Path]:
    """One interpreter per wanted minor version, other than the one running this script."""
    found: dict[str, Path] = {}
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    for version in WANTED:
        candidates = [shutil.which(f"python{version}")]
        if pyenv_root.is_dir():
            candidates += sorted(
                str(path / "bin" / "python")
                for path in pyenv_root.iterdir()
                if path.name.startswith(version + ".")
            )
        for candidate in filter(None, candidates):
            path = Path(candidate)
            if path.exists() and _version_of(path) == version:
                found[version] = path
                break
    return found


def _version_of(python: Path) -> str:
    result = subprocess.run(
        [str(python), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip()


def run_suite(name: str, python: Path, pins: list[str], tests: list[str]) -> bool:
    """Create ``.compat/<name>``, install the project, force ``pins``, run pytest there."""
    venv = ROOT / ".compat" / name
    bin_dir = venv / "bin"
    print(f"\n=== compat {name}: {python}", flush=True)
    if not (bin_dir / "python").exists():
        subprocess.run([str(python), "-m", "venv", str(venv)], check=True)
    pip = [str(bin_dir / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[dev]"], check=True)
    if pins:
        subprocess.run([*pip, "--no-deps", *pins], check=True)
    env = {**os.environ, "SCOPEWATCH_STRICT": "1"}
    result = subprocess.run(
        [str(bin_dir / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        cwd=ROOT,
        env=env,
        check=False,
    )
    print(f"=== compat {name}: {'ok' if result.returncode == 0 else 'FAILED'}", flush=True)
    return result.returncode == 0


def main() -> int:
    """Run every compatibility target; report a summary line."""
    current = f"{sys.version_info[0]}.{sys.version_info[1]}"
    interpreters = find_interpreters()
    targets: list[tuple[str, Path, list[str], list[str]]] = [
        (f"py{version}", path, [], [])
        for version, path in interpreters.items()
        if version != current
    ]
    old = OLD_ANYIO.replace("==", "")
    targets.append((f"py{current}-{old}", Path(sys.executable), [OLD_ANYIO], OLD_ANYIO_TESTS))
    old = OLD_TRIO.replace("==", "")
    targets.append((f"py{current}-{old}", Path(sys.executable), [OLD_TRIO], OLD_TRIO_TESTS))
    print("compat targets: " + ", ".join(target[0] for target in targets), flush=True)
    results = {name: run_suite(name, python, pins, tests) for name, python, pins, tests in targets}
    failed = [name for name, ok in results.items() if not ok]
    print(f"\ncompat: {len(results) - len(failed)} passed, {len(failed)} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
