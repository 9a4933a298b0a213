"""match_sky: the documentation tables, recovery of injected skies, groups, user skies,
subtraction, DQ masks, executors and every failure case of algorithm_spec section 8."""

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import skyeq
from skyeq import SkyStat, match_sky, synthetic

TABLE1_SKY = [100, 120, 105, 110, 105, 115]
TABLE2_SKY = [100, 120, 105, 110, 95, 90, 100]
METHODS = ("local", "global", "match", "global+match")


def _run_all(m, **kw):
    return {meth: match_sky(m.data, m.wcs, method=meth, **kw) for meth in METHODS}


# ------------------------------------------------------------ documentation tables


def test_documentation_table_1():
    m = synthetic.constant_mosaic(TABLE1_SKY, layout=(2, 3))
    res = _run_all(m)
    expected = {
        "local": TABLE1_SKY,
        "global": [100] * 6,
        "match": [0, 20, 5, 10, 5, 15],
        "global+match": TABLE1_SKY,
    }
    for meth, want in expected.items():
        assert_allclose(res[meth].sky, want, rtol=0, atol=1e-9, err_msg=meth)
        assert res[meth].valid.all()
        assert res[meth].method == meth and res[meth].subtracted is False
    # match_up: referenced to the highest sky; global+match does not depend on it
    up = _run_all(m, match_down=False)
    assert_allclose(up["match"].sky, [-20, 0, -15, -10, -15, -5], atol=1e-9)
    assert_allclose(up["global+match"].sky, TABLE1_SKY, atol=1e-9)
    assert len(res["match"].components) == 1


def test_documentation_table_2_disjoint_mosaics():
    m = synthetic.constant_mosaic(TABLE2_SKY, layout=[(2, 2), (1, 3)])
    res = _run_all(m)
    expected = {
        "local": TABLE2_SKY,
        "global": [90] * 7,
        "match": [0, 20, 5, 10, 8.75, 3.75, 13.75],
        "global+match": [86.25, 106.25, 91.25, 96.25, 95, 90, 100],
    }
    for meth, want in expected.items():
        assert_allclose(res[meth].sky, want, rtol=0, atol=1e-9, err_msg=meth)
        assert res[meth].valid.all()
    assert [c.tolist() for c in res["match"].components] == [[0, 1, 2, 3], [4, 5, 6]]
    up = _run_all(m, match_down=False)
    assert_allclose(up["match"].sky, [-20, 0, -15, -10, -11.25, -16.25, -6.25], atol=1e-9)
    assert_allclose(up["global+match"].sky, expected["global+match"], atol=1e-9)


def test_isolated_image_is_invalid_for_match_and_joins_global_match(caplog):
    m = synthetic.constant_mosaic([*TABLE2_SKY, 50], layout=[(2, 2), (1, 3), (1, 1)])
    with caplog.at_level(logging.WARNING, logger="skyeq"):
        res = match_sky(m.data, m.wcs, method="match", names=m.names)
    assert_allclose(res.sky, [0, 20, 5, 10, 8.75, 3.75, 13.75, 0], atol=1e-9)
    assert_array_equal(res.valid, [True] * 7 + [False])
    assert res.keywords(7) == {}
    assert "part2_r0_c0" in caplog.text
    gm = match_sky(m.data, m.wcs, method="global+match")
    assert_allclose(gm.sky, [50, 70, 55, 60, 58.75, 53.75, 63.75, 50], atol=1e-9)
    assert gm.valid.all()


# ------------------------------------------------------------- recovery of truth


def _relative_error(sky, truth):
    d = (np.asarray(sky) - truth)
    return np.max(np.abs(d - np.median(d)))


