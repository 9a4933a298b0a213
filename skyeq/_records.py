"""The validation stage: every argument and image checked before any pixel is read.

`make_records` opens every image's source (array, masked array, NDData/CCDData,
HDUList, FITS path: headers only) and validates it with what is given per image (WCS,
mask, DQ array, group id, name) into one `ImageRecord` per image; `check_wcs_list`
checks that every image has a WCS for the match methods. Errors name the image, in one
line.

An image's good pixels are those its mask marks True (bool, or integers where nonzero
means good) and, when it has a data-quality array, whose DQ flags are all among
``dqbits`` (astropy's bit-mask syntax, with the JWST flag names of `JWST_DQ_FLAGS`;
``~`` means "every flag but these"). NaN and infinite pixels are never used whatever
the mask says: the statistics skip them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from astropy.io import fits
from astropy.nddata import NDData
from astropy.nddata.bitmask import bitfield_to_boolean_mask

from ._fits import _hdulist_image, _read_image
from .stats import good_mask

__all__ = [
    "DEFAULT_DQBITS",
    "JWST_DQ_FLAGS",
    "ImageRecord",
    "Inputs",
    "check_dqbits",
    "check_wcs_list",
    "good_pixels",
    "make_records",
]

#: JWST data-quality bit names (value = bit mask), for ``dqbits`` mnemonics.
JWST_DQ_FLAGS = {
    name: 1 << bit
    for bit, name in enumerate(
        [
            "DO_NOT_USE", "SATURATED", "JUMP_DET", "DROPOUT", "OUTLIER", "PERSISTENCE",
            "AD_FLOOR", "CHARGELOSS", "UNRELIABLE_ERROR", "NON_SCIENCE", "DEAD", "HOT",
            "WARM", "LOW_QE", "RC", "TELEGRAPH", "NONLINEAR", "BAD_REF_PIXEL",
            "NO_FLAT_FIELD", "NO_GAIN_VALUE", "NO_LIN_CORR", "NO_SAT_CHECK",
            "UNRELIABLE_BIAS", "UNRELIABLE_DARK", "UNRELIABLE_SLOPE", "UNRELIABLE_FLAT",
            "OPEN", "ADJ_OPEN", "FLUX_ESTIMATED", "MSA_FAILED_OPEN", "OTHER_BAD_PIXEL",
            "REFERENCE_PIXEL",
        ]
    )
}

#: The DQ bits that do not make a pixel bad by default (as in the JWST step): a pixel
#: is bad only when DO_NOT_USE or NON_SCIENCE is set.
DEFAULT_DQBITS = "~DO_NOT_USE+NON_SCIENCE"


def good_pixels(mask: Any, dq: Any, dqbits: str | int | None) -> np.ndarray | None:
    """Return the good-pixel mask (True = good) of one image, or None for "all".

    Parameters
    ----------
    mask : array_like or None
        The image's mask (True = good: boolean, or 0/1 integers; see
        `skyeq.stats.good_mask`).
    dq : array_like of int or None
        Its data-quality array.
    dqbits : str, int or None
        The flags that do not make a pixel bad; None ignores ``dq``.

    Returns
    -------
    ndarray of bool or None
        The mask AND the DQ rule; None when neither applies.
    """
    good = None
    if mask is not None:
        good = good_mask(mask)
    if dq is not None and dqbits is not None:
        dqgood = bitfield_to_boolean_mask(
            np.asarray(dq), ignore_flags=dqbits, good_mask_value=True, dtype=bool,
            flag_name_map=JWST_DQ_FLAGS,
        )
        good = dqgood if good is None else good & dqgood
    return good


def check_dqbits(dqbits: str | int | None) -> None:
    """Raise a clear `ValueError` for a ``dqbits`` expression that does not parse.

    Parameters
    ----------
    dqbits : str, int or None
        The expression.

    Raises
    ------
    ValueError
        Naming the expression, e.g. for an unknown flag name.
    """
    if dqbits is None:
        return
    try:
        good_pixels(None, np.zeros((1, 1), np.uint32), dqbits)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(
            f"dqbits {dqbits!r} is not a bit-flag expression (integers or JWST flag "
            f"names such as DO_NOT_USE, joined by + or ',', optionally led by ~): {err}"
        ) from None


@dataclass(frozen=True, eq=False)
class ImageRecord:
    """One validated image: what it is read from, how its good pixels are found, its name.

    Parameters
    ----------
    index : int
        Position in the call.
    label : str
        The name used in messages: the given name, else the file it came from, else
        ``#<index>``.
    data : array_like
        The image: a numpy array, or an array-like read when converted (a file), which
        is read only inside its measurement task.
    shape : tuple of int
        ``(ny, nx)``.
    mask : array_like or None
        Good-pixel mask (True = good): the given mask AND the source's own (a masked
        array's or an NDData's mask, inverted); None when there is none.
    dq : array_like or None
        The DQ array (the given one, else the file's DQ extension).
    wcs : object or None
        The WCS: the given one, else the image's own (NDData ``.wcs``, the FITS
        header); None when it has none.
    """

    index: int
    label: str
    data: Any
    shape: tuple[int, int]
    mask: Any = None
    dq: Any = None
    wcs: Any = None


@dataclass(frozen=True, eq=False)
class Inputs:
    """The validated inputs of one `skyeq.match_sky` call: one record per image, groups.

    Parameters
    ----------
    records : list of ImageRecord
        One per image, in call order.
    dqbits : str, int or None
        The DQ flags that do not make a pixel bad.
    names : list of str or None
        The image names of the result: the given names, else the file names when
        every image came from a file, else None.
    groups : sequence or None
        The given group ids.
    gid : ndarray of int
        Group index (0, 1, ... in order of first appearance) of every image.
    members : list of ndarray
        The images of every group.
    """

    records: list[ImageRecord]
    dqbits: str | int | None
    names: list[str] | None
    groups: Any
    gid: np.ndarray
    members: list[np.ndarray]

    @property
    def ngroups(self) -> int:
        """Number of groups."""
        return len(self.members)

    def group_label(self, g: int) -> str:
        """Name the images of group ``g``, for messages."""
        return ", ".join(self.records[m].label for m in self.members[g])


class _Source(NamedTuple):
    """What an input image carries besides its pixels."""

    data: Any
    good: Any = None
    dq: Any = None
    wcs: Any = None
    name: str | None = None


def _source(k: int, item: Any) -> _Source:
    """Open image ``k``'s source: array, masked array, NDData, HDUList or FITS path."""
    if isinstance(item, (str, PathLike)):
        img = _read_image(Path(item), lazy=True)  # headers and WCS only
        return _Source(img.data, None, img.dq, img.wcs, str(item))
    if isinstance(item, fits.HDUList):
        where = item.filename() or f"image {k} (an HDUList)"
        data, wcs, dq = _hdulist_image(item, where)
        return _Source(data, None, dq, wcs, item.filename())
    if isinstance(item, NDData):
        good = None
        if item.mask is not None:
            bad = good_mask(item.mask, f"the NDData mask of image {k}", true_means="bad")
            if bad.shape != np.shape(item.data):
                raise ValueError(f"image {k}: the NDData mask has shape {bad.shape}, its "
                                 f"data {np.shape(item.data)}")
            good = ~bad if bad.any() else None
        data = item.data
        if isinstance(data, np.ma.MaskedArray):
            return _masked(data, good, item.wcs)
        return _Source(data, good, None, item.wcs)
    if isinstance(item, np.ma.MaskedArray):
        return _masked(item, None, None)
    return _Source(item)


