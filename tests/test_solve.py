"""Tests of the pairwise match solver: the match equations (skyeq._methods) and skyeq.solve."""

import logging
import math
import time
from fractions import Fraction

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from skyeq._methods import combine_global_match, solve_match
from skyeq.solve import _AccurateLaplacianFactor, _scatter_pairs

# --------------------------------------------------------------------------------------
# helpers


def _constant_sky_pairs(sky, overlaps):
    """Pair arrays for constant-sky images: each side of a pair measures its own sky.

    ``overlaps`` is a list of (i, j, npix_i, npix_j); npix 0 marks a candidate pair
    whose footprints do not actually overlap (the measurement then fails: NaN sky).
    """
    sky = np.asarray(sky, dtype=float)
    i = np.array([o[0] for o in overlaps])
    j = np.array([o[1] for o in overlaps])
    ni = np.array([o[2] for o in overlaps], dtype=float)
    nj = np.array([o[3] for o in overlaps], dtype=float)
    si = np.where(ni > 0, sky[i], np.nan)
    sj = np.where(nj > 0, sky[j], np.nan)
    return i, j, si, sj, ni, nj


# Table 1 of the skymatch documentation: a 2x3 mosaic (row-major, images 0 1 2 / 3 4 5)
# of 2048x2048 tiles, each overlapping its immediate neighbours: long strips between
# horizontal and vertical neighbours, small corners between diagonal ones. The two sides
# of a pair keep slightly different pixel counts (each uses its own mask).
TABLE1_SKY = [100.0, 120.0, 105.0, 110.0, 105.0, 115.0]
TABLE1_OVERLAPS = [
    (0, 1, 245760, 245701),
    (1, 2, 245760, 245760),
    (3, 4, 245760, 245533),
    (4, 5, 245600, 245760),
    (0, 3, 163840, 163840),
    (1, 4, 163840, 163790),
    (2, 5, 163811, 163840),
    (0, 4, 9600, 9580),
    (1, 3, 9600, 9600),
    (1, 5, 9598, 9600),
    (2, 4, 9600, 9600),
    # candidate pairs whose footprints do not overlap
    (0, 2, 0, 0),
    (3, 5, 0, 0),
]

# Table 2: a 2x2 mosaic (0 1 / 2 3) whose tiles all touch (sides and corners) and a
# separate chain of three images (4-5-6) that never overlaps the first mosaic.
TABLE2_SKY = [100.0, 120.0, 105.0, 110.0, 95.0, 90.0, 100.0]
TABLE2_OVERLAPS = [
    (0, 1, 300000, 299000),
    (2, 3, 300000, 300000),
    (0, 2, 200000, 200000),
    (1, 3, 199000, 200000),
    (0, 3, 12000, 12000),
    (1, 2, 12000, 11900),
    (4, 5, 500000, 500000),
    (5, 6, 40000, 39000),
    # candidates between the two mosaics: no common pixels
    (3, 4, 0, 0),
    (1, 6, 0, 0),
]


def _pinv_reference(n, i, j, si, sj, ni, nj, match_down=True):
    """The reference algorithm: dense K, pinv(rcond=1e-12), NaN columns, min/max shift."""
    used = (ni > 0) & (nj > 0) & np.isfinite(si) & np.isfinite(sj)
    rows = np.flatnonzero(used)
    k = np.zeros((rows.size, n))
    f = np.zeros(rows.size)
    for r, p in enumerate(rows):
        wm = 0.5 * (ni[p] + nj[p])
        k[r, i[p]] = wm
        k[r, j[p]] = -wm
        f[r] = wm * (si[p] - sj[p])
    d = np.linalg.pinv(k, rcond=1e-12) @ f
    d[~np.any(k != 0, axis=0)] = np.nan
    return d - (np.nanmin(d) if match_down else np.nanmax(d))


