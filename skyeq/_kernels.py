"""Numba kernels: clipped sky statistics over pixel regions.

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

The cached machine code lives in numba's cache directory (``__pycache__`` next to this
file, or ``NUMBA_CACHE_DIR`` when set).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = [
    "STAT_MEAN",
    "STAT_MEDIAN",
    "STAT_MIDPT",
    "STAT_MODE",
    "clip_moments",
    "gather",
    "histogram_stat",
    "median_within",
    "moments",
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
#: Relative width below which a histogram bin cannot be resolved in float32 data.
_EPS10 = 10.0 * float(np.finfo(np.float32).eps)


@njit(cache=True, nogil=True)
def gather(data, mask, use_mask, spans, use_spans, lower, upper):
    """Copy the usable pixels of a region into a new 1-D buffer.

    Parameters
    ----------
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
        Finite inclusive bounds; pixels outside them (NaN and inf included) are skipped.

    Returns
    -------
    buf : ndarray, 1-D, same dtype as ``data``
        The usable pixel values in row-major order, in ``buf[:n]``.
    n : int
        Number of usable pixels.
    """
    ny, nx = data.shape
    if use_spans:
        size = 0
        for k in range(spans.shape[0]):
            c0 = max(spans[k, 1], 0)
            c1 = min(spans[k, 2], nx - 1)
            if 0 <= spans[k, 0] < ny and c1 >= c0:
                size += c1 - c0 + 1
        nrows = spans.shape[0]
    else:
        size = ny * nx
        nrows = ny
    buf = np.empty(size, dtype=data.dtype)
    n = 0
    for k in range(nrows):
        if use_spans:
            r = spans[k, 0]
            if r < 0 or r >= ny:
                continue
            c0 = max(spans[k, 1], 0)
            c1 = min(spans[k, 2], nx - 1)
        else:
            r = k
            c0 = 0
            c1 = nx - 1
        # branchless compaction: always store, advance only over usable pixels
        if use_mask:
            for c in range(c0, c1 + 1):
                v = data[r, c]
                buf[n] = v
                n += mask[r, c] & (v >= lower) & (v <= upper)
        else:
            for c in range(c0, c1 + 1):
                v = data[r, c]
                buf[n] = v
                n += (v >= lower) & (v <= upper)
    return buf, n


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
def _first_within(buf, n, lo, hi):
    """First value of ``buf[:n]`` within ``[lo, hi]`` (as float), or NaN."""
    for k in range(n):
        v = buf[k]
        if v >= lo and v <= hi:
            return float(v)
    return np.nan


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
    lo = lower
    hi = upper
    if n == 0:
        return 0, np.nan, np.nan, lo, hi
    shift = _first_within(buf, n, lo, hi)
    if shift != shift:
        return 0, np.nan, np.nan, lo, hi
    count, mean, std = moments(buf, n, lo, hi, shift)
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
        count, mean, std = moments(buf, n, lo, hi, shift)
    return count, mean, std, lo, hi


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
    counts = np.zeros(nb, dtype=np.int64)
    m = 0
    for k in range(n):
        v = buf[k]
        if v >= lo and v <= hi:
            idx = min(max(int((v - a) * scale), 0), nb - 1)
            counts[idx] += 1
            m += 1
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
    work = np.empty(size, dtype=buf.dtype)
    w = 0
    for k in range(n):
        v = buf[k]
        if v >= lo and v <= hi:
            idx = min(max(int((v - a) * scale), 0), nb - 1)
            if idx >= b_lo and idx <= b_hi:
                work[w] = v
                w += 1
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
    mn, mx = _minmax_within(buf, n, lo, hi)
    if mn > mx:
        return np.nan
    hw = binwidth * std
    drange = mx - mn
    tiny = _EPS10 * max(abs(mn), abs(mx))
    if hw <= tiny or drange <= tiny or hw > drange:
        if want_midpt:
            return median_within(buf, n, lo, hi)
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
    counts = np.zeros(nbins, dtype=np.int64)
    for k in range(n):
        v = buf[k]
        if v >= h0 and v < top and v <= upper:
            b = int(inv * (v - h0))
            if b < nbins:
                counts[b] += 1
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
    otherwise the usable pixels are gathered once into a compact buffer that the
    clipping passes then read. Returns the statistic selected by ``code``
    (``STAT_MEAN``, ``STAT_MEDIAN``, ``STAT_MODE``, ``STAT_MIDPT``) and the number of
    pixels of the final clipping pass.

    Returns
    -------
    value : float
        NaN when no pixel is usable.
    npix : int
    """
    if use_mask or use_spans:
        buf, n = gather(data, mask, use_mask, spans, use_spans, lower, upper)
        return _stat_of_buffer(buf, n, lower, upper, nclip, lsig, usig, binwidth, code)
    flat = data.reshape(data.size)
    return _stat_of_buffer(flat, flat.size, lower, upper, nclip, lsig, usig, binwidth, code)


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
