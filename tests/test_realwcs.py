"""Real instrument WCSs: a JWST NIRCam gwcs whose fitted inverse is good to 0.1 pixel,
and HST headers with SIP polynomials and distortion lookup tables (tests/data/README.md).

Each is accepted without any option; its inverse is checked on the image and, where it
is not good to 1e-3 pixel, replaced by Newton iterations (on a polynomial fitted to the
forward transform, or on the forward transform itself); overlaps agree with
spherical_geometry, pixel spans follow the true boundary, and matched skies agree with
stcal on the same inputs.
"""

import warnings
from pathlib import Path

import gwcs
import numpy as np
import pytest
from astropy.io import fits
from astropy.modeling import models
from astropy.wcs import WCS, FITSFixedWarning
from geometry_helpers import edge_grid, misplaced_span_pixels, round_trip, spans_to_mask
from nircam_helpers import load_nircam, subarray
from stcal.skymatch import skymatch as stcal_skymatch
from stcal.skymatch.skyimage import SkyImage
from stcal.skymatch.skystatistics import SkyStats

from skyeq import SkyStat, match_sky, synthetic
from skyeq import geometry as geo
from skyeq import wcs as wcs_module
from skyeq.wcs import as_wcs_adapter

DATA = Path(__file__).parent / "data"
NIRCAM = (2048, 2048)


@pytest.fixture(scope="module")
def nircam():
    return load_nircam()


def acs_wcs():
    """HST ACS/WFC chip 2: TAN-SIP of order 4, 4096 x 2048 pixels."""
    with fits.open(DATA / "j94f05bgq_flt.fits") as hl:
        return WCS(hl[1].header, hl)


