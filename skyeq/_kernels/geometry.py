"""Numba kernels of the footprint geometry: rings, tangent-plane clipping, pixel spans.

Thread-safe and stateless like every kernel (see `skyeq._kernels`). Bad input (NaN
vertices, degenerate polygons) gives empty results or a status code, never an
exception.

* A *ring* is an open polygon (the first vertex is not repeated), counter-clockwise.
  On the sphere, rings are ``(m, 3)`` unit vectors and "counter-clockwise" is seen from
  outside the sphere; in a tangent plane they are two coordinate arrays.
* Gnomonic (tangent-plane) projection at a unit vector ``t`` with the basis
  ``(e1, e2, t)`` (right-handed) maps great circles to straight lines and keeps the
  orientation, so convexity and counter-clockwise order carry over unchanged.
* Collections of variable-length items are stored CSR-style: a flat array plus an
  offsets array with one more entry than there are items.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import chebyshev

__all__ = [
    "convex_parts",
    "intersect_pairs",
    "ring_area",
    "scan_spans",
    "warmup",
]

# A turn whose sine (relative to the two edge lengths) is above -_TURN_TOL counts as
# convex. Vertices sampled along a straight (great-circle) edge are collinear to
# about 1e-16, so the tolerance only absorbs rounding; a dent this small moves a
# boundary by at most 1e-10 times an edge length.
_TURN_TOL = 1e-10
# Largest number of (non-collinear) vertices for which a non-convex ring is split
# into convex parts; larger non-convex rings are left to the spherical fallback.
_MAX_DECOMPOSE = 512
# A pixel centre this close (pixels, along its row) to a polygon edge counts as on the
# edge. Pieces of one overlap share internal edges whose crossings each piece computes
# with its own rounding; without this slack a centre lying exactly on such an edge can
# fall between the two pieces (1e-16 apart) and be lost from the union.
_EDGE_SLACK = 1e-7


# Every njit function the geometry kernels call is defined in this module (no helper is
# shared with the statistics kernels, not even `skyeq._kernels.buffers.grow`): on a cold
# cache the two families may be compiled by two processes at once (see
# `skyeq._kernels.background`), and numba's cache index of one function is not safe
# against two processes adding different signatures to it at the same time.

# --------------------------------------------------------------------------------------
# small vector helpers
# --------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _tangent_basis(t):
    """Return an orthonormal basis ``(e1, e2)`` of the plane tangent at ``t``.

    Parameters
    ----------
    t : ndarray, shape (3,)
        Unit vector of the tangent point.

    Returns
    -------
    e1, e2 : ndarray, shape (3,)
        Unit vectors with ``e1 x e2 = t``.
    """
    if abs(t[2]) < 0.9:
        ax, ay, az = 0.0, 0.0, 1.0
    else:
        ax, ay, az = 1.0, 0.0, 0.0
    # e1 = normalize(axis x t)
    e1 = np.empty(3)
    e1[0] = ay * t[2] - az * t[1]
    e1[1] = az * t[0] - ax * t[2]
    e1[2] = ax * t[1] - ay * t[0]
    n = np.sqrt(e1[0] ** 2 + e1[1] ** 2 + e1[2] ** 2)
    e1 /= n
    # e2 = t x e1
    e2 = np.empty(3)
    e2[0] = t[1] * e1[2] - t[2] * e1[1]
    e2[1] = t[2] * e1[0] - t[0] * e1[2]
    e2[2] = t[0] * e1[1] - t[1] * e1[0]
    return e1, e2


@njit(cache=True, nogil=True)
def _project(v, t, e1, e2):
    """Gnomonic projection of unit vectors onto the plane tangent at ``t``.

    Parameters
    ----------
    v : ndarray, shape (m, 3)
        Unit vectors.
    t, e1, e2 : ndarray, shape (3,)
        Tangent point and plane basis from `_tangent_basis`.

    Returns
    -------
    px, py : ndarray, shape (m,)
        Plane coordinates (radians at the tangent point).
    cosd : ndarray, shape (m,)
        Cosine of the angle between each vector and ``t``; the projection is only
        meaningful where it is positive.
    """
    m = v.shape[0]
    px = np.empty(m)
    py = np.empty(m)
    cosd = np.empty(m)
    for i in range(m):
        c = v[i, 0] * t[0] + v[i, 1] * t[1] + v[i, 2] * t[2]
        cosd[i] = c
        if c == 0.0:  # on the horizon: no projection (and no ZeroDivisionError)
            px[i] = np.nan
            py[i] = np.nan
            continue
        px[i] = (v[i, 0] * e1[0] + v[i, 1] * e1[1] + v[i, 2] * e1[2]) / c
        py[i] = (v[i, 0] * e2[0] + v[i, 1] * e2[1] + v[i, 2] * e2[2]) / c
    return px, py, cosd


@njit(cache=True, nogil=True)
def _tri_excess(c, a, b):
    """Signed area (spherical excess) of the great-circle triangle ``(c, a, b)``.

    Uses the Oosterom-Strackee formula
    ``tan(E/2) = det[c, a, b] / (1 + c.a + a.b + b.c)`` with the determinant computed
    from differences to ``c``, which keeps full relative precision for small
    triangles.

    Parameters
    ----------
    c, a, b : ndarray, shape (3,)
        Unit vectors.

    Returns
    -------
    float
        Area in steradians, positive when ``c, a, b`` turn counter-clockwise.
    """
    ax = a[0] - c[0]
    ay = a[1] - c[1]
    az = a[2] - c[2]
    bx = b[0] - c[0]
    by = b[1] - c[1]
    bz = b[2] - c[2]
    det = c[0] * (ay * bz - az * by) + c[1] * (az * bx - ax * bz) + c[2] * (ax * by - ay * bx)
    den = (
        1.0
        + (c[0] * a[0] + c[1] * a[1] + c[2] * a[2])
        + (a[0] * b[0] + a[1] * b[1] + a[2] * b[2])
        + (b[0] * c[0] + b[1] * c[1] + b[2] * c[2])
    )
    return 2.0 * np.arctan2(det, den)


@njit(cache=True, nogil=True)
def ring_area(v, apex):
    """Signed spherical area of a great-circle ring by a triangle fan from ``apex``.

    Exact (to rounding) for any ring lying in the open hemisphere centred on
    ``apex``.

    Parameters
    ----------
    v : ndarray, shape (m, 3)
        Open ring of unit vectors.
    apex : ndarray, shape (3,)
        Unit vector; every vertex must be within 90 degrees of it.

    Returns
    -------
    float
        Area in steradians, positive for a counter-clockwise ring; 0 for fewer than
        3 vertices.
    """
    m = v.shape[0]
    if m < 3:
        return 0.0
    s = 0.0
    for i in range(m):
        j = i + 1 if i + 1 < m else 0
        s += _tri_excess(apex, v[i], v[j])
    return s


@njit(cache=True, nogil=True)
def _turn(ax, ay, bx, by, cx, cy):
    """Sine of the turn at ``b`` of the path ``a -> b -> c`` (positive = left turn).

    Parameters
    ----------
    ax, ay, bx, by, cx, cy : float
        Plane coordinates of the three points.

    Returns
    -------
    float
        ``cross(b - a, c - b) / (|b - a| |c - b|)``; NaN for a zero-length edge.
    """
    ux = bx - ax
    uy = by - ay
    wx = cx - bx
    wy = cy - by
    n = np.sqrt(ux * ux + uy * uy) * np.sqrt(wx * wx + wy * wy)
    if n == 0.0:
        return np.nan
    return (ux * wy - uy * wx) / n


# --------------------------------------------------------------------------------------
# convexity and convex decomposition (Hertel-Mehlhorn on an ear-clipping triangulation)
# --------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _ring_convexity(px, py):
    """Classify a counter-clockwise planar ring.

    Parameters
    ----------
    px, py : ndarray, shape (m,)
        Open ring.

    Returns
    -------
    int
        1 if convex (every turn above ``-_TURN_TOL``), 0 if simple-looking but not
        convex (total turning is one full turn), -1 if invalid (zero-length edge,
        NaN, or total turning other than one full counter-clockwise turn).
    """
    m = px.shape[0]
    if m < 3:
        return -1
    convex = True
    total = 0.0
    for i in range(m):
        a = i - 1 if i > 0 else m - 1
        c = i + 1 if i + 1 < m else 0
        s = _turn(px[a], py[a], px[i], py[i], px[c], py[c])
        if not np.isfinite(s):
            return -1
        if s < -_TURN_TOL:
            convex = False
        ux = px[i] - px[a]
        uy = py[i] - py[a]
        wx = px[c] - px[i]
        wy = py[c] - py[i]
        total += np.arctan2(ux * wy - uy * wx, ux * wx + uy * wy)
    if abs(total - 2.0 * np.pi) > 1e-6:
        return -1
    return 1 if convex else 0


@njit(cache=True, nogil=True)
def _point_in_triangle(x, y, ax, ay, bx, by, cx, cy):
    """Return True if ``(x, y)`` lies inside or on the counter-clockwise triangle.

    Parameters
    ----------
    x, y : float
        The point.
    ax, ay, bx, by, cx, cy : float
        Triangle vertices, counter-clockwise.

    Returns
    -------
    bool
        True when inside or on the boundary.
    """
    d1 = (bx - ax) * (y - ay) - (by - ay) * (x - ax)
    d2 = (cx - bx) * (y - by) - (cy - by) * (x - bx)
    d3 = (ax - cx) * (y - cy) - (ay - cy) * (x - cx)
    return d1 >= 0.0 and d2 >= 0.0 and d3 >= 0.0


@njit(cache=True, nogil=True)
def _ear_clip(qx, qy):
    """Triangulate a simple counter-clockwise ring by ear clipping.

    Parameters
    ----------
    qx, qy : ndarray, shape (n,)
        Open ring without collinear or repeated vertices.

    Returns
    -------
    tris : ndarray of int64, shape (n - 2, 3)
        Counter-clockwise triangles as vertex indices.
    ok : bool
        False if no ear could be found (the ring is not simple).
    """
    n = qx.shape[0]
    tris = np.zeros((max(n - 2, 0), 3), dtype=np.int64)
    prv = np.empty(n, dtype=np.int64)
    nxt = np.empty(n, dtype=np.int64)
    for i in range(n):
        prv[i] = i - 1 if i > 0 else n - 1
        nxt[i] = i + 1 if i + 1 < n else 0
    remaining = n
    k = 0
    i = 0
    misses = 0
    while remaining > 3:
        p = prv[i]
        q = nxt[i]
        ear = False
        cr = (qx[i] - qx[p]) * (qy[q] - qy[i]) - (qy[i] - qy[p]) * (qx[q] - qx[i])
        if cr > 0.0:
            ear = True
            j = nxt[q]
            while j != p:
                if _point_in_triangle(qx[j], qy[j], qx[p], qy[p], qx[i], qy[i], qx[q], qy[q]):
                    ear = False
                    break
                j = nxt[j]
        if ear:
            tris[k, 0] = p
            tris[k, 1] = i
            tris[k, 2] = q
            k += 1
            nxt[p] = q
            prv[q] = p
            remaining -= 1
            i = p
            misses = 0
        else:
            i = q
            misses += 1
            if misses > remaining:
                return tris, False
    p = prv[i]
    q = nxt[i]
    tris[k, 0] = p
    tris[k, 1] = i
    tris[k, 2] = q
    return tris, True


@njit(cache=True, nogil=True)
def _merge_convex(qx, qy, tris):
    """Merge triangles into convex parts (Hertel-Mehlhorn).

    A diagonal of the triangulation is removed whenever the two parts it separates
    stay convex at both of its ends. The result has at most four times the minimal
    number of convex parts.

    Parameters
    ----------
    qx, qy : ndarray, shape (n,)
        The ring that was triangulated.
    tris : ndarray of int64, shape (n - 2, 3)
        Counter-clockwise triangles from `_ear_clip`.

    Returns
    -------
    idx : ndarray of int64
        Concatenated counter-clockwise parts (vertex indices into the ring).
    off : ndarray of int64
        Part offsets into ``idx`` (one more entry than parts).
    """
    n = qx.shape[0]
    nt = tris.shape[0]
    ring = np.zeros((nt, n), dtype=np.int64)
    rlen = np.zeros(nt, dtype=np.int64)
    alive = np.ones(nt, dtype=np.bool_)
    for k in range(nt):
        ring[k, 0] = tris[k, 0]
        ring[k, 1] = tris[k, 1]
        ring[k, 2] = tris[k, 2]
        rlen[k] = 3
    for k in range(nt):
        for e in range(3):
            a = tris[k, e]
            b = tris[k, (e + 1) % 3]
            # boundary edges of the ring go from i to i + 1; skip them and visit each
            # diagonal once (from the triangle holding a -> b with a < b)
            if b == (a + 1) % n or a > b:
                continue
            # find the alive part holding a -> b and the one holding b -> a
            pa = -1
            ia = -1
            pb = -1
            jb = -1
            for r in range(nt):
                if not alive[r]:
                    continue
                m = rlen[r]
                for s in range(m):
                    u = ring[r, s]
                    w = ring[r, (s + 1) % m]
                    if u == a and w == b:
                        pa = r
                        ia = s
                    elif u == b and w == a:
                        pb = r
                        jb = s
            if pa < 0 or pb < 0 or pa == pb:
                continue
            ma = rlen[pa]
            mb = rlen[pb]
            # merged ring: part A from b round to a, then part B strictly between a and b
            a_prev = ring[pa, (ia - 1 + ma) % ma]
            b_next = ring[pa, (ia + 2) % ma]
            a_next = ring[pb, (jb + 2) % mb]
            b_prev = ring[pb, (jb - 1 + mb) % mb]
            ta = _turn(qx[a_prev], qy[a_prev], qx[a], qy[a], qx[a_next], qy[a_next])
            tb = _turn(qx[b_prev], qy[b_prev], qx[b], qy[b], qx[b_next], qy[b_next])
            if not (ta >= -_TURN_TOL and tb >= -_TURN_TOL):
                continue
            merged = np.empty(ma + mb - 2, dtype=np.int64)
            c = 0
            for s in range(ma):
                merged[c] = ring[pa, (ia + 1 + s) % ma]
                c += 1
            for s in range(mb - 2):
                merged[c] = ring[pb, (jb + 2 + s) % mb]
                c += 1
            for s in range(c):
                ring[pa, s] = merged[s]
            rlen[pa] = c
            alive[pb] = False
    total = 0
    nparts = 0
    for r in range(nt):
        if alive[r]:
            total += rlen[r]
            nparts += 1
    idx = np.empty(total, dtype=np.int64)
    off = np.empty(nparts + 1, dtype=np.int64)
    off[0] = 0
    c = 0
    p = 0
    for r in range(nt):
        if alive[r]:
            for s in range(rlen[r]):
                idx[c] = ring[r, s]
                c += 1
            p += 1
            off[p] = c
    return idx, off


@njit(cache=True, nogil=True)
def convex_parts(v, centre):
    """Split a counter-clockwise spherical ring into convex parts.

    Convexity is decided in the gnomonic projection at ``centre`` (it does not depend
    on the tangent point). A convex ring is one part made of all its vertices. A
    non-convex ring has its (nearly) collinear vertices dropped, is triangulated by
    ear clipping and the triangles are merged into convex parts.

    Parameters
    ----------
    v : ndarray, shape (m, 3)
        Open counter-clockwise ring of unit vectors, all within 90 degrees of
        ``centre``.
    centre : ndarray, shape (3,)
        Unit vector used as tangent point.

    Returns
    -------
    idx : ndarray of int64
        Concatenated parts, as indices into ``v``, each counter-clockwise.
    off : ndarray of int64
        Part offsets into ``idx``.
    status : int
        0 convex (one part), 1 decomposed, 2 failed (invalid or self-intersecting
        ring, or too many vertices; ``idx`` and ``off`` describe zero parts).
    """
    m = v.shape[0]
    empty_idx = np.zeros(0, dtype=np.int64)
    empty_off = np.zeros(1, dtype=np.int64)
    e1, e2 = _tangent_basis(centre)
    px, py, cosd = _project(v, centre, e1, e2)
    for i in range(m):
        if not (cosd[i] > 0.0):
            return empty_idx, empty_off, 2
    kind = _ring_convexity(px, py)
    if kind == 1:
        idx = np.empty(m, dtype=np.int64)
        for i in range(m):
            idx[i] = i
        off = np.zeros(2, dtype=np.int64)
        off[1] = m
        return idx, off, 0
    if kind < 0:
        return empty_idx, empty_off, 2
    # drop (nearly) collinear vertices, then triangulate what is left
    keep = np.empty(m, dtype=np.int64)
    nk = 0
    for i in range(m):
        a = i - 1 if i > 0 else m - 1
        c = i + 1 if i + 1 < m else 0
        s = _turn(px[a], py[a], px[i], py[i], px[c], py[c])
        if abs(s) > _TURN_TOL:
            keep[nk] = i
            nk += 1
    if nk < 3 or nk > _MAX_DECOMPOSE:
        return empty_idx, empty_off, 2
    keep = keep[:nk]
    qx = px[keep]
    qy = py[keep]
    tris, ok = _ear_clip(qx, qy)
    if not ok:
        return empty_idx, empty_off, 2
    idx, off = _merge_convex(qx, qy, tris)
    return keep[idx], off, 1


# --------------------------------------------------------------------------------------
# pairwise intersections
# --------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _clip_convex(sx, sy, ns, cx, cy, nc, ax, ay, bx, by, d):
    """Clip a convex polygon by a convex polygon (Sutherland-Hodgman).

    Points on a clip edge count as inside. The intersection with a clip line is
    placed on the subject edge with the parameter ``dp / (dp - dq)`` of the signed
    distances, which always lies in [0, 1], so nearly parallel edges (identical
    footprints) can never throw a vertex far away.

    Parameters
    ----------
    sx, sy : ndarray
        Subject ring (first ``ns`` entries used).
    ns : int
        Number of subject vertices.
    cx, cy : ndarray
        Counter-clockwise convex clip ring (first ``nc`` entries used).
    nc : int
        Number of clip vertices.
    ax, ay, bx, by, d : ndarray
        Work buffers, each at least ``2 * (ns + nc) + 4`` long.

    Returns
    -------
    n : int
        Number of result vertices, stored in ``ax[:n]``, ``ay[:n]``; -1 when a work
        buffer would overflow (cannot happen for convex input).
    """
    cap = ax.shape[0]
    n = ns
    for k in range(n):
        ax[k] = sx[k]
        ay[k] = sy[k]
    for e in range(nc):
        if n == 0:
            break
        x0 = cx[e]
        y0 = cy[e]
        f = e + 1 if e + 1 < nc else 0
        ex = cx[f] - x0
        ey = cy[f] - y0
        for k in range(n):
            d[k] = ex * (ay[k] - y0) - ey * (ax[k] - x0)
        m = 0
        for k in range(n):
            k1 = k + 1 if k + 1 < n else 0
            dp = d[k]
            dq = d[k1]
            if dp >= 0.0:
                if m >= cap:
                    return -1
                bx[m] = ax[k]
                by[m] = ay[k]
                m += 1
            if (dp > 0.0 and dq < 0.0) or (dp < 0.0 and dq > 0.0):
                if m >= cap:
                    return -1
                t = dp / (dp - dq)
                bx[m] = ax[k] + t * (ax[k1] - ax[k])
                by[m] = ay[k] + t * (ay[k1] - ay[k])
                m += 1
        for k in range(m):
            ax[k] = bx[k]
            ay[k] = by[k]
        n = m
    return n


@njit(cache=True, nogil=True)
def _grow_rows(buf, need):
    """Return ``buf`` or a larger copy of it holding at least ``need`` rows.

    Parameters
    ----------
    buf : ndarray, shape (cap, 3)
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
    for i in range(buf.shape[0]):  # loops, not slices: see `skyeq._kernels.buffers`
        for j in range(buf.shape[1]):
            new[i, j] = buf[i, j]
    return new


