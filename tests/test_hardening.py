"""Odd and hostile inputs, one by one: the right answer or a one-line error naming the culprit.

Each test is one case of issue 13; docs/errors.md lists what users get for each class of
bad input.
"""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from skyeq import SkyStat, geometry, match_sky, sky_statistic, synthetic

STAT = SkyStat("median", nclip=3)


@pytest.fixture(scope="module")
def mosaic():
    return synthetic.tile_grid(1, 3, shape=(64, 80), seed=13)


def _copies(m):
    return [a.copy() for a in m.data]


@pytest.mark.parametrize(
    ("bad_mask", "found"),
    [
        (lambda s: np.full(s, 0.5), "got dtype float64"),
        (lambda s: np.full(s, np.nan), "got dtype float64"),
        (lambda s: np.full(s, "yes"), "got dtype <U3"),
        (lambda s: np.full(s, 2), "holds values from 2 to 2"),
        (lambda s: np.full(s, -1, np.int8), "holds values from -1 to -1"),
    ],
)
def test_a_mask_must_be_boolean_or_0_1(mosaic, bad_mask, found):
    masks = [None, bad_mask(mosaic.data[1].shape), None]
    with pytest.raises(ValueError, match=rf"the mask of image #1 must be boolean or 0/1 "
                                         rf"integers \(True/1 = good pixel\).*{found}"):
        match_sky(mosaic.data, mosaic.wcs, mask=masks)
    with pytest.raises(ValueError, match="must be boolean or 0/1 integers"):
        sky_statistic(mosaic.data[1], masks[1])


def test_0_1_integer_masks_are_boolean_masks(mosaic):
    rng = np.random.default_rng(1)
    good = [rng.random(a.shape) > 0.2 for a in mosaic.data]
    as_bool = match_sky(mosaic.data, mosaic.wcs, mask=good, stat=STAT)
    as_int = match_sky(mosaic.data, mosaic.wcs, mask=[g.astype(np.uint8) for g in good],
                       stat=STAT)
    assert_array_equal(as_int.sky, as_bool.sky)


@pytest.mark.parametrize("method", ["global", "global+match"])
@pytest.mark.parametrize("how", ["nan", "masked"])
def test_no_usable_pixel_means_no_sky(mosaic, method, how):
    data = _copies(mosaic)
    masks = None
    if how == "nan":
        data[0][:] = np.nan
    else:
        masks = [np.zeros(data[0].shape, bool), None, None]
    res = match_sky(data, mosaic.wcs, mask=masks, method=method, stat=STAT, subtract=True)
    assert res.valid.tolist() == [False, True, True]
    assert res.sky[0] == 0.0 and np.isfinite(res.sky[1:]).all()
    assert_array_equal(res.data[0], data[0])  # nothing subtracted from it
    assert res.keywords(0) == {}  # no BKGLEVEL, and no BKGSUB=T written for it
    assert res.keywords(1)["BKGSUB"] is True


@pytest.mark.parametrize("offset", [1e5, 1e6, 1e7])
def test_histogram_statistics_do_not_depend_on_the_sky_size(offset):
    # float64 data: the mode and midpt of data + c are those of the data, plus c (they
    # fell back to one histogram bin, about -3.9 sigma, from a sky of ~1e5 on)
    rng = np.random.default_rng(2)
    base = rng.normal(0.0, 1.0, (256, 256))
    for name in ("mode", "midpt"):
        st = SkyStat(name)
        ref, n_ref = sky_statistic(base, stat=st)
        got, n_got = sky_statistic(base + offset, stat=st)
        assert n_got == n_ref
        assert abs((got - offset) - ref) < 1e-3, (name, got - offset, ref)


def test_matched_mode_skies_shift_by_an_added_constant(mosaic):
    data = [a.astype(np.float64) for a in mosaic.data]
    st = SkyStat("mode")
    ref = match_sky(data, mosaic.wcs, stat=st, method="global+match")
    shifted = match_sky([a + 1e6 for a in data], mosaic.wcs, stat=st, method="global+match")
    assert_allclose(shifted.sky - 1e6, ref.sky, rtol=0, atol=1e-3)


