"""Numba kernels of the clipped sky statistics over pixel regions.

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
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .buffers import grow

__all__ = [
    "MAX_CELL_REGIONS",
    "STAT_MEAN",
    "STAT_MEDIAN",
    "STAT_MIDPT",
    "STAT_MODE",
    "cell_stats",
    "clip_moments",
    "histogram_stat",
    "median_within",
    "moments",
    "region_stats",
    "select_kth",
    "sky_stat",
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
#: Bin width (and data range), relative to the largest magnitude of the clipped data,
#: at or below which the histogram is one bin: what float64 cannot resolve. Relative to
#: the float64 resolution, so that the binning depends neither on the sky's size nor on
#: the data's units (the reference's absolute 1.2e-6 fails data in small units, a
#: float32-relative one collapsed a sky of 1e5 with noise 1 into one bin, the mode
#: then 3.9 sigma low).
_RES64 = 16.0 * float(np.finfo(np.float64).eps)


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
def _moments_of(kind, buf, n, part, bins, cells, lo, hi, shift):
    """One moments pass: over ``buf[:n]`` (``kind`` 0) or over bucketed cells (``kind`` 1)."""
    if kind == 0:
        return moments(buf, n, lo, hi, shift)
    return _bucket_moments(part, bins, cells, lo, hi, shift)


@njit(cache=True, nogil=True)
def _clip(kind, buf, n, part, bins, cells, shift0, lower, upper, nclip, lsig, usig):
    """Run the clipping loop of `clip_moments` over a buffer or over sorted cells.

    ``kind`` 0 reads ``buf[:n]`` (the cell arguments are placeholders); ``kind`` 1 reads
    the cells ``cells`` of a bucket partition (`_bucket_partition`, sums shifted by
    ``shift0``; ``buf`` and ``n`` are placeholders).
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
    count, mean, std = _moments_of(kind, buf, n, part, bins, cells, lo, hi, shift)
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
        count, mean, std = _moments_of(kind, buf, n, part, bins, cells, lo, hi, shift)
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
    part, bins, cells = _no_cells(buf)
    return _clip(0, buf, n, part, bins, cells, 0.0, lower, upper, nclip, lsig, usig)