@njit(cache=True, nogil=True)
def _grow1(buf, need):
    """Return ``buf`` or a larger copy of it holding at least ``need`` entries.

    Parameters
    ----------
    buf : ndarray, 1-D
        Buffer.
    need : int
        Required length.

    Returns
    -------
    ndarray
        ``buf`` itself if large enough, else a copy twice the needed length.
    """
    if need <= buf.shape[0]:
        return buf
    new = np.empty(2 * need, dtype=buf.dtype)
    for i in range(buf.shape[0]):
        new[i] = buf[i]
    return new


@njit(cache=True, nogil=True)
def intersect_pairs(
    verts, vert_off, part_idx, part_off, fp_part, centres, radii, pairs, cos_limit, min_width
):
    """Exact intersections of pairs of footprints in the pair's gnomonic plane.

    For each pair ``(a, b)`` the tangent point is the normalised sum of the two
    footprint centres. Every convex part of ``a`` is clipped by every convex part of
    ``b`` (Sutherland-Hodgman); the non-empty results are the pieces of the overlap,
    with disjoint interiors. Pieces narrower than ``min_width`` radians
    (``2 * area / perimeter``) are dropped: they are what touching footprints leave.

    Parameters
    ----------
    verts : ndarray, shape (N, 3)
        Counter-clockwise rings of all footprints, concatenated.
    vert_off : ndarray of int64, shape (F + 1,)
        Ring offsets into ``verts``.
    part_idx : ndarray of int64
        Convex parts of all footprints, as indices local to each footprint's ring.
    part_off : ndarray of int64
        Part offsets into ``part_idx``.
    fp_part : ndarray of int64, shape (F + 1,)
        Offsets of each footprint's parts in ``part_off``; a footprint with no parts
        (decomposition failed) sends its pairs to the fallback.
    centres : ndarray, shape (F, 3)
        Footprint centres (unit vectors).
    radii : ndarray, shape (F,)
        Cap radii in radians: every vertex is within this angle of the centre.
    pairs : ndarray of int64, shape (K, 2)
        Footprint index pairs.
    cos_limit : float
        Every vertex of both footprints must be within ``arccos(cos_limit)`` of the
        tangent point, else the pair goes to the fallback.
    min_width : float
        Width (radians) below which a piece is dropped.

    Returns
    -------
    out : ndarray, shape (M, 3)
        Counter-clockwise piece vertices (unit vectors), concatenated.
    piece_off : ndarray of int64, shape (P + 1,)
        Piece offsets into ``out``.
    pair_off : ndarray of int64, shape (K + 1,)
        Offsets of each pair's pieces in ``piece_off``.
    area : ndarray, shape (K,)
        Overlap area (steradians) of each pair; NaN where ``status`` is 1.
    status : ndarray of int64, shape (K,)
        0 computed (possibly empty), 1 needs the spherical fallback.
    """
    npair = pairs.shape[0]
    out = np.empty((64, 3))
    piece_off = np.zeros(16, dtype=np.int64)
    pair_off = np.zeros(npair + 1, dtype=np.int64)
    area = np.zeros(npair)
    status = np.zeros(npair, dtype=np.int64)
    nout = 0
    npiece = 0
    t = np.empty(3)
    for k in range(npair):
        a = pairs[k, 0]
        b = pairs[k, 1]
        pair_off[k] = npiece
        ca = centres[a]
        cb = centres[b]
        dot = ca[0] * cb[0] + ca[1] * cb[1] + ca[2] * cb[2]
        dot = min(1.0, max(-1.0, dot))
        sep = np.arccos(dot)
        if not (sep <= radii[a] + radii[b] + 1e-12):
            continue  # caps apart: empty (also NaN-safe)
        if fp_part[a + 1] == fp_part[a] or fp_part[b + 1] == fp_part[b]:
            status[k] = 1
            area[k] = np.nan
            continue
        t[0] = ca[0] + cb[0]
        t[1] = ca[1] + cb[1]
        t[2] = ca[2] + cb[2]
        tn = np.sqrt(t[0] ** 2 + t[1] ** 2 + t[2] ** 2)
        if not (tn > 1e-8):
            status[k] = 1
            area[k] = np.nan
            continue
        t /= tn
        e1, e2 = _tangent_basis(t)
        va = verts[vert_off[a] : vert_off[a + 1]]
        vb = verts[vert_off[b] : vert_off[b + 1]]
        pax, pay, ca_ = _project(va, t, e1, e2)
        pbx, pby, cb_ = _project(vb, t, e1, e2)
        if not (ca_.min() > cos_limit and cb_.min() > cos_limit):
            status[k] = 1
            area[k] = np.nan
            continue
        total = 0.0
        for pa in range(fp_part[a], fp_part[a + 1]):
            ia = part_idx[part_off[pa] : part_off[pa + 1]]
            na = ia.shape[0]
            sx = pax[ia]
            sy = pay[ia]
            for pb in range(fp_part[b], fp_part[b + 1]):
                ib = part_idx[part_off[pb] : part_off[pb + 1]]
                nb = ib.shape[0]
                cx = pbx[ib]
                cy = pby[ib]
                # bounding-box rejection
                if (
                    sx.max() < cx.min()
                    or cx.max() < sx.min()
                    or sy.max() < cy.min()
                    or cy.max() < sy.min()
                ):
                    continue
                cap = 2 * (na + nb) + 4
                wx = np.empty(cap)
                wy = np.empty(cap)
                ux = np.empty(cap)
                uy = np.empty(cap)
                dd = np.empty(cap)
                n = _clip_convex(sx, sy, na, cx, cy, nb, wx, wy, ux, uy, dd)
                if n < 0:
                    status[k] = 1
                    break
                # drop repeated consecutive points (rounding-level duplicates)
                m = 0
                for s in range(n):
                    if m > 0 and abs(wx[s] - ux[m - 1]) <= 1e-15 and abs(
                        wy[s] - uy[m - 1]
                    ) <= 1e-15:
                        continue
                    ux[m] = wx[s]
                    uy[m] = wy[s]
                    m += 1
                while m > 1 and abs(ux[m - 1] - ux[0]) <= 1e-15 and abs(uy[m - 1] - uy[0]) <= 1e-15:
                    m -= 1
                if m < 3:
                    continue
                # back to the sphere
                piece = np.empty((m, 3))
                per = 0.0
                for s in range(m):
                    x = t[0] + ux[s] * e1[0] + uy[s] * e2[0]
                    y = t[1] + ux[s] * e1[1] + uy[s] * e2[1]
                    z = t[2] + ux[s] * e1[2] + uy[s] * e2[2]
                    r = np.sqrt(x * x + y * y + z * z)
                    piece[s, 0] = x / r
                    piece[s, 1] = y / r
                    piece[s, 2] = z / r
                for s in range(m):
                    s1 = s + 1 if s + 1 < m else 0
                    dx = piece[s1, 0] - piece[s, 0]
                    dy = piece[s1, 1] - piece[s, 1]
                    dz = piece[s1, 2] - piece[s, 2]
                    per += np.sqrt(dx * dx + dy * dy + dz * dz)
                pa_area = ring_area(piece, t)
                if not (pa_area > 0.0) or 2.0 * pa_area < min_width * per:
                    continue
                total += pa_area
                out = _grow_rows(out, nout + m)
                for s in range(m):
                    out[nout + s, 0] = piece[s, 0]
                    out[nout + s, 1] = piece[s, 1]
                    out[nout + s, 2] = piece[s, 2]
                nout += m
                piece_off = _grow1(piece_off, npiece + 2)
                npiece += 1
                piece_off[npiece] = nout
            if status[k] == 1:
                break
        if status[k] == 1:
            # discard whatever this pair produced; the fallback recomputes it
            npiece = pair_off[k]
            nout = piece_off[npiece]
            area[k] = np.nan
            continue
        area[k] = total
    pair_off[npair] = npiece
    return out[:nout].copy(), piece_off[: npiece + 1].copy(), pair_off, area, status


