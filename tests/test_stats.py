"""The statistics engine: exact small cases, documented differences, input handling."""

import os
import pickle
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
from numpy.testing import assert_allclose

from skyeq import SkyStat, SkyValue, _kernels, sky_statistic

ALL = ("mean", "median", "mode", "midpt")


# ---------------------------------------------------------------- exact small cases


def test_two_pixels_match_the_reference_table():
    # algorithm_spec 2.9: two pixels 3 and 4 with nclip=5
    data = np.array([3.0, 4.0], dtype=np.float32)
    assert sky_statistic(data, stat=SkyStat("mean")) == (3.5, 2)
    assert sky_statistic(data, stat=SkyStat("median")) == (3.5, 2)
    hw = 0.1 * np.sqrt(0.5)  # binwidth * std(ddof=1)
    mode, npix = sky_statistic(data, stat=SkyStat("mode"))
    assert npix == 2
    assert mode == pytest.approx(3.0 + 0.5 * hw, abs=1e-12)  # 3.0354
    midpt, _ = sky_statistic(data, stat=SkyStat("midpt"))
    assert midpt == pytest.approx(3.0 + hw, abs=1e-12)  # 3.0707


def test_one_clipping_pass_by_hand():
    data = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
    # no clipping: everything
    assert sky_statistic(data, stat=SkyStat("mean", nclip=0)) == (22.0, 5)
    assert sky_statistic(data, stat=SkyStat("median", nclip=0)) == (3.0, 5)
    # mean 22, std (ddof 1) = sqrt(7610 / 4) = 43.6; 1-sigma bounds [-21.6, 65.6]
    st = SkyStat("mean", nclip=1, lsigma=1.0, usigma=1.0)
    assert sky_statistic(data, stat=st) == (2.5, 4)
    st = SkyStat("median", nclip=1, lsigma=1.0, usigma=1.0)
    assert sky_statistic(data, stat=st) == (2.5, 4)


def test_clipping_rereads_all_pixels_each_pass():
    # pass 1: mean 10.5, std 5.92 -> 1-sigma bounds [4.58, 16.42] keep 5..16 (12 values)
    # pass 2: mean 10.5, std 3.61 -> [6.89, 14.11] keeps 7..14 (8 values)
    data = np.arange(1.0, 21.0)
    st = SkyStat("mean", nclip=2, lsigma=1.0, usigma=1.0)
    assert sky_statistic(data, stat=st) == (10.5, 8)
    # a pure shrinking-survivor scheme and the re-read scheme agree here; an asymmetric
    # case separates them: values rejected in pass 1 return when the bounds move up
    data = np.array([0.0] * 6 + [10.0] * 3 + [11.0, 12.0, 30.0])
    mean1, std1 = data.mean(), data.std(ddof=1)
    lo1, hi1 = mean1 - 1.0 * std1, mean1 + 1.0 * std1
    keep1 = data[(data >= lo1) & (data <= hi1)]
    lo2, hi2 = keep1.mean() - keep1.std(ddof=1), keep1.mean() + keep1.std(ddof=1)
    keep2 = data[(data >= lo2) & (data <= hi2)]
    st = SkyStat("mean", nclip=2, lsigma=1.0, usigma=1.0)
    value, npix = sky_statistic(data, stat=st)
    assert npix == keep2.size
    assert value == pytest.approx(keep2.mean(), rel=1e-14)


def test_mode_parabolic_refinement_by_hand():
    # 41 values: std(ddof=1) known; place counts so the peak bin has unequal neighbours
    rng = np.random.default_rng(3)
    data = rng.normal(0.0, 1.0, 5000)
    st = SkyStat("mode", nclip=0, binwidth=0.25)
    value, npix = sky_statistic(data, stat=st)
    # independent implementation of the documented rule
    mn, mx = data.min(), data.max()
    hw = 0.25 * data.std(ddof=1)
    nbins = int((mx - mn) / hw) + 1
    dz = (mx - mn) / (nbins - 1)
    counts = np.zeros(nbins, int)
    idx = np.floor((data - mn) / dz).astype(int)
    np.add.at(counts, idx[idx < nbins], 1)
    p = int(np.argmax(counts))
    d1, d2 = counts[p] - counts[p - 1], counts[p] - counts[p + 1]
    expected = mn + (p + 0.5 + 0.5 * (d1 - d2) / (d1 + d2)) * hw
    assert npix == 5000
    assert value == pytest.approx(expected, abs=1e-12)


