"""`SkyResult.sky_err`: standard errors of the skies from the pixels' scatter (#16)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from skyeq import SkyResult, SkyStat, match_sky, synthetic


def _pulls(stat: str, trials: int) -> np.ndarray:
    """(solved - true relative sky) / sky_err over seeded noise-only 2x3 mosaics."""
    pulls = []
    for seed in range(trials):
        m = synthetic.tile_grid(2, 3, shape=(64, 64), overlap=0.2, noise=1.0, seed=seed,
                                point_sources=0, extended_sources=0)
        res = match_sky(m.data, m.wcs, method="match", stat=SkyStat(stat, nclip=5))
        ref = int(np.flatnonzero(res.sky == 0.0)[0])
        assert res.sky_err[ref] == 0.0 and np.all(res.sky_err[np.arange(6) != ref] > 0)
        truth = np.asarray(m.sky, dtype=float)
        other = np.arange(len(truth)) != ref
        d = res.sky - (truth - truth[ref])
        pulls.extend(d[other] / res.sky_err[other])
    return np.array(pulls)


@pytest.mark.parametrize("stat", ["mean", "median"])
def test_the_errors_are_calibrated(stat):
    # 200 seeded mosaics x 5 non-reference images: the pulls have unit spread
    pulls = _pulls(stat, 200)
    assert 0.8 < pulls.std() < 1.2, pulls.std()
    # unbiased: the pulls of one mosaic share its reference, so the trials (not the
    # pulls) are independent: within 3 standard errors of the mean over 200 trials
    assert abs(pulls.mean()) < 3 * pulls.std() / np.sqrt(200)


def test_the_gauge_follows_the_reference_and_the_anchor():
    m = synthetic.constant_mosaic([100.0, 120.0, 105.0, 110.0, 95.0, 90.0, 100.0],
                                  layout=[(2, 2), (1, 3)])
    rng = np.random.default_rng(7)
    data = [d + rng.normal(0.0, 1.0, d.shape).astype(d.dtype) for d in m.data]
    for match_down in (True, False):
        res = match_sky(data, m.wcs, method="match", match_down=match_down)
        ref = int(np.flatnonzero(res.sky == 0.0)[0])
        first = res.component_id == res.component_id[ref]
        assert res.sky_err[ref] == 0.0
        assert np.all(res.sky_err[first & (np.arange(7) != ref)] > 0)
        assert np.all(np.isnan(res.sky_err[~first]))  # not tied to the reference
    res = match_sky(data, m.wcs, method="match", anchor="component")
    assert np.count_nonzero(res.sky_err == 0.0) == 2  # one reference per component
    assert np.all(np.isfinite(res.sky_err))


def test_local_global_and_the_methods_without_an_error_law():
    m = synthetic.tile_grid(1, 3, shape=(50, 60), overlap=0.2, noise=2.0, seed=3,
                            point_sources=0, extended_sources=0)
    st = SkyStat("median", nclip=0)  # no clipping: every finite pixel counts
    local = match_sky(m.data, m.wcs, method="local", stat=st)
    for k, img in enumerate(m.data):
        good = img[np.isfinite(img)].astype(float)
        assert st(img).npix == good.size
        assert local.sky_err[k] == pytest.approx(math.sqrt(math.pi / 2 * good.var(ddof=1)
                                                           / good.size), rel=1e-6)
    glob = match_sky(m.data, m.wcs, method="global", stat=st)
    low = int(np.argmin(local.sky))
    np.testing.assert_allclose(glob.sky_err, local.sky_err[low])
    for method, stat in (("global+match", "median"), ("match", "mode")):
        res = match_sky(m.data, m.wcs, method=method, stat=stat)
        assert np.all(np.isnan(res.sky_err)), (method, stat)


def test_the_table_has_the_errors_and_they_are_validated():
    res = SkyResult(sky=[0.0, 1.0], method="match", subtracted=False, valid=[True, True],
                    sky_err=[0.0, 0.25])
    assert res.to_table()["sky_err"].tolist() == [0.0, 0.25]
    assert np.isnan(SkyResult(sky=[0.0], method="local", subtracted=False,
                              valid=[True]).sky_err).all()
    for bad in ([-1.0, 0.0], [np.inf, 0.0], [0.0]):
        with pytest.raises(ValueError, match="sky_err"):
            SkyResult(sky=[0.0, 1.0], method="match", subtracted=False, valid=[True, True],
                      sky_err=bad)
