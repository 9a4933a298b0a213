"""Tests of the result object (skyeq.result)."""

import numpy as np
import pytest
from astropy.table import Table
from numpy.testing import assert_allclose, assert_array_equal

from skyeq import match_sky, synthetic
from skyeq._methods import solve_match
from skyeq.result import METHODS, PAIR_COLUMNS, SkyResult, make_pair_table

# Table 2 of the skymatch documentation plus an isolated 8th image, method "match":
# the isolated image is invalid and keeps sky 0.0 as in the reference.
SKY = [0.0, 20.0, 5.0, 10.0, 8.75, 3.75, 13.75, 0.0]
VALID = [True] * 7 + [False]
NAMES = [f"jw_{k:02d}_cal.fits" for k in range(8)]


def _result(**kwargs):
    args = {
        "sky": SKY,
        "method": "match",
        "subtracted": False,
        "valid": np.array(VALID),
        "components": [np.array([4, 5, 6]), np.array([0, 1, 2, 3])],
        "pairs": make_pair_table(
            [0, 4], [1, 5], [300000, 500000], [299000, 500000],
            [100.0, 95.0], [120.0, 90.0], [299500.0, 500000.0], [0.0, 0.0],
        ),
        "names": NAMES,
    }
    args.update(kwargs)
    return SkyResult(**args)


def test_make_pair_table_columns_and_values():
    t = make_pair_table([0, 1], [1, 2], [10, 20], [11, 21], [1.5, 2.5], [3.5, np.nan],
                        [10.5, 0.0], [0.25, np.nan])
    assert t.colnames == [name for name, _ in PAIR_COLUMNS]
    assert t.colnames == ["i", "j", "npix_i", "npix_j", "sky_i", "sky_j", "weight", "residual",
                          "robust_weight"]
    assert t["i"].dtype == np.int64
    assert t["npix_i"].dtype == np.int64 and t["npix_j"].dtype == np.int64  # counts
    assert_array_equal(t["j"], [1, 2])
    assert_array_equal(t["npix_j"], [11.0, 21.0])
    assert_array_equal(t["weight"], [10.5, 0.0])
    assert t["residual"][0] == 0.25 and np.isnan(t["residual"][1])


def test_make_pair_table_empty():
    t = make_pair_table()
    assert len(t) == 0
    assert t.colnames == ["i", "j", "npix_i", "npix_j", "sky_i", "sky_j", "weight", "residual",
                          "robust_weight"]


def test_make_pair_table_errors():
    with pytest.raises(ValueError, match="differ in length"):
        make_pair_table([0, 1], [1], [1], [1], [1.0], [1.0], [1.0], [1.0])
    with pytest.raises(ValueError, match="'sky_i' must be 1-D"):
        make_pair_table([0], [1], [1], [1], [[1.0]], [1.0], [1.0], [1.0])
    for bad in (10.5, np.nan, "ten"):
        with pytest.raises(ValueError, match="'npix_j' must hold whole pixel counts"):
            make_pair_table([0], [1], [10], [bad], [1.0], [1.0], [1.0], [1.0])


def test_make_pair_table_whole_float_counts_become_integers():
    t = make_pair_table([0], [1], [353.0], [np.float32(360.0)], [1.0], [2.0], [356.5], [0.0])
    assert t["npix_i"].dtype == np.int64 and t["npix_j"].dtype == np.int64
    assert t["npix_i"].tolist() == [353] and t["npix_j"].tolist() == [360]
    assert t["weight"].dtype == np.float64 and t["weight"][0] == 356.5


def test_pair_table_from_solution():
    sol = solve_match(3, [0, 1], [1, 2], [100.0, 120.0], [120.0, 105.0], [10, 10], [10, 12])
    t = make_pair_table([0, 1], [1, 2], [10, 10], [10, 12], [100.0, 120.0], [120.0, 105.0],
                        sol.weight, sol.residual)
    assert_allclose(t["weight"], [10.0, 11.0], rtol=0, atol=0)
    assert_allclose(t["residual"], [0.0, 0.0], rtol=0, atol=1e-12)


def test_basic_attributes():
    res = _result()
    assert len(res) == 8
    assert res.sky.dtype == np.float64
    assert_array_equal(res.sky, SKY)
    assert res.method == "match"
    assert res.subtracted is False
    assert_array_equal(res.valid, VALID)
    # components are normalised to sorted intp arrays, in the given order
    assert [c.tolist() for c in res.components] == [[4, 5, 6], [0, 1, 2, 3]]
    assert_array_equal(res.component_id, [1, 1, 1, 1, 0, 0, 0, -1])
    assert res.groups is None and res.local is None and res.data is None


