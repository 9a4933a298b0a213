"""Helpers shared by the benchmark scripts: timing, environment banner, tables."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version


def package_version(name: str) -> str:
    """Installed version of a distribution, or ``'-'`` when it is not installed."""
    try:
        return version(name)
    except PackageNotFoundError:
        return "-"


def environment() -> str:
    """One paragraph describing the machine and the package versions."""
    names = ["skyeq", "numpy", "numba", "scipy", "astropy", "spherical-geometry", "stcal",
             "stsci.imagestats"]
    vers = ", ".join(f"{n} {package_version(n)}" for n in names)
    cache = os.environ.get("NUMBA_CACHE_DIR", "(default)")
    return (
        f"python {platform.python_version()} on {platform.machine()}, "
        f"{os.cpu_count()} cpus; {vers}; NUMBA_CACHE_DIR={cache}"
    )


def timeit(func: Callable[[], object], repeat: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``func()`` in seconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        func()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        func()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Render rows as a GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
