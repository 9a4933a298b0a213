"""Numba kernels: clipped sky statistics over pixel regions, and footprint geometry.

Every kernel takes plain, native-endian numpy arrays and scalars and returns plain
scalars or arrays. Kernels hold no global state and are compiled with ``nogil=True``,
so they are thread-safe: several Python threads may run them at once on different (or
the same, read-only) inputs. Bad data never raises here: a region with no usable pixel
gives ``(nan, 0)``.

Conventions shared by the kernels

* ``data`` is a 2-D C-contiguous float32 or float64 array.
* ``mask`` is a 2-D bool array of the same shape (True = good pixel) when ``use_mask``
  is true; otherwise it is ignored (pass a ``(0, 0)`` array).
* ``spans`` is an int64 ``(k, 3)`` array of ``(row, first column, last column)``
  (inclusive, non-overlapping) when ``use_spans`` is true: only those pixels are read.
  Spans are clipped to the image. Otherwise the whole image is read.
* ``lower``/``upper`` are finite float64 bounds (the caller maps "no bound" to the
  largest finite double), so the single test ``lower <= v <= upper`` also rejects NaN
  and infinite pixels.
* Statistics accumulate in float64 whatever the data type.

Floating-point reductions are compiled with ``fastmath={"reassoc"}`` only: it lets
LLVM vectorise the sums (several partial sums per SIMD register instead of one serial
chain, ~10x faster), and nothing else. ``nnan``/``ninf`` are never enabled, so the
comparisons that skip NaN and infinite pixels stay exact; results are deterministic for
a given machine (the summation order is fixed at compile time).

The geometry kernels (second half of this file) work on footprint rings.
Bad input (NaN vertices, degenerate polygons) gives empty results or a status code.

* A *ring* is an open polygon (the first vertex is not repeated), counter-clockwise.
  On the sphere, rings are ``(m, 3)`` unit vectors and "counter-clockwise" is seen from
  outside the sphere; in a tangent plane they are two coordinate arrays.
* Gnomonic (tangent-plane) projection at a unit vector ``t`` with the basis
  ``(e1, e2, t)`` (right-handed) maps great circles to straight lines and keeps the
  orientation, so convexity and counter-clockwise order carry over unchanged.
* Collections of variable-length items are stored CSR-style: a flat array plus an
  offsets array with one more entry than there are items.

The cached machine code lives in numba's cache directory (``__pycache__`` next to this
file, or ``NUMBA_CACHE_DIR`` when set).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = [
    "MAX_CELL_REGIONS",
    "STAT_MEAN",
    "STAT_MEDIAN",
    "STAT_MIDPT",
    "STAT_MODE",
    "cell_partition",
    "cell_prefix",
    "cell_stats",
    "clip_moments",
    "convex_parts",
    "histogram_stat",
    "intersect_pairs",
    "median_within",
    "moments",
    "region_stats",
    "ring_area",
    "scan_spans",
    "select_kth",
    "sky_stat",
    "sort_cells",
    "warmup",
]

STAT_MEAN = 0
STAT_MEDIAN = 1
STAT_MODE = 2
STAT_MIDPT = 3

#: fastmath flags for reductions: reassociation only (see the module docstring).
_REASSOC = {"reassoc"}
#: Largest histogram the mode/midpt kernels will build; a finer request is coarsened.
_MAX_BINS = 1 << 22
#: Relative width below which a histogram bin cannot be resolved in float32 data.
_EPS10 = 10.0 * float(np.finfo(np.float32).eps)


@njit(cache=True, nogil=True)
def _region_size(spans, use_spans, ny, nx):
    """Count the pixels of the image (or of its ``spans``, clipped to the image)."""
    if not use_spans:
        return ny * nx
    size = 0
    for k in range(spans.shape[0]):
        c0 = max(spans[k, 1], 0)
        c1 = min(spans[k, 2], nx - 1)
        if 0 <= spans[k, 0] < ny and c1 >= c0:
            size += c1 - c0 + 1
    return size


@njit(cache=True, nogil=True)
def _gather_into(buf, data, mask, use_mask, spans, use_spans, lower, upper):
    """Copy a region of an image into ``buf`` for the statistics kernels.

    Parameters
    ----------
    buf : ndarray, 1-D, same dtype as ``data``
        Output, at least as long as the region.
    data : ndarray, 2-D
        Image values.
    mask : ndarray of bool, 2-D
        Good-pixel mask, read only when ``use_mask`` is true.
    use_mask : bool
        Whether ``mask`` applies.
    spans : ndarray of int64, shape (k, 3)
        Row spans ``(row, first, last)``, read only when ``use_spans`` is true.
    use_spans : bool
        Whether to read only the pixels of ``spans`` (else the whole image).
    lower, upper : float
        Finite inclusive bounds; pixels outside them (NaN and inf included) are not
        usable.

    Returns
    -------
    n : int
        Number of values written: ``buf[:n]`` holds the region's pixel values in
        row-major order. When most of the region is good they are copied whole,
        bad-mask pixels replaced by NaN (a copy
        vectorises; compaction is a serial dependency chain three times slower);
        otherwise only the usable pixels are kept. Either way the other kernels skip
        every value outside ``[lower, upper]``, so both give the same statistics.
    """
    if use_mask:
        good = 0
        size = 0
        ny, nx = data.shape
        for k in range(spans.shape[0] if use_spans else ny):
            r, c0, c1 = _span_row(spans, use_spans, k, ny, nx)
            if r >= 0:
                size += max(c1 - c0 + 1, 0)
                for c in range(c0, c1 + 1):
                    good += mask[r, c]
        if 2 * good < size:
            return _compact_into(buf, data, mask, spans, use_spans, lower, upper)
    return _copy_into(buf, data, mask, use_mask, spans, use_spans)


@njit(cache=True, nogil=True)
def _span_row(spans, use_spans, k, ny, nx):
    """Row and clipped columns of span ``k`` (or of image row ``k``); row -1 if outside."""
    if not use_spans:
        return k, 0, nx - 1
    r = spans[k, 0]
    if r < 0 or r >= ny:
        return -1, 0, -1
    return r, max(spans[k, 1], 0), min(spans[k, 2], nx - 1)


@njit(cache=True, nogil=True)
def _copy_into(buf, data, mask, use_mask, spans, use_spans):
    """Copy the region's pixels into ``buf``, bad-mask pixels as NaN; returns the count."""
    ny, nx = data.shape
    nan = np.nan
    n = 0
    for k in range(spans.shape[0] if use_spans else ny):
        r, c0, c1 = _span_row(spans, use_spans, k, ny, nx)
        if r < 0 or c1 < c0:
            continue
        width = c1 - c0 + 1
        row = data[r, c0 : c1 + 1]
        out = buf[n : n + width]
        if use_mask:
            good = mask[r, c0 : c1 + 1]
            for c in range(width):
                out[c] = row[c] if good[c] else nan
        else:
            out[:] = row
        n += width
    return n


@njit(cache=True, nogil=True)
def _compact_into(buf, data, mask, spans, use_spans, lower, upper):
    """Copy only the usable pixels of the region into ``buf``; returns their count."""
    ny, nx = data.shape
    n = 0
    for k in range(spans.shape[0] if use_spans else ny):
        r, c0, c1 = _span_row(spans, use_spans, k, ny, nx)
        if r < 0:
            continue
        # branchless compaction: always store, advance only over usable pixels
        for c in range(c0, c1 + 1):
            v = data[r, c]
            buf[n] = v
            n += mask[r, c] & (v >= lower) & (v <= upper)
    return n


@njit(cache=True, nogil=True, fastmath=_REASSOC)
def _sums(buf, n, lo, hi, shift):
    """Count, sum and sum of squares of ``v - shift`` over ``buf[:n]`` within ``[lo, hi]``."""
    count = 0
    s = 0.0
    q = 0.0
    for k in range(n):
        v = buf[k]
        good = (v >= lo) & (v <= hi)
        d = (v - shift) if good else 0.0
        count += good
        s += d
        q += d * d
    return count, s, q


@njit(cache=True, nogil=True)
def _moments_from_sums(count, s, q, shift):
    """Count, mean and ddof=1 std from the count and sums of ``v - shift`` and its square."""
    if count == 0:
        return 0, np.nan, np.nan
    dmean = s / count
    mean = shift + dmean
    if count == 1:
        return 1, mean, 0.0
    var = (q - s * dmean) / (count - 1)
    if var < 0.0:
        var = 0.0
    return count, mean, math.sqrt(var)


@njit(cache=True, nogil=True)
def moments(buf, n, lo, hi, shift):
    """Count, mean and sample standard deviation of ``buf[:n]`` within ``[lo, hi]``.

    One vectorised pass of shifted sums, ``v - shift`` and its square, in float64.
    ``shift`` should be close to the mean for accuracy (any finite value is correct).

    Returns
    -------
    count : int
    mean : float
        NaN when ``count`` is 0.
    std : float
        ddof=1 standard deviation; 0.0 for a single pixel, NaN when ``count`` is 0.
    """
    count, s, q = _sums(buf, n, lo, hi, shift)
    return _moments_from_sums(count, s, q, shift)


@njit(cache=True, nogil=True)
def _first_within(buf, n, lo, hi):
    """First value of ``buf[:n]`` within ``[lo, hi]`` (as float), or NaN."""
    for k in range(n):
        v = buf[k]
        if v >= lo and v <= hi:
            return float(v)
    return np.nan


@njit(cache=True, nogil=True)
def _moments_of(kind, buf, n, vals, p1, p2, poff, cstart, cend, cells, lo, hi, shift):
    """One moments pass: over ``buf[:n]`` (``kind`` 0) or over sorted cells (``kind`` 1)."""
    if kind == 0:
        return moments(buf, n, lo, hi, shift)
    return _cell_moments(vals, p1, p2, poff, cstart, cend, cells, lo, hi, shift)


@njit(cache=True, nogil=True)
def _clip(kind, buf, n, vals, p1, p2, poff, cstart, cend, cells, shift0, lower, upper, nclip,
          lsig, usig):
    """Run the clipping loop of `clip_moments` over a buffer or over sorted cells.

    ``kind`` 0 reads ``buf[:n]`` (the cell arguments are placeholders); ``kind`` 1 reads
    the cells ``cells`` of a partition (`cell_partition`) with block prefix sums
    (`cell_prefix`) shifted by ``shift0`` (``buf`` and ``n`` are placeholders).
    """
    lo = lower
    hi = upper
    if kind == 0:
        if n == 0:
            return 0, np.nan, np.nan, lo, hi
        shift = _first_within(buf, n, lo, hi)
        if shift != shift:
            return 0, np.nan, np.nan, lo, hi
    else:
        shift = shift0
    count, mean, std = _moments_of(kind, buf, n, vals, p1, p2, poff, cstart, cend, cells, lo,
                                   hi, shift)
    if kind == 0:
        shift = mean
    prev_count = -1
    prev_mean = np.nan
    prev_std = np.nan
    for _ in range(nclip):
        if count == 0:
            break
        new_lo = max(lower, mean - lsig * std)
        new_hi = min(upper, mean + usig * std)
        if count == prev_count and mean == prev_mean and std == prev_std:
            # same pixel set as the previous pass, computed with the same shift:
            # every further pass is identical
            lo = new_lo
            hi = new_hi
            break
        lo = new_lo
        hi = new_hi
        prev_count = count
        prev_mean = mean
        prev_std = std
        count, mean, std = _moments_of(kind, buf, n, vals, p1, p2, poff, cstart, cend, cells,
                                       lo, hi, shift)
    return count, mean, std, lo, hi


