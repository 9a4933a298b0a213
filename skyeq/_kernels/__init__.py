"""Numba kernels: clipped sky statistics (`stats`) and footprint geometry (`geometry`).

The kernels know nothing of WCSs, files or logging: they take plain, native-endian
numpy arrays and scalars, hold no global state and are compiled with
``cache=True, nogil=True``, so several Python threads may run them at once. This
package re-exports every public kernel, so ``skyeq._kernels.sky_stat`` and
``skyeq._kernels.scan_spans`` are the ones callers use; `warmup` compiles (or loads)
them all.

The cached machine code lives in numba's cache directory (``__pycache__`` next to each
module, or ``NUMBA_CACHE_DIR`` when set).
"""

from __future__ import annotations

from . import geometry, stats
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
    "median_within",
    "moments",
    "region_stats",
    "ring_area",
    "scan_spans",
    "select_kth",
    "sky_stat",
    "stats",
    "warm",
    "warmup",
]


def warmup() -> None:
    """Compile (or load from the cache) every kernel for float32 and float64 images."""
    stats.warmup()
    geometry.warmup()


def warm() -> bool | None:
    """Tell whether the compiled kernels are in numba's cache (nothing to compile).

    Looks at the cache index of the statistics kernel every call needs: True when it
    holds compiled code for the current source, False when the first call will compile,
    None when numba's cache cannot be inspected (its internals are not a public API).
    """
    try:
        index = stats.sky_stat._cache._cache_file._load_index()
    except Exception:  # any change of numba internals: unknown
        return None
    return bool(index)