@njit(cache=True, nogil=True)
def _no_cells(buf):
    """Placeholders for the bucketed-cell arguments of `_clip` and `_hist_stat` (kind 0)."""
    f0 = np.empty(0)
    i0 = np.empty(0, dtype=np.int64)
    v0 = np.empty(0, dtype=buf.dtype)
    return (v0, i0, f0, f0, v0, v0), (0.0, 0.0, 0), i0


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
    ``drange = mx - mn``, one bin is used when ``hw`` or ``drange`` is not above
    ``16 * float64 eps * max(|mn|, |mx|)`` (the reference: an absolute 1.2e-6) or
    ``hw > drange``; otherwise
    ``nbins = int(drange / hw) + 1`` bins of width ``dz = drange / (nbins - 1)``
    start at ``mn``, and every value of ``buf[:n]`` in ``[mn, mn + nbins*dz)`` (and
    not above the user limit ``upper``) is counted, with the bin index computed in the
    data's precision. Bin positions are converted back to data values with ``hw``.

    Returns
    -------
    float
        The mode (``want_midpt`` false) or midpt; NaN when no pixel survives. The midpt
        of a single bin is the exact median of the survivors; the mode of a single bin
        is ``mn + hw / 2``.
    """
    part, bins, cells = _no_cells(buf)
    return _hist_stat(0, buf, n, part, bins, cells, lo, hi, upper, std, binwidth, want_midpt)


@njit(cache=True, nogil=True)
def _hist_stat(kind, buf, n, part, bins, cells, lo, hi, upper, std, binwidth, want_midpt):
    """`histogram_stat` over ``buf[:n]`` (``kind`` 0) or over bucketed cells (``kind`` 1).

    For ``kind`` 1 pass the partition's values as ``buf`` (they set the precision of
    the binning).
    """
    if kind == 0:
        mn, mx = _minmax_within(buf, n, lo, hi)
    else:
        mn, mx = _bucket_minmax(part, bins, cells, lo, hi)
    if mn > mx:
        return np.nan
    hw = binwidth * std
    drange = mx - mn
    tiny = _RES64 * max(abs(mn), abs(mx))
    if hw <= tiny or drange <= tiny or hw > drange:
        if want_midpt:
            if kind == 0:
                return median_within(buf, n, lo, hi)
            return _bucket_median(part, bins, cells, lo, hi)
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
        counts = _bucket_hist_counts(part, bins, cells, h0, top, upper, inv, nbins)
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


#: Half-width, in standard deviations, of the window about the clipped mean where
#: `_median_near` first looks for the median (a few percent of the pixels).
_MEDIAN_WINDOW = 0.05


@njit(cache=True, nogil=True)
def _median_near(buf, n, lo, hi, count, mean, std):
    """`median_within` for ``count`` values in ``[lo, hi]`` with this mean and std.

    One pass counts the values within ``_MEDIAN_WINDOW * std`` of the mean and those
    below; when the middle rank(s) fall in that window (sky data: nearly always, the
    median lies within a few hundredths of sigma of the clipped mean) a second pass
    copies the few values in it and they are selected there. Otherwise, or for small
    or constant data, `median_within` runs. The same ranks of the same values, the same
    arithmetic: the result is identical to `median_within`'s.
    """
    if count < 4096 or not std > 0.0:
        return median_within(buf, n, lo, hi)
    a = max(lo, mean - _MEDIAN_WINDOW * std)
    b = min(hi, mean + _MEDIAN_WINDOW * std)
    below = 0
    m = 0
    for k in range(n):  # branch-free counts: vectorised
        v = buf[k]
        m += (v >= a) & (v <= b)
        below += (v >= lo) & (v < a)
    half = count // 2
    r_lo = half - 1 if count % 2 == 0 else half
    if below > r_lo or half >= below + m:
        return median_within(buf, n, lo, hi)
    work = np.empty(m + 1, dtype=buf.dtype)  # one spare slot for the branch-free store
    w = 0
    for k in range(n):  # branch-free: a branch on the window was 5x slower (measured)
        v = buf[k]
        work[w] = v
        w += (v >= a) & (v <= b)
    upper_mid = float(select_kth(work, m, half - below))
    if count % 2 == 1:
        return upper_mid
    lower_mid = float(select_kth(work, m, r_lo - below))
    return 0.5 * (lower_mid + upper_mid)


@njit(cache=True, nogil=True)
def _stat_of_buffer(buf, n, lower, upper, nclip, lsig, usig, binwidth, code):
    """Compute statistic ``code`` of ``buf[:n]`` (values outside the limits are ignored).

    Returns the value, the pixels of the final clipping pass and their ddof=1 standard
    deviation (NaN, 0, NaN when no pixel is usable).
    """
    count, mean, std, lo, hi = clip_moments(buf, n, lower, upper, nclip, lsig, usig)
    if count == 0:
        return np.nan, 0, np.nan
    if code == STAT_MEAN:
        return mean, count, std
    if code == STAT_MEDIAN:
        return _median_near(buf, n, lo, hi, count, mean, std), count, std
    return (histogram_stat(buf, n, lo, hi, upper, std, binwidth, code == STAT_MIDPT), count,
            std)


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
    value, npix, _ = _region_stat(buf, data, mask, use_mask, spans, use_spans, lower, upper,
                                  nclip, lsig, usig, binwidth, code)
    return value, npix


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
    std : ndarray of float64
        The ddof=1 standard deviation of the final clipping pass's pixels.
    """
    ny, nx = data.shape
    nreg = reg_off.shape[0] - 1
    nout = nreg + (1 if whole else 0)
    value = np.full(nout, np.nan)
    npix = np.zeros(nout, dtype=np.int64)
    std = np.full(nout, np.nan)
    size = ny * nx if (whole and use_mask) else 0
    for r in range(nreg):
        size = max(size, _region_size(spans[reg_off[r] : reg_off[r + 1]], True, ny, nx))
    buf = np.empty(size, dtype=data.dtype)
    for r in range(nout):
        in_region = r < nreg
        region = spans[reg_off[r] : reg_off[r + 1]] if in_region else spans[:0]
        value[r], npix[r], std[r] = _region_stat(buf, data, mask, use_mask, region, in_region,
                                                 lower, upper, nclip, lsig, usig, binwidth, code)
    return value, npix, std


