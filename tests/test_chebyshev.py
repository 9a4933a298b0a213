"""The fitted inverse of a gwcs: Newton steps on Chebyshev series, compiled.

`skyeq._kernels.chebyshev.newton_inverse` solves the polynomial that stands in for a
checked gwcs's forward transform (`skyeq.wcs._ForwardFit`) for the pixel, many points
per vector instruction. Checked here against the real NIRCam gwcs, against a plain NumPy
Newton solve of the same series, and lane by lane: each point's result must not depend
on the points it is solved with. `densify_rings` maps overlap rings through it, edges
split along great circles, exactly as the NumPy steps of `skyeq.geometry._densify`.
"""

import dataclasses

import numpy as np
import pytest
from nircam_helpers import load_nircam
from numpy.polynomial import chebyshev as C

from skyeq import geometry as geo
from skyeq import synthetic
from skyeq._kernels.chebyshev import _LANES, newton_inverse
from skyeq.wcs import WCSAdapter, _radec_to_xyz, as_wcs_adapter

NIRCAM = (2048, 2048)


@pytest.fixture(scope="module")
def nircam():
    w = load_nircam()
    ad = as_wcs_adapter(w, "nrcb1", shape=NIRCAM)
    assert ad.inverse == "fitted"
    return w, ad.fit


def solve(fit, p, maxiter=25, tol=1e-9):
    return newton_inverse(p, fit.centre, fit.east, fit.north, fit.sky, fit.pix, fit.inv,
                          fit.newton, maxiter, tol)


def pixels(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-0.5, 2047.5, n), rng.uniform(-0.5, 2047.5, n)


def numpy_newton(fit, p):
    """The same solve written with numpy.polynomial (every point for 25 steps)."""
    w = p @ fit.centre
    a, b = (p @ fit.east) / w, (p @ fit.north) / w
    a0, ha, b0, hb = fit.sky
    x = C.chebval2d((a - a0) / ha, (b - b0) / hb, fit.inv[0])
    y = C.chebval2d((a - a0) / ha, (b - b0) / hb, fit.inv[1])
    x0, hx, y0, hy = fit.pix
    for _ in range(25):
        u, v = (x - x0) / hx, (y - y0) / hy
        f = [C.chebval2d(u, v, fit.newton[k]) for k in range(6)]
        r1, r2 = f[0] - a, f[1] - b
        det = f[2] * f[5] - f[3] * f[4]
        x = x - (f[5] * r1 - f[3] * r2) / det
        y = y - (f[2] * r2 - f[4] * r1) / det
    return x, y


def test_recovers_the_pixels_the_gwcs_mapped(nircam):
    w, fit = nircam
    x, y = pixels(1000)
    ra, dec = w(x, y, with_bounding_box=False)
    xb, yb = solve(fit, _radec_to_xyz(ra, dec))
    # the fit reproduces the gwcs to 1e-7 pixel, the steps stop below 1e-9
    assert np.hypot(xb - x, yb - y).max() < 1e-6


def test_agrees_with_a_numpy_newton_solve(nircam):
    w, fit = nircam
    x, y = pixels(300, seed=1)
    p = _radec_to_xyz(*w(x, y, with_bounding_box=False))
    xk, yk = solve(fit, p)
    xn, yn = numpy_newton(fit, p)
    assert np.abs(xk - xn).max() < 1e-9
    assert np.abs(yk - yn).max() < 1e-9