def _masked(data: np.ma.MaskedArray, good: Any, wcs: Any) -> _Source:
    """Split a masked array into data and good pixels (its unmasked ones AND ``good``)."""
    bad = np.ma.getmaskarray(data)
    if bad.any():
        good = ~bad if good is None else good & ~bad
    return _Source(np.ma.getdata(data), good, None, wcs)


def make_records(
    data: Sequence[Any],
    *,
    wcs: Sequence[Any] | None = None,
    mask: Sequence[Any] | None = None,
    dq: Sequence[Any] | None = None,
    dqbits: str | int | None = None,
    groups: Sequence[Any] | None = None,
    names: Sequence[str] | None = None,
    writable: bool = False,
) -> Inputs:
    """Validate the images and everything given per image, before any pixel is read.

    Only shapes, headers and WCSs are read, so a FITS file's pixels are not loaded
    here (they are read inside the task that measures the image).

    Parameters
    ----------
    data : sequence
        The images: 2-D arrays, masked arrays (their masks honoured), NDData or CCDData
        (their ``mask``, True = bad, and ``wcs`` used), `astropy.io.fits.HDUList`
        objects or FITS file paths (the SCI extension or the primary image, the DQ
        extension and the header's WCS; a JWST datamodel's gwcs), or array-likes with
        ``shape`` and ``__array__`` read when converted.
    wcs : sequence or None
        One WCS (or None: the image's own) per image.
    mask, dq : sequence or None
        One mask (True or nonzero = good) / DQ array (or None) per image. A given mask
        is ANDed with the image's own; a given DQ array replaces a file's.
    dqbits : str, int or None
        See `good_pixels`; checked when there are DQ arrays.
    groups : sequence or None
        One group id per image.
    names : sequence of str or None
        One name per image (default: the file names, else ``#0``, ``#1``, ...).
    writable : bool
        The images must be writable floating-point numpy arrays (subtraction in place).

    Returns
    -------
    Inputs
        The records.

    Raises
    ------
    TypeError
        If ``data`` is a single 2-D array.
    ValueError
        For no image, an image that is not 2-D, lengths or shapes that do not match,
        an image that cannot be written in place, an unreadable file, or a ``dqbits``
        that does not parse; the message names the image.
    FileNotFoundError
        If a FITS path does not exist.
    """
    if isinstance(data, np.ndarray) and data.ndim == 2:
        raise TypeError("data must be a sequence of 2-D images, not a single 2-D array")
    items = list(data)
    n = len(items)
    if n == 0:
        raise ValueError("data must contain at least one image")
    given = None
    if names is not None:
        given = [str(s) for s in names]
        if len(given) != n:
            raise ValueError(f"names has {len(given)} entries for {n} images")
    sources = [_source(k, item) for k, item in enumerate(items)]
    labels = given or [s.name or f"#{k}" for k, s in enumerate(sources)]
    if given is None and all(s.name for s in sources):
        given = labels
    wcs_list = _per_image("wcs", wcs, n, None, labels)
    masks = _per_image("mask", mask, n, sources, labels)
    dqs = _per_image("dq", dq, n, sources, labels)
    records = []
    for k, src in enumerate(sources):
        shape = np.shape(src.data)  # reads a .shape without converting
        if len(shape) != 2:
            raise ValueError(f"image {labels[k]} is not a 2-D array (ndim={len(shape)})")
        if writable and not (isinstance(items[k], np.ndarray) and items[k].flags.writeable
                             and items[k].dtype.kind == "f"):
            raise ValueError(
                f"inplace=True needs writable floating-point arrays; image {labels[k]} "
                "is not (an integer image is subtracted into a new float64 array)"
            )
        good = _checked_mask(masks[k], labels[k])
        if src.good is not None:
            good = src.good if good is None else good & src.good
        dq_k = dqs[k] if dqs[k] is not None else src.dq
        _check_dq(dq_k, labels[k])
        records.append(ImageRecord(
            index=k, label=labels[k], data=src.data, shape=(int(shape[0]), int(shape[1])),
            mask=good, dq=dq_k, wcs=wcs_list[k] if wcs_list[k] is not None else src.wcs,
        ))
    if writable:
        _check_distinct(records)
    if any(r.dq is not None for r in records):  # parse before any task: fail fast
        check_dqbits(dqbits)
    gid, members = _group_index(groups, labels)
    return Inputs(records, dqbits, given, groups, gid, members)


