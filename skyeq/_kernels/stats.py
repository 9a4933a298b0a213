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
from numba.cpython.unsafe.numbers import trailing_zeros

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
    "levels_apart",
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
def _moments_of(buf, n, part, bins, cells, lo, hi, shift):
    """One moments pass: over ``buf[:n]`` (``part`` None) or over bucketed cells."""
    if part is None:
        return moments(buf, n, lo, hi, shift)
    return _bucket_moments(part, bins, cells, lo, hi, shift)


@njit(cache=True, nogil=True)
def _clip(buf, n, part, bins, cells, shift0, lower, upper, nclip, lsig, usig):
    """Run the clipping loop of `clip_moments` over a buffer or over sorted cells.

    With ``part`` None it reads ``buf[:n]`` (``bins``, ``cells`` and ``shift0`` are
    ignored); otherwise the cells ``cells`` of a bucket partition (`_bucket_histogram`,
    sums shifted by ``shift0``; ``buf`` and ``n`` are ignored). numba prunes the
    ``part is None`` branches when it compiles each kind, so that the direct kernels do
    not compile the bucket queries, nor these the direct ones.
    """
    lo = lower
    hi = upper
    if part is None:
        if n == 0:
            return 0, np.nan, np.nan, lo, hi
        shift = _first_within(buf, n, lo, hi)
        if shift != shift:
            return 0, np.nan, np.nan, lo, hi
    else:
        shift = shift0
    count, mean, std = _moments_of(buf, n, part, bins, cells, lo, hi, shift)
    if part is None:
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
        count, mean, std = _moments_of(buf, n, part, bins, cells, lo, hi, shift)
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
    return _clip(buf, n, None, None, None, 0.0, lower, upper, nclip, lsig, usig)


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
    """Smallest and largest values of ``buf[:n]`` within ``[lo, hi]`` (inf, -inf if none).

    Found on integer keys (`_minmax_keys`): a float comparison reduction does not
    vectorise without fast-math flags that would break the NaN test; an integer one
    does (4x faster, measured on 4 M float32 values).
    """
    if buf.itemsize == 4:
        return _minmax_keys(buf, buf[:n].view(np.int32), n, lo, hi, np.int32(0x7FFFFFFF))
    return _minmax_keys(buf, buf[:n].view(np.int64), n, lo, hi,
                        np.int64(0x7FFFFFFFFFFFFFFF))


@njit(cache=True, nogil=True)
def _minmax_keys(buf, bits, n, lo, hi, top):
    """`_minmax_within` on ``bits``, ``buf[:n]`` viewed as signed integers of its width.

    The key of a value is its bits, with the magnitude bits flipped when the sign bit
    is set: keys order as the values do (-0.0 just below 0.0). ``top`` (all bits but
    the sign) and ``-top - 1`` are the keys of NaN bit patterns, which the bounds
    exclude: they mark "none".
    """
    low = -top - 1
    kmn = top
    kmx = low
    for k in range(n):
        v = buf[k]
        b = bits[k]
        key = b ^ top if b < 0 else b
        ok = (v >= lo) & (v <= hi)
        kmn = min(kmn, key if ok else top)
        kmx = max(kmx, key if ok else low)
    if kmn == top:
        return np.inf, -np.inf
    out = np.empty(2, dtype=buf.dtype)
    raw = out.view(bits.dtype)
    raw[0] = kmn ^ top if kmn < 0 else kmn
    raw[1] = kmx ^ top if kmx < 0 else kmx
    return float(out[0]), float(out[1])


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
    return _hist_stat(buf, n, None, None, None, lo, hi, upper, std, binwidth, want_midpt)


@njit(cache=True, nogil=True)
def _hist_stat(buf, n, part, bins, cells, lo, hi, upper, std, binwidth, want_midpt):
    """`histogram_stat` over ``buf[:n]`` (``part`` None) or over bucketed cells.

    On the cells pass the partition's values as ``buf`` (they set the precision of the
    binning). The ``part is None`` branches are pruned at compile time (see `_clip`).
    """
    if part is None:
        mn, mx = _minmax_within(buf, n, lo, hi)
    else:
        mn, mx = _bucket_minmax(part, bins, cells, lo, hi)
    if not mn <= mx:  # none (or, on the bucketed cells, values not at hand)
        return np.nan
    hw = binwidth * std
    drange = mx - mn
    tiny = _RES64 * max(abs(mn), abs(mx))
    if not (hw > tiny and drange > tiny and hw <= drange):  # (a NaN std: one bin)
        if want_midpt:
            if part is None:
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
    if part is None:
        counts = _hist_counts(buf, n, h0, top, upper, inv, nbins)
    else:
        counts = _bucket_hist_counts(part, bins, cells, h0, top, upper, inv, nbins)
    if want_midpt:
        total = 0
        for b in range(nbins):
            total += counts[b]
        if total == 0:  # only on estimates of the bucketed cells (not returned)
            return np.nan
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
# When the regions of one image overlap (dithers: every overlap is nearly the whole
# image), reading every region's pixels in every clipping pass costs regions x pixels x
# passes. Instead the image is cut once into *cells*, the maximal sets of pixels
# covered by the same regions (`_cell_segments`), and read once (`_bucket_histogram`):
# every cell's count and shifted sums, and, by a monotone *bucket* index of the value,
# the values of the buckets where the answers lie: the tails (beyond about 2.7 sigma,
# where clip bounds of a few sigma fall) and, for a median, a few buckets about the
# sample's clipped median: a few per cent of the pixels. A moments pass of a region is
# its cells' totals less the kept values outside its bounds; its median a selection in
# the one kept bucket that holds the rank. A mode or midpt also counts every bucket
# and reads the buckets that straddle a bin edge once more (`_bucket_gather`). When a
# query needs values that were not kept (a bound or a median in the unkept middle:
# unusual data, clip bounds of a sigma or so), the image is read again keeping every
# value (`cell_stats`).
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
#: (When every value was scattered into its bucket, 512 to 2048 buckets cost the same on
#: six 2048x2048 dithers, 4096 ~10 % more.)
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
    keys, cell = _distinct_keys(seg[:, 3])
    seg[:, 3] = cell
    return seg, keys


