"""Numba kernels: statistics (`stats`), geometry (`geometry`, `chebyshev`), differences (`pairs`).

The kernels know nothing of WCSs, files or logging: they take plain, native-endian
numpy arrays and scalars, hold no global state and are compiled with
``cache=True, nogil=True``, so several Python threads may run them at once. This
package re-exports every public kernel, so ``skyeq._kernels.sky_stat`` and
``skyeq._kernels.scan_spans`` are the ones callers use; `warmup` compiles (or loads)
them all, and `prepare` what a match of images of given dtypes needs (on two
processes when the cache is cold, see `background`).

The cached machine code lives in numba's cache directory (``__pycache__`` next to each
module, or ``NUMBA_CACHE_DIR`` when set).
"""

from __future__ import annotations

from . import background, chebyshev, geometry, pairs, stats
from .geometry import convex_parts, intersect_pairs, ring_area, scan_spans
from .stats import (
    MAX_CELL_REGIONS,
    STAT_MEAN,
    STAT_MEDIAN,
    STAT_MIDPT,
    STAT_MODE,
    cell_stats,
    clip_moments,
    histogram_stat,
    levels_apart,
    median_within,
    moments,
    region_stats,
    select_kth,
    sky_stat,
)

__all__ = [
    "MAX_CELL_REGIONS",
    "STAT_MEAN",
    "STAT_MEDIAN",
    "STAT_MIDPT",
    "STAT_MODE",
    "cell_stats",
    "clip_moments",
    "convex_parts",
    "geometry",
    "histogram_stat",
    "intersect_pairs",
    "levels_apart",
    "median_within",
    "moments",
    "pairs",
    "pairs_warm",
    "prepare",
    "region_stats",
    "ring_area",
    "scan_spans",
    "select_kth",
    "sky_stat",
    "stats",
    "warm",
    "warmup",
]


#: The geometry kernels a match calls (each has exactly one signature: float64 and
#: int64 arrays, int64 scalars).
_GEOMETRY = ("ring_area", "convex_parts", "intersect_pairs", "scan_spans")


def _cached_dtypes(kernel) -> set[str] | None:
    """Dtypes of the first argument of the signatures of ``kernel`` in numba's cache.

    Empty when nothing for the current source is cached; None when numba's cache cannot
    be inspected (its internals are not a public API).
    """
    try:
        index = kernel._cache._cache_file._load_index()
        return {str(key[0][0].dtype) for key in index}
    except Exception:  # any change of numba internals: unknown
        return None


def warmup(parallel: bool = False) -> None:
    """Compile (or load from the cache) every kernel for float32 and float64 images.

    Parameters
    ----------
    parallel : bool, optional
        When the geometry kernels are not cached yet, compile them in a second process
        (`skyeq._kernels.background`) while this one compiles the statistics kernels.
    """
    job = None
    if parallel and not _geometry_cached():
        job = background.start(["geometry"])
    stats.warmup()
    pairs.warmup()
    if job is not None:
        job.wait()
    geometry.warmup()  # loads what the child compiled (compiles if it failed)


def prepare(dtypes) -> None:
    """Compile (or load) what matching images of ``dtypes`` needs, on two cores if cold.

    The geometry kernels are compiled here while, when the statistics kernels for some
    of ``dtypes`` are not cached yet, a second process (`skyeq._kernels.background`)
    compiles those; this call returns once both are done, and the first match then
    loads everything from the cache. Without a second core (or if the child fails) the
    statistics kernels compile in the first match as usual.

    Parameters
    ----------
    dtypes : iterable of numpy dtype
        The image dtypes, float32 or float64 (what the statistics use).
    """
    import numpy as np

    names = sorted({np.dtype(d).name for d in dtypes})
    have = _cached_dtypes(stats.region_stats)
    need = [n for n in names if have is not None and n not in have]
    job = background.start([f"regions:{n}" for n in need]) if need else None
    geometry.warmup()
    if job is not None:
        job.wait()


def _geometry_cached() -> bool:
    """Tell whether every geometry kernel a match calls is in numba's cache."""
    return all(_cached_dtypes(k) for k in _geometry_kernels())


def _geometry_kernels() -> list:
    """Return the geometry kernels a match calls (`_GEOMETRY`, the fitted gwcs inverse)."""
    return [getattr(geometry, name) for name in _GEOMETRY] + [chebyshev.newton_inverse,
                                                              chebyshev.densify_rings]


def pairs_warm() -> bool | None:
    """Tell whether the pair-difference kernels are in numba's cache (see `warm`)."""
    found = [_cached_dtypes(k) for k in (pairs.sample_differences, pairs.sample_differences_at)]
    if any(f is None for f in found):
        return None
    return bool(found[0])


def warm() -> bool | None:
    """Tell whether the kernels a match calls are in numba's cache (nothing to compile).

    Looks at the cache indexes: True when every geometry kernel and one of the two
    statistics kernels (`sky_stat`, `region_stats`) hold compiled code for the
    current source, False when the first call will compile, None when numba's cache
    cannot be inspected (its internals are not a public API).
    """
    found = [_cached_dtypes(k) for k in (stats.sky_stat, stats.region_stats)]
    found += [_cached_dtypes(k) for k in _geometry_kernels()]
    if any(f is None for f in found):
        return None
    return bool(found[0] or found[1]) and all(found[2:])
