"""Tests of skyeq.synthetic: seeded synthetic mosaics with known skies."""

import doctest

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.wcs import WCS

from skyeq import synthetic
from skyeq.synthetic import constant_mosaic, disjoint, dithers, exposures, tile_grid

NOSRC = {"point_sources": 0, "extended_sources": 0}

# Mosaic centres: ordinary, RA = 0 wrap, just below RA = 360, near and at both poles.
CENTRES = [(150.0, 2.0), (0.0, 0.0), (359.9995, 10.0), (30.0, 89.99), (0.0, 90.0), (120.0, -90.0)]


def _plane(ra, dec, pixel_scale=0.1):
    """A TAN frame at the mosaic centre, x along -RA, in pixels (independent of the module)."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [1.0, 1.0]
    w.wcs.cdelt = [-pixel_scale / 3600.0, pixel_scale / 3600.0]
    w.wcs.set()
    return w


def _corners_in(w_from, w_to, shape):
    ny, nx = shape
    x = np.array([-0.5, nx - 0.5, nx - 0.5, -0.5])
    y = np.array([-0.5, -0.5, ny - 0.5, ny - 0.5])
    return np.column_stack(w_to.world_to_pixel_values(*w_from.pixel_to_world_values(x, y)))


def _covered_fraction(w_from, w_to, shape, step=4):
    """Fraction of the pixel centres of one image that land inside another."""
    ny, nx = shape
    y, x = np.mgrid[0:ny:step, 0:nx:step]
    px, py = w_to.world_to_pixel_values(*w_from.pixel_to_world_values(x.ravel(), y.ravel()))
    inside = (px > -0.5) & (px < nx - 0.5) & (py > -0.5) & (py < ny - 0.5)
    return inside.mean()


def _model(wcs, shape, sources):
    """Analytic source image, from astropy sky offsets (no stamps, no local Jacobians)."""
    ny, nx = shape
    y, x = np.mgrid[0:ny, 0:nx]
    ra, dec = wcs.pixel_to_world_values(x.ravel(), y.ravel())
    pix = SkyCoord(ra * u.deg, dec * u.deg)
    out = np.zeros(x.size)
    for s in sources:
        east, north = SkyCoord(s["ra"] * u.deg, s["dec"] * u.deg).spherical_offsets_to(pix)
        e, n = east.to_value(u.arcsec), north.to_value(u.arcsec)
        pa = np.radians(s["pa"])
        major = e * np.sin(pa) + n * np.cos(pa)
        minor = e * np.cos(pa) - n * np.sin(pa)
        q = (major / s["sigma_major"]) ** 2 + (minor / s["sigma_minor"]) ** 2
        out += s["peak"] * np.exp(-0.5 * q)
    return out.reshape(shape)


# ------------------------------------------------------------------ determinism


def test_same_seed_identical_different_seed_differs():
    kw = {"shape": (48, 40), "dq_fraction": 0.02, "noise": (1.0, 2.0), "rotation_jitter": 2.0}
    a = tile_grid(2, 2, seed=11, **kw)
    b = tile_grid(2, 2, seed=11, **kw)
    c = tile_grid(2, 2, seed=12, **kw)
    for i in range(4):
        assert np.array_equal(a.data[i], b.data[i], equal_nan=True)
        assert np.array_equal(a.dq[i], b.dq[i])
        assert a.wcs[i].wcs.compare(b.wcs[i].wcs)
        assert not np.array_equal(a.data[i], c.data[i], equal_nan=True)
    np.testing.assert_array_equal(a.sky, b.sky)
    np.testing.assert_array_equal(a.noise, b.noise)
    np.testing.assert_array_equal(a.sources, b.sources)
    assert not np.any(a.sky == c.sky)
    assert not np.array_equal(a.sources["ra"], c.sources["ra"])


def test_global_random_state_untouched_and_seed_none_is_fresh():
    state = np.random.get_state()[1].copy()  # noqa: NPY002 - the legacy state must not move
    a = dithers(2, shape=(16, 16), seed=None, **NOSRC)
    b = dithers(2, shape=(16, 16), seed=None, **NOSRC)
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # noqa: NPY002
    assert not np.array_equal(a.data[0], b.data[0])


def test_sources_add_on_top_of_the_same_noise():
    """The per-image noise streams do not depend on the sources drawn."""
    kw = {"shape": (64, 64), "seed": 4, "dtype": np.float64}
    bare = tile_grid(1, 2, point_sources=0, extended_sources=0, **kw)
    full = tile_grid(1, 2, point_sources=30, extended_sources=2, **kw)
    np.testing.assert_array_equal(bare.sky, full.sky)
    for i in range(2):
        diff = full.data[i] - bare.data[i]
        assert diff.min() > -1e-9
        assert diff.max() > 10.0  # peaks are >= source_flux = 10
        assert np.count_nonzero(diff > 1e-9) > 50


# ------------------------------------------------------------------ truth


def test_median_of_source_free_images_is_the_sky():
    m = tile_grid(2, 2, shape=(128, 128), noise=1.5, seed=1, **NOSRC)
    npix = 128 * 128
    for img, sky in zip(m.data, m.sky, strict=True):
        assert img.dtype == np.float32
        assert abs(np.median(img) - sky) < 5 * 1.2533 * 1.5 / np.sqrt(npix)
        assert abs(img.mean(dtype=np.float64) - sky) < 5 * 1.5 / np.sqrt(npix)
        assert abs(img.std(dtype=np.float64) / 1.5 - 1) < 0.03
    assert np.all((m.sky >= 100) & (m.sky <= 120))
    np.testing.assert_array_equal(m.noise, 1.5)


def test_noise_range_per_image():
    m = dithers(6, shape=(96, 96), noise=(1.0, 3.0), seed=2, **NOSRC)
    assert np.all((m.noise >= 1.0) & (m.noise <= 3.0))
    assert np.ptp(m.noise) > 0.3
    for img, sky, sig in zip(m.data, m.sky, m.noise, strict=True):
        assert abs((img - sky).std(dtype=np.float64) / sig - 1) < 0.05


def test_explicit_skies_and_dtypes():
    m = tile_grid(1, 3, shape=(20, 20), sky=[5.0, -2.5, 1e4], noise=0.0, dtype=np.float64, **NOSRC)
    for img, sky in zip(m.data, [5.0, -2.5, 1e4], strict=True):
        assert img.dtype == np.float64
        assert np.all(img == sky)
    np.testing.assert_array_equal(m.sky, [5.0, -2.5, 1e4])
    be = tile_grid(1, 2, shape=(20, 20), seed=3, dtype=">f4", point_sources=5)
    ne = tile_grid(1, 2, shape=(20, 20), seed=3, point_sources=5)
    assert be.data[0].dtype == np.dtype(">f4")
    np.testing.assert_array_equal(be.data[1], ne.data[1])
    assert tile_grid(1, 2, shape=(8, 8), sky=7.0, **NOSRC).sky.tolist() == [7.0, 7.0]


def test_constant_mosaic_is_exactly_its_skies():
    skies = [10.0, 12.0, 11.5, 15.0, 14.25, 13.0]
    m = constant_mosaic(skies)
    assert m.names == [f"tile_r{r}_c{c}" for r in range(2) for c in range(3)]
    assert m.dq is None and len(m.sources) == 0
    for img, sky in zip(m.data, skies, strict=True):
        assert img.shape == (32, 32)
        assert np.all(img == np.float32(sky))
    # each tile overlaps its immediate neighbours by a quarter of its size
    x = _corners_in(m.wcs[1], m.wcs[0], (32, 32))[:, 0]
    np.testing.assert_allclose(x.min(), 31.5 - 8.0, atol=1e-4)
    y = _corners_in(m.wcs[3], m.wcs[0], (32, 32))[:, 1]
    np.testing.assert_allclose(y.min(), 31.5 - 8.0, atol=1e-4)

    d = constant_mosaic(np.arange(7.0), layout=[(2, 2), (1, 3)])
    assert len(d) == 7 and d.names[4:] == ["part1_r0_c0", "part1_r0_c1", "part1_r0_c2"]
    assert all(np.all(img == k) for k, img in enumerate(d.data))
    # the chain: consecutive tiles overlap, the ends do not
    assert _covered_fraction(d.wcs[4], d.wcs[5], (32, 32)) == pytest.approx(0.25)
    assert _covered_fraction(d.wcs[4], d.wcs[6], (32, 32)) == 0.0
    assert _covered_fraction(d.wcs[1], d.wcs[4], (32, 32)) == 0.0


# ------------------------------------------------------------------ geometry


@pytest.mark.parametrize(("ra", "dec"), CENTRES)
@pytest.mark.parametrize("rotation", [0.0, 30.0])
def test_tile_overlap_fraction(ra, dec, rotation):
    shape = (100, 80)
    m = tile_grid(3, 3, shape, overlap=0.2, ra=ra, dec=dec, rotation=rotation, noise=0, **NOSRC)
    for w in m.wcs:
        assert w.wcs.ctype[0] == "RA---TAN" and w.pixel_shape == (80, 100)
        fp = w.calc_footprint(center=False)
        assert np.all(np.isfinite(fp)) and np.all((fp[:, 0] >= 0) & (fp[:, 0] < 360))
        x = np.array([0.0, 79.0, 40.0])
        y = np.array([0.0, 99.0, 50.0])
        back = w.world_to_pixel_values(*w.pixel_to_world_values(x, y))
        np.testing.assert_allclose(back, [x, y], atol=1e-6)
    for i in range(9):
        r, c = divmod(i, 3)
        if c < 2:  # right neighbour: its left edge is 20 % of the width inside tile i
            xy = _corners_in(m.wcs[i + 1], m.wcs[i], shape)
            np.testing.assert_allclose(xy[[0, 3], 0], 79.5 - 16.0, atol=1e-3)
            np.testing.assert_allclose(xy[[0, 3], 1], [-0.5, 99.5], atol=1e-3)
        if r < 2:  # upper neighbour: its bottom edge is 20 % of the height inside tile i
            xy = _corners_in(m.wcs[i + 3], m.wcs[i], shape)
            np.testing.assert_allclose(xy[[0, 1], 1], 99.5 - 20.0, atol=1e-3)
            np.testing.assert_allclose(xy[[0, 1], 0], [-0.5, 79.5], atol=1e-3)
    # the centre tile's reference point is the mosaic centre
    x, y = m.wcs[4].world_to_pixel_values(ra, dec)
    np.testing.assert_allclose([x, y], [39.5, 49.5], atol=1e-6)


def test_rotation_turns_the_layout_on_the_sky():
    m = tile_grid(1, 2, (50, 50), overlap=0.0, rotation=90.0, ra=10.0, dec=-40.0, **NOSRC)
    # rotation 0: +y is north and +x west (RA decreases along x); 90: +y east, +x north
    s0 = SkyCoord(*m.wcs[0].pixel_to_world_values(24.5, 24.5), unit="deg")
    s1 = SkyCoord(*m.wcs[1].pixel_to_world_values(24.5, 24.5), unit="deg")
    assert s0.position_angle(s1).to_value(u.deg) == pytest.approx(0.0, abs=0.01)
    assert s0.separation(s1).to_value(u.arcsec) == pytest.approx(5.0, rel=1e-6)
    up = SkyCoord(*m.wcs[0].pixel_to_world_values(24.5, 34.5), unit="deg")
    assert s0.position_angle(up).to_value(u.deg) == pytest.approx(90.0, abs=0.01)
    # per-image jitter rotates about the image centre, within the requested range
    j = dithers(3, (50, 50), offset_arcsec=0.0, rotation_jitter=10.0, rotation=90.0, **NOSRC)
    pas = []
    for w in j.wcs:
        c = SkyCoord(*w.pixel_to_world_values(24.5, 24.5), unit="deg")
        pas.append(c.position_angle(SkyCoord(*w.pixel_to_world_values(24.5, 34.5), unit="deg")))
        assert c.separation(SkyCoord(150.0, 2.0, unit="deg")).to_value(u.arcsec) < 1e-6
    pas = np.array([p.to_value(u.deg) for p in pas])
    assert np.all(np.abs(pas - 90.0) <= 10.0) and np.ptp(pas) > 0.5


def test_dithers_overlap_nearly_fully():
    m = dithers(6, shape=(200, 200), offset_arcsec=3.0, rotation_jitter=0.5, seed=8, **NOSRC)
    assert m.names == [f"dither_{i:02d}" for i in range(6)]
    shifts, fracs = [], []
    for i in range(6):
        for j in range(i + 1, 6):
            xy = _corners_in(m.wcs[j], m.wcs[i], (200, 200))
            shifts.append(np.abs(xy - _corners_in(m.wcs[i], m.wcs[i], (200, 200))).max())
            fracs.append(_covered_fraction(m.wcs[j], m.wcs[i], (200, 200)))
    # offsets up to +-30 px per axis and 0.5 deg rotations (up to 1.7 px at a corner)
    assert max(shifts) < 2 * 30 + 2 * 1.8
    assert max(shifts) > 5.0  # really dithered
    assert min(fracs) > (1 - 60 / 200) ** 2 - 0.02
    assert np.mean(fracs) > 0.8


def test_exposures_groups_share_one_sky():
    m = exposures(3, (2, 2), shape=(64, 64), seed=9, noise=0.5, **NOSRC)
    assert len(m) == 12
    np.testing.assert_array_equal(m.groups, np.repeat([0, 1, 2], 4))
    assert m.names[:5] == ["exp0_det0", "exp0_det1", "exp0_det2", "exp0_det3", "exp1_det0"]
    for g in range(3):
        sk = m.sky[m.groups == g]
        assert np.all(sk == sk[0])
        for i in np.flatnonzero(m.groups == g):
            assert abs(np.median(m.data[i]) - sk[0]) < 0.05
    assert len(set(m.sky.tolist())) == 3
    # detectors of one exposure are separated by the gap (5 % of 64 px)
    for e in range(3):
        xy = _corners_in(m.wcs[4 * e + 1], m.wcs[4 * e], (64, 64))
        np.testing.assert_allclose(xy[[0, 3], 0], 63.5 + 3.2, atol=1e-3)
        assert _covered_fraction(m.wcs[4 * e + 3], m.wcs[4 * e], (64, 64)) == 0.0
    # the same detector in different exposures overlaps (offsets up to 6.4 px)
    assert _covered_fraction(m.wcs[4], m.wcs[0], (64, 64)) > 0.75
    assert _covered_fraction(m.wcs[8], m.wcs[0], (64, 64)) > 0.75
    g = exposures(2, (1, 2), shape=(16, 16), sky=[3.0, 4.0], noise=0, **NOSRC)
    np.testing.assert_array_equal(g.sky, [3.0, 3.0, 4.0, 4.0])
    assert np.all(g.data[3] == 4.0)
    with pytest.raises(ValueError, match="one value per groups"):
        exposures(2, (1, 2), shape=(16, 16), sky=[1.0, 2.0, 3.0, 4.0])


@pytest.mark.parametrize(("ra", "dec"), [(150.0, 2.0), (0.005, -5.0), (10.0, 89.995)])
def test_disjoint_parts_do_not_overlap(ra, dec):
    shape = (40, 40)
    m = disjoint([(2, 2), (1, 3), (2, 1)], shape, overlap=0.1, ra=ra, dec=dec, seed=1,
                 rotation_jitter=1.0, **NOSRC)  # fmt: skip
    part = np.array([int(n[4]) for n in m.names])
    np.testing.assert_array_equal(part, [0] * 4 + [1] * 3 + [2] * 2)
    plane = _plane(ra, dec)
    fps = [plane.wcs_world2pix(w.calc_footprint(center=False), 0) for w in m.wcs]
    xs = [np.concatenate([fps[i][:, 0] for i in np.flatnonzero(part == p)]) for p in range(3)]
    for p in range(2):  # parts are side by side along x, half a tile (20 px) apart
        gap = xs[p + 1].min() - xs[p].max()
        assert 15.0 < gap < 21.0
    for i in range(len(m)):
        for j in range(len(m)):
            if part[i] != part[j]:
                assert _covered_fraction(m.wcs[i], m.wcs[j], shape, step=1) == 0.0
    # within a part, neighbours overlap
    assert _covered_fraction(m.wcs[0], m.wcs[1], shape) > 0.05
    assert _covered_fraction(m.wcs[4], m.wcs[5], shape) > 0.05
    assert _covered_fraction(m.wcs[7], m.wcs[8], shape) > 0.05


# ------------------------------------------------------------------ sources


@pytest.mark.parametrize(("ra", "dec"), [(150.0, 2.0), (0.0, 0.0), (0.0, 89.995)])
def test_sources_match_an_analytic_sky_model(ra, dec):
    """Rendered stamps equal profiles evaluated on the sky, in rotated, offset images."""
    m = dithers(2, shape=(120, 120), offset_arcsec=2.0, rotation_jitter=25.0, ra=ra, dec=dec,
                noise=0.0, point_sources=25, extended_sources=3, seed=5)  # fmt: skip
    assert m.sources["extended"].sum() == 3
    assert np.ptp(m.sources["pa"][m.sources["extended"]]) > 1.0
    for img, w, sky in zip(m.data, m.wcs, m.sky, strict=True):
        model = _model(w, (120, 120), m.sources)
        diff = (img.astype(np.float64) - sky) - model
        assert model.max() > 10.0
        # float32 rounding of the values, plus profiles cut below 1e-5 (noise 0)
        tol = np.spacing(np.float32(img.max())) + 3e-5
        assert np.abs(diff).max() < tol, (np.abs(diff).max(), tol)


def test_bright_source_at_the_same_sky_position_in_overlapping_tiles():
    m = tile_grid(1, 2, shape=(64, 64), overlap=0.5, rotation_jitter=15.0, noise=1.0,
                  point_sources=60, extended_sources=0, source_flux=50.0, seed=6)  # fmt: skip
    inside = []
    for k, s in enumerate(m.sources):
        pos = [w.world_to_pixel_values(s["ra"], s["dec"]) for w in m.wcs]
        if all(4 < p < 59 for xy in pos for p in xy):
            inside.append((s["peak"], k, pos))
    assert len(inside) >= 3
    peak, k, pos = max(inside)
    for img, sky, (x, y) in zip(m.data, m.sky, pos, strict=True):
        ix, iy = round(float(x)), round(float(y))
        win = img[iy - 3 : iy + 4, ix - 3 : ix + 4] - sky
        wy, wx = np.unravel_index(np.argmax(win), win.shape)
        assert abs(wx - 3) <= 1 and abs(wy - 3) <= 1
        # a Gaussian of sigma >= 1 px sampled within half a pixel of its centre
        assert img[iy, ix] - sky > 0.7 * peak - 5.0


# ------------------------------------------------------------------ DQ


def test_dq_bits_and_damage():
    frac = 0.02
    m = tile_grid(2, 2, shape=(100, 120), dq_fraction=frac, noise=2.0, seed=10, **NOSRC)
    for img, dq, sky in zip(m.data, m.dq, m.sky, strict=True):
        assert dq.dtype == np.uint32 and dq.shape == img.shape
        assert set(np.unique(dq).tolist()) == {0, 1, 4, 17, 512}
        assert np.all(dq[:, :4] == 512) and np.all(img[:, :4] == 0.0)
        assert not np.any(dq[:, 4:] & 512)
        nan = np.isnan(img)
        np.testing.assert_array_equal(nan, dq == 1)
        assert np.all(np.isfinite(img[dq != 1]))
        assert np.all(img[dq == 17] > sky + 30 * 2.0 * 0.99)
        assert np.all(np.abs(img[(dq == 0) | (dq == 4)] - sky) < 6 * 2.0)
        inner = dq[:, 4:]
        nflag = np.count_nonzero(inner)
        k = frac * img.size
        assert abs(nflag - k) < 5 * np.sqrt(k)  # duplicates are rare at 2 %
        for code, share in [(17, 0.5), (1, 0.25), (4, 0.25)]:
            assert abs(np.count_nonzero(inner == code) - share * k) < 5 * np.sqrt(share * k)
    assert tile_grid(1, 1, shape=(8, 8), **NOSRC).dq is None
    z = tile_grid(1, 1, shape=(8, 8), dq_fraction=0.0, **NOSRC)
    assert set(np.unique(z.dq[0]).tolist()) == {0, 512}


# ------------------------------------------------------------------ API


def test_repr_len_shapes():
    m = exposures(2, (1, 2), shape=(16, 24), dq_fraction=0.01, point_sources=3, extended_sources=1)
    assert len(m) == 4 and m.shapes == [(16, 24)] * 4
    assert repr(m) == (
        "Mosaic(n=4, shapes={(16, 24)}, dtype=float32, groups=2, dq=True, sources=4)"
    )


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: tile_grid(2, 2, overlap=1.0), "overlap"),
        (lambda: tile_grid(2, 2, shape=(0, 5)), "shape"),
        (lambda: tile_grid(2, 2, sky=[1.0, 2.0]), "one value per images"),
        (lambda: tile_grid(2, 2, dtype=np.int32), "floating-point"),
        (lambda: tile_grid(2, 2, noise=-1.0), "noise"),
        (lambda: tile_grid(2, 2, dec=91.0), "dec"),
        (lambda: tile_grid(2, 2, noise=(2.0, 1.0)), "noise range"),
        (lambda: tile_grid(2, 2, source_flux=-1.0), "source_flux"),
        (lambda: tile_grid(2, 2, sky_range=(120.0, 100.0)), "sky_range"),
        (lambda: tile_grid(2, 2, pixel_scale=0.0), "pixel_scale"),
        (lambda: tile_grid(2, 2, dq_fraction=1.5), "dq_fraction"),
        (lambda: tile_grid(2, 2, seed=-1), "seed"),
        (lambda: tile_grid(2, 2, seed=1.5), "seed"),
        (lambda: dithers(0), "n must"),
        (lambda: disjoint(separation=0.0), "separation"),
    ],
)
def test_invalid_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_docstring_examples_run():
    res = doctest.testmod(synthetic, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert res.attempted >= 20
    assert res.failed == 0
