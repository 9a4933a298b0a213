"""Tests of skyeq.wcs: one adapter for astropy, SIP, gwcs, APE 14 and callables."""

import pickle

import numpy as np
import pytest
from astropy.wcs import WCS, Sip
from astropy.wcs.wcsapi import HighLevelWCSWrapper, SlicedLowLevelWCS
from geometry_helpers import round_trip

from skyeq import geometry as geo
from skyeq.wcs import WCSAdapter, _callable_pair, as_wcs_adapter

SHAPE = (150, 200)


def make_wcs(ra=150.0, dec=2.0, rot=20.0, scale=20.0, sip=0.0, swap=False):
    ny, nx = SHAPE
    w = WCS(naxis=2)
    lon, lat = ("RA---TAN", "DEC--TAN") if not sip else ("RA---TAN-SIP", "DEC--TAN-SIP")
    w.wcs.ctype = [lat, lon] if swap else [lon, lat]
    w.wcs.crval = [dec, ra] if swap else [ra, dec]
    w.wcs.crpix = [(nx + 1) / 2, (ny + 1) / 2]
    c, s = np.cos(np.radians(rot)), np.sin(np.radians(rot))
    cd = scale / 3600.0 * np.array([[-c, s], [s, c]])
    w.wcs.cd = cd[::-1] if swap else cd
    if sip:
        a = np.zeros((4, 4))
        b = np.zeros((4, 4))
        a[3, 0] = a[1, 2] = b[0, 3] = b[2, 1] = sip
        a[2, 0] = b[0, 2] = sip * 30
        w.sip = Sip(a, b, None, None, w.wcs.crpix)
    return w


def make_gwcs(ra=150.0, dec=2.0, rot=20.0, scale=20.0, bbox=True):
    """The same TAN projection as make_wcs, as a gwcs pipeline of astropy models."""
    pytest.importorskip("gwcs")
    from astropy import coordinates as coord
    from astropy import units as u
    from astropy.modeling import models
    from gwcs import coordinate_frames as cf
    from gwcs import wcs as gw

    ny, nx = SHAPE
    c, s = np.cos(np.radians(rot)), np.sin(np.radians(rot))
    cd = scale / 3600.0 * np.array([[-c, s], [s, c]])
    # zero-based pixel -> intermediate (deg) -> native sphere -> sky
    shift = models.Shift(-(nx - 1) / 2) & models.Shift(-(ny - 1) / 2)
    affine = models.AffineTransformation2D(matrix=cd, translation=[0, 0])
    fwd = shift | affine | models.Pix2Sky_TAN() | models.RotateNative2Celestial(ra, dec, 180)
    det = cf.Frame2D(name="detector", axes_order=(0, 1), unit=(u.pix, u.pix))
    sky = cf.CelestialFrame(reference_frame=coord.ICRS(), name="icrs", unit=(u.deg, u.deg))
    w = gw.WCS(forward_transform=fwd, input_frame=det, output_frame=sky)
    if bbox:
        # a bounding box on pixel centres: the outline at -0.5 lies outside it
        w.bounding_box = ((0, nx - 1), (0, ny - 1))
    return w


def outline():
    x = np.array([-0.5, 199.5, 199.5, -0.5, 37.25])
    y = np.array([-0.5, -0.5, 149.5, 149.5, 80.75])
    return x, y


def test_astropy_wcs_matches_all_pix2world():
    w = make_wcs()
    ad = as_wcs_adapter(w, name="a.fits")
    assert isinstance(ad, WCSAdapter)
    assert ad.kind == "fitswcs"
    assert ad.name == "a.fits"
    x, y = outline()
    ra, dec = ad.pixel_to_world(x, y)
    era, edec = w.all_pix2world(x, y, 0)
    np.testing.assert_array_equal(ra, era)
    np.testing.assert_array_equal(dec, edec)
    assert ra.dtype == np.float64
    xb, yb = ad.world_to_pixel(ra, dec)
    np.testing.assert_allclose(xb, x, atol=1e-8)
    np.testing.assert_allclose(yb, y, atol=1e-8)
    # scalars and 2-D arrays keep their shapes
    r0, d0 = ad.pixel_to_world(3.0, 4.0)
    assert r0.shape == () and d0.shape == ()
    r2, _ = ad.pixel_to_world(np.zeros((2, 3)), np.ones((2, 3)))
    assert r2.shape == (2, 3)


