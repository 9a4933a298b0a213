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
    "cell_partition",
    "cell_prefix",
    "cell_stats",
    "clip_moments",
    "histogram_stat",
    "median_within",
    "moments",
    "region_stats",
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
    tiny = _RES64 * max(abs(mn), abs(mx))
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
                    seg = grow(seg, nseg + 1)
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
def _scatter(src, dst, pos, shift, signbit, allbits, kind):
    """One radix pass: move ``src`` into ``dst`` by the digit at ``shift``.

    ``kind`` says what the words are: 0 keys in and out, 1 float patterns in (made
    keys), 2 keys in (written back as float patterns), 3 patterns in and out. Each
    kind compiles to its own branch-free loop.
    """
    mask = (1 << _RADIX_BITS) - 1
    if kind == 0:
        for i in range(src.shape[0]):
            k = src[i]
            c = (k >> shift) & mask
            dst[pos[c]] = k
            pos[c] += 1
    elif kind == 1:
        for i in range(src.shape[0]):
            k = _to_key(src[i], signbit, allbits)
            c = (k >> shift) & mask
            dst[pos[c]] = k
            pos[c] += 1
    elif kind == 2:
        for i in range(src.shape[0]):
            k = src[i]
            c = (k >> shift) & mask
            dst[pos[c]] = _from_key(k, signbit, allbits)
            pos[c] += 1
    else:
        for i in range(src.shape[0]):
            u = src[i]
            c = (_to_key(u, signbit, allbits) >> shift) & mask
            dst[pos[c]] = u
            pos[c] += 1


@njit(cache=True, nogil=True)
def _radix_sort_floats(bits, signbit, tmp):
    """Sort floats given as bit patterns, in place: LSD radix sort on order keys.

    The float order is the unsigned order of the keys `_to_key` makes; keys are made
    while the first pass reads and turned back while the last one writes, and the
    passes alternate between two scratch halves so that the last one lands in
    ``bits``. The histograms of every digit are counted in one read, and a digit that
    never varies costs no pass. Each pass is a separate tight loop (`_scatter`):
    about a quarter faster than one loop that branches on the pass.

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
        total = 0
        for c in range(nbuck):
            pos[c] = total
            total += hist[d, c]
        shift = _RADIX_BITS * d
        if npass == 1:
            _scatter(bits, a, pos, shift, signbit, allbits, 3)
            bits[:] = a
        elif q == 0:
            _scatter(bits, a, pos, shift, signbit, allbits, 1)
        elif q == npass - 1:
            _scatter(a if q % 2 == 1 else b, bits, pos, shift, signbit, allbits, 2)
        elif q % 2 == 1:
            _scatter(a, b, pos, shift, signbit, allbits, 0)
        else:
            _scatter(b, a, pos, shift, signbit, allbits, 0)


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

    Returns
    -------
    ndarray of uint8 or None
        The scratch memory used (``scratch`` itself when it was large enough), to pass
        again next time.
    """
    _sort_small_cells(vals, cstart, cend)
    sizes = cend - cstart
    nmax = int(sizes.max()) if sizes.size else 0
    if nmax < _RADIX_MIN:
        return scratch
    need = 2 * nmax * vals.itemsize
    if scratch is None or scratch.size < need:
        scratch = np.empty(need, dtype=np.uint8)
    if vals.dtype == np.float32:
        _sort_cells_bits(vals.view(np.uint32), np.uint32(1 << 31), cstart, cend,
                         scratch[:need].view(np.uint32))
    else:
        _sort_cells_bits(vals.view(np.uint64), np.uint64(1 << 63), cstart, cend,
                         scratch[:need].view(np.uint64))
    return scratch


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
            vals, cstart, cend, keys = cell_partition(data, m, use, two, off, -1e300, 1e300,
                                                      True)
            sort_cells(vals, cstart, cend)
            big = np.arange(_RADIX_MIN + 1, dtype=dtype)[::-1].copy()
            sort_cells(big, np.array([0]), np.array([_RADIX_MIN + 1]))
            p1, p2, poff = cell_prefix(vals, cstart, cend, 5.0)
            for code in (STAT_MEAN, STAT_MEDIAN, STAT_MODE, STAT_MIDPT):
                cell_stats(vals, p1, p2, poff, cstart, cend, keys, 2, True, 5.0, -1e300, 1e300,
                           2, 3.0, 3.0, 0.1, code)