def test_the_same_array_twice_is_not_subtracted_twice(mosaic):
    data = _copies(mosaic)
    with pytest.raises(ValueError, match="images #0 and #2 share memory"):
        match_sky([data[0], data[1], data[0]], mosaic.wcs, subtract=True, inplace=True)
    big = np.concatenate(data, axis=1)  # overlapping views of one array
    views = [big[:, :80], big[:, 40:120], big[:, 160:240]]
    with pytest.raises(ValueError, match="images #0 and #1 share memory"):
        match_sky(views, mosaic.wcs, subtract=True, inplace=True)
    before = big.copy()
    apart = [big[:, :80], big[:, 80:160], big[:, 160:240]]  # one array, no pixel shared
    res = match_sky(apart, mosaic.wcs, subtract=True, inplace=True, method="local")
    for k in range(3):
        assert_allclose(big[:, 80 * k : 80 * (k + 1)],
                        before[:, 80 * k : 80 * (k + 1)] - np.float32(res.sky[k]))
    # without inplace the same array twice is fine (copies are returned)
    same = match_sky([data[0], data[1], data[0]], mosaic.wcs, subtract=True, method="local")
    assert_array_equal(same.data[0], same.data[2])


@pytest.mark.parametrize(
    ("groups", "found"),
    [
        ("abc", "groups must be a sequence of group ids, one per image; got 'abc'"),
        (b"abc", "groups must be a sequence of group ids"),
        (7, "groups must be a sequence of group ids"),
        ([[1], [2], [3]], r"the group id of image #0 \(\[1\]\) is not hashable"),
        ([1, 2, {"a": 1}], r"the group id of image #2 \(\{'a': 1\}\) is not hashable"),
    ],
)
def test_bad_group_ids(mosaic, groups, found):
    with pytest.raises(ValueError, match=found):
        match_sky(mosaic.data, mosaic.wcs, groups=groups)


def test_tiny_float32_and_float64_data_are_measured(mosaic):
    ref = match_sky([a.astype(np.float64) for a in mosaic.data], mosaic.wcs, stat=STAT,
                    method="global+match")
    # float64 scaled by 1e-200: squares would underflow; the skies scale exactly
    tiny = match_sky([a.astype(np.float64) * 1e-200 for a in mosaic.data], mosaic.wcs,
                     stat=STAT, method="global+match")
    assert tiny.valid.all()
    assert_allclose(tiny.sky * 1e200, ref.sky, rtol=1e-12)
    huge = match_sky([a.astype(np.float64) * 1e250 for a in mosaic.data], mosaic.wcs,
                     stat=STAT, method="global+match")
    assert_allclose(huge.sky / 1e250, ref.sky, rtol=1e-12)
    # float32 subnormal values (times 2**-140: about 7 significant bits left)
    scale = np.float32(2.0**-140)
    sub = [(a * scale).astype(np.float32) for a in mosaic.data]
    assert np.all(np.abs(sub[0][np.isfinite(sub[0])]) < np.finfo(np.float32).tiny)
    res = match_sky(sub, mosaic.wcs, stat=STAT, method="local")
    assert res.valid.all()
    assert_allclose(res.sky / float(scale), ref.local, rtol=0.01)


@pytest.mark.parametrize(
    ("nclip", "error"),
    [(2**63, ValueError), (2**31, ValueError), (-1, ValueError), (1.5, TypeError),
     (True, TypeError)],
)
def test_nclip_out_of_range(nclip, error):
    with pytest.raises(error, match="nclip"):
        SkyStat("median", nclip=nclip)
    assert SkyStat("median", nclip=2**31 - 1).nclip == 2**31 - 1