def test_check_keeps_the_outer_pixel_corners():
    # bottom-left, bottom-right, top-right, top-left pixel corners, as the WCS maps them
    w = make_wcs(sip=2e-6)
    ad = as_wcs_adapter(w, name="c.fits", shape=SHAPE)
    ny, nx = SHAPE
    x, y = [-0.5, nx - 0.5, nx - 0.5, -0.5], [-0.5, -0.5, ny - 0.5, ny - 0.5]
    era, edec = w.all_pix2world(x, y, 0)
    np.testing.assert_array_equal(ad.corners[0], era)
    np.testing.assert_array_equal(ad.corners[1], edec)


def test_only_a_plain_tan_wcs_has_straight_great_circles():
    assert as_wcs_adapter(make_wcs()).straight
    assert as_wcs_adapter(make_wcs(swap=True)).straight  # latitude first
    assert not as_wcs_adapter(make_wcs(sip=2e-6)).straight
    tpv = make_wcs()
    tpv.wcs.set_pv([(1, 1, 1.0), (2, 1, 1.0)])  # TAN with PV: wcslib's TPV polynomial
    assert not as_wcs_adapter(tpv).straight
    sin = make_wcs()
    sin.wcs.ctype = ["RA---SIN", "DEC--SIN"]
    sin.wcs.set()
    assert not as_wcs_adapter(sin).straight
    assert not as_wcs_adapter(make_gwcs()).straight  # not known: split as before
    pair = (lambda x, y: make_wcs().all_pix2world(x, y, 0),
            lambda r, d: make_wcs().all_world2pix(r, d, 0))
    assert not as_wcs_adapter(pair).straight


def test_plain_tan_round_trip_is_measured_on_the_outline(monkeypatch):
    # a plain TAN inverts analytically: the check measures its own inverse on the
    # image outline only; an inverse off by 0.01 pixel there is still not used
    from skyeq import wcs as wcs_mod

    seen = []
    inverse = WCSAdapter._own_inverse

    def spy(self, ra, dec):
        seen.append(np.size(ra))
        return inverse(self, ra, dec)

    monkeypatch.setattr(WCSAdapter, "_own_inverse", spy)
    ad = as_wcs_adapter(make_wcs(), shape=SHAPE)
    assert ad.inverse == "own" and ad.inverse_error < 1e-9
    assert seen == [4 * wcs_mod._CHECK_EDGE]
    seen.clear()
    as_wcs_adapter(make_wcs(sip=2e-6), shape=SHAPE)  # not straight: every check point
    assert seen[0] == len(wcs_mod._check_points(SHAPE)[0])

    def off(self, ra, dec):
        x, y = inverse(self, ra, dec)
        return x + 0.01, y

    monkeypatch.setattr(WCSAdapter, "_own_inverse", off)
    ad = as_wcs_adapter(make_wcs(), shape=SHAPE)
    assert ad.inverse == "fitted" and ad.inverse_error == pytest.approx(0.01, rel=1e-6)


def test_sip_wcs_uses_the_distortion():
    w = make_wcs(sip=2e-6)
    ad = as_wcs_adapter(w)
    x, y = outline()
    ra, dec = ad.pixel_to_world(x, y)
    era, _ = w.all_pix2world(x, y, 0)
    np.testing.assert_array_equal(ra, era)
    lin_ra, _ = w.wcs_pix2world(x, y, 0)
    # the corners move by ~2 pixels (40 arcsec) with this distortion
    assert np.abs(ra - lin_ra).max() * 3600 * np.cos(np.radians(2.0)) > 10.0
    xb, yb = ad.world_to_pixel(ra, dec)
    np.testing.assert_allclose(xb, x, atol=1e-5)
    np.testing.assert_allclose(yb, y, atol=1e-5)


