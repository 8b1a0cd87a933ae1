"""Instruction counts per scope kind under callgrind, which machine noise does not move.

``python -m benchmarks.scope_instructions [--kinds a,b] [--n N]`` runs, for every scope kind,
``valgrind --tool=callgrind`` on this module's ``--child`` mode twice per variant (``bare``,
``anomalies``), with ``N`` and ``2N`` enter+exit, and prints the instructions per scope of the
difference (start-up, imports and warm-up cancel out) and the ratio anomalies/bare. Needs
valgrind; slow (each child runs some 50x slower than natively), so it is not part of ``make
bench``. ``--profile KIND`` keeps the ``callgrind.out`` of the anomalies run with ``2N`` for
``callgrind_annotate``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Any

from benchmarks import bench_scopes, common

_TOTAL = re.compile(r"^summary:\s+(\d+)", re.MULTILINE)


def _child(kind: str, variant: str, n: int) -> None:
    sdk = common.Sdk()
    with contextlib.ExitStack() as stack:
        if variant != "bare":
            stack.enter_context(common.scopewatch(sdk, variant))
        run = bench_scopes.runner(kind)
        run(max(10, n // 10))  # warm caches and lazy imports in both runs alike
        run(n)


def _instructions(kind: str, variant: str, n: int, keep: str | None = None) -> int:
    with tempfile.TemporaryDirectory() as directory:
        out = keep or os.path.join(directory, "callgrind.out")
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-m",
            "benchmarks.scope_instructions",
            "--child",
            kind,
            variant,
            str(n),
        ]
        # A fixed hash seed: set and dict layouts, hence instruction counts, repeat run to run.
        environment = {**os.environ, "PYTHONHASHSEED": "0"}
        subprocess.run(command, check=True, capture_output=True, env=environment)
        with open(out) as handle:
            text = handle.read()
    match = _TOTAL.search(text)
    if match is None:
        raise RuntimeError(f"no summary line in callgrind output for {kind} {variant}")
    return int(match.group(1))


def measure(kinds: list[str], n: int, profile: str | None = None) -> dict[str, dict[str, Any]]:
    """``kind -> {bare, anomalies (instructions per scope), ratio}``."""
    results: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        row: dict[str, Any] = {}
        for variant in ("bare", "anomalies"):
            keep = profile if (profile and variant == "anomalies") else None
            low = _instructions(kind, variant, n)
            high = _instructions(kind, variant, 2 * n, keep if kind == kinds[0] else None)
            row[variant] = (high - low) / n
        row["ratio"] = row["anomalies"] / row["bare"]
        results[kind] = row
        print(
            f"{kind:40s} bare {row['bare']:9.0f}  anomalies {row['anomalies']:9.0f}  "
            f"ratio {row['ratio']:.2f}",
            flush=True,
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=3, metavar=("KIND", "VARIANT", "N"))
    parser.add_argument("--kinds", default=",".join(bench_scopes.kinds()))
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--profile", help="keep the anomalies callgrind.out of the first kind")
    args = parser.parse_args(argv)
    if args.child:
        kind, variant, count = args.child
        _child(kind, variant, int(count))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: no instruction counts")
        return 1
    measure(args.kinds.split(","), args.n, args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
