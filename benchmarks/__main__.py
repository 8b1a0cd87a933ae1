"""The runner: ``python -m benchmarks [--quick] [--only NAME,..] [--json PATH] [--markdown PATH]``.

Each benchmark runs in its own fresh interpreter (so one cannot leave patches, caches or heap
growth behind for the next) and returns its result as JSON; the runner prints one table and
writes every result, with the machine, to ``--json`` (default ``benchmarks/results/latest.json``).
After the table of every figure comes the targets table of issue 15 (``benchmarks/targets.py``):
each target, the figure that measures it, its value and whether it was met. A MISS is
information: the exit code is 0 unless a benchmark itself crashed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks import common, targets

HERE = Path(__file__).resolve().parent
DEFAULT_JSON = HERE / "results" / "latest.json"

BENCHMARKS: dict[str, tuple[str, str]] = {
    "scopes": ("benchmarks.bench_scopes", ""),
    "tasks": ("benchmarks.bench_tasks", "tasks feature not landed"),
    "trio-tasks": ("benchmarks.bench_trio_tasks", "trio tasks not landed"),
    "locks": ("benchmarks.bench_locks", "locks feature not landed"),
    "rules": ("benchmarks.bench_rules", "rules benchmark not landed"),
    "service": ("benchmarks.bench_service", ""),
    "web": ("benchmarks.bench_web", ""),
    "memory": ("benchmarks.bench_memory", ""),
}
"""Name -> (module with ``run(quick) -> dict``, placeholder text when the module is absent)."""

TARGETS: dict[str, dict[str, str]] = {
    "tasks": {"anomalies/bare": "<= 1.3", "all/peer": "<= 0.5"},
    "locks": {"asyncio.Lock uncontended": "<= 1.5", "uncontended": "<= 3"},
    "rules": {"10 rules": "<= 0.2"},
}
"""Targets from the issue, applied to figures of other engineers' benchmarks that carry none."""


def _placeholder(name: str, text: str) -> dict[str, Any]:
    return common.result(name, [common.figure(text, None, note=f"{name}: {text}")])


def _normalize(name: str, payload: Any) -> dict[str, Any]:
    """Accept a result in the common shape, or any dict of numbers (shown as INFO rows)."""
    if not isinstance(payload, dict):
        return common.result(name, [common.figure(f"unexpected result {payload!r}", None)])
    if isinstance(payload.get("figures"), list):
        result = dict(payload)
        result.setdefault("name", name)
        result.setdefault("raw", {})
        result.setdefault("notes", [])
        figures = [_with_target(name, dict(entry)) for entry in result["figures"]]
        result["figures"] = figures
        return result
    figures = []
    for key, value in _flatten(payload):
        if isinstance(value, int | float) and not isinstance(value, bool):
            target = next((t for k, t in TARGETS.get(name, {}).items() if k in key), None)
            figures.append(common.figure(key, float(value), target))
    return common.result(name, figures, raw=payload)


def _with_target(name: str, entry: dict[str, Any]) -> dict[str, Any]:
    """Apply the issue's target to a ratio figure that carries none."""
    if not entry.get("target") and entry.get("value") is not None:
        for key, target in TARGETS.get(name, {}).items():
            if key in str(entry.get("name", "")) and entry.get("unit", "ratio") == "ratio":
                return {
                    **entry,
                    **common.figure(str(entry["name"]), entry["value"], target),
                    "note": str(entry.get("note", "")),
                }
    entry.setdefault("status", common.figure("", entry.get("value"))["status"])
    return entry


def _flatten(mapping: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in mapping.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            items.extend(_flatten(value, path + " "))
        else:
            items.append((path, value))
    return items


def _run_child(name: str, quick: bool) -> int:
    """In the child interpreter: run one benchmark, print its result as JSON on stdout."""
    module_name, placeholder = BENCHMARKS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        payload = _placeholder(name, placeholder)
    else:
        payload = _normalize(name, module.run(quick))
    sys.stdout.write(json.dumps(payload, default=str) + "\n")
    return 0


def _run(name: str, quick: bool) -> tuple[dict[str, Any], bool]:
    """Run one benchmark in a fresh interpreter; ``(result, crashed)``."""
    command = [sys.executable, "-m", "benchmarks", "--child", name]
    if quick:
        command.append("--quick")
    started = time.perf_counter()
    process = subprocess.run(
        command, cwd=HERE.parent, stdout=subprocess.PIPE, stderr=None, text=True, check=False
    )
    elapsed = time.perf_counter() - started
    lines = process.stdout.strip().splitlines()
    if process.returncode != 0 or not lines:
        message = f"crashed (exit {process.returncode}); see the output above"
        return common.result(name, [common.figure(message, None)]), True
    result: dict[str, Any] = json.loads(lines[-1])
    result["seconds"] = round(elapsed, 1)
    return result, False


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the selected benchmarks, print the table, write JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny counts: proves it works")
    parser.add_argument("--only", action="append", default=[], help="benchmark name(s)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="results file")
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        try:
            return _run_child(args.child, args.quick)
        except Exception:
            traceback.print_exc()
            return 1
    names = [name for item in args.only for name in item.split(",") if name] or list(BENCHMARKS)
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}")
    machine = common.machine_info()
    results = []
    crashed = False
    for name in names:
        print(f"running {name}{' (quick)' if args.quick else ''} ...", file=sys.stderr, flush=True)
        result, failed = _run(name, args.quick)
        crashed = crashed or failed
        results.append(result)
    print()
    print(
        f"{machine['cpu']}, {machine['cores']} cores, {machine['python']}, "
        f"anyio {machine['packages']['anyio']}, "
        f"opentelemetry-sdk {machine['packages']['opentelemetry-sdk']}"
        + (" -- QUICK RUN: counts too small for meaningful figures" if args.quick else "")
    )
    print(common.format_table(results))
    target_table = targets.format_text(results)
    if target_table:
        print()
        print(target_table)
    payload = {"machine": machine, "quick": args.quick, "results": results}
    common.write_json(args.json, payload)
    print(f"\nwrote {args.json}")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(_markdown_document(results, machine, args.quick))
        print(f"wrote {args.markdown}")
    return 1 if crashed else 0


def _markdown_document(results: list[dict[str, Any]], machine: dict[str, Any], quick: bool) -> str:
    title = "# scopewatch benchmark results\n\n"
    intro = (
        "Generated by `python -m benchmarks --markdown benchmarks/RESULTS.md`"
        + (" --quick (counts too small to mean anything)" if quick else "")
        + ". Every figure is a ratio measured in one run with the variants interleaved "
        "round by round (median of the per-round ratios); a MISS is information, not a "
        "failure. The method is described in the Benchmarks section of the project README.\n\n"
    )
    target_table = targets.format_markdown(results)
    if target_table:
        target_table = "## Targets (issue 15)\n\n" + target_table + "\n## Every figure\n\n"
    return title + intro + target_table + common.format_markdown(results, machine)


if __name__ == "__main__":
    sys.exit(main())