def test_a_huge_nclip_stops_when_nothing_more_is_clipped():
    rng = np.random.default_rng(3)
    img = rng.normal(10.0, 1.0, (64, 64))
    assert sky_statistic(img, stat=SkyStat("median", nclip=2**31 - 1)) == sky_statistic(
        img, stat=SkyStat("median", nclip=100))


@pytest.mark.parametrize("dq_dtype", [np.float64, np.float32, bool])
def test_dq_arrays_must_hold_integer_flags(mosaic, dq_dtype):
    dq = [np.zeros(a.shape, np.uint32) for a in mosaic.data]
    dq[2] = dq[2].astype(dq_dtype)
    with pytest.raises(ValueError, match=r"the DQ array of image #2 must hold integer bit "
                                         r"flags, got dtype"):
        match_sky(mosaic.data, mosaic.wcs, dq=dq)


@pytest.mark.parametrize("stepsize", [1e-6, 0, 0.5, -3, float("nan"), float("inf"), "a",
                                      True])
def test_bad_stepsize_is_refused_up_front(mosaic, stepsize):
    with pytest.raises(ValueError, match=r"stepsize must be None or a number of pixels >= 1"):
        match_sky(mosaic.data, mosaic.wcs, stepsize=stepsize)


def test_a_small_stepsize_is_bounded():
    # stepsize=1 on a 256x256 image would be 1024 outline vertices (and a 2048x2048 one
    # 8192): at most 129 points a side are used
    m = synthetic.tile_grid(1, 2, shape=(256, 256), seed=4)
    fp = geometry.footprint(m.wcs[0], (256, 256), stepsize=1)
    assert len(fp.vertices) == 4 * 128
    coarse = match_sky(m.data, m.wcs, stepsize=2, stat=STAT)
    fine = match_sky(m.data, m.wcs, stepsize=1, stat=STAT)
    assert_array_equal(fine.sky, coarse.sky)


@pytest.mark.parametrize(
    ("text", "found"),
    [
        (b"a 1.0\nb nan\nc 2\n", r":2: sky value 'nan' is not finite"),
        (b"a 1.0\nb text\nc 2\n", r":2: sky value 'text' is not a number"),
        (b"a 1.0\nb None\nc 2\n", r":2: sky value 'None' is not a number"),
        (b"a 1.0\nb 2.0\n\xff\xfe 2\n", r":3: not UTF-8 text"),
    ],
)
def test_bad_skylist_files_name_the_line(mosaic, tmp_path, text, found):
    path = tmp_path / "sky.txt"
    path.write_bytes(text)
    with pytest.raises(ValueError, match=r"sky\.txt" + found):
        match_sky(mosaic.data, method="user", skylist=path, names=["a", "b", "c"])


@pytest.mark.parametrize(
    ("value", "found"),
    [(float("nan"), "is not finite"), (None, "is not a number"), ("x", "is not a number"),
     (True, "is not a number"), ([1.0], "is not a number")],
)
def test_bad_skylist_mappings_name_the_entry(mosaic, value, found):
    with pytest.raises(ValueError, match=f"skylist entry 'b': sky value .* {found}"):
        match_sky(mosaic.data, method="user", skylist={"a": 1.0, "b": value, "c": 2.0},
                  names=["a", "b", "c"])
    ok = match_sky(mosaic.data, method="user", skylist={"a": 1.0, "b": "2.5", "c": 2},
                   names=["a", "b", "c"])
    assert ok.sky.tolist() == [1.0, 2.5, 2.0]


@pytest.mark.parametrize("statistic", ["mean", "median", "mode", "midpt"])
def test_big_endian_float32_is_measured_as_float32(statistic):
    # it was converted to float64, so the histogram statistics binned differently
    rng = np.random.default_rng(6)
    native = (100 + rng.normal(0, 1, (128, 128))).astype(np.float32)
    big = native.astype(">f4")
    st = SkyStat(statistic)
    assert sky_statistic(big, stat=st) == sky_statistic(native, stat=st)