# --------------------------------------------------------------------------------------
# scan conversion of pixel-frame polygons into row spans
# --------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _add_span(spans, ns, row, x0, x1, nx):
    """Append the columns whose centres lie in ``[x0, x1]`` (widened by `_EDGE_SLACK`).

    Parameters
    ----------
    spans : ndarray of int64, shape (cap, 3)
        Span buffer.
    ns : int
        Number of spans already in the buffer.
    row : int
        Image row.
    x0, x1 : float
        Closed interval of x coordinates.
    nx : int
        Image width (columns are clipped to ``0 .. nx - 1``).

    Returns
    -------
    spans : ndarray
        The buffer (possibly grown).
    ns : int
        New number of spans.
    """
    if not x0 <= x1:  # also catches NaN from overflowing interpolation
        return spans, ns
    # clamp before converting to int (huge coordinates must not overflow)
    lo = np.ceil(min(max(x0 - _EDGE_SLACK, -1.0), float(nx)))
    hi = np.floor(max(min(x1 + _EDGE_SLACK, float(nx)), -1.0))
    c0 = max(int(lo), 0)
    c1 = min(int(hi), nx - 1)
    if c0 > c1:
        return spans, ns
    spans = _grow_rows(spans, ns + 1)
    spans[ns, 0] = row
    spans[ns, 1] = c0
    spans[ns, 2] = c1
    return spans, ns + 1


