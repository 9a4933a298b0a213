"""Numba kernel of a fitted forward transform's inverse: Newton steps on Chebyshev series.

A checked gwcs maps pixels to sky through a 2-D Chebyshev polynomial in the plane
tangent at the image centre (`skyeq.wcs._ForwardFit`); world -> pixel then solves that
polynomial for the pixel, point by point, from a start given by a second polynomial
fitted the other way. In NumPy every Newton step of every point set costs a few dozen
array operations under the GIL; here each point runs its own iterations, without the
GIL, so that the overlap spans of two images can be found on two threads at once.

Thread-safe and stateless like every kernel (see `skyeq._kernels`). It is compiled with
the geometry kernels (`skyeq._kernels.geometry.warmup`), and shares no njit function
with the statistics kernels.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["newton_inverse", "warmup"]


#: Points solved together, so that the series are summed for several points per
#: vector instruction (on AVX-512, 2000 points: 8 lanes 0.38 ms, 32 lanes 0.34, 64 lanes
#: 0.16, 256 lanes 0.15; one point at a time 0.66, NumPy over all points 0.65).
_LANES = 64


@njit(cache=True, nogil=True)
def _rows(t, u):
    """Fill ``t[:, q]`` with ``T_0(u[q]) ... T_d(u[q])`` (the three-term recurrence)."""
    for q in range(_LANES):
        t[0, q] = 1.0
    if t.shape[0] > 1:
        for q in range(_LANES):
            t[1, q] = u[q]
    for i in range(2, t.shape[0]):
        for q in range(_LANES):
            t[i, q] = 2.0 * u[q] * t[i - 1, q] - t[i - 2, q]


@njit(cache=True, nogil=True)
def _sums(c, tu, tv, out):
    """Every series of ``c`` at the lanes' points, into ``out[k, q]``.

    ``c[k, i, j]`` multiplies ``T_i(u) T_j(v)``; only the terms with ``i + j <= d`` are
    read (the others are zero). Each lane sums its terms in the same order.
    """
    n1 = tu.shape[0]
    out[:] = 0.0
    for i in range(n1):
        for j in range(n1 - i):
            for k in range(c.shape[0]):
                ck = c[k, i, j]
                for q in range(_LANES):
                    out[k, q] += ck * (tu[i, q] * tv[j, q])


@njit(cache=True, nogil=True)
def newton_inverse(p, centre, east, north, sky, pix, inv, newton, maxiter, tol):
    """Pixel positions of unit vectors through a fitted forward transform.

    For each point: its gnomonic coordinates ``(a, b)`` in the plane tangent at
    ``centre``; a start from the inverse series ``inv``; then Newton steps on the
    forward series until a step is at most ``tol`` pixels. Points go through
    `_LANES` at a time; each has its own steps, exactly as if it were alone.

    Parameters
    ----------
    p : ndarray, shape (m, 3)
        Unit vectors.
    centre, east, north : ndarray, shape (3,)
        The tangent point and its basis.
    sky : tuple of float
        ``(a0, ha, b0, hb)``: ``inv`` is a series in ``((a - a0) / ha, (b - b0) / hb)``.
    pix : tuple of float
        ``(x0, hx, y0, hy)``: the forward series are in ``((x - x0) / hx, (y - y0) / hy)``.
    inv : ndarray, shape (2, d + 1, d + 1)
        Chebyshev coefficients of ``x`` and ``y`` in the scaled gnomonic coordinates.
    newton : ndarray, shape (6, d + 1, d + 1)
        Chebyshev coefficients of ``a``, ``b``, ``da/dx``, ``da/dy``, ``db/dx``,
        ``db/dy`` in the scaled pixels.
    maxiter : int
        Most Newton steps per point.
    tol : float
        A point is done after a step of at most this many pixels.

    Returns
    -------
    x, y : ndarray of float64, shape (m,)
        Pixel positions; NaN behind the tangent plane, where the start is not
        finite, where a step is not finite, or without convergence in ``maxiter``
        steps.
    """
    m = p.shape[0]
    x = np.full(m, np.nan)
    y = np.full(m, np.nan)
    tu = np.empty((inv.shape[1], _LANES))
    tv = np.empty((inv.shape[1], _LANES))
    fu = np.empty((newton.shape[1], _LANES))
    fv = np.empty((newton.shape[1], _LANES))
    s2 = np.empty((2, _LANES))
    s6 = np.empty((6, _LANES))
    a = np.empty(_LANES)
    b = np.empty(_LANES)
    u = np.empty(_LANES)
    v = np.empty(_LANES)
    xk = np.empty(_LANES)
    yk = np.empty(_LANES)
    active = np.empty(_LANES, dtype=np.bool_)
    for k0 in range(0, m, _LANES):
        for q in range(_LANES):
            k = min(k0 + q, m - 1)  # the last block repeats its last point
            w = p[k, 0] * centre[0] + p[k, 1] * centre[1] + p[k, 2] * centre[2]
            a[q] = (p[k, 0] * east[0] + p[k, 1] * east[1] + p[k, 2] * east[2]) / w
            b[q] = (p[k, 0] * north[0] + p[k, 1] * north[1] + p[k, 2] * north[2]) / w
            u[q] = (a[q] - sky[0]) / sky[1]
            v[q] = (b[q] - sky[2]) / sky[3]
            active[q] = w > 0.0 and k0 + q < m
        _rows(tu, u)
        _rows(tv, v)
        _sums(inv, tu, tv, s2)
        left = 0
        for q in range(_LANES):
            xk[q] = s2[0, q]
            yk[q] = s2[1, q]
            active[q] = active[q] and math.isfinite(xk[q]) and math.isfinite(yk[q])
            left += active[q]
        for _ in range(maxiter):
            if left == 0:
                break
            for q in range(_LANES):
                u[q] = (xk[q] - pix[0]) / pix[1]
                v[q] = (yk[q] - pix[2]) / pix[3]
            _rows(fu, u)
            _rows(fv, v)
            _sums(newton, fu, fv, s6)
            for q in range(_LANES):
                if not active[q]:
                    continue
                r1 = s6[0, q] - a[q]
                r2 = s6[1, q] - b[q]
                det = s6[2, q] * s6[5, q] - s6[3, q] * s6[4, q]
                sx = -(s6[5, q] * r1 - s6[3, q] * r2) / det
                sy = -(s6[2, q] * r2 - s6[4, q] * r1) / det
                step = math.hypot(sx, sy)
                if not math.isfinite(step):
                    active[q] = False  # a singular Jacobian or an overflow: NaN
                    left -= 1
                    continue
                xk[q] += sx
                yk[q] += sy
                if step <= tol:
                    x[k0 + q] = xk[q]
                    y[k0 + q] = yk[q]
                    active[q] = False
                    left -= 1
    return x, y


def warmup() -> None:
    """Compile (or load from the cache) `newton_inverse` on a tiny input."""
    coef = np.zeros((2, 2, 2))
    coef[0, 1, 0] = coef[1, 0, 1] = 1.0
    series = np.zeros((6, 2, 2))
    series[0, 1, 0] = series[1, 0, 1] = series[2, 0, 0] = series[5, 0, 0] = 1.0
    newton_inverse(np.array([[1.0, 0.0, 0.0]]), np.array([1.0, 0.0, 0.0]),
                   np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, 1.0]),
                   np.array([0.0, 1.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.0, 1.0]),
                   coef, series, 25, 1e-9)