def _loads_later(a: Any) -> bool:
    """Whether ``a`` is an array-like read when converted (a file), not to be read now."""
    return not isinstance(a, np.ndarray) and hasattr(a, "shape") and hasattr(a, "__array__")


def _checked_mask(mask: Any, label: str) -> Any:
    """Return a given mask as booleans (`skyeq.stats.good_mask`); leave a lazy one as is."""
    if mask is None or _loads_later(mask):
        return mask  # checked by the same rule when its task reads it
    return good_mask(mask, f"the mask of image {label}")


def _check_dq(dq: Any, label: str) -> None:
    """Refuse a DQ array that does not hold integer bit flags (floats, booleans)."""
    if dq is None:
        return
    dtype = getattr(dq, "dtype", None)
    if dtype is None and not _loads_later(dq):
        dtype = np.asarray(dq).dtype
    if dtype is not None and np.dtype(dtype).kind not in "iu":
        raise ValueError(
            f"the DQ array of image {label} must hold integer bit flags, got dtype {dtype}"
        )


def _check_distinct(records: list[ImageRecord]) -> None:
    """Refuse images that share memory when they are to be subtracted in place.

    The same array given twice (or two overlapping views of one array) would lose two
    skies. A sweep over the arrays' byte ranges finds the candidates; `numpy.shares_memory`
    decides.
    """
    arrays = [r for r in records if isinstance(r.data, np.ndarray)]
    spans = sorted((*np.lib.array_utils.byte_bounds(r.data), r.index) for r in arrays)
    by_index = {r.index: r for r in arrays}
    active: list[tuple[int, int]] = []  # (end, index) of the ranges still open
    for lo, hi, k in spans:
        active = [(end, j) for end, j in active if end > lo]
        for _, j in active:
            if np.shares_memory(by_index[j].data, by_index[k].data):
                raise ValueError(
                    f"images {by_index[j].label} and {by_index[k].label} share memory: "
                    "subtracting in place would subtract from the same pixels twice "
                    "(pass copies, or inplace=False)"
                )
        active.append((hi, k))


