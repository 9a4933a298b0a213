"""Compile one family of kernels in a second process while this one compiles another.

On a cold cache numba compiles every kernel on its first call, one after the other, on
one core. The geometry kernels and the statistics kernels share no njit function, so a
child process can compile one family into numba's cache while this process compiles
the other; this process's first call of the child's kernels then loads them from the
cache instead of compiling them. With two cores that hides the shorter of the two
compile times.

Why it is safe:

* numba writes every cache file under a temporary name and renames it into place, so
  a reader sees a whole file or none; an index entry whose data file is not written
  yet (or was never written: a killed child) loads as a miss and the caller compiles.
* The two processes compile disjoint sets of cached functions (the geometry kernels
  keep their own buffer helper for that reason), so no cache index receives entries
  from both processes at once (numba's index update is a read-modify-write).
* The child inherits the environment (``NUMBA_CACHE_DIR`` and the rest, set explicitly
  when numba's configuration holds a cache directory) and imports this very copy of
  skyeq (its root first on ``PYTHONPATH``), so it writes where this process reads.
* A child that fails, is killed or is too slow costs only the wait: `Job.wait` returns
  False and the caller's kernels compile in the caller as they would have. The parent
  kills a child still running at exit, and a child whose parent has gone exits.

Set ``SKYEQ_BACKGROUND_COMPILE=0`` to never start a child.

Run as ``python -m skyeq._kernels.background PART...`` (what `start` does); a part is
``geometry`` (every geometry kernel), ``stats`` (every statistics kernel, float32 and
float64) or ``regions:DTYPE`` (what measuring overlap regions of DTYPE images needs,
``DTYPE`` float32 or float64).
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

__all__ = ["PARTS", "Job", "compile_parts", "cores", "start"]

#: The parts a child can compile (``regions:`` takes a dtype).
PARTS = ("geometry", "stats", "regions:float32", "regions:float64")

#: A child that has not finished after this many seconds is killed by `Job.wait` (the
#: caller then compiles for itself): well above the ~20 s a part takes on a slow core.
DEFAULT_TIMEOUT = 300.0

_LOCK = threading.Lock()
_RUNNING: set[Job] = set()


def cores() -> int:
    """Return the number of CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _enabled() -> bool:
    """Tell whether a child may be started at all."""
    if os.environ.get("SKYEQ_BACKGROUND_COMPILE", "1").strip().lower() in ("0", "no", "false"):
        return False
    from numba.core import config

    return not config.DISABLE_JIT and cores() >= 2


def _child_env() -> dict[str, str]:
    """Return the child's environment: ours, this skyeq first, numba's cache dir."""
    from numba.core import config

    env = dict(os.environ)
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    root = os.path.dirname(package)
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = root if not old else root + os.pathsep + old
    if config.CACHE_DIR:
        env["NUMBA_CACHE_DIR"] = str(config.CACHE_DIR)
    env["SKYEQ_BACKGROUND_COMPILE"] = "0"  # a child never starts children
    return env


class Job:
    """A child process compiling some parts into numba's cache (see `start`).

    Parameters
    ----------
    parts : sequence of str
        What the child compiles (see `PARTS`).
    """

    def __init__(self, parts: Sequence[str]) -> None:
        self.parts = tuple(parts)
        self.started = time.perf_counter()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", __name__, *self.parts],
            env=_child_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with _LOCK:
            _RUNNING.add(self)

    def done(self) -> bool:
        """Tell whether the child has exited."""
        return self._proc.poll() is not None

    def wait(self, timeout: float | None = DEFAULT_TIMEOUT) -> bool:
        """Wait for the child; True when it compiled every part.

        Parameters
        ----------
        timeout : float or None, optional
            Seconds to wait at most (None: no limit); a child still running then is
            killed and False returned.

        Returns
        -------
        bool
            True if the child exited successfully; False if it failed, was killed or
            timed out (the caller's kernels then compile in the caller).
        """
        try:
            code = self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            return False
        finally:
            if self._proc.poll() is not None:
                with _LOCK:
                    _RUNNING.discard(self)
        return code == 0

    def stop(self) -> None:
        """Kill the child if it is still running, and reap it."""
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        with _LOCK:
            _RUNNING.discard(self)


def start(parts: Sequence[str]) -> Job | None:
    """Start a child compiling ``parts``, or return None when none should run.

    None when the parts are empty or unknown, when background compiling is disabled
    (``SKYEQ_BACKGROUND_COMPILE=0``, ``NUMBA_DISABLE_JIT``), on a single core, or when
    the child cannot be started. The caller decides whether the cache is cold: a
    child on a warm cache only wastes a core for a second.

    Parameters
    ----------
    parts : sequence of str
        See `PARTS`.

    Returns
    -------
    Job or None
        The running child.
    """
    parts = tuple(parts)
    if not parts or any(p not in PARTS for p in parts) or not _enabled():
        return None
    try:
        return Job(parts)
    except OSError:
        return None


@atexit.register
def _stop_all() -> None:
    """Kill every child still running (at interpreter exit)."""
    with _LOCK:
        jobs = list(_RUNNING)
    for job in jobs:
        job.stop()


def compile_parts(parts: Sequence[str]) -> None:
    """Compile (or load from the cache) ``parts`` in this process (see `PARTS`)."""
    import numpy as np

    for part in parts:
        if part == "geometry":
            from . import geometry

            geometry.warmup()
        elif part == "stats":
            from . import stats

            stats.warmup()
        elif part.startswith("regions:"):
            from ..stats import SkyStat, region_statistics

            dtype = np.dtype(part.partition(":")[2])
            image = np.zeros((16, 16), dtype=dtype)
            region = np.array([[1, 1, 2]], dtype=np.int64)
            # two small regions and the whole image: the direct region kernel (not
            # the sorted cells, which only pay for heavily overlapping regions)
            region_statistics(SkyStat(), image, None, [region, region], whole=True)
        else:
            raise ValueError(f"unknown part {part!r} (one of {', '.join(PARTS)})")


def _watch_parent() -> None:
    """Exit this (child) process as soon as its parent has gone."""
    parent = os.getppid()
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(3)


def _main(argv: Sequence[str]) -> int:
    """Run the child: compile the parts named on the command line."""
    threading.Thread(target=_watch_parent, daemon=True).start()
    compile_parts(argv)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
