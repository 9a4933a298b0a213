"""``anchor="component"``: every connected component referenced to its own image (#16)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from skyeq import match_sky, synthetic
from skyeq.solve import solve_offsets

# the docs' second table: a 2x2 mosaic and a row of three that do not overlap it
SKIES = [100.0, 120.0, 105.0, 110.0, 95.0, 90.0, 100.0]
LAYOUT = [(2, 2), (1, 3)]


@pytest.fixture(scope="module")
def disjoint():
    return synthetic.constant_mosaic(SKIES, layout=LAYOUT)


@pytest.mark.parametrize(("match_down", "expect"), [
    (True, [0.0, 20.0, 5.0, 10.0, 5.0, 0.0, 10.0]),
    (False, [-20.0, 0.0, -15.0, -10.0, -5.0, -10.0, 0.0]),
])
def test_match_references_each_component_to_its_own_image(disjoint, match_down, expect,
                                                           caplog):
    with caplog.at_level(logging.WARNING):
        res = match_sky(disjoint.data, disjoint.wcs, method="match", match_down=match_down,
                        anchor="component")
    np.testing.assert_allclose(res.sky, expect, rtol=0, atol=1e-9)
    assert res.valid.all()
    assert [c.tolist() for c in res.components] == [[0, 1, 2, 3], [4, 5, 6]]
    assert "not tied to each other" in caplog.text


def test_global_match_ties_each_component_to_its_own_lowest_sky(disjoint):
    # constant skies: each component's local - offset is the same for all its images,
    # so every image gets its own sky back; one global baseline (the default) instead
    # shifts the second mosaic by the difference of the two components' baselines
    res = match_sky(disjoint.data, disjoint.wcs, method="global+match", anchor="component")
    np.testing.assert_allclose(res.sky, SKIES, rtol=0, atol=1e-9)
    default = match_sky(disjoint.data, disjoint.wcs, method="global+match")
    assert not np.allclose(default.sky, SKIES, atol=1e-3)


@pytest.mark.parametrize("method", ["match", "global+match"])
def test_one_component_is_the_same_either_way(method):
    m = synthetic.tile_grid(2, 3, shape=(96, 96), overlap=0.15, seed=5)
    a = match_sky(m.data, m.wcs, method=method)
    b = match_sky(m.data, m.wcs, method=method, anchor="component")
    np.testing.assert_array_equal(a.sky, b.sky)
    np.testing.assert_array_equal(a.valid, b.valid)


def test_an_isolated_image_keeps_its_local_sky_in_global_match():
    # a third mosaic of one image: its own component of one, baseline its local sky
    m = synthetic.constant_mosaic([100.0, 110.0, 90.0, 130.0, 70.0], layout=[(2, 2), (1, 1)])
    res = match_sky(m.data, m.wcs, method="global+match", anchor="component")
    np.testing.assert_allclose(res.sky, [100.0, 110.0, 90.0, 130.0, 70.0], atol=1e-9)
    assert res.valid.all()


def test_solve_offsets_references_every_component():
    # components {0, 1, 2} and {3, 4}: each min is exactly 0; reference = the first one's
    sol = solve_offsets(5, row=[0, 0, 1, 1, 2, 2], index=[0, 1, 1, 2, 3, 4],
                        coef=[1.0, -1.0] * 3, value=[-20.0, 15.0, 7.0], weight=[1.0] * 3,
                        anchor="component")
    assert sol.x.tolist() == [0.0, 20.0, 5.0, 7.0, 0.0]
    assert sol.reference == 0
    glob = solve_offsets(5, row=[0, 0, 1, 1, 2, 2], index=[0, 1, 1, 2, 3, 4],
                         coef=[1.0, -1.0] * 3, value=[-20.0, 15.0, 7.0], weight=[1.0] * 3)
    assert glob.x[0] - glob.x[1] == -20.0 and glob.x[3] - glob.x[4] == 7.0
    assert np.nanmin(glob.x) == 0.0 and np.count_nonzero(glob.x == 0.0) == 1


@pytest.mark.parametrize("bad", ["local", "Component", None, 1])
def test_an_unknown_anchor_is_refused(disjoint, bad):
    with pytest.raises(ValueError, match="anchor must be one of 'global', 'component'"):
        match_sky(disjoint.data, disjoint.wcs, anchor=bad)
