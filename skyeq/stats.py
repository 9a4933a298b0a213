"""Clipped sky statistics: `SkyStat` and its functional twin `sky_statistic`.

A `SkyStat` holds the statistic and its clipping settings, validated once at
construction; calling it (or `sky_statistic`) on an image, an optional good-pixel mask
and optional row spans returns a `SkyValue` ``(value, npix)``. The numbers come from the
numba kernels in :mod:`skyeq._kernels`; this module only checks and converts inputs.
"""

from __future__ import annotations

import logging
import math
import numbers
import threading
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np

from . import _kernels

__all__ = ["STATISTICS", "SkyStat", "SkyValue", "as_skystat", "good_mask",
           "notice_first_compile", "sky_statistic"]

log = logging.getLogger(__name__)

#: The statistics a `SkyStat` can compute.
STATISTICS = ("mean", "median", "mode", "midpt")

_CODES = {
    "mean": _kernels.STAT_MEAN,
    "median": _kernels.STAT_MEDIAN,
    "mode": _kernels.STAT_MODE,
    "midpt": _kernels.STAT_MIDPT,
}
_BIG = float(np.finfo(np.float64).max)
_NO_MASK = np.zeros((0, 0), dtype=np.bool_)
_NO_SPANS = np.zeros((0, 3), dtype=np.int64)
#: `region_statistics` switches to the bucketed-cell kernels when the regions' pixels
#: add up to more than this many images (per statistic). The cells read each pixel
#: once, and the mean and median need nothing more (their clip bounds and medians fall
#: in the buckets that read keeps), so they win from two regions on, even thin
#: strips; the mode and midpt read the buckets that straddle histogram bin edges once
#: more, and win from about one image (on 2048x2048 tile strips, 0.5 images: median
#: 4.5 ms against 7.3 direct, mode 10.6 against 8.3; on dithers, 4.5 images: median
#: 11 against 70, mode 28 against 76; `python -m benchmarks kernels`).
_CELL_COVERAGE = {"mean": 0.0, "median": 0.0, "mode": 1.0, "midpt": 1.0}
#: ...and when they hold at least this many pixels: below, the cells' fixed costs
#: (their tables, the bucket placement) exceed the direct kernels' (two regions of
#: 10^4 pixels: 0.46 ms against 0.05).
_CELL_MIN_PIXELS = 1 << 16
# Per-thread scratch memory, kept between calls: fresh memory costs a page fault per
# 4 KiB on first touch (~30 ms for the 16 MB of a 2048x2048 image). See `_scratch`.
_SCRATCH = threading.local()


def _scratch(name: str, size: int, dtype: Any) -> np.ndarray:
    """Return this thread's scratch array ``name``, at least ``size`` long, of ``dtype``.

    Each ``name`` and dtype has its own array (the cell buckets of an image, the pixel
    differences of a pair, ...), so two users never share one.
    """
    key = f"{name}_{np.dtype(dtype).char}"
    buf = getattr(_SCRATCH, key, None)
    if buf is None or buf.size < size:
        buf = np.empty(size, dtype=dtype)
        setattr(_SCRATCH, key, buf)
    return buf


class SkyValue(NamedTuple):
    """A sky statistic and the number of pixels it was computed from.

    Attributes
    ----------
    value : float
        The statistic; NaN when no pixel was usable.
    npix : int
        Pixels that survived masking, the ``lower``/``upper`` limits and clipping.
    """

    value: float
    npix: int


#: Largest ``nclip`` (the kernels take a machine integer; clipping stops long before
#: this anyway, as soon as an iteration clips nothing).
_MAX_NCLIP = 2**31 - 1


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def _limit(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number or None, got {value!r}")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name} must not be NaN (use None for no limit)")
    return value