def test_gwcs_ignores_its_bounding_box_and_matches_astropy():
    gw = make_gwcs()
    w = make_wcs()
    ad = as_wcs_adapter(gw, name="g")
    assert ad.kind == "gwcs"
    x, y = outline()
    # gwcs's own APE 14 call honours the bounding box: the outline becomes NaN
    assert np.isnan(gw.pixel_to_world_values(x, y)[0][:4]).all()
    ra, dec = ad.pixel_to_world(x, y)
    era, edec = w.all_pix2world(x, y, 0)
    np.testing.assert_allclose(ra, era, rtol=0, atol=1e-10)
    np.testing.assert_allclose(dec, edec, rtol=0, atol=1e-10)
    xb, yb = ad.world_to_pixel(ra, dec)
    np.testing.assert_allclose(xb, x, atol=1e-7)
    np.testing.assert_allclose(yb, y, atol=1e-7)
    # footprints and overlaps from either description agree
    fg = geo.footprint(gw, SHAPE)
    fa = geo.footprint(w, SHAPE)
    np.testing.assert_allclose(fg.vertices, fa.vertices, atol=1e-12)
    other = make_wcs(150.03, 2.01, rot=-10)
    fo = geo.footprint(other, SHAPE)
    assert geo.intersect(fg, fo).area == pytest.approx(geo.intersect(fa, fo).area, rel=1e-9)
    np.testing.assert_array_equal(
        geo.overlap_spans(geo.intersect(fg, fo), gw, SHAPE),
        geo.overlap_spans(geo.intersect(fa, fo), w, SHAPE),
    )


def test_generic_ape14_and_high_level_wrappers():
    w = make_wcs()
    x, y = outline()
    era, edec = w.all_pix2world(x, y, 0)
    sliced = SlicedLowLevelWCS(w, Ellipsis)
    high = HighLevelWCSWrapper(sliced)
    for obj, kind in ((sliced, "ape14"), (high, "ape14"), (HighLevelWCSWrapper(w), "fitswcs")):
        ad = as_wcs_adapter(obj)
        assert ad.kind == kind
        ra, dec = ad.pixel_to_world(x, y)
        np.testing.assert_allclose(ra, era, rtol=0, atol=1e-12)
        np.testing.assert_allclose(dec, edec, rtol=0, atol=1e-12)


def test_callables_pair():
    w = make_wcs()

    def fwd(x, y):
        return w.all_pix2world(x, y, 0)

    def inv(ra, dec):
        return w.all_world2pix(ra, dec, 0)

    ad = as_wcs_adapter((fwd, inv), name="cb")
    assert ad.kind == "callables"
    x, y = outline()
    ra, dec = ad.pixel_to_world(x, y)
    np.testing.assert_array_equal(ra, w.all_pix2world(x, y, 0)[0])
    fp = geo.footprint(ad, SHAPE)
    np.testing.assert_array_equal(fp.vertices, geo.footprint(w, SHAPE).vertices)
    # and back to the reference's calling convention
    f2, i2 = _callable_pair(ad)
    np.testing.assert_array_equal(f2(x, y, with_bounding_box=False)[0], ra)
    np.testing.assert_allclose(i2(ra, dec, with_bounding_box=False)[0], x, atol=1e-9)


def test_latitude_first_axes_are_reordered():
    w = make_wcs()
    sw = make_wcs(swap=True)
    ad = as_wcs_adapter(sw)
    assert ad.lon_axis == 1
    x, y = outline()
    ra, dec = ad.pixel_to_world(x, y)
    era, edec = w.all_pix2world(x, y, 0)
    np.testing.assert_allclose(ra, era, atol=1e-12)
    np.testing.assert_allclose(dec, edec, atol=1e-12)
    xb, yb = ad.world_to_pixel(ra, dec)
    np.testing.assert_allclose(xb, x, atol=1e-8)
    np.testing.assert_allclose(yb, y, atol=1e-8)