#: Multiplier of the Fibonacci hash of `_distinct_keys` (2**64 over the golden ratio).
_FIB = np.uint64(0x9E3779B97F4A7C15)


@njit(cache=True, nogil=True)
def _distinct_keys(key):
    """Return the distinct values of ``key`` ascending and the index of each element's.

    What ``np.unique`` and ``np.searchsorted`` give, through a hash table of the
    distinct values (the cells of ~10^4 segments: a few dozen) rather than a sort of
    every element (0.77 -> 0.61 ms for the `_cell_segments` of a 2048x2048 dither with
    five regions, measured).
    """
    n = key.shape[0]
    bits = 6
    table = np.full(1 << bits, -1, dtype=np.int64)  # slot -> index into `found`
    found = np.empty(16, dtype=np.int64)
    nfound = 0
    first = np.empty(n, dtype=np.int64)  # each element's index into `found`
    for i in range(n):
        k = key[i]
        h = np.int64((np.uint64(k) * _FIB) >> np.uint64(64 - bits))
        while table[h] >= 0 and found[table[h]] != k:
            h = (h + 1) & ((1 << bits) - 1)
        if table[h] < 0:
            if 2 * (nfound + 1) > (1 << bits):  # over half full: twice the slots
                bits += 1
                table = np.full(1 << bits, -1, dtype=np.int64)
                for f in range(nfound):
                    g = np.int64((np.uint64(found[f]) * _FIB) >> np.uint64(64 - bits))
                    while table[g] >= 0:
                        g = (g + 1) & ((1 << bits) - 1)
                    table[g] = f
                h = np.int64((np.uint64(k) * _FIB) >> np.uint64(64 - bits))
                while table[h] >= 0:
                    h = (h + 1) & ((1 << bits) - 1)
            if nfound == found.shape[0]:
                more = np.empty(2 * nfound, dtype=np.int64)
                more[:nfound] = found
                found = more
            found[nfound] = k
            table[h] = nfound
            nfound += 1
        first[i] = table[h]
    order = np.argsort(found[:nfound])
    rank = np.empty(nfound, dtype=np.int64)
    for r in range(nfound):
        rank[order[r]] = r
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        out[i] = rank[first[i]]
    return found[:nfound][order], out


@njit(cache=True, nogil=True, inline="always")
def _bucket(v, a, inv, nb):
    """Bucket of value ``v``: 0 below ``a``, 1..nb fine, nb + 1 above (monotone in ``v``).

    Written without branches (a select and a clamp), so that the loops calling it
    vectorise.
    """
    t = (v - a) * inv
    return 0 if t < 0.0 else 1 + np.int64(min(t, float(nb)))


@njit(cache=True, nogil=True, inline="always")
def _is_kept(j, edges):
    """Whether `_bucket_histogram` keeps the values of bucket ``j`` (see its ``edges``)."""
    return (j < edges[2]) | (j > edges[3]) | ((j >= edges[0]) & (j <= edges[1]))


