"""pair_stat="difference": pair offsets from co-located pixel differences (#15)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fits_helpers import write_mosaic
from nircam_helpers import load_nircam, subarray
from stcal.skymatch import skymatch as stcal_skymatch
from stcal.skymatch.skyimage import SkyImage
from stcal.skymatch.skystatistics import SkyStats

from skyeq import match_sky, synthetic

DATA = Path(__file__).parent / "data"


def rms_error(sky, truth, noise):
    """RMS of the relative skies' errors in noise sigmas (the free constant removed)."""
    e = (np.asarray(sky) - truth) / noise
    return float(np.sqrt(np.mean((e - e.mean()) ** 2)))


def stcal_match(data, wcs, stat="median"):
    """stcal 1.20's skymatch, method 'match', on the same arrays and astropy WCSs."""
    skystat = SkyStats(skystat=stat, nclip=5, lsig=4.0, usig=4.0, binwidth=0.1)
    images = [SkyImage(d, np.isfinite(d), lambda x, y, w=w, **_: w.all_pix2world(x, y, 0),
                       lambda r, d_, w=w, **_: w.all_world2pix(r, d_, 0), skystat, sky_id=k)
              for k, (d, w) in enumerate(zip(data, wcs, strict=True))]
    stcal_skymatch(images, skymethod="match", match_down=True, subtract=False)
    return np.array([im.sky for im in images], dtype=float)


@pytest.fixture(scope="module")
def nebula():
    """3x3 tiles of 256x256, 10 % overlaps, noise 1, sources, bright emission."""
    m = synthetic.tile_grid(3, 3, shape=(256, 256), seed=4)
    return m, synthetic.add_nebula(m).data


def test_difference_recovers_skies_through_extended_emission(nebula):
    # measured: difference 0.013 sigma RMS, own statistics 0.155, stcal 0.24
    m, data = nebula
    diff = match_sky(data, m.wcs, pair_stat="difference")
    own = match_sky(data, m.wcs)
    ref = stcal_match(data, m.wcs)
    e_diff = rms_error(diff.sky, m.sky, m.noise)
    e_own = rms_error(own.sky, m.sky, m.noise)
    e_ref = rms_error(ref, m.sky, m.noise)
    assert e_diff < 0.02
    assert e_own > 10 * e_diff and e_ref > 10 * e_diff
    # the pair table: the statistic of the differences, one side, counts both sides
    assert np.all(diff.pairs["sky_j"] == 0.0)
    assert np.array_equal(diff.pairs["npix_i"], diff.pairs["npix_j"])
    assert np.isfinite(diff.sky_err).all()


def test_difference_mode_through_extended_emission(nebula):
    # the histogram mode of a few thousand differences is noisy in itself (0.12 sigma
    # here, PEERS.md: 0.10 sigma at 26k pixels of pure noise), still 10x better than the
    # own modes (1.27) and stcal's (33: its histogram loses the peak in the emission)
    m, data = nebula
    e_diff = rms_error(match_sky(data, m.wcs, pair_stat="difference", stat="mode").sky,
                       m.sky, m.noise)
    e_own = rms_error(match_sky(data, m.wcs, stat="mode").sky, m.sky, m.noise)
    e_ref = rms_error(stcal_match(data, m.wcs, stat="mode"), m.sky, m.noise)
    assert e_diff < 0.2
    assert e_own > 6 * e_diff and e_ref > 6 * e_diff


@pytest.mark.parametrize("layout", ["tiles", "dithers"])
def test_difference_and_own_agree_on_empty_sky(layout):
    kw = {"point_sources": 0, "extended_sources": 0, "seed": 7}
    m = (synthetic.tile_grid(2, 3, shape=(192, 192), **kw) if layout == "tiles"
         else synthetic.dithers(5, shape=(192, 192), **kw))
    diff = match_sky(m.data, m.wcs, pair_stat="difference")
    own = match_sky(m.data, m.wcs)
    # both within noise of the truth: the median of ~4e3 (tiles) to ~3e4 pixels
    # scatters by ~0.02 / 0.007 sigma
    tol = 0.06 if layout == "tiles" else 0.02
    assert rms_error(diff.sky, m.sky, m.noise) < tol
    assert rms_error(own.sky, m.sky, m.noise) < tol
    assert np.abs(diff.sky - own.sky).max() < 2 * tol


def test_difference_on_real_nircam_dithers():
    shape = (384, 384)
    base = subarray(load_nircam(), 1600, 1600, shape)
    ws = [synthetic.repoint(base, e, n) for e, n in ((0, 0), (1.7, 0.8), (-1.1, 1.9),
                                                      (2.2, -1.3))]
    truth = 100.0 + np.array([0.0, 0.7, -0.4, 1.3])
    m = synthetic.on_wcs(ws, [shape] * 4, sky=truth, noise=1.0, seed=11, point_sources=40)
    diff = match_sky(m.data, m.wcs, pair_stat="difference")
    own = match_sky(m.data, m.wcs)
    assert rms_error(diff.sky, truth, 1.0) < 0.02
    assert np.abs(diff.sky - own.sky).max() < 0.03