def _exact_centred(n, i, j, si, sj, ni, nj):
    """Exact minimum-norm solution (rational arithmetic) of a CONNECTED system."""
    used = (ni > 0) & (nj > 0) & np.isfinite(si) & np.isfinite(sj)
    lap = [[Fraction(0)] * n for _ in range(n)]
    rhs = [Fraction(0)] * n
    for p in np.flatnonzero(used):
        a, b = int(i[p]), int(j[p])
        c = ((Fraction(ni[p]) + Fraction(nj[p])) / 2) ** 2
        d = Fraction(si[p]) - Fraction(sj[p])
        lap[a][a] += c
        lap[b][b] += c
        lap[a][b] -= c
        lap[b][a] -= c
        rhs[a] += c * d
        rhs[b] -= c * d
    # Replace the first (redundant) equation by sum(d) = 0: the minimum-norm solution.
    lap[0] = [Fraction(1)] * n
    rhs[0] = Fraction(0)
    m = [[*row, r] for row, r in zip(lap, rhs, strict=True)]
    for col in range(n):
        piv = next(r for r in range(col, n) if m[r][col] != 0)
        m[col], m[piv] = m[piv], m[col]
        for r in range(n):
            if r != col and m[r][col] != 0:
                fac = m[r][col] / m[col][col]
                m[r] = [x - fac * y for x, y in zip(m[r], m[col], strict=True)]
    return np.array([float(m[r][n] / m[r][r]) for r in range(n)])


def _centred(delta, components):
    out = np.full(delta.shape, np.nan)
    for comp in components:
        out[comp] = delta[comp] - delta[comp].mean()
    return out


def _random_system(rng, sizes, nisolated, noise, wmax=4e6, extra=1.0):
    """Random graph: components of the given sizes (random tree + extra edges), isolated
    nodes, unusable candidate pairs; log-uniform pixel counts in [1, wmax]."""
    n = sum(sizes) + nisolated
    perm = rng.permutation(n)
    edges = []
    start = 0
    for size in sizes:
        nodes = perm[start : start + size]
        start += size
        for k in range(1, size):
            edges.append((nodes[k], nodes[rng.integers(0, k)]))
        for _ in range(int(extra * size)):
            a, b = rng.choice(nodes, 2, replace=False)
            edges.append((a, b))
    i = np.array([e[0] for e in edges])
    j = np.array([e[1] for e in edges])
    true = rng.uniform(80.0, 120.0, n)
    common = rng.uniform(0.0, 50.0, i.size)  # what both sides see in the overlap
    si = true[i] + common + rng.normal(0.0, noise, i.size)
    sj = true[j] + common + rng.normal(0.0, noise, i.size)
    ni = np.round(np.exp(rng.uniform(0.0, np.log(wmax), i.size)))
    nj = np.maximum(1.0, np.round(ni * rng.uniform(0.9, 1.1, i.size)))
    # unusable candidate pairs touching the isolated nodes and others
    lonely = perm[start:]
    for a in lonely:
        b = perm[rng.integers(0, start)] if start else (a + 1) % n
        i = np.append(i, a)
        j = np.append(j, b)
        si = np.append(si, np.nan)
        sj = np.append(sj, 100.0)
        ni = np.append(ni, 0.0)
        nj = np.append(nj, 10.0)
    return n, i, j, si, sj, ni, nj, true


def _grid_pairs(ny, nx):
    idx = np.arange(ny * nx).reshape(ny, nx)
    sides = [
        (idx[:, :-1], idx[:, 1:]),
        (idx[:-1, :], idx[1:, :]),
        (idx[:-1, :-1], idx[1:, 1:]),
        (idx[:-1, 1:], idx[1:, :-1]),
    ]
    i = np.concatenate([a.ravel() for a, _ in sides])
    j = np.concatenate([b.ravel() for _, b in sides])
    return i, j


# --------------------------------------------------------------------------------------
# the documentation's tables


def test_table1_match_and_global_match():
    i, j, si, sj, ni, nj = _constant_sky_pairs(TABLE1_SKY, TABLE1_OVERLAPS)
    sol = solve_match(6, i, j, si, sj, ni, nj)
    assert_allclose(sol.delta, [0, 20, 5, 10, 5, 15], rtol=0, atol=1e-9)
    assert sol.delta[0] == 0.0
    assert sol.reference == 0
    assert sol.valid.all()
    assert len(sol.components) == 1
    assert_array_equal(sol.components[0], np.arange(6))
    assert_array_equal(sol.used, [True] * 11 + [False] * 2)
    assert_allclose(sol.weight[:2], [245730.5, 245760.0], rtol=0, atol=0)
    assert_array_equal(sol.weight[11:], [0.0, 0.0])
    assert_allclose(sol.residual[:11], 0.0, rtol=0, atol=1e-9)
    assert np.isnan(sol.residual[11:]).all()
    gm = combine_global_match(TABLE1_SKY, sol.delta)
    assert_allclose(gm, [100, 120, 105, 110, 105, 115], rtol=0, atol=1e-9)


