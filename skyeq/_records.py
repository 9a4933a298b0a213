"""The validation stage: every argument and image checked before any pixel is read.

`make_inputs` validates the images and what is given per image (masks, DQ arrays,
group ids, names) into `Inputs`; `check_wcs_list` checks that there is one WCS per image.
Errors name the image, in one line.

An image's good pixels are those its mask marks True (bool, or integers where nonzero
means good) and, when it has a data-quality array, whose DQ flags are all among
``dqbits`` (astropy's bit-mask syntax, with the JWST flag names of `JWST_DQ_FLAGS`;
``~`` means "every flag but these"). NaN and infinite pixels are never used whatever
the mask says: the statistics skip them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy.nddata.bitmask import bitfield_to_boolean_mask

__all__ = [
    "DEFAULT_DQBITS",
    "JWST_DQ_FLAGS",
    "Inputs",
    "check_dqbits",
    "check_wcs_list",
    "good_pixels",
    "make_inputs",
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
        The image's mask (True or nonzero = good).
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
        good = np.asarray(mask).astype(bool, copy=False)
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
class Inputs:
    """The validated inputs of one `skyeq.match_sky` call: one entry per image, groups.

    Images, masks and DQ arrays are kept as given: an array-like that is read when
    converted (a file) is read only inside its measurement task.

    Parameters
    ----------
    data, masks, dqs : list
        One entry per image (None where an image has no mask or DQ array).
    dqbits : str, int or None
        The DQ flags that do not make a pixel bad.
    labels : list of str
        The image names used in messages: the given names, else ``#0``, ``#1``, ...
    names : list of str or None
        The given names.
    groups : sequence or None
        The given group ids.
    gid : ndarray of int
        Group index (0, 1, ... in order of first appearance) of every image.
    members : list of ndarray
        The images of every group.
    shapes : list of tuple of int
        ``(ny, nx)`` of every image.
    """

    data: list[Any]
    masks: list[Any]
    dqs: list[Any]
    dqbits: str | int | None
    labels: list[str]
    names: list[str] | None
    groups: Any
    gid: np.ndarray
    members: list[np.ndarray]
    shapes: list[tuple[int, int]]

    @property
    def ngroups(self) -> int:
        """Number of groups."""
        return len(self.members)

    def group_label(self, g: int) -> str:
        """Name the images of group ``g``, for messages."""
        return ", ".join(self.labels[m] for m in self.members[g])


def make_inputs(
    data: Sequence[Any],
    *,
    mask: Sequence[Any] | None,
    dq: Sequence[Any] | None,
    dqbits: str | int | None,
    groups: Sequence[Any] | None,
    names: Sequence[str] | None,
    writable: bool,
) -> Inputs:
    """Validate the images and everything given per image, before any pixel is read.

    Only shapes are read (``numpy.shape``), so array-likes that load on demand are not
    loaded here.

    Parameters
    ----------
    data : sequence
        The images (2-D arrays or array-likes with ``shape`` and ``__array__``).
    mask, dq : sequence or None
        One mask / DQ array (or None) per image.
    dqbits : str, int or None
        See `good_pixels`; checked when DQ arrays are given.
    groups : sequence or None
        One group id per image.
    names : sequence of str or None
        One name per image.
    writable : bool
        The images must be writable numpy arrays (subtraction in place).

    Returns
    -------
    Inputs
        The validated inputs.

    Raises
    ------
    TypeError
        If ``data`` is a single 2-D array.
    ValueError
        For no image, an image that is not 2-D, lengths or shapes that do not match,
        an image that cannot be written in place, or a ``dqbits`` that does not parse;
        the message names the image.
    """
    if isinstance(data, np.ndarray) and data.ndim == 2:
        raise TypeError("data must be a sequence of 2-D images, not a single 2-D array")
    data = list(data)
    n = len(data)
    if n == 0:
        raise ValueError("data must contain at least one image")
    shapes = []
    for k, img in enumerate(data):
        shape = np.shape(img)  # reads a .shape without converting
        if len(shape) != 2:
            raise ValueError(f"image {k} is not a 2-D array (ndim={len(shape)})")
        shapes.append((int(shape[0]), int(shape[1])))
    given = None
    if names is not None:
        given = [str(s) for s in names]
        if len(given) != n:
            raise ValueError(f"names has {len(given)} entries for {n} images")
    labels = given if given is not None else [f"#{k}" for k in range(n)]
    if writable:
        for k, img in enumerate(data):
            if not (isinstance(img, np.ndarray) and img.flags.writeable
                    and img.dtype.kind == "f"):
                raise ValueError(
                    f"inplace=True needs writable floating-point arrays; image {labels[k]} "
                    "is not (an integer image is subtracted into a new float64 array)"
                )
    gid, members = _group_index(groups, n)
    masks = _per_image("mask", mask, data, labels)
    for k, img in enumerate(data):  # a masked array's mask joins the good-pixel rule
        if isinstance(img, np.ma.MaskedArray):
            data[k] = np.ma.getdata(img)
            bad = np.ma.getmaskarray(img)
            if bad.any():
                user = True if masks[k] is None else np.asarray(masks[k]).astype(bool)
                masks[k] = user & ~bad
    dqs = _per_image("dq", dq, data, labels)
    if dq is not None:  # parse before any task: fail fast
        check_dqbits(dqbits)
    return Inputs(data, masks, dqs, dqbits, labels, given, groups, gid, members, shapes)


def _per_image(what: str, seq: Sequence[Any] | None, data: list[Any],
               labels: list[str]) -> list[Any]:
    """Check one mask or DQ array (or None) per image, of the image's shape."""
    n = len(data)
    if seq is None:
        return [None] * n
    if len(seq) != n:
        raise ValueError(f"{what} has {len(seq)} entries for {n} images")
    for k in range(n):
        if seq[k] is not None and np.shape(seq[k]) != np.shape(data[k]):
            raise ValueError(
                f"image {labels[k]!r}: {what} shape {np.shape(seq[k])} != data shape "
                f"{np.shape(data[k])}"
            )
    return list(seq)


def _group_index(groups: Sequence[Any] | None, n: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Map group ids to 0..G-1 in order of first appearance; members per group."""
    if groups is None:
        gid = np.arange(n)
    else:
        if len(groups) != n:
            raise ValueError(f"groups has {len(groups)} entries for {n} images")
        order: dict[Any, int] = {}
        gid = np.array([order.setdefault(g, len(order)) for g in groups], dtype=np.intp)
    members = [np.flatnonzero(gid == g) for g in range(int(gid.max()) + 1 if n else 0)]
    return gid, members


def check_wcs_list(inputs: Inputs, wcs: Sequence[Any] | None, method: str) -> list[Any]:
    """Check that there is one WCS per image; return them as a list.

    Each WCS is checked on its image later, in the plan's footprint tasks (see
    `skyeq.wcs.as_wcs_adapter`), where the checks of several images can run at once.

    Parameters
    ----------
    inputs : Inputs
        The images.
    wcs : sequence or None
        One WCS per image.
    method : str
        The method that needs them (for the message).

    Returns
    -------
    list
        The WCSs, one per image.

    Raises
    ------
    ValueError
        If there is not one WCS per image.
    """
    n = len(inputs.data)
    if wcs is None or len(wcs) != n:
        raise ValueError(
            f"method {method!r} needs one WCS per image ({n}); got "
            f"{'none' if wcs is None else len(wcs)}"
        )
    return list(wcs)
