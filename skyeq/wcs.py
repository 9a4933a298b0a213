"""One adapter from any supported WCS to vectorised pixel <-> world functions.

skyeq needs only two things from a WCS: sky coordinates (degrees) of pixel positions
and pixel positions of sky coordinates, with zero-based pixel coordinates and pixel
centres at integers. `as_wcs_adapter` turns any of these into a `WCSAdapter`:

* an `astropy.wcs.WCS` (with or without SIP / lookup-table distortions; the full
  ``all_pix2world`` / ``all_world2pix`` transforms are used);
* a ``gwcs.WCS`` (its forward transform is composed once per adapter, its backward
  transform only if it is needed, and both are called without the bounding box, so
  the detector outline at the pixel edges is never turned into NaN);
* any other APE 14 low-level WCS (``pixel_to_world_values`` /
  ``world_to_pixel_values``), or an object with a ``low_level_wcs`` attribute
  (e.g. `astropy.wcs.wcsapi.HighLevelWCSWrapper`);
* a pair of callables ``(fwd, inv)`` with ``fwd(x, y) -> (ra, dec)`` and
  ``inv(ra, dec) -> (x, y)``, degrees and zero-based pixel centres.

Real WCSs are approximate. The backward transform of an instrument's distortion model
(a JWST or Roman gwcs, for instance) is a separately fitted polynomial that round-trips
to about 0.1 pixel at the detector corners. The forward transform is the definition.
Given the image shape, `as_wcs_adapter` checks the WCS once, with one forward call on
the outline (pixel edges) and an interior grid, and chooses how
`WCSAdapter.world_to_pixel` works (`WCSAdapter.inverse`):

* ``'own'``: the wrapped inverse, when it round-trips to ``INVERSE_TOLERANCE`` (1e-3
  pixel) on the image;
* ``'fitted'``: Newton iterations on a Chebyshev polynomial fitted to the forward
  transform, when it reproduces the WCS to 1e-7 pixel on points kept out of the fit
  (degree 5 gives 6e-9 pixel for a JWST NIRCam detector). No WCS call at all, so a
  gwcs tries this first and never builds its backward transform;
* ``'newton'``: Newton iterations on the forward transform itself (one forward call
  per step, a number of steps calibrated on the image), started from the wrapped
  inverse or the polynomial, whichever is closer.

Either refinement round-trips to better than 1e-6 pixel on real instruments; an image
whose WCS cannot be inverted to ``INVERSE_TOLERANCE`` at all is refused with an error
that names it. `WCSAdapter.pixel_area` gives the solid angle of pixels.

Longitudes are returned wrapped to [0, 360). The adapter stores the wrapped object and
small arrays (no closures), so it pickles whenever that object pickles.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._flatmodel import FlatModel, uses_quantity
from ._kernels.chebyshev import densify_rings, newton_inverse

__all__ = ["INVERSE_TOLERANCE", "WCSAdapter", "as_wcs_adapter"]

log = logging.getLogger(__name__)

#: Largest pixel -> world -> pixel error (pixels) accepted from a WCS's own inverse;
#: worse inverses are replaced by Newton iterations, and a WCS that cannot be inverted
#: to within it is an error.
INVERSE_TOLERANCE = 1e-3
# Newton stops once every step is below this many pixels (the error left is then of
# the order of the next step, smaller by a factor of the step times the relative change
# of the Jacobian per pixel: ~1e-12 pixel for a real detector).
_NEWTON_STEP = 1e-6
_NEWTON_MAXITER = 25
# Bound on what the calibrated number of Newton steps may leave undone (pixels).
_CALIBRATED = 1e-7
# Newton on the fitted forward transform costs no WCS call: it runs to convergence.
_FIT_NEWTON_STEP = 1e-9
# Finite-difference step (pixels) of the forward transform's Jacobian.
_JACOBIAN_STEP = 0.5
# Samples of the round-trip check: points per image side on the pixel-edge outline,
# and an interior grid of this many points per axis.
_CHECK_EDGE = 33
_CHECK_GRID = 16


# --------------------------------------------------------------------------------------
# unit vectors
# --------------------------------------------------------------------------------------


def _radec_to_xyz(ra: Any, dec: Any) -> np.ndarray:
    """Convert sky coordinates to unit vectors.

    Parameters
    ----------
    ra, dec : array_like
        Longitude and latitude in degrees.

    Returns
    -------
    ndarray, shape (m, 3)
        Unit vectors (inputs are flattened).
    """
    lon = np.radians(np.ravel(ra))
    lat = np.radians(np.ravel(dec))
    cl = np.cos(lat)
    return np.column_stack((cl * np.cos(lon), cl * np.sin(lon), np.sin(lat)))


def _xyz_to_radec(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Convert unit vectors to sky coordinates.

    Parameters
    ----------
    v : ndarray, shape (m, 3)
        Unit vectors.

    Returns
    -------
    ra, dec : ndarray
        Longitude in [0, 360) and latitude, in degrees.
    """
    ra = np.degrees(np.arctan2(v[:, 1], v[:, 0]))
    ra = np.where(ra < 0.0, ra + 360.0, ra)
    ra[ra >= 360.0] -= 360.0
    dec = np.degrees(np.arctan2(v[:, 2], np.hypot(v[:, 0], v[:, 1])))
    return ra, dec