def test_table1_match_up():
    i, j, si, sj, ni, nj = _constant_sky_pairs(TABLE1_SKY, TABLE1_OVERLAPS)
    sol = solve_match(6, i, j, si, sj, ni, nj, match_down=False)
    assert_allclose(sol.delta, [-20, 0, -15, -10, -15, -5], rtol=0, atol=1e-9)
    assert sol.delta[1] == 0.0
    assert sol.reference == 1


def test_table2_match_and_global_match(caplog):
    i, j, si, sj, ni, nj = _constant_sky_pairs(TABLE2_SKY, TABLE2_OVERLAPS)
    with caplog.at_level(logging.WARNING, logger="skyeq.solve"):
        sol = solve_match(7, i, j, si, sj, ni, nj)
    assert_allclose(sol.delta, [0, 20, 5, 10, 8.75, 3.75, 13.75], rtol=0, atol=1e-9)
    assert [c.tolist() for c in sol.components] == [[0, 1, 2, 3], [4, 5, 6]]
    assert sol.valid.all()
    assert "2 disconnected components" in caplog.text
    gm = combine_global_match(TABLE2_SKY, sol.delta)
    assert_allclose(gm, [86.25, 106.25, 91.25, 96.25, 95, 90, 100], rtol=0, atol=1e-9)


def test_table2_match_up_global_match_unchanged():
    i, j, si, sj, ni, nj = _constant_sky_pairs(TABLE2_SKY, TABLE2_OVERLAPS)
    sol = solve_match(7, i, j, si, sj, ni, nj, match_down=False)
    expected = [-20, 0, -15, -10, -11.25, -16.25, -6.25]
    assert_allclose(sol.delta, expected, rtol=0, atol=1e-9)
    gm = combine_global_match(TABLE2_SKY, sol.delta)
    assert_allclose(gm, [86.25, 106.25, 91.25, 96.25, 95, 90, 100], rtol=0, atol=1e-9)


def test_table2_with_isolated_image(caplog):
    sky = [*TABLE2_SKY, 50.0]
    overlaps = [*TABLE2_OVERLAPS, (7, 0, 0, 0), (6, 7, 0, 0)]
    i, j, si, sj, ni, nj = _constant_sky_pairs(sky, overlaps)
    with caplog.at_level(logging.WARNING, logger="skyeq.solve"):
        sol = solve_match(8, i, j, si, sj, ni, nj)
    assert_allclose(sol.delta[:7], [0, 20, 5, 10, 8.75, 3.75, 13.75], rtol=0, atol=1e-9)
    assert np.isnan(sol.delta[7])
    assert_array_equal(sol.valid, [True] * 7 + [False])
    assert all(7 not in c for c in sol.components)
    assert "1 of 8 unknowns take part in no usable pair (indices 7)" in caplog.text
    gm = combine_global_match(sky, sol.delta)
    expected = [50, 70, 55, 60, 58.75, 53.75, 63.75, 50]
    assert_allclose(gm, expected, rtol=0, atol=1e-9)


# --------------------------------------------------------------------------------------
# agreement with the reference's dense pseudo-inverse and with exact arithmetic


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("match_down", [True, False])
def test_agrees_with_dense_pinv(seed, match_down):
    rng = np.random.default_rng(seed)
    n, i, j, si, sj, ni, nj, _ = _random_system(rng, [14, 9, 5, 2], 3, noise=0.1)
    sol = solve_match(n, i, j, si, sj, ni, nj, match_down=match_down)
    ref = _pinv_reference(n, i, j, si, sj, ni, nj, match_down=match_down)
    scale = np.nanmax(np.abs(np.concatenate([si, sj])))
    assert_array_equal(np.isnan(sol.delta), np.isnan(ref))
    assert np.isnan(sol.delta).sum() == 3
    assert len(sol.components) == 4
    # anchored (what the reference reports) and centred per component (before anchoring)
    assert_allclose(sol.delta, ref, rtol=0, atol=1e-9 * scale)
    centred = _centred(sol.delta, sol.components)
    assert_allclose(centred, _centred(ref, sol.components), rtol=0, atol=1e-9 * scale)
    assert sol.delta[sol.reference] == 0.0
    if match_down:
        assert np.nanmin(sol.delta) == 0.0
    else:
        assert np.nanmax(sol.delta) == 0.0


