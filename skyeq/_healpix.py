"""HEALPix NESTED pixel indices of sky positions, in numpy (no healpy dependency).

`ang2pix_nest` follows the HEALPix definition (Gorski et al. 2005, ApJ 622, 759): the
sphere cut into 12 base faces of ``nside**2`` pixels of equal area, numbered in the
NESTED scheme (the bits of the x and y indices inside a face interleaved). Written here
from the paper's equations; the tests compare it with astropy-healpix.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["ang2pix_nest", "check_nside", "pixel_size_deg"]

#: Largest nside (2**29): the NESTED index of 12 * nside**2 pixels fits an int64.
_MAX_ORDER = 29


def check_nside(nside: object) -> int:
    """Return ``nside`` as an int if it is a power of 2 from 1 to 2**29, else raise."""
    if isinstance(nside, bool) or not isinstance(nside, int | np.integer):
        raise ValueError(f"nside must be an integer power of 2, got {nside!r}")
    n = int(nside)
    if n < 1 or n > 2**_MAX_ORDER or n & (n - 1):
        raise ValueError(f"nside must be a power of 2 from 1 to 2**{_MAX_ORDER}, got {n}")
    return n


def pixel_size_deg(nside: int) -> float:
    """Return the side of a HEALPix pixel of ``nside`` in degrees (the root of its area)."""
    return math.degrees(math.sqrt(4.0 * math.pi / (12.0 * nside * nside)))


def _interleave(ix: np.ndarray, iy: np.ndarray, order: int) -> np.ndarray:
    """Interleave the bits of ``ix`` (even places) and ``iy`` (odd places)."""
    out = np.zeros(ix.shape, dtype=np.int64)
    for b in range(order):
        out |= ((ix >> b) & 1) << (2 * b)
        out |= ((iy >> b) & 1) << (2 * b + 1)
    return out


def ang2pix_nest(nside: int, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Return the NESTED HEALPix pixel of every sky position.

    Parameters
    ----------
    nside : int
        A power of 2 (`check_nside`).
    ra, dec : array_like
        Right ascension and declination in degrees (ICRS, or any equatorial frame the
        indices are then in), of the same shape.

    Returns
    -------
    ndarray of int64
        The pixel indices in ``[0, 12 * nside**2)``, the shape of ``ra``.

    Examples
    --------
    >>> ang2pix_nest(1, [0.0, 90.0, 0.0], [0.0, 0.0, 90.0]).tolist()
    [4, 5, 0]
    """
    nside = check_nside(nside)
    order = nside.bit_length() - 1
    ra = np.asarray(ra, dtype=np.float64)
    dec = np.asarray(dec, dtype=np.float64)
    z = np.sin(np.radians(dec))
    za = np.abs(z)
    tt = np.mod(np.radians(ra), 2.0 * math.pi) / (0.5 * math.pi)  # in [0, 4)
    tt = np.where(tt >= 4.0, 0.0, tt)
    face = np.empty(z.shape, dtype=np.int64)
    ix = np.empty(z.shape, dtype=np.int64)
    iy = np.empty(z.shape, dtype=np.int64)
    eq = za <= 2.0 / 3.0
    # equatorial belt: the faces' edges are lines of constant tt -+ 0.75 z
    t1 = nside * (0.5 + tt[eq])
    t2 = nside * 0.75 * z[eq]
    jp = (t1 - t2).astype(np.int64)  # index of the ascending edge line
    jm = (t1 + t2).astype(np.int64)  # index of the descending edge line
    ifp, ifm = jp >> order, jm >> order
    face[eq] = np.where(ifp == ifm, ifp | 4, np.where(ifp < ifm, ifp, ifm + 8))
    ix[eq] = jm & (nside - 1)
    iy[eq] = nside - (jp & (nside - 1)) - 1
    # polar caps
    cap = ~eq
    ntt = np.minimum(tt[cap].astype(np.int64), 3)
    tp = tt[cap] - ntt
    tmp = nside * np.sqrt(3.0 * (1.0 - za[cap]))
    jp = np.minimum((tp * tmp).astype(np.int64), nside - 1)
    jm = np.minimum(((1.0 - tp) * tmp).astype(np.int64), nside - 1)
    north = z[cap] >= 0.0
    face[cap] = np.where(north, ntt, ntt + 8)
    ix[cap] = np.where(north, nside - jm - 1, jp)
    iy[cap] = np.where(north, nside - jp - 1, jm)
    return face * nside * nside + _interleave(ix, iy, order)
