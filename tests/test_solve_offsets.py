"""The general solver `skyeq.solve.solve_offsets`: sparse triplets in, unknowns out."""

import doctest
import logging

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from skyeq import solve
from skyeq._methods import solve_match
from skyeq.solve import solve_offsets


def _differences(i, j, value, weight):
    """Triplets of the equations x_i - x_j = value."""
    i, j = np.asarray(i), np.asarray(j)
    return dict(
        row=np.repeat(np.arange(i.size), 2),
        index=np.column_stack([i, j]).ravel(),
        coef=np.tile([1.0, -1.0], i.size),
        value=np.asarray(value, dtype=float),
        weight=np.asarray(weight, dtype=float),
    )


def _dense_min_norm(n, row, index, coef, value, weight):
    """The minimum-norm weighted least-squares solution, densely (numpy's SVD)."""
    a = np.zeros((len(value), n))
    np.add.at(a, (row, index), coef)
    w = np.asarray(weight)
    return np.linalg.lstsq(a * w[:, None], np.asarray(value) * w, rcond=None)[0]


def test_the_docstring_example():
    assert doctest.testmod(solve, verbose=False).failed == 0


def test_a_difference_system_takes_the_laplacian_path_bit_identical_to_solve_match():
    rng = np.random.default_rng(3)
    n, m = 12, 40
    i = rng.integers(0, n, m)
    j = (i + rng.integers(1, n, m)) % n
    sky_i, sky_j = rng.normal(100, 3, m), rng.normal(100, 3, m)
    npix_i, npix_j = rng.integers(1, 10**6, m), rng.integers(1, 10**6, m)
    ref = solve_match(n, i, j, sky_i, sky_j, npix_i, npix_j, match_down=False)
    got = solve_offsets(n, **_differences(i, j, sky_i - sky_j, 0.5 * (npix_i + npix_j)),
                        match_down=False)
    assert got.difference
    assert_array_equal(got.x, ref.delta)
    assert_array_equal(got.residual, ref.residual)
    assert got.reference == ref.reference and got.x.max() == 0.0


def test_an_anchored_system_is_solved_exactly_by_the_general_path():
    # differences plus one absolute equation x_2 = 7: no null space left, so the
    # solution is the unique weighted least-squares one (not referenced)
    rng = np.random.default_rng(4)
    n = 6
    truth = rng.normal(0, 5, n)
    i, j = np.array([0, 1, 2, 3, 4, 0, 2]), np.array([1, 2, 3, 4, 5, 3, 5])
    eq = _differences(i, j, truth[i] - truth[j] + rng.normal(0, 0.01, i.size),
                      rng.uniform(1, 100, i.size))
    k = i.size
    eq["row"] = np.append(eq["row"], k)
    eq["index"] = np.append(eq["index"], 2)
    eq["coef"] = np.append(eq["coef"], 1.0)
    eq["value"] = np.append(eq["value"], truth[2])
    eq["weight"] = np.append(eq["weight"], 50.0)
    sol = solve_offsets(n, **eq)
    assert not sol.difference and sol.reference == -1
    assert_allclose(sol.x, _dense_min_norm(n, **eq), rtol=0, atol=1e-10)
    assert_allclose(sol.x, truth, atol=0.05)
    assert sol.used.all() and len(sol.components) == 1


def test_planes_are_recovered_up_to_a_common_plane():
    # a plane per image (a + b x + c y), pair differences sampled at a few points of
    # each overlap: the relative planes come back, and the solution is the minimum-norm
    # one (the common plane is a 3-dimensional null space)
    rng = np.random.default_rng(5)
    nimg = 5
    truth = rng.normal(0, [[2.0, 1e-3, 1e-3]], (nimg, 3))
    rows, index, coef, value = [], [], [], []
    k = 0
    for a in range(nimg):
        for b in range(a + 1, nimg):
            for x, y in rng.uniform(0, 2048, (4, 2)):
                basis = np.array([1.0, x, y])
                rows += [k] * 6
                index += [3 * a, 3 * a + 1, 3 * a + 2, 3 * b, 3 * b + 1, 3 * b + 2]
                coef += list(basis) + list(-basis)
                value.append(float((truth[a] - truth[b]) @ basis))
                k += 1
    eq = dict(row=np.array(rows), index=np.array(index), coef=np.array(coef),
              value=np.array(value), weight=np.ones(k))
    sol = solve_offsets(3 * nimg, **eq)
    assert not sol.difference
    planes = sol.x.reshape(nimg, 3)
    assert_allclose(planes - planes[0], truth - truth[0], rtol=0, atol=1e-8)
    assert_allclose(sol.x, _dense_min_norm(3 * nimg, **eq), rtol=0, atol=1e-8)
    assert_allclose(sol.residual, 0.0, atol=1e-8)