@pytest.mark.parametrize("seed", range(4))
def test_matches_exact_solution_noisy_random_graph(seed):
    # Noisy data and weights from 1 to 4e6: numpy's pinv is only good to ~1e-8 here,
    # so the solver is checked against exact rational arithmetic.
    rng = np.random.default_rng(100 + seed)
    n, i, j, si, sj, ni, nj, _ = _random_system(rng, [22], 0, noise=1.0)
    sol = solve_match(n, i, j, si, sj, ni, nj)
    exact = _exact_centred(n, i, j, si, sj, ni, nj)
    assert_allclose(_centred(sol.delta, sol.components), exact, rtol=0, atol=1e-12 * 170)


def _weak_bridge(rng, strong, weak, size=5):
    """Two complete clusters of strongly weighted pairs with inconsistent (noisy) data,
    joined by a single weakly weighted pair."""
    edges = [(b + p, b + q) for b in (0, size) for p in range(size) for q in range(p + 1, size)]
    edges.append((size - 1, size))
    i = np.array([e[0] for e in edges])
    j = np.array([e[1] for e in edges])
    true = rng.uniform(80.0, 120.0, 2 * size)
    si = true[i] + rng.normal(0.0, 3.0, i.size)
    sj = true[j] + rng.normal(0.0, 3.0, i.size)
    ni = np.round(strong * rng.uniform(0.5, 1.0, i.size))
    nj = ni - 1
    ni[-1] = nj[-1] = weak
    return 2 * size, i, j, si, sj, ni, nj


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("weak", [1.0, 30.0])
def test_weak_link_between_strong_clusters(seed, weak, caplog):
    rng = np.random.default_rng(seed)
    system = _weak_bridge(rng, 4e6, weak)
    with caplog.at_level(logging.DEBUG, logger="skyeq.solve"):
        sol = solve_match(*system)
    assert "SuperLU," in caplog.text
    exact = _exact_centred(*system)
    assert_allclose(_centred(sol.delta, sol.components), exact, rtol=0, atol=1e-13 * 120)


@pytest.mark.parametrize("seed", range(3))
def test_extreme_weights_use_the_fallback(seed, caplog):
    # Weights spanning 9 decades: SuperLU loses the weak link (its pivot cancels out);
    # the subtraction-free elimination takes over and stays accurate.
    rng = np.random.default_rng(seed)
    system = _weak_bridge(rng, 1e9, 1.0)
    with caplog.at_level(logging.DEBUG, logger="skyeq.solve"):
        sol = solve_match(*system)
    assert "subtraction-free elimination," in caplog.text
    assert "did not converge" not in caplog.text
    exact = _exact_centred(*system)
    assert_allclose(_centred(sol.delta, sol.components), exact, rtol=0, atol=1e-10 * 120)


def test_squared_weights():
    # Two measurements of the same pair: difference 0 with wm = 1 and 3 with wm = 2.
    # Least squares with squared weights: d0 - d1 = (1*0 + 4*3) / 5 = 2.4 (not 2.0).
    sol = solve_match(2, [0, 0], [1, 1], [10.0, 13.0], [10.0, 10.0], [1, 2], [1, 2])
    assert_allclose(sol.delta, [2.4, 0.0], rtol=0, atol=1e-12)
    assert_allclose(sol.weight, [1.0, 2.0], rtol=0, atol=0)
    assert_allclose(sol.residual, [-2.4, 0.6], rtol=0, atol=1e-12)