def test_recovers_injected_skies_noise_only():
    # Noise only. The median of N Gaussian pixels scatters by 1.2533 sigma / sqrt(N), so
    # the difference of the two sides of a pair overlap scatters by
    # 1.2533 * sqrt(2 / N) sigma (0.011 sigma for the ~25000-pixel edge overlaps here).
    # Each image offset is constrained by 2-4 such pairs; we allow 4 pair-sigmas for the
    # worst of the 9 images.
    m = synthetic.tile_grid(3, 3, shape=(500, 500), seed=11, point_sources=0,
                            extended_sources=0, noise=1.0)
    res = match_sky(m.data, m.wcs, method="match")
    assert res.valid.all()
    npix = np.median(np.asarray(res.pairs["npix_i"]))
    pair_sigma = 1.2533 * np.sqrt(2.0 / npix)
    assert 0.010 < pair_sigma < 0.012
    assert _relative_error(res.sky, m.sky) < 4 * pair_sigma
    assert res.sky.min() == 0.0


def test_recovers_injected_skies_with_sources():
    # with sources each image's own overlap statistic is biased by source flux;
    # the median with 4-sigma clipping keeps this below 0.05 sigma on these mosaics
    m = synthetic.tile_grid(3, 3, shape=(512, 512), seed=3, noise=1.0)
    res = match_sky(m.data, m.wcs, method="match", stat=SkyStat("median", nclip=5))
    assert _relative_error(res.sky, m.sky) < 0.05
    d = synthetic.dithers(5, shape=(300, 300), seed=4, noise=1.0)
    res = match_sky(d.data, d.wcs, method="global+match")
    assert _relative_error(res.sky, d.sky) < 0.05
    # global+match = match offsets + the smallest (local sky - offset) (algorithm_spec 4.6)
    mt = match_sky(d.data, d.wcs, method="match")
    assert_allclose(res.sky - mt.sky, np.min(res.local - mt.sky), rtol=0, atol=1e-9)
    # the absolute level comes from local skies, which the 305 sources packed into these
    # small images bias upwards (measured +0.11 sigma): positive and well under 0.2 sigma
    assert 0.0 < res.sky.min() - d.sky.min() < 0.2


def test_groups_share_one_sky():
    m = synthetic.exposures(3, detectors=(2, 2), shape=(256, 256), seed=5, noise=1.0)
    res = match_sky(m.data, m.wcs, groups=m.groups, method="match")
    for g in np.unique(m.groups):
        members = np.flatnonzero(m.groups == g)
        assert np.ptp(res.sky[members]) == 0.0
    assert _relative_error(res.sky, m.sky) < 0.05
    assert res.valid.all()


def test_group_rules_of_the_reference():
    # algorithm_spec 5.2: group {a: 10, b: 20} next to image c: 5, overlapping both:
    # group local = min = 10; group-in-overlap = npix-weighted mean = 15; match => 10, 10, 0
    m = synthetic.constant_mosaic([10, 5, 20], layout=(1, 3))  # a, c, b in a row
    groups = ["ab", "c", "ab"]
    res = match_sky(m.data, m.wcs, groups=groups, method="match")
    assert_allclose(res.sky, [10, 0, 10], atol=1e-9)
    loc = match_sky(m.data, m.wcs, groups=groups, method="local")
    assert_allclose(loc.sky, [10, 5, 10], atol=1e-9)
    assert_allclose(loc.local, [10, 5, 20])
    assert len(res.pairs) == 1
    row = res.pairs[0]
    assert (row["i"], row["j"]) == (0, 1) and row["sky_i"] == pytest.approx(15.0)


# -------------------------------------------------------------------- user skies


def test_user_skylist_file_and_mapping(tmp_path):
    data = [np.zeros((4, 4), np.float32) for _ in range(3)]
    names = ["a_cal.fits", "dir/b_cal.fits", "c"]
    path = tmp_path / "sky.txt"
    path.write_text("# name sky\na_cal.fits 1.5\nb_cal.fits  2.5  # comment\n\nc 0.1\n")
    res = match_sky(data, method="user", skylist=path, names=names, subtract=True)
    assert_allclose(res.sky, [1.5, 2.5, 0.1])
    assert res.method == "user" and res.valid.all() and res.subtracted
    assert_allclose(res.data[1], -2.5)
    res = match_sky(data, method="user", skylist={"a_cal.fits": 1, "b_cal": 2, "c": 3},
                    names=names)
    assert_allclose(res.sky, [1, 2, 3])