# --------------------------------------------------------------------------------------
# many regions of one image: bucketed cells
# --------------------------------------------------------------------------------------
# When the regions of one image overlap heavily (dithers: every overlap is nearly the
# whole image), reading every region's pixels in every clipping pass costs regions x
# pixels. Instead the image is cut once into *cells*, the maximal sets of pixels covered
# by the same regions (`_cell_segments`), and the usable values of every cell are
# distributed into value *buckets* (a counting sort on a monotone bucket index: two
# reads of the image, no sort), with each bucket's count, shifted sums, smallest and
# largest value (`_bucket_partition`). A moments pass of a region then reads whole
# buckets from prefix sums and scans only the two buckets its clip bounds fall in; its
# median is a selection inside the one bucket that holds the rank; its histogram
# counts whole buckets and scans those that straddle a bin edge (`cell_stats`).
#
# The bucket index is monotone non-decreasing in the value, so a value in a bucket
# below the one of ``lo`` is below ``lo`` and one in a bucket above is above it: every
# decision on whole buckets is exact, and the pixel sets are exactly those of the
# buffer kernels; only the order of summation (the last bits of mean and sigma)
# differs.

#: Regions one partition can hold (a cell is keyed by an int64 bit set of its regions).
MAX_CELL_REGIONS = 62
#: Values sampled to place the buckets (median and interquartile range).
_BUCKET_SAMPLE = 16384
#: The fine buckets span the sample median +- this many interquartile ranges (about
#: +-10.8 sigma of a Gaussian sky); values outside fall in one bucket below and one above.
_BUCKET_REACH = 8.0
#: Most fine buckets per cell (2048 over +-10.8 sigma: a few thousand values in the
#: fullest bucket of a 2048x2048 image); fewer for small images (one per ~512 values).
#: Measured on six 2048x2048 dithers: 512 to 2048 buckets cost the same, 4096 ~10 %
#: more (the scatter then writes to too many places at once).
_BUCKETS_MAX = 2048


@njit(cache=True, nogil=True)
def _cell_segments(spans, reg_off, ny, nx, with_rest):
    """Cut an image into row segments of equal region coverage, grouped into cells.

    Parameters
    ----------
    spans : ndarray of int64, shape (k, 3)
        The row spans of every region, concatenated; each region's spans sorted by row
        and disjoint.
    reg_off : ndarray of int64, shape (R + 1,)
        Offsets of each region's spans in ``spans`` (``R <= MAX_CELL_REGIONS``).
    ny, nx : int
        The image shape.
    with_rest : bool
        Also cut the pixels that lie in no region (the cell with key 0).

    Returns
    -------
    seg : ndarray of int64, shape (nseg, 4)
        ``(row, first column, last column, cell)`` of every segment, row by row.
    keys : ndarray of int64
        Each cell's regions as a bit set (bit ``r`` for region ``r``), ascending.
    """
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
                    seg = grow(seg, nseg + 1)
                    seg[nseg, 0] = y
                    seg[nseg, 1] = x
                    seg[nseg, 2] = col - 1
                    seg[nseg, 3] = key
                    nseg += 1
                x = col
            if e < ne:
                key += ev_bit[e]
    seg = seg[:nseg].copy()
    keys = np.unique(seg[:, 3])
    seg[:, 3] = np.searchsorted(keys, seg[:, 3])
    return seg, keys