def test_weight_is_mean_pixel_count():
    sol = solve_match(3, [0, 1], [1, 2], [1.0, 2.0], [3.0, 4.0], [10, 7], [30, 8])
    assert_array_equal(sol.weight, [20.0, 7.5])
    # d0 - d1 = -2 and d1 - d2 = -2 exactly (a tree): deltas 0, 2, 4
    assert_allclose(sol.delta, [0.0, 2.0, 4.0], rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------
# recovery, edge cases


@pytest.mark.parametrize("scale", [1e-6, 1e-3, 1.0, 1e3, 1e6])
def test_recovery_across_scales(scale):
    rng = np.random.default_rng(7)
    gi, gj = _grid_pairs(6, 8)  # component 0: nodes 0..47
    ci = np.arange(48, 59)  # component 1: a chain 48..59
    i = np.concatenate([gi, ci])
    j = np.concatenate([gj, ci + 1])
    n = 61  # node 60 isolated
    true = scale * rng.uniform(0.0, 1.0, n)
    common = scale * rng.uniform(0.0, 5.0, i.size)
    ni = np.round(np.exp(rng.uniform(0.0, np.log(4e6), i.size)))
    sol = solve_match(n, i, j, true[i] + common, true[j] + common, ni, ni + 3)
    assert [c.size for c in sol.components] == [48, 12]
    assert np.isnan(sol.delta[60])
    for comp in sol.components:
        offset = sol.delta[comp] - true[comp]
        assert np.ptp(offset) <= 1e-12 * scale
    assert_allclose(sol.residual, 0.0, rtol=0, atol=1e-12 * scale)


def test_single_unknown(caplog):
    with caplog.at_level(logging.WARNING, logger="skyeq.solve"):
        sol = solve_match(1, [], [], [], [], [], [])
    assert np.isnan(sol.delta).all() and sol.delta.shape == (1,)
    assert_array_equal(sol.valid, [False])
    assert sol.components == []
    assert sol.reference == -1
    assert "1 of 1 unknowns take part in no usable pair" in caplog.text


def test_no_pairs_at_all():
    sol = solve_match(3, np.zeros(0, int), np.zeros(0, int), [], [], [], [])
    assert np.isnan(sol.delta).all() and sol.delta.shape == (3,)
    assert sol.used.shape == sol.weight.shape == sol.residual.shape == (0,)
    assert sol.components == []


def test_no_unknowns():
    sol = solve_match(0, [], [], [], [], [], [])
    assert sol.delta.shape == (0,) and sol.components == [] and sol.reference == -1


def test_two_images_not_overlapping(caplog):
    with caplog.at_level(logging.WARNING, logger="skyeq.solve"):
        sol = solve_match(2, [0], [1], [np.nan], [np.nan], [0], [0])
    assert_array_equal(sol.valid, [False, False])
    assert_array_equal(sol.used, [False])
    assert "2 of 2 unknowns" in caplog.text


def test_unusable_pairs_are_ignored():
    base_i, base_j = np.array([0, 1, 2, 0]), np.array([1, 2, 3, 2])
    sky = np.array([1.0, 4.0, 2.0, 8.0])
    rng = np.random.default_rng(3)
    noise = rng.normal(0, 0.5, (2, 4))
    si, sj = sky[base_i] + noise[0], sky[base_j] + noise[1]
    npx = np.array([100.0, 50.0, 80.0, 30.0])
    good = solve_match(4, base_i, base_j, si, sj, npx, npx)
    # add pairs that must be ignored: npix 0 on either side, negative, NaN / inf sky,
    # NaN npix
    bad_i = np.array([0, 1, 3, 0, 2, 1])
    bad_j = np.array([3, 3, 1, 1, 0, 3])
    bad_si = np.array([5.0, 5.0, np.nan, np.inf, 1.0, 1.0])
    bad_sj = np.array([1.0, 1.0, 1.0, 1.0, -np.inf, 1.0])
    bad_ni = np.array([0.0, 10.0, 10.0, 10.0, 10.0, np.nan])
    bad_nj = np.array([10.0, -5.0, 10.0, 10.0, 10.0, 10.0])
    sol = solve_match(
        4,
        np.concatenate([bad_i, base_i]),
        np.concatenate([bad_j, base_j]),
        np.concatenate([bad_si, si]),
        np.concatenate([bad_sj, sj]),
        np.concatenate([bad_ni, npx]),
        np.concatenate([bad_nj, npx]),
    )
    assert_array_equal(sol.used, [False] * 6 + [True] * 4)
    assert_array_equal(sol.weight[:6], 0.0)
    assert np.isnan(sol.residual[:6]).all()
    assert_allclose(sol.delta, good.delta, rtol=0, atol=1e-13)
    assert_allclose(sol.residual[6:], good.residual, rtol=0, atol=1e-13)


def test_pair_order_and_orientation_do_not_matter():
    rng = np.random.default_rng(11)
    n, i, j, si, sj, ni, nj, _ = _random_system(rng, [12, 6], 1, noise=0.5)
    sol = solve_match(n, i, j, si, sj, ni, nj)
    perm = rng.permutation(i.size)
    flip = rng.uniform(size=i.size) < 0.5
    i2 = np.where(flip, j, i)[perm]
    j2 = np.where(flip, i, j)[perm]
    si2 = np.where(flip, sj, si)[perm]
    sj2 = np.where(flip, si, sj)[perm]
    ni2 = np.where(flip, nj, ni)[perm]
    nj2 = np.where(flip, ni, nj)[perm]
    sol2 = solve_match(n, i2, j2, si2, sj2, ni2, nj2)
    assert_allclose(sol2.delta, sol.delta, rtol=0, atol=1e-11)
    res = np.where(flip, -sol.residual, sol.residual)[perm]
    assert_allclose(sol2.residual, res, rtol=0, atol=1e-11)


def test_components_ordered_by_smallest_member(caplog):
    i = [5, 7, 4]
    j = [2, 0, 3]
    with caplog.at_level(logging.WARNING, logger="skyeq.solve"):
        sol = solve_match(8, i, j, [1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [1, 1, 1], [1, 1, 1])
    assert [c.tolist() for c in sol.components] == [[0, 7], [2, 5], [3, 4]]
    assert all(c.dtype == np.intp for c in sol.components)
    assert "3 disconnected components" in caplog.text
    assert "2 of 8 unknowns take part in no usable pair (indices 1, 6)" in caplog.text
    # each component centred on zero, then all shifted by the global minimum (-1.5)
    assert_allclose(sol.delta[[0, 7]], [0.5, 2.5], rtol=0, atol=1e-12)  # -1, 1
    assert_allclose(sol.delta[[2, 5]], [1.0, 2.0], rtol=0, atol=1e-12)  # -0.5, 0.5
    assert_allclose(sol.delta[[3, 4]], [0.0, 3.0], rtol=0, atol=1e-12)  # -1.5, 1.5
    assert sol.reference == 3


def test_large_grid_is_fast_and_optimal():
    ny, nx = 50, 100  # 5000 unknowns, ~20000 pairs
    n = ny * nx
    i, j = _grid_pairs(ny, nx)
    rng = np.random.default_rng(5)
    true = rng.uniform(0.0, 100.0, n)
    ni = np.round(np.exp(rng.uniform(0.0, np.log(4e6), i.size)))
    t0 = time.perf_counter()
    sol = solve_match(n, i, j, true[i], true[j], ni, ni)
    elapsed = time.perf_counter() - t0
    assert elapsed < 5.0  # a few tens of ms in practice; see benchmarks for figures
    assert len(sol.components) == 1 and sol.valid.all()
    assert np.ptp(sol.delta - true) < 1e-10  # consistent data: exact recovery
    # noisy data: least-squares optimality, the weighted residuals balance at every
    # unknown (normalised by its weighted degree: an equivalent error in delta)
    si = true[i] + rng.normal(0.0, 0.2, i.size)
    sj = true[j] + rng.normal(0.0, 0.2, i.size)
    sol = solve_match(n, i, j, si, sj, ni, ni)
    c = sol.weight**2
    grad = np.bincount(i, c * sol.residual, minlength=n)
    grad -= np.bincount(j, c * sol.residual, minlength=n)
    wdeg = np.bincount(i, c, minlength=n) + np.bincount(j, c, minlength=n)
    assert np.max(np.abs(grad) / wdeg) < 1e-11


def test_long_chain():
    n = 5000
    rng = np.random.default_rng(9)
    true = rng.uniform(0.0, 100.0, n)
    i = np.arange(n - 1)
    sol = solve_match(n, i, i + 1, true[i], true[i + 1], np.full(n - 1, 1e3), np.full(n - 1, 1e3))
    offset = sol.delta - true
    assert np.ptp(offset) < 1e-10
    assert sol.delta.min() == 0.0 == sol.delta[sol.reference]


# --------------------------------------------------------------------------------------
# input validation


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": -1}, "'n' must be >= 0"),
        ({"i": [0, 5]}, "'i' holds indices outside"),
        ({"j": [1, -1]}, "'j' holds indices outside"),
        ({"i": [0.0, 1.0]}, "integer indices"),
        ({"i": [[0, 1]]}, "'i' must be 1-D"),
        ({"j": [1]}, "'j' has 1 values, expected 2"),
        ({"sky_i": [1.0]}, "'sky_i' has 1 values"),
        ({"npix_j": [1.0, 2.0, 3.0]}, "'npix_j' has 3 values"),
        ({"i": [0, 2], "j": [1, 2]}, "i == j"),
        ({"n": 0}, "outside"),
    ],
)
def test_invalid_input(kwargs, match):
    args = {
        "n": 3,
        "i": [0, 1],
        "j": [1, 2],
        "sky_i": [1.0, 2.0],
        "sky_j": [2.0, 3.0],
        "npix_i": [10, 10],
        "npix_j": [10, 10],
    }
    args.update(kwargs)
    n = args.pop("n")
    with pytest.raises(ValueError, match=match):
        solve_match(n, **args)


