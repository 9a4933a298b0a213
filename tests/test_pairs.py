"""Pair offsets from co-located pixel differences (issue #15): the pixel map, the kernels
and `pair_difference`.

The map is checked against exact WCS round trips (TAN pairs, the real NIRCam distortion,
a kinked WCS no polynomial fits); the kernels against a numpy reference of the
documented sampling rule and against their pure-Python versions; `pair_difference`
recovers injected offsets through bright extended emission, with exact pixel counts
for masks on integer and half-pixel shifts.
"""

import logging
from pathlib import Path

import numpy as np
import pytest
from astropy.wcs import WCS
from nircam_helpers import load_nircam, subarray

from skyeq import SkyStat, synthetic
from skyeq import geometry as geo
from skyeq._kernels import pairs as kp
from skyeq._pairmap import _polyval2d, exact_positions, fit_pixel_map
from skyeq._pairs import pair_difference
from skyeq.wcs import as_wcs_adapter

DATA = Path(__file__).parent / "data"
SCALE = 0.1 / 3600  # degrees per pixel of the TAN test images
RA0, DEC0 = 150.0, 2.0
MEAN0 = SkyStat("mean", nclip=0)  # no clipping: every usable difference counts


# ------------------------------------------------------------------------- helpers


def tan(ra, dec, rot=0.0, shape=(256, 256)):
    """A TAN WCS with 0.1"/pixel, rotated by ``rot`` degrees, centred on the image."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [shape[1] / 2 + 0.5, shape[0] / 2 + 0.5]
    a = np.radians(rot)
    w.wcs.cd = SCALE * np.array([[-np.cos(a), np.sin(a)], [np.sin(a), np.cos(a)]])
    w.wcs.set()
    return w


def linear_pair(dx, dy, kink=0.0):
    """Callables WCS (fwd, inv) on a flat sky: world pixel ``x - dx, y - dy`` ...

    ... so that pixel (x, y) of a ``linear_pair(0, 0)`` image falls on pixel
    ``(x + dx, y + dy)`` of this one. ``kink`` bends the x axis at x = 100 (slope
    ``1 + kink`` beyond): a map no polynomial reproduces.
    """

    def bend(x):
        return x + kink * np.maximum(x - 100.0, 0.0)

    def unbend(u):
        return np.where(u > 100.0, 100.0 + (u - 100.0) / (1.0 + kink), u)

    def fwd(x, y):
        return (RA0 + bend(np.asarray(x, float) - dx) * SCALE,
                DEC0 + (np.asarray(y, float) - dy) * SCALE)

    def inv(ra, dec):
        return (unbend((np.asarray(ra) - RA0) / SCALE) + dx,
                (np.asarray(dec) - DEC0) / SCALE + dy)

    return fwd, inv


def sky(ra, dec, blob=40.0):
    """A smooth sky: a plane plus a Gaussian blob of peak ``blob`` (6" sigma) at RA0, DEC0."""
    e = (ra - RA0) * np.cos(np.radians(DEC0)) * 3600.0  # arcsec
    n = (dec - DEC0) * 3600.0
    return 0.3 * e - 0.2 * n + blob * np.exp(-0.5 * (e * e + n * n) / 36.0)


def render(wcs, shape, c, noise, rng, dtype=np.float64, blob=40.0):
    """Image of `sky` through ``wcs`` plus the constant ``c`` and Gaussian noise."""
    ad = as_wcs_adapter(wcs, shape=shape)
    y, x = np.mgrid[: shape[0], : shape[1]]
    ra, dec = ad.pixel_to_world(x, y)
    img = sky(ra, dec, blob) + c
    if noise:
        img = img + rng.normal(0.0, noise, shape)
    return img.astype(dtype)


def full_spans(shape):
    return np.array([[r, 0, shape[1] - 1] for r in range(shape[0])], dtype=np.int64)


def span_pixels(spans):
    x = np.concatenate([np.arange(c0, c1 + 1) for _, c0, c1 in spans])
    y = np.concatenate([np.full(c1 - c0 + 1, r) for r, c0, c1 in spans])
    return x, y


def overlap(wi, wj, shape):
    """Spans of the overlap of two images of ``shape`` in each of them."""
    fi, fj = geo.footprints([wi, wj], [shape, shape])
    ov = geo.intersect(fi, fj)
    return geo.overlap_spans(ov, wi, shape), geo.overlap_spans(ov, wj, shape)


def reference(data_i, good_i, data_j, good_j, spans, xj, yj):
    """The documented sampling rule in numpy: the differences, in span order."""
    x, y = span_pixels(spans)
    ny, nx = data_j.shape
    vi = data_i[y, x].astype(float)
    keep = np.isfinite(vi) & (True if good_i is None else good_i[y, x])
    with np.errstate(invalid="ignore"):
        inside = (xj > -kp.SNAP) & (xj < nx - 1 + kp.SNAP) & (yj > -kp.SNAP) & (
            yj < ny - 1 + kp.SNAP)
    xs = np.where(inside, xj, 0.0)
    ys = np.where(inside, yj, 0.0)
    corners = []
    for pos in (xs, ys):
        p0 = np.floor(pos).astype(int)
        t = pos - p0
        up = t >= 1 - kp.SNAP
        p0 = p0 + up
        t = np.where(up | (t <= kp.SNAP), 0.0, t)
        corners.append((p0, p0 + (t > 0), t))
    (x0, x1, tx), (y0, y1, ty) = corners
    ok = keep & inside
    vals = []
    for yy, xx in ((y0, x0), (y0, x1), (y1, x0), (y1, x1)):
        v = data_j[yy, xx].astype(float)
        ok &= np.isfinite(v) & (True if good_j is None else good_j[yy, xx])
        vals.append(v)
    a00, a01, a10, a11 = vals
    sample = (1 - ty) * ((1 - tx) * a00 + tx * a01) + ty * ((1 - tx) * a10 + tx * a11)
    return (vi - sample)[ok]


@pytest.fixture(scope="module")
def nircam():
    return load_nircam()


# ----------------------------------------------------------------------------- the map


def test_map_of_rotated_tan_pair_within_tolerance(caplog):
    shape = (256, 256)
    wi, wj = tan(RA0, DEC0), tan(RA0 + 0.002, DEC0 + 0.001, rot=1.0)  # ~(70, 36) pixels
    spans, _ = overlap(wi, wj, shape)
    with caplog.at_level(logging.DEBUG, logger="skyeq._pairmap"):
        pmap = fit_pixel_map(as_wcs_adapter(wi, shape=shape), as_wcs_adapter(wj, shape=shape),
                             spans)
    assert not pmap.exact and pmap.degree == 3 and pmap.error < 1e-4
    assert "degree 3" in caplog.text
    x, y = span_pixels(spans)
    xe, ye = exact_positions(as_wcs_adapter(wi), as_wcs_adapter(wj), x, y)
    xp, yp = pmap(x, y)
    assert np.hypot(xp - xe, yp - ye).max() < 1e-4
    assert np.hypot(xe - x, ye - y).min() > 30  # a real offset, not the identity


def test_map_of_nircam_dithers_within_tolerance(nircam):
    shape = (2048, 2048)
    ai = as_wcs_adapter(nircam, shape=shape)
    aj = as_wcs_adapter(synthetic.repoint(nircam, 3.0, -2.0), shape=shape)  # ~(95, 65) px
    spans = np.array([[r, 120, 1920] for r in range(120, 1921)], dtype=np.int64)
    pmap = fit_pixel_map(ai, aj, spans)
    assert not pmap.exact
    rng = np.random.default_rng(3)
    x = rng.uniform(120, 1920, 4000)
    y = rng.uniform(120, 1920, 4000)
    xe, ye = exact_positions(ai, aj, x, y)
    xp, yp = pmap(x, y)
    err = np.hypot(xp - xe, yp - ye)
    assert err.max() < 0.01
    assert pmap.error <= 0.01 and err.max() < 2 * pmap.error  # the check grid is honest
    # an affine map is not enough here: the distortion differs across the detector
    assert fit_pixel_map(ai, aj, spans, tolerance=1e-3).degree > 3



def test_map_evaluation_is_numpys_and_within_tolerance_of_the_wcs(nircam):
    # PixelMap.polynomial evaluates the power series by Horner in u, then v: the same
    # values as numpy's polyval2d, and within the tolerance of exact round trips through
    # the real NIRCam gwcs, at every degree the fit may choose
    shape = (2048, 2048)
    ai = as_wcs_adapter(nircam, shape=shape)
    aj = as_wcs_adapter(synthetic.repoint(nircam, 3.0, -2.0), shape=shape)
    spans = np.array([[r, 120, 1920] for r in range(120, 1921)], dtype=np.int64)
    rng = np.random.default_rng(8)
    x, y = rng.uniform(120, 1920, 3000), rng.uniform(120, 1920, 3000)
    xe, ye = exact_positions(ai, aj, x, y)
    degrees = set()
    for tol in (0.01, 1e-3, 2e-4):
        pmap = fit_pixel_map(ai, aj, spans, tolerance=tol)
        assert not pmap.exact
        degrees.add(pmap.degree)
        xp, yp = pmap(x, y)
        u = (x - pmap.norm[0]) * pmap.norm[1]
        v = (y - pmap.norm[2]) * pmap.norm[3]
        pv = np.polynomial.polynomial.polyval2d
        np.testing.assert_array_equal(xp, pv(u, v, pmap.coef_x))
        np.testing.assert_array_equal(yp, pv(u, v, pmap.coef_y))
        assert np.hypot(xp - xe, yp - ye).max() < tol
    assert len(degrees) >= 2


def test_map_falls_back_to_exact_calls_on_a_kinked_wcs(caplog):
    shape = (120, 200)
    ai = as_wcs_adapter(linear_pair(0.0, 0.0), shape=shape)
    aj = as_wcs_adapter(linear_pair(-7.3, 4.6, kink=0.3), shape=shape)
    spans = full_spans(shape)
    with caplog.at_level(logging.INFO, logger="skyeq._pairmap"):
        pmap = fit_pixel_map(ai, aj, spans)
    assert pmap.exact and pmap.degree == 5 and pmap.error > 0.01
    assert "exact WCS calls" in caplog.text
    x, y = span_pixels(spans)
    xe, ye = exact_positions(ai, aj, x, y)
    xm, ym = pmap(x, y)
    np.testing.assert_array_equal(xm, xe)
    np.testing.assert_array_equal(ym, ye)
    # and the differences through the exact path are the reference's
    rng = np.random.default_rng(4)
    di = render(linear_pair(0.0, 0.0), shape, 3.0, 0.5, rng)
    dj = render(linear_pair(-7.3, 4.6, kink=0.3), shape, 1.0, 0.5, rng)
    gi = rng.random(shape) > 0.02
    gj = rng.random(shape) > 0.02
    ref = reference(di, gi, dj, gj, spans, xe, ye)
    value, npix, std = pair_difference(MEAN0, di, gi, ai, dj, gj, aj, spans, both_ways=False)
    assert npix == ref.size > 15000
    assert value == pytest.approx(ref.mean(), abs=1e-12)
    assert std == pytest.approx(ref.std(ddof=1), rel=1e-9)
    assert abs(value - 2.0) < 0.05


def test_exact_path_agrees_with_the_polynomial_path():
    shape = (200, 220)
    wi, wj = tan(RA0, DEC0, shape=shape), tan(RA0 + 0.001, DEC0 - 0.0015, 1.0, shape=shape)
    spans, _ = overlap(wi, wj, shape)
    rng = np.random.default_rng(5)
    di = render(wi, shape, 2.0, 1.0, rng, np.float32)
    dj = render(wj, shape, -1.0, 1.0, rng, np.float32)
    assert fit_pixel_map(wi, wj, spans, tolerance=1e-12).exact
    poly = pair_difference("median", di, None, wi, dj, None, wj, spans, both_ways=False)
    exact = pair_difference("median", di, None, wi, dj, None, wj, spans, tolerance=1e-12,
                            both_ways=False)
    assert poly[1] == exact[1] > 10000
    assert poly[0] == pytest.approx(exact[0], abs=1e-6)
    assert poly[2] == pytest.approx(exact[2], rel=1e-6)


# ------------------------------------------------------------------- the differences


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_offset_recovered_through_bright_emission(dtype):
    # the blob (40 sigma) and the plane fill the overlap; image j is twice as noisy and
    # has a masked block on the blob, so the images' own statistics see different pixels
    shape = (256, 256)
    wi, wj = tan(RA0 - 0.0025, DEC0 + 0.001), tan(RA0 + 0.002, DEC0 - 0.0005, rot=1.0)
    spans_i, spans_j = overlap(wi, wj, shape)
    rng = np.random.default_rng(6)
    ci, cj = 7.25, 5.0
    di = render(wi, shape, ci, 1.0, rng, dtype)
    dj = render(wj, shape, cj, 2.0, rng, dtype)
    gj = np.ones(shape, bool)
    gj[110:170, 175:225] = False
    value, npix, std = pair_difference(SkyStat("median"), di, None, wi, dj, gj, wj, spans_i,
                                       both_ways=False)
    sigma_mean = std / np.sqrt(npix)
    assert npix > 15000 and 1.5 < std < 2.0  # sqrt(1 + ~0.6 * 4): bilinear averages j
    assert abs(value - (ci - cj)) < 4 * 1.25 * sigma_mean  # median: 1.25x the mean's error
    own = SkyStat("median")(di, spans=spans_i).value - SkyStat("median")(dj, gj, spans_j).value
    assert abs(own - (ci - cj)) > 100 * sigma_mean  # what #15 is about
    # every usable pair of pixels counts (no clipping), as the reference rule says
    pmap = fit_pixel_map(wi, wj, spans_i)
    ref = reference(di, None, dj, gj, spans_i, *pmap.polynomial(*span_pixels(spans_i)))
    value0, npix0, std0 = pair_difference(MEAN0, di, None, wi, dj, gj, wj, spans_i, both_ways=False)
    assert npix0 == ref.size and npix0 >= npix
    assert value0 == pytest.approx(ref.mean(), abs=1e-9)
    assert std0 == pytest.approx(ref.std(ddof=1), rel=1e-9)


def test_noise_free_plane_is_differenced_exactly():
    # bilinear sampling is exact for a plane: every difference is ci - cj
    shape = (180, 200)
    wi, wj = tan(RA0, DEC0, shape=shape), tan(RA0 + 0.0012, DEC0 + 0.0009, 1.0, shape=shape)
    spans, _ = overlap(wi, wj, shape)
    rng = np.random.default_rng(7)
    di = render(wi, shape, 4.0, 0.0, rng, blob=0.0)
    dj = render(wj, shape, 1.5, 0.0, rng, blob=0.0)
    value, npix, std = pair_difference(MEAN0, di, None, wi, dj, None, wj, spans, both_ways=False)
    assert npix > 10000
    assert value == pytest.approx(2.5, abs=1e-6)
    assert std < 1e-5


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_masks_against_the_reference_rule(dtype):
    shape = (200, 210)
    wi, wj = tan(RA0, DEC0, shape=shape), tan(RA0 + 0.001, DEC0 + 0.0012, 1.0, shape=shape)
    spans, _ = overlap(wi, wj, shape)
    rng = np.random.default_rng(8)
    di = render(wi, shape, 0.0, 1.0, rng, dtype)
    dj = render(wj, shape, 0.0, 1.0, rng, dtype)
    gi = rng.random(shape) > 0.03
    gj = rng.random(shape) > 0.03
    di[rng.integers(0, 200, 40), rng.integers(0, 210, 40)] = np.nan
    dj[rng.integers(0, 200, 40), rng.integers(0, 210, 40)] = np.inf
    pmap = fit_pixel_map(wi, wj, spans)
    ref = reference(di, gi, dj, gj, spans, *pmap.polynomial(*span_pixels(spans)))
    out = np.empty(int((spans[:, 2] - spans[:, 1] + 1).sum()))
    n = kp.sample_differences(di, gi, dj, gj, spans, pmap.coef_x, pmap.coef_y, pmap.norm, out)
    assert n == ref.size
    np.testing.assert_allclose(out[:n], ref, rtol=0, atol=1e-9)
    both_good = reference(di, None, dj, None, spans, *pmap.polynomial(*span_pixels(spans)))
    assert 0.8 * both_good.size < n < 0.9 * both_good.size  # ~3 % in i, ~4 x 3 % in j


@pytest.mark.parametrize(
    ("dx", "dy", "cols", "rows", "per_bad_j"),
    [(3.0, 2.0, 27, 18, 1), (3.5, 2.0, 26, 18, 2), (3.5, 2.5, 26, 17, 4)],
)
def test_exact_counts_on_integer_and_half_shifts(dx, dy, cols, rows, per_bad_j):
    # pixel (x, y) of i falls on (x + dx, y + dy) of j (20 x 30 pixels each): an integer
    # shift samples one pixel of j, a half shift two or four; positions on j's last
    # column/row are sampled, beyond it are not
    shape = (20, 30)
    wi, wj = linear_pair(0.0, 0.0), linear_pair(dx, dy)
    y, x = np.mgrid[: shape[0], : shape[1]]
    di = (0.5 * x + 0.25 * y + 10.0).astype(np.float32)
    dj = (0.5 * (x - dx) + 0.25 * (y - dy) + 4.0).astype(np.float32)  # the same plane
    spans = full_spans(shape)
    value, npix, std = pair_difference(MEAN0, di, None, wi, dj, None, wj, spans, both_ways=False)
    assert npix == cols * rows and value == pytest.approx(6.0, abs=1e-9) and std < 1e-9
    # bad pixels of i inside the usable block: one each
    gi = np.ones(shape, bool)
    gi[[0, 5, 9], [0, 7, 20]] = False
    gi[19, 29] = False  # outside the usable block: no change
    assert pair_difference(MEAN0, di, gi, wi, dj, None, wj, spans,
                           both_ways=False)[1] == cols * rows - 3
    # bad pixels of j in its interior: one, two or four pixels of i each
    gj = np.ones(shape, bool)
    gj[[8, 12], [10, 16]] = False
    value, npix, _ = pair_difference(MEAN0, di, None, wi, dj, gj, wj, spans, both_ways=False)
    assert npix == cols * rows - 2 * per_bad_j and value == pytest.approx(6.0, abs=1e-9)
    dj_nan = dj.copy()
    dj_nan[8, 10] = np.nan
    assert pair_difference(MEAN0, di, None, wi, dj_nan, None, wj, spans, both_ways=False)[1] == (
        cols * rows - per_bad_j)
    # the statistic's upper limit applies to pixel values: a saturated j pixel is bad
    dj_sat = dj.copy()
    dj_sat[12, 16] = 1e6
    assert pair_difference(MEAN0, di, None, wi, dj_sat, None, wj, spans, both_ways=False)[0] < -100
    capped = SkyStat("mean", nclip=0, upper=1e5)
    value, npix, _ = pair_difference(capped, di, None, wi, dj_sat, None, wj, spans, both_ways=False)
    assert npix == cols * rows - per_bad_j and value == pytest.approx(6.0, abs=1e-9)


def test_offset_recovered_on_nircam_dithers(nircam):
    # 300 x 300 subarrays of the distorted detector corner, dithered by ~(45, 30) pixels
    shape = (300, 300)
    base = subarray(nircam, 1700, 1700, shape)
    wi, wj = base, synthetic.repoint(base, 1.4, -0.9)
    ai, aj = as_wcs_adapter(wi, shape=shape), as_wcs_adapter(wj, shape=shape)
    spans, _ = overlap(ai, aj, shape)
    ra, dec = ai.pixel_to_world(150.0, 150.0)
    rng = np.random.default_rng(9)

    def img(ad, c):
        y, x = np.mgrid[: shape[0], : shape[1]]
        r, d = ad.pixel_to_world(x, y)
        e = (r - ra) * np.cos(np.radians(dec)) * 3600.0
        n = (d - dec) * 3600.0
        f = 30.0 * np.exp(-0.5 * (e * e + n * n) / 9.0) + 0.5 * e  # 3" blob, 30 sigma
        return (f + c + rng.normal(0.0, 1.0, shape)).astype(np.float32)

    di, dj = img(ai, 100.0), img(aj, 98.8)
    assert not fit_pixel_map(ai, aj, spans).exact
    value, npix, std = pair_difference("median", di, None, ai, dj, None, aj, spans, both_ways=False)
    assert npix > 50000
    assert abs(value - 1.2) < 5 * std / np.sqrt(npix)


def test_empty_and_mixed_inputs():
    shape = (40, 50)
    wi, wj = linear_pair(0.0, 0.0), linear_pair(1.0, 1.0)
    y, x = np.mgrid[: shape[0], : shape[1]]
    di = (x + y + 3.0).astype(np.float32)
    dj = (x + y + 1.0).astype(np.float64)  # (x - 1) + (y - 1) + 3
    empty = np.zeros((0, 3), dtype=np.int64)
    value, npix, std = pair_difference(MEAN0, di, None, wi, dj, None, wj, empty, both_ways=False)
    assert np.isnan(value) and npix == 0 and np.isnan(std)
    outside = np.array([[-3, 0, 10], [45, 0, 10], [5, 60, 70]])  # not in image i
    assert pair_difference(MEAN0, di, None, wi, dj, None, wj, outside, both_ways=False)[1] == 0
    value, npix, _ = pair_difference(MEAN0, di, None, wi, dj, None, wj, full_spans(shape),
                                     both_ways=False)
    assert (value, npix) == (pytest.approx(0.0, abs=1e-9), 49 * 39)
    bad = np.zeros(shape, bool)
    value, npix, std = pair_difference(MEAN0, di, bad, wi, dj, None, wj, full_spans(shape),
                                       both_ways=False)
    assert np.isnan(value) and npix == 0
    with pytest.raises(ValueError, match="2-D"):
        pair_difference(MEAN0, di[0], None, wi, dj, None, wj, full_spans(shape), both_ways=False)
    with pytest.raises(ValueError, match="tolerance"):
        fit_pixel_map(wi, wj, full_spans(shape), tolerance=0.0)


# -------------------------------------------------------------------- pure Python


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_match_their_pure_python_versions(dtype):
    rng = np.random.default_rng(10)
    di = rng.normal(0, 1, (9, 11)).astype(dtype)
    dj = rng.normal(0, 1, (10, 12)).astype(dtype)
    di[0, 3] = np.nan
    dj[4, 5] = np.inf
    gi = rng.random(di.shape) > 0.1
    gj = rng.random(dj.shape) > 0.1
    spans = np.array([[0, 0, 10], [3, 2, 8], [5, -2, 13], [8, 4, 4], [12, 0, 5]])
    cx = np.array([[5.6, 0.05], [4.9, -0.02]])  # x_j = 5.6 + 4.9 u + 0.05 v - 0.02 uv
    cy = np.array([[4.5, 4.3], [0.1, 0.0]])
    norm = np.array([5.0, 0.2, 4.0, 0.25])
    x, y = span_pixels(spans)
    xj = cx[0, 0] + 0.3 * x + 0.1 * y
    yj = 0.5 + 0.05 * x + 0.9 * y
    xj[4] = np.nan
    outside = np.r_[18:20, 31:34, 35:41]  # span pixels outside image i
    for no_mask in (False, True):
        g_i = np.zeros((0, 0), bool) if no_mask else gi
        g_j = np.zeros((0, 0), bool) if no_mask else gj
        a, b = np.full(x.size, -7.0), np.full(x.size, -7.0)
        n_jit = kp.sample_differences(di, g_i, dj, g_j, spans, cx, cy, norm, a)
        n_py = kp.sample_differences.py_func(di, g_i, dj, g_j, spans, cx, cy, norm, b)
        assert n_jit == n_py > 10
        np.testing.assert_array_equal(a, b)
        n_jit = kp.sample_differences_at(di, g_i, dj, g_j, spans, xj, yj, a)
        n_py = kp.sample_differences_at.py_func(di, g_i, dj, g_j, spans, xj, yj, b)
        assert n_jit == n_py > 10
        np.testing.assert_array_equal(a, b)
        ref = reference(di, None if no_mask else gi, dj, None if no_mask else gj,
                        np.array([[0, 0, 10], [3, 2, 8], [5, 0, 10], [8, 4, 4]]),
                        np.delete(xj, outside), np.delete(yj, outside))
        assert n_jit == ref.size
        np.testing.assert_allclose(a[:n_jit], ref, rtol=0, atol=1e-12)



@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rows_inside_across_and_outside_image_j(dtype):
    # the kernels test every position against j's bounds without a branch (a position
    # outside gets a NaN weight and drops out with the non-finite differences): rows
    # wholly inside j, across each of its edges (within SNAP of an edge is inside and
    # snapped, beyond it outside), wholly outside, NaN, against the reference rule
    rng = np.random.default_rng(11)
    di = rng.normal(0, 1, (8, 40)).astype(dtype)
    dj = rng.normal(0, 1, (10, 30)).astype(dtype)
    gi = rng.random(di.shape) > 0.1
    gj = rng.random(dj.shape) > 0.1
    s = kp.SNAP
    edge = np.array([-2 * s, -s / 2, 0.0, 0.3, 28.5, 29 - s / 2, 29.0, 29 + s / 2, 29 + 2 * s,
                     35.0, np.nan])  # 7 of 11 inside (columns of j: 0 .. 29)
    edge_y = np.array([-2 * s, -s / 2, 0.0, 0.3, 8.5, 9 - s / 2, 9.0, 9 + s / 2, 9 + 2 * s,
                       12.0, np.nan])  # rows of j: 0 .. 9
    x = np.arange(40.0)
    rows = [
        (0.7 * x + 1.3, np.full(40, 4.2)),                  # wholly inside
        (x - 5.5, np.full(40, 3.5)),                        # across the left edge
        (x + 12.25, np.full(40, 6.0)),                      # across the right edge
        (np.resize(edge, 40), np.full(40, 2.0)),            # on and about both edges in x
        (np.full(40, 7.5), np.resize(edge_y, 40)),          # on and about both edges in y
        (x + 31.0, np.full(40, 1.0)),                       # wholly outside (right)
        (x, np.full(40, -3.0)),                             # wholly outside (above)
        (x, np.full(40, 9 + s / 2)),                        # on the last row, snapped
    ]
    spans = np.array([[r, 0, 39] for r in range(len(rows))], dtype=np.int64)
    xj = np.concatenate([r[0] for r in rows])
    yj = np.concatenate([r[1] for r in rows])
    out = np.full(xj.size, -7.0)
    for g_i, g_j in ((None, None), (gi, gj)):
        nm_i = np.zeros((0, 0), bool) if g_i is None else g_i
        nm_j = np.zeros((0, 0), bool) if g_j is None else g_j
        ref = reference(di, g_i, dj, g_j, spans, xj, yj)
        n = kp.sample_differences_at(di, nm_i, dj, nm_j, spans, xj, yj, out)
        assert n == ref.size > 60
        np.testing.assert_allclose(out[:n], ref, rtol=0, atol=1e-12)
        # without masks, the counts row by row: 3 x 7 + 6 of the edge positions (the
        # first 7 of them repeat last) are inside j
        if g_i is None:
            for r, e in enumerate([40, 29, 17, 27, 27, 0, 0, 30]):
                got = kp.sample_differences_at(di, nm_i, dj, nm_j, spans[r:r + 1],
                                               xj[40 * r:40 * r + 40], yj[40 * r:40 * r + 40],
                                               out)
                assert got == e, (r, got, e)
        # the same through a polynomial map: x_j = x + 12.25 (across j's right edge),
        # y_j = 0.9 y + 0.5 - 1 e-7 (inside j down to its last row within SNAP)
        cx = np.array([[12.25, 0.0], [1.0, 0.0]])
        cy = np.array([[0.5 - 1e-7, 0.9], [0.0, 0.0]])
        norm = np.array([0.0, 1.0, 0.0, 1.0])
        full = np.array([[r, 0, 39] for r in range(8)], dtype=np.int64)
        px, py = span_pixels(full)
        ref = reference(di, g_i, dj, g_j, full, px + 12.25, 0.9 * py + 0.5 - 1e-7)
        n = kp.sample_differences(di, nm_i, dj, nm_j, full, cx, cy, norm, out)
        assert n == ref.size > 50
        np.testing.assert_allclose(out[:n], ref, rtol=0, atol=1e-12)



def test_box_of_the_span_ends_is_numpys():
    # span_ends_box evaluates the map at both ends of every span in one compiled loop,
    # with the operations of PixelMap.polynomial in its order: the same extremes
    rng = np.random.default_rng(12)
    for degree in (1, 3, 5):
        cx = rng.normal(0, 3, (degree + 1, degree + 1))
        cy = rng.normal(0, 3, (degree + 1, degree + 1))
        cx[0, 0], cx[1, 0], cy[0, 0], cy[0, 1] = 40.0, 60.0, -20.0, 50.0
        norm = np.array([100.0, 1 / 90.0, 60.0, 1 / 55.0])
        rows = np.sort(rng.choice(np.arange(5, 120), 70, replace=False))
        first = rng.integers(0, 100, rows.size)
        spans = np.column_stack((rows, first, first + rng.integers(0, 100, rows.size)))
        x = np.concatenate((spans[:, 1], spans[:, 2])).astype(float)
        y = np.concatenate((spans[:, 0], spans[:, 0])).astype(float)
        u = (x - norm[0]) * norm[1]
        v = (y - norm[2]) * norm[3]
        xj, yj = _polyval2d(u, v, cx), _polyval2d(u, v, cy)  # PixelMap.polynomial's values
        got = kp.span_ends_box(spans.astype(np.int64), cx, cy, norm)
        assert got == (xj.min(), xj.max(), yj.min(), yj.max())
    nan = np.full((2, 2), np.nan)
    assert np.isnan(kp.span_ends_box(spans.astype(np.int64), nan, nan, norm)).all()


def test_inverse_map_from_the_forward_round_trips(nircam):
    # the reverse map is fitted to the forward map's own round trips (no WCS call) and
    # agrees with exact round trips from j to i over the overlap
    for wi, wj, shape in ((tan(RA0, DEC0), tan(RA0 + 0.002, DEC0 + 0.001, rot=1.0), (256, 256)),
                          (subarray(nircam, 1600, 1600, (300, 300)),
                           synthetic.repoint(subarray(nircam, 1600, 1600, (300, 300)), 2.0,
                                             -1.0), (300, 300))):
        ai, aj = as_wcs_adapter(wi, shape=shape), as_wcs_adapter(wj, shape=shape)
        spans = full_spans(shape)
        forward = fit_pixel_map(ai, aj, spans)
        back = forward.inverse()
        assert back is not None and not back.exact and back.adapter_i is aj
        # points of j inside the overlap: the forward images of i's interior points
        rng = np.random.default_rng(5)
        x, y = rng.uniform(20, shape[1] - 20, 2000), rng.uniform(20, shape[0] - 20, 2000)
        xj, yj = exact_positions(ai, aj, x, y)
        inside = (xj > 0) & (xj < shape[1] - 1) & (yj > 0) & (yj < shape[0] - 1)
        xi, yi = back(xj[inside], yj[inside])
        assert np.hypot(xi - x[inside], yi - y[inside]).max() < back.tolerance