def test_inputs_are_copied():
    sky = np.array(SKY)
    valid = np.array(VALID)
    res = _result(sky=sky, valid=valid)
    sky[0] = 99.0
    valid[0] = False
    assert res.sky[0] == 0.0 and res.valid[0]


def test_to_table():
    local = np.array([100.0, 120.0, 105.0, 110.0, 95.0, 90.0, 100.0, 50.0])
    res = _result(local=local)
    t = res.to_table()
    assert t.colnames == [
        "index", "name", "group", "sky", "valid", "component", "method", "subtracted",
        "local", "sky_err",
    ]
    assert len(t) == 8
    assert_array_equal(t["index"], np.arange(8))
    assert list(t["name"]) == NAMES
    assert_array_equal(t["group"], np.arange(8))  # ungrouped: each image its own group
    assert_array_equal(t["sky"], SKY)
    assert_array_equal(t["valid"], VALID)
    assert_array_equal(t["component"], [1, 1, 1, 1, 0, 0, 0, -1])
    assert set(t["method"]) == {"match"}
    assert not np.any(t["subtracted"])
    assert_array_equal(t["local"], local)
    for name in ("index", "group", "component"):  # counts and indices are integers
        assert t[name].dtype == np.int64, name
    assert t["valid"].dtype == bool and t["subtracted"].dtype == bool
    assert t["sky"].dtype == np.float64 and t["local"].dtype == np.float64
    assert t["sky_err"].dtype == np.float64 and np.all(np.isnan(t["sky_err"]))  # none given
    assert t.meta == {"BKGMETH": "match", "BKGSUB": False}
    assert all(t[name].description for name in t.colnames)


def test_to_table_with_groups_and_without_names():
    groups = np.array(["g0", "g0", "g1", "g1", "g2", "g2", "g3", "g4"])
    res = _result(names=None, groups=groups, method="global+match", subtracted=True)
    t = res.to_table()
    # the same columns without local skies: NaN where not measured
    assert t.colnames == [
        "index", "name", "group", "sky", "valid", "component", "method", "subtracted",
        "local", "sky_err",
    ]
    assert t["local"].dtype == np.float64 and np.all(np.isnan(t["local"]))
    assert t["name"].tolist() == [f"image {k}" for k in range(8)]  # no names: "image k"
    assert list(t["group"]) == list(groups)
    assert set(t["method"]) == {"global+match"}
    assert np.all(t["subtracted"])
    assert t.meta == {"BKGMETH": "global+match", "BKGSUB": True}


def test_to_table_local_nan_where_not_computed_and_object_groups():
    local = np.array([100.0, np.nan, 105.0, 110.0, 95.0, 90.0, 100.0, np.nan])
    groups = np.array([0, 0, "b", "b", 2, 2, 3, 4], dtype=object)
    t = _result(local=local, groups=groups).to_table()
    assert_array_equal(t["local"], local)  # NaN kept where the local sky failed
    assert t["group"].tolist() == ["0", "0", "b", "b", "2", "2", "3", "4"]


def test_to_table_of_a_real_run():
    m = synthetic.tile_grid(1, 3, shape=(64, 64), seed=1)
    res = match_sky(m.data, m.wcs, method="global+match")
    t = res.to_table()
    assert t["name"].tolist() == ["image 0", "image 1", "image 2"]
    assert np.all(np.isfinite(res.local))
    assert_array_equal(t["local"], res.local)
    assert_array_equal(t["sky"], res.sky)
    assert t["index"].dtype == np.int64 and t["component"].tolist() == [0, 0, 0]
    assert len(res.pairs) == 2
    for name in ("npix_i", "npix_j"):
        assert res.pairs[name].dtype == np.int64 and np.all(res.pairs[name] > 0)
    # match measures overlaps only: the local column is there, all NaN
    t = match_sky(m.data, m.wcs, method="match").to_table()
    assert np.all(np.isnan(t["local"]))
    named = match_sky(m.data, m.wcs, method="match", names=["a", "b", "c"]).to_table()
    assert named["name"].tolist() == ["a", "b", "c"]


def test_keywords_valid_image():
    res = _result()
    kw = res.keywords(4)
    assert kw == {"BKGLEVEL": 8.75, "BKGMETH": "match", "BKGSUB": False}
    assert type(kw["BKGLEVEL"]) is float and type(kw["BKGSUB"]) is bool
    assert res.keywords(-2) == {"BKGLEVEL": 13.75, "BKGMETH": "match", "BKGSUB": False}
    assert res.keywords(np.int64(1))["BKGLEVEL"] == 20.0


def test_keywords_invalid_image_touches_nothing():
    res = _result()
    assert res.keywords(7) == {}
    assert res.keywords(-1) == {}
    header = {"BKGLEVEL": 3.0}
    header.update(res.keywords(7))
    assert header == {"BKGLEVEL": 3.0}