@njit(cache=True, nogil=True, inline="always")
def _edge_rows(ya, yb, r0, r1, ny):
    """Rows ``lo..hi`` (within ``r0..r1``) whose centres an edge from ``ya`` to ``yb`` crosses.

    The edge covers the rows ``ceil(min(ya, yb)) .. ceil(max(ya, yb)) - 1`` (half-open
    in y, so a vertex on a row counts once), with ``y`` clamped to ``[-1, ny]`` before
    the integer conversion. Shared by the counting and the filling pass of the scan.
    """
    ylo = min(ya, yb)
    yhi = max(ya, yb)
    lo = max(r0, int(np.ceil(min(max(ylo, -1.0), float(ny)))))
    hi = min(r1, int(np.ceil(max(min(yhi, float(ny)), -1.0))) - 1)
    return lo, hi


@njit(cache=True, nogil=True)
def _scan_piece(px, py, ny, nx, spans, ns):
    """Append the spans of pixel centres inside one closed polygon.

    Interior intervals come from edge crossings of each row (an edge holds rows
    ``ylo <= row < yhi``, so each vertex is counted once) paired left to right
    (even-odd rule). The closed boundary is added explicitly: vertices lying on a
    row and horizontal edges on a row give their own intervals.

    Parameters
    ----------
    px, py : ndarray
        Open ring in pixel coordinates (centres at integers).
    ny, nx : int
        Image shape.
    spans : ndarray of int64, shape (cap, 3)
        Span buffer.
    ns : int
        Number of spans already in the buffer.

    Returns
    -------
    spans : ndarray
        The buffer (possibly grown).
    ns : int
        New number of spans.
    """
    m = px.shape[0]
    if m < 3:
        return spans, ns
    for i in range(m):
        if not (np.isfinite(px[i]) and np.isfinite(py[i])):
            return spans, ns
    ymin = py.min()
    ymax = py.max()
    r0 = max(0, int(np.ceil(min(max(ymin, -1.0), float(ny)))))
    r1 = min(ny - 1, int(np.floor(max(min(ymax, float(ny)), -1.0))))
    if r0 > r1:
        return spans, ns
    nr = r1 - r0 + 1
    cnt = np.zeros(nr + 1, dtype=np.int64)
    for i in range(m):
        j = i + 1 if i + 1 < m else 0
        ya = py[i]
        yb = py[j]
        if ya == yb:
            continue
        lo, hi = _edge_rows(ya, yb, r0, r1, ny)
        for r in range(lo, hi + 1):
            cnt[r - r0 + 1] += 1
    for r in range(nr):
        cnt[r + 1] += cnt[r]
    xs = np.empty(cnt[nr])
    fill = cnt[:nr].copy()
    for i in range(m):
        j = i + 1 if i + 1 < m else 0
        xa = px[i]
        ya = py[i]
        xb = px[j]
        yb = py[j]
        if ya == yb:
            continue
        lo, hi = _edge_rows(ya, yb, r0, r1, ny)
        for r in range(lo, hi + 1):
            xs[fill[r - r0]] = xa + (r - ya) * (xb - xa) / (yb - ya)
            fill[r - r0] += 1
    for r in range(nr):
        a = cnt[r]
        b = cnt[r + 1]
        # insertion sort: few crossings per row
        for u in range(a + 1, b):
            v = xs[u]
            w = u - 1
            while w >= a and xs[w] > v:
                xs[w + 1] = xs[w]
                w -= 1
            xs[w + 1] = v
        for u in range(a, b - 1, 2):
            spans, ns = _add_span(spans, ns, r + r0, xs[u], xs[u + 1], nx)
    # closed boundary: vertices on rows and horizontal edges on rows
    for i in range(m):
        y = py[i]
        if y == np.floor(y) and r0 <= y <= r1:
            j = i + 1 if i + 1 < m else 0
            if py[j] == y:
                spans, ns = _add_span(spans, ns, int(y), min(px[i], px[j]), max(px[i], px[j]), nx)
            else:
                spans, ns = _add_span(spans, ns, int(y), px[i], px[i], nx)
    return spans, ns


