"""scopewatch overhead benchmarks: ``python -m benchmarks [--quick] [--only NAME] [--json PATH]``.

Every figure is a ratio measured in one process (or one run of subprocesses), with the variants
interleaved round by round and the median over rounds reported. Nothing here asserts a time:
a target that is missed is printed as MISS and the exit code stays 0.
"""

from __future__ import annotations
