"""Pair offsets from co-located pixel differences (``pair_stat="difference"``, issue #15).

For an overlapping pair of images i and j, `pair_difference` samples image j at the sky
position of every pixel of image i inside the overlap (bilinear interpolation through
the pixel-to-pixel map of `skyeq._pairmap`), keeps the pixels usable in both images and
takes the clipped statistic (the same `SkyStat` as everywhere) of the differences
``data_i - data_j``. Emission that fills the overlap is the same in both images at the
same sky position, so it cancels pixel by pixel: what is left is the sky offset plus
noise, whatever the two images' own statistics would each make of the emission.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from . import stats as _stats
from ._kernels import pairs as _kpairs
from ._pairmap import DEFAULT_TOLERANCE, PixelMap, fit_pixel_map
from .stats import SkyStat, as_skystat, region_statistics
from .wcs import as_wcs_adapter

__all__ = ["pair_difference"]

#: Pixels per batch of exact WCS round trips on the exact path (bounds its temporaries:
#: a few float64 arrays of this length per WCS call).
_CHUNK = 1 << 18


def pair_difference(
    stat: SkyStat | str | None,
    data_i: Any,
    good_i: Any,
    adapter_i: Any,
    data_j: Any,
    good_j: Any,
    adapter_j: Any,
    spans_i: Any,
    both_ways: bool = True,
    tolerance: float = DEFAULT_TOLERANCE,
) -> tuple[float, int, float]:
    """Clipped statistic of the pixel differences ``data_i - data_j`` over an overlap.

    Every pixel of image i in ``spans_i`` is mapped to image j through the two WCSs (a
    polynomial map fitted once for the pair, checked to ``tolerance`` pixels, else exact
    WCS calls; see `skyeq._pairmap.fit_pixel_map`), image j is sampled there by bilinear
    interpolation (see `skyeq._kernels.pairs` for which pixels are read and what
    happens at j's edges), and the difference is kept when the pixel of i is good and
    finite and the four pixels of j around the position are inside j, good and finite.
    The statistic of the differences is the pair's offset estimate (sky of i minus sky
    of j).

    Interpolation smooths what it samples: a star's core comes out lower and its wings
    higher in the sampled image than in the sampled-at one, so ``data_i - sample_j``
    is skewed by the sources (on a dense field its median moved by 0.08 sigma). With
    ``both_ways`` (the default) the differences are taken both ways, each on every other
    row: ``data_i - sample_j`` on the even rows of ``spans_i`` and ``sample_i - data_j``
    on the odd rows of the overlap's bounding box in image j (found through the fitted
    map; its pixels that fall outside image i are skipped like any unusable pixel), one
    sample of about the size of the overlap, in which the two skews cancel.

    Parameters
    ----------
    stat : SkyStat, str or None
        The statistic and its clipping (see `skyeq.stats.as_skystat`). Its ``lower`` and
        ``upper`` limits apply to the pixel values of both images, as everywhere (a
        pixel of j outside them is unusable like a bad one); the differences are then
        clipped with ``nclip``, ``lsigma`` and ``usigma`` only.
    data_i, data_j : array_like, 2-D
        The two images (float32 and float64 are used as they are; other real types, and
        a pair of different float types, are converted to float64). A masked array's
        mask is honoured.
    good_i, good_j : array_like of bool or None
        Good-pixel masks (True = good), or None.
    adapter_i, adapter_j : WCSAdapter or WCS
        The images' WCSs (anything `skyeq.wcs.as_wcs_adapter` takes); checked on the
        image's shape unless they already are.
    spans_i : array_like of int, shape (k, 3)
        The overlap in image i: row spans ``(row, first column, last column)``,
        inclusive; parts outside image i are ignored.
    both_ways : bool, optional
        Take the differences both ways (above). Default True.
    tolerance : float, optional
        Largest error of the fitted pixel maps, in pixels. Default 0.01.

    Returns
    -------
    value : float
        The statistic of the differences; NaN when no pixel is usable in both images.
    npix : int
        Number of differences of the final clipping pass (0 when none).
    std : float
        Their ddof=1 standard deviation (NaN when none, 0.0 for a single one).

    Raises
    ------
    ValueError
        If an image is not 2-D, a mask's shape differs from its image's, or a WCS
        cannot be checked on its image.
    """
    stat = as_skystat(stat)
    arr_i, mask_i = _image(data_i, good_i, "image i")
    arr_j, mask_j = _image(data_j, good_j, "image j")
    if arr_i.dtype != arr_j.dtype:  # one compiled signature per dtype: widen the pair
        arr_i = arr_i.astype(np.float64)
        arr_j = arr_j.astype(np.float64)
    if stat.lower is not None or stat.upper is not None:
        mask_i = _within_limits(arr_i, mask_i, stat)
        mask_j = _within_limits(arr_j, mask_j, stat)
        stat = dataclasses.replace(stat, lower=None, upper=None)
    ad_i = as_wcs_adapter(adapter_i, shape=arr_i.shape)
    ad_j = as_wcs_adapter(adapter_j, shape=arr_j.shape)
    side_i = (arr_i, _stats._NO_MASK if mask_i is None else mask_i, ad_i)
    side_j = (arr_j, _stats._NO_MASK if mask_j is None else mask_j, ad_j)
    spans = _clipped(_stats._spans_array(spans_i), arr_i.shape)
    if not len(spans):
        return math.nan, 0, math.nan
    pmap = fit_pixel_map(ad_i, ad_j, spans, tolerance)
    if not both_ways:
        out = _scratch(_npix(spans))
        return _statistic(stat, out[:_differences(side_i, side_j, spans, pmap, out)])
    back = _box_spans(pmap, spans, arr_j.shape, parity=1)
    # the reverse map from the forward round trips, else its own; fitted before either
    # kernel runs, while the Python side's data are still in the caches
    pback = (pmap.inverse() or fit_pixel_map(ad_j, ad_i, back, tolerance)) if len(back) else None
    # (from, to, spans, map, reversed: the differences come out as sample_i - data_j)
    ways = [(side_i, side_j, spans.compress((spans[:, 0] & 1) == 0, axis=0), pmap, False),
            (side_j, side_i, back, pback, True)]
    out = _scratch(sum(_npix(sp) for _, _, sp, _, _ in ways))
    n = 0
    for a, b, sp, fitted, reverse in ways:
        if not len(sp):
            continue
        start = n
        n += _differences(a, b, sp, fitted, out[n:])
        if reverse:
            np.negative(out[start:n], out=out[start:n])
    return _statistic(stat, out[:n])


def _npix(spans: np.ndarray) -> int:
    """Return the number of pixels of the spans."""
    return int((spans[:, 2] - spans[:, 1] + 1).sum())


def _box_spans(pmap: PixelMap, spans: np.ndarray, shape: tuple[int, int],
               parity: int) -> np.ndarray:
    """Spans of the bounding box, in image j, of the overlap given by its spans in image i.

    Only the box's rows of ``parity`` (0: even, 1: odd) are returned.

    The ends of every span of image i are taken to image j through the map; the box of
    those positions (widened by a pixel, clipped to image j) holds every pixel of j in
    the overlap, plus, where the overlap is not a rectangle aligned with j's axes,
    pixels outside it, which fall outside image i and are skipped by the kernel.
    """
    if pmap.exact:
        x = np.concatenate((spans[:, 1], spans[:, 2])).astype(float)
        y = np.concatenate((spans[:, 0], spans[:, 0])).astype(float)
        xj, yj = pmap(x, y)
        lo_x, hi_x, lo_y, hi_y = np.nanmin(xj), np.nanmax(xj), np.nanmin(yj), np.nanmax(yj)
    else:  # the same positions in one compiled loop (numpy's calls cost more than it)
        lo_x, hi_x, lo_y, hi_y = _kpairs.span_ends_box(spans, pmap.coef_x, pmap.coef_y,
                                                       pmap.norm)
    ny, nx = shape
    x0, x1 = max(math.floor(lo_x) - 1, 0), min(math.ceil(hi_x) + 1, nx - 1)
    y0, y1 = max(math.floor(lo_y) - 1, 0), min(math.ceil(hi_y) + 1, ny - 1)
    if x1 < x0 or y1 < y0:
        return np.zeros((0, 3), dtype=np.int64)
    rows = np.arange(y0 + ((y0 - parity) & 1), y1 + 1, 2, dtype=np.int64)
    return np.column_stack((rows, np.full(rows.size, x0), np.full(rows.size, x1)))


def _differences(side_i: tuple, side_j: tuple, spans: np.ndarray, pmap: PixelMap,
                 out: np.ndarray) -> int:
    """Write ``data_i - sample_j`` over ``spans`` of image i into ``out``; return the count.

    ``side_*`` is ``(array, mask or _NO_MASK, checked adapter)``; ``pmap`` the map from i
    to j fitted over (a superset of) the spans.
    """
    arr_i, good_i, _ = side_i
    arr_j, good_j, _ = side_j
    if pmap.exact:
        return _exact_differences(pmap, arr_i, good_i, arr_j, good_j, spans, out)
    return _kpairs.sample_differences(arr_i, good_i, arr_j, good_j, spans, pmap.coef_x,
                                      pmap.coef_y, pmap.norm, out)


def _image(data: Any, good: Any, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    """One image and its mask as the kernels take them (`skyeq.stats._image_and_mask`)."""
    ndim = np.ndim(np.ma.getdata(data) if isinstance(data, np.ma.MaskedArray) else data)
    if ndim != 2:
        raise ValueError(f"{what} must be a 2-D array, got {ndim} dimensions")
    return _stats._image_and_mask(data, good)


def _clipped(spans: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Clip the spans to the image and drop the empty ones."""
    ny, nx = shape
    rows, first, last = spans[:, 0], spans[:, 1], spans[:, 2]
    if (len(spans) and rows.min() >= 0 and rows.max() < ny and first.min() >= 0
            and last.max() < nx and (last >= first).all()):
        return spans  # already inside the image and none empty (overlaps' spans are)
    out = spans.copy()
    np.clip(out[:, 1], 0, None, out=out[:, 1])
    np.clip(out[:, 2], None, nx - 1, out=out[:, 2])
    keep = (out[:, 0] >= 0) & (out[:, 0] < ny) & (out[:, 2] >= out[:, 1])
    return np.ascontiguousarray(out[keep])