def test_midpt_interpolation_by_hand():
    rng = np.random.default_rng(4)
    data = rng.normal(5.0, 2.0, 3001)
    st = SkyStat("midpt", nclip=0, binwidth=0.2)
    value, _ = sky_statistic(data, stat=st)
    mn, mx = data.min(), data.max()
    hw = 0.2 * data.std(ddof=1)
    nbins = int((mx - mn) / hw) + 1
    dz = (mx - mn) / (nbins - 1)
    counts = np.zeros(nbins, int)
    idx = np.floor((data - mn) / dz).astype(int)
    np.add.at(counts, idx[idx < nbins], 1)
    c = np.cumsum(counts) / counts.sum()
    lo = int(np.argmax(c >= 0.5))
    expected = mn + lo * hw + (0.5 - c[lo - 1]) / (c[lo] - c[lo - 1]) * hw
    assert value == pytest.approx(expected, abs=1e-12)
    # and it is a median estimate: within a bin of the exact median
    assert abs(value - np.median(data)) < hw


def test_limits_are_inclusive():
    data = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert sky_statistic(data, stat=SkyStat("mean", lower=2.0, upper=4.0, nclip=0)) == (3.0, 3)


def test_spans_select_pixels():
    data = np.arange(20, dtype=np.float64).reshape(4, 5)
    spans = np.array([[1, 0, 2], [3, 3, 4]])
    assert sky_statistic(data, stat=SkyStat("mean", nclip=0), spans=spans) == (11.0, 5)
    # spans are clipped to the image; rows outside are ignored
    spans = np.array([[-1, 0, 4], [0, -5, 1], [2, 3, 99], [7, 0, 4]])
    assert sky_statistic(data, stat=SkyStat("mean", nclip=0), spans=spans) == (
        np.mean([0, 1, 13, 14]),
        4,
    )
    # with a mask
    mask = np.ones_like(data, dtype=bool)
    mask[1, 1] = False
    spans = np.array([[1, 0, 2]])
    assert sky_statistic(data, mask, SkyStat("median", nclip=0), spans=spans) == (6.0, 2)
    # an empty span list selects nothing
    value, npix = sky_statistic(data, spans=np.zeros((0, 3), int))
    assert np.isnan(value) and npix == 0


def test_median_even_and_odd_counts():
    assert sky_statistic(np.array([4.0, 1.0, 3.0, 2.0]), stat=SkyStat(nclip=0)) == (2.5, 4)
    assert sky_statistic(np.array([5.0, 1.0, 3.0]), stat=SkyStat(nclip=0)) == (3.0, 3)


# -------------------------------------------- deliberate differences from the reference


@pytest.mark.parametrize("name", ALL)
def test_nan_and_inf_pixels_are_ignored_without_limits(name):
    # the reference fails on any NaN when lower/upper are None
    data = np.array([1.0, 2.0, np.nan, 3.0, np.inf, -np.inf, 2.0], dtype=np.float32)
    clean = np.array([1.0, 2.0, 3.0, 2.0], dtype=np.float32)
    st = SkyStat(name, nclip=2)
    assert sky_statistic(data, stat=st) == sky_statistic(clean, stat=st)
    assert sky_statistic(data, stat=st).npix == 4