def test_user_one_line_skylist_keeps_its_float64_value(tmp_path):
    # the reference: a one-line file raises TypeError, and 0.1 becomes float32 0.1
    path = tmp_path / "sky.txt"
    path.write_text("a_cal.fits 0.1\n")
    res = match_sky([np.zeros((2, 2))], method="user", skylist=path, names=["a_cal.fits"])
    assert res.sky[0] == 0.1 and res.sky[0] != float(np.float32(0.1))


def test_user_skylist_names_may_differ_by_a_jwst_suffix():
    data = [np.zeros((2, 2)) for _ in range(4)]
    names = ["out/jw1_nrca1_crf.fits", "jw1_nrca2-bsub.fits", "jw1_nrcb1.fits", "x_y"]
    table = {"jw1_nrca1_cal.fits": 1.0, "/data/jw1_nrca2_cal.fits": 2.0,
             "jw1_nrcb1_rate.fits": 3.0, "x_y_cal": 4.0}
    res = match_sky(data, method="user", skylist=table, names=names)
    assert_array_equal(res.sky, [1.0, 2.0, 3.0, 4.0])
    # a whole-name or stem match wins over a suffix-stripped one
    table = {"a_cal.fits": 1.0, "a_crf.fits": 2.0}
    res = match_sky(data[:2], method="user", skylist=table, names=["a_crf.fits", "a_cal"])
    assert_array_equal(res.sky, [2.0, 1.0])
    # two entries with one root are ambiguous for a third product of that root
    with pytest.raises(ValueError, match=r"'a_i2d.fits' is in the skylist more than once"):
        match_sky(data[:2], method="user", skylist=table, names=["a_i2d.fits", "b"])
    # an unknown suffix is part of the name
    with pytest.raises(ValueError, match=r"'a_foo' is not in the skylist"):
        match_sky(data[:2], method="user", skylist=table, names=["a_foo", "a_cal"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a 1\nb 2\n", "2 entries for 3 images"),
        ("a 1\nb 2\nx 3\n", "'c' is not in the skylist"),
        ("a 1\nb 2\nc 3\nc 4\n", "listed twice"),
        ("a 1\nb\nc 3\n", "expected 2 columns"),
        ("a 1\nb nope\nc 3\n", "not a number"),
    ],
)
def test_user_skylist_errors(tmp_path, text, message):
    path = tmp_path / "sky.txt"
    path.write_text(text)
    data = [np.zeros((2, 2)) for _ in range(3)]
    with pytest.raises(ValueError, match=message):
        match_sky(data, method="user", skylist=path, names=["a", "b", "c"])


def test_user_needs_skylist_and_names():
    data = [np.zeros((2, 2))]
    with pytest.raises(ValueError, match="needs a skylist"):
        match_sky(data, method="user")
    with pytest.raises(ValueError, match="names"):
        match_sky(data, method="user", skylist={"a": 1})


# ------------------------------------------------------- subtraction, DQ, executors


def test_subtract_returns_copies_and_inplace_modifies():
    m = synthetic.constant_mosaic(TABLE1_SKY, layout=(2, 3))
    before = [a.copy() for a in m.data]
    res = match_sky(m.data, m.wcs, method="local", subtract=True)
    for a, b in zip(m.data, before, strict=True):
        assert_array_equal(a, b)
    for out in res.data:
        assert out.dtype == np.float32
        assert_allclose(out, 0.0, atol=1e-5)
    assert res.keywords(0) == {"BKGLEVEL": 100.0, "BKGMETH": "local", "BKGSUB": True}
    res = match_sky(m.data, m.wcs, method="global", subtract=True, inplace=True)
    assert res.data[1] is m.data[1]
    assert_allclose(m.data[1], 20.0)
    ro = [a.copy() for a in before]
    ro[0].flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        match_sky(ro, m.wcs, method="local", subtract=True, inplace=True)