@njit(cache=True, nogil=True, inline="always")
def _bucket(v, a, inv, nb):
    """Bucket of value ``v``: 0 below ``a``, 1..nb fine, nb + 1 above (monotone in ``v``)."""
    t = (v - a) * inv
    if t < 0.0:
        return 0
    if t >= nb:
        return nb + 1
    return 1 + int(t)


@njit(cache=True, nogil=True)
def _bucket_placement(data, mask, use_mask, seg, lower, upper):
    """Place the fine buckets from a strided sample of the segments' usable values.

    Returns ``(a, inv, nb, shift)``: bucket ``1 + int((v - a) * inv)`` for the ``nb``
    fine buckets, and the sample median (the shift of the sums). ``inv`` is 0 (one
    bucket for everything) when the sample has no spread.
    """
    total = 0
    for s in range(seg.shape[0]):
        total += seg[s, 2] - seg[s, 1] + 1
    nb = 16
    while nb < _BUCKETS_MAX and nb * 512 < total:
        nb *= 2
    step = max(1, total // _BUCKET_SAMPLE)
    sample = np.empty(total // step + 1)
    m = 0
    nxt = 0  # index (over all segment pixels) of the next pixel to sample
    i = 0
    for s in range(seg.shape[0]):
        y = seg[s, 0]
        x0 = seg[s, 1]
        n = seg[s, 2] - x0 + 1
        while nxt < i + n:
            v = data[y, x0 + nxt - i]
            if (not use_mask or mask[y, x0 + nxt - i]) and v >= lower and v <= upper:
                sample[m] = v
                m += 1
            nxt += step
        i += n
    if m == 0:
        return 0.0, 0.0, nb, 0.0
    # quantiles by selection (no sort to compile): after selecting rank k, the ranks
    # below k are in sample[:k] and those above in sample[k + 1:m]
    h = m // 2
    med = select_kth(sample, m, h)
    q1 = select_kth(sample, h, m // 4) if m // 4 < h else med
    up = sample[h + 1 : m]
    q3 = select_kth(up, up.shape[0], (3 * m) // 4 - h - 1) if (3 * m) // 4 > h else med
    spread = q3 - q1
    if not spread > 0.0:
        spread = (select_kth(sample, m, m - 1 - m // 100) - select_kth(sample, m, m // 100))
    if not spread > 0.0:
        spread = sample[:m].max() - sample[:m].min()
    reach = _BUCKET_REACH * spread
    if not (reach > 0.0 and math.isfinite(reach) and math.isfinite(nb / (2.0 * reach))):
        return med, 0.0, nb, med
    return med - reach, nb / (2.0 * reach), nb, med


@njit(cache=True, nogil=True, fastmath=_REASSOC)
def _run_sums(vals, a0, a1, shift):
    """Sum and sum of squares of ``v - shift``, smallest and largest ``v`` of ``vals[a0:a1]``."""
    s = 0.0
    q = 0.0
    mn = vals[a0]
    mx = vals[a0]
    for k in range(a0, a1):
        v = vals[k]
        d = v - shift
        s += d
        q += d * d
        mn = min(mn, v)
        mx = max(mx, v)
    return s, q, mn, mx


@njit(cache=True, nogil=True)
def _bucket_partition(data, mask, use_mask, seg, ncell, lower, upper, out):
    """Distribute the usable values of every cell into value buckets.

    Parameters
    ----------
    data, mask, use_mask
        The image and its good-pixel mask (read when ``use_mask``).
    seg : ndarray of int64, shape (nseg, 4)
        From `_cell_segments`.
    ncell : int
        Number of cells.
    lower, upper : float
        Finite inclusive bounds on usable values (NaN and inf are never usable).
    out : ndarray, 1-D, data dtype
        Where the values go: at least as long as the segments' pixels.

    Returns
    -------
    part : tuple
        ``(vals, start, p1, p2, bmin, bmax)``: bucket ``k = cell * (nb + 2) + j`` holds
        ``vals[start[k]:start[k + 1]]`` (unordered) with smallest and largest value
        ``bmin[k]``, ``bmax[k]``; ``p1[k]``, ``p2[k]`` are the sums of ``v - shift`` and
        of its square over the fine buckets ``1 .. j - 1`` of the cell.
    bins : tuple
        ``(a, inv, nb)``, see `_bucket`.
    shift : float
        The shift of the sums.
    """
    a, inv, nb, shift = _bucket_placement(data, mask, use_mask, seg, lower, upper)
    nbt = nb + 2
    nk = ncell * nbt
    # segments cell by cell (a counting sort by cell): the scatter below then writes to
    # one cell's buckets at a time, which keeps its targets in cache
    order = np.empty(seg.shape[0], dtype=np.int64)
    first = np.zeros(ncell + 1, dtype=np.int64)
    for s in range(seg.shape[0]):
        first[seg[s, 3] + 1] += 1
    for c in range(ncell):
        first[c + 1] += first[c]
    for s in range(seg.shape[0]):
        order[first[seg[s, 3]]] = s
        first[seg[s, 3]] += 1
    start = np.zeros(nk + 1, dtype=np.int64)
    for s in range(seg.shape[0]):
        y = seg[s, 0]
        base = seg[s, 3] * nbt + 1  # counts land one slot up: start is their prefix sum
        for x in range(seg[s, 1], seg[s, 2] + 1):
            v = data[y, x]
            if (not use_mask or mask[y, x]) and v >= lower and v <= upper:
                start[base + _bucket(v, a, inv, nb)] += 1
    for k in range(nk):
        start[k + 1] += start[k]
    pos = start[:-1].copy()
    for t in range(seg.shape[0]):
        s = order[t]
        y = seg[s, 0]
        base = seg[s, 3] * nbt
        for x in range(seg[s, 1], seg[s, 2] + 1):
            v = data[y, x]
            if (not use_mask or mask[y, x]) and v >= lower and v <= upper:
                k = base + _bucket(v, a, inv, nb)
                out[pos[k]] = v
                pos[k] += 1
    p1 = np.zeros(nk + 1)
    p2 = np.zeros(nk + 1)
    bmin = np.full(nk, np.inf, dtype=out.dtype)
    bmax = np.full(nk, -np.inf, dtype=out.dtype)
    for c in range(ncell):
        s1 = 0.0
        s2 = 0.0
        for j in range(nbt):
            k = c * nbt + j
            p1[k] = s1
            p2[k] = s2
            if start[k + 1] > start[k]:
                s, q, bmin[k], bmax[k] = _run_sums(out, start[k], start[k + 1], shift)
                if 1 <= j <= nb:
                    s1 += s
                    s2 += q
    return (out, start, p1, p2, bmin, bmax), (a, inv, nb), shift


@njit(cache=True, nogil=True)
def _bucket_moments(part, bins, cells, lo, hi, shift):
    """Count, mean and ddof=1 std of the values within ``[lo, hi]`` of some cells."""
    vals, start, p1, p2, _, _ = part
    a, inv, nb = bins
    nbt = nb + 2
    jl = _bucket(lo, a, inv, nb)
    jh = _bucket(hi, a, inv, nb)
    count = 0
    s = 0.0
    q = 0.0
    for i in range(cells.shape[0]):
        base = cells[i] * nbt
        k = base + jl
        n, ds, dq = _sums(vals[start[k]:start[k + 1]], start[k + 1] - start[k], lo, hi, shift)
        count += n
        s += ds
        q += dq
        if jh > jl:
            kh = base + jh
            n, ds, dq = _sums(vals[start[kh]:start[kh + 1]], start[kh + 1] - start[kh], lo, hi,
                              shift)
            count += n + start[kh] - start[k + 1]  # the fine buckets strictly between
            s += ds + p1[kh] - p1[k + 1]
            q += dq + p2[kh] - p2[k + 1]
    return _moments_from_sums(count, s, q, shift)


@njit(cache=True, nogil=True)
def _count_within(vals, a0, a1, lo, hi):
    """Count the values of ``vals[a0:a1]`` within ``[lo, hi]``."""
    n = 0
    for k in range(a0, a1):
        v = vals[k]
        n += (v >= lo) & (v <= hi)
    return n


@njit(cache=True, nogil=True)
def _bucket_kth(part, bins, cells, lo, hi, rank):
    """Return the ``rank``-th smallest value within ``[lo, hi]`` of some cells (NaN if fewer).

    Returned in the data's type: the mean of the two middle values of an even count is
    then taken in the data's precision, as `median_within` does.
    """
    vals, start, _, _, _, _ = part
    a, inv, nb = bins
    nbt = nb + 2
    jl = _bucket(lo, a, inv, nb)
    jh = _bucket(hi, a, inv, nb)
    before = 0
    for j in range(jl, jh + 1):
        n = 0
        size = 0
        for i in range(cells.shape[0]):
            k = cells[i] * nbt + j
            size += start[k + 1] - start[k]
            if j == jl or j == jh:
                n += _count_within(vals, start[k], start[k + 1], lo, hi)
            else:
                n += start[k + 1] - start[k]
        if before + n > rank:
            work = np.empty(size, dtype=vals.dtype)
            m = 0
            for i in range(cells.shape[0]):
                k = cells[i] * nbt + j
                for t in range(start[k], start[k + 1]):
                    v = vals[t]
                    work[m] = v
                    m += (v >= lo) & (v <= hi)
            return select_kth(work, m, rank - before)
        before += n
    none = np.empty(1, dtype=vals.dtype)  # not reached for rank < count; typed as the data
    none[0] = np.nan
    return none[0]


@njit(cache=True, nogil=True)
def _bucket_median(part, bins, cells, lo, hi):
    """Exact median of the values within ``[lo, hi]`` of some cells (NaN if none)."""
    count, _, _ = _bucket_moments(part, bins, cells, lo, hi, 0.0)
    if count == 0:
        return np.nan
    half = count // 2
    upper_mid = _bucket_kth(part, bins, cells, lo, hi, half)
    if count % 2 == 1:
        return float(upper_mid)
    return 0.5 * (_bucket_kth(part, bins, cells, lo, hi, half - 1) + upper_mid)


@njit(cache=True, nogil=True)
def _bucket_minmax(part, bins, cells, lo, hi):
    """Smallest and largest values within ``[lo, hi]`` of some cells (inf, -inf if none)."""
    vals, start, _, _, bmin, bmax = part
    a, inv, nb = bins
    nbt = nb + 2
    jl = _bucket(lo, a, inv, nb)
    jh = _bucket(hi, a, inv, nb)
    mn = np.inf
    mx = -np.inf
    for i in range(cells.shape[0]):
        base = cells[i] * nbt
        for j in range(jl, jh + 1):
            k = base + j
            if j == jl or j == jh:
                lo_k, _ = _minmax_within(vals[start[k]:start[k + 1]], start[k + 1] - start[k],
                                         lo, hi)
            else:
                lo_k = float(bmin[k])
            if lo_k < np.inf:
                mn = min(mn, lo_k)
                break
        for j in range(jh, jl - 1, -1):
            k = base + j
            if j == jl or j == jh:
                _, hi_k = _minmax_within(vals[start[k]:start[k + 1]], start[k + 1] - start[k],
                                         lo, hi)
            else:
                hi_k = float(bmax[k])
            if hi_k > -np.inf:
                mx = max(mx, hi_k)
                break
    return mn, mx


@njit(cache=True, nogil=True)
def _bucket_hist_counts(part, bins, cells, h0, top, upper, hinv, nbins):
    """`_hist_counts` over some cells' buckets.

    The bin index ``int(hinv * (v - h0))`` does not decrease with ``v``, so a bucket
    whose smallest and largest values share a bin adds its count to that bin; only the
    buckets that straddle a bin edge (or a limit) are read value by value.
    """
    vals, start, _, _, bmin, bmax = part
    a, inv, nb = bins
    nbt = nb + 2
    j0 = _bucket(float(h0), a, inv, nb)
    j1 = _bucket(float(top), a, inv, nb)
    counts = np.zeros(nbins, dtype=np.int64)
    for i in range(cells.shape[0]):
        base = cells[i] * nbt
        for j in range(j0, j1 + 1):
            k = base + j
            if start[k + 1] == start[k]:
                continue
            if j0 < j < j1 and bmax[k] <= upper:  # all values in [h0, top) and <= upper
                b = int(hinv * (bmin[k] - h0))
                if b == int(hinv * (bmax[k] - h0)):
                    if b < nbins:
                        counts[b] += start[k + 1] - start[k]
                    continue
            for t in range(start[k], start[k + 1]):
                v = vals[t]
                if v >= h0 and v < top and v <= upper:
                    b = int(hinv * (v - h0))
                    if b < nbins:
                        counts[b] += 1
    return counts


@njit(cache=True, nogil=True)
def cell_stats(data, mask, use_mask, spans, reg_off, whole, lower, upper, nclip, lsig, usig,
               binwidth, code, out):
    """Clipped statistic of every region (and of the whole image) through bucketed cells.

    The same results as `region_stats` (the same pixels kept, the same median, mode and
    midpt; sums in another order), for regions that overlap heavily.

    Parameters
    ----------
    data, mask, use_mask, spans, reg_off, whole, lower, upper, nclip, lsig, usig, binwidth, code
        As for `region_stats` (at most `MAX_CELL_REGIONS` regions).
    out : ndarray, 1-D, data dtype
        Scratch space for the values, at least ``data.size`` long (reused between calls:
        fresh memory costs a page fault per 4 KiB on first touch).

    Returns
    -------
    value : ndarray of float64, shape (R + whole,)
        NaN where no pixel is usable.
    npix : ndarray of int64
        Pixels of the final clipping pass.
    std : ndarray of float64
        Their ddof=1 standard deviation.
    """
    ny, nx = data.shape
    nreg = reg_off.shape[0] - 1
    seg, keys = _cell_segments(spans, reg_off, ny, nx, whole)
    ncell = keys.shape[0]
    part, bins, shift = _bucket_partition(data, mask, use_mask, seg, ncell, lower, upper, out)
    nout = nreg + (1 if whole else 0)
    value = np.full(nout, np.nan)
    npix = np.zeros(nout, dtype=np.int64)
    spread = np.full(nout, np.nan)
    vals = part[0]
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
        count, mean, std, lo, hi = _clip(1, vals, 0, part, bins, cells, shift, lower, upper,
                                         nclip, lsig, usig)
        if count == 0:
            continue
        npix[r] = count
        spread[r] = std
        if code == STAT_MEAN:
            value[r] = mean
        elif code == STAT_MEDIAN:
            value[r] = _bucket_median(part, bins, cells, lo, hi)
        else:
            value[r] = _hist_stat(1, vals, 0, part, bins, cells, lo, hi, upper, std, binwidth,
                                  code == STAT_MIDPT)
    return value, npix, spread


def warmup() -> None:
    """Compile (or load from the cache) the statistics kernels for float32 and float64."""
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
            out = np.empty(data.size, dtype=dtype)
            for code in (STAT_MEAN, STAT_MEDIAN, STAT_MODE, STAT_MIDPT):
                cell_stats(data, m, use, two, off, True, -1e300, 1e300, 2, 3.0, 3.0, 0.1, code,
                           out)
