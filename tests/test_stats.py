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
from skyeq.stats import STATISTICS

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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_minmax_on_integer_keys_against_numpy(dtype):
    # the kernel orders the values' bits as integers: check signs, zeros, tiny and huge
    # magnitudes, NaN and infinities (never within the bounds), empty selections
    minmax = _kernels.stats._minmax_within
    rng = np.random.default_rng(31)
    for trial in range(120):
        n = int(rng.integers(0, 40))
        buf = rng.normal(0.0, rng.choice([1e-30, 1.0, 1e30]), n + 3).astype(dtype)
        buf[rng.integers(0, n + 3, 4)] = [np.nan, np.inf, -np.inf, rng.choice([0.0, -0.0])]
        lo, hi = sorted(rng.normal(0.0, 1.0, 2) * rng.choice([0.0, 1e-30, 1.0, 1e30]))
        if trial % 4 == 0:
            lo, hi = -1e300, 1e300
        sel = buf[:n].astype(np.float64)
        sel = sel[(sel >= lo) & (sel <= hi)]
        want = (sel.min(), sel.max()) if sel.size else (np.inf, -np.inf)
        for func in (minmax, minmax.py_func):
            assert func(buf, n, lo, hi) == want
    assert minmax(np.array([-0.0, 0.0, -2.5, 3.0], dtype=dtype), 4, -3.0, 2.0) == (-2.5, 0.0)

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
# many regions of one image: the direct kernel and the bucketed-cell kernels
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
        monkeypatch.setattr(stats_mod, "_CELL_COVERAGE", dict.fromkeys(STATISTICS, np.inf))
        whole, got = stats_mod.region_statistics(st, img, mask, regions, whole=True)
        np.testing.assert_array_equal(
            np.array([whole, *got], dtype=float), np.array([expect_whole, *expect], dtype=float)
        )
        # bucketed cells: the same pixels, sums in another order
        monkeypatch.setattr(stats_mod, "_CELL_COVERAGE", dict.fromkeys(STATISTICS, 0.0))
        monkeypatch.setattr(stats_mod, "_CELL_MIN_PIXELS", 0)
        whole, got = stats_mod.region_statistics(st, img, mask, regions, whole=True)
        for a, b in zip([whole, *got], [expect_whole, *expect], strict=True):
            assert a.npix == b.npix, trial
            if b.npix == 0:
                assert np.isnan(a.value)
            else:
                assert a.value == pytest.approx(b.value, rel=1e-12, abs=1e-10), trial


def test_region_statistics_pick_bucketed_cells_for_heavy_overlap(monkeypatch):
    from skyeq import _kernels as kernels
    from skyeq import stats as stats_mod

    img = np.arange(100.0).reshape(10, 10)
    regions = [_rect(0, 9, 0, 9), _rect(0, 9, 0, 8), _rect(1, 9, 0, 9)]
    calls = []
    real = kernels.cell_stats
    monkeypatch.setattr(kernels, "cell_stats", lambda *a: calls.append(1) or real(*a))
    _, got = stats_mod.region_statistics(SkyStat("median", nclip=0), img, None, regions)
    assert calls == [] and got == [(49.5, 100), (49.0, 90), (54.5, 90)]  # 290 pixels: direct
    monkeypatch.setattr(stats_mod, "_CELL_MIN_PIXELS", 0)  # as if the image were large
    _, got = stats_mod.region_statistics(SkyStat("mode", nclip=0), img, None, regions)
    assert calls == [1]  # mode: 3 regions of ~1 image each: bucketed cells
    _, got = stats_mod.region_statistics(SkyStat("median", nclip=0), img, None, regions)
    assert calls == [1, 1]
    assert got == [(49.5, 100), (49.0, 90), (54.5, 90)]
    # small regions: the mode stays on the direct kernel; a mean or median takes the
    # cells from two regions on, one region stays direct
    small = [_rect(0, 0, 0, 3), _rect(9, 9, 6, 9)]
    _, got = stats_mod.region_statistics(SkyStat("mode", nclip=0), img, None, small)
    assert calls == [1, 1]
    _, got = stats_mod.region_statistics(SkyStat("mean", nclip=0), img, None, small)
    assert calls == [1, 1, 1]
    assert got == [(1.5, 4), (97.5, 4)]
    _, got = stats_mod.region_statistics(SkyStat("median", nclip=0), img, None, small[:1])
    assert calls == [1, 1, 1]
    assert got == [(1.5, 4)]


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