@njit(cache=True, nogil=True)
def _quartiles_of(v, n):
    """Lower quartile, median and upper quartile (nearest ranks) of ``v[:n]`` (reorders it).

    By selection (no sort to compile): after selecting rank ``k``, the ranks below
    ``k`` are in ``v[:k]`` and those above in ``v[k + 1:n]``.
    """
    h = n // 2
    med = select_kth(v, n, h)
    q1 = select_kth(v, h, n // 4) if n // 4 < h else med
    up = v[h + 1 : n]
    q3 = select_kth(up, up.shape[0], (3 * n) // 4 - h - 1) if (3 * n) // 4 > h else med
    return float(q1), float(med), float(q3)


@njit(cache=True, nogil=True)
def _bucket_placement(data, mask, use_mask, seg, lower, upper):
    """Place the fine buckets from a strided sample of the segments' usable values.

    Returns ``(a, inv, nb, shift)``: bucket ``1 + int((v - a) * inv)`` for the ``nb``
    fine buckets (centred on the sample median), and the median of the sample values
    within 3 sigma of it (the shift of the sums, and the centre of the middle buckets
    `_bucket_histogram` keeps). ``inv`` is 0 (one bucket for everything) when the
    sample has no spread.
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
    q1, med, q3 = _quartiles_of(sample, m)
    spread = q3 - q1
    if not spread > 0.0:
        spread = (select_kth(sample, m, m - 1 - m // 100) - select_kth(sample, m, m // 100))
    if not spread > 0.0:
        spread = sample[:m].max() - sample[:m].min()
    reach = _BUCKET_REACH * spread
    if not (reach > 0.0 and math.isfinite(reach) and math.isfinite(nb / (2.0 * reach))):
        return med, 0.0, nb, med
    # the shift: the median of the sample within +-3 sigma (of a Gaussian with this
    # interquartile range) of its median, where a clipped median will be
    near = np.empty(m, dtype=sample.dtype)
    w = 0
    for t in range(m):
        v = sample[t]
        near[w] = v
        w += abs(v - med) <= 2.2239 * spread
    centre = select_kth(near, w, w // 2) if w > 0 else med
    return med - reach, nb / (2.0 * reach), nb, float(centre)


#: Which buckets `_bucket_histogram` keeps the values of as it reads the image, in units
#: of the interquartile range of its sample (the fine buckets span +-``_BUCKET_REACH``
#: of it about the sample median): the *tails*, beyond ``_TAIL_FROM`` (about 2.7 sigma
#: of a Gaussian sky: under 1 % of its pixels, plus the sources), where clip bounds of
#: a few sigma fall, and for a median the *middle*: the 9 of 2048 buckets (~3.5 %
#: of a sky's pixels) about the median of the sample within 3 sigma, a clipped median's
#: place (the medians of 2048x2048 dithers and tiles with sources fell 0-2 buckets from
#: it, measured).
_TAIL_FROM = 2.0
_MIDDLE_REACH = 0.03125


_SIGN64 = np.uint64(1 << 63)


@njit(cache=True, nogil=True)
def _order_key(x):
    """Return the uint64 whose order is that of the finite double ``x`` (-0.0 below 0.0)."""
    f = np.empty(1, dtype=np.float64)
    f[0] = x
    u = f.view(np.uint64)[0]
    return ~u if u & _SIGN64 else u | _SIGN64


@njit(cache=True, nogil=True)
def _from_order_key(k):
    """Return the double of an `_order_key`."""
    u = np.empty(1, dtype=np.uint64)
    u[0] = k & ~_SIGN64 if k & _SIGN64 else ~k
    return u.view(np.float64)[0]


@njit(cache=True, nogil=True)
def _bucket_start(k, a, inv, nb):
    """Return the smallest finite double whose bucket (`_bucket`) is ``k`` or above.

    ``-inf`` when every finite double's is, ``inf`` when none is. By bisection on the
    doubles in order (64 steps), with `_bucket` itself: exact, whatever its rounding.
    """
    big = np.finfo(np.float64).max
    if _bucket(-big, a, inv, nb) >= k:
        return -np.inf
    if _bucket(big, a, inv, nb) < k:
        return np.inf
    lo = _order_key(-big)  # below k
    hi = _order_key(big)  # k or above
    while hi - lo > np.uint64(1):
        mid = lo + (hi - lo) // np.uint64(2)
        if _bucket(_from_order_key(mid), a, inv, nb) >= k:
            hi = mid
        else:
            lo = mid
    return _from_order_key(hi)


@njit(cache=True, nogil=True)
def _typed_below(typed, x):
    """Return the largest value of ``typed``'s dtype ``<= x`` (``typed``: 2 of scratch).

    The step down is taken in that dtype (towards its own -inf): stepping a float32
    towards the float64 -inf gave the next float64, which rounded back up.
    """
    typed[0] = x
    if typed[0] > x:
        typed[1] = -np.inf
        typed[0] = np.nextafter(typed[0], typed[1])
    return typed[0]


@njit(cache=True, nogil=True)
def _typed_above(typed, x):
    """Return the smallest value of ``typed``'s dtype ``>= x`` (see `_typed_below`)."""
    typed[0] = x
    if typed[0] < x:
        typed[1] = np.inf
        typed[0] = np.nextafter(typed[0], typed[1])
    return typed[0]


@njit(cache=True, nogil=True)
def _value_bounds(data, a, inv, nb, edges, lower, upper):
    """Return the bucket tests of `_bucket_histogram`'s read as bounds on the values.

    The bucket index is monotone in the value, so ``bucket(v) >= k`` is
    ``v >= _bucket_start(k)``; in the data's own type (the smallest value of that type
    at or above the double, and for ``upper`` the largest at or below it) a float32
    image is then compared in float32, 16 values to an AVX-512 register, with the same
    decisions as the bucket index in float64 (the read's loop: 0.64 -> 0.37 ns a pixel
    on a 2048x2048 NIRCam dither, measured; the index is computed for kept values only).

    Returns
    -------
    ndarray, data dtype, shape (6,)
        ``lower`` and ``upper`` (usable ``v``: ``b[0] <= v <= b[1]``); the end of the
        lower tail, the start of the upper tail, the start and the end of the middle
        (kept ``v``: ``v < b[2]`` or ``v >= b[3]`` or ``b[4] <= v < b[5]``; below the
        middle: ``v < b[4]``). See ``edges`` in `_bucket_histogram`.
    """
    x = np.array([lower, upper, _bucket_start(edges[2], a, inv, nb),
                  _bucket_start(edges[3] + 1, a, inv, nb), _bucket_start(edges[0], a, inv, nb),
                  _bucket_start(edges[1] + 1, a, inv, nb)])
    b = np.empty(6, dtype=data.dtype)
    typed = np.empty(2, dtype=data.dtype)
    for i in range(6):
        b[i] = _typed_below(typed, x[i]) if i == 1 else _typed_above(typed, x[i])
    return b


@njit(cache=True, nogil=True, fastmath=_REASSOC)
def _segment_sums(src, good, use_mask, bounds, shift, keep):
    """One segment's sums, and which of its values `_bucket_histogram` keeps.

    One vectorised loop over a 1-D slice (indexing the 2-D image pixel by pixel was 6x
    slower, measured), with no bucket index: its tests are comparisons with
    `_value_bounds` ``bounds``. ``keep[i]`` is set for the usable values in the kept
    buckets. Returns the count of usable values, the sums of ``v - shift`` and of its
    square, and the count of usable values below the middle.
    """
    lo, hi, tail_lo, tail_hi, mid_lo, mid_hi = (bounds[0], bounds[1], bounds[2], bounds[3],
                                                bounds[4], bounds[5])
    n = 0
    below = 0
    s = 0.0
    q = 0.0
    for i in range(src.shape[0]):
        v = src[i]
        ok = (v >= lo) & (v <= hi)
        if use_mask:
            ok = ok & good[i]
        keep[i] = ok & ((v < tail_lo) | (v >= tail_hi) | ((v >= mid_lo) & (v < mid_hi)))
        d = (v - shift) if ok else 0.0
        n += ok
        below += ok & (v < mid_lo)
        s += d
        q += d * d
    return n, s, q, below


@njit(cache=True, nogil=True)
def _segment_ids(src, good, use_mask, lower, upper, a, inv, nb, ids):
    """Bucket of every value of one segment (`_bucket`), -1 where unusable."""
    for i in range(src.shape[0]):
        v = src[i]
        ok = (v >= lower) & (v <= upper)
        if use_mask:
            ok = ok & good[i]
        j = _bucket(v, a, inv, nb)
        ids[i] = j if ok else -1


#: Multiplier that gathers the lowest bits of a uint64's eight bytes into its top byte.
_BYTE_BITS = np.uint64(0x0102040810204080)


@njit(cache=True, nogil=True)
def _flag_word(flags, b):
    """Return flags ``64 b .. 64 b + 63`` (uint8 0 or 1, read as uint64s) as a uint64's bits."""
    w = np.uint64(0)
    for t in range(8):
        w |= ((flags[8 * b + t] * _BYTE_BITS) >> np.uint64(56)) << np.uint64(8 * t)
    return w


@njit(cache=True, nogil=True)
def _lowest_bit(w):
    """Index of the lowest set bit of the non-zero uint64 ``w``."""
    return trailing_zeros(w)


@njit(cache=True, nogil=True)
def _bucket_histogram(data, mask, use_mask, seg, ncell, lower, upper, out, side_v, side_k,
                      counted, middle, everything):
    """Read the image once: every cell's sums, and the values of its tail buckets.

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
        Where the kept values go, by bucket: at least as long as the segments' pixels.
    side_v, side_k : ndarray, 1-D, data dtype and int32
        Scratch for the kept values and their bucket slots in reading order (replaced by
        fresh arrays when shorter than a quarter of the segments' pixels, or than all of
        them with ``everything``).
    counted : bool
        Also count every bucket (the histograms of the mode and midpt need them).
    middle : bool
        Also keep the middle buckets (a median's).
    everything : bool
        Keep every value (when the queries needed a bucket that is not kept).

    Returns
    -------
    part : tuple
        ``(vals, start, pc, p1, p2, size, tot, below, take, need, short, edges, lim)``.
        Bucket ``k = cell * (nb + 2) + j``. Kept (``take[k]``) or gathered buckets hold
        their values at ``vals[start[k]:start[k] + size[k]]`` in row-major order.
        ``pc[c, j]``, ``p1[c, j]``, ``p2[c, j]``: the count and sums of ``v - shift`` and
        of its square of the kept values of cell ``c``'s buckets below ``j``.
        ``tot[c]``: the count and sums of all usable values of cell ``c``; ``below[c]``:
        how many of them lie in buckets below the middle. ``size[k]``: the bucket's
        count when ``counted``, else its kept count. ``need[k]``: a histogram wants the
        values (see `_bucket_gather`). ``short[0]``: the tails overflowed their buffer,
        or a query needed values that are not kept. ``edges``: first and last middle
        bucket, end of the lower tail, start of the upper tail less one. ``lim``:
        ``(lower, upper)``.
    bins : tuple
        ``(a, inv, nb)``, see `_bucket`.
    shift : float
        The shift of the sums.
    """
    a, inv, nb, shift = _bucket_placement(data, mask, use_mask, seg, lower, upper)
    nx = data.shape[1]
    flat = data.reshape(data.size)
    fmask = mask.reshape(mask.size)
    nbt = nb + 2
    nk = ncell * nbt
    everything = everything or inv == 0.0  # no spread: one bucket
    per_iqr = nb / (2.0 * _BUCKET_REACH)
    if everything:
        t_lo, t_hi, m_lo, m_hi = nbt, nbt, nbt, -1  # every bucket in the "lower tail"
    else:
        tail = int(_TAIL_FROM * per_iqr)
        t_lo = max(1, 1 + nb // 2 - tail)
        t_hi = min(nb, 1 + nb // 2 + tail)
        centre = _bucket(shift, a, inv, nb)  # where the clipped medians are
        half = max(1, int(_MIDDLE_REACH * per_iqr))
        m_lo = max(t_lo, centre - half) if middle else nbt
        m_hi = min(t_hi, centre + half)
    tot = np.zeros((ncell, 3))
    below = np.zeros(ncell, dtype=np.int64)
    cnt = np.zeros(nk + 1, dtype=np.int64)
    npx = 0
    for s in range(seg.shape[0]):
        npx += seg[s, 2] - seg[s, 1] + 1
    cap = npx if everything else min(npx, max(4 * nx, npx // 4, 1 << 16))
    if side_v.shape[0] < cap or side_k.shape[0] < cap:
        side_v = np.empty(cap, dtype=data.dtype)
        side_k = np.empty(cap, dtype=np.int32)
    ns = 0
    overflow = False
    edges = np.array([m_lo, m_hi, t_lo, t_hi], dtype=np.int64)
    bounds = _value_bounds(data, a, inv, nb, edges, lower, upper)
    ids = np.empty(nx, dtype=np.int64)
    keep = np.zeros(64 * (nx // 64 + 1), dtype=np.uint8)
    keep8 = keep.view(np.uint64)
    for s in range(seg.shape[0]):
        p0 = seg[s, 0] * nx + seg[s, 1]
        m = seg[s, 2] - seg[s, 1] + 1
        src = flat[p0 : p0 + m]
        good = fmask[p0 : p0 + m] if use_mask else fmask
        c = seg[s, 3]
        base = c * nbt
        n, sd, sq, nbelow = _segment_sums(src, good, use_mask, bounds, shift, keep)
        tot[c, 0] += n
        tot[c, 1] += sd
        tot[c, 2] += sq
        below[c] += nbelow
        if counted:
            _segment_ids(src, good, use_mask, lower, upper, a, inv, nb, ids)
            for i in range(m):
                cnt[base + ids[i] if ids[i] >= 0 else nk] += 1
        if ns + m > cap:  # too much in the tails for the buffer: keep everything instead
            overflow = True
            break
        for i in range(m, 64 * ((m + 63) // 64)):
            keep[i] = 0  # past the segment: flags of a longer one before
        for b in range((m + 63) // 64):
            w = _flag_word(keep8, b)  # 64 flags: most words hold a few kept values at most
            while w != 0:  # one pass per kept value, not per pixel
                i = 64 * b + _lowest_bit(w)
                v = src[i]
                side_v[ns] = v
                side_k[ns] = base + _bucket(v, a, inv, nb)
                ns += 1
                w &= w - np.uint64(1)
    take = np.zeros(nk + 1, dtype=np.bool_)  # the last slot: unusable pixels
    kept = np.zeros(nk + 1, dtype=np.int64)
    if overflow:  # nothing kept: `short` sends `cell_stats` to keep everything
        ns = 0
    else:
        for j in range(nbt):
            if _is_kept(j, edges):
                for c in range(ncell):
                    take[c * nbt + j] = True
        for t in range(ns):
            kept[side_k[t]] += 1
    size = cnt if counted else kept
    start = np.zeros(nk + 1, dtype=np.int64)
    for k in range(nk):
        start[k + 1] = start[k] + size[k]
    pos = start[:nk].copy()
    s1 = np.zeros(nk + 1)
    s2 = np.zeros(nk + 1)
    for t in range(ns):  # the kept values to their buckets, in row-major order
        k = side_k[t]
        v = side_v[t]
        out[pos[k]] = v
        pos[k] += 1
        d = float(v) - shift  # float64 in pure Python too (NumPy 2 keeps float32 - float)
        s1[k] += d
        s2[k] += d * d
    pc = np.zeros((ncell, nbt + 1), dtype=np.int64)
    p1 = np.zeros((ncell, nbt + 1))
    p2 = np.zeros((ncell, nbt + 1))
    for c in range(ncell):
        for j in range(nbt):
            k = c * nbt + j
            pc[c, j + 1] = pc[c, j] + kept[k]
            p1[c, j + 1] = p1[c, j] + s1[k]
            p2[c, j + 1] = p2[c, j] + s2[k]
    need = np.zeros(nk + 1, dtype=np.bool_)
    flags = np.zeros(1, dtype=np.bool_)
    flags[0] = overflow
    lim = np.array([lower, upper])
    part = (out, start, pc, p1, p2, size, tot, below, take, need, flags, edges, lim)
    return part, (a, inv, nb), shift


@njit(cache=True, nogil=True, fastmath=_REASSOC)
def _sums_beside(buf, n, x, below, inclusive, shift):
    """Count and sums of ``v - shift`` of the values of ``buf[:n]`` below (or above) ``x``.

    ``inclusive``: also the values equal to ``x``.
    """
    count = 0
    s = 0.0
    q = 0.0
    for k in range(n):
        v = buf[k]
        side = (v < x) if below else (v > x)
        ok = side | (inclusive & (v == x))
        d = (v - shift) if ok else 0.0
        count += ok
        s += d
        q += d * d
    return count, s, q


@njit(cache=True, nogil=True)
def _below(part, bins, c, x, inclusive, shift):
    """Count and sums of ``v - shift`` of cell ``c``'s usable values below ``x``.

    ``inclusive``: also those equal to ``x``. ``shift`` must be the partition's. From
    the kept buckets below ``x`` and the values of ``x``'s own bucket when ``x`` falls
    in the lower tail; from the cell's totals less the kept buckets above when in the
    upper tail. Elsewhere (the unkept middle of the distribution) the values are not
    at hand: ``short`` is set and zeros are returned.
    """
    vals, start, pc, p1, p2, _, tot, _, _, _, short, edges, lim = part
    a, inv, nb = bins
    nbt = nb + 2
    if x < lim[0]:
        return 0, 0.0, 0.0
    if x > lim[1]:
        return np.int64(tot[c, 0]), tot[c, 1], tot[c, 2]
    j = _bucket(x, a, inv, nb)
    k = c * nbt + j
    n_k = pc[c, j + 1] - pc[c, j]
    if j < edges[2]:
        n, s, q = _sums_beside(vals[start[k] : start[k] + n_k], n_k, x, True, inclusive, shift)
        return pc[c, j] + n, p1[c, j] + s, p2[c, j] + q
    if j > edges[3]:
        n, s, q = _sums_beside(vals[start[k] : start[k] + n_k], n_k, x, False, not inclusive,
                               shift)
        n += pc[c, nbt] - pc[c, j + 1]
        s += p1[c, nbt] - p1[c, j + 1]
        q += p2[c, nbt] - p2[c, j + 1]
        return np.int64(tot[c, 0]) - n, tot[c, 1] - s, tot[c, 2] - q
    short[0] = True
    return 0, 0.0, 0.0


@njit(cache=True, nogil=True)
def _bucket_moments(part, bins, cells, lo, hi, shift):
    """Count, mean and ddof=1 std of the values within ``[lo, hi]`` of some cells."""
    count = 0
    s = 0.0
    q = 0.0
    for i in range(cells.shape[0]):
        n1, s1, q1 = _below(part, bins, cells[i], hi, True, shift)
        n0, s0, q0 = _below(part, bins, cells[i], lo, False, shift)
        count += n1 - n0
        s += s1 - s0
        q += q1 - q0
    if count < 0:  # only when `short`: the results are not used
        count = 0
    return _moments_from_sums(count, s, q, shift)


@njit(cache=True, nogil=True)
def _kept_bucket(part, nbt, cells, first, last, before, rank, offset):
    """Find the bucket ``j`` in ``first..last`` that holds ``rank`` among the kept values.

    ``before`` values precede the kept values of bucket ``first`` (over the cells);
    returns ``j`` and the count of values before bucket ``j``. Bisection on the
    prefix counts (``offset`` = ``first``'s column of ``pc``).
    """
    pc = part[2]
    while first < last:
        mid = (first + last) // 2
        upto = before
        for i in range(cells.shape[0]):
            upto += pc[cells[i], mid + 1] - pc[cells[i], offset]
        if upto > rank:
            last = mid
        else:
            first = mid + 1
    for i in range(cells.shape[0]):
        before += pc[cells[i], first] - pc[cells[i], offset]
    return first, before


@njit(cache=True, nogil=True)
def _bucket_kth(part, bins, cells, lo, hi, rank, prev):
    """Return the ``rank``-th smallest value within ``[lo, hi]`` of some cells.

    The rank among all the cells' usable values (``rank`` plus those below ``lo``) is
    found in the lower tail, the middle or the upper tail, whose buckets are kept, by
    bisection on their prefix counts; then it is selected among its bucket's values.
    Returned in the data's type: the mean of the two middle values of an even count is
    then taken in the data's precision, as `median_within` does. NaN, with ``short``
    set, when the rank falls among values that are not kept. When ``prev`` (data
    dtype) has an element, it receives the value of rank ``rank - 1`` if that lies in
    the same bucket (after the selection, the largest of the values before it: no
    second bisection, copy and selection for the other middle value of a median), else
    NaN.
    """
    vals, start, pc, _, _, _, tot, below, _, _, short, edges, _ = part
    nbt = bins[2] + 2
    m_lo, m_hi, t_lo, t_hi = edges[0], edges[1], edges[2], edges[3]
    typed = np.empty(1, dtype=vals.dtype)
    typed[0] = np.nan
    ncl = cells.shape[0]
    r = rank
    for i in range(ncl):
        r += _below(part, bins, cells[i], lo, False, 0.0)[0]
    low = 0  # kept values of the lower tail
    mid_from = 0  # usable values below the middle
    mid_to = 0
    up_from = 0  # usable values up to the upper tail
    for i in range(ncl):
        c = cells[i]
        low += pc[c, t_lo]
        mid_from += below[c]
        if m_hi >= m_lo:
            mid_to += pc[c, m_hi + 1] - pc[c, m_lo]
        up_from += np.int64(tot[c, 0]) - (pc[c, nbt] - pc[c, min(t_hi + 1, nbt)])
    if r < low:
        j, before = _kept_bucket(part, nbt, cells, 0, t_lo - 1, 0, r, 0)
    elif m_hi >= m_lo and mid_from <= r < mid_from + mid_to:
        j, before = _kept_bucket(part, nbt, cells, m_lo, m_hi, mid_from, r, m_lo)
    elif t_hi + 1 < nbt and r >= up_from:
        j, before = _kept_bucket(part, nbt, cells, t_hi + 1, nbt - 1, up_from, r, t_hi + 1)
    else:
        short[0] = True
        return typed[0]
    size = 0
    for i in range(ncl):
        size += pc[cells[i], j + 1] - pc[cells[i], j]
    work = np.empty(size, dtype=vals.dtype)
    m = 0
    for i in range(ncl):
        c = cells[i]
        k = c * nbt + j
        for t in range(start[k], start[k] + pc[c, j + 1] - pc[c, j]):
            work[m] = vals[t]
            m += 1
    k = r - before
    if not 0 <= k < m:  # not reached: the counts are exact
        short[0] = True
        return typed[0]
    value = select_kth(work, m, k)
    if prev.shape[0] > 0 and k > 0:  # the ranks below k are in work[:k]
        p = work[0]
        for i in range(1, k):
            if work[i] > p:
                p = work[i]
        prev[0] = p
    return value


@njit(cache=True, nogil=True)
def _bucket_median(part, bins, cells, lo, hi):
    """Exact median of the values within ``[lo, hi]`` of some cells (NaN if none)."""
    count, _, _ = _bucket_moments(part, bins, cells, lo, hi, 0.0)
    if count == 0:
        return np.nan
    half = count // 2
    prev = np.empty(1 - count % 2, dtype=part[0].dtype)
    prev[:] = np.nan
    upper_mid = _bucket_kth(part, bins, cells, lo, hi, half, prev)
    if count % 2 == 1:
        return float(upper_mid)
    lower_mid = prev[0]
    if lower_mid != lower_mid:  # in the bucket below (or not kept)
        lower_mid = _bucket_kth(part, bins, cells, lo, hi, half - 1, prev[:0])
    return 0.5 * (lower_mid + upper_mid)


@njit(cache=True, nogil=True)
def _bucket_minmax(part, bins, cells, lo, hi):
    """Smallest and largest values within ``[lo, hi]`` of some cells (inf, -inf if none)."""
    count, _, _ = _bucket_moments(part, bins, cells, lo, hi, 0.0)
    if count <= 0:
        return np.inf, -np.inf
    none = np.empty(0, dtype=part[0].dtype)
    return (float(_bucket_kth(part, bins, cells, lo, hi, 0, none)),
            float(_bucket_kth(part, bins, cells, lo, hi, count - 1, none)))


@njit(cache=True, nogil=True)
def _bucket_gather(data, mask, use_mask, seg, lower, upper, part, bins):
    """Copy the values of every bucket marked in ``need`` to its place in ``vals``.

    One more read of the cells that hold such a bucket (their sums are not taken
    again); each bucket's values keep their row-major order. The buckets become kept
    (``take``) and are no longer ``need``.
    """
    vals, start, _, _, _, _, _, _, take, need, _, _, _ = part
    a, inv, nb = bins
    nx = data.shape[1]
    flat = data.reshape(data.size)
    fmask = mask.reshape(mask.size)
    nbt = nb + 2
    nk = start.shape[0] - 1
    ncell = nk // nbt
    busy = np.zeros(ncell, dtype=np.bool_)
    for k in range(nk):
        if need[k]:
            busy[k // nbt] = True
    pos = start[:nk].copy()
    ids = np.empty(nx, dtype=np.int64)
    for s in range(seg.shape[0]):
        c = seg[s, 3]
        if not busy[c]:
            continue
        p0 = seg[s, 0] * nx + seg[s, 1]
        m = seg[s, 2] - seg[s, 1] + 1
        src = flat[p0 : p0 + m]
        good = fmask[p0 : p0 + m] if use_mask else fmask
        _segment_ids(src, good, use_mask, lower, upper, a, inv, nb, ids)
        base = c * nbt
        for i in range(m):
            j = ids[i]
            if j >= 0 and need[base + j]:
                k = base + j
                vals[pos[k]] = src[i]
                pos[k] += 1
    for k in range(nk):
        if need[k]:
            take[k] = True
            need[k] = False


@njit(cache=True, nogil=True)
def _bucket_hist_counts(part, bins, cells, h0, top, upper, hinv, nbins):
    """`_hist_counts` over some cells' buckets (every bucket counted: ``counted``).

    The bin index ``int(hinv * (v - h0))`` (in the data's precision) does not decrease
    with ``v``, so the values of a fine bucket whose edges (widened far beyond the
    rounding of `_bucket`, then rounded outwards to the data's type) lie in one bin,
    within ``[h0, top)`` and not above ``upper``, add their count to that bin in every
    cell at once. The other buckets are read value by value when kept; the others are
    marked ``need`` (for `_bucket_gather`) and counted in the bin of their middle, an
    estimate `cell_stats` does not return.
    """
    vals, start, _, _, _, size, _, _, take, need, _, _, lim = part
    a, inv, nb = bins
    nbt = nb + 2
    j0 = _bucket(float(h0), a, inv, nb)
    j1 = _bucket(float(top), a, inv, nb)
    typed = np.empty(2, dtype=vals.dtype)
    w = 1.0 / inv if inv > 0.0 else 0.0
    eps = 1e-9 * (abs(a) + (nb + 2) * w)
    counts = np.zeros(nbins, dtype=np.int64)
    ncl = cells.shape[0]
    for j in range(j0, j1 + 1):
        x0 = a + (j - 1) * w - eps if j > 0 else lim[0]
        x1 = a + j * w + eps if j <= nb else lim[1]
        if inv > 0.0 and 1 <= j <= nb:
            lo_v = _typed_below(typed, x0)
            hi_v = _typed_above(typed, x1)
            if lo_v >= h0 and hi_v < top and hi_v <= upper:
                b = int(hinv * (lo_v - h0))
                if b == int(hinv * (hi_v - h0)):
                    if b < nbins:
                        for i in range(ncl):
                            counts[b] += size[cells[i] * nbt + j]
                    continue
        for i in range(ncl):
            k = cells[i] * nbt + j
            n = size[k]
            if n == 0:
                continue
            if take[k]:
                for t in range(start[k], start[k] + n):
                    v = vals[t]
                    if v >= h0 and v < top and v <= upper:
                        b = int(hinv * (v - h0))
                        if b < nbins:
                            counts[b] += 1
                continue
            need[k] = True
            typed[0] = 0.5 * (x0 + x1)
            v = typed[0]
            if v >= h0 and v < top and v <= upper:
                b = int(hinv * (v - h0))
                if b < nbins:
                    counts[b] += n
    return counts


@njit(cache=True, nogil=True)
def _cell_queries(part, bins, shift, keys, nreg, whole, lower, upper, nclip, lsig, usig,
                  binwidth, code):
    """Every region's statistic from the buckets (the queries of `cell_stats`)."""
    ncell = keys.shape[0]
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
        count, mean, std, lo, hi = _clip(vals, 0, part, bins, cells, shift, lower, upper,
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
            value[r] = _hist_stat(vals, 0, part, bins, cells, lo, hi, upper, std, binwidth,
                                  code == STAT_MIDPT)
    return value, npix, spread


@njit(cache=True, nogil=True)
def levels_apart(data, mask, use_mask, spans, reg_off, lower, upper, lsig, usig):
    """Whether a small sample says some region clips outside the cells' kept tails.

    `cell_stats` keeps the values of the tails of the pooled distribution of the
    regions' pixels, beyond ``_TAIL_FROM`` interquartile ranges of its median; regions
    at different levels (a tile's strips in a bright nebula) clip well inside them and
    the cells then find out, after their read, that they need the direct kernels. Up
    to 32 spans of every region, 8 columns each, estimate its median and sigma
    (interquartile range / 1.349), and the pooled quartiles; True when a region's
    bounds ``median - lsig * sigma`` or ``median + usig * sigma`` lie within nine
    tenths of the untailed range. Only a choice of path: both give the same results.
    """
    ny, nx = data.shape
    nreg = reg_off.shape[0] - 1
    rows = 32
    cols = 8
    pooled = np.empty(nreg * rows * cols)
    own = np.empty(rows * cols)
    start = np.zeros(nreg + 1, dtype=np.int64)
    m = 0
    for r in range(nreg):
        k0 = reg_off[r]
        k1 = reg_off[r + 1]
        step = max(1, (k1 - k0) // rows)
        for k in range(k0, k1, step):
            if m - start[r] > (rows - 1) * cols:
                break  # room for a span's columns: at most rows * cols per region
            y = spans[k, 0]
            a = max(spans[k, 1], 0)
            w = min(spans[k, 2], nx - 1) - a
            if y < 0 or y >= ny or w < 0:
                continue  # (spans are clipped to the image)
            for t in range(cols):
                x = a + (t * w) // (cols - 1)
                v = float(data[y, x])
                if (not use_mask or mask[y, x]) and v >= lower and v <= upper:
                    pooled[m] = v
                    m += 1
        if m - start[r] < 32:
            m = start[r]  # too few to judge: left out
        start[r + 1] = m
    if m == 0:
        return False
    bounds = np.empty((nreg, 2))
    used = 0
    for r in range(nreg):
        n = start[r + 1] - start[r]
        if n == 0:
            bounds[r, 0] = -np.inf
            bounds[r, 1] = np.inf
            continue
        used += 1
        own[:n] = pooled[start[r] : start[r + 1]]
        r1, rmed, r3 = _quartiles_of(own, n)
        sigma = (r3 - r1) / 1.349
        bounds[r, 0] = rmed - lsig * sigma
        bounds[r, 1] = rmed + usig * sigma
    if used < 2:
        return False
    q1, med, q3 = _quartiles_of(pooled, m)
    reach = 0.9 * _TAIL_FROM * (q3 - q1)
    for r in range(nreg):
        if bounds[r, 0] > med - reach or bounds[r, 1] < med + reach:
            return True
    return False


#: Regions whose pixels add up to fewer than this many times the pixels they cover
#: overlap little: `cell_stats` hands them to the direct kernels when `levels_apart`
#: predicts, or its read shows, that their queries need values the read does not keep,
#: rather than reading the image (again) keeping every value: on the 8 strips of a
#: tile in a bright nebula (every clip bound in the unkept middle) the second read made
#: the tile's statistics 12 ms against 6.4 on the direct path.
_REREAD_OVERLAP = 2.0


def _overlap_heavily(spans, seg, whole, size):
    """Whether the regions (and the whole image) cover their pixels `_REREAD_OVERLAP` times."""
    region_px = int((spans[:, 2] - spans[:, 1] + 1).sum()) + (size if whole else 0)
    covered = int((seg[:, 2] - seg[:, 1] + 1).sum())
    return region_px >= _REREAD_OVERLAP * covered


def cell_stats(data, mask, use_mask, spans, reg_off, whole, lower, upper, nclip, lsig, usig,
               binwidth, code, out, side_v, side_k):
    """Clipped statistic of every region (and of the whole image) through bucketed cells.

    The same results as `region_stats` (the same pixels kept, the same median, mode and
    midpt; sums in another order), for regions that overlap heavily.

    One read of the image takes every cell's count and sums and keeps the values of
    its tail buckets, where clip bounds fall, and of a median's middle buckets
    (`_bucket_histogram`). A moments pass of a region is then its cells' totals less
    the kept values outside the bounds; a median a selection in the one kept bucket
    that holds it. For a mode or midpt every bucket is counted too, and the buckets
    that straddle a histogram bin edge are gathered by one more read
    (`_bucket_gather`); the queries then run again. Should a query need values that
    are not kept (a clip bound or a median in the unkept middle of the distribution:
    unusual data), the image is read again keeping every value.

    A Python function that calls four kernels (a few calls per image; the GIL is
    released inside each): compiled as one kernel, it made numba optimise the whole
    tree of the cell path once more, ~10 s per data type on first use, for nothing.

    Parameters
    ----------
    data, mask, use_mask, spans, reg_off, whole, lower, upper, nclip, lsig, usig, binwidth, code
        As for `region_stats` (at most `MAX_CELL_REGIONS` regions).
    out : ndarray, 1-D, data dtype
        Scratch space for the kept values, at least ``data.size`` long (reused between
        calls: fresh memory costs a page fault per 4 KiB on first touch).
    side_v, side_k : ndarray, 1-D, data dtype and int32
        Scratch for the values as they are read and their buckets, best a quarter of
        ``data.size`` long (see `_bucket_histogram`).

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
    # regions that overlap little: the direct kernels, rather than a read or a second
    # read that does not hold what their queries need
    light = not _overlap_heavily(spans, seg, whole, data.size)
    if light and levels_apart(data, mask, use_mask, spans, reg_off, lower, upper, lsig, usig):
        return region_stats(data, mask, use_mask, spans, reg_off, whole, lower, upper, nclip,
                            lsig, usig, binwidth, code)
    ncell = keys.shape[0]
    hist = code == STAT_MODE or code == STAT_MIDPT
    middle = code == STAT_MEDIAN or code == STAT_MIDPT
    part, bins, shift = _bucket_histogram(data, mask, use_mask, seg, ncell, lower, upper, out,
                                          side_v, side_k, hist, middle, False)
    everything = False
    while True:  # ends: each pass keeps or gathers buckets the one before did not have
        if not part[10][0]:  # (else the tails overflowed their buffer: no queries)
            value, npix, spread = _cell_queries(part, bins, shift, keys, nreg, whole, lower,
                                                upper, nclip, lsig, usig, binwidth, code)
        if part[10][0] and not everything:  # values that were not kept are needed
            if light:
                return region_stats(data, mask, use_mask, spans, reg_off, whole, lower, upper,
                                    nclip, lsig, usig, binwidth, code)
            everything = True
            part, bins, shift = _bucket_histogram(data, mask, use_mask, seg, ncell, lower,
                                                  upper, out, side_v, side_k, hist, middle,
                                                  True)
            continue
        if not part[9].any():
            return value, npix, spread
        _bucket_gather(data, mask, use_mask, seg, lower, upper, part, bins)


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
            levels_apart(data, m, use, two, off, -1e300, 1e300, 3.0, 3.0)
            for code in (STAT_MEAN, STAT_MEDIAN, STAT_MODE, STAT_MIDPT):
                cell_stats(data, m, use, two, off, True, -1e300, 1e300, 2, 3.0, 3.0, 0.1, code,
                           out, np.empty(3, dtype=dtype), np.empty(3, dtype=np.int32))
            # the second read of a mode or midpt, which data this small never needs
            seg, keys = _cell_segments(two, off, 3, 4, True)
            part, bins, _ = _bucket_histogram(data, m, use, seg, keys.shape[0], -1e300, 1e300,
                                              out, np.empty(3, dtype=dtype),
                                              np.empty(3, dtype=np.int32), True, True, False)
            _bucket_gather(data, m, use, seg, -1e300, 1e300, part, bins)