# --------------------------------------------------------------------------------------
# global+match combination


def test_combine_global_match_definition():
    local = np.array([10.0, 30.0, np.nan, 5.0])
    delta = np.array([0.0, 15.0, 4.0, np.nan])
    # baseline = min(10 - 0, 30 - 15, (nan), 5 - 0) = 5 -> sky = delta (0 for NaN) + 5
    assert_allclose(combine_global_match(local, delta), [5.0, 20.0, 9.0, 5.0], rtol=0, atol=0)
    # with all deltas valid, independent of their reference
    full = np.array([0.0, 15.0, 4.0, 1.0])
    expected = combine_global_match(local, full)
    assert_allclose(expected, [4.0, 19.0, 8.0, 5.0], rtol=0, atol=0)
    assert_allclose(combine_global_match(local, full - 7.0), expected, rtol=0, atol=1e-12)


def test_table2_isolated_global_match_depends_on_match_down():
    # With an isolated image (delta invalid, counted as 0) the reference's global+match
    # is NOT independent of match_down. Values checked with stcal 1.20.0 skymatch().
    sky = [*TABLE2_SKY, 50.0]
    i, j, si, sj, ni, nj = _constant_sky_pairs(sky, TABLE2_OVERLAPS)
    sol = solve_match(8, i, j, si, sj, ni, nj, match_down=False)
    gm = combine_global_match(sky, sol.delta)
    assert_allclose(gm, [30, 50, 35, 40, 38.75, 33.75, 43.75, 50], rtol=0, atol=1e-9)