@pytest.mark.parametrize("n", [0, 1, _LANES - 1, _LANES, _LANES + 1, 2 * _LANES + 5])
def test_each_point_as_if_alone(nircam, n):
    # the lanes of a block, and the padding of the last block, leave no trace
    w, fit = nircam
    x, y = pixels(n, seed=n)
    p = _radec_to_xyz(*w(x, y, with_bounding_box=False)) if n else np.empty((0, 3))
    xb, yb = solve(fit, p)
    assert xb.shape == yb.shape == (n,)
    for k in range(0, n, max(1, n // 7)):
        xa, ya = solve(fit, p[k : k + 1].copy())
        assert (xa[0], ya[0]) == (xb[k], yb[k])


def test_nan_where_there_is_no_pixel(nircam):
    w, fit = nircam
    x, y = pixels(5, seed=3)
    p = _radec_to_xyz(*w(x, y, with_bounding_box=False))
    p[1] = -fit.centre  # behind the tangent plane
    p[3] = np.nan  # no position at all
    xb, yb = solve(fit, p)
    assert np.isnan(xb[[1, 3]]).all() and np.isnan(yb[[1, 3]]).all()
    good = [0, 2, 4]
    assert np.hypot(xb[good] - x[good], yb[good] - y[good]).max() < 1e-6
    # without enough steps nothing converges: NaN, not a half-solved position
    xb, yb = solve(fit, p, maxiter=1)
    assert np.isnan(xb).all() and np.isnan(yb).all()


def test_pure_python_loop_matches(nircam):
    # the kernel's own loop run by the interpreter (its helpers compiled): the same bits
    w, fit = nircam
    x, y = pixels(_LANES + 3, seed=4)
    p = _radec_to_xyz(*w(x, y, with_bounding_box=False))
    xp, yp = newton_inverse.py_func(p, fit.centre, fit.east, fit.north, fit.sky, fit.pix,
                                    fit.inv, fit.newton, 25, 1e-9)
    xb, yb = solve(fit, p)
    np.testing.assert_array_equal(xp, xb)
    np.testing.assert_array_equal(yp, yb)


@pytest.mark.parametrize("tolerance", [1e-3, 1e-6])
def test_densify_kernel_gives_the_numpy_densification(nircam, monkeypatch, tolerance):
    # overlap rings of three NIRCam dithers, densified in one compiled call and by the
    # NumPy steps through the same fitted inverse: the same points, bit for bit
    # (a tolerance of 1e-6 pixel forces several halving rounds)
    w, _ = nircam
    ws = [synthetic.repoint(w, e, n) for e, n in ((0.0, 0.0), (30.0, -12.0), (-25.0, 40.0))]
    fps = geo.footprints(ws, [NIRCAM] * 3)
    pairs, ovs = geo.find_overlaps(fps)
    rings = [np.asarray(p, dtype=float) for (i, j), ov in zip(pairs.tolist(), ovs, strict=True)
             if 0 in (i, j) for p in ov.pieces]
    assert len(rings) >= 2
    start = np.cumsum([0] + [len(r) for r in rings]).astype(np.int64)
    v = np.concatenate(rings)
    ad = as_wcs_adapter(ws[0], shape=NIRCAM)
    px, py, off = geo._densify(ad, v, start, 64.0, tolerance)
    # the NumPy steps, mapping the unit vectors through the same compiled inverse
    monkeypatch.setattr(geo, "_xyz_to_radec", lambda u: (u, None))
    monkeypatch.setattr(WCSAdapter, "world_to_pixel",
                        lambda self, u, _: self.fit.inverse_vectors(u))
    qx, qy, qoff = geo._densify(dataclasses.replace(ad, inverse="newton"), v, start, 64.0,
                                tolerance)
    np.testing.assert_array_equal(off, qoff)
    np.testing.assert_array_equal(px, qx)
    np.testing.assert_array_equal(py, qy)
    assert len(px) > 4 * len(v)  # the edges were split


def test_densify_kernel_refuses_a_vertex_without_pixel(nircam):
    w, _ = nircam
    ad = as_wcs_adapter(w, "nrcb1", shape=NIRCAM)
    x, y = pixels(3, seed=5)
    ring = _radec_to_xyz(*w(x, y, with_bounding_box=False))
    ring[1] = -ad.fit.centre  # behind the tangent plane
    with pytest.raises(ValueError, match="nrcb1 gives non-finite pixel positions"):
        geo._densify(ad, ring, np.array([0, 3], dtype=np.int64), 64.0, 1e-3)