@njit(cache=True, nogil=True)
def clip_moments(buf, n, lower, upper, nclip, lsig, usig):
    """Sigma-clipped moments of ``buf[:n]`` (all of which lie in ``[lower, upper]``).

    Runs ``nclip + 1`` moments passes over the whole buffer. After each of the first
    ``nclip`` passes the bounds become ``[mean - lsig*std, mean + usig*std]``
    intersected with ``[lower, upper]``; every pass reads all of ``buf[:n]``, so pixels
    rejected earlier come back if the bounds widen. When a pass keeps exactly the same
    pixels as the one before, the remaining passes would repeat it bit for bit, so
    they are skipped (the result is identical).

    Returns
    -------
    count, mean, std : int, float, float
        Of the final pass (``count`` 0 and NaNs when no pixel survives).
    lo, hi : float
        The bounds that final pass used.
    """
    f0 = np.empty(0)
    i0 = np.empty(0, dtype=np.int64)
    return _clip(0, buf, n, buf, f0, f0, i0, i0, i0, i0, 0.0, lower, upper, nclip, lsig, usig)


@njit(cache=True, nogil=True)
def select_kth(a, n, k):
    """Return the ``k``-th smallest of ``a[:n]``, partially reordering ``a`` in place.

    Hoare-style quickselect with a median-of-three pivot; equal values split evenly,
    so constant data stays linear. If the partitioning degenerates (many more rounds
    than a balanced split needs) the remaining range is sorted instead. On return
    ``a[:k]`` holds values ``<= a[k]`` and ``a[k+1:n]`` values ``>= a[k]``.
    """
    left = 0
    right = n - 1
    budget = 4 * (int(math.log2(n + 1)) + 4)
    while right > left:
        budget -= 1
        if budget < 0:
            a[left : right + 1] = np.sort(a[left : right + 1])
            return a[k]
        mid = (left + right) // 2
        if a[mid] < a[left]:
            a[mid], a[left] = a[left], a[mid]
        if a[right] < a[left]:
            a[right], a[left] = a[left], a[right]
        if a[right] < a[mid]:
            a[right], a[mid] = a[mid], a[right]
        pivot = a[mid]
        i = left
        j = right
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if k <= j:
            right = j
        elif k >= i:
            left = i
        else:
            return a[k]
    return a[k]


#: Bins of the coarse histogram that locates the median before the exact selection.
_MEDIAN_BINS = 4096


@njit(cache=True, nogil=True)
def _select_median(work, m):
    """Median of ``work[:m]`` (``m > 0``) by selection; ``work`` is reordered."""
    half = m // 2
    upper_mid = float(select_kth(work, m, half))
    if m % 2 == 1:
        return upper_mid
    lower_mid = work[0]
    for k in range(1, half):
        if work[k] > lower_mid:
            lower_mid = work[k]
    return 0.5 * (float(lower_mid) + upper_mid)


@njit(cache=True, nogil=True)
def _median_by_copy(buf, n, lo, hi):
    """Exact median of ``buf[:n]`` within ``[lo, hi]``: copy the survivors, select."""
    work = np.empty(n, dtype=buf.dtype)
    m = 0
    for k in range(n):
        v = buf[k]
        work[m] = v
        m += (v >= lo) & (v <= hi)
    if m == 0:
        return np.nan
    return _select_median(work, m)


@njit(cache=True, nogil=True)
def _bin_counts(buf, n, lo, hi, a, scale, nb):
    """Count ``buf[:n]`` within ``[lo, hi]`` in ``nb`` bins from ``a``; also return the sum.

    Kept as its own kernel: compiled inside `median_within` the same loop ran 2.5x
    slower (measured with numba 0.68).
    """
    counts = np.zeros(nb, dtype=np.int64)
    m = 0
    for k in range(n):
        v = buf[k]
        if v >= lo and v <= hi:
            idx = min(max(int((v - a) * scale), 0), nb - 1)
            counts[idx] += 1
            m += 1
    return counts, m


@njit(cache=True, nogil=True)
def _values_in_bins(buf, n, lo, hi, a, scale, nb, b_lo, b_hi, size):
    """Copy the values of ``buf[:n]`` within ``[lo, hi]`` that fall in bins ``b_lo..b_hi``.

    The bin of a value is computed exactly as in `_bin_counts`, so ``size`` (their count
    there) is the number copied.
    """
    work = np.empty(size, dtype=buf.dtype)
    w = 0
    for k in range(n):
        v = buf[k]
        if v >= lo and v <= hi:
            idx = min(max(int((v - a) * scale), 0), nb - 1)
            if idx >= b_lo and idx <= b_hi:
                work[w] = v
                w += 1
    return work, w


