"""``robust=True``: contaminated overlaps are down-weighted (#16)."""

from __future__ import annotations

import numpy as np
import pytest

from skyeq import geometry, match_sky, synthetic


def _contaminated(fraction: float, seed: int):
    """A 6x6 mosaic of noise-only tiles where, in a few overlaps, one image carries a
    bright extended glow (+20 sigma, as scattered light would)."""
    m = synthetic.tile_grid(6, 6, shape=(64, 64), overlap=0.2, noise=1.0, seed=seed,
                            point_sources=0, extended_sources=0)
    fps = geometry.footprints(m.wcs, m.shapes)
    pairs, overlaps = geometry.find_overlaps(fps)
    rng = np.random.default_rng(seed)
    # edge overlaps (not the small corner ones): their own part is most of them
    edges = np.flatnonzero([ov.area > np.median([o.area for o in overlaps]) for ov in overlaps])
    bad = rng.choice(edges, round(fraction * len(pairs)), replace=False)
    for k in bad:
        # the glow covers the part of image i's overlap with j that no other overlap of
        # i shares, so that exactly this pair is contaminated
        i = int(pairs[k][0])
        glow = np.zeros(m.shapes[i], bool)
        for row, x0, x1 in geometry.overlap_spans(overlaps[k], m.wcs[i], m.shapes[i]):
            glow[row, x0 : x1 + 1] = True
        for q in np.flatnonzero((pairs == i).any(axis=1)):
            if q != k:
                for row, x0, x1 in geometry.overlap_spans(overlaps[q], m.wcs[i], m.shapes[i]):
                    glow[row, x0 : x1 + 1] = False
        assert glow.sum() > 300
        m.data[i][glow] += 20.0
    return m, {tuple(sorted(map(int, pairs[k]))) for k in bad}


def _rms(res, m) -> float:
    d = res.sky - np.asarray(m.sky, dtype=float)
    return float(np.sqrt(np.mean((d - d.mean()) ** 2)))


@pytest.mark.parametrize("seed", [1, 2])
def test_robust_recovers_the_skies_five_times_closer(seed):
    m, bad = _contaminated(0.05, seed)
    clean, none = _contaminated(0.0, seed)  # the same mosaic without the glows
    assert not none
    plain = match_sky(m.data, m.wcs, method="match")
    robust = match_sky(m.data, m.wcs, method="match", robust=True)
    assert _rms(robust, m) * 5 < _rms(plain, m), (_rms(robust, m), _rms(plain, m))
    # as close as the plain solve of the clean mosaic (its noise), within half again
    baseline = _rms(match_sky(clean.data, clean.wcs, method="match"), clean)
    assert _rms(robust, m) < 1.5 * baseline, (_rms(robust, m), baseline)
    # every contaminated pair is down-weighted, and few others
    t = robust.pairs
    low = {(int(a), int(b)) for a, b, w in zip(t["i"], t["j"], t["robust_weight"],
                                                 strict=True) if w < 0.5}
    assert bad <= low and len(low - bad) <= 2, (sorted(bad), sorted(low))
    assert np.all(plain.pairs["robust_weight"] == 1.0)


def test_robust_costs_little_without_outliers():
    m, bad = _contaminated(0.0, 3)
    assert not bad
    plain = match_sky(m.data, m.wcs, method="match")
    robust = match_sky(m.data, m.wcs, method="match", robust=True)
    assert _rms(robust, m) < 1.5 * _rms(plain, m), (_rms(robust, m), _rms(plain, m))