def test_combine_global_match_no_baseline():
    out = combine_global_match([np.nan, np.nan], [0.0, 1.0])
    assert out.shape == (2,) and np.isnan(out).all()


def test_combine_global_match_shape_error():
    with pytest.raises(ValueError, match="same length"):
        combine_global_match([1.0, 2.0], [0.0])


# --------------------------------------------------------------------------------------
# private pieces


def test_scatter_pairs_is_exact_under_cancellation():
    rng = np.random.default_rng(2)
    n = 30
    i = rng.integers(0, n, 400)
    j = (i + rng.integers(1, n, 400)) % n
    # huge terms that cancel plus tiny ones
    big = rng.choice([-1.0, 1.0], 400) * rng.uniform(1e11, 1e12, 400)
    value = np.concatenate([big, -big, rng.normal(0.0, 1e-3, 400)])
    order = rng.permutation(1200)
    value = value[order]
    ii = np.concatenate([i, i, i])[order]
    jj = np.concatenate([j, j, j])[order]
    got = _scatter_pairs(n, ii, jj, value)
    naive = np.bincount(ii, value, minlength=n) - np.bincount(jj, value, minlength=n)
    eps = np.finfo(float).eps
    naive_error = 0.0
    for k in range(n):
        terms = [*value[ii == k], *(-value[jj == k])]
        exact = math.fsum(terms)
        # one rounding of the exact sum plus the rounding of the k low parts (each below
        # 4 eps * sum|terms|, summed naively): 4 k**2 eps**2 sum|terms|
        total = math.fsum(abs(t) for t in terms)
        bound = eps * abs(exact) + 4 * len(terms) ** 2 * eps**2 * total
        assert abs(got[k] - exact) <= bound
        naive_error = max(naive_error, abs(naive[k] - exact))
    assert naive_error > 1e-6  # plain summation loses the small terms entirely


