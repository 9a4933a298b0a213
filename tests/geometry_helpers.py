"""Geometry test helpers: sky-side truth for overlaps and pixel spans, independent of skyeq."""

import numpy as np


def edge_grid(shape, k=65):
    """A k x k grid of pixel positions from pixel edge to pixel edge."""
    ny, nx = shape
    x, y = np.meshgrid(np.linspace(-0.5, nx - 0.5, k), np.linspace(-0.5, ny - 0.5, k))
    return x.ravel(), y.ravel()


def round_trip(adapter, fwd, shape, k=65):
    """Largest pixel -> world (exact forward ``fwd``) -> pixel (adapter) error on a grid."""
    x, y = edge_grid(shape, k)
    ra, dec = fwd(x, y)
    xb, yb = adapter.world_to_pixel(ra, dec)
    return float(np.hypot(xb - x, yb - y).max())


def sky_of(w, x, y):
    """RA/Dec (degrees) of zero-based pixels through an astropy WCS or a gwcs."""
    if hasattr(w, "all_pix2world"):
        return w.all_pix2world(x, y, 0)
    return w(x, y, with_bounding_box=False)


def xyz(ra, dec):
    ra, dec = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], -1)


def inside_closed(px, py, vx, vy):
    """Closed point-in-polygon (even-odd interior plus the boundary), vectorised."""
    inside = np.zeros(px.shape, dtype=bool)
    on = np.zeros(px.shape, dtype=bool)
    m = len(vx)
    for i in range(m):
        x0, y0, x1, y1 = vx[i], vy[i], vx[(i + 1) % m], vy[(i + 1) % m]
        cond = (y0 > py) != (y1 > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            xint = x0 + (py - y0) * (x1 - x0) / (y1 - y0)
        inside ^= cond & (px < xint)
        cross = (x1 - x0) * (py - y0) - (y1 - y0) * (px - x0)
        on |= (
            (cross == 0)
            & (px >= min(x0, x1))
            & (px <= max(x0, x1))
            & (py >= min(y0, y1))
            & (py <= max(y0, y1))
        )
    return inside | on


def gnomonic(v, t):
    """Project unit vectors on the plane tangent at t (independent of the kernels)."""
    t = t / np.linalg.norm(t)
    a = np.array([0.0, 0.0, 1.0]) if abs(t[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    e1 = np.cross(a, t)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(t, e1)
    d = v @ t
    return (v @ e1) / d, (v @ e2) / d


def truth_mask(w_img, shape, outlines):
    """Pixels of an image whose centres lie inside every outline (sky test)."""
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    ra, dec = sky_of(w_img, xx.ravel(), yy.ravel())
    p = xyz(ra, dec)
    ok = np.ones(p.shape[0], dtype=bool)
    for ring in outlines:
        t = ring.mean(axis=0)
        vx, vy = gnomonic(ring, t)
        qx, qy = gnomonic(p, t)
        ok &= inside_closed(qx, qy, vx, vy)
    return ok.reshape(shape)


def boundary_distance_pix(w_img, shape, outlines, mask_pixels, scale_arcsec):
    """Distance (pixels) of given pixel centres to the nearest outline edge."""
    rows, cols = mask_pixels
    ra, dec = sky_of(w_img, cols.astype(float), rows.astype(float))
    p = xyz(ra, dec)
    best = np.full(len(rows), np.inf)
    for ring in outlines:
        t = ring.mean(axis=0)
        qx, qy = gnomonic(p, t)
        best = np.minimum(best, boundary_gap(qx, qy, *gnomonic(ring, t)))
    return best / np.radians(scale_arcsec / 3600.0)


def boundary_gap(qx, qy, vx, vy):
    """Distance of points to the nearest edge of a closed planar polygon."""
    best = np.full(len(qx), np.inf)
    m = len(vx)
    for i in range(m):
        ax, ay, bx, by = vx[i], vy[i], vx[(i + 1) % m], vy[(i + 1) % m]
        dx, dy = bx - ax, by - ay
        s = np.clip(((qx - ax) * dx + (qy - ay) * dy) / (dx * dx + dy * dy), 0, 1)
        best = np.minimum(best, np.hypot(qx - ax - s * dx, qy - ay - s * dy))
    return best


def misplaced_span_pixels(spans, w_img, shape, outlines, scale_arcsec, within=2e-3):
    """Pixels the spans get wrong against the sky truth; all must hug the boundary.

    The spans must list exactly the pixels whose centres lie inside every outline
    (tested on the sky), except pixels within ``within`` pixels of the boundary, where
    the densified polygon (1e-3 pixel from the true curved edge) may differ.

    Returns
    -------
    int
        How many pixels differ (each asserted to lie within ``within`` of an edge).
    """
    check_spans_format(spans, shape)
    got = spans_to_mask(spans, shape)
    diff = np.nonzero(got != truth_mask(w_img, shape, outlines))
    if len(diff[0]):
        d = boundary_distance_pix(w_img, shape, outlines, diff, scale_arcsec)
        assert d.max() < within, d.max()
    return len(diff[0])


def spans_to_mask(spans, shape):
    mask = np.zeros(shape, dtype=bool)
    for r, c0, c1 in spans:
        assert not mask[r, c0 : c1 + 1].any(), "a pixel listed twice"
        mask[r, c0 : c1 + 1] = True
    return mask


def check_spans_format(spans, shape):
    assert spans.dtype == np.int64
    assert spans.ndim == 2
    assert spans.shape[1] == 3
    if len(spans):
        assert np.all(np.diff(spans[:, 0]) >= 0)
        assert spans[:, 0].min() >= 0
        assert spans[:, 0].max() < shape[0]
        assert spans[:, 1].min() >= 0
        assert spans[:, 2].max() < shape[1]
        assert np.all(spans[:, 1] <= spans[:, 2])
