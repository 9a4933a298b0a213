"""Seeded synthetic mosaics with known skies.

Every builder returns a :class:`Mosaic`: images, one WCS per image (TAN for the
layouts, any for :func:`on_wcs`), and the true additive sky level of each image.
Sources are defined on the sky (RA/Dec, sizes in arcsec) and rendered into each image
through that image's WCS, so a source appears at the same sky position in every image
that covers it. Images are built as

``data = sky + sources + Gaussian noise``

plus, on request, cosmic-ray-like hits, NaN pixels and a flagged border (see
`dq_fraction`). Everything random comes from ``numpy.random.default_rng(seed)`` split
into independent streams (layout, skies, sources, one per image); the global numpy
random state is never used, so the same arguments always give identical arrays.

Layouts: :func:`tile_grid` (a grid of tiles with a fractional overlap),
:func:`dithers` (one pointing with small offsets and rotations), :func:`exposures`
(several dithered exposures of a multi-detector instrument, one sky per exposure),
:func:`disjoint` (separate tile grids that do not overlap each other) and
:func:`constant_mosaic` (noise-free images equal to their sky, for exact tables).
:func:`on_wcs` draws the same kind of images on WCSs you give (a real instrument's
distorted WCS, say), and :func:`repoint` makes dithered copies of one WCS.

DQ bits follow the JWST convention: ``DO_NOT_USE`` = 1, ``JUMP_DET`` = 4,
``OUTLIER`` = 16, ``NON_SCIENCE`` = 512.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from astropy.wcs import WCS

from ._records import JWST_DQ_FLAGS
from .wcs import WCSAdapter, _radec_to_xyz, _tangent_basis, as_wcs_adapter

__all__ = [
    "Mosaic",
    "add_nebula",
    "constant_mosaic",
    "disjoint",
    "dithers",
    "exposures",
    "on_wcs",
    "repoint",
    "tile_grid",
]

_log = logging.getLogger(__name__)

# JWST DQ bits used here (one-bit values).
_DO_NOT_USE = JWST_DQ_FLAGS["DO_NOT_USE"]
_JUMP_DET = JWST_DQ_FLAGS["JUMP_DET"]
_OUTLIER = JWST_DQ_FLAGS["OUTLIER"]
_NON_SCIENCE = JWST_DQ_FLAGS["NON_SCIENCE"]
# Width in pixels of the NON_SCIENCE border (the left columns, like JWST reference pixels).
_BORDER = 4

_ARCSEC_PER_RAD = 180.0 * 3600.0 / math.pi

_SOURCE_DTYPE = np.dtype(
    [
        ("ra", "f8"),
        ("dec", "f8"),
        ("peak", "f8"),
        ("sigma_major", "f8"),
        ("sigma_minor", "f8"),
        ("pa", "f8"),
        ("extended", "?"),
    ]
)

_F = TypeVar("_F", bound=Callable[..., Any])

_COMMON_DOC = """\
    seed : int or None, optional
        Seed of ``numpy.random.default_rng``. The default 0 makes the mosaic reproducible;
        None draws fresh entropy. The global numpy random state is never used.
    sky : float or array_like, optional
        True sky levels: one per group when the layout has groups (:func:`exposures`),
        else one per image; a scalar is used for all. Default None draws them uniformly
        from `sky_range`.
    sky_range : (float, float), optional
        Range of the uniformly drawn skies when `sky` is None. Default (100, 120).
    noise : float or (float, float), optional
        Gaussian noise sigma per pixel. A pair draws each image's sigma uniformly in that
        range. Default 1.0; 0 gives noise-free images.
    pixel_scale : float, optional
        Pixel size in arcsec. Default 0.1.
    ra, dec : float, optional
        Mosaic centre in degrees. Default 150.0, 2.0. Any position works, RA near 0 and
        the poles included.
    rotation : float, optional
        Rotation of the whole layout on the sky in degrees (the position angle of the
        images' y axis, east of north). Default 0.
    point_sources : int, optional
        Number of compact sources over the mosaic: round Gaussians with sigma 1 to 1.5
        pixels and peaks log-uniform between 1 and 100 times `source_flux`. Default 300.
    extended_sources : int, optional
        Number of large smooth elliptical Gaussian blobs mimicking diffuse emission:
        sigma 2 % to 10 % of the smaller image side, axis ratio 0.4 to 1, peaks 0.05 to
        0.3 times `source_flux`. Default 5.
    source_flux : float, optional
        Peak surface-brightness scale of the sources, in data units. Default 10.0.
    dq_fraction : float or None, optional
        None (default) gives no DQ arrays (``Mosaic.dq`` is None). A number builds
        uint32 DQ arrays: the 4 leftmost columns are NON_SCIENCE with value
        0, and about this fraction of the pixels is flagged at random: half are
        cosmic-ray-like hits (value raised by 30 to 1000 noise sigma, DQ
        ``DO_NOT_USE | OUTLIER``), a quarter are NaN (DQ ``DO_NOT_USE``) and a quarter
        are harmless ``JUMP_DET`` flags on unchanged pixels.
    dtype : data-type, optional
        Floating-point type of the images. Default float32."""


def _common_doc(func: _F) -> _F:
    """Insert the shared keyword-argument text into a builder's docstring.

    Parameters
    ----------
    func : callable
        A builder whose docstring contains the marker ``{common}``.

    Returns
    -------
    callable
        The same function, docstring filled in.
    """
    if func.__doc__ is not None:
        func.__doc__ = func.__doc__.replace("    {common}", _COMMON_DOC)
    return func


@dataclass(eq=False, repr=False)
class Mosaic:
    """A synthetic mosaic: images, their WCS and the truth they were built from.

    Parameters
    ----------
    data : list of numpy.ndarray
        2-D images (surface brightness, the requested dtype).
    wcs : list
        One WCS per image: a TAN `astropy.wcs.WCS` with ``pixel_shape`` set for the
        layout builders (pixel coordinates zero-based as in astropy's
        ``pixel_to_world_values``), the given objects for :func:`on_wcs`.
    sky : numpy.ndarray
        ``(n,)`` float64: the true additive sky level of each image. Images of one group
        share one value.
    groups : numpy.ndarray or None
        ``(n,)`` int group ids (0, 1, ...), or None when every image is its own group.
    dq : list of numpy.ndarray or None
        uint32 DQ arrays with JWST bits, or None when none were requested.
    names : list of str
        One name per image, e.g. ``"tile_r0_c1"``, ``"dither_03"``, ``"exp2_det1"``.
    noise : numpy.ndarray
        ``(n,)`` float64 Gaussian noise sigma of each image.
    sources : numpy.ndarray
        Structured array of the sources, one row each: ``ra``, ``dec`` (degrees),
        ``peak`` (data units), ``sigma_major``, ``sigma_minor`` (arcsec), ``pa`` (degrees
        east of north) and ``extended`` (bool).

    Examples
    --------
    >>> from skyeq.synthetic import tile_grid
    >>> m = tile_grid(2, 2, shape=(64, 48), seed=1)
    >>> m
    Mosaic(n=4, shapes={(64, 48)}, dtype=float32, groups=None, dq=False, sources=305)
    >>> m.names
    ['tile_r0_c0', 'tile_r0_c1', 'tile_r1_c0', 'tile_r1_c1']
    >>> m.sky.round(2)
    array([101.73, 114.27, 119.88, 107.21])
    """

    data: list[np.ndarray]
    wcs: list[Any]
    sky: np.ndarray
    groups: np.ndarray | None
    dq: list[np.ndarray] | None
    names: list[str]
    noise: np.ndarray
    sources: np.ndarray

    def __len__(self) -> int:
        return len(self.data)

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """The ``(ny, nx)`` shape of every image, as a list of int pairs."""
        return [tuple(int(s) for s in a.shape) for a in self.data]

    def __repr__(self) -> str:
        dtypes = sorted({a.dtype.name for a in self.data}) or ["-"]
        return (
            f"Mosaic(n={len(self)}, shapes={set(self.shapes)}, dtype={','.join(dtypes)}, "
            f"groups={None if self.groups is None else int(self.groups.max()) + 1}, "
            f"dq={self.dq is not None}, sources={len(self.sources)})"
        )


# --------------------------------------------------------------------------- geometry


def _plane_wcs(ra: float, dec: float, pixel_scale: float, rotation: float) -> WCS:
    """Return the mosaic's tangent-plane frame as a TAN WCS.

    Parameters
    ----------
    ra, dec : float
        Tangent point (the mosaic centre) in degrees; it is zero-based pixel (0, 0).
    pixel_scale : float
        Pixel size in arcsec.
    rotation : float
        Position angle of the +y axis in degrees east of north (as HST's ORIENTAT).

    Returns
    -------
    astropy.wcs.WCS
        The frame in which layouts place their images, in pixels.
    """
    s = pixel_scale / 3600.0
    t = math.radians(rotation)
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.cunit = ["deg", "deg"]
    w.wcs.radesys = "ICRS"
    w.wcs.crval = [ra % 360.0, dec]
    w.wcs.crpix = [1.0, 1.0]
    w.wcs.cdelt = [-s, s]
    # With CDELT1 = -CDELT2 this turns +y from north towards east by `rotation`.
    w.wcs.pc = [[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]]
    w.wcs.set()
    return w


def _image_wcs(
    plane: WCS, centre: np.ndarray, angle: float, shape: tuple[int, int], pixel_scale: float
) -> WCS:
    """Build an image's own TAN WCS from its placement in the mosaic plane.

    The image's tangent point is its centre; its CD matrix is the image->plane rotation
    composed with the Jacobian between the plane and the image's own tangent plane, so
    the image maps onto its placement exactly to first order (the second-order
    difference between two gnomonic planes is far below a pixel for any real mosaic).

    Parameters
    ----------
    plane : astropy.wcs.WCS
        The mosaic frame from `_plane_wcs`.
    centre : numpy.ndarray
        ``(2,)`` position of the image centre in the plane, in plane pixels.
    angle : float
        Rotation of the image's axes relative to the plane's, degrees.
    shape : (int, int)
        ``(ny, nx)`` of the image.
    pixel_scale : float
        Pixel size in arcsec.

    Returns
    -------
    astropy.wcs.WCS
        The image's WCS, with ``pixel_shape`` set.
    """
    ny, nx = shape
    crval = plane.wcs_pix2world(centre[None, :], 0)[0]
    # Unit frame at the image's tangent point: pixel coordinates (origin 1) are the
    # intermediate world coordinates in degrees.
    unit = WCS(naxis=2)
    unit.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    unit.wcs.crval = crval
    unit.wcs.crpix = [0.0, 0.0]
    unit.wcs.cdelt = [1.0, 1.0]
    unit.wcs.set()
    h = 10.0
    steps = np.array([[h, 0.0], [-h, 0.0], [0.0, h], [0.0, -h]])
    iwc = unit.wcs_world2pix(plane.wcs_pix2world(centre[None, :] + steps, 0), 1)
    jac = np.column_stack([(iwc[0] - iwc[1]) / (2 * h), (iwc[2] - iwc[3]) / (2 * h)])
    a = math.radians(angle)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    cd = jac @ rot
    s = pixel_scale / 3600.0
    cdelt = np.array([-s, s])
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.cunit = ["deg", "deg"]
    w.wcs.radesys = "ICRS"
    w.wcs.crval = crval
    w.wcs.crpix = [(nx + 1) / 2.0, (ny + 1) / 2.0]
    w.wcs.cdelt = cdelt
    w.wcs.pc = cd / cdelt[:, None]
    w.wcs.set()
    w.pixel_shape = (nx, ny)
    return w


def _offset(
    ra: np.ndarray, dec: np.ndarray, east: np.ndarray | float, north: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray]:
    """Move positions by tangent-plane offsets (gnomonic deprojection).

    Works at any position, the poles included (there "north" follows the meridian of
    the given RA).

    Parameters
    ----------
    ra, dec : numpy.ndarray
        Positions in degrees.
    east, north : numpy.ndarray or float
        Offsets in arcsec in the tangent plane at each position.

    Returns
    -------
    ra, dec : numpy.ndarray
        The offset positions in degrees, RA in [0, 360).
    """
    a = np.radians(ra)
    d = np.radians(dec)
    ca, sa, cd, sd = np.cos(a), np.sin(a), np.cos(d), np.sin(d)
    x = np.asarray(east, dtype=np.float64) / _ARCSEC_PER_RAD
    y = np.asarray(north, dtype=np.float64) / _ARCSEC_PER_RAD
    vx = cd * ca - x * sa - y * sd * ca
    vy = cd * sa + x * ca - y * sd * sa
    vz = sd + y * cd
    return (
        np.degrees(np.arctan2(vy, vx)) % 360.0,
        np.degrees(np.arctan2(vz, np.hypot(vx, vy))),
    )


# --------------------------------------------------------------------------- sources


def _draw_sources(
    rng: np.random.Generator,
    plane: WCS,
    box: tuple[float, float, float, float],
    n_point: int,
    n_ext: int,
    pixel_scale: float,
    min_side: int,
    source_flux: float,
) -> np.ndarray:
    """Draw a source catalogue uniformly over a box of the mosaic plane.

    Parameters
    ----------
    rng : numpy.random.Generator
        The sources' random stream.
    plane : astropy.wcs.WCS
        The mosaic frame.
    box : (float, float, float, float)
        ``xmin, xmax, ymin, ymax`` in plane pixels.
    n_point, n_ext : int
        Numbers of compact and extended sources.
    pixel_scale : float
        Pixel size in arcsec.
    min_side : int
        Smaller image side in pixels (sets the extended sizes).
    source_flux : float
        Peak scale in data units.

    Returns
    -------
    numpy.ndarray
        Structured array with the fields of ``Mosaic.sources``.
    """
    n = n_point + n_ext
    cat = np.zeros(n, dtype=_SOURCE_DTYPE)
    if n == 0:
        return cat
    xmin, xmax, ymin, ymax = box
    xy = np.column_stack([rng.uniform(xmin, xmax, n), rng.uniform(ymin, ymax, n)])
    world = plane.wcs_pix2world(xy, 0)
    cat["ra"] = world[:, 0] % 360.0
    cat["dec"] = world[:, 1]
    pt = slice(0, n_point)
    sig = rng.uniform(1.0, 1.5, n_point) * pixel_scale
    cat["sigma_major"][pt] = sig
    cat["sigma_minor"][pt] = sig
    cat["peak"][pt] = source_flux * 10.0 ** rng.uniform(0.0, 2.0, n_point)
    ex = slice(n_point, n)
    major = np.exp(rng.uniform(math.log(0.02), math.log(0.1), n_ext)) * min_side * pixel_scale
    cat["sigma_major"][ex] = major
    cat["sigma_minor"][ex] = major * rng.uniform(0.4, 1.0, n_ext)
    cat["pa"][ex] = rng.uniform(0.0, 180.0, n_ext)
    cat["peak"][ex] = source_flux * rng.uniform(0.05, 0.3, n_ext)
    cat["extended"][ex] = True
    return cat


def _render_sources(
    image: np.ndarray, wcs: WCSAdapter, cat: np.ndarray, pixel_scale: float, eps: float
) -> int:
    """Add the sources that touch an image, each in its own pixel stamp.

    Each source is an elliptical Gaussian on the sky, sampled at pixel centres. Its
    sky-plane covariance is carried into the image through the local Jacobian of the
    image's WCS at the source, and it is cut where it falls below `eps` (a cut defined
    on the sky, so it is the same in every image).

    Parameters
    ----------
    image : numpy.ndarray
        2-D image, modified in place.
    wcs : skyeq.wcs.WCSAdapter
        The image's WCS, checked on the image.
    cat : numpy.ndarray
        Source catalogue (``Mosaic.sources`` layout).
    pixel_scale : float
        Pixel size in arcsec (the finite-difference step of the Jacobian).
    eps : float
        Surface brightness below which a profile is cut, data units.

    Returns
    -------
    int
        Number of sources rendered.
    """
    keep = cat["peak"] > eps
    cat = cat[keep]
    n = len(cat)
    if n == 0:
        return 0
    ny, nx = image.shape
    d = pixel_scale
    ra = np.tile(cat["ra"], 5)
    dec = np.tile(cat["dec"], 5)
    east = np.concatenate([np.zeros(n), [d] * n, [-d] * n, np.zeros(2 * n)])
    north = np.concatenate([np.zeros(3 * n), [d] * n, [-d] * n])
    ra, dec = _offset(ra, dec, east, north)
    px, py = wcs.world_to_pixel(ra, dec)
    px = px.reshape(5, n)
    py = py.reshape(5, n)
    # Jacobian d(pixel)/d(east, north arcsec), per source: [[a, b], [c, e]].
    ja = (px[1] - px[2]) / (2 * d)
    jb = (px[3] - px[4]) / (2 * d)
    jc = (py[1] - py[2]) / (2 * d)
    je = (py[3] - py[4]) / (2 * d)
    pa = np.radians(cat["pa"])
    ue, un = np.sin(pa), np.cos(pa)  # major axis (east, north)
    s1 = cat["sigma_major"] ** 2
    s2 = cat["sigma_minor"] ** 2
    cee = s1 * ue * ue + s2 * un * un
    cen = (s1 - s2) * ue * un
    cnn = s1 * un * un + s2 * ue * ue
    # Pixel covariance J C J^T.
    cxx = ja * ja * cee + 2 * ja * jb * cen + jb * jb * cnn
    cxy = ja * jc * cee + (ja * je + jb * jc) * cen + jb * je * cnn
    cyy = jc * jc * cee + 2 * jc * je * cen + je * je * cnn
    qmax = 2.0 * np.log(cat["peak"] / eps)
    x0, y0 = px[0], py[0]
    hx = np.sqrt(qmax * cxx)
    hy = np.sqrt(qmax * cyy)
    with np.errstate(invalid="ignore"):
        ix0 = np.maximum(np.ceil(x0 - hx), 0)
        ix1 = np.minimum(np.floor(x0 + hx), nx - 1)
        iy0 = np.maximum(np.ceil(y0 - hy), 0)
        iy1 = np.minimum(np.floor(y0 + hy), ny - 1)
        hit = np.flatnonzero((ix0 <= ix1) & (iy0 <= iy1))
    det = cxx * cyy - cxy * cxy
    for k in hit:
        ia, ib, ja0, jb0 = int(ix0[k]), int(ix1[k]), int(iy0[k]), int(iy1[k])
        dx = np.arange(ia, ib + 1) - x0[k]
        dy = np.arange(ja0, jb0 + 1) - y0[k]
        # Inverse covariance [[p, r], [r, t]].
        p, r, t = cyy[k] / det[k], -cxy[k] / det[k], cxx[k] / det[k]
        q = dy[:, None] * (2.0 * r * dx)[None, :]
        q += (p * dx * dx)[None, :]
        q += (t * dy * dy)[:, None]
        val = np.exp(-0.5 * q)
        val *= cat["peak"][k]
        val[q > qmax[k]] = 0.0
        image[ja0 : jb0 + 1, ia : ib + 1] += val
    return len(hit)


# --------------------------------------------------------------------------- assembly


@dataclass
class _Layout:
    """Image placements in the mosaic plane, as produced by a layout function.

    Parameters
    ----------
    centres : numpy.ndarray
        ``(n, 2)`` image centres in plane pixels.
    angles : numpy.ndarray
        ``(n,)`` rotation of each image relative to the plane axes, degrees.
    shapes : list of (int, int)
        ``(ny, nx)`` of each image.
    names : list of str
        Image names.
    groups : numpy.ndarray or None
        ``(n,)`` group ids or None.
    """

    centres: np.ndarray
    angles: np.ndarray
    shapes: list[tuple[int, int]]
    names: list[str]
    groups: np.ndarray | None = None


def _streams(seed: int | None) -> tuple[np.random.Generator, np.random.SeedSequence]:
    """Split a seed into the layout generator and the seed sequence of the rest.

    Parameters
    ----------
    seed : int or None
        User seed.

    Returns
    -------
    layout_rng : numpy.random.Generator
        Stream for the layout (dither offsets, rotation jitter).
    rest : numpy.random.SeedSequence
        Parent of the sky, source and per-image streams.
    """
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0
    ):
        raise ValueError(f"seed must be a non-negative int or None, got {seed!r}")
    lay, rest = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(lay), rest


def _shape(shape: Sequence[int]) -> tuple[int, int]:
    """Validate an image shape.

    Parameters
    ----------
    shape : sequence of int
        ``(ny, nx)``.

    Returns
    -------
    (int, int)
        The validated shape.
    """
    try:
        ny, nx = (int(v) for v in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be (ny, nx), got {shape!r}") from None
    if ny < 1 or nx < 1:
        raise ValueError(f"shape must be positive, got {shape!r}")
    return ny, nx


def _grid(nrow: int, ncol: int, shape: tuple[int, int], overlap: float) -> np.ndarray:
    """Centres of a tile grid around (0, 0), row-major, row 0 at the bottom.

    Parameters
    ----------
    nrow, ncol : int
        Grid size.
    shape : (int, int)
        Tile ``(ny, nx)``.
    overlap : float
        Fractional overlap of neighbouring tiles.

    Returns
    -------
    numpy.ndarray
        ``(nrow * ncol, 2)`` centres in plane pixels.
    """
    if int(nrow) < 1 or int(ncol) < 1:
        raise ValueError(f"nrow and ncol must be >= 1, got {nrow!r}, {ncol!r}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap!r}")
    ny, nx = shape
    r, c = np.divmod(np.arange(nrow * ncol), ncol)
    step = 1.0 - overlap
    return np.column_stack(
        [(c - (ncol - 1) / 2.0) * step * nx, (r - (nrow - 1) / 2.0) * step * ny]
    )


def _rotate(xy: np.ndarray, angle: np.ndarray | float) -> np.ndarray:
    """Rotate points about the origin.

    Parameters
    ----------
    xy : numpy.ndarray
        ``(n, 2)`` points.
    angle : numpy.ndarray or float
        Angle(s) in degrees, counter-clockwise in pixel coordinates.

    Returns
    -------
    numpy.ndarray
        ``(n, 2)`` rotated points.
    """
    a = np.radians(angle)
    c, s = np.cos(a), np.sin(a)
    return np.column_stack([c * xy[:, 0] - s * xy[:, 1], s * xy[:, 0] + c * xy[:, 1]])


def _build(
    layout: _Layout,
    rest: np.random.SeedSequence,
    *,
    sky: float | Sequence[float] | np.ndarray | None,
    sky_range: tuple[float, float],
    noise: float | tuple[float, float],
    pixel_scale: float,
    ra: float,
    dec: float,
    rotation: float,
    point_sources: int,
    extended_sources: int,
    source_flux: float,
    dq_fraction: float | None,
    dtype: Any,
) -> Mosaic:
    """Turn a layout into a mosaic: WCS, skies, sources, noise and DQ.

    Parameters
    ----------
    layout : _Layout
        Image placements.
    rest : numpy.random.SeedSequence
        Parent of the sky, source and per-image random streams.
    sky, sky_range, noise, pixel_scale, ra, dec, rotation : see the public builders
        Shared keyword arguments.
    point_sources, extended_sources, source_flux, dq_fraction, dtype : see the builders
        Shared keyword arguments.

    Returns
    -------
    Mosaic
        The mosaic.
    """
    if not pixel_scale > 0:
        raise ValueError(f"pixel_scale must be > 0, got {pixel_scale!r}")
    if not -90.0 <= dec <= 90.0:
        raise ValueError(f"dec must be in [-90, 90], got {dec!r}")
    plane = _plane_wcs(ra, dec, pixel_scale, rotation)
    wcs_list = [
        _image_wcs(plane, c, a, s, pixel_scale)
        for c, a, s in zip(layout.centres, layout.angles, layout.shapes, strict=True)
    ]
    # Sources over the bounding box of all images in the plane, plus a 5 % margin.
    corners = []
    for c, a, (ny, nx) in zip(layout.centres, layout.angles, layout.shapes, strict=True):
        half = np.array([[-nx, -ny], [nx, -ny], [nx, ny], [-nx, ny]]) / 2.0
        corners.append(c + _rotate(half, a))
    return _render(
        wcs_list, layout, np.concatenate(corners), plane, pixel_scale, rest, sky=sky,
        sky_range=sky_range, noise=noise, point_sources=point_sources,
        extended_sources=extended_sources, source_flux=source_flux,
        dq_fraction=dq_fraction, dtype=dtype,
    )


def _render(
    wcs_list: list[Any],
    layout: _Layout,
    corners: np.ndarray,
    plane: WCS,
    pixel_scale: float,
    rest: np.random.SeedSequence,
    *,
    sky: float | Sequence[float] | np.ndarray | None,
    sky_range: tuple[float, float],
    noise: float | tuple[float, float],
    point_sources: int,
    extended_sources: int,
    source_flux: float,
    dq_fraction: float | None,
    dtype: Any,
    adapters: list[WCSAdapter] | None = None,
) -> Mosaic:
    """Draw skies, noise, sources and DQ into images of given WCSs.

    Parameters
    ----------
    wcs_list : list
        One WCS per image (anything `skyeq.wcs.as_wcs_adapter` accepts).
    layout : _Layout
        Shapes, names and groups of the images (placements unused).
    corners : numpy.ndarray
        ``(k, 2)`` image corners in plane pixels: sources are drawn over their bounding
        box plus a 5 % margin.
    plane : astropy.wcs.WCS
        The frame the sources are drawn in.
    pixel_scale : float
        Pixel size in arcsec (source sizes, Jacobian steps).
    rest : numpy.random.SeedSequence
        Parent of the sky, source and per-image random streams.
    sky, sky_range, noise : see the public builders
        Shared keyword arguments.
    point_sources, extended_sources, source_flux, dq_fraction, dtype : see the builders
        Shared keyword arguments.
    adapters : list of WCSAdapter, optional
        The WCSs already checked on their images (made here when not given).

    Returns
    -------
    Mosaic
        The mosaic.
    """
    t0 = time.perf_counter()
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(f"dtype must be a floating-point type, got {dtype}")
    if int(point_sources) < 0 or int(extended_sources) < 0:
        raise ValueError("point_sources and extended_sources must be >= 0")
    if not source_flux >= 0:
        raise ValueError(f"source_flux must be >= 0, got {source_flux!r}")
    if dq_fraction is not None and not 0.0 <= dq_fraction <= 1.0:
        raise ValueError(f"dq_fraction must be None or in [0, 1], got {dq_fraction!r}")
    n = len(layout.names)
    groups = layout.groups
    nunits = n if groups is None else int(groups.max()) + 1
    sky_ss, src_ss, img_ss = rest.spawn(3)
    sky_rng = np.random.default_rng(sky_ss)

    if sky is None:
        lo, hi = (float(v) for v in sky_range)
        if not lo <= hi:
            raise ValueError(f"sky_range must be (low, high) with low <= high, got {sky_range}")
        unit_sky = sky_rng.uniform(lo, hi, nunits)
    else:
        arr = np.asarray(sky, dtype=np.float64)
        if arr.ndim > 1 or (arr.ndim == 1 and arr.size != nunits):
            what = "groups" if groups is not None else "images"
            raise ValueError(f"sky must be a scalar or have one value per {what} ({nunits}), "
                             f"got shape {arr.shape}")
        unit_sky = np.broadcast_to(arr, (nunits,)).copy()
    skies = unit_sky if groups is None else unit_sky[groups]

    if np.ndim(noise) == 0:
        sigmas = np.full(n, float(noise))
    else:
        lo, hi = (float(v) for v in noise)
        if not lo <= hi:
            raise ValueError(f"noise range must be (low, high) with low <= high, got {noise!r}")
        sigmas = sky_rng.uniform(lo, hi, n)
    if np.any(~np.isfinite(sigmas)) or np.any(sigmas < 0):
        raise ValueError(f"noise must be >= 0, got {noise!r}")

    allc = corners
    (xmin, ymin), (xmax, ymax) = allc.min(axis=0), allc.max(axis=0)
    mx, my = 0.05 * (xmax - xmin), 0.05 * (ymax - ymin)
    min_side = min(min(s) for s in layout.shapes)
    cat = _draw_sources(
        np.random.default_rng(src_ss),
        plane,
        (xmin - mx, xmax + mx, ymin - my, ymax + my),
        int(point_sources),
        int(extended_sources),
        pixel_scale,
        min_side,
        float(source_flux),
    )
    pos = sigmas[sigmas > 0]
    eps = 1e-3 * float(pos.min()) if pos.size else 1e-6 * max(abs(float(source_flux)), 1e-30)

    work = dtype if dtype in (np.dtype(np.float32), np.dtype(np.float64)) else np.float32
    data: list[np.ndarray] = []
    dqs: list[np.ndarray] | None = None if dq_fraction is None else []
    nrendered = 0
    for i, iss in enumerate(img_ss.spawn(n)):
        rng = np.random.default_rng(iss)
        shape = layout.shapes[i]
        img = np.empty(shape, dtype=work)
        if sigmas[i] > 0:
            rng.standard_normal(out=img, dtype=work)
            img *= sigmas[i]
            img += skies[i]
        else:
            img.fill(skies[i])
        adapter = (adapters[i] if adapters is not None
                   else as_wcs_adapter(wcs_list[i], layout.names[i], shape=shape))
        nrendered += _render_sources(img, adapter, cat, pixel_scale, eps)
        if dqs is not None:
            dqs.append(_add_dq(img, rng, float(dq_fraction), sigmas[i]))
        data.append(img if img.dtype == dtype else img.astype(dtype))
    _log.debug(
        "built %d images (%d source stamps) in %.3f s", n, nrendered, time.perf_counter() - t0
    )
    return Mosaic(
        data=data,
        wcs=wcs_list,
        sky=np.asarray(skies, dtype=np.float64),
        groups=None if groups is None else np.asarray(groups, dtype=np.intp),
        dq=dqs,
        names=list(layout.names),
        noise=sigmas,
        sources=cat,
    )


def _add_dq(img: np.ndarray, rng: np.random.Generator, fraction: float, sigma: float) -> np.ndarray:
    """Flag pixels of an image and damage them accordingly.

    Parameters
    ----------
    img : numpy.ndarray
        2-D image, modified in place.
    rng : numpy.random.Generator
        The image's random stream.
    fraction : float
        Approximate fraction of randomly flagged pixels.
    sigma : float
        Noise sigma of the image (scale of the cosmic-ray hits; 1 if 0).

    Returns
    -------
    numpy.ndarray
        uint32 DQ array of the image's shape.
    """
    dq = np.zeros(img.shape, dtype=np.uint32)
    dq[:, :_BORDER] = _NON_SCIENCE
    img[:, :_BORDER] = 0.0
    ny, nx = img.shape
    k = round(fraction * img.size)
    if k == 0 or nx <= _BORDER:
        return dq
    flat_img = img.reshape(-1)
    flat_dq = dq.reshape(-1)
    idx = rng.integers(0, ny, k) * nx + rng.integers(_BORDER, nx, k)
    kind = rng.random(k)
    scale = sigma if sigma > 0 else 1.0
    cr = idx[kind < 0.5]
    flat_img[cr] += scale * 10.0 ** rng.uniform(math.log10(30.0), 3.0, cr.size)
    flat_dq[cr] = _DO_NOT_USE | _OUTLIER
    bad = idx[(kind >= 0.5) & (kind < 0.75)]
    flat_img[bad] = np.nan
    flat_dq[bad] = _DO_NOT_USE
    jump = idx[kind >= 0.75]
    # A pixel drawn twice keeps its first (bad) flag; JUMP_DET only marks untouched pixels.
    jump = jump[flat_dq[jump] == 0]
    flat_dq[jump] = _JUMP_DET
    return dq


# --------------------------------------------------------------------------- layouts


@_common_doc
def tile_grid(
    nrow: int = 3,
    ncol: int = 3,
    shape: tuple[int, int] = (512, 512),
    overlap: float = 0.1,
    *,
    rotation_jitter: float = 0.0,
    seed: int | None = 0,
    sky: float | Sequence[float] | np.ndarray | None = None,
    sky_range: tuple[float, float] = (100.0, 120.0),
    noise: float | tuple[float, float] = 1.0,
    pixel_scale: float = 0.1,
    ra: float = 150.0,
    dec: float = 2.0,
    rotation: float = 0.0,
    point_sources: int = 300,
    extended_sources: int = 5,
    source_flux: float = 10.0,
    dq_fraction: float | None = None,
    dtype: Any = np.float32,
) -> Mosaic:
    """Build a grid of tiles overlapping their neighbours by a fraction of their size.

    Tiles are laid out in the tangent plane of the mosaic centre, row-major with row 0
    at the bottom (lowest plane y) and column 0 on the left, each with its own TAN WCS
    centred on the tile. Neighbouring tiles share `overlap` times the tile width
    (left/right) or height (up/down); diagonal neighbours share a corner.

    Parameters
    ----------
    nrow, ncol : int, optional
        Grid size. Default 3 x 3.
    shape : (int, int), optional
        ``(ny, nx)`` of every tile. Default (512, 512).
    overlap : float, optional
        Fractional overlap of neighbouring tiles, in [0, 1). Default 0.1.
    rotation_jitter : float, optional
        Each tile is rotated about its centre by an angle drawn uniformly in
        ``[-rotation_jitter, rotation_jitter]`` degrees. Default 0.
    {common}

    Returns
    -------
    Mosaic
        Images named ``"tile_r{row}_c{col}"``, no groups.

    Examples
    --------
    >>> import numpy as np
    >>> from skyeq.synthetic import tile_grid
    >>> m = tile_grid(2, 3, shape=(100, 80), overlap=0.2, seed=7,
    ...               point_sources=0, extended_sources=0)
    >>> len(m), m.shapes[0], m.data[0].dtype
    (6, (100, 80), dtype('float32'))

    The right neighbour's left edge (x = -0.5) lies 20 % of the width inside tile 0:

    >>> world = m.wcs[1].pixel_to_world_values(-0.5, 50.0)
    >>> x, y = m.wcs[0].world_to_pixel_values(*world)
    >>> round(float(x), 3), round(float(y), 3)
    (63.5, 50.0)

    Without sources the median of each image is its sky:

    >>> bool(abs(np.median(m.data[0]) - m.sky[0]) < 0.05)
    True
    """
    shape = _shape(shape)
    lay_rng, rest = _streams(seed)
    n = int(nrow) * int(ncol)
    centres = _grid(int(nrow), int(ncol), shape, float(overlap))
    angles = lay_rng.uniform(-rotation_jitter, rotation_jitter, n)
    names = [f"tile_r{i // ncol}_c{i % ncol}" for i in range(n)]
    layout = _Layout(centres, angles, [shape] * n, names)
    return _build(
        layout, rest, sky=sky, sky_range=sky_range, noise=noise, pixel_scale=pixel_scale,
        ra=ra, dec=dec, rotation=rotation, point_sources=point_sources,
        extended_sources=extended_sources, source_flux=source_flux,
        dq_fraction=dq_fraction, dtype=dtype,
    )


@_common_doc
def dithers(
    n: int = 8,
    shape: tuple[int, int] = (512, 512),
    *,
    offset_arcsec: float = 3.0,
    rotation_jitter: float = 0.5,
    seed: int | None = 0,
    sky: float | Sequence[float] | np.ndarray | None = None,
    sky_range: tuple[float, float] = (100.0, 120.0),
    noise: float | tuple[float, float] = 1.0,
    pixel_scale: float = 0.1,
    ra: float = 150.0,
    dec: float = 2.0,
    rotation: float = 0.0,
    point_sources: int = 300,
    extended_sources: int = 5,
    source_flux: float = 10.0,
    dq_fraction: float | None = None,
    dtype: Any = np.float32,
) -> Mosaic:
    """Build dithered exposures of one pointing, overlapping almost fully.

    Parameters
    ----------
    n : int, optional
        Number of images. Default 8.
    shape : (int, int), optional
        ``(ny, nx)`` of every image. Default (512, 512).
    offset_arcsec : float, optional
        Each image centre is offset from the pointing by amounts drawn uniformly in
        ``[-offset_arcsec, offset_arcsec]`` along both axes. Default 3.0 (30 pixels at
        the default scale).
    rotation_jitter : float, optional
        Each image is rotated by an angle drawn uniformly in
        ``[-rotation_jitter, rotation_jitter]`` degrees. Default 0.5.
    {common}

    Returns
    -------
    Mosaic
        Images named ``"dither_00"``, ``"dither_01"``, ..., no groups.

    Examples
    --------
    >>> from skyeq.synthetic import dithers
    >>> m = dithers(4, shape=(64, 64), seed=3, noise=(1.0, 2.0), dq_fraction=0.01)
    >>> m.names
    ['dither_00', 'dither_01', 'dither_02', 'dither_03']
    >>> m.noise.round(3)
    array([1.123, 1.291, 1.097, 1.115])
    >>> sorted(int(b) for b in np.unique(m.dq[0]))
    [0, 1, 4, 17, 512]
    """
    shape = _shape(shape)
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    lay_rng, rest = _streams(seed)
    off = lay_rng.uniform(-offset_arcsec, offset_arcsec, (n, 2)) / pixel_scale
    angles = lay_rng.uniform(-rotation_jitter, rotation_jitter, n)
    width = max(2, len(str(n - 1)))
    names = [f"dither_{i:0{width}d}" for i in range(n)]
    layout = _Layout(off, angles, [shape] * n, names)
    return _build(
        layout, rest, sky=sky, sky_range=sky_range, noise=noise, pixel_scale=pixel_scale,
        ra=ra, dec=dec, rotation=rotation, point_sources=point_sources,
        extended_sources=extended_sources, source_flux=source_flux,
        dq_fraction=dq_fraction, dtype=dtype,
    )


@_common_doc
def exposures(
    nexp: int = 3,
    detectors: tuple[int, int] = (2, 2),
    shape: tuple[int, int] = (512, 512),
    *,
    gap: float | None = None,
    offset_arcsec: float | None = None,
    rotation_jitter: float = 0.2,
    seed: int | None = 0,
    sky: float | Sequence[float] | np.ndarray | None = None,
    sky_range: tuple[float, float] = (100.0, 120.0),
    noise: float | tuple[float, float] = 1.0,
    pixel_scale: float = 0.1,
    ra: float = 150.0,
    dec: float = 2.0,
    rotation: float = 0.0,
    point_sources: int = 300,
    extended_sources: int = 5,
    source_flux: float = 10.0,
    dq_fraction: float | None = None,
    dtype: Any = np.float32,
) -> Mosaic:
    """Build dithered exposures of a multi-detector camera, one sky per exposure.

    Each exposure is a grid of detectors separated by gaps; the detectors of one
    exposure form one group and share one sky, as images of one exposure do in
    skymatch. Exposures are offset and rotated as a whole, so detectors of different
    exposures overlap while those of one exposure do not.

    Parameters
    ----------
    nexp : int, optional
        Number of exposures (groups). Default 3.
    detectors : (int, int), optional
        Detector grid ``(rows, columns)``. Default (2, 2).
    shape : (int, int), optional
        ``(ny, nx)`` of every detector. Default (512, 512).
    gap : float or None, optional
        Gap between neighbouring detectors in pixels. Default None: 5 % of the detector
        width.
    offset_arcsec : float or None, optional
        Each exposure centre is offset by amounts drawn uniformly in
        ``[-offset_arcsec, offset_arcsec]`` along both axes. Default None: 10 % of the
        detector width.
    rotation_jitter : float, optional
        Each exposure is rotated about its centre by an angle drawn uniformly in
        ``[-rotation_jitter, rotation_jitter]`` degrees. Default 0.2.
    {common}

    Returns
    -------
    Mosaic
        Images named ``"exp{e}_det{d}"``, exposure-major, with ``groups`` the exposure
        index.

    Examples
    --------
    >>> from skyeq.synthetic import exposures
    >>> m = exposures(2, (1, 2), shape=(64, 64), seed=5, sky=[110.0, 104.5])
    >>> m.names
    ['exp0_det0', 'exp0_det1', 'exp1_det0', 'exp1_det1']
    >>> m.groups
    array([0, 0, 1, 1])
    >>> m.sky
    array([110. , 110. , 104.5, 104.5])
    """
    shape = _shape(shape)
    nexp = int(nexp)
    if nexp < 1:
        raise ValueError(f"nexp must be >= 1, got {nexp!r}")
    drow, dcol = (int(v) for v in detectors)
    ny, nx = shape
    gap = 0.05 * nx if gap is None else float(gap)
    if gap < 0:
        raise ValueError(f"gap must be >= 0, got {gap!r}")
    if offset_arcsec is None:
        offset_arcsec = 0.1 * nx * pixel_scale
    lay_rng, rest = _streams(seed)
    ndet = drow * dcol
    r, c = np.divmod(np.arange(ndet), dcol)
    local = np.column_stack(
        [(c - (dcol - 1) / 2.0) * (nx + gap), (r - (drow - 1) / 2.0) * (ny + gap)]
    )
    off = lay_rng.uniform(-offset_arcsec, offset_arcsec, (nexp, 2)) / pixel_scale
    theta = lay_rng.uniform(-rotation_jitter, rotation_jitter, nexp)
    centres = np.concatenate([off[e] + _rotate(local, theta[e]) for e in range(nexp)])
    angles = np.repeat(theta, ndet)
    names = [f"exp{e}_det{d}" for e in range(nexp) for d in range(ndet)]
    groups = np.repeat(np.arange(nexp), ndet)
    layout = _Layout(centres, angles, [shape] * (nexp * ndet), names, groups)
    return _build(
        layout, rest, sky=sky, sky_range=sky_range, noise=noise, pixel_scale=pixel_scale,
        ra=ra, dec=dec, rotation=rotation, point_sources=point_sources,
        extended_sources=extended_sources, source_flux=source_flux,
        dq_fraction=dq_fraction, dtype=dtype,
    )


@_common_doc
def disjoint(
    parts: Sequence[tuple[int, int]] = ((2, 2), (1, 3)),
    shape: tuple[int, int] = (512, 512),
    overlap: float = 0.1,
    *,
    separation: float | None = None,
    rotation_jitter: float = 0.0,
    seed: int | None = 0,
    sky: float | Sequence[float] | np.ndarray | None = None,
    sky_range: tuple[float, float] = (100.0, 120.0),
    noise: float | tuple[float, float] = 1.0,
    pixel_scale: float = 0.1,
    ra: float = 150.0,
    dec: float = 2.0,
    rotation: float = 0.0,
    point_sources: int = 300,
    extended_sources: int = 5,
    source_flux: float = 10.0,
    dq_fraction: float | None = None,
    dtype: Any = np.float32,
) -> Mosaic:
    """Build separate tile grids that do not overlap one another.

    The parts are laid side by side along the mosaic x axis, vertically centred, with
    `separation` pixels between their bounding boxes; within a part tiles overlap as in
    :func:`tile_grid`. Matching such a mosaic gives one connected component per part.

    Parameters
    ----------
    parts : sequence of (int, int), optional
        ``(nrow, ncol)`` of each part. Default ((2, 2), (1, 3)): a 2 x 2 grid and a
        separate chain of 3.
    shape : (int, int), optional
        ``(ny, nx)`` of every tile. Default (512, 512).
    overlap : float, optional
        Fractional overlap of neighbouring tiles within a part. Default 0.1.
    separation : float or None, optional
        Gap between consecutive parts in pixels (> 0). Default None: half a tile width.
    rotation_jitter : float, optional
        Per-tile rotation drawn uniformly in ``[-rotation_jitter, rotation_jitter]``
        degrees; keep it small enough for the tiles to stay within `separation`.
        Default 0.
    {common}

    Returns
    -------
    Mosaic
        Images named ``"part{p}_r{row}_c{col}"``, part-major, no groups.

    Examples
    --------
    >>> from skyeq.synthetic import disjoint
    >>> m = disjoint(shape=(32, 32), seed=2, point_sources=10, extended_sources=0)
    >>> m.names[:4] + m.names[-1:]
    ['part0_r0_c0', 'part0_r0_c1', 'part0_r1_c0', 'part0_r1_c1', 'part1_r0_c2']
    """
    shape = _shape(shape)
    parts = [(int(a), int(b)) for a, b in parts]
    if not parts:
        raise ValueError("parts must hold at least one (nrow, ncol)")
    nx = shape[1]
    separation = 0.5 * nx if separation is None else float(separation)
    if not separation > 0:
        raise ValueError(f"separation must be > 0, got {separation!r}")
    lay_rng, rest = _streams(seed)
    blocks, widths, names = [], [], []
    for p, (nr, nc) in enumerate(parts):
        blocks.append(_grid(nr, nc, shape, float(overlap)))
        widths.append(nx * (1 + (nc - 1) * (1.0 - overlap)))
        names += [f"part{p}_r{i // nc}_c{i % nc}" for i in range(nr * nc)]
    total = sum(widths) + separation * (len(parts) - 1)
    left = -total / 2.0
    centres = []
    for block, w in zip(blocks, widths, strict=True):
        centres.append(block + np.array([left + w / 2.0, 0.0]))
        left += w + separation
    centres = np.concatenate(centres)
    angles = lay_rng.uniform(-rotation_jitter, rotation_jitter, len(names))
    layout = _Layout(centres, angles, [shape] * len(names), names)
    return _build(
        layout, rest, sky=sky, sky_range=sky_range, noise=noise, pixel_scale=pixel_scale,
        ra=ra, dec=dec, rotation=rotation, point_sources=point_sources,
        extended_sources=extended_sources, source_flux=source_flux,
        dq_fraction=dq_fraction, dtype=dtype,
    )


def constant_mosaic(
    skies: Sequence[float] | np.ndarray,
    layout: tuple[int, int] | Sequence[tuple[int, int]] = (2, 3),
    shape: tuple[int, int] = (32, 32),
    overlap: float = 0.25,
    *,
    ra: float = 150.0,
    dec: float = 2.0,
    pixel_scale: float = 0.1,
    dtype: Any = np.float32,
) -> Mosaic:
    """Build a noise-free mosaic whose images are exactly their constant skies.

    Meant for exact tables and tests: no noise, no sources, no DQ.

    Parameters
    ----------
    skies : array_like
        One sky per image, in the layout's image order (row-major, parts in order).
    layout : (int, int) or sequence of (int, int), optional
        ``(nrow, ncol)`` for one tile grid (names as in :func:`tile_grid`), or a
        sequence of them for separate parts (names as in :func:`disjoint`). Default
        (2, 3): six tiles, each overlapping its immediate neighbours (and, at the
        corners, its diagonal ones).
    shape : (int, int), optional
        ``(ny, nx)`` of every tile. Default (32, 32).
    overlap : float, optional
        Fractional overlap of neighbouring tiles. Default 0.25.
    ra, dec : float, optional
        Mosaic centre in degrees. Default 150.0, 2.0.
    pixel_scale : float, optional
        Pixel size in arcsec. Default 0.1.
    dtype : data-type, optional
        Floating-point type of the images. Default float32.

    Returns
    -------
    Mosaic
        The mosaic; ``data[i]`` is filled with ``skies[i]`` (rounded to `dtype`).

    Examples
    --------
    >>> from skyeq.synthetic import constant_mosaic
    >>> m = constant_mosaic([10.0, 12.0, 11.0, 15.0, 14.0, 13.0])
    >>> m.names[:2], float(m.data[3][5, 7])
    (['tile_r0_c0', 'tile_r0_c1'], 15.0)

    A 2 x 2 grid and a separate chain of 3:

    >>> m = constant_mosaic([1, 2, 3, 4, 5, 6, 7], layout=[(2, 2), (1, 3)])
    >>> len(m), m.names[-1]
    (7, 'part1_r0_c2')
    """
    skies = np.asarray(skies, dtype=np.float64)
    common = dict(
        sky=skies, noise=0.0, point_sources=0, extended_sources=0, ra=ra, dec=dec,
        pixel_scale=pixel_scale, dtype=dtype,
    )
    if np.ndim(layout) == 1:
        nrow, ncol = (int(v) for v in layout)  # type: ignore[union-attr]
        return tile_grid(nrow, ncol, shape, overlap, **common)
    return disjoint(layout, shape, overlap, **common)  # type: ignore[arg-type]


def on_wcs(
    wcs: Sequence[Any],
    shapes: Sequence[Sequence[int]],
    *,
    names: Sequence[str] | None = None,
    seed: int | None = 0,
    sky: float | Sequence[float] | np.ndarray | None = None,
    sky_range: tuple[float, float] = (100.0, 120.0),
    noise: float | tuple[float, float] = 1.0,
    point_sources: int = 300,
    extended_sources: int = 5,
    source_flux: float = 10.0,
    dq_fraction: float | None = None,
    dtype: Any = np.float32,
) -> Mosaic:
    """Build images with known skies on given WCSs (a real instrument's, for instance).

    The sources are drawn over all the images on the sky and rendered into each image
    through its own WCS (an inverse that is only approximate is refined as in
    `skyeq.match_sky`), so a source lies at the same sky position in every image that
    covers it, whatever the distortion.

    Parameters
    ----------
    wcs : sequence
        One WCS per image: astropy.wcs.WCS, gwcs, any APE 14 low-level WCS or a pair of
        callables ``(fwd, inv)``, as `skyeq.match_sky` takes them.
    shapes : sequence of (int, int)
        ``(ny, nx)`` of each image.
    names : sequence of str, optional
        Image names. Default ``"image_00"``, ``"image_01"``, ...
    seed : int or None, optional
        Seed of ``numpy.random.default_rng`` (0 by default; None draws fresh entropy).
    sky : float or array_like, optional
        True sky levels, one per image or a scalar for all. Default None draws them
        uniformly from `sky_range`.
    sky_range : (float, float), optional
        Range of the drawn skies. Default (100, 120).
    noise : float or (float, float), optional
        Gaussian noise sigma per pixel, or a range to draw each image's from. Default 1.
    point_sources, extended_sources : int, optional
        Numbers of compact sources (sigma 1 to 1.5 pixels) and of large diffuse blobs.
        Default 300 and 5.
    source_flux : float, optional
        Peak scale of the sources, in data units. Default 10.
    dq_fraction : float or None, optional
        Fraction of flagged pixels in uint32 DQ arrays (JWST bits), or None (default) for
        no DQ arrays; see :func:`tile_grid`.
    dtype : data-type, optional
        Floating-point type of the images. Default float32.

    Returns
    -------
    Mosaic
        The mosaic; ``Mosaic.wcs`` holds the given WCS objects.

    Raises
    ------
    ValueError
        If the lengths differ, a shape is not two positive integers, or a WCS cannot be
        used on its image (see `skyeq.wcs.as_wcs_adapter`).

    Examples
    --------
    >>> from skyeq import synthetic
    >>> base = synthetic.tile_grid(1, 1, shape=(64, 64), point_sources=0).wcs[0]
    >>> ws = [base, synthetic.repoint(base, east=1.0, north=0.5)]
    >>> m = synthetic.on_wcs(ws, [(64, 64)] * 2, sky=[10.0, 12.0], noise=0.0,
    ...                      point_sources=0, extended_sources=0)
    >>> m.names, float(m.data[1][0, 0])
    (['image_00', 'image_01'], 12.0)
    """
    wcs = list(wcs)
    shapes = [_shape(s) for s in shapes]
    n = len(wcs)
    if n == 0 or len(shapes) != n:
        raise ValueError(f"need one shape per WCS and at least one image; got {n} WCS and "
                         f"{len(shapes)} shapes")
    if names is None:
        width = max(2, len(str(n - 1)))
        names = [f"image_{i:0{width}d}" for i in range(n)]
    names = [str(s) for s in names]
    if len(names) != n:
        raise ValueError(f"names has {len(names)} entries for {n} images")
    adapters = [as_wcs_adapter(w, nm, shape=s) for w, nm, s in zip(wcs, names, shapes, strict=True)]
    # pixel size and the plane the sources are drawn in: from the images themselves
    centres = [a.pixel_to_world((s[1] - 1) / 2.0, (s[0] - 1) / 2.0)
               for a, s in zip(adapters, shapes, strict=True)]
    areas = [float(a.pixel_area((s[1] - 1) / 2.0, (s[0] - 1) / 2.0))
             for a, s in zip(adapters, shapes, strict=True)]
    pixel_scale = float(np.sqrt(np.median(areas))) * _ARCSEC_PER_RAD
    lon = np.radians([float(c[0]) for c in centres])
    lat = np.radians([float(c[1]) for c in centres])
    v = np.column_stack((np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)))
    v = v.sum(axis=0)
    ra0 = math.degrees(math.atan2(v[1], v[0])) % 360.0
    dec0 = math.degrees(math.atan2(v[2], math.hypot(v[0], v[1])))
    plane = _plane_wcs(ra0, dec0, pixel_scale, 0.0)
    corners = []
    for a, (ny, nx) in zip(adapters, shapes, strict=True):
        x = np.array([-0.5, (nx - 1) / 2.0, nx - 0.5, nx - 0.5, nx - 0.5, (nx - 1) / 2.0,
                      -0.5, -0.5])
        y = np.array([-0.5, -0.5, -0.5, (ny - 1) / 2.0, ny - 0.5, ny - 0.5, ny - 0.5,
                      (ny - 1) / 2.0])
        ra, dec = a.pixel_to_world(x, y)
        corners.append(np.column_stack(plane.wcs_world2pix(ra, dec, 0)))
    _, rest = _streams(seed)
    layout = _Layout(np.zeros((n, 2)), np.zeros(n), shapes, names)
    return _render(
        wcs, layout, np.concatenate(corners), plane, pixel_scale, rest, sky=sky,
        sky_range=sky_range, noise=noise, point_sources=point_sources,
        extended_sources=extended_sources, source_flux=source_flux,
        dq_fraction=dq_fraction, dtype=dtype, adapters=adapters,
    )


def repoint(wcs: Any, east: float, north: float) -> Any:
    """Return a copy of a WCS pointed elsewhere: the same detector, distortion included.

    The sky is rotated so that the reference point moves by ``east`` and ``north``
    arcseconds (tangent-plane offsets at the reference point) and north stays north
    there; everything else about the WCS is kept. This is how the dithered exposures of
    one detector differ, and how the tests and benchmarks build mosaics from one real
    instrument WCS.

    Parameters
    ----------
    wcs : astropy.wcs.WCS or gwcs.WCS
        The WCS. For a FITS WCS the reference point is ``CRVAL`` (SIP and lookup-table
        distortions are kept, as they act on pixels); for a gwcs it is the sky position
        of the centre of its bounding box (of pixel (0, 0) without one), and the sky
        rotation is appended to the transform of its last step (its frames are kept),
        whose inverse (exact or fitted) then inverts it too.
    east, north : float
        Offsets in arcsec.

    Returns
    -------
    astropy.wcs.WCS or gwcs.WCS
        A new WCS; ``wcs`` is not modified.

    Raises
    ------
    TypeError
        If ``wcs`` is neither kind.

    Examples
    --------
    >>> from skyeq import synthetic
    >>> w = synthetic.tile_grid(1, 1, shape=(64, 64), point_sources=0).wcs[0]
    >>> moved = synthetic.repoint(w, east=0.0, north=3.6)
    >>> float(round(moved.wcs.crval[1] - w.wcs.crval[1], 6))
    0.001
    """
    if isinstance(wcs, WCS):
        out = wcs.deepcopy()
        ra, dec = _offset(np.array([wcs.wcs.crval[0]]), np.array([wcs.wcs.crval[1]]),
                          east, north)
        out.wcs.crval = [float(ra[0]), float(dec[0])]
        out.wcs.set()
        return out
    if not (hasattr(wcs, "forward_transform") and hasattr(wcs, "output_frame")):
        raise TypeError(f"repoint takes an astropy.wcs.WCS or a gwcs.WCS, "
                        f"not {type(wcs).__name__}")
    from astropy.modeling.rotations import SphericalRotationSequence
    from gwcs import WCS as GWCS

    box = wcs.bounding_box
    if box is None:
        xc = yc = 0.0
    else:
        (x0, x1), (y0, y1) = box.bounding_box(order="F")
        xc, yc = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    ra0, dec0 = (float(v) for v in as_wcs_adapter(wcs).pixel_to_world(xc, yc))
    ra1, dec1 = (float(v[0]) for v in _offset(np.array([ra0]), np.array([dec0]), east, north))
    # z, y rotations take (ra0, dec0) to (0, 0); x keeps north; y, z take it to (ra1, dec1)
    rot = SphericalRotationSequence([ra0, -dec0, 0.0, dec1, -ra1], axes_order="zyxyz")
    steps = list(getattr(wcs, "pipeline", None) or [])
    if len(steps) >= 2 and all(step.transform is not None for step in steps[:-1]):
        # the same frames (a JWST detector has four), the rotation after the last step
        pipe = [(step.frame, step.transform) for step in steps[:-1]]
        pipe[-1] = (pipe[-1][0], pipe[-1][1] | rot)
        out = GWCS(forward_transform=[*pipe, (steps[-1].frame, None)])
    else:
        out = GWCS(forward_transform=wcs.forward_transform | rot, input_frame=wcs.input_frame,
                   output_frame=wcs.output_frame)
    if box is not None:
        out.bounding_box = box.bounding_box(order="F")
    return out


def add_nebula(mosaic: Mosaic, peak: float = 300.0, *, blobs: int = 4,
               seed: int | None = 1) -> Mosaic:
    """Return a copy of a mosaic with bright, smooth emission fixed on the sky added.

    The emission is a sum of ``blobs`` round Gaussians on the sky, centred within the
    middle 80 % of the mosaic, of widths 15 % to 35 % of its extent and peaks uniform
    between half and all of ``peak`` times the median noise sigma of the images (the
    same emission in every image, whatever its own noise): overlaps filled
    with emission that varies across them (a nebula, a galaxy's disk), the case where
    each image's own statistic of an overlap is biased and co-located pixel differences
    are not (``pair_stat="difference"``). Each image gets the emission at its pixels'
    sky positions through its own WCS (one WCS call per image, on every pixel).

    Parameters
    ----------
    mosaic : Mosaic
        The mosaic; its WCSs must map every pixel to the sky (``pixel_to_world_values``).
    peak : float, optional
        Largest peak surface brightness, in noise sigmas. Default 300 (a few times a
        sky of 100 with sigma 1).
    blobs : int, optional
        Number of Gaussians. Default 4.
    seed : int or None, optional
        Seed of their placement. Default 1.

    Returns
    -------
    Mosaic
        The same mosaic (WCSs, truth, sources) with new data arrays of the same dtypes;
        ``sky`` stays the truth of the additive sky levels.

    Examples
    --------
    >>> from skyeq.synthetic import add_nebula, tile_grid
    >>> m = add_nebula(tile_grid(2, 2, shape=(64, 64), seed=1), peak=50.0)
    >>> bool(max(float(d.max() - d.min()) for d in m.data) > 20.0)
    True
    """
    rng = np.random.default_rng(seed)
    world = [np.asarray(w.pixel_to_world_values(*np.meshgrid(
        np.arange(s[1], dtype=float), np.arange(s[0], dtype=float))), dtype=float)
        for w, s in zip(mosaic.wcs, mosaic.shapes, strict=True)]
    rows, cols = [0, 0, -1, -1], [0, -1, 0, -1]
    corners = _radec_to_xyz(np.concatenate([ra[rows, cols] for ra, _ in world]),
                            np.concatenate([dec[rows, cols] for _, dec in world]))
    mid = corners.sum(axis=0) / np.linalg.norm(corners.sum(axis=0))
    east, north = _tangent_basis(mid[None, :])
    reach = float(np.max(np.linalg.norm(corners - mid, axis=1)))  # radians, about
    params = [(rng.uniform(-0.4, 0.4, 2) * 2 * reach, rng.uniform(0.15, 0.35) * 2 * reach,
               rng.uniform(0.5, 1.0) * peak) for _ in range(blobs)]
    sigma = float(np.median(mosaic.noise)) if len(mosaic.noise) else 1.0
    data = []
    for img, (ra, dec) in zip(mosaic.data, world, strict=True):
        v = _radec_to_xyz(ra.ravel(), dec.ravel())
        v = v / (v @ mid)[:, None]
        xy = np.column_stack((v @ east[0], v @ north[0]))
        f = np.zeros(xy.shape[0])
        for c, width, amp in params:
            f += amp * sigma * np.exp(-np.sum((xy - c) ** 2, axis=1) / (2 * width**2))
        data.append((img + f.reshape(img.shape)).astype(img.dtype))
    return dataclasses.replace(mosaic, data=data)