def test_dq_bits_exclude_flagged_pixels():
    m = synthetic.constant_mosaic([10.0, 30.0], layout=(1, 2), shape=(40, 40))
    data = [a.copy() for a in m.data]
    dq = [np.zeros(a.shape, np.uint32) for a in data]
    data[0][:, :20] = 1e6  # garbage where DO_NOT_USE is set
    dq[0][:, :20] = 1
    data[1][:5] = -1e6  # garbage flagged NON_SCIENCE
    dq[1][:5] = 512
    dq[1][5:10] = 4  # JUMP_DET alone is not a reason to drop a pixel by default
    res = match_sky(data, m.wcs, dq=dq, method="local")
    assert_allclose(res.sky, [10.0, 30.0])
    # dqbits="0": any flag is bad; None: DQ not used at all
    data[1][5:10] = 1e6
    assert_allclose(match_sky(data, m.wcs, dq=dq, dqbits="0", method="local").sky, [10, 30])
    assert match_sky(data, m.wcs, dq=dq, dqbits=None, method="local",
                     stat=SkyStat("mean", nclip=0)).sky[0] > 1e5


def test_a_bad_dqbits_fails_before_any_image_is_read():
    m = synthetic.constant_mosaic([10.0, 30.0], layout=(1, 2), shape=(16, 16))
    _OnDemand.reset()
    dq = [np.zeros((16, 16), np.uint32)] * 2
    with pytest.raises(ValueError, match="NOT_A_FLAG"):
        match_sky([_OnDemand(a) for a in m.data], m.wcs, dq=dq, dqbits="NOT_A_FLAG")
    assert _OnDemand.loads == 0


def test_a_masked_arrays_mask_is_honoured():
    m = synthetic.tile_grid(1, 3, shape=(96, 96), seed=4, point_sources=20)
    img = m.data[1].copy()
    img[:30] = 1e6  # bad rows that only the masked array's mask excludes
    bad = np.zeros(img.shape, bool)
    bad[:30] = True
    data = [m.data[0], np.ma.MaskedArray(img, mask=bad), m.data[2]]
    want = match_sky([m.data[0], img, m.data[2]], m.wcs, method="global+match",
                     mask=[None, ~bad, None])
    got = match_sky(data, m.wcs, method="global+match")
    assert_array_equal(got.sky, want.sky)
    assert_array_equal(got.local, want.local)
    # with a mask of its own too: both apply
    extra = np.ones(img.shape, bool)
    extra[:, :10] = False
    got = match_sky(data, m.wcs, method="global+match", mask=[None, extra, None])
    want = match_sky([m.data[0], img, m.data[2]], m.wcs, method="global+match",
                     mask=[None, ~bad & extra, None])
    assert_array_equal(got.sky, want.sky)


def test_integer_images_are_subtracted_into_float64():
    m = synthetic.constant_mosaic([10.0, 13.0], layout=(1, 2), shape=(16, 16))
    data = [np.full((16, 16), 10, np.uint16), np.full((16, 16), 13, np.uint16)]
    # referenced to the highest: skies -3 and 0; a uint16 image must not wrap around
    res = match_sky(data, m.wcs, match_down=False, subtract=True)
    assert_array_equal(res.sky, [-3.0, 0.0])
    assert res.data[0].dtype == np.float64
    assert_array_equal(res.data[0], np.full((16, 16), 13.0))
    assert_array_equal(res.data[1], np.full((16, 16), 13.0))
    res = match_sky([d.astype(np.int32) for d in data], m.wcs, method="local", subtract=True,
                    stat=SkyStat("mean", nclip=0))
    assert_array_equal(res.data[0], np.zeros((16, 16)))
    # in place is for floating-point arrays only
    with pytest.raises(ValueError, match=r"#0 is not \(an integer image"):
        match_sky(data, m.wcs, subtract=True, inplace=True)


def test_threads_and_progress_match_serial():
    m = synthetic.tile_grid(2, 3, shape=(200, 200), seed=6)
    serial = match_sky(m.data, m.wcs, method="global+match")
    calls = []
    with ThreadPoolExecutor(2) as ex:
        threaded = match_sky(m.data, m.wcs, method="global+match", executor=ex,
                             progress=lambda done, total: calls.append((done, total)))
    assert_array_equal(serial.sky, threaded.sky)
    assert calls == [(k, 6) for k in range(1, 7)]


# --------------------------------------------- failure cases (algorithm_spec 8)