def test_unusable_equations_and_lonely_unknowns(caplog):
    eq = _differences([0, 1, 2, 3], [1, 2, 0, 4], [1.0, 2.0, -3.0, 5.0],
                      [1.0, 1.0, 1.0, 1.0])
    eq["value"][3] = np.nan  # unknowns 3 and 4 lose their only equation
    with caplog.at_level(logging.WARNING, logger="skyeq.solve"):
        sol = solve_offsets(6, **eq)
    assert sol.used.tolist() == [True, True, True, False]
    assert np.isnan(sol.residual[3]) and np.isnan(sol.x[3:]).all()
    assert_array_equal(sol.valid, [True, True, True, False, False, False])
    assert "3 of 6 unknowns take part in no usable pair (indices 3, 4, 5)" in caplog.text
    # a zero or negative weight, an infinite coefficient: not used either
    for key, pos, bad in (("weight", 0, 0.0), ("weight", 0, -2.0), ("coef", 1, np.inf)):
        eq2 = {k: v.copy() for k, v in eq.items()}
        eq2[key][pos] = bad
        assert not solve_offsets(6, **eq2).used[0]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"n": -1}, "'n' must be >= 0"),
        ({"row": [0, 0, 1, 2]}, "'row' holds indices outside"),
        ({"index": [0, 1, 1, 3]}, "'index' holds indices outside"),
        ({"coef": [1.0, -1.0, 1.0]}, "'coef' has 3 values, expected 4"),
        ({"index": [0, 1, 1]}, "'index' has 3 values, expected 4"),
        ({"weight": [1.0]}, "'weight' has 1 values, expected 2"),
        ({"row": [0.0, 0.0, 1.0, 1.0]}, "integer indices"),
    ],
)
def test_invalid_input(change, match):
    args = dict(n=3, **_differences([0, 1], [1, 2], [1.0, 2.0], [1.0, 1.0]))
    args.update(change)
    n = args.pop("n")
    with pytest.raises(ValueError, match=match):
        solve_offsets(n, **args)


def test_fixed_unknowns_give_the_least_squares_solution_of_the_others():
    # random sparse overdetermined system with a blind direction (x0 + x1 only)
    rng = np.random.default_rng(3)
    n, neq = 6, 20
    row = np.repeat(np.arange(neq), 3)
    index = np.concatenate([rng.choice(np.arange(2, n), 2, replace=False) for _ in range(neq)])
    index = np.column_stack((np.zeros(neq, int), index.reshape(neq, 2))).ravel()
    coef = rng.normal(size=row.size)
    coef[0::3] = 1.0  # x0 enters every equation only through x0 + x1 below
    row = np.concatenate((row, np.arange(neq)))
    index = np.concatenate((index, np.ones(neq, int)))
    coef = np.concatenate((coef, np.ones(neq)))
    value = rng.normal(size=neq) * 10
    weight = rng.uniform(0.5, 2.0, neq)
    sol = solve_offsets(n, row, index, coef, value, weight, fixed=[0])
    a = np.zeros((neq, n))
    np.add.at(a, (row, index), coef)
    expect = np.linalg.lstsq(a[:, 1:] * weight[:, None], value * weight, rcond=None)[0]
    assert sol.x[0] == 0.0
    np.testing.assert_allclose(sol.x[1:], expect, rtol=1e-12, atol=1e-12)


def test_fixed_unknowns_that_leave_a_blind_direction_fall_back_to_lsqr(caplog):
    # x0 + x1 = 3 twice: holding x2 (in no equation) leaves x0 - x1 blind
    with caplog.at_level(logging.WARNING, logger="skyeq.solve"):
        sol = solve_offsets(3, [0, 0, 1, 1], [0, 1, 0, 1], [1.0, 1.0, 1.0, 1.0], [3.0, 3.0],
                            [1.0, 1.0], fixed=[2])
    assert "undetermined" in caplog.text or "diverged" in caplog.text
    np.testing.assert_allclose(sol.x[:2], [1.5, 1.5], rtol=1e-12)  # LSQR's minimum norm