@dataclass(frozen=True)
class SkyStat:
    """A clipped sky statistic with its settings.

    The pixels used are the finite, good (mask True) pixels within ``[lower, upper]``.
    Then ``nclip`` times the bounds are reset to ``[mean - lsigma*std, mean + usigma*std]``
    (``std`` with ddof=1, always intersected with ``[lower, upper]``), each pass reading
    all the pixels again; the statistic is taken over the pixels inside the final
    bounds.

    Parameters
    ----------
    statistic : {'mean', 'median', 'mode', 'midpt'}, optional
        ``mean``; ``median`` (exact); ``mode`` (peak of a histogram of bins
        ``binwidth * std`` wide, refined with a parabola through the peak and its two
        neighbours); ``midpt`` (the median interpolated within that histogram).
        Default ``'median'``.
    lower, upper : float or None, optional
        Inclusive limits on usable pixel values, in data units. None (default): no limit.
    nclip : int, optional
        Number of clipping iterations, from 0 (no clipping) to 2**31 - 1. Default 5.
    lsigma, usigma : float, optional
        Lower and upper clipping limits, in units of the standard deviation. Default 4.
    binwidth : float, optional
        Histogram bin width for ``mode`` and ``midpt``, in units of the standard
        deviation. Default 0.1.

    Raises
    ------
    ValueError
        For an unknown statistic, ``nclip < 0``, a non-positive or non-finite
        ``lsigma``, ``usigma`` or ``binwidth``, a NaN limit, or ``lower > upper``.
    TypeError
        For values of the wrong type (e.g. a float ``nclip``).

    Examples
    --------
    >>> import numpy as np
    >>> from skyeq import SkyStat
    >>> img = np.random.default_rng(0).normal(100.0, 1.0, (256, 256)).astype(np.float32)
    >>> img[10:20, 10:20] += 500.0  # a bright source
    >>> value, npix = SkyStat("median", nclip=3)(img)
    >>> round(value, 1), npix < img.size
    (100.0, True)
    """

    statistic: Literal["mean", "median", "mode", "midpt"] = "median"
    lower: float | None = None
    upper: float | None = None
    nclip: int = 5
    lsigma: float = 4.0
    usigma: float = 4.0
    binwidth: float = 0.1

    def __post_init__(self) -> None:
        stat = self.statistic
        if not isinstance(stat, str) or stat.lower() not in _CODES:
            raise ValueError(
                f"statistic must be one of {', '.join(map(repr, STATISTICS))}; got {stat!r}"
            )
        object.__setattr__(self, "statistic", stat.lower())
        nclip = self.nclip
        if isinstance(nclip, bool) or not isinstance(nclip, numbers.Integral):
            raise TypeError(f"nclip must be an integer, got {nclip!r}")
        if not 0 <= nclip <= _MAX_NCLIP:
            raise ValueError(
                f"nclip must be from 0 to {_MAX_NCLIP} (clipping stops once nothing more "
                f"is clipped), got {nclip}"
            )
        object.__setattr__(self, "nclip", int(nclip))
        for name in ("lsigma", "usigma", "binwidth"):
            object.__setattr__(self, name, _positive(name, getattr(self, name)))
        lower = _limit("lower", self.lower)
        upper = _limit("upper", self.upper)
        if lower is not None and upper is not None and lower > upper:
            raise ValueError(f"lower ({lower}) must not be greater than upper ({upper})")
        object.__setattr__(self, "lower", lower)
        object.__setattr__(self, "upper", upper)

    def __call__(
        self,
        data: np.ndarray,
        mask: np.ndarray | None = None,
        spans: np.ndarray | None = None,
    ) -> SkyValue:
        """Compute the statistic of ``data`` (see `sky_statistic`)."""
        notice_first_compile()
        arr, good = _image_and_mask(data, mask)
        if arr.size == 0:
            return SkyValue(math.nan, 0)
        use_spans = spans is not None
        span_arr = _spans_array(spans) if use_spans else _NO_SPANS
        if use_spans and arr.ndim != 2:
            raise ValueError("spans need a 2-D image")
        arr, k = _rescaled(arr)
        lower, upper = self._bounds(k)
        value, npix = _kernels.sky_stat(
            arr,
            _NO_MASK if good is None else good,
            good is not None,
            span_arr,
            use_spans,
            lower,
            upper,
            self.nclip,
            self.lsigma,
            self.usigma,
            self.binwidth,
            _CODES[self.statistic],
        )
        return SkyValue(math.ldexp(float(value), -k), int(npix))

    def _bounds(self, k: int = 0) -> tuple[float, float]:
        """Return ``lower``/``upper`` (times ``2**k``) as the finite bounds the kernels take."""
        lower = -_BIG if self.lower is None else max(math.ldexp(self.lower, k), -_BIG)
        upper = _BIG if self.upper is None else min(math.ldexp(self.upper, k), _BIG)
        return lower, upper


