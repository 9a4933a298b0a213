"""`skyeq.compat.stcal` against ``stcal.skymatch`` (stcal 1.20) on the same inputs.

Both get the same float32 arrays, masks and WCS callables, built twice (the objects are
mutated). As in tests/test_match_parity.py, the reference runs with its overlap scan
replaced by the pixel-centre rule (`centre_rule`) where pixel sets matter, so that the
1e-3-sigma comparisons test the compatibility layer and not the documented pixel-rule
difference; constant-sky inputs are compared with the reference's own scan.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import stcal.skymatch as ref
from numpy.testing import assert_array_equal
from test_match_parity import NCLIP, SIGMA_TOL, _sky_like_first_pixels, _wrap, centre_rule

from skyeq import synthetic
from skyeq.compat import stcal as compat

__all__ = ["centre_rule"]  # the fixture, imported for the tests below

GROUPS = [0, 0, 0, 0, 1, 1, 1, 1, 2, 3, 4, 5]  # two exposures as groups, four single images


@pytest.fixture(scope="module")
def exposures():
    return _sky_like_first_pixels(
        synthetic.exposures(3, detectors=(2, 2), shape=(150, 150), seed=3))


def _build(mod, m, stat="median", groups=None):
    """SkyImages (and SkyGroups) of a mosaic for ``mod``: the images, and the items."""
    skystat = mod.SkyStats(skystat=stat, nclip=NCLIP, lsig=4.0, usig=4.0, binwidth=0.1)
    images = [mod.SkyImage(d.astype(np.float32), np.isfinite(d), *_wrap(w), skystat,
                           sky_id=k) for k, (d, w) in enumerate(zip(m.data, m.wcs, strict=True))]
    if groups is None:
        return images, images
    items = []
    for gid in dict.fromkeys(groups):
        members = [im for im, g in zip(images, groups, strict=True) if g == gid]
        items.append(members[0] if len(members) == 1 else mod.SkyGroup(members, sky_id=gid))
    return images, items


def _run(mod, m, method, subtract, groups=None, stat="median"):
    images, items = _build(mod, m, stat, groups)
    out = mod.skymatch(items, skymethod=method, match_down=True, subtract=subtract)
    assert out is None
    return images


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("subtract", [False, True])
@pytest.mark.parametrize("method", ["local", "global", "match", "global+match"])
def test_skies_validity_and_subtracted_arrays_as_stcal(exposures, method, subtract, grouped,
                                                      centre_rule):
    m = exposures
    groups = GROUPS if grouped else None
    theirs = _run(ref, m, method, subtract, groups)
    ours = _run(compat, m, method, subtract, groups)
    noise = np.asarray(m.noise)
    sky_ref = np.array([im.sky for im in theirs], dtype=float)
    sky = np.array([im.sky for im in ours], dtype=float)
    assert_array_equal([im.is_sky_valid for im in ours], [im.is_sky_valid for im in theirs])
    assert np.all(np.abs(sky - sky_ref) / noise < SIGMA_TOL), np.abs(sky - sky_ref) / noise
    for a, b, s in zip(ours, theirs, noise, strict=True):
        assert a.image.dtype == np.float32
        diff = np.nanmax(np.abs(a.image.astype(float) - b.image.astype(float))) / s
        assert diff < SIGMA_TOL
    if grouped:
        for lo, hi in ((0, 4), (4, 8)):
            assert np.ptp(sky[lo:hi]) == 0.0


@pytest.mark.parametrize("method", ["local", "global", "match", "global+match"])
def test_constant_skies_agree_with_the_reference_scan(method):
    # no noise and no sources: every pixel of an image has its sky, so no pixel rule
    # can matter; the reference runs with its own scan-fill
    m = synthetic.tile_grid(2, 3, shape=(120, 120), overlap=0.15, noise=0.0, seed=4,
                            point_sources=0, extended_sources=0)
    theirs = _run(ref, m, method, False)
    ours = _run(compat, m, method, False)
    sky_ref = np.array([im.sky for im in theirs], dtype=float)
    sky = np.array([im.sky for im in ours], dtype=float)
    assert_array_equal([im.is_sky_valid for im in ours], [im.is_sky_valid for im in theirs])
    np.testing.assert_allclose(sky, sky_ref, rtol=0, atol=1e-5 * np.abs(sky_ref).max())


def _calc_skies(mod, m):
    """calc_sky of an image alone (relative and absolute), with an image, with a group;
    of a group alone and with an image."""
    images, items = _build(mod, m, groups=GROUPS)
    images[8].sky = 2.5
    return [images[8].calc_sky(), images[8].calc_sky(delta=False),
            images[8].calc_sky(overlap=images[4]), images[8].calc_sky(overlap=items[0]),
            items[0].calc_sky(), items[0].calc_sky(overlap=images[8]),
            images[8].calc_sky(overlap=images[9])]  # no overlap: (None, 0, 0.0)


def test_calc_sky_of_an_image_and_of_its_overlaps_as_stcal(exposures, centre_rule):
    m = exposures
    got, expect = _calc_skies(compat, m), _calc_skies(ref, m)
    assert got[-1] == expect[-1] == (None, 0, 0.0)
    for (v, n, a), (ve, ne, ae) in zip(got[:-1], expect[:-1], strict=True):
        assert v is not None and ve is not None
        assert n == ne
        assert abs(v - float(ve)) < SIGMA_TOL * max(m.noise)
        assert a == pytest.approx(ae, rel=1e-6)


@pytest.mark.parametrize("stat", ["mean", "median", "mode", "midpt"])
def test_skystats_called_on_an_array_as_stcal(stat):
    rng = np.random.default_rng(5)
    data = rng.normal(100.0, 2.0, 20000).astype(np.float32)
    data[-50:] += 300.0  # not first: the reference's mode/midpt histogram starts at the
    # first value when it is clipped (docs/differences.md, "histogram origin")
    value, npix = compat.SkyStats(stat)(data)
    value_ref, npix_ref = ref.SkyStats(stat)(data)
    assert npix == npix_ref
    assert value == pytest.approx(float(value_ref), abs=1e-3 * 2.0)
    st = compat.SkyStats(stat)
    st.calc_sky(data.reshape(100, 200))
    assert (st.skyval, st.npix) == (value, npix)


def test_errors_and_messages_as_stcal():
    m = synthetic.tile_grid(1, 2, shape=(40, 40), seed=1)
    images, _ = _build(compat, m)
    with pytest.raises(ValueError, match=r"^Unsupported 'skymethod'. Valid values are: "
                                         r"'local', 'global', 'match', or 'global\+match'$"):
        compat.skymatch(images, skymethod="user")
    with pytest.raises(TypeError, match=r"^Each element of the 'images' must be either a "
                                        r"'SkyImage' or a 'SkyGroup'$"):
        compat.skymatch([images[0], "b.fits"])
    with pytest.raises(ValueError, match=r"^Argument 'images' must contain at least one image$"):
        compat.skymatch([])
    with pytest.raises(ValueError, match=r"^'mask' must have the same shape as 'image'\.$"):
        compat.SkyImage(m.data[0], np.ones((3, 3), bool), *_wrap(m.wcs[0]), compat.SkyStats())
    with pytest.raises(ValueError, match=r"^SkyGroup requires a list of images$"):
        compat.SkyGroup([])
    # where the reference fails late or silently: at once, naming the problem
    with pytest.raises(ValueError, match="nclip"):
        compat.SkyStats("median", nclip=-1)
    with pytest.raises(ValueError, match="mode"):
        compat.SkyStats("modal")
    with pytest.raises(ValueError, match="Not enough data points"):
        compat.SkyStats()(np.zeros(0))
    other = compat.SkyImage(m.data[1], np.ones((40, 40), bool), *_wrap(m.wcs[1]),
                            lambda d: (0.0, d.size))
    with pytest.raises(TypeError, match=r"skystat of image .* must be a skyeq.compat.stcal"):
        compat.skymatch([images[0], other])
    mixed = compat.SkyImage(m.data[1], np.ones((40, 40), bool), *_wrap(m.wcs[1]),
                            compat.SkyStats("mode"))
    with pytest.raises(ValueError, match="one statistic for all images"):
        compat.skymatch([images[0], mixed])


def test_subtraction_is_in_place_and_the_sky_cumulative_as_stcal(caplog, centre_rule):
    m = synthetic.tile_grid(1, 3, shape=(60, 60), overlap=0.2, noise=0.5, seed=2)
    images, _ = _build(compat, m)
    theirs, _ = _build(ref, m)
    arrays = [im.image for im in images]
    before = [a.copy() for a in arrays]
    # run twice subtracting (the second finds almost nothing more), then once not
    # subtracting (the statistics of the data as they are now, minus the sky: the sky
    # returns to about 0), each time as the reference does
    for subtract in (True, True, False):
        compat.skymatch(images, skymethod="global+match", subtract=subtract)
        ref.skymatch(theirs, skymethod="global+match", subtract=subtract)
        sky = np.array([im.sky for im in images])
        np.testing.assert_allclose(sky, [im.sky for im in theirs], rtol=0,
                                   atol=SIGMA_TOL * 0.5)
        if subtract:
            for im, a, b in zip(images, arrays, before, strict=True):
                assert im.image is a  # the caller's array, changed in place
                np.testing.assert_allclose(a, b - np.float32(im.sky), rtol=0, atol=1e-4)
    assert np.abs(sky).max() < 1e-3
    # one image has nothing to match: no change, not valid (as the reference)
    images[0].is_sky_valid = theirs[0].is_sky_valid = True
    images[0].sky = theirs[0].sky = 4.0
    with caplog.at_level(logging.WARNING, logger="skyeq.compat.stcal"):
        compat.skymatch([images[0]], skymethod="match")
    ref.skymatch([theirs[0]], skymethod="match")
    assert images[0].sky == theirs[0].sky == 4.0
    assert images[0].is_sky_valid is theirs[0].is_sky_valid is False
    assert "Nothing to match" in caplog.text


def test_jwst_style_gwcs_methods_on_real_nircam_dithers():
    # the JWST step passes wcs.__call__ and wcs.invert of each image's gwcs: skyeq then
    # uses the gwcs itself (a polynomial-verified inverse), and the skies agree with
    # stcal's on the same real-distortion dithers within 0.02 sigma (as skyeq.match_sky)
    import copy
    from pathlib import Path

    import asdf

    with asdf.open(Path(__file__).parent / "data" / "nrcb1-wcs.asdf", lazy_load=False,
                   memmap=False) as af:
        base = copy.deepcopy(af["wcs"])
    wcss = [synthetic.repoint(base, e, n) for e, n in ((0.0, 0.0), (6.0, -4.0), (-5.0, 7.0))]
    m = synthetic.on_wcs(wcss, [(2048, 2048)] * 3, sky=[100.0, 100.7, 99.4], noise=1.0,
                         seed=12)
    skies = {}
    for mod in (ref, compat):
        stat = mod.SkyStats("median")
        images = [mod.SkyImage(d, np.isfinite(d), w.__call__, w.invert, stat, sky_id=k)
                  for k, (d, w) in enumerate(zip(m.data, wcss, strict=True))]
        mod.skymatch(images, skymethod="match")
        skies[mod] = np.array([im.sky for im in images])
        assert all(im.is_sky_valid for im in images)
        if mod is compat:
            assert images[1].wcs is wcss[1]
    assert np.abs(skies[compat] - skies[ref]).max() < 0.02
    truth = np.array([100.0, 100.7, 99.4])
    np.testing.assert_allclose(skies[compat] - skies[compat][0], truth - truth[0], atol=0.02)


@pytest.mark.parametrize("method", ["global", "global+match"])
def test_an_image_without_usable_pixels_is_invalid_where_stcal_crashes(method):
    m = synthetic.tile_grid(1, 3, shape=(60, 60), overlap=0.2, noise=0.5, seed=2)
    m.data[2][:] = np.nan  # a fresh mosaic: its arrays are this test's own
    with pytest.raises(TypeError, match="not supported between"):
        _run(ref, m, method, False)  # jwst issue 5077, still in stcal 1.20.0
    ours = _run(compat, m, method, False)
    assert [im.is_sky_valid for im in ours] == [True, True, False]
    assert ours[2].sky == 0.0
    if method == "global":  # the two others share the smallest local sky
        stat = compat.SkyStats("median", nclip=NCLIP, lsig=4.0, usig=4.0)
        local = [stat(d[np.isfinite(d)])[0] for d in m.data[:2]]
        assert ours[0].sky == ours[1].sky == pytest.approx(min(local), rel=1e-12)


def test_intersection_and_the_group_sky_setter_as_stcal(exposures):
    m = exposures
    (ours, our_items), (theirs, their_items) = (_build(compat, m, groups=GROUPS),
                                                _build(ref, m, groups=GROUPS))
    for a, b in ((8, 4), (8, 9)):
        got, expect = ours[a].intersection(ours[b]), theirs[a].intersection(theirs[b])
        assert type(got).__name__ == "SphericalPolygon"
        assert abs(got.area()) == pytest.approx(abs(expect.area()), rel=1e-6, abs=1e-15)
    got = ours[8].intersection(our_items[0])
    expect = theirs[8].intersection(their_items[0])
    assert abs(got.area()) == pytest.approx(abs(expect.area()), rel=1e-6)
    assert abs(our_items[0].intersection(ours[8]).area()) == pytest.approx(abs(got.area()),
                                                                          rel=1e-6)
    # setting a group's sky adds the change to every member's
    for items, images in ((our_items, ours), (their_items, theirs)):
        images[1].sky = 1.0
        items[0].sky = 3.0
        items[0].sky = 5.0
        assert [im.sky for im in images[:4]] == [5.0, 6.0, 5.0, 5.0]
        assert len(items[0]) == 4 and items[0][1] is images[1]
        assert list(items[0]) == images[:4]