def test_groups_combine_their_member_pairs():
    m = synthetic.exposures(3, (2, 1), shape=(160, 160), seed=4, offset_arcsec=5.0)
    data = synthetic.add_nebula(m, peak=100.0).data
    diff = match_sky(data, m.wcs, groups=m.groups, pair_stat="difference")
    # one sky per exposure, the same for its detectors, recovered through the emission
    for g in range(3):
        assert np.ptp(diff.sky[m.groups == g]) == 0.0
    assert rms_error(diff.sky, m.sky, m.noise) < 0.02
    # the pair table is per pair of groups
    assert sorted(zip(diff.pairs["i"], diff.pairs["j"], strict=True)) == [(0, 1), (0, 2),
                                                                           (1, 2)]


def test_global_match_with_differences_keeps_the_local_rule():
    m = synthetic.dithers(4, shape=(128, 128), seed=3, point_sources=0, extended_sources=0)
    res = match_sky(m.data, m.wcs, method="global+match", pair_stat="difference")
    assert np.min(res.local - res.sky) == pytest.approx(0.0, abs=1e-9)
    assert rms_error(res.sky, m.sky, m.noise) < 0.03


def test_file_inputs_and_threads_give_the_same_skies(tmp_path):
    from concurrent.futures import ThreadPoolExecutor


    m = synthetic.dithers(3, shape=(128, 128), seed=5)
    paths = [str(p) for p in write_mosaic(m, tmp_path)]
    serial = match_sky(m.data, m.wcs, pair_stat="difference")
    with ThreadPoolExecutor(2) as ex:
        threaded = match_sky(m.data, m.wcs, pair_stat="difference", executor=ex)
    files = match_sky(paths, pair_stat="difference")
    assert threaded.sky.tolist() == serial.sky.tolist()
    np.testing.assert_allclose(files.sky, serial.sky, rtol=0, atol=1e-6)


def test_masks_and_nan_pixels_are_not_differenced():
    m = synthetic.dithers(3, shape=(128, 128), seed=6, point_sources=0, extended_sources=0)
    data = [d.copy() for d in m.data]
    data[1][40:80, 40:80] = np.nan
    data[2][10:30, :] += 500.0  # masked out below: must not move anything
    mask = [None, None, np.ones((128, 128), bool)]
    mask[2][10:30, :] = False
    res = match_sky(data, m.wcs, mask=mask, pair_stat="difference")
    clean = match_sky(m.data, m.wcs, pair_stat="difference")
    assert np.abs(res.sky - clean.sky).max() < 0.03
    assert (res.pairs["npix_i"] < clean.pairs["npix_i"]).all()


def test_pair_stat_is_checked():
    m = synthetic.dithers(2, shape=(64, 64), seed=1)
    with pytest.raises(ValueError, match="pair_stat must be one of 'own', 'difference'"):
        match_sky(m.data, m.wcs, pair_stat="diff")
    with pytest.raises(ValueError, match="needs model='constant'"):
        match_sky(m.data, m.wcs, pair_stat="difference", model="plane")


def test_cli_pair_stat(tmp_path):
    from astropy.io import fits

    from skyeq.cli import main

    m = synthetic.dithers(3, shape=(96, 96), seed=2)
    paths = [str(p) for p in write_mosaic(m, tmp_path)]
    assert main(["match", "--pair-stat", "difference", "--in-place", *paths]) == 0
    expect = match_sky(paths, pair_stat="difference")
    for k, p in enumerate(paths):
        assert fits.getheader(p, "SCI")["BKGLEVEL"] == pytest.approx(expect.sky[k], abs=1e-9)


def test_differences_both_ways_cancel_the_smoothing_of_interpolation():
    # dense point sources, no nebula: one way (data_i - sample_j) is skewed by the
    # interpolation's smoothing of the sources (measured 0.082 sigma off on this pair);
    # both ways on alternate rows it is not (0.013, the noise of 15 000 differences)
    from skyeq import SkyStat, geometry
    from skyeq._pairs import pair_difference
    from skyeq.wcs import as_wcs_adapter

    m = synthetic.exposures(3, (2, 1), shape=(160, 160), seed=4, offset_arcsec=5.0,
                            extended_sources=0)
    a, b = 0, 2
    ads = [as_wcs_adapter(w, shape=s) for w, s in zip(m.wcs, m.shapes, strict=True)]
    ov = geometry.intersect(*geometry.footprints([m.wcs[a], m.wcs[b]], [m.shapes[a]] * 2))
    sa = geometry.overlap_spans(ov, ads[a], m.shapes[a])
    truth = m.sky[a] - m.sky[b]
    one_way = pair_difference(SkyStat("median"), m.data[a], None, ads[a], m.data[b], None,
                              ads[b], sa, both_ways=False)
    both = pair_difference(SkyStat("median"), m.data[a], None, ads[a], m.data[b], None,
                           ads[b], sa)
    assert abs(one_way[0] - truth) > 0.05
    assert abs(both[0] - truth) < 0.02
    assert abs(both[1] - one_way[1]) < 0.1 * one_way[1]  # about the same sample size