def _takes_cells(statistic: str, nreg: int, npix: int, size: int) -> bool:
    """Whether `region_statistics` measures ``nreg`` regions on the bucketed cells.

    ``npix``: the regions' pixels added up (the whole image's too when it is measured);
    ``size``: the image's pixels. See `_CELL_COVERAGE` and `_CELL_MIN_PIXELS`.
    """
    return (2 <= nreg <= _kernels.MAX_CELL_REGIONS and npix >= _CELL_MIN_PIXELS
            and npix >= _CELL_COVERAGE[statistic] * size)


def region_statistics(
    stat: SkyStat,
    data: np.ndarray,
    mask: np.ndarray | None,
    regions: list[np.ndarray],
    whole: bool = False,
    scatter: bool = False,
) -> tuple[Any, ...]:
    """Compute the statistic of several regions of one image, and of the whole image.

    The results are those of ``stat(data, mask, spans)`` for every region (and of
    ``stat(data, mask)`` when ``whole``), up to the last bits of the sums. For two
    regions or more (for the mode and midpt: when their pixels add up to more than
    `_CELL_COVERAGE` images) the image is cut once into cells of equal region coverage
    and read once, counting each cell's values in value buckets and keeping the values
    of the few buckets where clip bounds and medians fall, so that every clipping pass
    of every region reads its cells' sums and those values instead of all its pixels
    (see the "bucketed cells" kernels in `skyeq._kernels`).

    Parameters
    ----------
    stat : SkyStat
        The statistic.
    data, mask : ndarray
        The image and its good-pixel mask (or None), as for `sky_statistic`.
    regions : list of ndarray of int64, shape (k, 3)
        Row spans of every region, each sorted by row and non-overlapping.
    whole : bool, optional
        Also compute the statistic of the whole image.
    scatter : bool, optional
        Also return the ddof=1 standard deviation of the pixels each value comes from
        (those of the final clipping pass).

    Returns
    -------
    whole_value : SkyValue or None
        The statistic of the whole image (None unless ``whole``).
    values : list of SkyValue
        One per region.
    spread : ndarray of float64
        Only with ``scatter``: the standard deviation per region (then of the whole
        image, last, with ``whole``); NaN where no pixel was usable.
    """
    notice_first_compile()
    arr, good = _image_and_mask(data, mask)
    spans = [_spans_array(s) for s in regions]
    nreg = len(spans)
    if arr.size == 0:
        empty = SkyValue(math.nan, 0)
        spread = np.full(nreg + bool(whole), np.nan)
        return ((empty if whole else None), [empty] * nreg) + ((spread,) if scatter else ())
    npix = sum(int((s[:, 2] - s[:, 1] + 1).sum()) for s in spans)
    arr, k = _rescaled(arr)
    lower, upper = stat._bounds(k)
    reg_off = np.zeros(nreg + 1, dtype=np.int64)
    np.cumsum([len(s) for s in spans], out=reg_off[1:])
    all_spans = np.concatenate(spans) if nreg else _NO_SPANS
    mask_arg = _NO_MASK if good is None else good
    code = _CODES[stat.statistic]
    if not _takes_cells(stat.statistic, nreg, npix + (arr.size if whole else 0), arr.size):
        value, count, std = _kernels.region_stats(
            arr, mask_arg, good is not None, all_spans, reg_off, whole, lower, upper,
            stat.nclip, stat.lsigma, stat.usigma, stat.binwidth, code,
        )
    else:
        scratch = _scratch("cells", arr.size, arr.dtype)
        kept = _scratch("cells_kept", arr.size // 4 + 1, arr.dtype)
        slots = _scratch("cells_kept_slots", arr.size // 4 + 1, np.int32)
        value, count, std = _kernels.cell_stats(
            arr, mask_arg, good is not None, all_spans, reg_off, whole, lower, upper,
            stat.nclip, stat.lsigma, stat.usigma, stat.binwidth, code, scratch, kept, slots,
        )
    out = [SkyValue(math.ldexp(float(v), -k), int(c)) for v, c in zip(value, count, strict=True)]
    result = (out[nreg] if whole else None), out[:nreg]
    return result + ((np.ldexp(std, -k),) if scatter else ())


def good_mask(mask: Any, what: str = "mask", true_means: str = "good") -> np.ndarray:
    """Return a good-pixel mask as a bool array: the one rule for every mask skyeq takes.

    A mask is True (or 1) for good pixels: a boolean array, or an integer array holding
    only 0 and 1. Anything else (floats, strings, other integers) is refused rather
    than guessed at.

    Parameters
    ----------
    mask : array_like
        The mask.
    what : str, optional
        What it is, for the message (e.g. ``"mask of image #3"``).
    true_means : str, optional
        What True marks, for the message (``"bad"`` for an NDData mask, read by the
        same rule and inverted by the caller).

    Returns
    -------
    ndarray of bool
        The mask itself when it is boolean, else a boolean copy.

    Raises
    ------
    ValueError
        If the mask is neither boolean nor 0/1 integers.
    """
    arr = np.asarray(mask)
    if arr.dtype == np.bool_:
        return arr
    if arr.dtype.kind in "iu":
        if arr.size and (arr.min() < 0 or arr.max() > 1):
            raise ValueError(
                f"{what} must be boolean or 0/1 integers (True/1 = {true_means} pixel); it "
                f"holds values from {arr.min()} to {arr.max()}"
            )
        return arr.astype(bool)
    raise ValueError(
        f"{what} must be boolean or 0/1 integers (True/1 = {true_means} pixel), got dtype "
        f"{arr.dtype}"
    )


#: Float64 data whose largest magnitude is outside this range are measured scaled by a
#: power of two (exact), so that squares neither underflow nor overflow: data scaled
#: by 1e-200 have the statistics of the same data unscaled, times 1e-200.
_SAFE_MAGNITUDE = (2.0**-300, 2.0**300)


_NOTICE = threading.Lock()
_noticed = False
_noticed_pairs = False


def notice_first_compile(pairs: bool = False) -> None:
    """Say once per process, before the wait, that the kernels are about to be compiled.

    On a fresh install numba compiles the kernels on their first call (about a
    minute on two cores, then loaded from its cache in well under a second): without a word
    the first call looks hung. ``python -m skyeq warmup`` compiles them ahead of time.

    Parameters
    ----------
    pairs : bool, optional
        About the kernels of ``pair_stat="difference"`` instead (about 7 s), once too.
    """
    global _noticed, _noticed_pairs
    with _NOTICE:
        if _noticed_pairs if pairs else _noticed:
            return
        if pairs:
            _noticed_pairs = True
        else:
            _noticed = True
    if pairs and _kernels.pairs_warm() is False:
        log.warning(
            "skyeq is compiling the kernels of pair_stat='difference' (first use only: about "
            "10 s; `python -m skyeq warmup` does this ahead of time)"
        )
    elif not pairs and _kernels.warm() is False:
        log.warning(
            "skyeq is compiling its numba kernels (first use only: about a minute on two "
            "cores; later runs load them from the cache; `python -m skyeq warmup` does "
            "this ahead of time)"
        )


def _rescaled(arr: np.ndarray) -> tuple[np.ndarray, int]:
    """Return ``(arr * 2**k, k)``: ``k`` = 0 unless float64 data are extremely small or large.

    A strided sample decides cheaply for ordinary data; only data outside
    `_SAFE_MAGNITUDE` pay a full pass to find their largest finite magnitude.
    """
    if arr.dtype != np.float64 or arr.size == 0:
        return arr, 0
    lo, hi = _SAFE_MAGNITUDE
    flat = arr.reshape(-1)
    probe = np.abs(flat[:: max(1, flat.size // 4096)])
    probe = probe[np.isfinite(probe)]
    if probe.size and lo <= probe.max() <= hi:
        return arr, 0
    with np.errstate(invalid="ignore"):
        mags = np.abs(flat[np.isfinite(flat)])
    top = float(mags.max()) if mags.size else 0.0
    if top == 0.0 or lo <= top <= hi:
        return arr, 0
    k = -int(np.frexp(top)[1])  # top * 2**k in [0.5, 1)
    return np.ldexp(arr, k), k


def _image_and_mask(data, mask) -> tuple[np.ndarray, np.ndarray | None]:
    """Convert the inputs once into what the kernels accept.

    The image becomes a 2-D, C-contiguous, native-endian float32 or float64 array
    (other real types are converted to float64; a 1-D input becomes one row). A
    `numpy.ma.MaskedArray` contributes its mask (masked = bad). The good-pixel mask
    becomes a C-contiguous bool array of the same shape, or None.
    """
    if isinstance(data, np.ma.MaskedArray):
        ma_bad = np.ma.getmask(data)
        data = np.ma.getdata(data)
    else:
        ma_bad = np.ma.nomask
    data = getattr(data, "value", data)  # astropy Quantity: statistics in its unit
    arr = np.asarray(data)
    if arr.ndim not in (1, 2):
        raise ValueError(f"data must be a 1-D or 2-D array, got {arr.ndim} dimensions")
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"data must hold real numbers, got dtype {arr.dtype}")
    if arr.dtype.kind != "f" or arr.dtype.itemsize not in (4, 8):
        arr = arr.astype(np.float64)
    elif not arr.dtype.isnative:  # big-endian float32 stays float32
        arr = arr.astype(arr.dtype.newbyteorder("="))
    good = None
    if mask is not None:
        good = good_mask(mask)
        if good.shape != arr.shape:
            raise ValueError(f"mask shape {good.shape} does not match data shape {arr.shape}")
    if ma_bad is not np.ma.nomask and ma_bad.any():
        good = ~ma_bad if good is None else good & ~ma_bad
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
        good = None if good is None else good.reshape(1, -1)
    arr = np.ascontiguousarray(arr)
    if good is not None:
        good = np.ascontiguousarray(good)
    return arr, good


def _spans_array(spans) -> np.ndarray:
    out = np.asarray(spans)
    if out.size == 0:
        return _NO_SPANS
    if out.ndim != 2 or out.shape[1] != 3 or out.dtype.kind not in "iu":
        raise ValueError("spans must be an integer array of shape (k, 3): row, first, last")
    return np.ascontiguousarray(out, dtype=np.int64)


def sky_statistic(
    data: np.ndarray,
    mask: np.ndarray | None = None,
    stat: SkyStat | str | None = None,
    *,
    spans: np.ndarray | None = None,
) -> SkyValue:
    """Compute a clipped sky statistic of an image or of a region of it.

    Parameters
    ----------
    data : array_like, 1-D or 2-D
        Pixel values. float32 and float64 are used as they are (no copy when
        C-contiguous and native-endian); other real types are converted to float64.
        NaN and infinite pixels are never used.
    mask : array_like of bool, optional
        Good-pixel mask of the same shape (True = use the pixel). Default: all pixels.
    stat : SkyStat or str, optional
        The statistic and its clipping settings, or a statistic name (its defaults).
        Default ``SkyStat()`` (median, nclip=5, lsigma = usigma = 4).
    spans : array_like of int, shape (k, 3), optional
        Read only these row spans ``(row, first column, last column)``, inclusive and
        non-overlapping; clipped to the image. Default: the whole image.

    Returns
    -------
    SkyValue
        ``(value, npix)``: the statistic (NaN if no pixel was usable) and the number
        of pixels it was computed from (0 in that case).

    Examples
    --------
    >>> import numpy as np
    >>> from skyeq import SkyStat, sky_statistic
    >>> img = np.full((4, 5), 7.0, dtype=np.float32)
    >>> sky_statistic(img, stat=SkyStat("mean"))
    SkyValue(value=7.0, npix=20)
    >>> sky_statistic(img, spans=[[1, 0, 2]])
    SkyValue(value=7.0, npix=3)
    """
    return as_skystat(stat)(data, mask, spans)


def as_skystat(stat: SkyStat | str | None) -> SkyStat:
    """Return ``stat`` as a `SkyStat`: None is the default, a name its statistic's default.

    Parameters
    ----------
    stat : SkyStat, str or None
        A `SkyStat`, a statistic name (``"mean"``, ``"median"``, ``"mode"``,
        ``"midpt"``) or None (``SkyStat()``).

    Returns
    -------
    SkyStat
        The statistic.

    Raises
    ------
    TypeError
        For anything else.
    ValueError
        For an unknown statistic name.
    """
    if stat is None:
        return SkyStat()
    if isinstance(stat, str):
        return SkyStat(stat)
    if not isinstance(stat, SkyStat):
        raise TypeError(
            f"stat must be a SkyStat or a statistic name ({', '.join(STATISTICS)}), got "
            f"{type(stat).__name__}"
        )
    return stat