def _within_limits(arr: np.ndarray, mask: np.ndarray | None, stat: SkyStat) -> np.ndarray:
    """Restrict a good-pixel mask to the pixel values within the statistic's limits."""
    ok = np.ones(arr.shape, dtype=bool) if mask is None else mask.copy()
    # numpy float64 limits: compared in float64 (a Python float would be cast to a
    # float32 image's type, overflowing for limits beyond its range)
    if stat.lower is not None:
        ok &= arr >= np.float64(stat.lower)
    if stat.upper is not None:
        ok &= arr <= np.float64(stat.upper)
    return ok


def _scratch(size: int) -> np.ndarray:
    """Return this thread's float64 buffer of the differences (`skyeq.stats._scratch`)."""
    return _stats._scratch("differences", size, np.float64)


def _span_pixels(spans: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates ``(x, y)`` of every pixel of the spans, in span order."""
    lengths = spans[:, 2] - spans[:, 1] + 1
    starts = np.cumsum(lengths) - lengths
    x = np.arange(int(lengths.sum()), dtype=np.int64) + np.repeat(spans[:, 1] - starts, lengths)
    y = np.repeat(spans[:, 0], lengths)
    return x.astype(np.float64), y.astype(np.float64)


def _exact_differences(
    pmap: PixelMap,
    arr_i: np.ndarray,
    good_i: np.ndarray,
    arr_j: np.ndarray,
    good_j: np.ndarray,
    spans: np.ndarray,
    out: np.ndarray,
) -> int:
    """Write the differences through exact WCS round trips, in batches of `_CHUNK` pixels."""
    ends = np.cumsum(spans[:, 2] - spans[:, 1] + 1)
    n = 0
    start = 0
    while start < len(spans):
        base = int(ends[start - 1]) if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, base + _CHUNK, side="right")))
        chunk = spans[start:stop]
        xj, yj = pmap(*_span_pixels(chunk))
        n += _kpairs.sample_differences_at(
            arr_i, good_i, arr_j, good_j, chunk,
            np.ascontiguousarray(xj, dtype=np.float64).ravel(),
            np.ascontiguousarray(yj, dtype=np.float64).ravel(), out[n:],
        )
        start = stop
    return n


def _statistic(stat: SkyStat, diffs: np.ndarray) -> tuple[float, int, float]:
    """Value, npix and ddof=1 std of the clipped statistic of a float64 array.

    Through `skyeq.stats.region_statistics` (the whole of a one-row image, no mask: the
    kernels read the array in place), so the clipping and the statistics are exactly
    those of every other measurement.
    """
    whole, _, spread = region_statistics(stat, diffs.reshape(1, -1), None, [], whole=True,
                                         scatter=True)
    return float(whole.value), int(whole.npix), float(spread[0])
