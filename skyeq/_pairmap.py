"""The pixel-to-pixel map between two overlapping images, fitted once per pair.

`fit_pixel_map` maps the pixels of image i inside an overlap to positions in image j
(pixel of i -> sky -> pixel of j, through both WCSs). Over an overlap this map is
smooth and nearly affine (the same tangent-plane projection, offset, rotated, with the
detector distortion differenced), so a low-degree polynomial reproduces it and the
kernel (`skyeq._kernels.pairs.sample_differences`) evaluates it at every pixel for a
few multiply-adds, with no WCS call per pixel.

The fit: exact round trips on an 11 x 11 grid spanning the bounding box of the
overlap's spans, a least-squares fit in Chebyshev polynomials of total degree 3 (then
4, then 5) in coordinates scaled to [-1, 1] over that box, and the worst error of the
fitted polynomial against exact round trips on that grid and on the 10 x 10 midpoints
of its cells (points kept out of the fit). The first degree whose error is within the
tolerance is kept; if degree 5 misses it (or a round trip is not finite), the map falls
back to exact WCS calls for every pixel (`PixelMap.exact`), which is correct but slow.

The tolerance is in pixels of image j: an error ``e`` in the sampled position moves a
bilinear sample by at most ``e`` times the local gradient of the image (its change
per pixel). With the default 0.01 pixel, a sky gradient or a smooth source changing by
10 noise sigmas per pixel moves the sample by 0.1 sigma; over an overlap the error is a
smooth function, so it also biases the statistic of the differences by no more than
that, much less where the emission is faint.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .wcs import WCSAdapter, _as_matrix, _chebyshev_terms, as_wcs_adapter

__all__ = ["DEFAULT_TOLERANCE", "PixelMap", "exact_positions", "fit_pixel_map"]

log = logging.getLogger(__name__)

#: Largest error (pixels of image j) of the fitted map for it to replace the WCS calls.
DEFAULT_TOLERANCE = 0.01
#: Total degrees tried, in order.
_DEGREES = (3, 4, 5)
#: Points per axis of the fit grid (the check grid is the midpoints of its cells).
_GRID = 11


@dataclass(frozen=True, eq=False)
class PixelMap:
    """Positions in image j of pixels of image i: a polynomial, or exact WCS calls.

    Build it with `fit_pixel_map`.

    Parameters
    ----------
    coef_x, coef_y : ndarray of float64, shape (d + 1, d + 1)
        Power-series coefficients: the position of pixel ``(x, y)`` of image i in image j
        is ``sum(coef[p, q] * u**p * v**q)``, ``u = (x - norm[0]) * norm[1]``,
        ``v = (y - norm[2]) * norm[3]`` (what the kernel takes). When ``exact``, those
        of the last polynomial tried (for diagnostics only).
    norm : ndarray of float64, shape (4,)
        Centre and inverse half-size of the fitted box: ``(cx, 1/hx, cy, 1/hy)``.
    degree : int
        Total degree of the polynomial.
    error : float
        Its largest error against exact round trips on the fit and check grids, pixels
        of image j (inf when a round trip was not finite).
    exact : bool
        True when the polynomial missed the tolerance: `__call__` then uses the WCSs.
    tolerance : float
        The tolerance the polynomial was checked against, pixels.
    adapter_i, adapter_j : WCSAdapter
        The two images' WCSs.
    """

    coef_x: np.ndarray
    coef_y: np.ndarray
    norm: np.ndarray
    degree: int
    error: float
    exact: bool
    tolerance: float
    adapter_i: WCSAdapter = field(repr=False)
    adapter_j: WCSAdapter = field(repr=False)
    #: the exact round trips the polynomial was fitted to and checked on: ``(x, y, xj,
    #: yj, nfit)`` (the first ``nfit`` points are the fit grid), for `inverse`
    samples: tuple | None = field(default=None, repr=False)

    def inverse(self) -> PixelMap | None:
        """Return the map from image j back to image i, fitted to the same round trips.

        The points of the fit and check grids taken to image j are the samples of the
        reverse map, so no WCS is called again; its box is the fit grid's image in j,
        which holds the overlap. None when there are no finite samples or no polynomial
        of degree 3 to 5 reproduces them within the tolerance (fit the reverse map from
        its own round trips then).
        """
        if self.samples is None:
            return None
        x, y, xj, yj, nfit = self.samples
        if not (np.all(np.isfinite(xj)) and np.all(np.isfinite(yj))):
            return None
        out = _fit_samples(xj, yj, x, y, nfit, self.tolerance, self.adapter_j,
                           self.adapter_i)
        return None if out.exact else out

    def __call__(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """Positions in image j of pixel positions of image i.

        Parameters
        ----------
        x, y : array_like
            Zero-based pixel coordinates in image i, broadcastable.

        Returns
        -------
        xj, yj : ndarray of float64
            Zero-based pixel coordinates in image j: exact WCS round trips when
            ``exact``, else the polynomial (good to ``error`` pixels inside the box).
        """
        x, y = np.broadcast_arrays(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
        if self.exact:
            return exact_positions(self.adapter_i, self.adapter_j, x, y)
        return self.polynomial(x, y)

    def polynomial(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """Evaluate the polynomial (whether or not it met the tolerance).

        Parameters
        ----------
        x, y : array_like
            Zero-based pixel coordinates in image i, broadcastable.

        Returns
        -------
        xj, yj : ndarray of float64
            Zero-based pixel coordinates in image j.
        """
        u = (np.asarray(x, dtype=float) - self.norm[0]) * self.norm[1]
        v = (np.asarray(y, dtype=float) - self.norm[2]) * self.norm[3]
        return _polyval2d(u, v, self.coef_x), _polyval2d(u, v, self.coef_y)


def _polyval2d(u: np.ndarray, v: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """``sum(coef[p, q] * u**p * v**q)``, as `numpy.polynomial.polynomial.polyval2d`.

    Horner in ``u`` for every power of ``v``, then in ``v``: the same operations in the
    same order as numpy's (so the same values), without its generic machinery, which
    costs more than the arithmetic at the few thousand points of a pair's span ends.
    """
    u, v = np.broadcast_arrays(u, v)
    out = None
    for q in range(coef.shape[1] - 1, -1, -1):
        s = np.full(u.shape, coef[-1, q])
        for p in range(coef.shape[0] - 2, -1, -1):
            s *= u
            s += coef[p, q]
        if out is None:
            out = s
        else:
            out *= v
            out += s
    return out


def exact_positions(
    adapter_i: WCSAdapter, adapter_j: WCSAdapter, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Positions in image j of pixels of image i through both WCSs.

    Parameters
    ----------
    adapter_i, adapter_j : WCSAdapter
        The WCSs of images i and j.
    x, y : ndarray
        Zero-based pixel coordinates in image i, same shape.

    Returns
    -------
    xj, yj : ndarray of float64
        Zero-based pixel coordinates in image j (NaN where a WCS is undefined).
    """
    ra, dec = adapter_i.pixel_to_world(x, y)
    return adapter_j.world_to_pixel(ra, dec)


