"""A buffer helper of the statistics kernels (the geometry kernels keep their own copy).

Copies are explicit loops rather than slice assignments: numba compiles a slice
assignment with a shape check whose error message formats the shapes, and that string
machinery costs seconds of compile time on a fresh cache.
"""

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
    for i in range(buf.shape[0]):
        for j in range(buf.shape[1]):
            new[i, j] = buf[i, j]
    return new