def test_accurate_factor_solves_grounded_laplacian():
    rng = np.random.default_rng(4)
    nf = 40
    ia, ja = [], []
    for k in range(1, nf):
        ia.append(k)
        ja.append(int(rng.integers(0, k)))
    for _ in range(60):
        a, b = rng.choice(nf, 2, replace=False)
        ia.append(int(a))
        ja.append(int(b))
    ia, ja = np.array(ia), np.array(ja)
    c = np.exp(rng.uniform(-5, 0, ia.size))
    ground = np.zeros(nf)
    ground[[0, 17]] = [0.3, 0.01]
    lap = np.diag(ground)
    np.add.at(lap, (ia, ia), c)
    np.add.at(lap, (ja, ja), c)
    np.add.at(lap, (ia, ja), -c)
    np.add.at(lap, (ja, ia), -c)
    rhs = rng.normal(size=nf)
    factor = _AccurateLaplacianFactor(nf, ia, ja, c, ground)
    assert_allclose(factor.solve(rhs), np.linalg.solve(lap, rhs), rtol=1e-10, atol=0)


# --------------------------------------------------------------------------------------
# parity with the reference implementation


def _stcal_constant_mosaic(skies, origins, method, match_down):
    """Run stcal's skymatch() on 40x40 constant images at the given pixel origins."""
    stcal_skymatch = pytest.importorskip("stcal.skymatch")
    from astropy.wcs import WCS
    from stcal.skymatch.skymatch import skymatch

    images = []
    for k, ((x0, y0), sky) in enumerate(zip(origins, skies, strict=True)):
        w = WCS(naxis=2)
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        w.wcs.crval = [10.0, 0.0]
        w.wcs.crpix = [1 - x0, 1 - y0]
        w.wcs.cdelt = [-1 / 3600, 1 / 3600]

        def fwd(x, y, w=w, **_):
            return w.all_pix2world(x, y, 0)

        def inv(ra, dec, w=w, **_):
            return w.all_world2pix(ra, dec, 0)

        images.append(
            stcal_skymatch.SkyImage(
                np.full((40, 40), sky, dtype=np.float32), np.ones((40, 40), bool), fwd, inv,
                stcal_skymatch.SkyStats("median", nclip=0), sky_id=k,
            )
        )
    skymatch(images, skymethod=method, match_down=match_down, subtract=False)
    return np.array([im.sky for im in images], float), np.array([im.is_sky_valid for im in images])


@pytest.mark.parametrize("match_down", [True, False])
def test_parity_with_stcal_table2_plus_isolated(match_down):
    # 2x2 tiles stepping 30 px (sides and corners overlap), a chain of 3, one isolated.
    origins = [(0, 0), (30, 0), (0, 30), (30, 30), (300, 0), (330, 0), (360, 0), (1000, 1000)]
    skies = [*TABLE2_SKY, 50.0]
    sky_match, valid_match = _stcal_constant_mosaic(skies, origins, "match", match_down)
    sky_gm, valid_gm = _stcal_constant_mosaic(skies, origins, "global+match", match_down)
    overlaps = [(0, 1), (2, 3), (0, 2), (1, 3), (0, 3), (1, 2), (4, 5), (5, 6)]
    i, j, si, sj, ni, nj = _constant_sky_pairs(skies, [(a, b, 400, 400) for a, b in overlaps])
    sol = solve_match(8, i, j, si, sj, ni, nj, match_down=match_down)
    assert_array_equal(sol.valid, valid_match)
    assert_allclose(np.where(sol.valid, sol.delta, 0.0), sky_match, rtol=0, atol=1e-9)
    assert valid_gm.all()
    assert_allclose(combine_global_match(skies, sol.delta), sky_gm, rtol=0, atol=1e-9)