@njit(cache=True, nogil=True)
def _merge_spans(spans, ns):
    """Sort spans by row and first column and merge overlapping or adjacent ones.

    The sort is a counting sort on the row followed by an insertion sort of each row's
    few spans on their first column (cheaper to compile than ``np.argsort``).

    Parameters
    ----------
    spans : ndarray of int64, shape (cap, 3)
        Span buffer.
    ns : int
        Number of spans in the buffer.

    Returns
    -------
    ndarray of int64, shape (k, 3)
        Sorted, disjoint, non-adjacent spans (a new array).
    """
    if ns == 0:
        return np.zeros((0, 3), dtype=np.int64)
    rmin = spans[0, 0]
    rmax = spans[0, 0]
    for i in range(1, ns):
        r = spans[i, 0]
        if r < rmin:
            rmin = r
        elif r > rmax:
            rmax = r
    nrow = rmax - rmin + 1
    start = np.zeros(nrow + 1, dtype=np.int64)
    for i in range(ns):
        start[spans[i, 0] - rmin + 1] += 1
    for r in range(nrow):
        start[r + 1] += start[r]
    fill = start[:nrow].copy()
    order = np.empty(ns, dtype=np.int64)
    for i in range(ns):
        r = spans[i, 0] - rmin
        order[fill[r]] = i
        fill[r] += 1
    for r in range(nrow):
        for u in range(start[r] + 1, start[r + 1]):
            v = order[u]
            w = u - 1
            while w >= start[r] and spans[order[w], 1] > spans[v, 1]:
                order[w + 1] = order[w]
                w -= 1
            order[w + 1] = v
    res = np.empty((ns, 3), dtype=np.int64)
    k = -1
    for i in range(ns):
        s = order[i]
        r = spans[s, 0]
        c0 = spans[s, 1]
        c1 = spans[s, 2]
        if k >= 0 and res[k, 0] == r and c0 <= res[k, 2] + 1:
            if c1 > res[k, 2]:
                res[k, 2] = c1
        else:
            k += 1
            res[k, 0] = r
            res[k, 1] = c0
            res[k, 2] = c1
    return res[: k + 1].copy()


