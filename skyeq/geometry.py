"""Footprints, candidate pairs, exact overlaps and overlap pixel spans.

The geometry of skyeq knows nothing of pixel values. It answers three questions:

1. Where is each image on the sky? `footprint` traces the detector outline on the
   pixel *edges* (``-0.5 .. n - 0.5``), sampled as the reference does (`stepsize`),
   and keeps it as a counter-clockwise ring of unit vectors with its centre, the
   radius of a cap that covers it and its area.
2. Which images overlap, and where? `candidate_pairs` finds the pairs whose caps
   overlap with a k-d tree on the centres (never all n^2 pairs); `intersect`
   computes the exact overlap of two footprints. Great-circle edges are straight
   lines in the gnomonic (tangent-plane) projection, so both footprints are
   projected on the plane tangent at the pair's midpoint and clipped there
   (Sutherland-Hodgman on convex parts; a non-convex footprint, e.g. a distorted
   detector sampled with a `stepsize`, is split into convex parts once). Footprints
   that do not fit in that projection (larger than a ~70 degree cap about the
   midpoint) fall back to `spherical_geometry`.
3. Which pixels of an image lie in an overlap? `overlap_spans` maps the overlap
   through the image's inverse WCS and scan-converts it into row spans
   ``(row, first column, last column)`` of the pixels whose centres lie inside or
   on the boundary; no image-sized mask is ever built.

An overlap is an `Overlap`: a tuple of *pieces* plus the on-sky area. Each piece is
an ``(m, 3)`` array of unit vectors, an open counter-clockwise ring (first vertex
not repeated) with great-circle edges; pieces have disjoint interiors and their
union is the overlap. Two convex footprints give at most one piece; non-convex
footprints can give several. The overlap of an image with a *group* of images is
the concatenation of its overlaps with every member, as in the reference (no union
polygon is ever built): pixels are counted once (`overlap_spans` takes the union
of the pieces), areas are summed.

Typical use (what a per-image measurement task needs)::

    fps = footprints(wcs_list, shapes)              # cheap, picklable
    pairs, overlaps = find_overlaps(fps)            # all overlapping pairs
    per_image = image_overlaps(pairs, overlaps, len(fps), labels=groups)
    # in the task of image k: its pixels in the overlap with each other group
    spans = overlap_spans_many(list(per_image[k].values()), wcs_list[k], shapes[k])
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np
from scipy.spatial import cKDTree
from spherical_geometry.polygon import SphericalPolygon

from . import _kernels as _gk
from .wcs import WCSAdapter, _radec_to_xyz, _tangent_basis, _xyz_to_radec, as_wcs_adapter

__all__ = [
    "PLANE_CELLS",
    "Footprint",
    "Overlap",
    "candidate_pairs",
    "candidate_pairs_between",
    "check_stepsize",
    "find_overlaps",
    "footprint",
    "footprints",
    "image_overlaps",
    "intersect",
    "intersect_many",
    "overlap_graph",
    "overlap_spans",
    "overlap_spans_many",
    "split_piece",
]

log = logging.getLogger(__name__)

# Every vertex of a pair must lie within this angle of the pair's tangent point for
# the planar (gnomonic) intersection; beyond it the pair goes to spherical_geometry.
_GNOMONIC_LIMIT_DEG = 70.0
# Overlap pieces narrower than this (radians, 2 * area / perimeter; 2e-6 arcsec) are
# dropped: they are the rounding-level slivers left by footprints that only touch.
_MIN_WIDTH = 1e-11
# Default longest edge, in pixels, of an overlap polygon before it is mapped to the
# pixel frame (see overlap_spans).
_MAX_EDGE_PIXELS = 64.0
# Default largest deviation, in pixels, of a mapped great-circle edge from the straight
# segment the scan conversion uses (see overlap_spans_many).
_CURVE_TOLERANCE = 1e-3


@dataclass(frozen=True, eq=False)
class Footprint:
    """The outline of one image on the sky.

    Build it with `footprint` or `footprints`.

    Parameters
    ----------
    name : str
        Name of the image (from its `WCSAdapter`).
    shape : tuple of int
        Image shape ``(ny, nx)``.
    vertices : ndarray, shape (m, 3)
        The outline: unit vectors of the sampled pixel-edge points, an open
        counter-clockwise ring (seen from outside the sphere) with great-circle
        edges. Read-only.
    centre : ndarray, shape (3,)
        Unit vector of the normalised mean vertex. Read-only.
    radius : float
        Angle (radians) from ``centre`` that covers every vertex, hence the whole
        footprint when it is smaller than a hemisphere.
    area : float
        On-sky area in steradians.
    parts : tuple of ndarray
        Convex parts of the ring (vertex index arrays, counter-clockwise); a single
        part with every vertex when the ring is convex, empty when the footprint
        is too large or irregular for the planar path (then overlaps with it are
        computed by spherical_geometry).
    """

    name: str
    shape: tuple[int, int]
    vertices: np.ndarray
    centre: np.ndarray
    radius: float
    area: float
    parts: tuple[np.ndarray, ...]

    def __repr__(self) -> str:
        return (
            f"Footprint(name={self.name!r}, shape={self.shape}, nvertices="
            f"{len(self.vertices)}, radius={np.degrees(self.radius):.6g} deg, "
            f"area={self.area:.6g} sr)"
        )

    @property
    def radec(self) -> tuple[np.ndarray, np.ndarray]:
        """Longitudes in [0, 360) and latitudes of the vertices, in degrees."""
        return _xyz_to_radec(self.vertices)

    @cached_property
    def polygon(self) -> SphericalPolygon:
        """The footprint as a `spherical_geometry.polygon.SphericalPolygon`.

        Built on first use (spherical_geometry's constructor is slow) and cached.
        """
        return _ring_polygon(self.vertices, self.centre)


class Overlap(NamedTuple):
    """The overlap of two footprints (or of one footprint with a group).

    Parameters
    ----------
    pieces : tuple of ndarray
        Each an ``(m, 3)`` open counter-clockwise ring of unit vectors with
        great-circle edges; disjoint interiors, union = the overlap. Empty when the
        footprints do not overlap (or only touch).
    area : float
        On-sky area in steradians (sum over pieces).
    """

    pieces: tuple[np.ndarray, ...]
    area: float

    @property
    def is_empty(self) -> bool:
        """True when there is no piece (no overlap, or footprints that only touch)."""
        return len(self.pieces) == 0

    def to_polygon(self) -> SphericalPolygon:
        """Return the pieces as one `spherical_geometry.polygon.SphericalPolygon`.

        Returns
        -------
        SphericalPolygon
            The overlap (no sub-polygon if empty).
        """
        return SphericalPolygon(
            [_ring_polygon(p, _unit(p.sum(axis=0))).polygons[0] for p in self.pieces]
        )


# --------------------------------------------------------------------------------------
# coordinates
# --------------------------------------------------------------------------------------


def _unit(v: np.ndarray) -> np.ndarray:
    """Normalise a vector (or the rows of an array) to unit length.

    Parameters
    ----------
    v : ndarray
        Shape ``(3,)`` or ``(m, 3)``.

    Returns
    -------
    ndarray
        Unit vector(s).
    """
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _ring_polygon(ring: np.ndarray, inside: np.ndarray) -> SphericalPolygon:
    """spherical_geometry polygon of an open ring.

    Parameters
    ----------
    ring : ndarray, shape (m, 3)
        Open ring of unit vectors.
    inside : ndarray, shape (3,)
        A point inside it.

    Returns
    -------
    SphericalPolygon
        The closed polygon.
    """
    return SphericalPolygon(np.vstack((ring, ring[:1])), inside=inside)


def _ring_area(ring: np.ndarray) -> float:
    """Signed area of a great-circle ring.

    Parameters
    ----------
    ring : ndarray, shape (m, 3)
        Open ring of unit vectors.

    Returns
    -------
    float
        Area in steradians, positive when counter-clockwise. Exact fan sum when the
        ring fits within 80 degrees of its mean direction, else spherical_geometry's
        (orientation-free) area with the sign of the fan sum.
    """
    s = ring.sum(axis=0)
    n = np.linalg.norm(s)
    if n > 0:
        apex = s / n
        if float((ring @ apex).min()) > np.cos(np.radians(80.0)):
            return float(_gk.ring_area(np.ascontiguousarray(ring), apex))
    return float(abs(SphericalPolygon(np.vstack((ring, ring[:1]))).area()))


def _cap(v: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre and radius of a cap covering unit vectors.

    Parameters
    ----------
    v : ndarray, shape (m, 3)
        Unit vectors.

    Returns
    -------
    centre : ndarray, shape (3,)
        Normalised mean (``[1, 0, 0]`` if the mean vanishes).
    radius : float
        Largest angle (radians) from ``centre`` to a vertex (pi if the mean
        vanishes).
    """
    s = v.sum(axis=0)
    n = np.linalg.norm(s)
    if not n > 1e-12 * len(v):
        return np.array([1.0, 0.0, 0.0]), float(np.pi)
    c = s / n
    chord = np.linalg.norm(v - c, axis=1).max()
    return c, float(2.0 * np.arcsin(min(1.0, chord / 2.0)))


# --------------------------------------------------------------------------------------
# footprints
# --------------------------------------------------------------------------------------


#: Most outline points per image side, whatever the ``stepsize``: 128 intervals, so at
#: most 508 vertices per footprint (clipping slows down sharply beyond ~512). Between
#: samples the outline is a great-circle arc; on the real NIRCam distortion the
#: sampled edge departs from the true one by 2.3e-4 pixel at this density (3.5e-3 at
#: 33 points per side), measured against 4097 points per side.
_MAX_SIDE_POINTS = 129


def check_stepsize(stepsize: Any) -> float | None:
    """Return ``stepsize`` as a float (or None), or raise a one-line `ValueError`.

    Parameters
    ----------
    stepsize : float or None
        Largest spacing in pixels between outline samples: a finite number >= 1, or
        None (the four corners).

    Returns
    -------
    float or None
        The stepsize.

    Raises
    ------
    ValueError
        If it is not None or a finite real number >= 1.
    """
    if stepsize is None:
        return None
    if (isinstance(stepsize, bool) or not isinstance(stepsize, numbers.Real)
            or not (math.isfinite(stepsize) and stepsize >= 1)):
        raise ValueError(
            f"stepsize must be None or a number of pixels >= 1, got {stepsize!r}"
        )
    return float(stepsize)


def _outline(nx: int, ny: int, stepsize: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-edge outline of an image, sampled as the reference does.

    Parameters
    ----------
    nx, ny : int
        Image width and height.
    stepsize : float or None
        Largest spacing between samples along an edge; None for the four corners.
        Each side gets ``max(2, ceil((n + 1) / stepsize))`` equally spaced points
        from -0.5 to n - 0.5 (corners included once), so the actual spacing can be
        larger than ``stepsize``; at most `_MAX_SIDE_POINTS` points.

    Returns
    -------
    x, y : ndarray
        Open ring: bottom edge left to right, right edge upwards, top edge right to
        left, left edge downwards.
    """
    if stepsize is None:
        kx = ky = 2
    else:
        kx = min(_MAX_SIDE_POINTS, max(2, int(np.ceil((nx + 1.0) / stepsize))))
        ky = min(_MAX_SIDE_POINTS, max(2, int(np.ceil((ny + 1.0) / stepsize))))
    xs = np.linspace(-0.5, nx - 0.5, kx)
    ys = np.linspace(-0.5, ny - 0.5, ky)[1:-1]
    lo_x = np.full(ys.size, -0.5)
    hi_x = np.full(ys.size, nx - 0.5)
    x = np.concatenate((xs, hi_x, xs[::-1], lo_x))
    y = np.concatenate(
        (np.full(kx, -0.5), ys, np.full(kx, ny - 0.5), ys[::-1]),
    )
    return x, y


def _check_shape(shape: Any, name: str) -> tuple[int, int]:
    """Validate an image shape.

    Parameters
    ----------
    shape : sequence of int
        ``(ny, nx)``.
    name : str
        Image name for the message.

    Returns
    -------
    tuple of int
        ``(ny, nx)`` as Python ints.

    Raises
    ------
    ValueError
        If ``shape`` is not two positive integers.
    """
    try:
        ny, nx = (int(s) for s in shape)
        ok = ny > 0 and nx > 0 and tuple(shape) == (ny, nx)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"the shape of {name} must be two positive integers, got {shape!r}")
    return ny, nx


def footprint(
    wcs: Any,
    shape: Sequence[int],
    stepsize: float | None = None,
    name: str | None = None,
) -> Footprint:
    """Footprint of one image.

    Parameters
    ----------
    wcs : WCS, WCSAdapter or (fwd, inv)
        Anything `skyeq.wcs.as_wcs_adapter` accepts.
    shape : tuple of int
        Image shape ``(ny, nx)``.
    stepsize : float, optional
        Largest spacing in pixels between outline samples along each edge (the
        reference's ``stepsize``), >= 1; None (default) uses the four corners only.
        At most 129 points per side are used (see `_MAX_SIDE_POINTS`).
    name : str, optional
        Image name for error messages (default: the adapter's name).

    Returns
    -------
    Footprint
        The footprint.

    Raises
    ------
    ValueError
        If the shape or stepsize is invalid, or the WCS is not finite on the image
        or cannot be inverted on it to `skyeq.wcs.INVERSE_TOLERANCE` pixels, even
        after refining its inverse (see `skyeq.wcs.as_wcs_adapter`); the message
        names the image.
    TypeError
        If ``wcs`` is not a supported WCS.
    """
    adapter = as_wcs_adapter(wcs, name)
    ny, nx = _check_shape(shape, adapter.name)
    stepsize = check_stepsize(stepsize)
    adapter = as_wcs_adapter(adapter, shape=(ny, nx))
    if stepsize is None and adapter.corners is not None:
        ra, dec = adapter.corners  # mapped by the check: no second call of the WCS
    else:
        ra, dec = adapter.pixel_to_world(*_outline(nx, ny, stepsize))
    if not (np.all(np.isfinite(ra)) and np.all(np.isfinite(dec))):
        raise ValueError(
            f"the WCS of {adapter.name} gives non-finite sky coordinates on the image outline"
        )
    v = _radec_to_xyz(ra, dec)
    # drop rounding-level repeated vertices (e.g. a WCS that collapses a corner)
    keep = np.linalg.norm(v - np.roll(v, 1, axis=0), axis=1) > 1e-15
    v = v[keep]
    if len(v) < 3:
        raise ValueError(f"the footprint of {adapter.name} is degenerate (fewer than 3 vertices)")
    centre, radius = _cap(v)
    area = _ring_area(v)
    if area < 0:
        v = v[::-1].copy()
        area = -area
    if not area > 0:
        raise ValueError(f"the footprint of {adapter.name} has zero area")
    parts: tuple[np.ndarray, ...] = ()
    if radius < np.radians(_GNOMONIC_LIMIT_DEG):
        idx, off, status = _gk.convex_parts(np.ascontiguousarray(v), centre)
        if status == 2:
            log.debug(
                "footprint of %s is not a simple polygon in the tangent plane; its "
                "overlaps will use spherical_geometry",
                adapter.name,
            )
        parts = tuple(idx[off[k] : off[k + 1]] for k in range(len(off) - 1))
        for p in parts:
            p.setflags(write=False)
    for a in (v, centre):
        a.setflags(write=False)
    return Footprint(adapter.name, (ny, nx), v, centre, radius, area, parts)


def footprints(
    wcs_list: Sequence[Any],
    shapes: Sequence[Sequence[int]],
    stepsize: float | None = None,
) -> list[Footprint]:
    """Footprints of several images.

    Parameters
    ----------
    wcs_list : sequence
        One WCS per image: anything `skyeq.wcs.as_wcs_adapter` accepts. Images
        without a name (not already a named `WCSAdapter`) are called ``'image <i>'``
        in error messages.
    shapes : sequence of tuple of int
        One shape ``(ny, nx)`` per image (a single shape is not broadcast).
    stepsize : float, optional
        Outline sampling, see `footprint`.

    Returns
    -------
    list of Footprint
        One footprint per image.

    Raises
    ------
    ValueError
        If the lengths differ or any footprint cannot be built.
    """
    return [footprint(a, a.shape, stepsize=stepsize) for a in _checked_adapters(wcs_list, shapes)]


def _checked_adapters(
    wcs_list: Sequence[Any], shapes: Sequence[Sequence[int]]
) -> list[WCSAdapter]:
    """One adapter per image, each checked on its shape (once, for footprints and spans).

    Images without a name (not already a named `WCSAdapter`) are called ``'image <i>'``.

    Raises
    ------
    ValueError
        If the lengths differ, a shape is not two positive integers, or a WCS cannot be
        used on its image.
    """
    wcs_list, shapes = list(wcs_list), list(shapes)
    if len(wcs_list) != len(shapes):
        raise ValueError(
            f"got {len(wcs_list)} WCS objects but {len(shapes)} shapes; need one per image"
        )
    out = []
    for i, (w, s) in enumerate(zip(wcs_list, shapes, strict=True)):
        a = as_wcs_adapter(w, None if isinstance(w, WCSAdapter) else f"image {i}")
        out.append(as_wcs_adapter(a, shape=_check_shape(s, a.name)))
    return out


# --------------------------------------------------------------------------------------
# candidate pairs
# --------------------------------------------------------------------------------------


def _centres_radii(fps: Sequence[Footprint]) -> tuple[np.ndarray, np.ndarray]:
    """Stack footprint centres and radii.

    Parameters
    ----------
    fps : sequence of Footprint
        Footprints.

    Returns
    -------
    centres : ndarray, shape (n, 3)
        Unit vectors.
    radii : ndarray, shape (n,)
        Cap radii in radians.
    """
    if len(fps) == 0:
        return np.zeros((0, 3)), np.zeros(0)
    return np.array([f.centre for f in fps]), np.array([f.radius for f in fps])


def _chord(angle: float) -> float:
    """Chord length of an angle on the unit sphere (angles above pi give 2).

    Parameters
    ----------
    angle : float
        Angle in radians.

    Returns
    -------
    float
        ``2 sin(angle / 2)``, at most 2, slightly inflated against rounding.
    """
    return min(2.0, 2.0 * np.sin(min(angle, np.pi) / 2.0)) * (1 + 1e-12) + 1e-15


def _cap_filter(
    ci: np.ndarray, cj: np.ndarray, ri: np.ndarray, rj: np.ndarray
) -> np.ndarray:
    """Mask of pairs whose caps overlap (angular distance <= ri + rj).

    Parameters
    ----------
    ci, cj : ndarray, shape (k, 3)
        Centres of the two sides.
    ri, rj : ndarray, shape (k,)
        Radii of the two sides.

    Returns
    -------
    ndarray of bool
        True where the caps touch or overlap.
    """
    chord = np.linalg.norm(ci - cj, axis=1)
    sep = 2.0 * np.arcsin(np.minimum(1.0, chord / 2.0))
    return sep <= ri + rj + 1e-12


def candidate_pairs(fps: Sequence[Footprint]) -> np.ndarray:
    """Pairs of footprints whose covering caps overlap.

    A k-d tree on the centre unit vectors returns the pairs closer than the largest
    possible sum of radii; those are then filtered by ``distance <= r_i + r_j``. The
    cost is O(n log n + candidates); all n^2 pairs are never visited (unless the
    footprints really all overlap).

    Parameters
    ----------
    fps : sequence of Footprint
        Footprints.

    Returns
    -------
    ndarray of int64, shape (k, 2)
        Pairs ``(i, j)`` with ``i < j``, sorted. Every overlapping pair is included;
        some included pairs may not overlap.
    """
    n = len(fps)
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64)
    c, r = _centres_radii(fps)
    rmax = float(r.max())
    tree = cKDTree(c)
    pairs = tree.query_pairs(_chord(2.0 * rmax), output_type="ndarray").astype(np.int64)
    if len(pairs) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = pairs[_cap_filter(c[pairs[:, 0]], c[pairs[:, 1]], r[pairs[:, 0]], r[pairs[:, 1]])]
    pairs = np.sort(pairs, axis=1)
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    return np.ascontiguousarray(pairs[order])


def candidate_pairs_between(
    fps_a: Sequence[Footprint], fps_b: Sequence[Footprint]
) -> np.ndarray:
    """Pairs ``(i, j)`` of ``fps_a[i]`` and ``fps_b[j]`` whose covering caps overlap.

    Parameters
    ----------
    fps_a, fps_b : sequence of Footprint
        Two lists (e.g. the members of two groups).

    Returns
    -------
    ndarray of int64, shape (k, 2)
        Index pairs into ``fps_a`` and ``fps_b``, sorted.
    """
    if len(fps_a) == 0 or len(fps_b) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    ca, ra = _centres_radii(fps_a)
    cb, rb = _centres_radii(fps_b)
    ta = cKDTree(ca)
    tb = cKDTree(cb)
    m = ta.sparse_distance_matrix(tb, _chord(float(ra.max() + rb.max())), output_type="ndarray")
    pairs = np.column_stack((m["i"], m["j"])).astype(np.int64)
    if len(pairs) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = pairs[_cap_filter(ca[pairs[:, 0]], cb[pairs[:, 1]], ra[pairs[:, 0]], rb[pairs[:, 1]])]
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    return np.ascontiguousarray(pairs[order])


# --------------------------------------------------------------------------------------
# intersections
# --------------------------------------------------------------------------------------


def _pack(fps: Sequence[Footprint]) -> tuple[np.ndarray, ...]:
    """Concatenate footprints into the flat arrays `_gk.intersect_pairs` takes.

    Parameters
    ----------
    fps : sequence of Footprint
        Footprints.

    Returns
    -------
    tuple of ndarray
        ``verts, vert_off, part_idx, part_off, fp_part, centres, radii``.
    """
    nv = np.array([len(f.vertices) for f in fps], dtype=np.int64)
    vert_off = np.zeros(len(fps) + 1, dtype=np.int64)
    np.cumsum(nv, out=vert_off[1:])
    verts = np.ascontiguousarray(np.concatenate([f.vertices for f in fps]))
    parts = [p for f in fps for p in f.parts]
    npart = np.array([len(f.parts) for f in fps], dtype=np.int64)
    fp_part = np.zeros(len(fps) + 1, dtype=np.int64)
    np.cumsum(npart, out=fp_part[1:])
    plen = np.array([len(p) for p in parts], dtype=np.int64)
    part_off = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum(plen, out=part_off[1:])
    part_idx = (
        np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)
    )
    centres, radii = _centres_radii(fps)
    return verts, vert_off, part_idx, part_off, fp_part, centres, radii


def _fallback(fa: Footprint, fb: Footprint) -> Overlap:
    """Overlap computed by spherical_geometry (large or irregular footprints).

    Parameters
    ----------
    fa, fb : Footprint
        The two footprints.

    Returns
    -------
    Overlap
        The overlap. If spherical_geometry raises (nearly identical footprints,
        spherical_geometry issue 168), the smaller footprint is returned as the
        overlap, with a warning in the log.
    """
    try:
        poly = fa.polygon.intersection(fb.polygon)
    except Exception as err:  # spherical_geometry raises several types here
        small = fa if fa.area <= fb.area else fb
        log.warning(
            "spherical_geometry failed to intersect %s and %s (%s); using the footprint "
            "of %s as their overlap",
            fa.name,
            fb.name,
            err,
            small.name,
        )
        return Overlap((np.array(small.vertices),), float(small.area))
    pieces = []
    total = 0.0
    for pts in poly.points:
        ring = np.asarray(pts, dtype=float)[:-1]
        if len(ring) < 3:
            continue
        a = _ring_area(ring)
        if a < 0:
            ring = ring[::-1].copy()
            a = -a
        per = np.linalg.norm(ring - np.roll(ring, 1, axis=0), axis=1).sum()
        if not a > 0 or 2.0 * a < _MIN_WIDTH * per:
            continue
        pieces.append(ring)
        total += a
    return Overlap(tuple(pieces), total)


def intersect_many(
    fps: Sequence[Footprint],
    pairs: np.ndarray | Sequence[Sequence[int]],
    fps_b: Sequence[Footprint] | None = None,
) -> list[Overlap]:
    """Exact overlaps of many pairs of footprints, in one batch.

    Parameters
    ----------
    fps : sequence of Footprint
        Footprints.
    pairs : array_like of int, shape (k, 2)
        Index pairs; into ``fps`` for both columns, or into ``fps`` and ``fps_b``.
    fps_b : sequence of Footprint, optional
        Second list for the second column of ``pairs``.

    Returns
    -------
    list of Overlap
        One per pair, in order (empty overlaps included).
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if len(pairs) == 0:
        return []
    if fps_b is None:
        allfps = list(fps)
        kp = np.ascontiguousarray(pairs)
    else:
        allfps = list(fps) + list(fps_b)
        kp = np.ascontiguousarray(pairs + np.array([0, len(fps)], dtype=np.int64))
    if kp.min() < 0 or kp.max() >= len(allfps):
        raise IndexError("pair index out of range")
    used, inverse = np.unique(kp, return_inverse=True)
    packed = _pack([allfps[i] for i in used])
    local = np.ascontiguousarray(inverse.reshape(-1, 2).astype(np.int64))
    out, piece_off, pair_off, area, status = _gk.intersect_pairs(
        *packed, local, np.cos(np.radians(_GNOMONIC_LIMIT_DEG)), _MIN_WIDTH
    )
    result = []
    for k in range(len(kp)):
        if status[k] == 1:
            result.append(_fallback(allfps[kp[k, 0]], allfps[kp[k, 1]]))
            continue
        pieces = tuple(
            out[piece_off[p] : piece_off[p + 1]] for p in range(pair_off[k], pair_off[k + 1])
        )
        result.append(Overlap(pieces, float(area[k]) if pieces else 0.0))
    return result


def intersect(fa: Footprint, fb: Footprint) -> Overlap:
    """Exact overlap of two footprints.

    Parameters
    ----------
    fa, fb : Footprint
        The two footprints.

    Returns
    -------
    Overlap
        Pieces (open counter-clockwise rings of unit vectors, disjoint interiors)
        and area in steradians. Identical footprints give the footprint itself;
        footprints that only touch give no piece and zero area.

    Examples
    --------
    >>> from astropy.wcs import WCS
    >>> def tile(ra):
    ...     w = WCS(naxis=2)
    ...     w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    ...     w.wcs.crval = [ra, 0.0]
    ...     w.wcs.crpix = [50.5, 50.5]
    ...     w.wcs.cdelt = [-1e-3, 1e-3]
    ...     return w
    >>> fa, fb = footprints([tile(10.0), tile(10.09)], [(100, 100), (100, 100)])
    >>> ov = intersect(fa, fb)
    >>> len(ov.pieces), round(ov.area / fa.area, 3)
    (1, 0.1)
    """
    return intersect_many([fa, fb], [[0, 1]])[0]


def find_overlaps(fps: Sequence[Footprint]) -> tuple[np.ndarray, list[Overlap]]:
    """All overlapping pairs of footprints and their overlaps.

    Parameters
    ----------
    fps : sequence of Footprint
        Footprints.

    Returns
    -------
    pairs : ndarray of int64, shape (k, 2)
        Pairs ``(i, j)``, ``i < j``, sorted, with a non-empty overlap.
    overlaps : list of Overlap
        The overlap of each pair.
    """
    cand = candidate_pairs(fps)
    ovs = intersect_many(fps, cand)
    keep = [k for k, o in enumerate(ovs) if not o.is_empty]
    return cand[keep].reshape(-1, 2), [ovs[k] for k in keep]


def image_overlaps(
    pairs: np.ndarray,
    overlaps: Sequence[Overlap],
    n_images: int,
    labels: Sequence[int] | np.ndarray | None = None,
) -> list[dict[int, Overlap]]:
    """Regroup pairwise overlaps per image: what one image-task needs.

    Parameters
    ----------
    pairs : ndarray of int, shape (k, 2)
        Image pairs, as returned by `find_overlaps`.
    overlaps : sequence of Overlap
        Their overlaps.
    n_images : int
        Number of images.
    labels : array_like of int, optional
        Group label of each image (images with the same label share one sky). By
        default every image is its own group, labelled by its index.

    Returns
    -------
    list of dict
        For each image ``g``: ``{h: Overlap}`` for every other group ``h`` it
        overlaps, where the overlap is the union of ``g``'s overlaps with every
        member of ``h`` (pieces concatenated, areas summed, as the reference
        does). Overlaps between members of the same group are left out. Pass the
        values to `overlap_spans_many` with image ``g``'s WCS to get its pixels in
        each overlap.
    """
    lab = np.arange(n_images) if labels is None else np.asarray(labels)
    if lab.shape != (n_images,):
        raise ValueError(f"labels must have one entry per image ({n_images}), got {lab.shape}")
    pieces: list[dict[int, list[np.ndarray]]] = [{} for _ in range(n_images)]
    areas: list[dict[int, float]] = [{} for _ in range(n_images)]
    for (i, j), ov in zip(np.asarray(pairs).reshape(-1, 2), overlaps, strict=True):
        if ov.is_empty or lab[i] == lab[j]:
            continue
        for g, h in ((int(i), int(lab[j])), (int(j), int(lab[i]))):
            pieces[g].setdefault(h, []).extend(ov.pieces)
            areas[g][h] = areas[g].get(h, 0.0) + ov.area
    return [
        {h: Overlap(tuple(p[h]), a[h]) for h in sorted(p)}
        for p, a in zip(pieces, areas, strict=True)
    ]


# --------------------------------------------------------------------------------------
# pixel spans
# --------------------------------------------------------------------------------------


def _as_pieces(item: Any) -> list[np.ndarray]:
    """Normalise an overlap description to a list of ``(m, 3)`` rings.

    Parameters
    ----------
    item : Overlap, ndarray or sequence of ndarray
        An `Overlap`, one ring, or several rings.

    Returns
    -------
    list of ndarray
        Float64 rings.
    """
    if isinstance(item, Overlap):
        item = item.pieces
    elif isinstance(item, np.ndarray):
        item = [item]
    rings = []
    for p in item:
        a = np.asarray(p, dtype=float)
        if a.ndim != 2 or a.shape[1] != 3:
            raise ValueError(f"an overlap piece must be an (m, 3) array, got shape {a.shape}")
        if len(a) > 1 and np.array_equal(a[0], a[-1]):
            a = a[:-1]  # accept closed rings
        rings.append(a)
    return rings


#: Cells along each axis of an overlap piece for plane models (`split_piece`).
PLANE_CELLS = 3


def split_piece(piece: np.ndarray, ncell: int = PLANE_CELLS) -> list[np.ndarray]:
    """Cut an overlap piece into a few cells of about equal size, for plane models.

    The piece is projected gnomonically about its mean direction (great circles become
    straight lines, so the cut is exact on the sphere), its principal axes are found,
    and its bounding box along them is cut into an ``ncell`` x ``ncell`` grid, so that
    a thin strip between two tiles has cells across its width too: without them the
    slope across the strip would not be measured at all (with them it is measured
    over the strip's width only, which is why planes are poorly determined on tiles
    with narrow overlaps).

    Parameters
    ----------
    piece : ndarray, shape (m, 3)
        A convex open ring of unit vectors (an `Overlap` piece), within 70 degrees of
        its mean direction.
    ncell : int, optional
        Cells along each axis (default `PLANE_CELLS`).

    Returns
    -------
    list of ndarray, shape (k, 3)
        The cells, open rings of unit vectors with the piece's orientation, whose union
        is the piece; cells that would be empty are left out.

    Examples
    --------
    >>> ring = _radec_to_xyz(np.array([0.0, 0.3, 0.3, 0.0]), np.array([0.0, 0.0, 0.1, 0.1]))
    >>> [len(c) for c in split_piece(ring)]
    [4, 4, 4, 4, 4, 4, 4, 4, 4]
    """
    ring = np.asarray(piece, dtype=np.float64)
    t = _unit(ring.sum(axis=0))
    east, north = _tangent_basis(t[None, :])
    p = ring / (ring @ t)[:, None]
    xy = np.column_stack((p @ east[0], p @ north[0]))
    centre = xy.mean(axis=0)
    _, vecs = np.linalg.eigh(np.cov((xy - centre).T))
    major = vecs[:, 1]
    axes = np.array([major, [-major[1], major[0]]])  # a rotation: keeps the orientation
    uv = (xy - centre) @ axes.T
    lo, hi = uv.min(axis=0), uv.max(axis=0)
    extent = hi - lo
    cells = []
    for ku in range(ncell):
        for kv in range(ncell):
            cell = uv
            for axis, k in ((0, ku), (1, kv)):
                if k > 0:
                    cell = _clip_half_plane(cell, axis, lo[axis] + extent[axis] * k / ncell, 1.0)
                if k < ncell - 1:
                    cell = _clip_half_plane(cell, axis, lo[axis] + extent[axis] * (k + 1) / ncell,
                                            -1.0)
            if len(cell) >= 3 and abs(_shoelace(cell)) > 1e-12 * extent[0] * extent[1]:
                back = centre + cell @ axes
                cells.append(_unit(t + back[:, :1] * east[0] + back[:, 1:] * north[0]))
    return cells


def _clip_half_plane(poly: np.ndarray, axis: int, cut: float, side: float) -> np.ndarray:
    """Keep the part of a convex polygon where ``side * (coordinate - cut) >= 0``."""
    out = []
    m = len(poly)
    for k in range(m):
        a, b = poly[k], poly[(k + 1) % m]
        da, db = side * (a[axis] - cut), side * (b[axis] - cut)
        if da >= 0:
            out.append(a)
        if (da >= 0) != (db >= 0):
            f = da / (da - db)
            point = a + f * (b - a)
            point[axis] = cut
            out.append(point)
    return np.array(out).reshape(-1, 2)


def _shoelace(poly: np.ndarray) -> float:
    """Signed area of a planar polygon (positive counter-clockwise)."""
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def _no_pixel(adapter: WCSAdapter) -> ValueError:
    """Return the error of an overlap vertex without a finite pixel position."""
    return ValueError(
        f"the WCS of {adapter.name} gives non-finite pixel positions for overlap vertices"
    )


def _densify(
    adapter: WCSAdapter,
    v: np.ndarray,
    start: np.ndarray,
    max_edge: float,
    tolerance: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Map rings of unit vectors to pixels, splitting edges along great circles.

    Every edge longer than ``max_edge`` pixels (judged from its angle and the image's
    smallest pixel scale, `WCSAdapter.pixel_scale`) is first split into equal parts,
    unless the adapter says great circles are straight in its frame
    (`WCSAdapter.straight`: a plain TAN WCS); then every edge whose mapped great-circle
    midpoint lies more than ``tolerance`` pixels off the straight pixel segment is
    halved, repeatedly (the deviation drops about fourfold per halving). In a TAN
    frame nothing is halved. The vertices and all the first midpoints are mapped in one WCS
    call, and each halving round costs one more call for the new midpoints only: with
    a distorted WCS every call is a costly iterative inverse. With a fitted inverse
    (a gwcs) the whole of it is one compiled call (`_ForwardFit.densify`).

    Parameters
    ----------
    adapter : WCSAdapter
        The image's transforms, checked on the image (`as_wcs_adapter` with a shape).
    v : ndarray, shape (m, 3)
        Open rings, concatenated.
    start : ndarray of int64
        Ring offsets into ``v``.
    max_edge, tolerance : float
        Pixels.

    Returns
    -------
    px, py : ndarray
        Pixel coordinates of the densified rings, concatenated.
    start : ndarray of int64
        Ring offsets into ``px``/``py``.

    Raises
    ------
    ValueError
        If a point has no finite pixel position.
    """

    def to_pixel(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, y = adapter.world_to_pixel(*_xyz_to_radec(u))
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            raise _no_pixel(adapter)
        return x, y

    def successor(n: int, start: np.ndarray) -> np.ndarray:
        nxt = np.arange(n) + 1
        nxt[start[1:] - 1] = start[:-1]  # each ring closes on its first vertex
        return nxt

    if adapter.inverse == "fitted":
        # the same steps in one compiled call, without the GIL
        step = np.inf if adapter.straight else max_edge * adapter.pixel_scale
        px, py, start, ok = adapter.fit.densify(v, start, step, tolerance)
        if not ok:
            raise _no_pixel(adapter)
        return px, py, start
    nxt = successor(len(v), start)
    # 1. uniform split of long edges: (n - k) / n * a + k / n * b gives the same points
    #    whichever way an edge runs (shared edges of adjacent pieces match exactly);
    #    not where great circles are straight pixel lines (a plain TAN WCS)
    nsub = np.ones(len(v), dtype=np.int64)
    if not adapter.straight:
        angle = np.arctan2(np.linalg.norm(np.cross(v, v[nxt]), axis=1),
                           np.sum(v * v[nxt], axis=1))
        nsub = np.maximum(1, np.ceil(angle / (max_edge * adapter.pixel_scale))).astype(np.int64)
    if nsub.max() > 1:
        e = np.repeat(np.arange(len(v)), nsub - 1)
        first = np.cumsum(nsub - 1) - (nsub - 1)
        k = np.arange(len(e)) - first[e] + 1
        n = nsub[e]
        pos = np.zeros(len(v) + 1, dtype=np.int64)
        np.cumsum(nsub, out=pos[1:])
        vv = np.empty((pos[-1], 3))
        vv[pos[:-1]] = v
        vv[pos[e] + k] = _unit(((n - k) / n)[:, None] * v[e] + (k / n)[:, None] * v[nxt[e]])
        v, start = vv, pos[start]
        nxt = successor(len(v), start)
    # 2. adaptive halving where the mapped edge is curved
    mid = _unit(v + v[nxt])
    x, y = to_pixel(np.concatenate((v, mid)))
    x, mx = x[: len(v)], x[len(v) :]
    y, my = y[: len(v)], y[len(v) :]
    for _ in range(30):
        dx = x[nxt] - x
        dy = y[nxt] - y
        length = np.hypot(dx, dy)
        off = np.abs(dx * (my - y) - dy * (mx - x))
        dev = np.where(length > 0, off / np.where(length > 0, length, 1.0), 0.0)
        split = (dev > tolerance) & (length > 1e-3)
        if not split.any():
            break
        # midpoints of the two halves of every split edge, mapped in one call
        s = np.flatnonzero(split)
        q = np.concatenate((_unit(v[s] + mid[s]), _unit(mid[s] + v[nxt[s]])))
        qx, qy = to_pixel(q)
        ns = len(s)
        shift = np.cumsum(split) - split  # splits before each vertex
        newpos = np.arange(len(v)) + shift
        n = len(v) + ns
        arrays = []
        for vert, vmid, new_mid in ((v, mid, q), (x, mx, qx), (y, my, qy)):
            a = np.empty((n, *vert.shape[1:]))
            b = np.empty((n, *vert.shape[1:]))
            a[newpos], b[newpos] = vert, vmid
            ins = newpos[s] + 1
            a[ins] = vmid[s]  # the old midpoint becomes a vertex
            b[newpos[s]] = new_mid[:ns]  # first half: from the vertex to the old midpoint
            b[ins] = new_mid[ns:]  # second half: from the old midpoint on
            arrays.append((a, b))
        (v, mid), (x, mx), (y, my) = arrays
        start = np.append(newpos[start[:-1]], n)
        nxt = successor(len(v), start)
    return x, y, start


def overlap_spans_many(
    overlaps: Sequence[Any],
    wcs: Any,
    shape: Sequence[int],
    max_edge: float = _MAX_EDGE_PIXELS,
    tolerance: float = _CURVE_TOLERANCE,
) -> list[np.ndarray]:
    """Pixel spans of several overlaps in one image (batched WCS calls).

    Parameters
    ----------
    overlaps : sequence
        Each an `Overlap`, an ``(m, 3)`` ring or a sequence of rings (e.g. all the
        pieces of an image's overlap with a group).
    wcs : WCS, WCSAdapter or (fwd, inv)
        The image's WCS (anything `skyeq.wcs.as_wcs_adapter` accepts).
    shape : tuple of int
        Image shape ``(ny, nx)``.
    max_edge : float, optional
        Edges longer than this many pixels are split into equal parts along their
        great circle before mapping (default 64); not in a plain TAN frame, where
        great circles are straight (`skyeq.wcs.WCSAdapter.straight`).
    tolerance : float, optional
        Great-circle edges are straight in a TAN pixel frame but slightly curved in
        a distorted one; an edge whose mapped great-circle midpoint lies more than
        ``tolerance`` pixels (default 0.001) off the straight segment is halved,
        repeatedly, so the polygon follows the true boundary to about that
        accuracy.

    Returns
    -------
    list of ndarray of int64, shape (k, 3)
        For each overlap: ``(row, first column, last column)`` with inclusive
        columns, rows ascending, of the pixels whose centres lie inside or on the
        boundary of any of its pieces, clipped to the image; no pixel twice.

    Raises
    ------
    ValueError
        If a piece vertex has no finite pixel position in this image.
    """
    adapter = as_wcs_adapter(wcs)
    ny, nx = _check_shape(shape, adapter.name)
    adapter = as_wcs_adapter(adapter, shape=(ny, nx))
    if not max_edge > 0:
        raise ValueError(f"max_edge must be positive, got {max_edge!r}")
    if not tolerance > 0:
        raise ValueError(f"tolerance must be positive, got {tolerance!r}")
    groups = [[r for r in _as_pieces(o) if len(r) >= 3] for o in overlaps]
    rings = [r for g in groups for r in g]
    group_off = np.zeros(len(groups) + 1, dtype=np.int64)
    np.cumsum([len(g) for g in groups], out=group_off[1:])
    if not rings:
        return [np.zeros((0, 3), dtype=np.int64) for _ in groups]
    start = np.zeros(len(rings) + 1, dtype=np.int64)
    np.cumsum([len(r) for r in rings], out=start[1:])
    px, py, piece_off = _densify(adapter, np.concatenate(rings), start, max_edge, tolerance)
    spans, span_off = _gk.scan_spans(
        np.ascontiguousarray(px), np.ascontiguousarray(py), piece_off, group_off, ny, nx
    )
    return [spans[span_off[g] : span_off[g + 1]] for g in range(len(groups))]


def overlap_spans(
    pieces: Any,
    wcs: Any,
    shape: Sequence[int],
    max_edge: float = _MAX_EDGE_PIXELS,
    tolerance: float = _CURVE_TOLERANCE,
) -> np.ndarray:
    """Pixel spans of an overlap in one image.

    Parameters
    ----------
    pieces : Overlap, ndarray or sequence of ndarray
        The overlap: an `Overlap`, one ``(m, 3)`` ring of unit vectors, or several
        (their union is taken).
    wcs : WCS, WCSAdapter or (fwd, inv)
        The image's WCS.
    shape : tuple of int
        Image shape ``(ny, nx)``.
    max_edge, tolerance : float, optional
        Edge splitting before the scan conversion (pixels), see
        `overlap_spans_many`.

    Returns
    -------
    ndarray of int64, shape (k, 3)
        ``(row, first column, last column)``, inclusive, rows ascending, of the
        pixels whose centres lie inside or on the boundary of the overlap.

    Examples
    --------
    >>> from astropy.wcs import WCS
    >>> def tile(ra):
    ...     w = WCS(naxis=2)
    ...     w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    ...     w.wcs.crval = [ra, 0.0]
    ...     w.wcs.crpix = [50.5, 50.5]
    ...     w.wcs.cdelt = [-1e-3, 1e-3]
    ...     return w
    >>> wa, wb = tile(10.0), tile(10.0903)
    >>> fa, fb = footprints([wa, wb], [(100, 100), (100, 100)])
    >>> spans = overlap_spans(intersect(fa, fb), wa, (100, 100))
    >>> spans[:2]
    array([[0, 0, 9],
           [1, 0, 9]])
    >>> int((spans[:, 2] - spans[:, 1] + 1).sum())
    1000
    """
    return overlap_spans_many([pieces], wcs, shape, max_edge=max_edge, tolerance=tolerance)[0]


def _npix(spans: np.ndarray) -> int:
    """Count the pixels in a span list.

    Parameters
    ----------
    spans : ndarray of int64, shape (k, 3)
        Spans.

    Returns
    -------
    int
        Pixel count.
    """
    return int((spans[:, 2] - spans[:, 1] + 1).sum()) if len(spans) else 0


def overlap_graph(
    wcs_list: Sequence[Any],
    shapes: Sequence[Sequence[int]],
    stepsize: float | None = None,
) -> Any:
    """Table of all overlapping pairs of images.

    Parameters
    ----------
    wcs_list : sequence
        One WCS per image (anything `skyeq.wcs.as_wcs_adapter` accepts).
    shapes : sequence of tuple of int
        One shape ``(ny, nx)`` per image.
    stepsize : float, optional
        Outline sampling, see `footprint`.

    Returns
    -------
    astropy.table.Table
        One row per overlapping pair with columns ``i``, ``j`` (``i < j``),
        ``area`` (steradians), ``npix_i`` and ``npix_j`` (pixels of each image whose
        centres lie in the overlap).
    """
    from astropy.table import Table

    adapters = _checked_adapters(wcs_list, shapes)
    fps = [footprint(a, a.shape, stepsize=stepsize) for a in adapters]
    pairs, ovs = find_overlaps(fps)
    npix = np.zeros((len(pairs), 2), dtype=np.int64)
    for img in range(len(fps)):
        for side in (0, 1):
            rows = np.flatnonzero(pairs[:, side] == img)
            if len(rows) == 0:
                continue
            spans = overlap_spans_many([ovs[r] for r in rows], adapters[img], fps[img].shape)
            npix[rows, side] = [_npix(s) for s in spans]
    table = Table(
        {
            "i": pairs[:, 0],
            "j": pairs[:, 1],
            "area": np.array([o.area for o in ovs], dtype=float),
            "npix_i": npix[:, 0],
            "npix_j": npix[:, 1],
        }
    )
    table["area"].unit = "sr"
    return table