def test_bad_arguments_raise_before_work():
    m = synthetic.constant_mosaic([1, 2], layout=(1, 2))
    with pytest.raises(ValueError, match="unknown method"):
        match_sky(m.data, m.wcs, method="best")
    with pytest.raises(ValueError, match="at least one image"):
        match_sky([], [])
    with pytest.raises(TypeError, match="sequence of 2-D images"):
        match_sky(m.data[0], m.wcs)
    with pytest.raises(ValueError, match="needs one WCS per image"):
        match_sky(m.data, None, method="match")
    with pytest.raises(ValueError, match="needs one WCS per image"):
        match_sky(m.data, m.wcs[:1], method="global+match")
    with pytest.raises(ValueError, match="groups has 1 entries"):
        match_sky(m.data, m.wcs, groups=[1])
    with pytest.raises(ValueError, match="mask shape"):
        match_sky(m.data, m.wcs, mask=[np.ones((3, 3), bool), None])
    with pytest.raises(TypeError, match="SkyStat"):
        match_sky(m.data, m.wcs, stat=3)  # a statistic name is fine since issue 14


def test_single_image():
    # nothing to match: its sky is its local sky, as global gives it (issue 14; it was
    # invalid with sky 0)
    m = synthetic.constant_mosaic([7.0], layout=(1, 1))
    res = match_sky(m.data, m.wcs, method="match")
    assert_array_equal(res.sky, [7.0]) and res.valid[0]
    res = match_sky(m.data, m.wcs, method="global+match")
    assert_allclose(res.sky, [7.0]) and res.valid[0]


def test_two_images_without_overlap_are_invalid_for_match():
    m = synthetic.constant_mosaic([3.0, 4.0], layout=[(1, 1), (1, 1)])
    res = match_sky(m.data, m.wcs, method="match")
    assert not res.valid.any() and (res.sky == 0).all()
    assert len(res.pairs) == 0 and res.components == []


@pytest.mark.parametrize("position", [0, 2])
def test_image_without_usable_pixels_never_crashes(position):
    # the reference crashes (TypeError, jwst #5077) in global/global+match when an image
    # without a sky value comes after one with a value
    skies = [100.0, 120.0, 105.0]
    m = synthetic.constant_mosaic(skies, layout=(1, 3))
    data = [a.copy() for a in m.data]
    data[position][:] = np.nan
    loc = match_sky(data, m.wcs, method="local")
    assert not loc.valid[position] and loc.sky[position] == 0.0
    # no usable pixel, no sky: the image is invalid whatever the method (the reference
    # gives it the global sky, or crashes); the others get theirs
    glob = match_sky(data, m.wcs, method="global")
    others = [s for k, s in enumerate(skies) if k != position]
    rest = np.arange(3) != position
    assert_allclose(glob.sky[rest], min(others))
    assert glob.valid.tolist() == rest.tolist() and glob.sky[position] == 0.0
    mt = match_sky(data, m.wcs, method="match")
    assert not mt.valid[position]
    gm = match_sky(data, m.wcs, method="global+match")
    assert gm.valid.tolist() == rest.tolist() and gm.sky[position] == 0.0
    assert np.isfinite(gm.sky).all()


def test_everything_flagged_everywhere():
    m = synthetic.constant_mosaic([1.0, 2.0], layout=(1, 2))
    masks = [np.zeros(a.shape, bool) for a in m.data]
    for meth in METHODS:
        res = match_sky(m.data, m.wcs, mask=masks, method=meth)
        assert not res.valid.any() and (res.sky == 0).all()


def test_public_api():
    assert skyeq.match_sky is match_sky
    assert {"match_sky", "SkyResult", "SkyStat", "sky_statistic"} <= set(skyeq.__all__)


def test_footprints_filled_for_match_methods_only():
    m = synthetic.constant_mosaic(TABLE1_SKY, layout=(2, 3))
    fps = skyeq.footprints(m.wcs, m.shapes)
    for meth in ("match", "global+match"):
        res = match_sky(m.data, m.wcs, method=meth)
        assert len(res.footprints) == len(m)
        for got, fp in zip(res.footprints, fps, strict=True):
            assert_allclose(got, np.column_stack(fp.radec))
    for meth in ("local", "global"):
        assert match_sky(m.data, m.wcs, method=meth).footprints is None


