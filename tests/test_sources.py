"""Images as users hold them: NDData/CCDData, masked arrays, HDULists, FITS paths."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData, NDData
from fits_helpers import write_mosaic
from numpy.testing import assert_array_equal

from skyeq import SkyStat, io, match_sky, synthetic

STAT = SkyStat("median", nclip=3)


@pytest.fixture(scope="module")
def mosaic():
    return synthetic.tile_grid(1, 3, shape=(120, 140), seed=21, dq_fraction=0.02)


def _bad_pixels(m):
    rng = np.random.default_rng(5)
    return [rng.random(d.shape) < 0.1 for d in m.data]


def test_nddata_and_ccddata_bring_their_mask_and_wcs(mosaic):
    bad = _bad_pixels(mosaic)
    expect = match_sky(mosaic.data, mosaic.wcs, mask=[~b for b in bad], stat=STAT,
                       method="global+match")
    nd = [NDData(d, mask=b, wcs=w) for d, b, w in zip(mosaic.data, bad, mosaic.wcs,
                                                     strict=True)]
    got = match_sky(nd, stat=STAT, method="global+match")
    assert_array_equal(got.sky, expect.sky)
    assert_array_equal(got.local, expect.local)
    ccd = [CCDData(d, unit="MJy/sr", mask=b, wcs=w)
           for d, b, w in zip(mosaic.data, bad, mosaic.wcs, strict=True)]
    assert_array_equal(match_sky(ccd, stat=STAT, method="global+match").sky, expect.sky)
    # a given mask is ANDed with the NDData's own
    extra = [np.ones(d.shape, bool) for d in mosaic.data]
    extra[1][:60] = False
    both = match_sky(mosaic.data, mosaic.wcs, mask=[~b & e for b, e in zip(bad, extra,
                                                                           strict=True)],
                     stat=STAT, method="local")
    assert_array_equal(match_sky(nd, mask=extra, stat=STAT, method="local").sky, both.sky)
    assert not np.array_equal(both.sky, expect.local)


def test_a_masked_array_inside_nddata_is_honoured(mosaic):
    bad = _bad_pixels(mosaic)
    expect = match_sky(mosaic.data, mosaic.wcs, mask=[~b for b in bad], stat=STAT,
                       method="local")
    nd = [NDData(np.ma.MaskedArray(d, mask=b), wcs=w)
          for d, b, w in zip(mosaic.data, bad, mosaic.wcs, strict=True)]
    assert_array_equal(match_sky(nd, stat=STAT, method="local").sky, expect.sky)


def test_fits_paths_and_hdulists_match_as_match_files_does(mosaic, tmp_path):
    paths = write_mosaic(mosaic, tmp_path)
    expect = io.match_files(paths, stat=STAT, groups=None)
    got = match_sky(paths, stat=STAT)
    assert_array_equal(got.sky, expect.sky)
    assert got.names == [str(p) for p in paths]
    hduls = [fits.open(p) for p in paths]
    try:
        from_hdul = match_sky(hduls, stat=STAT)
    finally:
        for h in hduls:
            h.close()
    assert_array_equal(from_hdul.sky, expect.sky)
    # the files' DQ arrays are used: without them the skies differ
    no_dq = match_sky(paths, stat=STAT, dqbits=None)
    assert not np.array_equal(no_dq.sky, expect.sky)


def test_a_given_wcs_entry_of_none_means_the_image_s_own(mosaic, tmp_path):
    paths = write_mosaic(mosaic, tmp_path)
    expect = match_sky(paths, stat=STAT)
    mixed = match_sky(paths, [None, None, None], stat=STAT)
    assert_array_equal(mixed.sky, expect.sky)


def test_images_without_a_wcs_are_named(mosaic):
    nd = [NDData(d) for d in mosaic.data]
    with pytest.raises(ValueError, match=r"needs one WCS per image; 3 of 3 have none \(#0"):
        match_sky(nd)
    with pytest.raises(ValueError, match=r"1 of 3 have none \(#1\)"):
        match_sky(mosaic.data, [mosaic.wcs[0], None, mosaic.wcs[2]])
    # the local sky needs none
    assert np.isfinite(match_sky(nd, method="local", stat=STAT).sky).all()


def test_bad_sources_give_one_line_errors(mosaic, tmp_path):
    nd = NDData(mosaic.data[0], mask=np.zeros(mosaic.data[0].shape), wcs=mosaic.wcs[0])
    with pytest.raises(ValueError, match=r"the NDData mask of image 0 must be boolean or 0/1 "
                       r"integers \(True/1 = bad pixel\), got dtype float64"):
        match_sky([nd, mosaic.data[1]], [None, mosaic.wcs[1]])
    missing = tmp_path / "nowhere.fits"
    with pytest.raises(FileNotFoundError, match=r"nowhere\.fits does not exist"):
        match_sky([missing])
    junk = tmp_path / "junk.fits"
    junk.write_text("not a FITS file")
    with pytest.raises(ValueError, match=r"cannot read .*junk\.fits as a FITS file"):
        match_sky([str(junk)])
    with pytest.raises(ValueError, match="wcs has 2 entries for 3 images"):
        match_sky(mosaic.data, mosaic.wcs[:2], method="local")
    with pytest.raises(ValueError, match="inplace=True needs writable floating-point arrays"):
        match_sky([NDData(d, wcs=w) for d, w in zip(mosaic.data, mosaic.wcs, strict=True)],
                  subtract=True, inplace=True)