def _awkward_images(dtype):
    """Value distributions that stress the bucket placement of the cell kernels."""
    rng = np.random.default_rng(17)
    shape = (90, 110)
    n = shape[0] * shape[1]
    mixture = np.where(rng.random(n) < 0.6, 50.0 + rng.normal(0, 1e-4, n),
                       rng.uniform(-500, 500, n))  # a narrow spike holding the quartiles
    wide = 10.0 ** rng.uniform(-30, 30, n) * rng.choice([-1.0, 1.0], n)
    ties = rng.integers(-3, 4, n).astype(float)
    signed = rng.normal(0.0, 2.0, n)
    signed[:50] = 0.0
    signed[50:100] = -0.0
    signed[100:110] = np.inf
    signed[110:120] = -np.inf
    one = np.full(n, np.nan)
    one[n // 2] = 3.0
    # two values in a checkerboard: an even count's middle values in different buckets
    halves = 10.0 + (np.indices(shape).sum(axis=0) % 2).ravel()
    for name, flat in (("constant", np.full(n, 7.25)), ("mixture", mixture), ("wide", wide),
                       ("ties", ties), ("signed", signed), ("one usable", one),
                       ("halves", halves)):
        yield name, flat.reshape(shape).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bucketed_cells_equal_one_call_per_region_on_awkward_data(dtype, monkeypatch):
    # the buckets are placed from a sample's median and quartiles: data whose quartiles
    # coincide, whose values span 60 decades, that are integers with ties, or that hold
    # both zeros and infinities must still give the pixels and the order statistics of
    # the direct kernel exactly
    from skyeq import stats as stats_mod

    regions = [_rect(0, 89, 0, 109), _rect(5, 80, 0, 100), _rect(10, 89, 20, 109),
               _rect(0, 44, 0, 54)]
    monkeypatch.setattr(stats_mod, "_CELL_COVERAGE", dict.fromkeys(STATISTICS, 0.0))
    monkeypatch.setattr(stats_mod, "_CELL_MIN_PIXELS", 0)
    for name, img in _awkward_images(dtype):
        for stat in ("mean", "median", "mode", "midpt"):
            for nclip in (0, 3):
                st = SkyStat(stat, nclip=nclip)
                expect = [st(img, None, s) for s in regions]
                whole, got = stats_mod.region_statistics(st, img, None, regions, whole=True)
                for a, b in zip([whole, *got], [st(img), *expect], strict=True):
                    assert a.npix == b.npix, (name, stat, nclip)
                    if b.npix == 0:
                        assert np.isnan(a.value)
                    elif stat == "median":  # the same pixels: the same median, bit for bit
                        assert a.value == b.value, (name, nclip)
                    elif name != "wide":  # 60 decades: sums in another order differ by more
                        # than 1e-12 (their condition number is huge); the pixels are equal
                        assert a.value == pytest.approx(b.value, rel=1e-12, abs=1e-300), (
                            name, stat, nclip)


def test_bucket_histogram_pure_python_matches_the_compiled_kernel():
    rng = np.random.default_rng(9)
    img = rng.normal(20.0, 3.0, (40, 50)).astype(np.float32)
    img[2, 3] = 1e6
    img[5, 7] = np.nan
    spans = np.concatenate([_rect(0, 39, 0, 49), _rect(3, 29, 2, 42)])
    reg_off = np.array([0, 40, 67], dtype=np.int64)
    kern = _kernels.stats
    seg, keys = kern._cell_segments(spans, reg_off, 40, 50, False)
    seg_py, keys_py = kern._cell_segments.py_func(spans, reg_off, 40, 50, False)
    np.testing.assert_array_equal(seg, seg_py)
    np.testing.assert_array_equal(keys, keys_py)
    assert keys.tolist() == [1, 3]
    for counted, middle, everything in ((False, True, False), (True, False, True)):
        args = (img, np.zeros((0, 0), bool), False, seg, 2, -3e38, 3e38)  # float32-safe
        side = (np.empty(10, np.float32), np.empty(10, np.int32))  # short: replaced
        part, bins, shift = kern._bucket_histogram(*args, np.empty(img.size, np.float32),
                                                   *side, counted, middle, everything)
        part_py, bins_py, shift_py = kern._bucket_histogram.py_func(
            *args, np.empty(img.size, np.float32), *side, counted, middle, everything)
        assert bins == bins_py and shift == shift_py
        vals, start, pc, _, _, _, tot, _, take = part[:9]
        for got, expect in zip(part[1:], part_py[1:], strict=True):
            np.testing.assert_array_equal(got, expect)
        nbt = bins[2] + 2
        kept = pc[:, -1].sum()
        np.testing.assert_array_equal(np.sort(vals[:kept]), np.sort(part_py[0][:kept]))
        # every cell's totals are those of its finite pixels; its kept buckets hold all
        # of their values, in non-decreasing bucket order
        for c, rows in enumerate((_rect(0, 39, 0, 49), _rect(3, 29, 2, 42))):
            cell = np.zeros(img.shape, bool)
            for r, x0, x1 in rows:
                cell[r, x0 : x1 + 1] = True
            if c == 0:
                cell[3:30, 2:43] = False
            good = img[cell & np.isfinite(img)].astype(np.float64)
            assert tot[c, 0] == good.size
            assert tot[c, 1] == pytest.approx(np.sum(good - shift), rel=1e-12)
            k = c * nbt + np.arange(nbt)
            got = np.concatenate([vals[start[q] : start[q] + pc[c, q - c * nbt + 1]
                                       - pc[c, q - c * nbt]] for q in k[take[k]]])
            expect = np.sort(good)
            buckets = np.array([kern._bucket(v, *bins) for v in expect])
            np.testing.assert_array_equal(np.sort(got), expect[take[c * nbt + buckets]])
            if everything:
                assert got.size == good.size
        assert np.float32(1e6) in vals[:kept]  # the value above every fine bucket is kept


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_typed_neighbours_step_in_the_data_type(dtype):
    # a float32 stepped towards the float64 infinity gave the next float64, which
    # rounded back: 7.0 came back as "the smallest float32 >= 7.0000001"
    kern = _kernels.stats
    typed = np.empty(2, dtype)
    info = np.finfo(dtype)
    for x in (7.0000001, -7.0000001, 1e-30, 0.1, 7.0, 1e300, -1e300):
        a = dtype(kern._typed_above(typed, x))
        b = dtype(kern._typed_below(typed, x))
        assert float(a) >= x and float(b) <= x, x
        if abs(x) <= float(info.max):  # the nearest of the type on each side
            assert float(np.nextafter(a, dtype(-np.inf))) < x or float(a) == x, x
            assert float(np.nextafter(b, dtype(np.inf))) > x or float(b) == x, x
    if dtype == np.float32:  # "no bound" (the largest double) stays finite
        assert dtype(kern._typed_above(typed, -1e300)) == -info.max
        assert dtype(kern._typed_below(typed, 1e300)) == info.max


def test_bucket_start_is_the_first_double_of_each_bucket():
    kern = _kernels.stats
    rng = np.random.default_rng(4)
    for a, inv, nb in ((95.3, 2048 / 43.7, 2048), (-1e-3, 16 / 3e-7, 16),
                       (1e20, 1.7e-19, 512), (7.0, 0.0, 16)):
        for k in (-1, 0, 1, 2, nb // 2, nb, nb + 1, nb + 2):
            x = kern._bucket_start(k, a, inv, nb)
            if np.isinf(x):
                big = np.finfo(np.float64).max
                every = kern._bucket(-big, a, inv, nb) >= k
                assert (x < 0) == every and (every or kern._bucket(big, a, inv, nb) < k)
                continue
            assert kern._bucket(x, a, inv, nb) >= k
            assert kern._bucket(float(np.nextafter(x, -np.inf)), a, inv, nb) < k
        # and on doubles about the bucket edges: the index agrees with the starts
        edges = a + (rng.integers(0, nb, 50) / inv if inv else np.zeros(50))
        for v in np.concatenate([edges, np.nextafter(edges, np.inf),
                                 np.nextafter(edges, -np.inf)]):
            j = kern._bucket(float(v), a, inv, nb)
            assert kern._bucket_start(j, a, inv, nb) <= v < kern._bucket_start(j + 1, a, inv,
                                                                              nb)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_segment_read_decides_as_the_bucket_index(dtype):
    # `_segment_sums` tests values against bounds, not bucket indices: on values at
    # and beside every bucket edge (and infinities, NaN, a mask) its flags and counts
    # are those of the index
    kern = _kernels.stats
    a, inv, nb = 99.5, 64 / 10.0, 64
    edges = np.array([20, 40, 30, 33], dtype=np.int64)  # tails below 20, above 40; middle
    typed = np.empty(2, dtype)
    starts = np.array([kern._typed_above(typed, kern._bucket_start(j, a, inv, nb))
                       for j in range(1, nb + 2)], dtype=dtype)
    v = np.concatenate([starts, np.nextafter(starts, dtype(np.inf)),
                        np.nextafter(starts, dtype(-np.inf)),
                        np.array([np.inf, -np.inf, np.nan, 1e6, -1e6], dtype)])
    wide = v.astype(np.float64)
    good = np.random.default_rng(2).random(v.size) < 0.8
    for lower, upper in ((-1e300, 1e300), (95.0, 104.25)):
        bounds = kern._value_bounds(v.reshape(1, -1), a, inv, nb, edges, lower, upper)
        for use_mask in (False, True):
            keep = np.zeros(v.size, np.uint8)
            n, s, q, below = kern._segment_sums(v, good, use_mask, bounds, 100.0, keep)
            ok = (wide >= lower) & (wide <= upper) & (good | (not use_mask))
            j = np.array([kern._bucket(x, a, inv, nb) for x in wide])
            kept = ok & ((j < edges[2]) | (j > edges[3]) | ((j >= edges[0]) & (j <= edges[1])))
            np.testing.assert_array_equal(keep.astype(bool), kept)
            assert n == ok.sum() and below == (ok & (j < edges[0])).sum()
            ids = np.empty(v.size, np.int64)
            kern._segment_ids(v, good, use_mask, lower, upper, a, inv, nb, ids)
            np.testing.assert_array_equal(ids, np.where(ok, j, -1))
            d = wide[ok] - 100.0
            assert s == pytest.approx(d.sum(), rel=1e-12) and q == pytest.approx((d * d).sum())


def test_distinct_keys_are_numpy_unique():
    kern = _kernels.stats
    rng = np.random.default_rng(6)
    for n, nd in ((0, 1), (1, 1), (40, 3), (5000, 70), (3000, 3000)):  # 70, 3000: rehashes
        pool = rng.integers(-(2**62), 2**62, nd)
        pool[0] = 0
        key = pool[rng.integers(0, nd, n)]
        keys, cell = kern._distinct_keys(key)
        expect = np.unique(key)
        np.testing.assert_array_equal(keys, expect)
        np.testing.assert_array_equal(cell, np.searchsorted(expect, key))


def test_flag_words_list_every_flag():
    kern = _kernels.stats
    rng = np.random.default_rng(5)
    flags = (rng.random(64 * 5) < 0.1).astype(np.uint8)
    flags[64:128] = 1
    flags[128:192] = 0
    words = flags.view(np.uint64)
    for b in range(5):
        w = int(kern._flag_word(words, b))
        bits = [i for i in range(64) if w >> i & 1]
        assert bits == np.flatnonzero(flags[64 * b : 64 * b + 64]).tolist()
        if w:
            assert kern._lowest_bit(np.uint64(w)) == bits[0]


def _dither_image(seed=3):
    """A 512x512 sky with sources and three overlapping regions covering most of it."""
    rng = np.random.default_rng(seed)
    img = rng.normal(100.0, 2.0, (512, 512)).astype(np.float32)
    for y, x in rng.integers(8, 504, (60, 2)):
        img[y - 3 : y + 4, x - 3 : x + 4] += rng.uniform(20, 2000)
    regions = [_rect(0, 480, 10, 511), _rect(20, 511, 0, 470), _rect(5, 500, 30, 500)]
    return img, regions


@pytest.mark.parametrize("name", ["mean", "median", "mode", "midpt"])
def test_bucketed_cells_read_the_tails_and_fall_back_to_every_value(name, monkeypatch):
    # a sky with sources: the clip bounds (4 sigma) fall in the kept tails and the
    # medians in the kept middle, so the first queries need nothing more than the one
    # read (the mode and midpt: one gather of the buckets straddling bin edges), and
    # well under a tenth of the values are copied; bounds at 1 sigma fall in the middle
    # of the distribution, which is not kept: the image is read again keeping every
    # value. Either way the pixels and the statistics are those of the direct kernel.
    from skyeq import stats as stats_mod

    kern = _kernels.stats
    img, regions = _dither_image()
    code = {"mean": 0, "median": 1, "mode": 2, "midpt": 3}[name]
    spans = np.concatenate(regions)
    reg_off = np.array([0, 481, 973, 1469], dtype=np.int64)
    seg, keys = kern._cell_segments(spans, reg_off, 512, 512, True)
    big = 1.7976931348623157e308
    for sigma, short in ((4.0, False), (1.0, True)):
        part, bins, shift = kern._bucket_histogram(
            img, np.zeros((0, 0), bool), False, seg, keys.size, -big, big,
            np.empty(img.size, np.float32), np.empty(img.size // 4, np.float32),
            np.empty(img.size // 4, np.int32), code >= 2, code in (1, 3), False)
        assert part[2][:, -1].sum() < 0.1 * img.size
        kern._cell_queries(part, bins, shift, keys, 3, True, -big, big, 5, sigma, sigma, 0.1,
                           code)
        assert bool(part[10][0]) == short
        assert part[9].any() == (code >= 2 and not short)  # the histogram's straddlers
        st = SkyStat(name, nclip=5, lsigma=sigma, usigma=sigma)
        monkeypatch.setattr(stats_mod, "_CELL_COVERAGE", dict.fromkeys(STATISTICS, 0.0))
        monkeypatch.setattr(stats_mod, "_CELL_MIN_PIXELS", 0)
        whole, got = stats_mod.region_statistics(st, img, None, regions, whole=True)
        monkeypatch.setattr(stats_mod, "_CELL_COVERAGE", dict.fromkeys(STATISTICS, np.inf))
        whole_d, expect = stats_mod.region_statistics(st, img, None, regions, whole=True)
        for a, b in zip([whole, *got], [whole_d, *expect], strict=True):
            assert a.npix == b.npix > 10000
            if name == "median":
                assert a.value == b.value
            else:
                assert a.value == pytest.approx(b.value, rel=1e-12)


def _strips_image(levels):
    """A 512x512 sky with sources and four edge strips (a tile's overlaps) at given levels."""
    rng = np.random.default_rng(5)
    img = rng.normal(100.0, 2.0, (512, 512)).astype(np.float32)
    for y, x in rng.integers(8, 504, (40, 2)):
        img[y - 3 : y + 4, x - 3 : x + 4] += rng.uniform(20, 2000)
    regions = [_rect(0, 50, 0, 511), _rect(461, 511, 0, 511), _rect(51, 460, 0, 50),
               _rect(51, 460, 461, 511)]
    for (r, level) in zip(regions, levels, strict=True):
        img[r[0, 0] : r[-1, 0] + 1, r[0, 1] : r[0, 2] + 1] += level
    return img, regions


@pytest.mark.parametrize("name", ["median", "mode"])
def test_strips_at_different_levels_take_the_direct_kernels(name, monkeypatch):
    # strips of a tile in a bright nebula: each clips far inside the tails of the pooled
    # distribution, which the cells keep; the sample of `levels_apart` sees it and the
    # direct kernels run, without a wasted read. Sky-like strips stay on the cells.
    # Both paths give the direct kernels' results.
    from skyeq import stats as stats_mod

    kern = _kernels
    st = SkyStat(name, nclip=5, lsigma=4.0, usigma=4.0)
    monkeypatch.setattr(stats_mod, "_CELL_COVERAGE", dict.fromkeys(STATISTICS, 0.0))
    monkeypatch.setattr(stats_mod, "_CELL_MIN_PIXELS", 0)
    reads = []
    real = kern.stats._bucket_histogram
    monkeypatch.setattr(kern.stats, "_bucket_histogram", lambda *a: reads.append(1) or real(*a))
    for levels, apart in (((0.0, 0.0, 0.0, 0.0), False), ((0.0, 40.0, 80.0, 160.0), True)):
        img, regions = _strips_image(levels)
        spans = np.concatenate(regions)
        off = np.cumsum([0] + [len(r) for r in regions]).astype(np.int64)
        no_mask = np.zeros((0, 0), bool)
        big = 1.7976931348623157e308
        # pure Python too: its indexing is bounds-checked (the sample buffers are tight)
        for func in (kern.levels_apart, kern.levels_apart.py_func):
            assert func(img, no_mask, False, spans, off, -big, big, 4.0, 4.0) is apart
        reads.clear()
        got = stats_mod.region_statistics(st, img, None, regions)[1]
        assert len(reads) == (0 if apart else 1)  # no cell read for strips apart
        for r, value in zip(regions, got, strict=True):
            expect = stats_mod.sky_statistic(img, stat=st, spans=r)
            assert value.npix == expect.npix > 10000
            assert value.value == pytest.approx(expect.value, rel=1e-12)
    # regions of 63 rows (every span sampled) under a random mask: the sample of a region
    # must stop at its room whatever a span yields (it once wrote past it)
    holes = np.random.default_rng(0).random(img.shape) > 0.3
    rows63 = np.concatenate([_rect(0, 62, 0, 511), _rect(100, 162, 0, 511)])
    off63 = np.array([0, 63, 126], np.int64)
    for func in (kern.levels_apart, kern.levels_apart.py_func):
        assert func(img, holes, True, rows63, off63, -big, big, 4.0, 4.0) is False
    # spans reaching outside the image are clipped, a mask is honoured
    mask = np.ones(img.shape, bool)
    mask[:, :256] = False
    wide = np.array([[-3, -10, 600], [5, -10, 600], [700, 0, 10], [6, 0, 511]], np.int64)
    off = np.array([0, 2, 4], np.int64)
    assert kern.levels_apart(img, mask, True, wide, off, -big, big, 4.0, 4.0) is False


def test_cells_hand_a_short_read_of_strips_to_the_direct_kernels(monkeypatch):
    # a query that needs values the read did not keep (1-sigma bounds): regions that
    # hardly overlap are measured by the direct kernels instead of a second read
    # keeping every value (dithers, overlapping heavily, take that read: see above)
    kern = _kernels.stats
    img, regions = _strips_image((0.0, 0.0, 0.0, 0.0))
    spans = np.concatenate(regions)
    off = np.cumsum([0] + [len(r) for r in regions]).astype(np.int64)
    args = (img, np.zeros((0, 0), bool), False, spans, off, False, -1e300, 1e300, 5, 1.0,
            1.0, 0.1, 1)
    reads, direct = [], []
    real_read, real_direct = kern._bucket_histogram, kern.region_stats
    monkeypatch.setattr(kern, "_bucket_histogram",
                        lambda *a: reads.append(a[-1]) or real_read(*a))
    monkeypatch.setattr(kern, "region_stats", lambda *a: direct.append(1) or real_direct(*a))
    # (levels_apart would see the 1-sigma bounds coming: make it miss, as a sample can)
    monkeypatch.setattr(kern, "levels_apart", lambda *a: False)
    got = kern.cell_stats(*args, np.empty(img.size, np.float32),
                          np.empty(img.size // 4, np.float32), np.empty(img.size // 4, np.int32))
    assert reads == [False] and direct == [1]
    expect = real_direct(*args)
    for a, b in zip(got, expect, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_median_near_the_mean_equals_median_within(dtype):
    # the window about the clipped mean holds the median for sky-like data; skewed
    # data (median far from the mean), constant data and small counts take the full
    # path; odd and even counts; values outside [lo, hi] and NaN never count
    rng = np.random.default_rng(21)
    kern = _kernels.stats
    cases = [rng.normal(100.0, 2.0, 50001), rng.normal(100.0, 2.0, 50000),
             rng.exponential(5.0, 40000), np.full(9000, 3.5), rng.normal(0.0, 1.0, 3000)]
    with_nan = rng.normal(10.0, 1.0, 20000)
    with_nan[::97] = np.nan
    cases.append(with_nan)
    for values in cases:
        buf = values.astype(dtype)
        n = buf.size
        for lo, hi in ((-1e300, 1e300), (float(np.nanpercentile(values, 5)), 1e300)):
            count, mean, std, clo, chi = kern.clip_moments(buf, n, lo, hi, 3, 4.0, 4.0)
            got = kern._median_near(buf, n, clo, chi, count, mean, std)
            assert got == kern.median_within(buf, n, clo, chi)
            kept = buf[(buf >= clo) & (buf <= chi)]
            assert got == pytest.approx(float(np.median(kept.astype(np.float64))),
                                        rel=1e-6)