@njit(cache=True, nogil=True)
def scan_spans(px, py, piece_off, group_off, ny, nx):
    """Row spans of pixel centres inside polygons, one union per group of pieces.

    Parameters
    ----------
    px, py : ndarray
        Open rings in pixel coordinates (centres at integers), concatenated.
    piece_off : ndarray of int64, shape (P + 1,)
        Ring offsets into ``px``/``py``.
    group_off : ndarray of int64, shape (G + 1,)
        Offsets of each group's pieces in ``piece_off``.
    ny, nx : int
        Image shape.

    Returns
    -------
    spans : ndarray of int64, shape (k, 3)
        ``(row, first column, last column)`` with inclusive columns, for all groups
        concatenated; within a group rows ascend, spans are disjoint, and a pixel is
        listed when its centre lies inside or on the boundary of any of the group's
        pieces. Rings with a non-finite vertex are skipped.
    span_off : ndarray of int64, shape (G + 1,)
        Offsets of each group's spans.
    """
    ngroup = group_off.shape[0] - 1
    span_off = np.zeros(ngroup + 1, dtype=np.int64)
    out = np.empty((64, 3), dtype=np.int64)
    nout = 0
    buf = np.empty((64, 3), dtype=np.int64)
    for g in range(ngroup):
        # np.int64, not the literal 0: a literal argument would make numba compile
        # _scan_piece, _add_span and _merge_spans twice (for Literal[int](0) and int64)
        ns = np.int64(0)
        for p in range(group_off[g], group_off[g + 1]):
            a = piece_off[p]
            b = piece_off[p + 1]
            buf, ns = _scan_piece(px[a:b], py[a:b], ny, nx, buf, ns)
        merged = _merge_spans(buf, ns)
        k = merged.shape[0]
        out = _grow_rows(out, nout + k)
        for i in range(k):
            out[nout + i, 0] = merged[i, 0]
            out[nout + i, 1] = merged[i, 1]
            out[nout + i, 2] = merged[i, 2]
        nout += k
        span_off[g + 1] = nout
    return out[:nout].copy(), span_off