@functools.cache
def _cheb_to_power(degree: int) -> np.ndarray:
    """Matrix ``M`` with ``T_i(u) = sum_p M[p, i] u**p`` (Chebyshev to power series).

    Computed once per degree (read-only).
    """
    m = np.zeros((degree + 1, degree + 1))
    for i in range(degree + 1):
        c = np.polynomial.chebyshev.cheb2poly(np.eye(degree + 1)[i])
        m[: len(c), i] = c
    m.flags.writeable = False
    return m


def _box(spans: np.ndarray) -> tuple[float, float, float, float]:
    """Bounding box ``(x0, x1, y0, y1)`` of the pixels of the spans."""
    return (float(spans[:, 1].min()), float(spans[:, 2].max()),
            float(spans[:, 0].min()), float(spans[:, 0].max()))


#: 0 .. _GRID - 1, for `_axis`
_STEPS = np.arange(_GRID, dtype=float)
_STEPS.flags.writeable = False


def _axis(a: float, b: float) -> np.ndarray:
    """``np.linspace(a, b, _GRID)``: the same operations (so values), less overhead."""
    g = _STEPS * ((b - a) / (_GRID - 1))
    g += a
    g[-1] = b
    return g


def _grids(box: tuple[float, float, float, float]) -> tuple[np.ndarray, np.ndarray, int]:
    """Fit grid then check grid (cell midpoints) over the box; returns x, y, fit size."""
    x0, x1, y0, y1 = box
    gx = _axis(x0, x1)
    gy = _axis(y0, y1)
    mx = 0.5 * (gx[1:] + gx[:-1])
    my = 0.5 * (gy[1:] + gy[:-1])
    # row by row (what meshgrid then ravel gives), built directly: cheaper
    return (np.concatenate((np.tile(gx, _GRID), np.tile(mx, _GRID - 1))),
            np.concatenate((np.repeat(gy, _GRID), np.repeat(my, _GRID - 1))), _GRID * _GRID)


def _fit(u: np.ndarray, v: np.ndarray, xj: np.ndarray, yj: np.ndarray, nfit: int,
         degree: int) -> tuple[np.ndarray, float]:
    """Fit both coordinates at one degree; return the Chebyshev coefficients and max error.

    The error is that of the fitted polynomial on all points (fit grid and check
    points), evaluated with the same Chebyshev terms.
    """
    design = _chebyshev_terms(u, v, degree)
    target = np.column_stack((xj, yj))
    coef = np.linalg.lstsq(design[:nfit], target[:nfit], rcond=None)[0]
    err = np.hypot(*(design @ coef - target).T)
    return coef, float(err.max())