def test_midpt_of_a_single_bin_is_a_data_value():
    # the reference returns the bin count (0) for a constant image
    const = np.full((10, 10), 7.25, dtype=np.float32)
    assert sky_statistic(const, stat=SkyStat("midpt")) == (7.25, 100)
    # hw > data range also gives one bin: the exact median of the survivors
    data = np.array([1.0, 1.0, 1.1, 1.2])
    assert sky_statistic(data, stat=SkyStat("midpt", nclip=0, binwidth=10.0)) == (1.05, 4)


@pytest.mark.parametrize("name", ALL)
def test_constant_and_single_pixel_inputs(name):
    const = np.full((3, 7), -2.5)
    assert sky_statistic(const, stat=SkyStat(name)) == (-2.5, 21)
    # the reference's mode is NaN (uncomputable) for one pixel; ours is the pixel
    assert sky_statistic(np.array([42.0]), stat=SkyStat(name)) == (42.0, 1)


def test_nclip0_median_respects_limits():
    # the reference takes the median of all pixels, ignoring lower/upper, when nclip=0
    data = np.array([1.0, 2.0, 3.0, 10.0, 20.0])
    assert sky_statistic(data, stat=SkyStat("median", nclip=0, upper=5.0)) == (2.0, 3)
    assert sky_statistic(data, stat=SkyStat("median", nclip=0, lower=2.5)) == (10.0, 3)


@pytest.mark.parametrize("name", ["mode", "midpt"])
def test_histogram_uses_true_minimum_whatever_comes_first(name):
    # the reference's histogram origin depends on whether the FIRST array element is
    # clipped; ours depends only on the set of surviving values
    rng = np.random.default_rng(7)
    data = rng.normal(10.0, 1.0, 2001)
    data[0] = 1000.0  # clipped away by the upper bound
    st = SkyStat(name, nclip=3)
    first = sky_statistic(data, stat=st)
    moved = sky_statistic(np.roll(data, 1000), stat=st)
    # equal up to summation order (the reference's quirk moves it by ~0.05 sigma)
    assert first.npix == moved.npix
    assert first.value == pytest.approx(moved.value, rel=1e-12)


def test_no_valid_pixel_gives_nan_and_zero_quietly(capfd):
    st = SkyStat("mode")
    for data, mask in [
        (np.zeros((0, 5)), None),
        (np.full((4, 4), np.nan), None),
        (np.ones((4, 4)), np.zeros((4, 4), bool)),
        (np.ones((4, 4)), None),
    ]:
        stat = st if mask is not None or not np.all(data == 1) else SkyStat(lower=2.0)
        value, npix = sky_statistic(data, mask, stat)
        assert np.isnan(value) and npix == 0
    out, err = capfd.readouterr()
    assert out == "" and err == ""


# --------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "exc", "text"),
    [
        ({"statistic": "modee"}, ValueError, "statistic"),
        ({"statistic": None}, ValueError, "statistic"),
        ({"nclip": -1}, ValueError, "nclip"),
        ({"nclip": 2.0}, TypeError, "nclip"),
        ({"nclip": True}, TypeError, "nclip"),
        ({"lsigma": 0.0}, ValueError, "lsigma"),
        ({"usigma": -1.0}, ValueError, "usigma"),
        ({"binwidth": 0.0}, ValueError, "binwidth"),
        ({"binwidth": float("nan")}, ValueError, "binwidth"),
        ({"lsigma": float("inf")}, ValueError, "lsigma"),
        ({"lower": 5.0, "upper": 1.0}, ValueError, "lower"),
        ({"lower": float("nan")}, ValueError, "lower"),
        ({"upper": "3"}, TypeError, "upper"),
    ],
)
def test_invalid_settings_raise_at_construction(kwargs, exc, text):
    with pytest.raises(exc, match=text):
        SkyStat(**kwargs)


def test_skystat_is_frozen_picklable_and_normalised():
    st = SkyStat("MODE", lower=1, nclip=np.int64(3))
    assert st.statistic == "mode" and st.nclip == 3 and isinstance(st.lower, float)
    assert pickle.loads(pickle.dumps(st)) == st
    assert repr(st).startswith("SkyStat(statistic='mode', lower=1.0")
    with pytest.raises(AttributeError):
        st.nclip = 1