def warmup() -> None:
    """Compile (or load from the cache) the geometry kernels on tiny inputs.

    The fitted inverse of a gwcs (`skyeq._kernels.chebyshev`) is one of them.
    """
    chebyshev.warmup()
    sq = np.array([[1.0, -1e-3, -1e-3], [1.0, 1e-3, -1e-3], [1.0, 1e-3, 1e-3], [1.0, -1e-3, 1e-3]])
    sq /= np.sqrt((sq**2).sum(axis=1))[:, None]
    c = np.array([1.0, 0.0, 0.0])
    ring_area(sq, c)
    idx, _, _ = convex_parts(sq, c)
    dent = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [0.0, 0.2], [-1.0, 1.0]]) * 1e-3
    vd = np.column_stack((np.ones(5), dent))
    vd /= np.sqrt((vd**2).sum(axis=1))[:, None]
    convex_parts(vd, c)
    verts = np.vstack((sq, sq))
    intersect_pairs(
        verts,
        np.array([0, 4, 8], dtype=np.int64),
        np.concatenate((idx, idx)),
        np.array([0, 4, 8], dtype=np.int64),
        np.array([0, 1, 2], dtype=np.int64),
        np.vstack((c, c)),
        np.array([2e-3, 2e-3]),
        np.array([[0, 1]], dtype=np.int64),
        0.5,
        1e-11,
    )
    px = np.array([0.0, 3.0, 3.0, 0.0])
    py = np.array([0.0, 0.0, 2.0, 2.0])
    scan_spans(
        px, py, np.array([0, 4], dtype=np.int64), np.array([0, 1], dtype=np.int64), 4, 4
    )