def test_ra_is_wrapped_to_0_360():
    w = make_wcs(ra=0.0, dec=0.0, rot=0.0)
    ad = as_wcs_adapter(w)
    x, y = outline()
    ra, _ = ad.pixel_to_world(x, y)
    assert ra.min() >= 0.0 and ra.max() < 360.0
    assert (ra > 359.0).any() and (ra < 1.0).any()

    def fwd(x, y):
        return np.full(np.shape(x), -360.0 - 1e-20), np.zeros(np.shape(x))

    ra, _ = as_wcs_adapter((fwd, fwd)).pixel_to_world(x, y)
    assert np.all(ra == 0.0)


def test_adapters_pickle():
    w = make_wcs(sip=1e-6)
    ad = as_wcs_adapter(w, name="p")
    ad2 = pickle.loads(pickle.dumps(ad))
    x, y = outline()
    np.testing.assert_array_equal(ad2.pixel_to_world(x, y)[0], ad.pixel_to_world(x, y)[0])
    assert ad2.name == "p"
    gw = pickle.loads(pickle.dumps(as_wcs_adapter(make_gwcs())))
    assert np.isfinite(gw.pixel_to_world(x, y)[0]).all()
    # an adapter passes through, renamed only on request
    assert as_wcs_adapter(ad) is ad
    assert as_wcs_adapter(ad, name="q").name == "q"


def test_errors_name_the_image():
    with pytest.raises(TypeError, match="img7 has no WCS"):
        as_wcs_adapter(None, name="img7")
    with pytest.raises(TypeError, match=r"img8.*not an APE 14 WCS"):
        as_wcs_adapter(object(), name="img8")
    with pytest.raises(TypeError, match="img8"):
        as_wcs_adapter((len,), name="img8")
    cube = WCS(naxis=3)
    cube.wcs.ctype = ["RA---TAN", "DEC--TAN", "FREQ"]
    with pytest.raises(ValueError, match=r"cube.*2 pixel and 2 world axes"):
        as_wcs_adapter(cube, name="cube")


def test_approximate_inverses_are_refined():
    w = make_wcs(sip=2e-6)

    def fwd(x, y):
        return w.all_pix2world(x, y, 0)

    def off_inv(ra, dec):  # off by 0.05 pixel, as a fitted inverse can be
        x, y = w.all_world2pix(ra, dec, 0)
        return x + 0.05, y

    def linear_inv(ra, dec):  # ignores the SIP distortion: off by ~2 pixels
        return w.wcs_world2pix(ra, dec, 0)

    for inv, err in ((off_inv, (0.05, 0.051)), (linear_inv, (1.0, 10.0))):
        ad = as_wcs_adapter((fwd, inv), name="approx.fits", shape=SHAPE)
        assert ad.inverse == "fitted"
        assert err[0] < ad.inverse_error < err[1]
        assert round_trip(ad, fwd, SHAPE, 41) < 1e-6
        # footprints and spans are those of the exact WCS
        fp = geo.footprint((fwd, inv), SHAPE)
        np.testing.assert_array_equal(fp.vertices, geo.footprint(w, SHAPE).vertices)
    # an inverse within the tolerance (1e-3 pixel) is used as it is
    def close_inv(ra, dec):
        x, y = w.all_world2pix(ra, dec, 0)
        return x + 5e-4, y

    ad = as_wcs_adapter((fwd, close_inv), shape=SHAPE)
    assert ad.inverse == "own"
    assert ad.inverse_error == pytest.approx(5e-4, rel=0.02)  # all_world2pix: 1e-6
    # an unchecked adapter (no shape) just wraps the WCS
    assert as_wcs_adapter((fwd, off_inv)).inverse == "unchecked"


WAVY = make_wcs()


def wavy_fwd(x, y):
    """A periodic distortion of 0.3 pixel that no polynomial of degree 7 reproduces."""
    x = np.asarray(x, dtype=float)
    return WAVY.all_pix2world(x + 0.3 * np.sin(x / 7.0), y, 0)


