"""A buffer helper shared by the statistics and geometry kernels."""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["grow"]


@njit(cache=True, nogil=True)
def grow(buf, need):
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