def test_bad_inputs_raise_clearly():
    with pytest.raises(ValueError, match="mask shape"):
        sky_statistic(np.ones((3, 3)), np.ones((3, 4), bool))
    with pytest.raises(ValueError, match="2-D"):
        sky_statistic(np.ones((2, 2, 2)))
    with pytest.raises(TypeError, match="real numbers"):
        sky_statistic(np.array(["a", "b"]))
    with pytest.raises(TypeError, match="SkyStat or a statistic name"):
        sky_statistic(np.ones(3), stat=3)
    with pytest.raises(ValueError, match="statistic"):
        sky_statistic(np.ones(3), stat="average")
    # a statistic name is that statistic with its defaults (issue 14)
    img = np.arange(12.0).reshape(3, 4)
    assert sky_statistic(img, stat="mode") == sky_statistic(img, stat=SkyStat("mode"))
    with pytest.raises(ValueError, match="spans"):
        sky_statistic(np.ones((3, 3)), spans=np.ones((2, 2), int))


# -------------------------------------------------------------- input conversions


def test_dtypes_byteorder_layout_and_masked_arrays():
    rng = np.random.default_rng(11)
    base = rng.normal(50.0, 3.0, (60, 70))
    st = SkyStat("mean", nclip=3)
    expected = sky_statistic(base, stat=st)
    assert sky_statistic(base.astype(">f8"), stat=st) == expected
    assert sky_statistic(np.asfortranarray(base), stat=st) == expected
    as_int = np.round(base).astype(np.int32)
    assert sky_statistic(as_int, stat=st) == sky_statistic(as_int.astype(np.float64), stat=st)
    f32 = base.astype(np.float32)
    assert sky_statistic(f32.astype(">f4"), stat=st) == sky_statistic(f32, stat=st)
    mask = rng.random(base.shape) > 0.3
    masked = np.ma.MaskedArray(base, mask=~mask)
    assert sky_statistic(masked, stat=st) == sky_statistic(base, mask, st)
    # an integer 0/1 mask means the same as a bool mask
    assert sky_statistic(base, mask.astype(np.uint8), st) == sky_statistic(base, mask, st)
    # a 1-D input is one row
    assert sky_statistic(base.ravel(), stat=st) == expected


def test_read_only_memmap(tmp_path):
    data = np.random.default_rng(2).normal(0, 1, (50, 40)).astype(np.float32)
    path = tmp_path / "img.npy"
    np.save(path, data)
    mm = np.load(path, mmap_mode="r")
    assert not mm.flags.writeable
    for name in ALL:
        assert sky_statistic(mm, stat=SkyStat(name)) == sky_statistic(data, stat=SkyStat(name))


def test_input_is_never_modified():
    rng = np.random.default_rng(5)
    data = rng.normal(0, 1, (64, 64)).astype(np.float32)
    keep = data.copy()
    for name in ALL:
        sky_statistic(data, stat=SkyStat(name))
        sky_statistic(data, data > -1, SkyStat(name))
    np.testing.assert_array_equal(data, keep)


# ----------------------------------------------- kernels against naive references


def test_moments_kernel_against_numpy():
    rng = np.random.default_rng(8)
    buf = rng.normal(1e4, 3.0, 10001).astype(np.float32)
    lo, hi = 1e4 - 5.0, 1e4 + 4.0
    sel = buf[(buf >= lo) & (buf <= hi)].astype(np.float64)
    for func in (_kernels.moments, _kernels.moments.py_func):
        count, mean, std = func(buf, buf.size, lo, hi, 12345.0)
        assert count == sel.size
        assert_allclose(mean, sel.mean(), rtol=1e-13)
        assert_allclose(std, sel.std(ddof=1), rtol=1e-9)


