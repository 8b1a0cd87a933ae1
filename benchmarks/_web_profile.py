"""Profile the web stack's server with py-spy under load; print where scopewatch's time goes.

``python -m benchmarks._web_profile [--variant default] [--seconds 20]`` starts the server of
``bench_web`` (same environment; the launcher's ``sitecustomize`` put on the path directly)
under ``py-spy record`` (install py-spy into the
venv first; it needs ptrace, which it has over a child it spawns), loads it from a separate
process, then reads py-spy's collapsed stacks and prints: the share of samples with any
scopewatch frame on the stack, and the scopewatch functions by inclusive and by self samples.
Not part of ``make bench``: a profile is for deciding what to cut, not a figure.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import _web_stack, bench_web, common


def _is_scopewatch(frame: str) -> bool:
    return "scopewatch/" in frame or "scopewatch\\" in frame


def _function(frame: str) -> str:
    """``name (path:line)`` -> ``name (path)``: one entry per function, not per line."""
    name, _, location = frame.rpartition(" (")
    return f"{name} ({location.rsplit(':', 1)[0]})" if name else frame


def summarize(collapsed: str, top: int) -> str:
    """The report for py-spy's ``raw`` (collapsed) output."""
    total = 0
    with_scopewatch = 0
    inclusive: collections.Counter[str] = collections.Counter()
    self_samples: collections.Counter[str] = collections.Counter()
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_function(frame) for frame in stack.split(";")]
        total += count
        ours = [frame for frame in frames if _is_scopewatch(frame)]
        if ours:
            with_scopewatch += count
            for frame in set(ours):
                inclusive[frame] += count
        if frames and _is_scopewatch(frames[-1]):
            self_samples[frames[-1]] += count
    if not total:
        return "no samples"
    lines = [
        f"samples: {total}; with a scopewatch frame on the stack: {with_scopewatch} "
        f"({with_scopewatch / total:.1%}; inclusive of the wrapped originals' own time)",
        f"samples in scopewatch's own code (leaf frame, C calls it makes included): "
        f"{sum(self_samples.values()) / total:.1%}",
        "",
        f"top {top} scopewatch functions, inclusive (share of all samples):",
    ]
    lines += [f"  {count / total:6.1%}  {frame}" for frame, count in inclusive.most_common(top)]
    lines += ["", f"top {top} scopewatch functions, self:"]
    lines += [f"  {count / total:6.1%}  {frame}" for frame, count in self_samples.most_common(top)]
    return "\n".join(lines)


def _launched_environment(variant: str, endpoint: str) -> dict[str, str]:
    """``bench_web``'s environment plus what ``opentelemetry-instrument`` adds before it execs.

    py-spy loses a process that execs, so the server is started as the launcher would leave
    it: the auto-instrumentation directory (its ``sitecustomize``) first on ``PYTHONPATH``.
    """
    from opentelemetry.instrumentation import auto_instrumentation

    environment = bench_web._environment(variant, endpoint)
    directory = str(Path(auto_instrumentation.__file__).resolve().parent)
    environment["PYTHONPATH"] = os.pathsep.join([directory, environment["PYTHONPATH"]])
    return environment


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._web_profile")
    parser.add_argument("--variant", choices=bench_web.VARIANTS, default="default")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--native", action="store_true", help="py-spy --native")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    receiver = _web_stack.Receiver()
    with tempfile.TemporaryDirectory() as directory:
        output = Path(directory) / "profile.txt"
        command = [
            py_spy,
            "record",
            "--format",
            "raw",
            "--rate",
            "200",
            "--output",
            str(output),
            *(["--native"] if args.native else []),
            "--",
            common.python_executable(),
            "-m",
            "benchmarks._web_stack",
            "serve",
        ]
        server = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            text=True,
            cwd=bench_web.ROOT,
            env=_launched_environment(args.variant, receiver.endpoint),
            start_new_session=True,
        )
        try:
            assert server.stdout is not None
            port = ""
            while not port.isdigit():  # py-spy prints its own lines first
                line = server.stdout.readline()
                if not line:
                    raise RuntimeError("the server did not start")
                port = line.strip()
            time.sleep(1.0)
            subprocess.run(
                [
                    common.python_executable(),
                    "-m",
                    "benchmarks._web_stack",
                    "load",
                    port,
                    "--warmup=200",
                    "--total=10000000",
                    f"--seconds={args.seconds}",
                ],
                cwd=bench_web.ROOT,
                capture_output=True,
                check=True,
            )
        finally:
            # SIGINT to py-spy and the server (one session): uvicorn stops, py-spy writes
            os.killpg(server.pid, signal.SIGINT)
            server.wait(timeout=60)
            receiver.close()
        print(summarize(output.read_text(), args.top))


if __name__ == "__main__":
    main()