# ------------------------------------------------- images that are read on demand


class _OnDemand:
    """An image read when converted; counts how many converted copies are alive."""

    alive = 0
    peak = 0
    loads = 0

    def __init__(self, array):
        self._array = array
        self.shape = array.shape

    def __array__(self, dtype=None, copy=None):
        import weakref

        out = self._array.copy()
        cls = type(self)
        cls.loads += 1
        cls.alive += 1
        cls.peak = max(cls.peak, cls.alive)
        weakref.finalize(out, lambda: setattr(cls, "alive", cls.alive - 1))
        return out

    @classmethod
    def reset(cls):
        cls.alive = cls.peak = cls.loads = 0


@pytest.mark.parametrize("method", ["match", "global+match"])
def test_images_read_on_demand_are_loaded_one_group_at_a_time(method):
    m = synthetic.exposures(3, (2, 2), shape=(64, 64), seed=8, point_sources=10,
                            extended_sources=0, dq_fraction=0.02)
    stat = SkyStat("median", nclip=3)
    want = match_sky(m.data, m.wcs, groups=m.groups, dq=m.dq, method=method, stat=stat)
    _OnDemand.reset()
    got = match_sky([_OnDemand(a) for a in m.data], m.wcs, groups=m.groups,
                    dq=[_OnDemand(d) for d in m.dq], method=method, stat=stat)
    assert_array_equal(got.sky, want.sky)
    assert (got.local is None) == (method == "match")
    if got.local is not None:
        assert_array_equal(got.local, want.local)
    # each image and each DQ array is read exactly once, inside its group's task, and
    # released before the next image: never more than one image + its DQ alive
    assert _OnDemand.loads == 2 * len(m.data)
    assert _OnDemand.peak <= 2
    assert _OnDemand.alive == 0


def test_subtracting_images_read_on_demand_returns_lazy_differences():
    m = synthetic.tile_grid(2, 2, shape=(48, 48), overlap=0.25, seed=9, point_sources=0,
                            extended_sources=0)
    want = match_sky(m.data, m.wcs, subtract=True)
    _OnDemand.reset()
    got = match_sky([_OnDemand(a) for a in m.data], m.wcs, subtract=True)
    assert _OnDemand.loads == len(m.data)  # measured; the differences not computed yet
    assert got.subtracted and got.data[0].shape == (48, 48)
    for k in range(len(m.data)):
        out = np.asarray(got.data[k])
        assert out.dtype == np.float32
        assert_array_equal(out, want.data[k])
    assert _OnDemand.loads == 2 * len(m.data)


def test_one_image_has_nothing_to_match(caplog):
    m = synthetic.tile_grid(1, 2, shape=(48, 48), seed=3)
    with caplog.at_level(logging.WARNING, logger="skyeq"):
        one = match_sky(m.data[:1], m.wcs[:1], stat="median")
    assert "nothing to match: one image (#0)" in caplog.text
    assert "method='global'" in caplog.text
    glob = match_sky(m.data[:1], method="global")
    assert one.valid.tolist() == [True] and one.method == "match"
    assert one.sky.tolist() == glob.sky.tolist() and one.local is not None
    # two images of one group: the group's sky
    with caplog.at_level(logging.WARNING, logger="skyeq"):
        grouped = match_sky(m.data, m.wcs, groups=["a", "a"])
    assert "nothing to match: one group of images (#0, #1)" in caplog.text
    assert_array_equal(grouped.sky, match_sky(m.data, groups=["a", "a"], method="global").sky)


def test_a_statistic_name_is_accepted_and_dir_lists_the_public_api():
    m = synthetic.tile_grid(1, 2, shape=(48, 48), seed=3)
    assert_array_equal(match_sky(m.data, m.wcs, stat="mode").sky,
                       match_sky(m.data, m.wcs, stat=SkyStat("mode")).sky)
    with pytest.raises(ValueError, match="statistic"):
        match_sky(m.data, m.wcs, stat="average")
    assert dir(skyeq) == sorted(skyeq.__all__)
    assert "_kernels" not in dir(skyeq) and skyeq.geometry is not None
