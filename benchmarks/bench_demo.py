"""The README's main job: wall time of ``python -m skyeq demo`` in a fresh process.

Run from the repository root::

    python -m benchmarks demo            # one untimed run (fills the numba cache), 3 timed

Each timed run is a new Python process, as a newcomer runs it: interpreter start,
imports, loading the kernels from the numba cache, building the synthetic 3x4 mosaic
of 1024x1024 tiles and matching it with every method. Issue 6 asks for under 30 s.
The reference has no such demo, so there is nothing to compare it with.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from ._common import environment, markdown_table


def _run() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "skyeq", "demo"], check=True,
                   capture_output=True)
    return time.perf_counter() - t0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs (default 3)")
    args = parser.parse_args(argv)
    print(environment())
    first = _run()
    times = [_run() for _ in range(args.repeat)]
    print()
    print(markdown_table(
        ["first run s (cache filled if empty)", "median of timed runs s", "slowest s"],
        [[f"{first:.2f}", f"{statistics.median(times):.2f}", f"{max(times):.2f}"]],
    ))
    return 0