def _tangent_basis(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """East and north unit vectors of the plane tangent at each of ``t``.

    Parameters
    ----------
    t : ndarray, shape (m, 3)
        Unit vectors.

    Returns
    -------
    east, north : ndarray, shape (m, 3)
        Orthonormal bases; at a pole, "east" follows the longitude the vector was
        built from (``atan2(y, x)`` of the rounding-level remainder), which is still a
        valid basis.
    """
    lon = np.arctan2(t[:, 1], t[:, 0])
    east = np.column_stack((-np.sin(lon), np.cos(lon), np.zeros(len(t))))
    north = np.cross(t, east)
    return east, north


# --------------------------------------------------------------------------------------
# a fitted forward transform
# --------------------------------------------------------------------------------------


def _chebyshev_rows(u: np.ndarray, degree: int) -> np.ndarray:
    """``T_0(u) ... T_degree(u)`` as rows (the three-term recurrence)."""
    t = np.empty((degree + 1, len(u)))
    t[0] = 1.0
    if degree > 0:
        t[1] = u
    for i in range(2, degree + 1):
        t[i] = 2.0 * u * t[i - 1] - t[i - 2]
    return t


def _chebyshev_terms(u: np.ndarray, v: np.ndarray, degree: int) -> np.ndarray:
    """Products ``T_i(u) T_j(v)`` of Chebyshev polynomials with ``i + j <= degree``.

    Parameters
    ----------
    u, v : ndarray
        Coordinates scaled to about [-1, 1].
    degree : int
        Total degree.

    Returns
    -------
    ndarray, shape (m, (degree + 1) * (degree + 2) / 2)
        The design matrix, columns in the order of `_term_index`.
    """
    i, j = _term_index(degree)
    return (_chebyshev_rows(u, degree)[i] * _chebyshev_rows(v, degree)[j]).T


@functools.lru_cache(maxsize=16)
def _term_index(degree: int) -> tuple[np.ndarray, np.ndarray]:
    """Degrees ``(i, j)`` of the terms of `_chebyshev_terms` (read-only, shared)."""
    i, j = np.meshgrid(np.arange(degree + 1), np.arange(degree + 1), indexing="ij")
    keep = (i + j <= degree).ravel()
    i, j = i.ravel()[keep], j.ravel()[keep]
    i.setflags(write=False)
    j.setflags(write=False)
    return i, j


@functools.lru_cache(maxsize=16)
def _derivative_matrix(degree: int) -> np.ndarray:
    """``D`` such that ``D @ c`` differentiates Chebyshev coefficients ``c`` along axis 0.

    Square (``degree + 1``), its last row zero, read-only and shared: ``c @ D.T``
    differentiates along axis 1.
    """
    d = np.zeros((degree + 1, degree + 1))
    d[:-1] = np.polynomial.chebyshev.chebder(np.eye(degree + 1), axis=0)
    d.setflags(write=False)
    return d


def _pixel_scaling(shape: tuple[int, int]) -> tuple[float, float, float, float]:
    """``(x0, hx, y0, hy)`` mapping an image's pixels to [-1, 1] (see `_ForwardFit`)."""
    ny, nx = shape
    return (nx - 1) / 2.0, max(nx / 2.0, 0.5), (ny - 1) / 2.0, max(ny / 2.0, 0.5)


@functools.lru_cache(maxsize=32)
def _fit_design(shape: tuple[int, int], degree: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the forward fit's design on an image's check points (cached, read-only).

    The pixel side of the fit depends on the image shape only, so its least-squares
    solution is one matrix, computed once: fitting an image is then a matrix product.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)``.
    degree : int
        Total degree.

    Returns
    -------
    terms : ndarray, shape (m, t)
        `_chebyshev_terms` of every check point (`_check_points`).
    solve : ndarray, shape (t, k)
        The pseudo-inverse of the rows of the fitted points: ``solve @ values[fitted]``
        are the least-squares coefficients.
    fitted : ndarray of bool, shape (m,)
        The fitted points: all but the centres of the interior grid's cells, which
        validate the fit.
    """
    x, y, _, cells = _check_points(shape)
    x0, hx, y0, hy = _pixel_scaling(shape)
    terms = _chebyshev_terms((x - x0) / hx, (y - y0) / hy, degree)
    fitted = np.ones(len(x), dtype=bool)
    fitted[cells] = False
    solve = np.linalg.pinv(terms[fitted])
    for a in (terms, solve, fitted):
        a.setflags(write=False)
    return terms, solve, fitted


def _as_matrix(coef: np.ndarray, degree: int) -> np.ndarray:
    """Coefficients of `_chebyshev_terms` as a ``(degree + 1, degree + 1)`` matrix."""
    i, j = _term_index(degree)
    c = np.zeros((degree + 1, degree + 1))
    c[i, j] = coef
    return c


#: Total degrees tried, in order, for the fitted forward transform.
_FIT_DEGREES = (3, 5, 7)
#: Largest error (pixels) of the fitted forward transform on validation points for it to
#: stand in for the WCS in world -> pixel.
_FIT_TOLERANCE = 1e-7


@dataclass(frozen=True, eq=False)
class _ForwardFit:
    """A Chebyshev polynomial standing in for an image's forward transform.

    It maps pixels (scaled to [-1, 1] over the image) to gnomonic coordinates in the
    plane tangent at the image centre, where great circles are straight. A detector's
    distortion is itself a low-degree polynomial, so a fit of degree 5 reproduces a
    JWST NIRCam gwcs to ~1e-8 pixel. World -> pixel then needs no call of a costly
    WCS: Newton iterations on the polynomial, started from a second polynomial fitted the
    other way, in a compiled kernel.

    Parameters
    ----------
    centre, east, north : ndarray, shape (3,)
        Tangent point (unit vector) and its basis.
    pix : tuple of float
        ``(x0, hx, y0, hy)``: ``u = (x - x0) / hx``, ``v = (y - y0) / hy``.
    sky : tuple of float
        ``(a0, ha, b0, hb)``: the same scaling of the gnomonic coordinates.
    degree : int
        Total degree.
    fwd : ndarray, shape (2, degree + 1, degree + 1)
        Chebyshev coefficients of the gnomonic coordinates (radians) in ``(u, v)``.
    inv : ndarray, shape (2, degree + 1, degree + 1)
        Chebyshev coefficients of ``(x, y)`` in the scaled gnomonic coordinates.
    error : float
        Largest error of ``fwd`` on the validation points, in pixels.
    newton : ndarray, shape (6, degree + 1, degree + 1)
        ``fwd`` and its derivatives per pixel (`_newton_series`), built with the fit
        so that `inverse` does not rebuild them on every call.
    """

    centre: np.ndarray
    east: np.ndarray
    north: np.ndarray
    pix: tuple[float, float, float, float]
    sky: tuple[float, float, float, float]
    degree: int
    fwd: np.ndarray
    inv: np.ndarray
    error: float
    newton: np.ndarray

    @classmethod
    def fit(cls, shape: tuple[int, int], p: np.ndarray, scale: float) -> _ForwardFit | None:
        """Fit the lowest degree of `_FIT_DEGREES` that reproduces the WCS (or the highest).

        The fit is on the image's check points (`_check_points`), less the centres of
        the interior grid's cells, which validate it.

        Parameters
        ----------
        shape : tuple of int
            ``(ny, nx)``.
        p : ndarray, shape (m, 3)
            The check points' unit vectors through the WCS's forward transform.
        scale : float
            Smallest pixel scale (radians), to express errors in pixels.

        Returns
        -------
        _ForwardFit or None
            The fit of the lowest degree that reaches `_FIT_TOLERANCE` pixels on the
            validation points, else of the highest (its ``error`` says how far it is);
            None when the image reaches beyond 84 degrees from its centre.
        """
        x, y, _, _ = _check_points(shape)
        s = p.sum(axis=0)
        centre = s / np.linalg.norm(s)
        east, north = (b[0] for b in _tangent_basis(centre[None, :]))
        w = p @ centre
        if not np.all(w > 0.1):
            return None  # beyond ~84 degrees from the centre: not a detector
        a, b = (p @ east) / w, (p @ north) / w
        pix = _pixel_scaling(shape)
        sky = (
            float((a.max() + a.min()) / 2), float(max(np.ptp(a) / 2, 1e-300)),
            float((b.max() + b.min()) / 2), float(max(np.ptp(b) / 2, 1e-300)),
        )
        ab = np.column_stack((a, b))
        for degree in _FIT_DEGREES:
            terms, solve, fitted = _fit_design(shape, degree)
            coef = solve @ ab[fitted]
            model = terms @ coef
            error = float(np.hypot(model[:, 0] - a, model[:, 1] - b).max()) / scale
            if error <= _FIT_TOLERANCE:
                break
        back = _chebyshev_terms((a - sky[0]) / sky[1], (b - sky[2]) / sky[3], degree)
        icoef = np.linalg.lstsq(back[fitted], np.column_stack((x, y))[fitted], rcond=None)[0]
        fwd = np.stack([_as_matrix(coef[:, k], degree) for k in (0, 1)])
        return cls(
            centre, east, north, pix, sky, degree, fwd,
            np.stack([_as_matrix(icoef[:, k], degree) for k in (0, 1)]),
            error, _newton_series(fwd, pix),
        )

    def inverse(self, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel positions of sky coordinates by Newton iterations on the polynomial.

        Parameters
        ----------
        ra, dec : ndarray
            Degrees, 1-D.

        Returns
        -------
        x, y : ndarray
            Pixel positions (NaN behind the tangent plane or without convergence).
        """
        return self.inverse_vectors(_radec_to_xyz(ra, dec))

    def inverse_vectors(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel positions of unit vectors by Newton iterations on the polynomial.

        Each point starts from the inverse fit and steps until a step is at most
        `_FIT_NEWTON_STEP` pixels (`skyeq._kernels.chebyshev.newton_inverse`, without
        the GIL).

        Parameters
        ----------
        p : ndarray, shape (m, 3)
            Unit vectors.

        Returns
        -------
        x, y : ndarray
            Pixel positions (NaN behind the tangent plane or without convergence).
        """
        return newton_inverse(np.ascontiguousarray(p, dtype=float), self.centre, self.east,
                              self.north, self.sky, self.pix, self.inv, self.newton,
                              _NEWTON_MAXITER, _FIT_NEWTON_STEP)

    def densify(self, v: np.ndarray, start: np.ndarray, step_angle: float,
                tolerance: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
        """Map rings to pixels with their edges densified along great circles.

        `skyeq.geometry._densify` for this inverse, in one compiled call without the
        GIL (`skyeq._kernels.chebyshev.densify_rings`).

        Parameters
        ----------
        v : ndarray, shape (m, 3)
            Open rings of unit vectors, concatenated.
        start : ndarray of int64
            Ring offsets into ``v``.
        step_angle : float
            Edges of a larger angle (radians) are split into equal parts first.
        tolerance : float
            Pixels: an edge whose mapped midpoint is farther off the straight segment
            is halved.

        Returns
        -------
        px, py : ndarray
            Pixel positions of the densified rings.
        start : ndarray of int64
            Ring offsets into ``px``/``py``.
        ok : bool
            False when a point has no finite pixel position.
        """
        return densify_rings(np.ascontiguousarray(v, dtype=float),
                             np.ascontiguousarray(start, dtype=np.int64), float(step_angle),
                             float(tolerance), self.centre, self.east, self.north, self.sky,
                             self.pix, self.inv, self.newton, _NEWTON_MAXITER,
                             _FIT_NEWTON_STEP)


def _newton_series(fwd: np.ndarray, pix: tuple[float, float, float, float]) -> np.ndarray:
    """Coefficients of the two fitted coordinates and their pixel derivatives, stacked.

    Parameters
    ----------
    fwd : ndarray, shape (2, d + 1, d + 1)
        Chebyshev coefficients of the gnomonic coordinates in the scaled pixels.
    pix : tuple of float
        ``(x0, hx, y0, hy)``, the pixel scaling of `_ForwardFit`.

    Returns
    -------
    ndarray, shape (6, d + 1, d + 1)
        ``a``, ``b``, ``da/dx``, ``da/dy``, ``db/dx``, ``db/dy`` (per pixel): what a
        Newton step evaluates (`skyeq._kernels.chebyshev.newton_inverse`).
    """
    d = _derivative_matrix(fwd.shape[1] - 1)
    _, hx, _, hy = pix
    stack = [fwd[0], fwd[1]]
    for c in fwd:
        stack += [d @ c / hx, c @ d.T / hy]
    return np.stack(stack)


# --------------------------------------------------------------------------------------
# the adapter
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class WCSAdapter:
    """Vectorised pixel <-> world transforms of one image.

    Build it with `as_wcs_adapter`; the fields are an implementation detail.

    Parameters
    ----------
    name : str
        Name of the image, used in error messages.
    kind : {'fitswcs', 'gwcs', 'ape14', 'callables'}
        How ``wcs`` is called.
    wcs : object
        The wrapped WCS, or the ``(fwd, inv)`` pair for ``kind='callables'``.
    lon_axis : int
        Index of the longitude among the world axes (0 or 1).
    transforms : _Transforms or None
        For a gwcs: its forward transform, built once, and its backward transform,
        built on first use; None otherwise, and for a gwcs whose transforms use units
        (then the gwcs itself is called).
    shape : tuple of int or None
        ``(ny, nx)`` of the image the WCS was checked on; None when unchecked.
    inverse : {'unchecked', 'own', 'fitted', 'newton'}
        How `world_to_pixel` works: the wrapped WCS's own inverse (unchecked, or
        checked to ``INVERSE_TOLERANCE``); Newton iterations on ``fit``, a polynomial
        reproducing the forward transform to `_FIT_TOLERANCE` pixels; or Newton
        iterations on the forward transform itself.
    inverse_error : float
        Worst pixel -> world -> pixel error, in pixels, of the wrapped WCS's own
        inverse on the image (NaN when not measured: unchecked, no inverse, or a
        gwcs whose forward transform was fitted, so that its inverse is not needed).
    fit : _ForwardFit or None
        The fitted forward transform, when one was made (it also starts the Newton
        iterations of ``inverse='newton'`` when it is closer than the own inverse).
    pixel_scale : float
        Smallest sky step of a one-pixel move on the image, radians (NaN when
        unchecked): a great-circle arc of angle ``a`` spans at most ``a / pixel_scale``
        pixels.
    newton_steps : int
        Newton steps of ``inverse='newton'``, calibrated on the image.
    corners : tuple of ndarray or None
        Sky coordinates (degrees) of the four outer pixel corners, bottom-left,
        bottom-right, top-right, top-left, as the check mapped them (a footprint without
        ``stepsize`` needs nothing else: a costly WCS is not called again for it).
    straight : bool
        Whether great circles are straight lines in the pixel frame: a FITS WCS whose
        celestial axes are both gnomonic (``TAN``) with no distortion of any kind (no
        SIP, lookup tables or ``PV`` parameters). The pixel spans of an overlap then map
        its vertices only (`skyeq.geometry.overlap_spans_many`).
    """

    name: str
    kind: str
    wcs: Any
    lon_axis: int = 0
    transforms: _Transforms | None = dataclasses.field(default=None, repr=False)
    shape: tuple[int, int] | None = None
    inverse: str = "unchecked"
    inverse_error: float = math.nan
    fit: _ForwardFit | None = dataclasses.field(default=None, repr=False)
    pixel_scale: float = math.nan
    newton_steps: int = 0
    corners: tuple[np.ndarray, np.ndarray] | None = dataclasses.field(default=None, repr=False)
    straight: bool = False

    def __repr__(self) -> str:
        extra = "" if self.shape is None else f", shape={self.shape}, inverse={self.inverse!r}"
        return f"WCSAdapter(name={self.name!r}, kind={self.kind!r}{extra})"

    @property
    def has_inverse(self) -> bool:
        """Whether the wrapped WCS has an inverse of its own (a gwcs's is built here)."""
        return self.transforms is None or self.transforms.backward is not None

    def pixel_to_world(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """Sky coordinates of pixel positions.

        Parameters
        ----------
        x, y : array_like
            Zero-based pixel coordinates (pixel centres at integers), broadcastable.

        Returns
        -------
        ra, dec : ndarray of float64
            Longitude in [0, 360) and latitude, in degrees. Positions where the WCS
            is undefined are NaN.

        Raises
        ------
        ValueError
            If the wrapped WCS raises; the message names the image.
        """
        x, y = np.broadcast_arrays(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
        try:
            if self.kind == "fitswcs":
                w = self.wcs.all_pix2world(x, y, 0)
            elif self.kind == "gwcs":
                if self.transforms is not None:
                    w = self.transforms.call(x.ravel(), y.ravel())
                    w = tuple(np.reshape(a, x.shape) for a in w[:2])
                else:
                    w = self.wcs(x, y, with_bounding_box=False)
            elif self.kind == "ape14":
                w = self.wcs.pixel_to_world_values(x, y)
            else:
                w = self.wcs[0](x, y)
        except Exception as err:
            raise ValueError(
                f"the WCS of {self.name} failed to map pixel to world coordinates: {err}"
            ) from err
        lon = _values(w[self.lon_axis])
        lat = _values(w[1 - self.lon_axis])
        return _wrap360(np.broadcast_to(lon, x.shape)), np.array(
            np.broadcast_to(lat, x.shape), dtype=float
        )

    def world_to_pixel(self, ra: Any, dec: Any) -> tuple[np.ndarray, np.ndarray]:
        """Pixel positions of sky coordinates.

        Once the adapter is checked on its image (`as_wcs_adapter` with a shape), the
        result is good to ``INVERSE_TOLERANCE`` pixels whatever the wrapped WCS's own
        inverse is worth (see the module docstring).

        Parameters
        ----------
        ra, dec : array_like
            Longitude and latitude in degrees, broadcastable.

        Returns
        -------
        x, y : ndarray of float64
            Zero-based pixel coordinates (pixel centres at integers); NaN where the
            WCS has no inverse (or the refinement does not converge).

        Raises
        ------
        ValueError
            If the wrapped WCS raises (for instance an iterative SIP inverse that
            does not converge); the message names the image.
        """
        ra, dec = np.broadcast_arrays(np.asarray(ra, dtype=float), np.asarray(dec, dtype=float))
        if self.inverse == "fitted":
            x, y = self.fit.inverse(ra.ravel(), dec.ravel())
        elif self.inverse == "newton":
            x, y, _ = self._newton(ra.ravel(), dec.ravel(), self.newton_steps or None)
        else:
            return self._own_inverse(ra, dec)
        return x.reshape(ra.shape), y.reshape(ra.shape)

    def pixel_area(self, x: Any, y: Any) -> np.ndarray:
        """Solid angle of the pixels at given positions.

        Parameters
        ----------
        x, y : array_like
            Zero-based pixel coordinates, broadcastable.

        Returns
        -------
        ndarray of float64
            ``|det J|`` of the forward transform (central differences of half a pixel
            on the sphere), in steradians per pixel; NaN where the WCS is undefined.
        """
        x, y = np.broadcast_arrays(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
        h = 0.5
        xf, yf = x.ravel(), y.ravel()
        ra, dec = self.pixel_to_world(
            np.concatenate((xf + h, xf - h, xf, xf)), np.concatenate((yf, yf, yf + h, yf - h))
        )
        p = _radec_to_xyz(ra, dec).reshape(4, -1, 3)
        dx = (p[0] - p[1]) / (2 * h)
        dy = (p[2] - p[3]) / (2 * h)
        return np.linalg.norm(np.cross(dx, dy), axis=1).reshape(x.shape)

    # ----------------------------------------------------------------------------- inverse

    def _own_inverse(self, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel positions through the wrapped WCS's own inverse.

        Parameters
        ----------
        ra, dec : ndarray
            Degrees, same shape.

        Returns
        -------
        x, y : ndarray
            Pixel positions, the shape of ``ra``.

        Raises
        ------
        ValueError
            If the wrapped WCS raises; the message names the image.
        """
        world = (ra, dec) if self.lon_axis == 0 else (dec, ra)
        try:
            if self.kind == "fitswcs":
                p = self.wcs.all_world2pix(*world, 0, tolerance=1e-6, maxiter=50)
            elif self.kind == "gwcs":
                if self.transforms is not None:
                    p = self.transforms.backward(*world)
                else:
                    p = self.wcs.invert(*world, with_bounding_box=False)
            elif self.kind == "ape14":
                p = self.wcs.world_to_pixel_values(*world)
            else:
                p = self.wcs[1](ra, dec)
        except Exception as err:
            raise ValueError(
                f"the WCS of {self.name} failed to map world to pixel coordinates: {err}"
            ) from err
        x = np.array(np.broadcast_to(_values(p[0]), ra.shape), dtype=float)
        y = np.array(np.broadcast_to(_values(p[1]), ra.shape), dtype=float)
        return x, y

    def _newton(
        self, ra: np.ndarray, dec: np.ndarray, steps: int | None
    ) -> tuple[np.ndarray, np.ndarray, list[float]]:
        """Newton iterations on the forward transform.

        Starts from the fitted forward transform's inverse when it is closer than the
        wrapped WCS's own inverse (or there is no own inverse), and iterates
        ``p <- p - J(p)^-1 r(p)``, where ``r`` is the offset of the forward transform
        of ``p`` from the target in the plane tangent at the target (radians) and
        ``J`` its Jacobian by forward differences of ``_JACOBIAN_STEP`` pixels, both
        from one forward call per iteration.

        Parameters
        ----------
        ra, dec : ndarray
            Degrees, 1-D.
        steps : int or None
            Exactly this many steps for every point, or (None) until every point's
            step is below ``_NEWTON_STEP`` pixels, at most ``_NEWTON_MAXITER``.

        Returns
        -------
        x, y : ndarray
            Pixel positions; NaN where the start is not finite, the Jacobian is
            singular or (``steps=None``) the iterations do not converge.
        history : list of float
            The largest step of each iteration, in pixels.
        """
        if self.fit is not None and not self.fit.error > self.inverse_error:
            x, y = self.fit.inverse(ra, dec)
        else:
            x, y = self._own_inverse(ra, dec)
        x, y = np.array(x, dtype=float), np.array(y, dtype=float)
        t = _radec_to_xyz(ra, dec)
        east, north = _tangent_basis(t)
        active = np.flatnonzero(np.isfinite(x) & np.isfinite(y) & np.isfinite(t).all(axis=1))
        bad = np.ones(len(x), dtype=bool)
        bad[active] = False
        h = _JACOBIAN_STEP
        history: list[float] = []
        for _ in range(_NEWTON_MAXITER if steps is None else steps):
            if active.size == 0:
                break
            xa, ya = x[active], y[active]
            lon, lat = self.pixel_to_world(
                np.concatenate((xa, xa + h, xa)), np.concatenate((ya, ya, ya + h))
            )
            p = _radec_to_xyz(lon, lat).reshape(3, active.size, 3)
            e, n = east[active], north[active]
            d = p[0] - t[active]
            r1 = np.einsum("ij,ij->i", d, e)
            r2 = np.einsum("ij,ij->i", d, n)
            gx = (p[1] - p[0]) / h
            gy = (p[2] - p[0]) / h
            a = np.einsum("ij,ij->i", gx, e)
            b = np.einsum("ij,ij->i", gy, e)
            c = np.einsum("ij,ij->i", gx, n)
            dd = np.einsum("ij,ij->i", gy, n)
            with np.errstate(divide="ignore", invalid="ignore"):
                det = a * dd - b * c
                sx = -(dd * r1 - b * r2) / det
                sy = -(a * r2 - c * r1) / det
            step = np.hypot(sx, sy)
            failed = ~np.isfinite(step)
            bad[active[failed]] = True
            ok = ~failed
            x[active[ok]] += sx[ok]
            y[active[ok]] += sy[ok]
            history.append(float(step[ok].max()) if ok.any() else math.nan)
            active = active[ok] if steps is not None else active[ok & (step > _NEWTON_STEP)]
        if steps is None:
            bad[active] = True  # not converged
        x[bad] = np.nan
        y[bad] = np.nan
        return x, y, history


def _values(a: Any) -> np.ndarray:
    """Return a float64 array of plain values (degrees if ``a`` is a Quantity).

    Parameters
    ----------
    a : array_like or astropy.units.Quantity
        Coordinates.

    Returns
    -------
    ndarray
        Float64 values.
    """
    if hasattr(a, "unit") and hasattr(a, "to_value"):
        unit = a.unit
        if unit is not None and unit.physical_type == "angle":
            return np.asarray(a.to_value("deg"), dtype=float)
        return np.asarray(a.value, dtype=float)
    return np.asarray(a, dtype=float)


def _wrap360(lon: np.ndarray) -> np.ndarray:
    """Wrap longitudes (degrees) to [0, 360).

    Parameters
    ----------
    lon : ndarray
        Longitudes in degrees.

    Returns
    -------
    ndarray
        A new float64 array in [0, 360) (NaN stays NaN).
    """
    out = np.mod(np.asarray(lon, dtype=float), 360.0)
    # np.mod(-1e-20, 360) rounds to 360.0
    return np.where(out >= 360.0, out - 360.0, out)


def _lon_axis_from_types(types: Any) -> int:
    """Index of the longitude axis from APE 14 world physical types.

    Parameters
    ----------
    types : sequence of str or None
        ``world_axis_physical_types`` of a two-axis celestial WCS.

    Returns
    -------
    int
        1 if the first world axis is a latitude (``*.dec`` / ``*.lat``), else 0.
    """
    try:
        first = str(types[0]).lower()
    except (TypeError, IndexError):
        return 0
    return 1 if first.endswith((".dec", ".lat")) else 0


def _is_callable_pair(obj: Any) -> bool:
    """Return True for a tuple or list of exactly two callables.

    Parameters
    ----------
    obj : object
        Candidate.

    Returns
    -------
    bool
        Whether ``obj`` is an ``(fwd, inv)`` pair.
    """
    return (
        isinstance(obj, tuple | list)
        and len(obj) == 2
        and callable(obj[0])
        and callable(obj[1])
    )


def as_wcs_adapter(
    wcs: Any, name: str | None = None, shape: Sequence[int] | None = None
) -> WCSAdapter:
    """Wrap a WCS (or a pair of callables) in a `WCSAdapter`.

    Parameters
    ----------
    wcs : astropy.wcs.WCS, gwcs.WCS, APE 14 low-level WCS, tuple of callables or WCSAdapter
        The image's WCS; see the module docstring for what each kind means. A
        `WCSAdapter` is returned unchanged when neither a new name nor a new shape is
        asked for.
    name : str, optional
        Name of the image in error messages; defaults to ``'image'``.
    shape : tuple of int, optional
        ``(ny, nx)`` of the image. When given, the WCS is checked on it: it must map
        the whole image (outline on the pixel edges and interior) to finite sky
        coordinates, and its inverse is measured and refined where it round-trips
        worse than ``INVERSE_TOLERANCE`` pixels (see the module docstring). An adapter
        already checked on this shape is not checked again.

    Returns
    -------
    WCSAdapter
        The adapter.

    Raises
    ------
    TypeError
        If ``wcs`` is None or not a supported kind of object.
    ValueError
        If the WCS does not have exactly two pixel and two world axes, or (with
        ``shape``) is not finite on the image or cannot be inverted on it to
        ``INVERSE_TOLERANCE`` even after refinement; the message names the image.

    Examples
    --------
    >>> from astropy.wcs import WCS
    >>> w = WCS(naxis=2)
    >>> w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    >>> w.wcs.crval = [10.0, -30.0]
    >>> w.wcs.crpix = [50.5, 50.5]
    >>> w.wcs.cdelt = [-1e-4, 1e-4]
    >>> ad = as_wcs_adapter(w, name="tile 3", shape=(100, 100))
    >>> ra, dec = ad.pixel_to_world([49.5], [49.5])
    >>> print(f"{ra[0]:.6f} {dec[0]:.6f}")
    10.000000 -30.000000
    >>> ad.refine
    False
    """
    adapter = _wrap(wcs, name)
    if shape is None:
        return adapter
    shape = (int(shape[0]), int(shape[1]))
    if adapter.shape == shape:
        return adapter
    return _checked(adapter, shape)


def _wrap(wcs: Any, name: str | None) -> WCSAdapter:
    """Build (or rename) an adapter without checking it.

    Parameters
    ----------
    wcs : object
        See `as_wcs_adapter`.
    name : str or None
        Image name.

    Returns
    -------
    WCSAdapter
        The adapter.
    """
    label = "image" if name is None else str(name)
    if isinstance(wcs, WCSAdapter):
        if name is None or name == wcs.name:
            return wcs
        return dataclasses.replace(wcs, name=label)
    if wcs is None:
        raise TypeError(f"{label} has no WCS (got None)")
    if _is_callable_pair(wcs):
        return WCSAdapter(label, "callables", tuple(wcs), 0)
    obj = wcs
    if not hasattr(obj, "pixel_to_world_values") and hasattr(obj, "low_level_wcs"):
        obj = obj.low_level_wcs
    if not (hasattr(obj, "pixel_to_world_values") and hasattr(obj, "world_to_pixel_values")):
        raise TypeError(
            f"the WCS of {label} is a {type(wcs).__name__}, not an APE 14 WCS "
            "(astropy.wcs.WCS, gwcs.WCS, an object with pixel_to_world_values and "
            "world_to_pixel_values) nor a pair of callables (fwd, inv)"
        )
    try:
        npix = int(obj.pixel_n_dim)
        nworld = int(obj.world_n_dim)
    except Exception as err:
        raise TypeError(f"the WCS of {label} does not describe its axes: {err}") from err
    if npix != 2 or nworld != 2:
        raise ValueError(
            f"the WCS of {label} must have 2 pixel and 2 world axes, "
            f"got {npix} and {nworld}"
        )
    try:
        types = obj.world_axis_physical_types
    except Exception:
        types = None
    lon_axis = _lon_axis_from_types(types)
    kind = _kind_of(obj)
    transforms = _gwcs_transforms(obj, label) if kind == "gwcs" else None
    return WCSAdapter(label, kind, obj, lon_axis, transforms,
                      straight=kind == "fitswcs" and _gnomonic_only(obj))


def _gnomonic_only(w: Any) -> bool:
    """Tell whether an astropy WCS is a plain gnomonic projection (see `WCSAdapter`).

    Both celestial axes ``TAN``, and none of SIP, the lookup-table distortions
    (``cpdis``, ``det2im``) or ``PV`` parameters (with which wcslib reads ``TAN`` as
    the ``TPV`` polynomial). A linear transformation (``PC``/``CD``) keeps lines
    straight.
    """
    try:
        prm = w.wcs
        return (
            prm.lng >= 0 and prm.lat >= 0
            and all(str(c).split("-")[-1] == "TAN" for c in prm.ctype)
            and w.sip is None and w.cpdis1 is None and w.cpdis2 is None
            and w.det2im1 is None and w.det2im2 is None
            and len(prm.get_pv()) == 0
        )
    except Exception:  # anything unexpected: not known to be straight
        return False


def _kind_of(obj: Any) -> str:
    """Choose how to call an APE 14 object.

    Parameters
    ----------
    obj : object
        A low-level WCS.

    Returns
    -------
    str
        ``'fitswcs'`` for `astropy.wcs.WCS` (direct ``all_pix2world`` /
        ``all_world2pix`` calls: no ``pixel_bounds`` NaNs, no convergence warnings),
        ``'gwcs'`` for gwcs-like objects (callable, ``invert``, ``forward_transform``),
        ``'ape14'`` otherwise.
    """
    from astropy.wcs import WCS

    if isinstance(obj, WCS):
        return "fitswcs"
    # (getattr_static: reading a gwcs's forward_transform composes its whole pipeline)
    if (callable(obj) and hasattr(obj, "invert")
            and inspect.getattr_static(obj, "forward_transform", None) is not None):
        return "gwcs"
    return "ape14"


class _Transforms:
    """A gwcs's forward transform, kept as its pipeline's steps, and its backward one.

    gwcs composes its pipeline into a new compound model on every access of
    ``forward_transform`` / ``backward_transform`` (about 1.4 ms for the four steps of
    a JWST NIRCam detector; the backward one also deep-copies the fitted inverses: 5 to
    30 ms), so the adapter keeps the steps' transforms and calls them leaf by leaf
    (`skyeq._flatmodel.FlatModel`: ~0.4 ms a call for a NIRCam detector, against 2.2
    through the composed model), once a model of their structure gave the same numbers
    so. The composed model is built only when needed (to judge a new structure, for the
    backward transform, or where the leaf-by-leaf call cannot run).

    Parameters
    ----------
    parts : tuple of astropy.modeling.Model
        The forward transform ``parts[0] | parts[1] | ...``.
    """

    __slots__ = ("_backward", "_built", "_flat", "parts")

    def __init__(self, parts: tuple[Any, ...]) -> None:
        self.parts = parts
        self._backward: Any = None
        self._built = False
        self._flat: FlatModel | None = None

    @property
    def flat(self) -> FlatModel:
        """The forward transform as a `FlatModel` (built on first use)."""
        if self._flat is None:
            self._flat = FlatModel(*self.parts)
        return self._flat

    @property
    def forward(self) -> Any:
        """The forward transform, composed."""
        return self.flat.model

    def call(self, x: np.ndarray, y: np.ndarray) -> Any:
        """Map 1-D pixel arrays of one length through the forward transform."""
        return self.flat(x, y)

    @property
    def backward(self) -> Any:
        """The backward transform, or None when the gwcs has no inverse."""
        if not self._built:
            try:
                self._backward = self.forward.inverse
            except NotImplementedError:
                self._backward = None
            self._built = True
        return self._backward

    def __getstate__(self) -> tuple[Any, Any, bool]:
        return self.parts, self._backward, self._built

    def __setstate__(self, state: tuple[Any, Any, bool]) -> None:
        self.parts, self._backward, self._built = state
        self._flat = None  # its closures do not pickle: rebuilt on first call


def _gwcs_transforms(obj: Any, label: str) -> _Transforms | None:
    """Keep a gwcs's transforms (see `_Transforms`).

    Parameters
    ----------
    obj : gwcs.WCS
        The gwcs.
    label : str
        Image name for messages.

    Returns
    -------
    _Transforms or None
        None when the transforms use units (the gwcs is then called, so that it
        converts them).

    Raises
    ------
    ValueError
        If the gwcs has no forward transform.
    """
    try:
        parts = _pipeline_parts(obj)
        if parts is None:
            fwd = obj.forward_transform
            parts = None if fwd is None else (fwd,)
    except Exception as err:
        raise ValueError(f"the gwcs of {label} has no forward transform: {err}") from err
    if parts is None:
        raise ValueError(f"the gwcs of {label} has no forward transform")
    if uses_quantity(*parts):
        return None
    return _Transforms(parts)


#: Where gwcs defines ``forward_transform`` as the ``|`` of its steps' transforms.
_GWCS_FORWARD = ("Pipeline.forward_transform", "WCS.forward_transform")


def _pipeline_parts(obj: Any) -> tuple[Any, ...] | None:
    """Return the transforms of a gwcs's pipeline steps (their ``|`` is its forward one).

    Only for a gwcs whose ``forward_transform`` is gwcs's own property (which composes
    the transforms of all steps but the last, in order); None otherwise (then the
    property is read).
    """
    prop = inspect.getattr_static(type(obj), "forward_transform", None)
    fget = getattr(prop, "fget", None)
    if (fget is None or not getattr(fget, "__module__", "").startswith("gwcs.")
            or getattr(fget, "__qualname__", "") not in _GWCS_FORWARD):
        return None
    steps = list(obj.pipeline)[:-1]
    parts = tuple(getattr(step, "transform", None) for step in steps)
    if not parts or any(p is None or not hasattr(p, "n_inputs") for p in parts):
        return None
    return parts


def _smallest_scale(gx: np.ndarray, gy: np.ndarray) -> float:
    """Smallest singular value of the forward Jacobians at some points.

    Parameters
    ----------
    gx, gy : ndarray, shape (m, 3)
        Derivatives of the unit vector along pixel x and pixel y (radians per pixel).

    Returns
    -------
    float
        The smallest ``sigma_min`` of the ``3 x 2`` matrices ``[gx gy]``: no pixel step
        of length 1 moves less than this on the sky (NaN if not finite).
    """
    a = np.einsum("ij,ij->i", gx, gx)
    b = np.einsum("ij,ij->i", gx, gy)
    c = np.einsum("ij,ij->i", gy, gy)
    # smaller eigenvalue of [[a, b], [b, c]]
    lam = 0.5 * (a + c) - np.sqrt(0.25 * (a - c) ** 2 + b * b)
    return float(np.sqrt(max(float(lam.min()), 0.0))) if lam.size else math.nan


@functools.lru_cache(maxsize=64)
def _check_points(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, slice, slice]:
    """Pixel positions on which an image's WCS is checked (cached per shape, read-only).

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)``.

    Returns
    -------
    x, y : ndarray
        The outline on the pixel edges (``_CHECK_EDGE`` points per side), an interior
        grid of ``_CHECK_GRID`` x ``_CHECK_GRID`` pixel centres spanning the image, and
        the centres of that grid's cells.
    grid, cells : slice
        Where the interior grid and the cell centres are.
    """
    ny, nx = shape
    ex = np.linspace(-0.5, nx - 0.5, _CHECK_EDGE)
    ey = np.linspace(-0.5, ny - 0.5, _CHECK_EDGE)
    lo_x, hi_x = np.full(_CHECK_EDGE, -0.5), np.full(_CHECK_EDGE, nx - 0.5)
    lo_y, hi_y = np.full(_CHECK_EDGE, -0.5), np.full(_CHECK_EDGE, ny - 0.5)
    gx1 = np.linspace(0.0, nx - 1.0, _CHECK_GRID)
    gy1 = np.linspace(0.0, ny - 1.0, _CHECK_GRID)
    gx, gy = np.meshgrid(gx1, gy1)
    cx, cy = np.meshgrid((gx1[1:] + gx1[:-1]) / 2, (gy1[1:] + gy1[:-1]) / 2)
    x = np.concatenate((ex, hi_x, ex, lo_x, gx.ravel(), cx.ravel()))
    y = np.concatenate((lo_y, ey, hi_y, ey, gy.ravel(), cy.ravel()))
    g0 = 4 * _CHECK_EDGE
    g1 = g0 + _CHECK_GRID**2
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y, slice(g0, g1), slice(g1, len(x))


def _round_trip_error(
    x: np.ndarray,
    y: np.ndarray,
    ra: np.ndarray,
    dec: np.ndarray,
    inverse: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
) -> tuple[float, int]:
    """Largest pixel error of an inverse on known (pixel, sky) pairs, and where.

    Parameters
    ----------
    x, y, ra, dec : ndarray
        Pixel positions and their forward-transformed sky coordinates.
    inverse : callable
        ``inverse(ra, dec) -> (x, y)``.

    Returns
    -------
    worst : float
        Largest distance in pixels (inf where a result is not finite).
    k : int
        Index of that point.
    """
    xb, yb = inverse(ra, dec)
    err = np.hypot(np.asarray(xb) - x, np.asarray(yb) - y)
    err = np.where(np.isfinite(err), err, np.inf)
    k = int(np.argmax(err))
    return float(err[k]), k


def _calibrated_steps(history: list[float]) -> tuple[int, float]:
    """Choose the number of Newton steps of later calls from a converged run.

    Later calls run a fixed number of steps, one forward call each and no convergence
    test: the fewest after which the steps still to come added up to less than
    `_CALIBRATED` pixels on every check point.

    Parameters
    ----------
    history : list of float
        The largest step of each iteration of the converged run (pixels; NaN when
        every point failed).

    Returns
    -------
    steps : int
        At least 1.
    rest : float
        What those steps leave undone at most (pixels): the sum of the later steps.
    """
    tail = np.cumsum(np.nan_to_num(history[::-1], nan=np.inf))[::-1]
    for steps in range(1, len(history)):
        if tail[steps] < _CALIBRATED:
            return steps, float(tail[steps])
    return max(len(history), 1), 0.0


def _checked(adapter: WCSAdapter, shape: tuple[int, int]) -> WCSAdapter:
    """Check an adapter on an image and choose how it inverts (see `WCSAdapter.inverse`).

    One forward call maps the check points (`_check_points`) and the interior grid
    moved by half a pixel along each axis (for the pixel scale). Then, in order:

    1. a gwcs whose forward transform a polynomial reproduces to `_FIT_TOLERANCE`
       pixels inverts through that polynomial (each gwcs call costs milliseconds and
       its backward transform is not even built);
    2. an own inverse that round-trips to ``INVERSE_TOLERANCE`` is used as it is;
    3. otherwise the fitted polynomial if it is good enough, else Newton iterations on
       the forward transform, with a number of steps calibrated here.

    Parameters
    ----------
    adapter : WCSAdapter
        Unchecked (or checked on another shape).
    shape : tuple of int
        ``(ny, nx)``, positive.

    Returns
    -------
    WCSAdapter
        A copy with ``shape``, ``inverse``, ``inverse_error``, ``fit``,
        ``pixel_scale`` and ``newton_steps`` set.

    Raises
    ------
    ValueError
        If the forward transform is not finite on the image or is degenerate, the
        wrapped inverse raises or is not finite, or no inverse reaches
        ``INVERSE_TOLERANCE`` on the check points; the message names the image.
    """
    ny, nx = shape
    if ny <= 0 or nx <= 0:
        raise ValueError(f"the shape of {adapter.name} must be two positive integers, "
                         f"got {shape!r}")
    x, y, grid, _ = _check_points(shape)
    h = 0.5
    lon, lat = adapter.pixel_to_world(
        np.concatenate((x, x[grid] + h, x[grid])), np.concatenate((y, y[grid], y[grid] + h))
    )
    if not (np.all(np.isfinite(lon)) and np.all(np.isfinite(lat))):
        k = int(np.argmin(np.isfinite(lon) & np.isfinite(lat))) % len(x)
        raise ValueError(
            f"the WCS of {adapter.name} gives non-finite sky coordinates on the image "
            f"(at pixel ({x[k]:.1f}, {y[k]:.1f}); is the WCS defined up to the detector "
            "edges?)"
        )
    ra, dec = lon[: len(x)], lat[: len(x)]
    m = _CHECK_GRID**2
    g = _radec_to_xyz(np.concatenate((lon[grid], lon[len(x) :])),
                      np.concatenate((lat[grid], lat[len(x) :])))
    scale = _smallest_scale((g[m : 2 * m] - g[:m]) / h, (g[2 * m :] - g[:m]) / h)
    if not scale > 0:
        raise ValueError(
            f"the WCS of {adapter.name} is degenerate on the image (a pixel covers no sky)"
        )
    # the outer pixel corners: first and last point of the bottom edge, last of the
    # right edge, first of the top edge (`_check_points`)
    k = [0, _CHECK_EDGE - 1, 2 * _CHECK_EDGE - 1, 2 * _CHECK_EDGE]
    corners = (ra[k], dec[k])
    for a in corners:
        a.setflags(write=False)
    base = dataclasses.replace(adapter, shape=shape, inverse="own", inverse_error=math.nan,
                               fit=None, pixel_scale=scale, newton_steps=0, corners=corners)

    def fitted() -> _ForwardFit | None:
        return _ForwardFit.fit(shape, _radec_to_xyz(ra, dec), scale)

    fit = fitted() if adapter.kind == "gwcs" else None
    own_error = math.nan
    if fit is None or fit.error > _FIT_TOLERANCE:
        if base.has_inverse:
            # a plain gnomonic projection inverts analytically (wcslib): its round trip
            # is measured on the outline only (the first points), not the interior too
            n = 4 * _CHECK_EDGE if adapter.straight else len(x)
            own_error, k = _round_trip_error(x[:n], y[:n], ra[:n], dec[:n], base._own_inverse)
            if not np.isfinite(own_error):
                raise ValueError(
                    f"the WCS of {adapter.name} cannot be inverted on the image (world -> "
                    f"pixel gives non-finite values, e.g. at pixel ({x[k]:.1f}, "
                    f"{y[k]:.1f}))"
                )
            if own_error <= INVERSE_TOLERANCE:
                return dataclasses.replace(base, inverse_error=own_error)
        fit = fit or fitted()
    base = dataclasses.replace(base, inverse_error=own_error, fit=fit)
    if fit is not None and fit.error <= _FIT_TOLERANCE:
        out = dataclasses.replace(base, inverse="fitted")
        worst, k = _round_trip_error(x, y, ra, dec, fit.inverse)
        how = f"a degree-{fit.degree} polynomial fitted to its forward transform"
    else:
        out = dataclasses.replace(base, inverse="newton")
        history: list[float] = []

        def converged(r: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            xr, yr, hist = out._newton(r, d, None)
            history.extend(hist)
            return xr, yr

        worst, k = _round_trip_error(x, y, ra, dec, converged)
        steps, rest = _calibrated_steps(history)
        out = dataclasses.replace(out, newton_steps=steps)
        worst += rest
        how = "Newton iterations on its forward transform"
    if not worst <= INVERSE_TOLERANCE:
        start = (
            f"its own inverse misses by {own_error:.3g} pixels" if np.isfinite(own_error)
            else "it has no usable inverse"
        )
        raise ValueError(
            f"the WCS of {adapter.name} cannot be inverted on the image: {start} and "
            f"{how} still miss by {worst:.3g} pixels at pixel ({x[k]:.1f}, {y[k]:.1f}) "
            f"(tolerance {INVERSE_TOLERANCE} pixels)"
        )
    if np.isfinite(own_error):
        log.info(
            "the WCS of %s: its inverse round-trips to %.2g pixels on the image; "
            "inverting by %s instead (%.1g pixels)", adapter.name, own_error, how, worst,
        )
    else:
        log.debug("the WCS of %s: inverting by %s (%.1g pixels)", adapter.name, how, worst)
    return out


def _callable_pair(adapter: WCSAdapter) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """Return ``(fwd, inv)`` callables of an adapter, stcal style.

    Parameters
    ----------
    adapter : WCSAdapter
        The adapter.

    Returns
    -------
    fwd, inv : callable
        ``fwd(x, y, with_bounding_box=False) -> (ra, dec)`` and
        ``inv(ra, dec, with_bounding_box=False) -> (x, y)`` (the keyword is accepted
        and ignored), as the reference implementation expects.
    """

    def fwd(x: Any, y: Any, with_bounding_box: bool = False) -> tuple[np.ndarray, np.ndarray]:
        return adapter.pixel_to_world(x, y)

    def inv(ra: Any, dec: Any, with_bounding_box: bool = False) -> tuple[np.ndarray, np.ndarray]:
        return adapter.world_to_pixel(ra, dec)

    return fwd, inv