def _per_image(what: str, seq: Sequence[Any] | None, n: int,
               sources: list[_Source] | None, labels: list[str]) -> list[Any]:
    """Check one ``what`` (or None) per image, of the image's shape when ``sources``."""
    if seq is None:
        return [None] * n
    if isinstance(seq, (str, bytes)) or len(seq) != n:
        got = "a string" if isinstance(seq, (str, bytes)) else f"{len(seq)} entries"
        hint = (" (skyeq needs one WCS per image, or None for an image's own)"
                if what == "wcs" else "")
        raise ValueError(f"{what} has {got} for {n} images{hint}")
    for k in range(n):
        if sources is not None and seq[k] is not None and (
            np.shape(seq[k]) != np.shape(sources[k].data)
        ):
            raise ValueError(
                f"image {labels[k]!r}: {what} shape {np.shape(seq[k])} != data shape "
                f"{np.shape(sources[k].data)}"
            )
    return list(seq)


def _group_index(groups: Sequence[Any] | None, labels: list[str]
                 ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Map group ids to 0..G-1 in order of first appearance; members per group."""
    n = len(labels)
    if groups is None:
        gid = np.arange(n)
    else:
        if isinstance(groups, (str, bytes)) or not hasattr(groups, "__len__"):
            raise ValueError(
                f"groups must be a sequence of group ids, one per image; got {groups!r}"
            )
        if len(groups) != n:
            raise ValueError(f"groups has {len(groups)} entries for {n} images")
        order: dict[Any, int] = {}
        ids = []
        for k, g in enumerate(groups):
            try:
                ids.append(order.setdefault(g, len(order)))
            except TypeError:
                raise ValueError(
                    f"the group id of image {labels[k]} ({g!r}) is not hashable: use "
                    "strings or numbers"
                ) from None
        gid = np.array(ids, dtype=np.intp)
    members = [np.flatnonzero(gid == g) for g in range(int(gid.max()) + 1 if n else 0)]
    return gid, members


def check_wcs_list(inputs: Inputs, method: str) -> list[Any]:
    """Return one WCS per image (given, or the image's own), or raise naming those without.

    Each WCS is checked on its image later, in the plan's footprint tasks (see
    `skyeq.wcs.as_wcs_adapter`), where the checks of several images can run at once.

    Parameters
    ----------
    inputs : Inputs
        The images.
    method : str
        The method that needs them (for the message).

    Returns
    -------
    list
        The WCSs, one per image.

    Raises
    ------
    ValueError
        If an image has no WCS (none given, none of its own).
    """
    missing = [r.label for r in inputs.records if r.wcs is None]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise ValueError(
            f"method {method!r} needs one WCS per image; {len(missing)} of "
            f"{len(inputs.records)} have none ({shown}): pass wcs=[...] or images that "
            "carry one (NDData, FITS)"
        )
    return [r.wcs for r in inputs.records]