@njit(cache=True, nogil=True)
def median_within(buf, n, lo, hi):
    """Exact median of the values of ``buf[:n]`` within ``[lo, hi]``.

    A coarse histogram (`_MEDIAN_BINS` bins over the value range) finds the bin(s)
    holding the middle rank(s); only the values of those bins are copied and
    partially ordered by `select_kth`. When those bins hold a large share of the
    pixels (heavily quantised data) the survivors are all copied and selected instead.
    ``buf`` is not modified. An even count gives the mean of the two middle values.
    NaN when no value survives.
    """
    a = lo
    b = hi
    if not (b - a < 1e300):
        a, b = _minmax_within(buf, n, lo, hi)
        if a > b:
            return np.nan
    if not (b > a):
        return _median_by_copy(buf, n, lo, hi)
    nb = _MEDIAN_BINS
    scale = nb / (b - a)
    counts, m = _bin_counts(buf, n, lo, hi, a, scale, nb)
    if m == 0:
        return np.nan
    half = m // 2
    r_lo = half - 1 if m % 2 == 0 else half
    cum = 0
    b_lo = -1
    b_hi = -1
    before_lo = 0
    for idx in range(nb):
        c = counts[idx]
        if b_lo < 0 and cum + c > r_lo:
            b_lo = idx
            before_lo = cum
        if cum + c > half:
            b_hi = idx
            break
        cum += c
    size = 0
    for idx in range(b_lo, b_hi + 1):
        size += counts[idx]
    if size > max(4096, m // 8):
        return _median_by_copy(buf, n, lo, hi)
    work, w = _values_in_bins(buf, n, lo, hi, a, scale, nb, b_lo, b_hi, size)
    upper_mid = float(select_kth(work, w, half - before_lo))
    if m % 2 == 1:
        return upper_mid
    k_lo = r_lo - before_lo
    lower_mid = float(select_kth(work, w, k_lo))
    return 0.5 * (lower_mid + upper_mid)


@njit(cache=True, nogil=True)
def _minmax_within(buf, n, lo, hi):
    """Smallest and largest values of ``buf[:n]`` within ``[lo, hi]`` (inf, -inf if none)."""
    mn = np.inf
    mx = -np.inf
    for k in range(n):
        v = buf[k]
        if v >= lo and v <= hi:
            if v < mn:
                mn = v
            if v > mx:
                mx = v
    return float(mn), float(mx)


@njit(cache=True, nogil=True)
def _hist_counts(buf, n, h0, top, upper, inv, nbins):
    """Histogram of ``buf[:n]`` in ``[h0, top)`` and not above ``upper``.

    The bin index is ``int(inv * (v - h0))`` in the precision of ``h0``/``inv`` (the
    data's, see `histogram_stat`). A kernel of its own for speed (see `_bin_counts`).
    """
    counts = np.zeros(nbins, dtype=np.int64)
    for k in range(n):
        v = buf[k]
        if v >= h0 and v < top and v <= upper:
            b = int(inv * (v - h0))
            if b < nbins:
                counts[b] += 1
    return counts


@njit(cache=True, nogil=True)
def histogram_stat(buf, n, lo, hi, upper, std, binwidth, want_midpt):
    """Histogram mode or midpt of the clipped pixels of ``buf[:n]``.

    Bin rules (as the reference): ``hw = binwidth * std``; with ``mn``/``mx`` the
    smallest/largest values within the final clip bounds ``[lo, hi]`` and
    ``drange = mx - mn``, one bin is used when ``hw`` or ``drange`` is below float32
    resolution of the data or ``hw > drange``; otherwise ``nbins = int(drange / hw) + 1``
    bins of width ``dz = drange / (nbins - 1)`` start at ``mn``, and every value of
    ``buf[:n]`` in ``[mn, mn + nbins*dz)`` (and not above the user limit ``upper``) is
    counted, with the bin index computed in the data's precision. Bin positions are
    converted back to data values with ``hw``.

    Returns
    -------
    float
        The mode (``want_midpt`` false) or midpt; NaN when no pixel survives. The midpt
        of a single bin is the exact median of the survivors; the mode of a single bin
        is ``mn + hw / 2``.
    """
    i0 = np.empty(0, dtype=np.int64)
    return _hist_stat(0, buf, n, buf, i0, i0, i0, lo, hi, upper, std, binwidth, want_midpt)


@njit(cache=True, nogil=True)
def _hist_stat(kind, buf, n, vals, cstart, cend, cells, lo, hi, upper, std, binwidth,
               want_midpt):
    """`histogram_stat` over ``buf[:n]`` (``kind`` 0) or over sorted cells (``kind`` 1).

    For ``kind`` 1 pass ``vals`` as ``buf`` (it sets the precision of the binning).
    """
    if kind == 0:
        mn, mx = _minmax_within(buf, n, lo, hi)
    else:
        mn, mx = _cell_minmax(vals, cstart, cend, cells, lo, hi)
    if mn > mx:
        return np.nan
    hw = binwidth * std
    drange = mx - mn
    tiny = _EPS10 * max(abs(mn), abs(mx))
    if hw <= tiny or drange <= tiny or hw > drange:
        if want_midpt:
            if kind == 0:
                return median_within(buf, n, lo, hi)
            return _cell_median(vals, cstart, cend, cells, lo, hi)
        return mn + 0.5 * hw
    nbins = int(drange / hw) + 1
    if nbins > _MAX_BINS:
        nbins = _MAX_BINS
        hw = drange / (nbins - 1)
    dz = drange / (nbins - 1)
    # Bin in the data's own precision (float32 arithmetic for float32 images, as the
    # reference does): the mode's parabolic refinement is sensitive to the few values
    # that float32 rounding moves across a bin edge.
    typed = np.empty(4, dtype=buf.dtype)
    typed[0] = mn
    typed[1] = dz
    typed[2] = 1.0
    typed[3] = nbins
    h0 = typed[0]
    bw = typed[1]
    inv = typed[2] / bw
    top = h0 + bw * typed[3]
    if kind == 0:
        counts = _hist_counts(buf, n, h0, top, upper, inv, nbins)
    else:
        counts = _cell_hist_counts(vals, cstart, cend, cells, h0, top, upper, inv, nbins)
    if want_midpt:
        total = 0
        for b in range(nbins):
            total += counts[b]
        half = 0.5 * total
        cum = 0
        lo_bin = 0
        for b in range(nbins):
            if cum + counts[b] >= half:
                lo_bin = b
                break
            cum += counts[b]
        h1 = mn + lo_bin * hw
        hd = counts[lo_bin] / total
        if hd == 0.0:
            return h1
        return h1 + ((0.5 - cum / total) / hd) * hw
    p = 0
    for b in range(1, nbins):
        if counts[b] > counts[p]:
            p = b
    if nbins == 2:
        if counts[0] > counts[1]:
            return mn + 0.5 * hw
        if counts[0] < counts[1]:
            return mn + 1.5 * hw
        return mn + hw
    if p == 0:
        return mn + 0.5 * hw
    if p == nbins - 1:
        return mn + (nbins - 0.5) * hw
    d1 = float(counts[p] - counts[p - 1])
    d2 = float(counts[p] - counts[p + 1])
    if d1 + d2 == 0.0:
        return mn + (p + 0.5) * hw
    return mn + (p + 0.5 + 0.5 * (d1 - d2) / (d1 + d2)) * hw


@njit(cache=True, nogil=True)
def _stat_of_buffer(buf, n, lower, upper, nclip, lsig, usig, binwidth, code):
    """Compute statistic ``code`` of ``buf[:n]`` (values outside the limits are ignored)."""
    count, mean, std, lo, hi = clip_moments(buf, n, lower, upper, nclip, lsig, usig)
    if count == 0:
        return np.nan, 0
    if code == STAT_MEAN:
        return mean, count
    if code == STAT_MEDIAN:
        return median_within(buf, n, lo, hi), count
    return histogram_stat(buf, n, lo, hi, upper, std, binwidth, code == STAT_MIDPT), count


@njit(cache=True, nogil=True)
def sky_stat(
    data, mask, use_mask, spans, use_spans, lower, upper, nclip, lsig, usig, binwidth, code
):
    """Clipped sky statistic of one image region.

    With neither a mask nor spans the kernels read the image in place (no copy);
    otherwise the region is gathered once into a buffer (see `_gather_into`) that the
    clipping passes then read. Returns the statistic selected by ``code``
    (``STAT_MEAN``, ``STAT_MEDIAN``, ``STAT_MODE``, ``STAT_MIDPT``) and the number of
    pixels of the final clipping pass.

    Returns
    -------
    value : float
        NaN when no pixel is usable.
    npix : int
    """
    ny, nx = data.shape
    size = _region_size(spans, use_spans, ny, nx) if (use_mask or use_spans) else 0
    buf = np.empty(size, dtype=data.dtype)
    return _region_stat(buf, data, mask, use_mask, spans, use_spans, lower, upper, nclip, lsig,
                        usig, binwidth, code)


@njit(cache=True, nogil=True)
def _region_stat(buf, data, mask, use_mask, spans, use_spans, lower, upper, nclip, lsig, usig,
                 binwidth, code):
    """`sky_stat` with a given gather buffer (large enough; unused for the plain image)."""
    if use_mask or use_spans:
        n = _gather_into(buf, data, mask, use_mask, spans, use_spans, lower, upper)
        return _stat_of_buffer(buf, n, lower, upper, nclip, lsig, usig, binwidth, code)
    flat = data.reshape(data.size)
    return _stat_of_buffer(flat, flat.size, lower, upper, nclip, lsig, usig, binwidth, code)


@njit(cache=True, nogil=True)
def region_stats(data, mask, use_mask, spans, reg_off, whole, lower, upper, nclip, lsig, usig,
                 binwidth, code):
    """`sky_stat` of several regions of one image (and of the whole image), one buffer.

    The regions' pixels are gathered in turn into one buffer allocated once for the
    largest region (touching fresh memory costs about as much as a clipping pass).

    Parameters
    ----------
    data, mask, use_mask, lower, upper, nclip, lsig, usig, binwidth, code
        As for `sky_stat`.
    spans : ndarray of int64, shape (k, 3)
        Every region's row spans, concatenated.
    reg_off : ndarray of int64, shape (R + 1,)
        Offsets of each region's spans.
    whole : bool
        Also compute the statistic of the whole image (last entry).

    Returns
    -------
    value : ndarray of float64, shape (R + whole,)
    npix : ndarray of int64
    """
    ny, nx = data.shape
    nreg = reg_off.shape[0] - 1
    nout = nreg + (1 if whole else 0)
    value = np.full(nout, np.nan)
    npix = np.zeros(nout, dtype=np.int64)
    size = ny * nx if (whole and use_mask) else 0
    for r in range(nreg):
        size = max(size, _region_size(spans[reg_off[r] : reg_off[r + 1]], True, ny, nx))
    buf = np.empty(size, dtype=data.dtype)
    for r in range(nout):
        in_region = r < nreg
        region = spans[reg_off[r] : reg_off[r + 1]] if in_region else spans[:0]
        value[r], npix[r] = _region_stat(buf, data, mask, use_mask, region, in_region, lower,
                                         upper, nclip, lsig, usig, binwidth, code)
    return value, npix


# --------------------------------------------------------------------------------------
# many regions of one image: sorted cells
# --------------------------------------------------------------------------------------
# When the regions of one image overlap heavily (dithers: every overlap is nearly the
# whole image), reading every region's pixels in every clipping pass costs regions x
# pixels. Instead the image is cut once into *cells*, the maximal sets of pixels covered
# by the same regions (`cell_partition`); the usable values of every cell are sorted
# once (by the caller, with numpy's sort) and given block prefix sums of their shifted
# values and squares (`cell_prefix`). Then a moments pass of a region is two binary searches
# per cell, its median a selection over the cells' sorted runs and its histogram a
# binary search per bin edge (`cell_stats`). The pixel sets are exactly those of the
# buffer kernels; only the order of summation (the last bits of mean and sigma) differs.

#: Regions one partition can hold (a cell is keyed by an int64 bit set of its regions).
MAX_CELL_REGIONS = 62


@njit(cache=True, nogil=True)
def _first_at_least(vals, a, b, x):
    """First index in ``[a, b)`` of sorted ``vals`` with ``vals[k] >= x`` (``b`` if none)."""
    while a < b:
        m = (a + b) >> 1
        if vals[m] < x:
            a = m + 1
        else:
            b = m
    return a


@njit(cache=True, nogil=True)
def _first_above(vals, a, b, x):
    """First index in ``[a, b)`` of sorted ``vals`` with ``vals[k] > x`` (``b`` if none)."""
    while a < b:
        m = (a + b) >> 1
        if vals[m] <= x:
            a = m + 1
        else:
            b = m
    return a


@njit(cache=True, nogil=True)
def cell_partition(data, mask, use_mask, spans, reg_off, lower, upper, with_rest):
    """Cut an image into cells of equal region coverage and gather their usable pixels.

    Parameters
    ----------
    data : ndarray, 2-D
        Image values.
    mask : ndarray of bool, 2-D
        Good-pixel mask, read only when ``use_mask`` is true.
    use_mask : bool
        Whether ``mask`` applies.
    spans : ndarray of int64, shape (k, 3)
        The row spans of every region, concatenated; each region's spans sorted by row
        and disjoint.
    reg_off : ndarray of int64, shape (R + 1,)
        Offsets of each region's spans in ``spans`` (``R <= MAX_CELL_REGIONS``).
    lower, upper : float
        Finite inclusive bounds on usable values (NaN and inf are never usable).
    with_rest : bool
        Also gather the pixels that lie in no region (the cell with key 0).

    Returns
    -------
    vals : ndarray, 1-D, data dtype
        The usable values, cell by cell (unsorted); cell ``c`` holds
        ``vals[cstart[c]:cend[c]]``, cells are separated by at least one unused slot.
    cstart, cend : ndarray of int64
        Where each cell's values start and end.
    keys : ndarray of int64
        Each cell's regions as a bit set (bit ``r`` for region ``r``), ascending.
    """
    ny, nx = data.shape
    nreg = reg_off.shape[0] - 1
    ptr = reg_off[:-1].copy()
    ev_col = np.empty(2 * spans.shape[0] + 2, dtype=np.int64)
    ev_bit = np.empty(2 * spans.shape[0] + 2, dtype=np.int64)
    seg = np.empty((256, 4), dtype=np.int64)
    nseg = 0
    for y in range(ny):
        ne = 0
        for r in range(nreg):
            p = ptr[r]
            stop = reg_off[r + 1]
            while p < stop and spans[p, 0] < y:
                p += 1
            while p < stop and spans[p, 0] == y:
                c0 = max(spans[p, 1], 0)
                c1 = min(spans[p, 2], nx - 1)
                if c1 >= c0:
                    ev_col[ne] = c0
                    ev_bit[ne] = np.int64(1) << r
                    ev_col[ne + 1] = c1 + 1
                    ev_bit[ne + 1] = -(np.int64(1) << r)
                    ne += 2
                p += 1
            ptr[r] = p
        # insertion sort of the row's events by column (few per row)
        for u in range(1, ne):
            cv = ev_col[u]
            bv = ev_bit[u]
            w = u - 1
            while w >= 0 and ev_col[w] > cv:
                ev_col[w + 1] = ev_col[w]
                ev_bit[w + 1] = ev_bit[w]
                w -= 1
            ev_col[w + 1] = cv
            ev_bit[w + 1] = bv
        key = np.int64(0)
        x = 0
        for e in range(ne + 1):
            col = ev_col[e] if e < ne else nx
            if col > x:
                if key != 0 or with_rest:
                    seg = _grow(seg, nseg + 1)
                    seg[nseg, 0] = y
                    seg[nseg, 1] = x
                    seg[nseg, 2] = col - 1
                    seg[nseg, 3] = key
                    nseg += 1
                x = col
            if e < ne:
                key += ev_bit[e]
    keys = np.unique(seg[:nseg, 3])
    ncell = keys.shape[0]
    cid = np.searchsorted(keys, seg[:nseg, 3])
    cap = np.zeros(ncell, dtype=np.int64)
    for k in range(nseg):
        cap[cid[k]] += seg[k, 2] - seg[k, 1] + 1
    cstart = np.empty(ncell, dtype=np.int64)
    total = 0
    for c in range(ncell):
        cstart[c] = total
        total += cap[c] + 1  # one spare slot: the branchless store below may write there
    vals = np.empty(max(total, 1), dtype=data.dtype)
    cend = cstart.copy()
    for k in range(nseg):
        c = cid[k]
        r = seg[k, 0]
        w = cend[c]
        if use_mask:
            for col in range(seg[k, 1], seg[k, 2] + 1):
                v = data[r, col]
                vals[w] = v
                w += mask[r, col] & (v >= lower) & (v <= upper)
        else:
            for col in range(seg[k, 1], seg[k, 2] + 1):
                v = data[r, col]
                vals[w] = v
                w += (v >= lower) & (v <= upper)
        cend[c] = w
    return vals, cstart, cend, keys


#: Cells with fewer values than this are sorted by numba's quicksort, larger ones by the
#: radix sort of `sort_cells`.
_RADIX_MIN = 2048


#: Bits per radix-sort digit: 256 buckets (the scatter stays in cache; measured faster
#: than 11-bit digits, which need fewer passes). A pass whose digit never varies (the
#: sign and the exponent of a sky image, typically) is skipped.
_RADIX_BITS = 8


@njit(cache=True, nogil=True, inline="always")
def _to_key(u, signbit, allbits):
    """Float bit pattern -> unsigned key in the same order (negatives flipped)."""
    return u ^ allbits if u & signbit else u | signbit


@njit(cache=True, nogil=True, inline="always")
def _from_key(k, signbit, allbits):
    """Inverse of `_to_key`."""
    return k ^ signbit if k & signbit else k ^ allbits


@njit(cache=True, nogil=True)
def _radix_sort_floats(bits, signbit, tmp):
    """Sort floats given as bit patterns, in place: LSD radix sort on order keys.

    The float order is the unsigned order of the keys `_to_key` makes; keys are made
    while the first pass reads and turned back while the last one writes, and the
    passes alternate between two scratch halves so that the last one lands in
    ``bits``. The histograms of every digit are counted in one read, and a digit that
    never varies costs no pass.

    Parameters
    ----------
    bits : ndarray of uint32 or uint64, 1-D
        The values' bit patterns (no NaN); sorted by value on return.
    signbit : uint32 or uint64
        The sign bit of that width.
    tmp : ndarray, same dtype, at least twice as long as ``bits``
        Scratch space.
    """
    n = bits.shape[0]
    allbits = ~(signbit ^ signbit)
    nbuck = 1 << _RADIX_BITS
    ndig = (8 * bits.itemsize) // _RADIX_BITS
    hist = np.zeros((ndig, nbuck), dtype=np.int64)
    for i in range(n):
        k = _to_key(bits[i], signbit, allbits)
        for d in range(ndig):
            hist[d, (k >> (_RADIX_BITS * d)) & (nbuck - 1)] += 1
    first = _to_key(bits[0], signbit, allbits)
    digits = np.empty(ndig, dtype=np.int64)
    npass = 0
    for d in range(ndig):
        if hist[d, (first >> (_RADIX_BITS * d)) & (nbuck - 1)] != n:
            digits[npass] = d
            npass += 1
    if npass == 0:
        return  # all values equal
    a = tmp[:n]
    b = tmp[n : 2 * n]
    pos = np.empty(nbuck, dtype=np.int64)
    for q in range(npass):
        d = digits[q]
        shift = _RADIX_BITS * d
        total = 0
        for c in range(nbuck):
            pos[c] = total
            total += hist[d, c]
        # source: bits (as keys) on the first pass, else the scratch half written last
        src = bits if q == 0 else (a if q % 2 == 1 else b)
        if q == npass - 1 and npass > 1:
            for i in range(n):
                k = src[i]
                c = (k >> shift) & (nbuck - 1)
                bits[pos[c]] = _from_key(k, signbit, allbits)
                pos[c] += 1
        else:
            dst = a if q % 2 == 0 else b
            for i in range(n):
                k = src[i]
                if q == 0:
                    k = _to_key(k, signbit, allbits)
                c = (k >> shift) & (nbuck - 1)
                dst[pos[c]] = k
                pos[c] += 1
    if npass == 1:
        for i in range(n):
            bits[i] = _from_key(a[i], signbit, allbits)


@njit(cache=True, nogil=True)
def _sort_cells_bits(bits, signbit, cstart, cend, tmp):
    """Sort the floats whose bit patterns are ``bits``, cell by cell, by radix.

    Parameters
    ----------
    bits : ndarray of uint32 or uint64
        The values viewed as unsigned integers (no NaN among the used slots).
    signbit : uint32 or uint64
        The sign bit of that width.
    cstart, cend : ndarray of int64
        The cells.
    tmp : ndarray, same dtype as ``bits``
        Scratch space, at least twice as long as the largest cell.
    """
    for c in range(cstart.shape[0]):
        a = cstart[c]
        n = cend[c] - a
        if n >= _RADIX_MIN:
            _radix_sort_floats(bits[a : a + n], signbit, tmp)


@njit(cache=True, nogil=True)
def _sort_small_cells(vals, cstart, cend):
    """Sort in place every cell with fewer than `_RADIX_MIN` values (numba quicksort)."""
    for c in range(cstart.shape[0]):
        if cend[c] - cstart[c] < _RADIX_MIN:
            vals[cstart[c] : cend[c]].sort()


def sort_cells(vals, cstart, cend, scratch=None):
    """Sort the values of every cell of `cell_partition` in place, ascending.

    The same order as ``vals[a:b].sort()`` for every cell (equal values are
    indistinguishable, but ``-0.0`` now always precedes ``+0.0``), in linear time for
    large cells: a float sorts as its bit pattern once negative patterns are inverted,
    so a byte-wise radix sort of the patterns is a sort of the values (about 5x faster
    than numpy's sort where numpy has no SIMD sort for the type).

    Parameters
    ----------
    vals : ndarray of float32 or float64, 1-D, C-contiguous
        The gathered values; the slots outside the cells are not touched.
    cstart, cend : ndarray of int64
        Where each cell's values start and end.
    scratch : ndarray of uint8, optional
        Reusable scratch memory of at least ``2 * vals.itemsize`` times the largest cell
        (fresh memory is slow to touch); allocated when None or too small.
    """
    _sort_small_cells(vals, cstart, cend)
    sizes = cend - cstart
    nmax = int(sizes.max()) if sizes.size else 0
    if nmax < _RADIX_MIN:
        return
    need = 2 * nmax * vals.itemsize
    if scratch is None or scratch.size < need:
        scratch = np.empty(need, dtype=np.uint8)
    if vals.dtype == np.float32:
        _sort_cells_bits(vals.view(np.uint32), np.uint32(1 << 31), cstart, cend,
                         scratch[:need].view(np.uint32))
    else:
        _sort_cells_bits(vals.view(np.uint64), np.uint64(1 << 63), cstart, cend,
                         scratch[:need].view(np.uint64))


#: Values per block of the prefix sums of `cell_prefix`.
_BLOCK = 64


@njit(cache=True, nogil=True)
def cell_prefix(vals, cstart, cend, shift):
    """Block prefix sums of ``v - shift`` and its square over every (sorted) cell.

    Only every `_BLOCK`-th prefix sum is stored (a full prefix array would be twice the
    image in float64, and fresh memory is slow to touch); `_cell_prefix_at` adds the
    rest of a block when a sum is needed.

    Returns
    -------
    p1, p2 : ndarray of float64
        ``p[poff[c] + j]`` is the sum over the first ``j * _BLOCK`` values of cell ``c``.
    poff : ndarray of int64
        Where each cell's block sums start.
    """
    ncell = cstart.shape[0]
    poff = np.empty(ncell, dtype=np.int64)
    total = 0
    for c in range(ncell):
        poff[c] = total
        total += (cend[c] - cstart[c]) // _BLOCK + 1
    p1 = np.empty(total)
    p2 = np.empty(total)
    for c in range(ncell):
        s = 0.0
        q = 0.0
        j = poff[c]
        p1[j] = 0.0
        p2[j] = 0.0
        a = cstart[c]
        for k in range(a, cend[c]):
            d = vals[k] - shift
            s += d
            q += d * d
            if (k + 1 - a) % _BLOCK == 0:
                j += 1
                p1[j] = s
                p2[j] = q
    return p1, p2, poff


@njit(cache=True, nogil=True)
def _cell_prefix_at(vals, p1, p2, poff, a, c, k, shift):
    """Sum ``v - shift`` and its square over values ``a .. k - 1`` of the cell from ``a``."""
    j = (k - a) // _BLOCK
    s = p1[poff[c] + j]
    q = p2[poff[c] + j]
    for i in range(a + j * _BLOCK, k):
        d = vals[i] - shift
        s += d
        q += d * d
    return s, q


@njit(cache=True, nogil=True)
def _cell_moments(vals, p1, p2, poff, cstart, cend, cells, lo, hi, shift):
    """Count, mean and ddof=1 std of the values within ``[lo, hi]`` of some cells."""
    count = 0
    s = 0.0
    q = 0.0
    for i in range(cells.shape[0]):
        c = cells[i]
        a = _first_at_least(vals, cstart[c], cend[c], lo)
        b = _first_above(vals, a, cend[c], hi)
        if b == a:
            continue
        count += b - a
        sb, qb = _cell_prefix_at(vals, p1, p2, poff, cstart[c], c, b, shift)
        sa, qa = _cell_prefix_at(vals, p1, p2, poff, cstart[c], c, a, shift)
        s += sb - sa
        q += qb - qa
    return _moments_from_sums(count, s, q, shift)


@njit(cache=True, nogil=True)
def _cell_ranges(vals, cstart, cend, cells, lo, hi):
    """Index ranges ``[a, b)`` of the values within ``[lo, hi]`` in every cell of ``cells``."""
    nc = cells.shape[0]
    a = np.empty(nc, dtype=np.int64)
    b = np.empty(nc, dtype=np.int64)
    for i in range(nc):
        c = cells[i]
        a[i] = _first_at_least(vals, cstart[c], cend[c], lo)
        b[i] = _first_above(vals, a[i], cend[c], hi)
    return a, b


@njit(cache=True, nogil=True)
def _cell_kth(vals, a, b, k):
    """Return the ``k``-th smallest value of the sorted runs ``vals[a[i]:b[i]]``.

    ``a`` and ``b`` are consumed. Each round splits the longest run at its middle value
    and keeps the side that holds rank ``k``, so it takes O(runs * log n) rounds.
    """
    nc = a.shape[0]
    lt = np.empty(nc, dtype=np.int64)
    le = np.empty(nc, dtype=np.int64)
    while True:
        best = 0
        size = -1
        for i in range(nc):
            if b[i] - a[i] > size:
                size = b[i] - a[i]
                best = i
        piv = vals[(a[best] + b[best]) >> 1]
        nlt = 0
        nle = 0
        for i in range(nc):
            lt[i] = _first_at_least(vals, a[i], b[i], piv)
            le[i] = _first_above(vals, lt[i], b[i], piv)
            nlt += lt[i] - a[i]
            nle += le[i] - a[i]
        if k < nlt:
            b[:] = lt
        elif k < nle:
            return float(piv)
        else:
            k -= nle
            a[:] = le


@njit(cache=True, nogil=True)
def _cell_median(vals, cstart, cend, cells, lo, hi):
    """Exact median of the values within ``[lo, hi]`` of some cells (NaN if none)."""
    a, b = _cell_ranges(vals, cstart, cend, cells, lo, hi)
    m = 0
    for i in range(a.shape[0]):
        m += b[i] - a[i]
    if m == 0:
        return np.nan
    half = m // 2
    upper_mid = _cell_kth(vals, a.copy(), b.copy(), half)
    if m % 2 == 1:
        return upper_mid
    return 0.5 * (_cell_kth(vals, a, b, half - 1) + upper_mid)


@njit(cache=True, nogil=True)
def _cell_minmax(vals, cstart, cend, cells, lo, hi):
    """Smallest and largest values within ``[lo, hi]`` of some cells (inf, -inf if none)."""
    mn = np.inf
    mx = -np.inf
    a, b = _cell_ranges(vals, cstart, cend, cells, lo, hi)
    for i in range(a.shape[0]):
        if b[i] > a[i]:
            mn = min(mn, float(vals[a[i]]))
            mx = max(mx, float(vals[b[i] - 1]))
    return mn, mx


@njit(cache=True, nogil=True)
def _cell_hist_counts(vals, cstart, cend, cells, h0, top, upper, inv, nbins):
    """`_hist_counts` over some sorted cells.

    The bin index ``int(inv * (v - h0))`` does not decrease along a sorted run, so the
    counts of a long run come from one binary search per bin edge; short runs are walked.
    """
    counts = np.zeros(nbins, dtype=np.int64)
    for i in range(cells.shape[0]):
        c = cells[i]
        a = _first_at_least(vals, cstart[c], cend[c], h0)
        b = min(_first_at_least(vals, a, cend[c], top), _first_above(vals, a, cend[c], upper))
        if b - a <= 32 * nbins:
            for k in range(a, b):
                j = int(inv * (vals[k] - h0))
                if j < nbins:
                    counts[j] += 1
            continue
        pos = a
        for j in range(nbins):
            lo = pos
            hi = b
            while lo < hi:
                mid = (lo + hi) >> 1
                if int(inv * (vals[mid] - h0)) <= j:
                    lo = mid + 1
                else:
                    hi = mid
            counts[j] += lo - pos
            pos = lo
            if pos >= b:
                break
    return counts


@njit(cache=True, nogil=True)
def cell_stats(vals, p1, p2, poff, cstart, cend, keys, nreg, whole, shift, lower, upper,
               nclip, lsig, usig, binwidth, code):
    """Clipped statistic of every region of a sorted cell partition (and of all cells).

    Parameters
    ----------
    vals, cstart, cend, keys
        From `cell_partition`, each cell's values sorted in place.
    p1, p2, poff : ndarray
        From `cell_prefix` with ``shift``.
    nreg : int
        Number of regions.
    whole : bool
        Also compute the statistic of all the cells together (last entry).
    shift : float
        The shift of the prefix sums.
    lower, upper, nclip, lsig, usig, binwidth, code
        As for `sky_stat`.

    Returns
    -------
    value : ndarray of float64, shape (nreg + whole,)
        NaN where no pixel is usable.
    npix : ndarray of int64
        Pixels of the final clipping pass.
    """
    nout = nreg + (1 if whole else 0)
    value = np.full(nout, np.nan)
    npix = np.zeros(nout, dtype=np.int64)
    ncell = keys.shape[0]
    for r in range(nout):
        if r < nreg:
            sel = np.empty(ncell, dtype=np.int64)
            m = 0
            for c in range(ncell):
                if (keys[c] >> r) & 1:
                    sel[m] = c
                    m += 1
            cells = sel[:m].copy()
        else:
            cells = np.arange(ncell)
        count, mean, std, lo, hi = _clip(1, vals, 0, vals, p1, p2, poff, cstart, cend, cells,
                                         shift, lower, upper, nclip, lsig, usig)
        if count == 0:
            continue
        npix[r] = count
        if code == STAT_MEAN:
            value[r] = mean
        elif code == STAT_MEDIAN:
            value[r] = _cell_median(vals, cstart, cend, cells, lo, hi)
        else:
            value[r] = _hist_stat(1, vals, 0, vals, cstart, cend, cells, lo, hi, upper, std,
                                  binwidth, code == STAT_MIDPT)
    return value, npix


def warmup() -> None:
    """Compile (or load from the cache) the kernels for float32 and float64 images."""
    no_mask = np.zeros((0, 0), dtype=np.bool_)
    no_spans = np.zeros((0, 3), dtype=np.int64)
    for dtype in (np.float32, np.float64):
        data = np.arange(12, dtype=dtype).reshape(3, 4)
        mask = np.ones((3, 4), dtype=np.bool_)
        spans = np.array([[0, 0, 3]], dtype=np.int64)
        for code in (STAT_MEAN, STAT_MEDIAN, STAT_MODE, STAT_MIDPT):
            sky_stat(data, no_mask, False, no_spans, False, -1e300, 1e300, 2, 3.0, 3.0, 0.1, code)
            sky_stat(data, mask, True, spans, True, -1e300, 1e300, 2, 3.0, 3.0, 0.1, code)
        two = np.array([[0, 0, 3], [1, 0, 3], [0, 1, 2]], dtype=np.int64)
        off = np.array([0, 2, 3], dtype=np.int64)
        for m, use in ((no_mask, False), (mask, True)):
            for code in (STAT_MEAN, STAT_MEDIAN, STAT_MODE, STAT_MIDPT):
                region_stats(data, m, use, two, off, True, -1e300, 1e300, 2, 3.0, 3.0, 0.1,
                             code)
            vals, cstart, cend, keys = cell_partition(data, m, use, two, off, -1e300, 1e300,
                                                      True)
            sort_cells(vals, cstart, cend)
            big = np.arange(_RADIX_MIN + 1, dtype=dtype)[::-1].copy()
            sort_cells(big, np.array([0]), np.array([_RADIX_MIN + 1]))
            p1, p2, poff = cell_prefix(vals, cstart, cend, 5.0)
            for code in (STAT_MEAN, STAT_MEDIAN, STAT_MODE, STAT_MIDPT):
                cell_stats(vals, p1, p2, poff, cstart, cend, keys, 2, True, 5.0, -1e300, 1e300,
                           2, 3.0, 3.0, 0.1, code)
    _warmup_geometry()


# ======================================================================================
# footprint geometry: spherical rings, tangent-plane clipping, scan conversion
# ======================================================================================

# A turn whose sine (relative to the two edge lengths) is above -_TURN_TOL counts as
# convex. Vertices sampled along a straight (great-circle) edge are collinear to
# about 1e-16, so the tolerance only absorbs rounding; a dent this small moves a
# boundary by at most 1e-10 times an edge length.
_TURN_TOL = 1e-10
# Largest number of (non-collinear) vertices for which a non-convex ring is split
# into convex parts; larger non-convex rings are left to the spherical fallback.
_MAX_DECOMPOSE = 512
# A pixel centre this close (pixels, along its row) to a polygon edge counts as on the
# edge. Pieces of one overlap share internal edges whose crossings each piece computes
# with its own rounding; without this slack a centre lying exactly on such an edge can
# fall between the two pieces (1e-16 apart) and be lost from the union.
_EDGE_SLACK = 1e-7


# --------------------------------------------------------------------------------------
# small vector helpers
# --------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _tangent_basis(t):
    """Return an orthonormal basis ``(e1, e2)`` of the plane tangent at ``t``.

    Parameters
    ----------
    t : ndarray, shape (3,)
        Unit vector of the tangent point.

    Returns
    -------
    e1, e2 : ndarray, shape (3,)
        Unit vectors with ``e1 x e2 = t``.
    """
    if abs(t[2]) < 0.9:
        ax, ay, az = 0.0, 0.0, 1.0
    else:
        ax, ay, az = 1.0, 0.0, 0.0
    # e1 = normalize(axis x t)
    e1 = np.empty(3)
    e1[0] = ay * t[2] - az * t[1]
    e1[1] = az * t[0] - ax * t[2]
    e1[2] = ax * t[1] - ay * t[0]
    n = np.sqrt(e1[0] ** 2 + e1[1] ** 2 + e1[2] ** 2)
    e1 /= n
    # e2 = t x e1
    e2 = np.empty(3)
    e2[0] = t[1] * e1[2] - t[2] * e1[1]
    e2[1] = t[2] * e1[0] - t[0] * e1[2]
    e2[2] = t[0] * e1[1] - t[1] * e1[0]
    return e1, e2


@njit(cache=True, nogil=True)
def _project(v, t, e1, e2):
    """Gnomonic projection of unit vectors onto the plane tangent at ``t``.

    Parameters
    ----------
    v : ndarray, shape (m, 3)
        Unit vectors.
    t, e1, e2 : ndarray, shape (3,)
        Tangent point and plane basis from `_tangent_basis`.

    Returns
    -------
    px, py : ndarray, shape (m,)
        Plane coordinates (radians at the tangent point).
    cosd : ndarray, shape (m,)
        Cosine of the angle between each vector and ``t``; the projection is only
        meaningful where it is positive.
    """
    m = v.shape[0]
    px = np.empty(m)
    py = np.empty(m)
    cosd = np.empty(m)
    for i in range(m):
        c = v[i, 0] * t[0] + v[i, 1] * t[1] + v[i, 2] * t[2]
        cosd[i] = c
        if c == 0.0:  # on the horizon: no projection (and no ZeroDivisionError)
            px[i] = np.nan
            py[i] = np.nan
            continue
        px[i] = (v[i, 0] * e1[0] + v[i, 1] * e1[1] + v[i, 2] * e1[2]) / c
        py[i] = (v[i, 0] * e2[0] + v[i, 1] * e2[1] + v[i, 2] * e2[2]) / c
    return px, py, cosd


@njit(cache=True, nogil=True)
def _tri_excess(c, a, b):
    """Signed area (spherical excess) of the great-circle triangle ``(c, a, b)``.

    Uses the Oosterom-Strackee formula
    ``tan(E/2) = det[c, a, b] / (1 + c.a + a.b + b.c)`` with the determinant computed
    from differences to ``c``, which keeps full relative precision for small
    triangles.

    Parameters
    ----------
    c, a, b : ndarray, shape (3,)
        Unit vectors.

    Returns
    -------
    float
        Area in steradians, positive when ``c, a, b`` turn counter-clockwise.
    """
    ax = a[0] - c[0]
    ay = a[1] - c[1]
    az = a[2] - c[2]
    bx = b[0] - c[0]
    by = b[1] - c[1]
    bz = b[2] - c[2]
    det = c[0] * (ay * bz - az * by) + c[1] * (az * bx - ax * bz) + c[2] * (ax * by - ay * bx)
    den = (
        1.0
        + (c[0] * a[0] + c[1] * a[1] + c[2] * a[2])
        + (a[0] * b[0] + a[1] * b[1] + a[2] * b[2])
        + (b[0] * c[0] + b[1] * c[1] + b[2] * c[2])
    )
    return 2.0 * np.arctan2(det, den)


@njit(cache=True, nogil=True)
def ring_area(v, apex):
    """Signed spherical area of a great-circle ring by a triangle fan from ``apex``.

    Exact (to rounding) for any ring lying in the open hemisphere centred on
    ``apex``.

    Parameters
    ----------
    v : ndarray, shape (m, 3)
        Open ring of unit vectors.
    apex : ndarray, shape (3,)
        Unit vector; every vertex must be within 90 degrees of it.

    Returns
    -------
    float
        Area in steradians, positive for a counter-clockwise ring; 0 for fewer than
        3 vertices.
    """
    m = v.shape[0]
    if m < 3:
        return 0.0
    s = 0.0
    for i in range(m):
        j = i + 1 if i + 1 < m else 0
        s += _tri_excess(apex, v[i], v[j])
    return s


@njit(cache=True, nogil=True)
def _turn(ax, ay, bx, by, cx, cy):
    """Sine of the turn at ``b`` of the path ``a -> b -> c`` (positive = left turn).

    Parameters
    ----------
    ax, ay, bx, by, cx, cy : float
        Plane coordinates of the three points.

    Returns
    -------
    float
        ``cross(b - a, c - b) / (|b - a| |c - b|)``; NaN for a zero-length edge.
    """
    ux = bx - ax
    uy = by - ay
    wx = cx - bx
    wy = cy - by
    n = np.sqrt(ux * ux + uy * uy) * np.sqrt(wx * wx + wy * wy)
    if n == 0.0:
        return np.nan
    return (ux * wy - uy * wx) / n


# --------------------------------------------------------------------------------------
# convexity and convex decomposition (Hertel-Mehlhorn on an ear-clipping triangulation)
# --------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _ring_convexity(px, py):
    """Classify a counter-clockwise planar ring.

    Parameters
    ----------
    px, py : ndarray, shape (m,)
        Open ring.

    Returns
    -------
    int
        1 if convex (every turn above ``-_TURN_TOL``), 0 if simple-looking but not
        convex (total turning is one full turn), -1 if invalid (zero-length edge,
        NaN, or total turning other than one full counter-clockwise turn).
    """
    m = px.shape[0]
    if m < 3:
        return -1
    convex = True
    total = 0.0
    for i in range(m):
        a = i - 1 if i > 0 else m - 1
        c = i + 1 if i + 1 < m else 0
        s = _turn(px[a], py[a], px[i], py[i], px[c], py[c])
        if not np.isfinite(s):
            return -1
        if s < -_TURN_TOL:
            convex = False
        ux = px[i] - px[a]
        uy = py[i] - py[a]
        wx = px[c] - px[i]
        wy = py[c] - py[i]
        total += np.arctan2(ux * wy - uy * wx, ux * wx + uy * wy)
    if abs(total - 2.0 * np.pi) > 1e-6:
        return -1
    return 1 if convex else 0


@njit(cache=True, nogil=True)
def _point_in_triangle(x, y, ax, ay, bx, by, cx, cy):
    """Return True if ``(x, y)`` lies inside or on the counter-clockwise triangle.

    Parameters
    ----------
    x, y : float
        The point.
    ax, ay, bx, by, cx, cy : float
        Triangle vertices, counter-clockwise.

    Returns
    -------
    bool
        True when inside or on the boundary.
    """
    d1 = (bx - ax) * (y - ay) - (by - ay) * (x - ax)
    d2 = (cx - bx) * (y - by) - (cy - by) * (x - bx)
    d3 = (ax - cx) * (y - cy) - (ay - cy) * (x - cx)
    return d1 >= 0.0 and d2 >= 0.0 and d3 >= 0.0


@njit(cache=True, nogil=True)
def _ear_clip(qx, qy):
    """Triangulate a simple counter-clockwise ring by ear clipping.

    Parameters
    ----------
    qx, qy : ndarray, shape (n,)
        Open ring without collinear or repeated vertices.

    Returns
    -------
    tris : ndarray of int64, shape (n - 2, 3)
        Counter-clockwise triangles as vertex indices.
    ok : bool
        False if no ear could be found (the ring is not simple).
    """
    n = qx.shape[0]
    tris = np.zeros((max(n - 2, 0), 3), dtype=np.int64)
    prv = np.empty(n, dtype=np.int64)
    nxt = np.empty(n, dtype=np.int64)
    for i in range(n):
        prv[i] = i - 1 if i > 0 else n - 1
        nxt[i] = i + 1 if i + 1 < n else 0
    remaining = n
    k = 0
    i = 0
    misses = 0
    while remaining > 3:
        p = prv[i]
        q = nxt[i]
        ear = False
        cr = (qx[i] - qx[p]) * (qy[q] - qy[i]) - (qy[i] - qy[p]) * (qx[q] - qx[i])
        if cr > 0.0:
            ear = True
            j = nxt[q]
            while j != p:
                if _point_in_triangle(qx[j], qy[j], qx[p], qy[p], qx[i], qy[i], qx[q], qy[q]):
                    ear = False
                    break
                j = nxt[j]
        if ear:
            tris[k, 0] = p
            tris[k, 1] = i
            tris[k, 2] = q
            k += 1
            nxt[p] = q
            prv[q] = p
            remaining -= 1
            i = p
            misses = 0
        else:
            i = q
            misses += 1
            if misses > remaining:
                return tris, False
    p = prv[i]
    q = nxt[i]
    tris[k, 0] = p
    tris[k, 1] = i
    tris[k, 2] = q
    return tris, True


@njit(cache=True, nogil=True)
def _merge_convex(qx, qy, tris):
    """Merge triangles into convex parts (Hertel-Mehlhorn).

    A diagonal of the triangulation is removed whenever the two parts it separates
    stay convex at both of its ends. The result has at most four times the minimal
    number of convex parts.

    Parameters
    ----------
    qx, qy : ndarray, shape (n,)
        The ring that was triangulated.
    tris : ndarray of int64, shape (n - 2, 3)
        Counter-clockwise triangles from `_ear_clip`.

    Returns
    -------
    idx : ndarray of int64
        Concatenated counter-clockwise parts (vertex indices into the ring).
    off : ndarray of int64
        Part offsets into ``idx`` (one more entry than parts).
    """
    n = qx.shape[0]
    nt = tris.shape[0]
    ring = np.zeros((nt, n), dtype=np.int64)
    rlen = np.zeros(nt, dtype=np.int64)
    alive = np.ones(nt, dtype=np.bool_)
    for k in range(nt):
        ring[k, 0] = tris[k, 0]
        ring[k, 1] = tris[k, 1]
        ring[k, 2] = tris[k, 2]
        rlen[k] = 3
    for k in range(nt):
        for e in range(3):
            a = tris[k, e]
            b = tris[k, (e + 1) % 3]
            # boundary edges of the ring go from i to i + 1; skip them and visit each
            # diagonal once (from the triangle holding a -> b with a < b)
            if b == (a + 1) % n or a > b:
                continue
            # find the alive part holding a -> b and the one holding b -> a
            pa = -1
            ia = -1
            pb = -1
            jb = -1
            for r in range(nt):
                if not alive[r]:
                    continue
                m = rlen[r]
                for s in range(m):
                    u = ring[r, s]
                    w = ring[r, (s + 1) % m]
                    if u == a and w == b:
                        pa = r
                        ia = s
                    elif u == b and w == a:
                        pb = r
                        jb = s
            if pa < 0 or pb < 0 or pa == pb:
                continue
            ma = rlen[pa]
            mb = rlen[pb]
            # merged ring: part A from b round to a, then part B strictly between a and b
            a_prev = ring[pa, (ia - 1 + ma) % ma]
            b_next = ring[pa, (ia + 2) % ma]
            a_next = ring[pb, (jb + 2) % mb]
            b_prev = ring[pb, (jb - 1 + mb) % mb]
            ta = _turn(qx[a_prev], qy[a_prev], qx[a], qy[a], qx[a_next], qy[a_next])
            tb = _turn(qx[b_prev], qy[b_prev], qx[b], qy[b], qx[b_next], qy[b_next])
            if not (ta >= -_TURN_TOL and tb >= -_TURN_TOL):
                continue
            merged = np.empty(ma + mb - 2, dtype=np.int64)
            c = 0
            for s in range(ma):
                merged[c] = ring[pa, (ia + 1 + s) % ma]
                c += 1
            for s in range(mb - 2):
                merged[c] = ring[pb, (jb + 2 + s) % mb]
                c += 1
            for s in range(c):
                ring[pa, s] = merged[s]
            rlen[pa] = c
            alive[pb] = False
    total = 0
    nparts = 0
    for r in range(nt):
        if alive[r]:
            total += rlen[r]
            nparts += 1
    idx = np.empty(total, dtype=np.int64)
    off = np.empty(nparts + 1, dtype=np.int64)
    off[0] = 0
    c = 0
    p = 0
    for r in range(nt):
        if alive[r]:
            for s in range(rlen[r]):
                idx[c] = ring[r, s]
                c += 1
            p += 1
            off[p] = c
    return idx, off


@njit(cache=True, nogil=True)
def convex_parts(v, centre):
    """Split a counter-clockwise spherical ring into convex parts.

    Convexity is decided in the gnomonic projection at ``centre`` (it does not depend
    on the tangent point). A convex ring is one part made of all its vertices. A
    non-convex ring has its (nearly) collinear vertices dropped, is triangulated by
    ear clipping and the triangles are merged into convex parts.

    Parameters
    ----------
    v : ndarray, shape (m, 3)
        Open counter-clockwise ring of unit vectors, all within 90 degrees of
        ``centre``.
    centre : ndarray, shape (3,)
        Unit vector used as tangent point.

    Returns
    -------
    idx : ndarray of int64
        Concatenated parts, as indices into ``v``, each counter-clockwise.
    off : ndarray of int64
        Part offsets into ``idx``.
    status : int
        0 convex (one part), 1 decomposed, 2 failed (invalid or self-intersecting
        ring, or too many vertices; ``idx`` and ``off`` describe zero parts).
    """
    m = v.shape[0]
    empty_idx = np.zeros(0, dtype=np.int64)
    empty_off = np.zeros(1, dtype=np.int64)
    e1, e2 = _tangent_basis(centre)
    px, py, cosd = _project(v, centre, e1, e2)
    for i in range(m):
        if not (cosd[i] > 0.0):
            return empty_idx, empty_off, 2
    kind = _ring_convexity(px, py)
    if kind == 1:
        idx = np.arange(m).astype(np.int64)
        off = np.zeros(2, dtype=np.int64)
        off[1] = m
        return idx, off, 0
    if kind < 0:
        return empty_idx, empty_off, 2
    # drop (nearly) collinear vertices, then triangulate what is left
    keep = np.empty(m, dtype=np.int64)
    nk = 0
    for i in range(m):
        a = i - 1 if i > 0 else m - 1
        c = i + 1 if i + 1 < m else 0
        s = _turn(px[a], py[a], px[i], py[i], px[c], py[c])
        if abs(s) > _TURN_TOL:
            keep[nk] = i
            nk += 1
    if nk < 3 or nk > _MAX_DECOMPOSE:
        return empty_idx, empty_off, 2
    keep = keep[:nk]
    qx = px[keep]
    qy = py[keep]
    tris, ok = _ear_clip(qx, qy)
    if not ok:
        return empty_idx, empty_off, 2
    idx, off = _merge_convex(qx, qy, tris)
    return keep[idx], off, 1


# --------------------------------------------------------------------------------------
# pairwise intersections
# --------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _clip_convex(sx, sy, ns, cx, cy, nc, ax, ay, bx, by, d):
    """Clip a convex polygon by a convex polygon (Sutherland-Hodgman).

    Points on a clip edge count as inside. The intersection with a clip line is
    placed on the subject edge with the parameter ``dp / (dp - dq)`` of the signed
    distances, which always lies in [0, 1], so nearly parallel edges (identical
    footprints) can never throw a vertex far away.

    Parameters
    ----------
    sx, sy : ndarray
        Subject ring (first ``ns`` entries used).
    ns : int
        Number of subject vertices.
    cx, cy : ndarray
        Counter-clockwise convex clip ring (first ``nc`` entries used).
    nc : int
        Number of clip vertices.
    ax, ay, bx, by, d : ndarray
        Work buffers, each at least ``2 * (ns + nc) + 4`` long.

    Returns
    -------
    n : int
        Number of result vertices, stored in ``ax[:n]``, ``ay[:n]``; -1 when a work
        buffer would overflow (cannot happen for convex input).
    """
    cap = ax.shape[0]
    n = ns
    for k in range(n):
        ax[k] = sx[k]
        ay[k] = sy[k]
    for e in range(nc):
        if n == 0:
            break
        x0 = cx[e]
        y0 = cy[e]
        f = e + 1 if e + 1 < nc else 0
        ex = cx[f] - x0
        ey = cy[f] - y0
        for k in range(n):
            d[k] = ex * (ay[k] - y0) - ey * (ax[k] - x0)
        m = 0
        for k in range(n):
            k1 = k + 1 if k + 1 < n else 0
            dp = d[k]
            dq = d[k1]
            if dp >= 0.0:
                if m >= cap:
                    return -1
                bx[m] = ax[k]
                by[m] = ay[k]
                m += 1
            if (dp > 0.0 and dq < 0.0) or (dp < 0.0 and dq > 0.0):
                if m >= cap:
                    return -1
                t = dp / (dp - dq)
                bx[m] = ax[k] + t * (ax[k1] - ax[k])
                by[m] = ay[k] + t * (ay[k1] - ay[k])
                m += 1
        for k in range(m):
            ax[k] = bx[k]
            ay[k] = by[k]
        n = m
    return n


@njit(cache=True, nogil=True)
def _grow(buf, need):
    """Return ``buf`` or a larger copy of it holding at least ``need`` rows.

    Parameters
    ----------
    buf : ndarray, 2-D
        Buffer (rows along the first axis).
    need : int
        Required number of rows.

    Returns
    -------
    ndarray
        ``buf`` itself if large enough, else a copy with twice the needed rows.
    """
    if need <= buf.shape[0]:
        return buf
    new = np.empty((2 * need, buf.shape[1]), dtype=buf.dtype)
    new[: buf.shape[0]] = buf
    return new


@njit(cache=True, nogil=True)
def _grow1(buf, need):
    """Return ``buf`` or a larger copy of it holding at least ``need`` entries.

    Parameters
    ----------
    buf : ndarray, 1-D
        Buffer.
    need : int
        Required length.

    Returns
    -------
    ndarray
        ``buf`` itself if large enough, else a copy twice the needed length.
    """
    if need <= buf.shape[0]:
        return buf
    new = np.empty(2 * need, dtype=buf.dtype)
    new[: buf.shape[0]] = buf
    return new


@njit(cache=True, nogil=True)
def intersect_pairs(
    verts, vert_off, part_idx, part_off, fp_part, centres, radii, pairs, cos_limit, min_width
):
    """Exact intersections of pairs of footprints in the pair's gnomonic plane.

    For each pair ``(a, b)`` the tangent point is the normalised sum of the two
    footprint centres. Every convex part of ``a`` is clipped by every convex part of
    ``b`` (Sutherland-Hodgman); the non-empty results are the pieces of the overlap,
    with disjoint interiors. Pieces narrower than ``min_width`` radians
    (``2 * area / perimeter``) are dropped: they are what touching footprints leave.

    Parameters
    ----------
    verts : ndarray, shape (N, 3)
        Counter-clockwise rings of all footprints, concatenated.
    vert_off : ndarray of int64, shape (F + 1,)
        Ring offsets into ``verts``.
    part_idx : ndarray of int64
        Convex parts of all footprints, as indices local to each footprint's ring.
    part_off : ndarray of int64
        Part offsets into ``part_idx``.
    fp_part : ndarray of int64, shape (F + 1,)
        Offsets of each footprint's parts in ``part_off``; a footprint with no parts
        (decomposition failed) sends its pairs to the fallback.
    centres : ndarray, shape (F, 3)
        Footprint centres (unit vectors).
    radii : ndarray, shape (F,)
        Cap radii in radians: every vertex is within this angle of the centre.
    pairs : ndarray of int64, shape (K, 2)
        Footprint index pairs.
    cos_limit : float
        Every vertex of both footprints must be within ``arccos(cos_limit)`` of the
        tangent point, else the pair goes to the fallback.
    min_width : float
        Width (radians) below which a piece is dropped.

    Returns
    -------
    out : ndarray, shape (M, 3)
        Counter-clockwise piece vertices (unit vectors), concatenated.
    piece_off : ndarray of int64, shape (P + 1,)
        Piece offsets into ``out``.
    pair_off : ndarray of int64, shape (K + 1,)
        Offsets of each pair's pieces in ``piece_off``.
    area : ndarray, shape (K,)
        Overlap area (steradians) of each pair; NaN where ``status`` is 1.
    status : ndarray of int64, shape (K,)
        0 computed (possibly empty), 1 needs the spherical fallback.
    """
    npair = pairs.shape[0]
    out = np.empty((64, 3))
    piece_off = np.zeros(16, dtype=np.int64)
    pair_off = np.zeros(npair + 1, dtype=np.int64)
    area = np.zeros(npair)
    status = np.zeros(npair, dtype=np.int64)
    nout = 0
    npiece = 0
    t = np.empty(3)
    for k in range(npair):
        a = pairs[k, 0]
        b = pairs[k, 1]
        pair_off[k] = npiece
        ca = centres[a]
        cb = centres[b]
        dot = ca[0] * cb[0] + ca[1] * cb[1] + ca[2] * cb[2]
        dot = min(1.0, max(-1.0, dot))
        sep = np.arccos(dot)
        if not (sep <= radii[a] + radii[b] + 1e-12):
            continue  # caps apart: empty (also NaN-safe)
        if fp_part[a + 1] == fp_part[a] or fp_part[b + 1] == fp_part[b]:
            status[k] = 1
            area[k] = np.nan
            continue
        t[0] = ca[0] + cb[0]
        t[1] = ca[1] + cb[1]
        t[2] = ca[2] + cb[2]
        tn = np.sqrt(t[0] ** 2 + t[1] ** 2 + t[2] ** 2)
        if not (tn > 1e-8):
            status[k] = 1
            area[k] = np.nan
            continue
        t /= tn
        e1, e2 = _tangent_basis(t)
        va = verts[vert_off[a] : vert_off[a + 1]]
        vb = verts[vert_off[b] : vert_off[b + 1]]
        pax, pay, ca_ = _project(va, t, e1, e2)
        pbx, pby, cb_ = _project(vb, t, e1, e2)
        if not (ca_.min() > cos_limit and cb_.min() > cos_limit):
            status[k] = 1
            area[k] = np.nan
            continue
        total = 0.0
        for pa in range(fp_part[a], fp_part[a + 1]):
            ia = part_idx[part_off[pa] : part_off[pa + 1]]
            na = ia.shape[0]
            sx = pax[ia]
            sy = pay[ia]
            for pb in range(fp_part[b], fp_part[b + 1]):
                ib = part_idx[part_off[pb] : part_off[pb + 1]]
                nb = ib.shape[0]
                cx = pbx[ib]
                cy = pby[ib]
                # bounding-box rejection
                if (
                    sx.max() < cx.min()
                    or cx.max() < sx.min()
                    or sy.max() < cy.min()
                    or cy.max() < sy.min()
                ):
                    continue
                cap = 2 * (na + nb) + 4
                wx = np.empty(cap)
                wy = np.empty(cap)
                ux = np.empty(cap)
                uy = np.empty(cap)
                dd = np.empty(cap)
                n = _clip_convex(sx, sy, na, cx, cy, nb, wx, wy, ux, uy, dd)
                if n < 0:
                    status[k] = 1
                    break
                # drop repeated consecutive points (rounding-level duplicates)
                m = 0
                for s in range(n):
                    if m > 0 and abs(wx[s] - ux[m - 1]) <= 1e-15 and abs(
                        wy[s] - uy[m - 1]
                    ) <= 1e-15:
                        continue
                    ux[m] = wx[s]
                    uy[m] = wy[s]
                    m += 1
                while m > 1 and abs(ux[m - 1] - ux[0]) <= 1e-15 and abs(uy[m - 1] - uy[0]) <= 1e-15:
                    m -= 1
                if m < 3:
                    continue
                # back to the sphere
                piece = np.empty((m, 3))
                per = 0.0
                for s in range(m):
                    x = t[0] + ux[s] * e1[0] + uy[s] * e2[0]
                    y = t[1] + ux[s] * e1[1] + uy[s] * e2[1]
                    z = t[2] + ux[s] * e1[2] + uy[s] * e2[2]
                    r = np.sqrt(x * x + y * y + z * z)
                    piece[s, 0] = x / r
                    piece[s, 1] = y / r
                    piece[s, 2] = z / r
                for s in range(m):
                    s1 = s + 1 if s + 1 < m else 0
                    dx = piece[s1, 0] - piece[s, 0]
                    dy = piece[s1, 1] - piece[s, 1]
                    dz = piece[s1, 2] - piece[s, 2]
                    per += np.sqrt(dx * dx + dy * dy + dz * dz)
                pa_area = ring_area(piece, t)
                if not (pa_area > 0.0) or 2.0 * pa_area < min_width * per:
                    continue
                total += pa_area
                out = _grow(out, nout + m)
                out[nout : nout + m] = piece
                nout += m
                piece_off = _grow1(piece_off, npiece + 2)
                npiece += 1
                piece_off[npiece] = nout
            if status[k] == 1:
                break
        if status[k] == 1:
            # discard whatever this pair produced; the fallback recomputes it
            npiece = pair_off[k]
            nout = piece_off[npiece]
            area[k] = np.nan
            continue
        area[k] = total
    pair_off[npair] = npiece
    return out[:nout].copy(), piece_off[: npiece + 1].copy(), pair_off, area, status


# --------------------------------------------------------------------------------------
# scan conversion of pixel-frame polygons into row spans
# --------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _add_span(spans, ns, row, x0, x1, nx):
    """Append the columns whose centres lie in ``[x0, x1]`` (widened by `_EDGE_SLACK`).

    Parameters
    ----------
    spans : ndarray of int64, shape (cap, 3)
        Span buffer.
    ns : int
        Number of spans already in the buffer.
    row : int
        Image row.
    x0, x1 : float
        Closed interval of x coordinates.
    nx : int
        Image width (columns are clipped to ``0 .. nx - 1``).

    Returns
    -------
    spans : ndarray
        The buffer (possibly grown).
    ns : int
        New number of spans.
    """
    if not x0 <= x1:  # also catches NaN from overflowing interpolation
        return spans, ns
    # clamp before converting to int (huge coordinates must not overflow)
    lo = np.ceil(min(max(x0 - _EDGE_SLACK, -1.0), float(nx)))
    hi = np.floor(max(min(x1 + _EDGE_SLACK, float(nx)), -1.0))
    c0 = max(int(lo), 0)
    c1 = min(int(hi), nx - 1)
    if c0 > c1:
        return spans, ns
    spans = _grow(spans, ns + 1)
    spans[ns, 0] = row
    spans[ns, 1] = c0
    spans[ns, 2] = c1
    return spans, ns + 1


@njit(cache=True, nogil=True)
def _scan_piece(px, py, ny, nx, spans, ns):
    """Append the spans of pixel centres inside one closed polygon.

    Interior intervals come from edge crossings of each row (an edge holds rows
    ``ylo <= row < yhi``, so each vertex is counted once) paired left to right
    (even-odd rule). The closed boundary is added explicitly: vertices lying on a
    row and horizontal edges on a row give their own intervals.

    Parameters
    ----------
    px, py : ndarray
        Open ring in pixel coordinates (centres at integers).
    ny, nx : int
        Image shape.
    spans : ndarray of int64, shape (cap, 3)
        Span buffer.
    ns : int
        Number of spans already in the buffer.

    Returns
    -------
    spans : ndarray
        The buffer (possibly grown).
    ns : int
        New number of spans.
    """
    m = px.shape[0]
    if m < 3:
        return spans, ns
    for i in range(m):
        if not (np.isfinite(px[i]) and np.isfinite(py[i])):
            return spans, ns
    ymin = py.min()
    ymax = py.max()
    r0 = max(0, int(np.ceil(min(max(ymin, -1.0), float(ny)))))
    r1 = min(ny - 1, int(np.floor(max(min(ymax, float(ny)), -1.0))))
    if r0 > r1:
        return spans, ns
    nr = r1 - r0 + 1
    cnt = np.zeros(nr + 1, dtype=np.int64)
    for i in range(m):
        j = i + 1 if i + 1 < m else 0
        ya = py[i]
        yb = py[j]
        if ya == yb:
            continue
        ylo = min(ya, yb)
        yhi = max(ya, yb)
        lo = max(r0, int(np.ceil(min(max(ylo, -1.0), float(ny)))))
        hi = min(r1, int(np.ceil(max(min(yhi, float(ny)), -1.0))) - 1)
        for r in range(lo, hi + 1):
            cnt[r - r0 + 1] += 1
    for r in range(nr):
        cnt[r + 1] += cnt[r]
    xs = np.empty(cnt[nr])
    fill = cnt[:nr].copy()
    for i in range(m):
        j = i + 1 if i + 1 < m else 0
        xa = px[i]
        ya = py[i]
        xb = px[j]
        yb = py[j]
        if ya == yb:
            continue
        ylo = min(ya, yb)
        yhi = max(ya, yb)
        lo = max(r0, int(np.ceil(min(max(ylo, -1.0), float(ny)))))
        hi = min(r1, int(np.ceil(max(min(yhi, float(ny)), -1.0))) - 1)
        for r in range(lo, hi + 1):
            xs[fill[r - r0]] = xa + (r - ya) * (xb - xa) / (yb - ya)
            fill[r - r0] += 1
    for r in range(nr):
        a = cnt[r]
        b = cnt[r + 1]
        # insertion sort: few crossings per row
        for u in range(a + 1, b):
            v = xs[u]
            w = u - 1
            while w >= a and xs[w] > v:
                xs[w + 1] = xs[w]
                w -= 1
            xs[w + 1] = v
        for u in range(a, b - 1, 2):
            spans, ns = _add_span(spans, ns, r + r0, xs[u], xs[u + 1], nx)
    # closed boundary: vertices on rows and horizontal edges on rows
    for i in range(m):
        y = py[i]
        if y == np.floor(y) and r0 <= y <= r1:
            j = i + 1 if i + 1 < m else 0
            if py[j] == y:
                spans, ns = _add_span(spans, ns, int(y), min(px[i], px[j]), max(px[i], px[j]), nx)
            else:
                spans, ns = _add_span(spans, ns, int(y), px[i], px[i], nx)
    return spans, ns


@njit(cache=True, nogil=True)
def _merge_spans(spans, ns):
    """Sort spans by row and first column and merge overlapping or adjacent ones.

    Parameters
    ----------
    spans : ndarray of int64, shape (cap, 3)
        Span buffer.
    ns : int
        Number of spans in the buffer.

    Returns
    -------
    ndarray of int64, shape (k, 3)
        Sorted, disjoint, non-adjacent spans (a new array).
    """
    if ns == 0:
        return np.zeros((0, 3), dtype=np.int64)
    key = np.empty(ns, dtype=np.int64)
    width = spans[:ns, 2].max() + 2
    for i in range(ns):
        key[i] = spans[i, 0] * width + spans[i, 1]
    order = np.argsort(key, kind="mergesort")
    res = np.empty((ns, 3), dtype=np.int64)
    k = -1
    for i in range(ns):
        s = order[i]
        r = spans[s, 0]
        c0 = spans[s, 1]
        c1 = spans[s, 2]
        if k >= 0 and res[k, 0] == r and c0 <= res[k, 2] + 1:
            if c1 > res[k, 2]:
                res[k, 2] = c1
        else:
            k += 1
            res[k, 0] = r
            res[k, 1] = c0
            res[k, 2] = c1
    return res[: k + 1].copy()


@njit(cache=True, nogil=True)
def scan_spans(px, py, piece_off, group_off, ny, nx):
    """Row spans of pixel centres inside polygons, one union per group of pieces.

    Parameters
    ----------
    px, py : ndarray
        Open rings in pixel coordinates (centres at integers), concatenated.
    piece_off : ndarray of int64, shape (P + 1,)
        Ring offsets into ``px``/``py``.
    group_off : ndarray of int64, shape (G + 1,)
        Offsets of each group's pieces in ``piece_off``.
    ny, nx : int
        Image shape.

    Returns
    -------
    spans : ndarray of int64, shape (k, 3)
        ``(row, first column, last column)`` with inclusive columns, for all groups
        concatenated; within a group rows ascend, spans are disjoint, and a pixel is
        listed when its centre lies inside or on the boundary of any of the group's
        pieces. Rings with a non-finite vertex are skipped.
    span_off : ndarray of int64, shape (G + 1,)
        Offsets of each group's spans.
    """
    ngroup = group_off.shape[0] - 1
    span_off = np.zeros(ngroup + 1, dtype=np.int64)
    out = np.empty((64, 3), dtype=np.int64)
    nout = 0
    buf = np.empty((64, 3), dtype=np.int64)
    for g in range(ngroup):
        ns = 0
        for p in range(group_off[g], group_off[g + 1]):
            a = piece_off[p]
            b = piece_off[p + 1]
            buf, ns = _scan_piece(px[a:b], py[a:b], ny, nx, buf, ns)
        merged = _merge_spans(buf, ns)
        k = merged.shape[0]
        out = _grow(out, nout + k)
        out[nout : nout + k] = merged
        nout += k
        span_off[g + 1] = nout
    return out[:nout].copy(), span_off


def _warmup_geometry() -> None:
    """Compile (or load from the cache) the geometry kernels on tiny inputs."""
    sq = np.array([[1.0, -1e-3, -1e-3], [1.0, 1e-3, -1e-3], [1.0, 1e-3, 1e-3], [1.0, -1e-3, 1e-3]])
    sq /= np.sqrt((sq**2).sum(axis=1))[:, None]
    c = np.array([1.0, 0.0, 0.0])
    ring_area(sq, c)
    idx, _, _ = convex_parts(sq, c)
    dent = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [0.0, 0.2], [-1.0, 1.0]]) * 1e-3
    vd = np.column_stack((np.ones(5), dent))
    vd /= np.sqrt((vd**2).sum(axis=1))[:, None]
    convex_parts(vd, c)
    verts = np.vstack((sq, sq))
    intersect_pairs(
        verts,
        np.array([0, 4, 8], dtype=np.int64),
        np.concatenate((idx, idx)),
        np.array([0, 4, 8], dtype=np.int64),
        np.array([0, 1, 2], dtype=np.int64),
        np.vstack((c, c)),
        np.array([2e-3, 2e-3]),
        np.array([[0, 1]], dtype=np.int64),
        0.5,
        1e-11,
    )
    px = np.array([0.0, 3.0, 3.0, 0.0])
    py = np.array([0.0, 0.0, 2.0, 2.0])
    scan_spans(
        px, py, np.array([0, 4], dtype=np.int64), np.array([0, 1], dtype=np.int64), 4, 4
    )