@pytest.mark.parametrize("case", ["random", "duplicates", "constant", "sorted", "reversed"])
def test_select_kth_against_partition(case):
    rng = np.random.default_rng(9)
    n = 3001
    a = {
        "random": rng.normal(0, 1, n),
        "duplicates": rng.integers(0, 5, n).astype(float),
        "constant": np.full(n, 3.0),
        "sorted": np.arange(n, dtype=float),
        "reversed": np.arange(n, dtype=float)[::-1].copy(),
    }[case]
    for k in (0, 1, n // 2, n - 1):
        for func in (_kernels.select_kth, _kernels.select_kth.py_func):
            work = a.copy()
            assert func(work, n, k) == np.partition(a, k)[k]
            assert np.all(work[:k] <= work[k]) and np.all(work[k + 1 :] >= work[k])


def test_median_kernel_against_numpy():
    rng = np.random.default_rng(10)
    for n in (1, 2, 3, 10, 1001, 1000):
        buf = rng.normal(0, 1, n).astype(np.float32)
        keep = buf.copy()
        lo, hi = -1.5, 1.2
        sel = buf[(buf >= lo) & (buf <= hi)]
        got = _kernels.median_within(buf, n, lo, hi)
        if sel.size:
            assert got == pytest.approx(np.median(sel.astype(np.float64)), abs=1e-7)
        else:
            assert np.isnan(got)
        np.testing.assert_array_equal(buf, keep)


def test_threads_agree_with_serial():
    rng = np.random.default_rng(12)
    images = [rng.normal(100 + i, 1 + i / 4, (300, 300)).astype(np.float32) for i in range(8)]
    stats = [SkyStat(name, nclip=4) for name in ALL]
    serial = [[st(img) for st in stats] for img in images]
    results = [None] * len(images)
    barrier = threading.Barrier(len(images))

    def work(i):
        barrier.wait()
        results[i] = [st(images[i]) for st in stats]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(images))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == serial


def test_kernels_compile_once_and_load_from_cache():
    # The session fixture (conftest.py) compiled or loaded every kernel in this process,
    # writing numba's cache; a new process must then load every kernel from that cache
    # and compile none. (Compiling all of them again in a fresh cache took 90 s here.)
    script = textwrap.dedent(
        """
        import json
        from numba.core.registry import CPUDispatcher
        from skyeq import _kernels
        _kernels.warmup()
        ds = [d for m in (_kernels.stats, _kernels.geometry, _kernels.buffers)
              for d in vars(m).values() if isinstance(d, CPUDispatcher)]
        print(json.dumps([sum(sum(d.stats.cache_hits.values()) for d in ds),
                          sum(sum(d.stats.cache_misses.values()) for d in ds)]))
        """
    )
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(_kernels.__file__))))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    hits, misses = (int(x) for x in out.stdout.strip().splitlines()[-1].strip("[]").split(","))
    assert misses == 0 and hits > 0  # every kernel loaded, none compiled


def test_skyvalue_is_a_tuple():
    v = SkyValue(1.5, 3)
    value, npix = v
    assert (value, npix) == (1.5, 3) and v.value == 1.5 and v.npix == 3


# --------------------------------------------------------------------------------------
# many regions of one image: the direct kernel and the sorted-cell kernels
# --------------------------------------------------------------------------------------


def _rect(y0, y1, x0, x1):
    return np.array([[r, x0, x1] for r in range(y0, y1 + 1)], dtype=np.int64)


