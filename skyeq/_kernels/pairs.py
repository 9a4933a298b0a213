"""Numba kernels of pixel differences between two overlapping images (``pair_stat="difference"``).

For each pixel of image i inside an overlap (row spans of image i), image j is sampled
by bilinear interpolation at the same sky position, and ``data_i - sample`` is written
out for every pixel usable in both images; the clipped statistic of those differences
(`skyeq._pairs`) is the pair's offset. The position in image j of each pixel of image i
is either a polynomial in the pixel coordinates (`sample_differences`, fitted once per
pair by `skyeq._pairmap.fit_pixel_map`) or given (`sample_differences_at`, the exact
WCS path).

The kernels know nothing of WCSs: they take plain, native-endian numpy arrays and hold
no global state. They are compiled with ``cache=True, nogil=True`` (no ``fastmath``,
so the comparisons that reject NaN and infinite pixels stay exact), so several Python
threads may run them at once. Bad data never raises: unusable pixels are skipped.

Conventions shared by the kernels

* ``data_i``, ``data_j`` are 2-D C-contiguous arrays of the same dtype, float32 or
  float64 (one compiled signature per dtype; the caller converts a mixed pair).
* ``good_i``, ``good_j`` are 2-D C-contiguous bool arrays of their image's shape (True
  = good pixel), or a ``(0, 0)`` bool array for "no mask" (every pixel good), as
  ``skyeq.stats._NO_MASK``: the same array type either way, so no extra signature.
* ``spans`` is an int64 ``(k, 3)`` array of ``(row, first column, last column)`` of
  image i, inclusive. Pixels outside image i are skipped.
* Pixel coordinates are zero-based with pixel centres at integers.
* ``out`` is a float64 1-D array at least as long as the spans' pixels; the differences
  are computed in float64 whatever the data type.

Bilinear sampling of image j at ``(x, y)`` reads the four pixels around it,
``(floor(y) .. floor(y) + 1, floor(x) .. floor(x) + 1)``; all four must lie inside
image j, be good and be finite, otherwise the pixel of image i is skipped. A
coordinate within `SNAP` pixels of an integer is taken as that integer: its
zero-weight neighbour is then not read. So a pixel of image i that falls on a pixel
centre of image j samples that one pixel (a bad pixel of j removes the one pixel of
i that falls on it, not the four around it, and the result does not depend on the
round-off of the WCS round trip), and positions on j's last row or column (within
`SNAP`) are sampled from that row or column alone; positions beyond them, or before
the first row or column by more than `SNAP`, are outside image j and skipped.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["SNAP", "sample_differences", "sample_differences_at", "span_ends_box", "warmup"]

#: Pixel coordinates within this distance of an integer are snapped to it before
#: bilinear sampling: the sample then moves by at most ``SNAP`` times the difference
#: of two neighbouring pixels (negligible next to the map's 0.01-pixel tolerance), and
#: the set of pixels read no longer depends on round-off (see the module docstring).
SNAP = 1e-6


@njit(cache=True, nogil=True)
def _bilinear_setup(xj, yj, p0, w, nx_j, ny_j, base, step_x, step_y, tx, ty):
    """Where and with which weights to sample image j at ``xj[p0:p0 + w]``, ``yj[p0:p0 + w]``.

    Writes, for each position ``t``: the flat index in image j of the first pixel read
    (``base``), the steps to its right and lower partners (``step_x``: 1 or 0,
    ``step_y``: ``nx_j`` or 0; 0 for a weight snapped to zero, so that only pixels with a
    weight are read), and the weights ``tx``, ``ty``; ``ty`` is NaN for a position
    outside image j (or NaN), whose ``base`` is 0, so the sample comes out NaN and is
    dropped with the non-finite ones. A loop without branches or memory reads of the
    images, which the compiler vectorises.
    """
    x_hi = nx_j - 1 + SNAP
    y_hi = ny_j - 1 + SNAP
    for t in range(w):
        x = xj[p0 + t]
        y = yj[p0 + t]
        inside = (x > -SNAP) & (x < x_hi) & (y > -SNAP) & (y < y_hi)
        x = x if inside else 0.0
        y = y if inside else 0.0
        x0 = np.floor(x)
        y0 = np.floor(y)
        fx = x - x0
        fy = y - y0
        up_x = fx >= 1.0 - SNAP
        up_y = fy >= 1.0 - SNAP
        x0 = x0 + 1.0 if up_x else x0
        y0 = y0 + 1.0 if up_y else y0
        fx = 0.0 if (up_x | (fx <= SNAP)) else fx
        fy = 0.0 if (up_y | (fy <= SNAP)) else fy
        base[t] = np.int64(y0) * nx_j + np.int64(x0)
        step_x[t] = 1 if fx > 0.0 else 0
        step_y[t] = nx_j if fy > 0.0 else 0
        tx[t] = fx
        ty[t] = fy if inside else np.nan


@njit(cache=True, nogil=True)
def _sample_row(data_i, good_i, use_i, r, c0, w, flat_j, good_j, use_j, nx_j, ny_j, xj, yj, p0,
                scratch, out, n):
    """Differences over pixels ``c0 .. c0 + w - 1`` of row ``r`` of image i.

    ``xj[p0 + t]``, ``yj[p0 + t]`` is the position in image j of pixel ``c0 + t``;
    ``flat_j``, ``good_j`` are image j and its mask (when ``use_j``) raveled;
    ``scratch`` is `_row_scratch` of at least ``w``. The differences are written from
    ``out[n]`` on; returns the new count.

    Two loops: `_bilinear_setup` (vectorised) finds the pixels and weights, then one
    reads image j and keeps the finite differences. All indices there are valid and
    non-negative, hence unsigned: no wraparound code per read.
    """
    base, step_x, step_y, tx, ty = scratch
    _bilinear_setup(xj, yj, p0, w, nx_j, ny_j, base, step_x, step_y, tx, ty)
    row = data_i[r]
    for t in range(w):
        c = np.uint64(c0 + t)
        i00 = np.uint64(base[t])
        dx = np.uint64(step_x[t])
        dy = np.uint64(step_y[t])
        if use_i and not good_i[r, c]:
            continue
        if use_j and not (good_j[i00] and good_j[i00 + dx] and good_j[i00 + dy]
                          and good_j[i00 + dy + dx]):
            continue
        fx = tx[t]
        fy = ty[t]
        a00 = float(flat_j[i00])
        a01 = float(flat_j[i00 + dx])
        a10 = float(flat_j[i00 + dy])
        a11 = float(flat_j[i00 + dy + dx])
        low = (1.0 - fx) * a00 + fx * a01
        high = (1.0 - fx) * a10 + fx * a11
        d = float(row[c]) - ((1.0 - fy) * low + fy * high)
        # d - d is 0 for a finite d, NaN when data_i or a pixel of j is NaN or inf, or
        # the position is outside image j (fy NaN); a zero-weight pixel is the same
        # pixel as its partner, so it is tested too
        if (d - d) == 0.0:
            out[np.uint64(n)] = d
            n += 1
    return n


@njit(cache=True, nogil=True)
def _row_scratch(size):
    """Per-row buffers of `_sample_row` for rows of up to ``size`` pixels."""
    return (np.empty(size, dtype=np.int64), np.empty(size, dtype=np.int64),
            np.empty(size, dtype=np.int64), np.empty(size), np.empty(size))


@njit(cache=True, nogil=True)
def _horner(coef, u):
    """``sum(coef[p] * u**p)``."""
    s = 0.0
    for p in range(coef.shape[0] - 1, -1, -1):
        s = s * u + coef[p]
    return s


#: Largest total degree of the polynomial map the kernel takes.
_MAX_DEGREE = 5


@njit(cache=True, nogil=True)
def sample_differences(data_i, good_i, data_j, good_j, spans, coef_x, coef_y, norm, out):
    """Differences ``data_i - data_j(map(x, y))`` over the spans, through a polynomial map.

    Row by row, the map is evaluated at every pixel of the span, then the pixels of
    image j to read and their weights are found (two loops without branches, which the
    compiler vectorises), then image j is read and the differences kept.

    Parameters
    ----------
    data_i, good_i, data_j, good_j, spans
        Images, masks and spans of image i (see the module docstring).
    coef_x, coef_y : ndarray of float64, shape (d + 1, d + 1), d <= 5
        Power-series coefficients of the map: the position in image j of pixel
        ``(x, y)`` of image i is ``sum(coef[p, q] * u**p * v**q)`` with
        ``u = (x - norm[0]) * norm[1]``, ``v = (y - norm[2]) * norm[3]``.
    norm : ndarray of float64, shape (4,)
        The normalisation of the coordinates.
    out : ndarray of float64, 1-D
        Output, at least as long as the spans' pixels.

    Returns
    -------
    int
        Number of differences written: ``out[:n]``, in span order, for the pixels of
        image i that are good and finite and whose sample of image j is usable; -1 if
        the degree is above 5 (nothing written).
    """
    ny, nx = data_i.shape
    ny_j, nx_j = data_j.shape
    use_i = good_i.size > 0
    use_j = good_j.size > 0
    flat_j = data_j.reshape(data_j.size)
    gflat_j = good_j.reshape(good_j.size)
    deg = coef_x.shape[0] - 1
    if deg > _MAX_DEGREE or coef_y.shape[0] - 1 != deg:
        return -1
    ax = np.zeros(_MAX_DEGREE + 1)  # the row's polynomials in u, zero-padded to degree 5
    ay = np.zeros(_MAX_DEGREE + 1)
    xj = np.empty(nx)
    yj = np.empty(nx)
    scratch = _row_scratch(nx)
    n = 0
    for k in range(spans.shape[0]):
        r = spans[k, 0]
        c0 = max(spans[k, 1], 0)
        c1 = min(spans[k, 2], nx - 1)
        if r < 0 or r >= ny or c1 < c0:
            continue
        v = (r - norm[2]) * norm[3]
        for p in range(deg + 1):
            ax[p] = _horner(coef_x[p], v)
            ay[p] = _horner(coef_y[p], v)
        a0, a1, a2, a3, a4, a5 = ax[0], ax[1], ax[2], ax[3], ax[4], ax[5]
        b0, b1, b2, b3, b4, b5 = ay[0], ay[1], ay[2], ay[3], ay[4], ay[5]
        w = c1 - c0 + 1
        for t in range(w):
            u = (c0 + t - norm[0]) * norm[1]
            xj[t] = ((((a5 * u + a4) * u + a3) * u + a2) * u + a1) * u + a0
            yj[t] = ((((b5 * u + b4) * u + b3) * u + b2) * u + b1) * u + b0
        n = _sample_row(data_i, good_i, use_i, r, c0, w, flat_j, gflat_j, use_j, nx_j, ny_j,
                        xj, yj, 0, scratch, out, n)
    return n


@njit(cache=True, nogil=True)
def sample_differences_at(data_i, good_i, data_j, good_j, spans, xj, yj, out):
    """Differences ``data_i - data_j(xj, yj)`` over the spans, at given positions in image j.

    Parameters
    ----------
    data_i, good_i, data_j, good_j, spans
        Images, masks and spans of image i (see the module docstring).
    xj, yj : ndarray of float64, 1-D
        Position in image j of every pixel of the spans, in span order (one per pixel
        of the spans as given, including any outside image i, which are skipped).
    out : ndarray of float64, 1-D
        Output, at least as long as the spans' pixels.

    Returns
    -------
    int
        Number of differences written, as for `sample_differences`.
    """
    ny, nx = data_i.shape
    ny_j, nx_j = data_j.shape
    use_i = good_i.size > 0
    use_j = good_j.size > 0
    flat_j = data_j.reshape(data_j.size)
    gflat_j = good_j.reshape(good_j.size)
    scratch = _row_scratch(nx)
    n = 0
    p = 0  # index in xj, yj of the first pixel of the span
    for k in range(spans.shape[0]):
        r = spans[k, 0]
        first = spans[k, 1]
        last = spans[k, 2]
        c0 = max(first, 0)
        c1 = min(last, nx - 1)
        if 0 <= r < ny and c1 >= c0:
            n = _sample_row(data_i, good_i, use_i, r, c0, c1 - c0 + 1, flat_j, gflat_j, use_j,
                            nx_j, ny_j, xj, yj, p + c0 - first, scratch, out, n)
        p += max(last - first + 1, 0)
    return n


@njit(cache=True, nogil=True)
def _power_series(coef, u, v, s, out):
    """``out[t] = sum(coef[p, q] * u[t]**p * v[t]**q)``, as `skyeq._pairmap._polyval2d`.

    Horner in ``u`` for each power of ``v``, then in ``v``: the same operations in the
    same order, so the same values; each step a loop over the points, which the
    compiler vectorises (one point at a time, the chain of dependent steps would
    dominate). ``s`` is scratch of the points' length.
    """
    deg_u = coef.shape[0] - 1
    last_q = coef.shape[1] - 1
    for q in range(last_q, -1, -1):
        c = coef[deg_u, q]
        for t in range(u.shape[0]):
            s[t] = c
        for p in range(deg_u - 1, -1, -1):
            c = coef[p, q]
            for t in range(u.shape[0]):
                s[t] = s[t] * u[t] + c
        if q == last_q:
            for t in range(u.shape[0]):
                out[t] = s[t]
        else:
            for t in range(u.shape[0]):
                out[t] = out[t] * v[t] + s[t]


@njit(cache=True, nogil=True)
def span_ends_box(spans, coef_x, coef_y, norm):
    """Smallest and largest position in image j of the two ends of every span.

    Parameters
    ----------
    spans : ndarray of int64, shape (k, 3)
        Row spans of image i.
    coef_x, coef_y, norm
        The polynomial map, as for `sample_differences`.

    Returns
    -------
    x_min, x_max, y_min, y_max : float
        Over the positions of pixels ``(first column, row)`` and ``(last column, row)``
        of every span, NaN positions ignored (none finite: NaN), each position the
        value of `skyeq._pairmap.PixelMap.polynomial` there.
    """
    k = spans.shape[0]
    u = np.empty(2 * k)
    v = np.empty(2 * k)
    for e in range(2):
        for t in range(k):
            u[e * k + t] = (float(spans[t, 1 + e]) - norm[0]) * norm[1]
            v[e * k + t] = (float(spans[t, 0]) - norm[2]) * norm[3]
    s = np.empty(2 * k)
    x = np.empty(2 * k)
    y = np.empty(2 * k)
    _power_series(coef_x, u, v, s, x)
    _power_series(coef_y, u, v, s, y)
    x_min = y_min = np.inf
    x_max = y_max = -np.inf
    for t in range(2 * k):
        if x[t] == x[t]:
            x_min = min(x_min, x[t])
            x_max = max(x_max, x[t])
        if y[t] == y[t]:
            y_min = min(y_min, y[t])
            y_max = max(y_max, y[t])
    if x_min > x_max:  # no finite position
        x_min = x_max = np.nan
    if y_min > y_max:
        y_min = y_max = np.nan
    return x_min, x_max, y_min, y_max


def warmup() -> None:
    """Compile (or load from the cache) both kernels for float32 and float64 images."""
    no_mask = np.zeros((0, 0), dtype=np.bool_)
    spans = np.array([[0, 0, 3], [1, 0, 3]], dtype=np.int64)
    coef = np.zeros((2, 2))
    coef[1, 0] = 1.0
    norm = np.array([0.0, 1.0, 0.0, 1.0])
    xj = np.tile(np.arange(4.0), 2)
    yj = np.repeat(np.arange(2.0), 4)
    out = np.empty(8)
    for dtype in (np.float32, np.float64):
        data = np.arange(12, dtype=dtype).reshape(3, 4)
        mask = np.ones((3, 4), dtype=np.bool_)
        for good in (no_mask, mask):
            sample_differences(data, good, data, good, spans, coef, coef.T.copy(), norm, out)
            sample_differences_at(data, good, data, good, spans, xj, yj, out)
    span_ends_box(spans, coef, coef.T.copy(), norm)