def wfc3_wcs():
    """HST WFC3/UVIS: TAN with detector-to-image lookup tables, 4096 x 2051 pixels."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)  # a header without pixels
        with fits.open(DATA / "ie6d07ujq_wcs.fits") as hl:
            return WCS(hl[0].header, hl)


def gwcs_forward(w):
    return lambda x, y: w(x, y, with_bounding_box=False)


def stcal_skies(data, wcs_pairs, stat="median"):
    """stcal 1.20 `skymatch` with method 'match' on the same images."""
    skystat = SkyStats(skystat=stat, nclip=5, lsig=4.0, usig=4.0, binwidth=0.1)
    images = [
        SkyImage(d, np.isfinite(d), fwd, inv, skystat, sky_id=k)
        for k, (d, (fwd, inv)) in enumerate(zip(data, wcs_pairs, strict=True))
    ]
    stcal_skymatch(images, skymethod="match", match_down=True, subtract=False)
    return np.array([im.sky for im in images], dtype=float)


def relative_error(sky, truth):
    d = np.asarray(sky) - truth
    return float(np.abs(d - d.mean()).max())


# ------------------------------------------------------------------ NIRCam gwcs


def test_nircam_inverse_is_refined_to_a_millionth_of_a_pixel(nircam):
    # the problem: the gwcs's own (fitted) inverse misses by ~0.1 pixel at the corners
    x, y = edge_grid(NIRCAM)
    ra, dec = nircam(x, y, with_bounding_box=False)
    xb, yb = nircam.backward_transform(ra, dec)
    own = np.hypot(xb - x, yb - y).max()
    assert 0.05 < own < 0.2
    # accepted without any option; world -> pixel goes through a fitted forward
    # transform, reproducing the gwcs to better than 1e-7 pixel
    ad = as_wcs_adapter(nircam, "nrcb1", shape=NIRCAM)
    assert ad.inverse == "fitted"
    assert ad.fit.error < 1e-7
    assert ad.fit.degree == 5
    assert round_trip(ad, gwcs_forward(nircam), NIRCAM) < 1e-6
    assert ad.pixel_scale * 206264.8 == pytest.approx(0.0305, rel=0.01)  # arcsec/pixel


def test_nircam_newton_on_the_forward_transform(nircam, monkeypatch):
    # without a usable polynomial (degree 1 only), Newton runs on the gwcs itself,
    # started from its own inverse, with a number of steps calibrated on the image
    monkeypatch.setattr(wcs_module, "_FIT_DEGREES", (1,))
    pair = (gwcs_forward(nircam), lambda ra, dec: nircam.backward_transform(ra, dec))
    ad = as_wcs_adapter(pair, "nrcb1 callables", shape=NIRCAM)
    assert ad.inverse == "newton"
    assert 0.05 < ad.inverse_error < 0.2
    assert ad.newton_steps in (1, 2)
    assert round_trip(ad, gwcs_forward(nircam), NIRCAM) < 1e-6


class LowLevelOnly:
    """A bare APE 14 low-level WCS around the NIRCam transforms (no gwcs interface)."""

    pixel_n_dim = 2
    world_n_dim = 2
    world_axis_physical_types = ("pos.eq.ra", "pos.eq.dec")

    def __init__(self, w):
        self._fwd = w.forward_transform
        self._bwd = w.backward_transform

    def pixel_to_world_values(self, x, y):
        return self._fwd(x, y)

    def world_to_pixel_values(self, ra, dec):
        return self._bwd(ra, dec)


def test_any_ape14_wcs_with_an_approximate_inverse(nircam):
    ad = as_wcs_adapter(LowLevelOnly(nircam), "ape14", shape=NIRCAM)
    assert ad.kind == "ape14"
    assert 0.05 < ad.inverse_error < 0.2  # measured: not a gwcs, so its inverse is tried
    assert ad.inverse == "fitted"
    assert round_trip(ad, gwcs_forward(nircam), NIRCAM) < 1e-6


def test_repoint_keeps_the_frames_and_moves_the_reference(nircam):
    # a repointed JWST gwcs keeps its four frames; its pixels map to the sky as the
    # original's followed by the sky rotation, bit for bit
    moved = synthetic.repoint(nircam, 20.0, -5.0)
    names = [getattr(s.frame, "name", s.frame) for s in moved.pipeline]
    assert names == [getattr(s.frame, "name", s.frame) for s in nircam.pipeline]
    assert len(names) == 4
    x, y = edge_grid(NIRCAM, 9)
    rot = moved.pipeline[-2].transform.right  # the appended rotation
    want = (nircam.forward_transform | rot)(x, y)
    got = moved(x, y, with_bounding_box=False)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    # the centre moved by 20" east and 5" south
    c0 = nircam(1023.5, 1023.5, with_bounding_box=False)
    c1 = moved(1023.5, 1023.5, with_bounding_box=False)
    d_east = (c1[0] - c0[0]) * np.cos(np.radians(c0[1])) * 3600.0
    assert d_east == pytest.approx(20.0, abs=0.01)
    assert (c1[1] - c0[1]) * 3600.0 == pytest.approx(-5.0, abs=0.01)


def test_gwcs_transforms_are_built_once_per_image(nircam, monkeypatch):
    cls = type(nircam)
    counts = {"forward_transform": 0, "backward_transform": 0}
    for name in counts:
        prop = getattr(cls, name)

        def counting(self, prop=prop, name=name):
            counts[name] += 1
            return prop.fget(self)

        monkeypatch.setattr(cls, name, property(counting))
    ws = [synthetic.repoint(nircam, e, n) for e, n in ((0, 0), (20, 5), (-15, 10))]
    fwd_after_repoint = counts["forward_transform"]
    shapes = [NIRCAM] * 3
    data = [np.zeros(NIRCAM, np.float32) + k for k in range(3)]
    res = match_sky(data, ws, stat=SkyStat("mean", nclip=0))
    np.testing.assert_allclose(res.sky, [0.0, 1.0, 2.0], atol=1e-6)
    # the forward transform (composed on every read) is read once per image: the
    # counting property here is not gwcs's own, so the adapter reads it instead of
    # taking the pipeline's steps (test_flatmodel: gwcs's own is not read at all);
    # telling a gwcs apart does not read it. The backward transform is never built:
    # the polynomial fit does without it
    assert counts["forward_transform"] == fwd_after_repoint + 3
    assert counts["backward_transform"] == 0
    ads = [as_wcs_adapter(w, shape=s) for w, s in zip(ws, shapes, strict=True)]
    before = dict(counts)
    ra, dec = ads[1].pixel_to_world(*edge_grid(NIRCAM))
    for _ in range(3):
        ads[1].world_to_pixel(ra, dec)
    fps = geo.footprints(ads, shapes)
    _, ovs = geo.find_overlaps(fps)
    geo.overlap_spans_many(ovs, ads[0], NIRCAM)
    assert counts == before


def test_nircam_overlaps_agree_with_spherical_geometry(nircam):
    ws = [synthetic.repoint(nircam, e, n) for e, n in ((0, 0), (15, 5), (-12, 14), (18, -16))]
    for stepsize in (None, 512):
        fps = geo.footprints(ws, [NIRCAM] * 4, stepsize=stepsize)
        pairs, ovs = geo.find_overlaps(fps)
        assert len(pairs) == 6
        for (i, j), ov in zip(pairs, ovs, strict=True):
            ref = abs(fps[i].polygon.intersection(fps[j].polygon).area())
            assert ov.area == pytest.approx(ref, rel=1e-8)


def test_nircam_spans_follow_the_true_boundary(nircam):
    # a 160 x 200 subarray in the detector corner, where the distortion is strongest,
    # dithered by ~40 pixels; spans against every pixel centre tested on the sky
    shape = (160, 200)
    base = subarray(nircam, 1840, 1880, shape)
    ws = [base, synthetic.repoint(base, 1.2, 0.7), synthetic.repoint(base, -0.9, 1.4)]
    fps = geo.footprints(ws, [shape] * 3, stepsize=20)
    pairs, ovs = geo.find_overlaps(fps)
    assert len(pairs) == 3
    nbad = 0
    for (i, j), ov in zip(pairs, ovs, strict=True):
        for k in (i, j):
            spans = geo.overlap_spans(ov, ws[k], shape)
            assert spans_to_mask(spans, shape).sum() > 5000
            outlines = [fps[i].vertices, fps[j].vertices]
            nbad += misplaced_span_pixels(spans, ws[k], shape, outlines, 0.0305)
    assert nbad <= 3


def test_nircam_pixel_area_adds_up_to_the_footprint(nircam):
    ad = as_wcs_adapter(nircam, shape=NIRCAM)
    k = 64  # cells of 32 x 32 pixels, area at their centres
    c = (np.arange(k) + 0.5) * (2048 / k) - 0.5
    x, y = np.meshgrid(c, c)
    total = ad.pixel_area(x, y).sum() * (2048 / k) ** 2
    fp = geo.footprints([nircam], [NIRCAM], stepsize=64)[0]
    assert total == pytest.approx(fp.area, rel=1e-5)


def test_match_on_nircam_dithers_agrees_with_stcal(nircam):
    # 5 dithered 512 x 512 subarrays of the distorted detector corner, sources fixed
    # on the sky, sky 100 + offsets, noise 1; stcal gets the gwcs's own transforms
    shape = (512, 512)
    base = subarray(nircam, 1536, 1536, shape)
    offsets = ((0.0, 0.0), (1.6, 0.9), (-1.2, 2.1), (2.4, -1.5), (-2.0, -1.1))  # arcsec
    ws = [synthetic.repoint(base, e, n) for e, n in offsets]
    truth = 100.0 + np.array([0.0, 0.7, -0.4, 1.3, 0.2])
    m = synthetic.on_wcs(ws, [shape] * 5, sky=truth, noise=1.0, seed=11, point_sources=60)
    res = match_sky(m.data, m.wcs, method="match", stat=SkyStat("median", nclip=5))
    ref = stcal_skies(m.data, [(w.forward_transform, w.backward_transform) for w in ws])
    assert np.abs(res.sky - ref).max() < 0.02  # noise sigma 1
    assert relative_error(res.sky, truth) < 0.01
    assert relative_error(res.sky, truth) < relative_error(ref, truth) + 0.005


def test_gwcs_without_inverse_or_bounding_box():
    # a TAN gwcs with a quadratic distortion that has no analytic inverse
    from astropy import coordinates as coord
    from astropy import units as u
    from gwcs import coordinate_frames as cf

    poly_x = models.Polynomial2D(2, c1_0=1.0, c2_0=2e-5, c1_1=-1e-5)
    poly_y = models.Polynomial2D(2, c0_1=1.0, c0_2=1.5e-5, c2_0=5e-6)
    distortion = models.Mapping((0, 1, 0, 1)) | (poly_x & poly_y)
    scale = models.Scale(0.1 / 3600) & models.Scale(0.1 / 3600)
    fwd = (
        (models.Shift(-255.5) & models.Shift(-255.5)) | distortion | scale
        | models.Pix2Sky_TAN() | models.RotateNative2Celestial(53.1, -27.8, 180)
    )
    det = cf.Frame2D(name="detector", axes_order=(0, 1), unit=(u.pix, u.pix))
    sky = cf.CelestialFrame(reference_frame=coord.ICRS(), name="icrs", unit=(u.deg, u.deg))
    w = gwcs.WCS(forward_transform=fwd, input_frame=det, output_frame=sky)
    with pytest.raises(NotImplementedError):
        _ = w.backward_transform
    shape = (512, 512)
    ad = as_wcs_adapter(w, "no-inverse", shape=shape)
    assert not ad.has_inverse
    assert ad.inverse == "fitted"
    assert round_trip(ad, gwcs_forward(w), shape) < 1e-6
    moved = synthetic.repoint(w, 3.0, -2.0)  # no bounding box either
    fps = geo.footprints([w, moved], [shape] * 2)
    pairs, ovs = geo.find_overlaps(fps)
    assert len(pairs) == 1
    spans = geo.overlap_spans(ovs[0], moved, shape)
    assert spans[:, 2].sum() - spans[:, 1].sum() + len(spans) > 0.8 * 482 * 492


# ------------------------------------------------------------------ HST SIP, lookup tables


@pytest.mark.parametrize("make, shape", [(acs_wcs, (2048, 4096)), (wfc3_wcs, (2051, 4096))])
def test_real_fits_distortions_use_their_own_inverse(make, shape):
    w = make()
    ad = as_wcs_adapter(w, "hst", shape=shape)
    # astropy inverts SIP and lookup tables iteratively, to far better than 1e-3 pixel
    assert ad.kind == "fitswcs"
    assert ad.inverse == "own"
    assert ad.inverse_error < 1e-6
    assert round_trip(ad, lambda x, y: w.all_pix2world(x, y, 0), shape) < 1e-6
    moved = [synthetic.repoint(w, e, n) for e, n in ((40.0, 10.0), (-30.0, 45.0))]
    fps = geo.footprints([w, *moved], [shape] * 3, stepsize=1024)
    pairs, ovs = geo.find_overlaps(fps)
    assert len(pairs) == 3
    for (i, j), ov in zip(pairs, ovs, strict=True):
        ref = abs(fps[i].polygon.intersection(fps[j].polygon).area())
        assert ov.area == pytest.approx(ref, rel=1e-8)


def test_acs_sip_distortion_is_strong_and_followed():
    w = acs_wcs()
    x, y = edge_grid((2048, 4096), 9)
    ra, dec = w.all_pix2world(x, y, 0)
    lra, ldec = w.wcs_pix2world(x, y, 0)
    off = np.hypot((ra - lra) * np.cos(np.radians(dec)), dec - ldec) * 3600
    assert off.max() > 2.0  # arcsec: tens of pixels at the chip corners
    # spans of an overlap follow the curved (in pixels) boundary, on a corner subimage
    shape = (300, 400)
    ws = [w, synthetic.repoint(w, 4.0, 3.0)]
    fps = geo.footprints(ws, [shape] * 2, stepsize=25)
    _, ovs = geo.find_overlaps(fps)
    spans = geo.overlap_spans(ovs[0], w, shape)
    assert spans_to_mask(spans, shape).sum() > 10000
    assert misplaced_span_pixels(spans, w, shape, [fps[0].vertices, fps[1].vertices], 0.05) <= 3


def test_match_on_sip_dithers_agrees_with_stcal():
    w = acs_wcs()
    shape = (400, 400)  # the chip corner at pixel (0, 0): the strongest distortion
    offsets = ((0.0, 0.0), (2.0, 1.2), (-1.5, 2.6), (3.1, -1.9))  # arcsec, 0.05"/pixel
    ws = [synthetic.repoint(w, e, n) for e, n in offsets]
    truth = 50.0 + np.array([0.0, 0.9, -0.6, 1.7])
    m = synthetic.on_wcs(ws, [shape] * 4, sky=truth, noise=1.0, seed=5, point_sources=60)
    res = match_sky(m.data, m.wcs, method="match", stat=SkyStat("median", nclip=5))

    def pair(v):
        return (lambda x, y, with_bounding_box=False: v.all_pix2world(x, y, 0),
                lambda r, d, with_bounding_box=False: v.all_world2pix(r, d, 0))

    ref = stcal_skies(m.data, [pair(v) for v in ws])
    assert np.abs(res.sky - ref).max() < 0.02
    assert relative_error(res.sky, truth) < 0.01


def test_on_wcs_renders_sources_at_their_sky_positions(nircam):
    shape = (256, 256)
    base = subarray(nircam, 1700, 100, shape)
    ws = [base, synthetic.repoint(base, 1.5, -1.0)]
    m = synthetic.on_wcs(ws, [shape] * 2, sky=0.0, noise=0.0, seed=3, point_sources=40,
                         extended_sources=0)
    assert [w is v for w, v in zip(m.wcs, ws, strict=True)] == [True, True]
    for w, img in zip(ws, m.data, strict=True):
        ad = as_wcs_adapter(w, shape=shape)
        x, y = ad.world_to_pixel(m.sources["ra"], m.sources["dec"])
        inside = (x > 3) & (x < shape[1] - 4) & (y > 3) & (y < shape[0] - 4)
        assert inside.sum() >= 5
        for k in np.flatnonzero(inside):
            # round Gaussians of sigma >= 1 pixel: the pixel nearest to the position
            # holds at least exp(-0.25) of the peak (other sources only add)
            assert img[round(float(y[k])), round(float(x[k]))] >= 0.77 * m.sources["peak"][k]