def wavy_inv(ra, dec):
    return WAVY.all_world2pix(ra, dec, 0)


def test_newton_on_the_forward_transform_where_no_polynomial_fits():
    ad = as_wcs_adapter((wavy_fwd, wavy_inv), name="wavy", shape=SHAPE)
    assert ad.inverse == "newton"
    assert ad.fit is not None and ad.fit.error > 1e-3
    assert ad.newton_steps >= 2
    assert round_trip(ad, wavy_fwd, SHAPE, 41) < 1e-6
    # it pickles with its calibration (for process pools and dask)
    ad2 = pickle.loads(pickle.dumps(ad))
    assert ad2.inverse == "newton" and ad2.newton_steps == ad.newton_steps
    x, y = np.array([3.3, 150.2]), np.array([7.1, 120.9])
    np.testing.assert_array_equal(ad2.world_to_pixel(*wavy_fwd(x, y))[0],
                                  ad.world_to_pixel(*wavy_fwd(x, y))[0])


def test_pixel_area_of_a_tan_wcs():
    # gnomonic: a pixel at angle t from the tangent point covers cos(t)**3 of the
    # tangent point's
    w = make_wcs(scale=20.0)
    ad = as_wcs_adapter(w)
    x, y = np.array([0.0, 99.5, 199.0, 30.0]), np.array([0.0, 74.5, 149.0, 120.0])
    area = ad.pixel_area(x, y)
    ra, dec = w.all_pix2world(x, y, 0)
    lon, lat = np.radians(ra), np.radians(dec)
    lon0, lat0 = np.radians(w.wcs.crval)
    cos_t = np.sin(lat) * np.sin(lat0) + np.cos(lat) * np.cos(lat0) * np.cos(lon - lon0)
    np.testing.assert_allclose(area, np.radians(20.0 / 3600) ** 2 * cos_t**3, rtol=1e-8)
    assert area.shape == (4,)


def test_non_invertible_wcs_is_refused_naming_the_image():
    w = make_wcs()

    def fwd(x, y):
        return w.all_pix2world(x, y, 0)

    def inv(ra, dec):
        return w.all_world2pix(ra, dec, 0)

    def nan_inv(ra, dec):
        return np.full(np.shape(ra), np.nan), np.full(np.shape(ra), np.nan)

    def nan_fwd(x, y):
        ra, dec = w.all_pix2world(x, y, 0)
        return np.where(np.asarray(x) < 0, np.nan, ra), dec

    def raising_inv(ra, dec):
        raise RuntimeError("no convergence")

    def flat_fwd(x, y):  # every row at the same place: no inverse at all
        return w.all_pix2world(x, np.zeros_like(np.asarray(y, dtype=float)), 0)

    def folded_fwd(x, y):  # x and 200 - x at the same place: no single inverse
        x = np.asarray(x, dtype=float)
        return w.all_pix2world(100.0 + (x - 100.0) ** 2 / 100.0, y, 0)

    with pytest.raises(ValueError, match=r"nan\.fits.*cannot be inverted"):
        geo.footprint((fwd, nan_inv), SHAPE, name="nan.fits")
    with pytest.raises(ValueError, match=r"edge\.fits.*non-finite sky"):
        geo.footprint((nan_fwd, nan_inv), SHAPE, name="edge.fits")
    with pytest.raises(ValueError, match=r"r\.fits.*no convergence"):
        geo.footprint((fwd, raising_inv), SHAPE, name="r.fits")
    with pytest.raises(ValueError, match=r"flat\.fits.*degenerate"):
        geo.footprint((flat_fwd, inv), SHAPE, name="flat.fits")
    with pytest.raises(ValueError, match=r"fold\.fits.*cannot be inverted.*still miss by"):
        geo.footprint((folded_fwd, inv), SHAPE, name="fold.fits")
    # footprints() names images by position
    with pytest.raises(ValueError, match="image 1"):
        geo.footprints([w, (fwd, nan_inv)], [SHAPE, SHAPE])