def _to_power(coef: np.ndarray, degree: int) -> tuple[np.ndarray, np.ndarray]:
    """Power-series matrices (what the kernel takes) of fitted Chebyshev coefficients."""
    m = _cheb_to_power(degree)
    return (m @ _as_matrix(coef[:, 0], degree) @ m.T,
            m @ _as_matrix(coef[:, 1], degree) @ m.T)


def _fit_samples(x: np.ndarray, y: np.ndarray, xj: np.ndarray, yj: np.ndarray, nfit: int,
                 tolerance: float, ad_i: WCSAdapter, ad_j: WCSAdapter) -> PixelMap:
    """Fit the lowest degree within ``tolerance`` to round trips ``(x, y) -> (xj, yj)``.

    The coordinates are scaled to [-1, 1] over the box of the first ``nfit`` points (the
    fit grid); the others are checked only.
    """
    x0, x1, y0, y1 = x[:nfit].min(), x[:nfit].max(), y[:nfit].min(), y[:nfit].max()
    cx, hx = 0.5 * (x0 + x1), max(0.5 * (x1 - x0), 0.5)
    cy, hy = 0.5 * (y0 + y1), max(0.5 * (y1 - y0), 0.5)
    norm = np.array([cx, 1.0 / hx, cy, 1.0 / hy])
    u = (x - cx) / hx
    v = (y - cy) / hy
    finite = bool(np.isfinite(xj).all() and np.isfinite(yj).all())
    coef, degree, error = None, 0, math.inf
    if finite:
        for degree in _DEGREES:
            coef, error = _fit(u, v, xj, yj, nfit, degree)
            log.debug("pixel map %s -> %s: degree %d, max error %.3g pixel", ad_i.name,
                      ad_j.name, degree, error)
            if error <= tolerance:
                break
    exact = not error <= tolerance
    if exact:
        why = (f"degree {degree} misses it by {error:.3g} pixel" if finite
               else "a WCS round trip on the fit grid is not finite")
        log.info("pixel map %s -> %s: no polynomial within %.3g pixel (%s); using exact WCS "
                 "calls for every pixel", ad_i.name, ad_j.name, tolerance, why)
    px, py = _to_power(coef, degree) if coef is not None else (np.zeros((1, 1)),) * 2
    return PixelMap(px, py, norm, degree, error, exact, float(tolerance), ad_i, ad_j,
                    (x, y, xj, yj, nfit))


def fit_pixel_map(
    adapter_i: Any,
    adapter_j: Any,
    spans_i: np.ndarray,
    tolerance: float = DEFAULT_TOLERANCE,
) -> PixelMap:
    """Fit the map from the pixels of image i in an overlap to their positions in image j.

    Parameters
    ----------
    adapter_i, adapter_j : WCSAdapter or WCS
        The WCSs of images i and j (anything `skyeq.wcs.as_wcs_adapter` takes; an adapter
        checked on its image gives the best inverse).
    spans_i : ndarray of int, shape (k, 3)
        The overlap's row spans ``(row, first column, last column)`` in image i; the map
        is fitted over their bounding box.
    tolerance : float, optional
        Largest error of the polynomial, in pixels of image j, checked against exact
        round trips on the fit grid and on the midpoints of its cells. Default 0.01: the
        bilinear sample then moves by at most 0.01 times the image's change per pixel
        (see the module docstring).

    Returns
    -------
    PixelMap
        The lowest degree (3 to 5) within the tolerance, or, if none is, a map with
        ``exact=True`` that calls the WCSs.

    Raises
    ------
    ValueError
        If ``spans_i`` holds no span or ``tolerance`` is not a finite number > 0.
    """
    if isinstance(tolerance, bool) or not (
        isinstance(tolerance, int | float) and math.isfinite(tolerance) and tolerance > 0.0
    ):
        raise ValueError(f"tolerance must be a finite number > 0 (pixels), got {tolerance!r}")
    spans = np.asarray(spans_i, dtype=np.int64).reshape(-1, 3)
    if spans.shape[0] == 0:
        raise ValueError("the overlap has no spans: there is no pixel map to fit")
    ad_i = as_wcs_adapter(adapter_i)
    ad_j = as_wcs_adapter(adapter_j)
    x, y, nfit = _grids(_box(spans))
    xj, yj = exact_positions(ad_i, ad_j, x, y)
    return _fit_samples(x, y, xj, yj, nfit, float(tolerance), ad_i, ad_j)
