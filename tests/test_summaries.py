"""HEALPix sky summaries (`skyeq.sky_summaries`, `skyeq.io.write_summaries`) (#19)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from astropy.table import Table

import skyeq
from skyeq import io, synthetic
from skyeq._healpix import ang2pix_nest, check_nside, pixel_size_deg


@pytest.mark.parametrize("nside", [1, 2, 64, 4096, 2**20, 2**29])
def test_ang2pix_nest_agrees_with_astropy_healpix(nside):
    hp = pytest.importorskip("astropy_healpix")
    import astropy.units as u

    rng = np.random.default_rng(nside % 97)
    ra = rng.uniform(0.0, 360.0, 50000)
    dec = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, 50000)))
    ref = hp.HEALPix(nside=nside, order="nested").lonlat_to_healpix(ra * u.deg, dec * u.deg)
    assert np.array_equal(ang2pix_nest(nside, ra, dec), ref)


@pytest.mark.parametrize("bad", [0, 3, 2**30, 1.0, True, "64"])
def test_nside_must_be_a_power_of_two(bad):
    with pytest.raises(ValueError, match="nside must be"):
        check_nside(bad)


def test_every_pixel_in_one_cell_and_each_cell_holds_the_sky():
    # 2 tiles of 512x512 at 0.1"/pixel, noise 1, constant skies: every cell's median is
    # its image's sky within noise, and the cells share out the image's pixels
    m = synthetic.tile_grid(1, 2, shape=(512, 512), seed=1, point_sources=0,
                            extended_sources=0)
    st = skyeq.SkyStat("median", nclip=0)  # no clipping: every pixel counts
    t = skyeq.sky_summaries(m.data, m.wcs, nside=8192, stat=st)
    for k in range(2):
        rows = t[t["image"] == k]
        assert int(rows["npix"].sum()) == 512 * 512
        assert len(np.unique(rows["cell"])) == len(rows) > 4
        big = rows["npix"] > 2000
        np.testing.assert_allclose(rows["sky"][big], m.sky[k], atol=5 * 1.25 / np.sqrt(2000))
        np.testing.assert_allclose(rows["sky_err"][big], 1.25 / np.sqrt(rows["npix"][big]),
                                   rtol=0.1)
    # the cell of a pixel is the cell of the sky position of its block's centre
    ra, dec = m.wcs[0].pixel_to_world_values(7.5, 7.5)
    assert ang2pix_nest(8192, ra, dec) in t["cell"][t["image"] == 0]
    assert t.meta["NSIDE"] == 8192 and t.meta["ORDERING"] == "NESTED"


def test_masks_and_nan_are_not_summarised():
    m = synthetic.tile_grid(1, 1, shape=(256, 256), seed=2, point_sources=0,
                            extended_sources=0)
    data = m.data[0].copy()
    data[:, :64] = np.nan
    mask = np.ones(data.shape, bool)
    mask[200:, :] = False
    st = skyeq.SkyStat("mean", nclip=0)
    t = skyeq.sky_summaries([data], m.wcs, [mask], nside=8192, stat=st)
    assert int(t["npix"].sum()) == 192 * 200


def test_write_summaries_round_trip_and_checks(tmp_path):
    m = synthetic.dithers(2, shape=(128, 128), seed=3)
    t = skyeq.sky_summaries(m.data, m.wcs, nside=16384, names=["a", "b"])
    path = io.write_summaries(t, tmp_path / "sky.fits")
    back = Table.read(path, hdu="SKYSUMMARY")
    assert back.meta["NSIDE"] == 16384 and back.meta["ORDERING"] == "NESTED"
    assert back["cell"].tolist() == t["cell"].tolist()
    np.testing.assert_array_equal(back["sky"], t["sky"])
    assert [str(n) for n in back["name"]] == [str(n) for n in t["name"]]
    with pytest.raises(ValueError, match=r"end in \.fits"):
        io.write_summaries(t, tmp_path / "sky.csv")
    with pytest.raises(ValueError, match="not a sky summary table"):
        io.write_summaries(Table({"x": [1]}), tmp_path / "x.fits")
    assert not (tmp_path / "x.fits").exists()


def test_files_threads_and_a_warning_for_small_cells(tmp_path, caplog):
    from concurrent.futures import ThreadPoolExecutor

    from fits_helpers import write_mosaic

    m = synthetic.dithers(2, shape=(128, 128), seed=4)
    paths = write_mosaic(m, tmp_path)
    serial = skyeq.sky_summaries(m.data, m.wcs, nside=16384)
    with ThreadPoolExecutor(2) as ex:
        files = skyeq.sky_summaries([str(p) for p in paths], nside=16384, executor=ex)
    assert files["cell"].tolist() == serial["cell"].tolist()
    np.testing.assert_allclose(files["sky"], serial["sky"], rtol=0, atol=1e-6)
    # cells of 1.6" hold few 16-pixel (1.6") blocks: said
    assert 3600 * pixel_size_deg(2**17) < 4 * 1.6
    with caplog.at_level(logging.WARNING, logger="skyeq"):
        skyeq.sky_summaries(m.data[:1], m.wcs[:1], nside=2**17)
    assert "smaller than 4 blocks" in caplog.text
