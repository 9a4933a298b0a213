"""Helpers shared by the benchmark scripts: timing, environment banner, tables."""

from __future__ import annotations

import os
import platform
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version


def package_version(name: str) -> str:
    """Installed version of a distribution, or ``'-'`` when it is not installed."""
    try:
        return version(name)
    except PackageNotFoundError:
        return "-"


def skyeq_source() -> str:
    """Where the imported skyeq comes from: its folder and, in a git checkout, the commit.

    The installed distribution's version can be stale when the source tree is imported
    through ``PYTHONPATH`` (an older non-editable install stays in site-packages), so the
    banner names the code that actually ran.
    """
    import subprocess
    from pathlib import Path

    import skyeq

    where = Path(skyeq.__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=where, check=True,
                             capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=where,
                               check=True, capture_output=True, text=True).stdout.strip()
        return f"{where} at {sha}{' + changes' if dirty else ''}"
    except (OSError, subprocess.CalledProcessError):
        return str(where)


def environment() -> str:
    """One paragraph describing the machine and the package versions."""
    names = ["numpy", "numba", "scipy", "astropy", "spherical-geometry", "stcal",
             "stsci.imagestats"]
    vers = f"skyeq from {skyeq_source()}, " + ", ".join(
        f"{n} {package_version(n)}" for n in names)
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


class PeakRSS:
    """Sample the resident set size in a thread; ``peak`` is the growth in bytes."""

    def __init__(self, interval: float = 0.002) -> None:
        import psutil

        self._proc = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.peak = 0

    def __enter__(self) -> PeakRSS:
        self._base = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss - self._base)
            time.sleep(self._interval)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss - self._base)