def test_keywords_out_of_range():
    res = _result()
    with pytest.raises(IndexError, match="out of range"):
        res.keywords(8)
    with pytest.raises(IndexError):
        res.keywords(-9)
    with pytest.raises(TypeError):
        res.keywords(1.0)


def test_repr_small():
    r = repr(_result())
    assert r == (
        "<SkyResult method='match' subtracted=False images=8 valid=7 components=2 "
        "pairs=2 sky=[0, 20, 5, ..., 3.75, 13.75, 0]>"
    )
    r3 = repr(_result(sky=[1.5, 2.0], valid=np.array([True, True]), components=[[0, 1]],
                      names=None))
    assert r3.endswith("images=2 valid=2 components=1 pairs=2 sky=[1.5, 2]>")


def test_repr_short_for_many_images():
    n = 5000
    sky = np.linspace(0.0, 1.0, n)
    res = SkyResult(sky=sky, method="global", subtracted=True, valid=np.ones(n, bool),
                    names=[f"image_{k}.fits" for k in range(n)])
    r = repr(res)
    assert len(r) < 200
    assert r == (
        "<SkyResult method='global' subtracted=True images=5000 valid=5000 components=0 "
        "pairs=0 sky=[0, 0.00020004, 0.00040008, ..., 0.9996, 0.9998, 1]>"
    )


def test_defaults():
    res = SkyResult(sky=[1.0], method="local", subtracted=False, valid=np.array([True]))
    assert res.components == []
    assert isinstance(res.pairs, Table) and len(res.pairs) == 0
    assert res.pairs.colnames == [name for name, _ in PAIR_COLUMNS]


def test_methods():
    assert METHODS == ("local", "global", "match", "global+match", "user")
    for m in METHODS:
        assert SkyResult(sky=[0.0], method=m, subtracted=False, valid=np.array([True])).method == m


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"sky": [[0.0] * 8]}, ValueError, "'sky' must be 1-D"),
        ({"sky": [np.nan, *SKY[1:]]}, ValueError, "'sky' must be finite"),
        ({"method": "median"}, ValueError, "'method' must be one of"),
        ({"valid": np.array(VALID[:-1])}, ValueError, "'valid' has 7 entries, expected 8"),
        ({"valid": np.array([1] * 8)}, ValueError, "'valid' must be a 1-D array of booleans"),
        ({"components": [[0, 8]]}, ValueError, "component 0 holds image indices outside"),
        ({"components": [[-1]]}, ValueError, "outside"),
        ({"components": [[0, 1], [1, 2]]}, ValueError, "component 1 repeats"),
        ({"components": [[0, 0]]}, ValueError, "component 0 repeats"),
        ({"pairs": Table({"i": [0]})}, ValueError, "'pairs' lacks the column"),
        ({"pairs": {"i": [0]}}, ValueError, "'pairs' must be an astropy Table"),
        ({"names": NAMES[:3]}, ValueError, "'names' has 3 entries, expected 8"),
        ({"names": "abcdefgh"}, ValueError, "not one str"),
        ({"groups": np.zeros(9)}, ValueError, "'groups' has 9 entries"),
        ({"groups": np.zeros((8, 1))}, ValueError, "'groups' must be 1-D"),
        ({"local": np.zeros(3)}, ValueError, "'local' has 3 entries"),
        ({"data": [np.zeros((2, 2))]}, ValueError, "'data' has 1 entries"),
    ],
)
def test_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        _result(**kwargs)


def test_data_and_local_kept():
    data = [np.full((2, 2), k, dtype=np.float32) for k in range(8)]
    local = np.arange(8.0)
    local[3] = np.nan
    res = _result(data=data, local=local, subtracted=True)
    assert res.data[5] is data[5]
    assert np.isnan(res.local[3]) and res.local[2] == 2.0
    assert res.keywords(0)["BKGSUB"] is True


def test_footprints_field_optional_and_checked():
    from skyeq import SkyResult

    square = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
    base = dict(sky=[0.0, 1.0], method="match", subtracted=False, valid=[True, True])
    assert SkyResult(**base).footprints is None
    res = SkyResult(**base, footprints=[square, square])
    assert [fp.shape for fp in res.footprints] == [(4, 2), (4, 2)]
    assert "footprint" not in repr(res) and "footprint" not in res.to_table().colnames
    with pytest.raises(ValueError, match="'footprints' has 1 entries"):
        SkyResult(**base, footprints=[square])
    with pytest.raises(ValueError, match=r"\(m, 2\)"):
        SkyResult(**base, footprints=[square, square[:2]])
    with pytest.raises(ValueError, match="non-finite"):
        SkyResult(**base, footprints=[square, [[0, 0], [1, np.nan], [1, 1]]])
