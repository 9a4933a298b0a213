"""The validation stage of the inputs: the good-pixel rule of one image.

An image's good pixels are those its mask marks True (bool, or integers where nonzero
means good) and, when it has a data-quality array, whose DQ flags are all among
``dqbits`` (astropy's bit-mask syntax, with the JWST flag names of `JWST_DQ_FLAGS`;
``~`` means "every flag but these"). NaN and infinite pixels are never used whatever
the mask says: the statistics skip them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from astropy.nddata.bitmask import bitfield_to_boolean_mask

__all__ = ["DEFAULT_DQBITS", "JWST_DQ_FLAGS", "check_dqbits", "good_pixels"]

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