def _region_cases():
    rng = np.random.default_rng(42)
    for trial in range(24):
        ny, nx = (int(v) for v in rng.integers(20, 160, 2))
        dtype = np.float32 if trial % 2 == 0 else np.float64
        img = rng.normal(100.0, 2.0, (ny, nx)).astype(dtype)
        img[rng.random((ny, nx)) < 0.01] += rng.uniform(10, 1000)
        if trial % 5 == 0:
            img[rng.random((ny, nx)) < 0.01] = np.nan
        mask = rng.random((ny, nx)) > 0.1 if trial % 3 else None
        regions = [
            _rect(int(rng.integers(0, ny // 3)), int(rng.integers(2 * ny // 3, ny)),
                  int(rng.integers(0, nx // 3)), int(rng.integers(2 * nx // 3, nx)))
            for _ in range(int(rng.integers(2, 8)))
        ]
        if trial % 7 == 0:
            regions.append(np.zeros((0, 3), dtype=np.int64))
        limits = {"lower": 95.0, "upper": 106.0} if trial % 4 == 1 else {}
        yield trial, img, mask, regions, int(rng.integers(0, 6)), limits


@pytest.mark.parametrize("name", ["mean", "median", "mode", "midpt"])
def test_region_statistics_equal_one_call_per_region(name, monkeypatch):
    from skyeq import stats as stats_mod

    for trial, img, mask, regions, nclip, limits in _region_cases():
        st = SkyStat(name, nclip=nclip, **limits)
        expect = [st(img, mask, s) for s in regions]
        expect_whole = st(img, mask)
        # direct kernel (one shared buffer): bit-identical to one call per region
        monkeypatch.setattr(stats_mod, "_CELL_COVERAGE", np.inf)
        whole, got = stats_mod.region_statistics(st, img, mask, regions, whole=True)
        np.testing.assert_array_equal(
            np.array([whole, *got], dtype=float), np.array([expect_whole, *expect], dtype=float)
        )
        # sorted cells: the same pixels, sums in another order
        monkeypatch.setattr(stats_mod, "_CELL_COVERAGE", 0.0)
        whole, got = stats_mod.region_statistics(st, img, mask, regions, whole=True)
        for a, b in zip([whole, *got], [expect_whole, *expect], strict=True):
            assert a.npix == b.npix, trial
            if b.npix == 0:
                assert np.isnan(a.value)
            else:
                assert a.value == pytest.approx(b.value, rel=1e-12, abs=1e-10), trial


def test_region_statistics_pick_sorted_cells_for_heavy_overlap(monkeypatch):
    from skyeq import _kernels as kernels
    from skyeq import stats as stats_mod

    img = np.arange(100.0).reshape(10, 10)
    regions = [_rect(0, 9, 0, 9), _rect(0, 9, 0, 8), _rect(1, 9, 0, 9)]
    calls = []
    real = kernels.cell_partition
    monkeypatch.setattr(kernels, "cell_partition", lambda *a: calls.append(1) or real(*a))
    _, got = stats_mod.region_statistics(SkyStat("median", nclip=0), img, None, regions)
    assert calls == [1]  # 3 regions of ~1 image each: sorted cells
    assert got == [(49.5, 100), (49.0, 90), (54.5, 90)]
    # small regions stay on the direct kernel
    _, got = stats_mod.region_statistics(
        SkyStat("mean", nclip=0), img, None, [_rect(0, 0, 0, 3), _rect(9, 9, 6, 9)]
    )
    assert calls == [1]
    assert got == [(1.5, 4), (97.5, 4)]


@pytest.mark.parametrize("bad_fraction", [0.1, 0.8])  # copied with NaNs / compacted
@pytest.mark.parametrize("use_spans", [False, True])
def test_masked_regions_equal_numpy_whichever_way_they_are_gathered(bad_fraction, use_spans):
    rng = np.random.default_rng(5)
    img = rng.normal(50.0, 3.0, (64, 80))
    img[rng.random(img.shape) < 0.02] = np.nan
    mask = rng.random(img.shape) >= bad_fraction
    spans = np.array([[r, 5, 70] for r in range(3, 60)]) if use_spans else None
    region = np.zeros(img.shape, dtype=bool)
    if use_spans:
        region[3:60, 5:71] = True
    else:
        region[:] = True
    good = img[region & mask & np.isfinite(img)]
    for name, expect in (("mean", good.mean()), ("median", np.median(good))):
        value, npix = sky_statistic(img, mask, SkyStat(name, nclip=0), spans=spans)
        assert npix == good.size
        assert value == pytest.approx(expect, rel=1e-13)
    lo, hi = 45.0, 55.0
    inside = good[(good >= lo) & (good <= hi)]
    value, npix = sky_statistic(img, mask, SkyStat("mean", nclip=0, lower=lo, upper=hi),
                                spans=spans)
    assert npix == inside.size and value == pytest.approx(inside.mean(), rel=1e-13)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sort_cells_equals_numpy_sort(dtype):
    # cells below and above the radix threshold, negative values, both zeros, infinite
    # values, repeated values, an all-equal cell, values of every magnitude; the slots
    # between cells are left alone
    rng = np.random.default_rng(8)
    big = _kernels.stats._RADIX_MIN
    parts = [
        rng.normal(100.0, 1.0, 10),
        rng.normal(0.0, 1e3, big + 1),
        np.concatenate([[0.0, -0.0, np.inf, -np.inf, 5.0, 5.0], rng.normal(0, 1, big)]),
        np.full(3 * big, 7.25),
        10.0 ** rng.uniform(-30, 30, 2 * big) * rng.choice([-1.0, 1.0], 2 * big),
        rng.integers(-3, 4, 5 * big).astype(float),
        np.zeros(0),
    ]
    vals = np.concatenate([np.concatenate([p, [12345.0]]) for p in parts]).astype(dtype)
    lens = np.array([len(p) for p in parts])
    cstart = np.concatenate([[0], np.cumsum(lens + 1)[:-1]]).astype(np.int64)
    cend = cstart + lens
    expect = vals.copy()
    for a, b in zip(cstart, cend, strict=True):
        expect[a:b].sort()
    got = vals.copy()
    _kernels.sort_cells(got, cstart, cend)
    np.testing.assert_array_equal(got, expect)
    assert np.all(got[cend[:-1]] == 12345.0)  # the separators
    # -0.0 comes before +0.0 (numpy leaves them in any order)
    zeros = np.flatnonzero(got[cstart[2] : cend[2]] == 0.0) + cstart[2]
    assert np.signbit(got[zeros]).tolist()[:1] == [True]
    # a reused scratch buffer, too short or long enough, gives the same
    for scratch in (np.empty(8, np.uint8), np.empty(2 * 5 * big * 8, np.uint8)):
        again = vals.copy()
        _kernels.sort_cells(again, cstart, cend, scratch)
        np.testing.assert_array_equal(again, expect)


def test_radix_sort_pure_python_matches_the_compiled_kernel():
    rng = np.random.default_rng(9)
    bits = rng.normal(0.0, 50.0, 300).astype(np.float32)
    expect = np.sort(bits)
    work = bits.view(np.uint32).copy()
    _kernels.stats._radix_sort_floats.py_func(work, np.uint32(1 << 31), np.empty(600, np.uint32))
    np.testing.assert_array_equal(work.view(np.float32), expect)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("varying_bytes", [1, 2, 3])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_radix_sort_with_only_the_low_bytes_varying(dtype, varying_bytes, sign):
    # only the lowest 1-3 bytes of the patterns vary: 1-3 radix passes (the single-pass
    # path copies back from scratch; the others end in place), on either sign
    uint = np.uint32 if dtype == np.float32 else np.uint64
    base = np.array([sign * 100.0], dtype=dtype).view(uint)[0]
    base = uint(int(base) & ~((1 << (8 * varying_bytes)) - 1))
    rng = np.random.default_rng(varying_bytes)
    n = 3 * _kernels.stats._RADIX_MIN
    low = rng.integers(0, 1 << (8 * varying_bytes), n).astype(uint)
    vals = (base | low).view(dtype)
    assert np.unique(vals.view(uint) >> uint(8 * varying_bytes)).size == 1
    got = vals.copy()
    _kernels.sort_cells(got, np.array([0]), np.array([n]))
    np.testing.assert_array_equal(got, np.sort(vals))
