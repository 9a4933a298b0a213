"""The sky methods: their names (`METHODS`), their skies, and the subtraction.

This is the one home of the method names and of the match equations: `solve_match`
turns the pair statistics into the reference's weighted difference equations (row
weight: the mean pixel count of the two sides) for `skyeq.solve.solve_offsets`;
`match_offsets` and `group_skies` turn the groups' measurements into skies, and
`subtracted` removes them from the images.
``local``, ``global``, ``match``, ``global+match`` and ``user`` are the methods of the
JWST ``skymatch`` step; `skyeq.match_sky` takes them as ``method=`` and a `SkyResult`
carries one as BKGMETH.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp

from .solve import _as_index_array, _as_pair_array, _label_components, solve_offsets

__all__ = [
    "METHODS",
    "MODELS",
    "PAIR_STATS",
    "MatchSolution",
    "PlaneSolution",
    "check_method",
    "check_model",
    "check_pair_stat",
    "combine_global_match",
    "difference_offsets",
    "group_skies",
    "image_planes",
    "match_offsets",
    "plane_offsets",
    "solve_match",
    "subtracted",
]

log = logging.getLogger(__name__)

#: The sky methods, as `skyeq.match_sky` takes them and BKGMETH records them.
METHODS = ("local", "global", "match", "global+match", "user")

#: The sky models: one level per image (or group), or a plane ``a + b x + c y``.
MODELS = ("constant", "plane")

#: The methods that can fit a plane (they match; the others measure one level).
PLANE_METHODS = ("match", "global+match")


#: How a pair's sky difference is measured: each image's own statistic in the overlap
#: (the reference's), or the statistic of the co-located pixel differences.
PAIR_STATS = ("own", "difference")


def check_pair_stat(pair_stat: Any, model: str) -> str:
    """Return ``pair_stat`` if it is one of `PAIR_STATS` (and fits ``model``), else raise."""
    if not isinstance(pair_stat, str) or pair_stat not in PAIR_STATS:
        raise ValueError(f"pair_stat must be one of {', '.join(map(repr, PAIR_STATS))}, got "
                         f"{pair_stat!r}")
    if pair_stat == "difference" and model != "constant":
        raise ValueError("pair_stat='difference' measures one level per pair: it needs "
                         f"model='constant', got model={model!r}")
    return pair_stat


def check_model(model: Any, method: str) -> str:
    """Return ``model`` if it is one of `MODELS` and fits ``method``, else raise ValueError."""
    if not isinstance(model, str) or model not in MODELS:
        raise ValueError(f"model must be one of {', '.join(map(repr, MODELS))}, got "
                         f"{model!r}")
    if model == "plane" and method not in PLANE_METHODS:
        raise ValueError(f"model='plane' needs a matching method "
                         f"({' or '.join(map(repr, PLANE_METHODS))}), got {method!r}")
    return model


def check_method(method: Any) -> str:
    """Return the method name in lower case, or raise a `ValueError` listing the valid ones."""
    meth = str(method).lower()
    if meth not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    return meth


class MatchSolution(NamedTuple):
    """The solution of a pairwise match system, as returned by `solve_match`.

    Attributes
    ----------
    delta : numpy.ndarray
        ``(n,)`` float64. The referenced sky offset of every unknown: the minimum-norm
        least-squares solution of its component minus one common reference value, so
        the ``reference`` unknown is exactly 0 and, with ``match_down=True``, all
        others are >= 0 (<= 0 with ``match_down=False``). NaN for unknowns that take
        part in no used pair.
    valid : numpy.ndarray
        ``(n,)`` bool, True where ``delta`` is finite.
    components : list of numpy.ndarray
        The connected components of the graph of used pairs: one sorted ``intp``
        index array per component, the list ordered by smallest member. Unknowns in
        no used pair belong to no component and are not listed.
    used : numpy.ndarray
        ``(npairs,)`` bool, True for the pairs that entered the system (both pixel
        counts > 0 and both skies finite).
    weight : numpy.ndarray
        ``(npairs,)`` float64 row weight ``wm = (npix_i + npix_j) / 2`` of each used
        pair, 0 for unused pairs.
    residual : numpy.ndarray
        ``(npairs,)`` float64 ``(sky_i - sky_j) - (delta_i - delta_j)`` for used pairs,
        NaN for unused pairs.
    reference : int
        Index of the unknown that the deltas are referenced to (its delta is exactly
        0), or -1 when no delta is finite.
    robust_weight : numpy.ndarray
        ``(npairs,)`` the robust factor of each pair's squared residual (1 unless
        ``robust``).
    """

    delta: np.ndarray
    valid: np.ndarray
    components: list[np.ndarray]
    used: np.ndarray
    weight: np.ndarray
    residual: np.ndarray
    reference: int
    robust_weight: np.ndarray


#: Iterations of Tukey's biweight at most (it converges in a few from the soft-L1 start).
_ROBUST_ITERATIONS = 50
#: Tuning constant of the biweight (95 % efficiency for Gaussian residuals).
_TUKEY_C = 4.685
#: Smallest robust factor: an outlying pair keeps a trace of weight, so that dropping it
#: never splits a connected component.
_ROBUST_FLOOR = 1e-6


def _pair_scales(err: np.ndarray, residual: np.ndarray) -> np.ndarray:
    """Return the scale of every pair's residual: its expected error where finite.

    Elsewhere the median of the finite errors; with none, 1.4826 times the median
    absolute residual of the used pairs (NaN residual: unused), or 1.
    """
    good = np.isfinite(err) & (err > 0)
    if good.any():
        fill = float(np.median(err[good]))
    else:
        r = residual[np.isfinite(residual)]
        fill = (1.4826 * float(np.median(np.abs(r))) if r.size else 0.0) or 1.0
    return np.where(good, err, fill)


def _robust_factors(residual: np.ndarray, err: np.ndarray) -> np.ndarray:
    """IRLS factors of the squared residuals by Tukey's biweight.

    Each residual is standardised by its pair's scale (`_pair_scales`), and the
    standardised residuals are judged on the larger of 1 and their own robust spread
    (1.4826 times their median absolute value). Unused pairs (NaN residual) get 1.
    """
    factor = np.ones(residual.size)
    ok = np.isfinite(residual)
    if not ok.any():
        return factor
    u = np.abs(residual[ok]) / _pair_scales(err, residual)[ok]
    u = u / max(1.0, 1.4826 * float(np.median(u)))
    f = np.where(u < _TUKEY_C, (1.0 - (u / _TUKEY_C) ** 2) ** 2, 0.0)
    factor[ok] = np.maximum(f, _ROBUST_FLOOR)
    return factor


def _soft_l1_factors(n: int, i: np.ndarray, j: np.ndarray, diff: np.ndarray,
                     err: np.ndarray, sol: Any) -> np.ndarray:
    """IRLS factors at the soft-L1 (pseudo-Huber) solution of the match equations.

    Minimises ``sum(2 * (sqrt(1 + u**2) - 1))`` over the offsets, ``u`` the residuals
    standardised by the pairs' scales (`_pair_scales`), with one unknown per
    component held at its least-squares value; scipy's trust-region solver finds the
    global minimum of this convex loss from the least-squares start (plain IRLS
    crawls there, hundreds of iterations). Returns ``1 / sqrt(1 + u**2)``, the factors
    with which the weighted least-squares solve reproduces that solution.
    """
    from scipy.optimize import least_squares  # 0.1 s to import: only when robust

    used = sol.used
    e = _pair_scales(err, sol.residual)[used]
    iu, ju, d = i[used], j[used], diff[used]
    x0 = np.nan_to_num(sol.x)
    fixed = np.zeros(n, bool)
    for c in sol.components:
        fixed[c[0]] = True
    free = np.flatnonzero(~fixed & np.isfinite(sol.x))
    col = np.full(n, -1)
    col[free] = np.arange(free.size)
    if free.size == 0:
        return np.ones(i.size)
    rows = np.arange(iu.size)

    def offsets(z: np.ndarray) -> np.ndarray:
        x = x0.copy()
        x[free] = z
        return x

    def fun(z: np.ndarray) -> np.ndarray:
        x = offsets(z)
        return (d - (x[iu] - x[ju])) / e

    ci, cj = col[iu], col[ju]
    data = np.concatenate([-1.0 / e[ci >= 0], 1.0 / e[cj >= 0]])
    jac = sp.csr_array((data, (np.concatenate([rows[ci >= 0], rows[cj >= 0]]),
                               np.concatenate([ci[ci >= 0], cj[cj >= 0]]))),
                       shape=(iu.size, free.size))
    out = least_squares(fun, x0[free], jac=lambda z: jac, loss="soft_l1", f_scale=1.0,
                        method="trf", tr_solver="lsmr", x_scale="jac")
    u = fun(out.x)
    factor = np.ones(i.size)
    factor[used] = 1.0 / np.sqrt(1.0 + u * u)
    return factor


def solve_match(
    n: int,
    i,
    j,
    sky_i,
    sky_j,
    npix_i,
    npix_j,
    *,
    match_down: bool = True,
    anchor: str = "global",
    robust: bool = False,
    pair_err=None,
) -> MatchSolution:
    """Solve the pairwise sky-matching system for the sky offsets of ``n`` unknowns.

    Parameters
    ----------
    n : int
        Number of unknowns (images, or groups of images), >= 0.
    i, j : array_like of int
        The two unknowns of every measured pair, indices in ``[0, n)``, ``i != j``.
        The order of the pairs and of ``i``/``j`` inside a pair does not matter.
    sky_i, sky_j : array_like of float
        Statistic of each side of the pair inside their overlap, measured on that side's
        own good pixels.
    npix_i, npix_j : array_like of float or int
        Number of pixels of each side that survived masking and clipping.
    match_down : bool, optional
        If True (the default), reference the deltas to the lowest one, so all deltas
        are >= 0; if False, to the highest one (all deltas <= 0).
    anchor : {'global', 'component'}, optional
        One reference for all connected components (default) or one per component
        (see `skyeq.solve.solve_offsets`).
    robust : bool, optional
        Down-weight outlying pairs: the soft-L1 (pseudo-Huber) solution of the
        residuals standardised by ``pair_err`` first (`_soft_l1_factors`), then Tukey's
        biweight by iteratively reweighted least squares (`_robust_factors`). Default
        False.
    pair_err : array_like of float, optional
        The standard error of every pair's ``sky_i - sky_j`` (for ``robust``).

    Returns
    -------
    MatchSolution
        Referenced deltas, validity, connected components, pair use, weights and
        residuals. See `MatchSolution`.

    Raises
    ------
    ValueError
        If ``n`` is negative, the per-pair arrays differ in length or are not 1-D, an
        index is out of range, or a pair has ``i == j``.

    Notes
    -----
    A pair is used iff both pixel counts are positive (and finite) and both skies are
    finite. Its row weight is ``wm = (npix_i + npix_j) / 2`` and its equation
    ``wm*(d_i - d_j) = wm*(sky_i - sky_j)``, so weights enter the objective squared.

    Inside every connected component of the graph of used pairs the result is the
    minimum-norm least-squares solution (the deltas of a component have a zero
    unweighted mean), which is what the reference's ``pinv(K) @ F`` gives, but computed
    sparsely: the weighted graph Laplacian with one unknown per component held at 0 is
    factorised once by SuperLU, the solution is polished by iterative refinement with
    residuals computed pair by pair and summed per unknown without rounding loss, and
    every component is then shifted to zero mean. Should SuperLU fail or the refinement
    not converge (weights spanning more than ~7 decades), a slower subtraction-free
    elimination takes over. The cost is that of one sparse factorisation and a few
    solves: milliseconds for thousands of unknowns.

    Accuracy: with pair weights spanning up to 9 decades the deltas agree with the
    exact (rational arithmetic) least-squares solution to 1e-11 relative to the sky
    differences or better (typically 1e-15), including a weakly linked pair of strongly
    weighted clusters with inconsistent data; a warning is logged beyond 9 decades.
    The reference's dense float64 ``pinv`` is less accurate: with weights from 1 to
    4e6 its deltas differ from the exact ones by up to ~1e-8 relative on random graphs
    and by ~1e-4 for a weak link between strong clusters, so agreement with stcal is
    only to that level.
    The reference also truncates singular values below ``1e-12`` times the largest
    one; this solver does not.

    All components share one reference: over all finite deltas, ``min`` (``max`` with
    ``match_down=False``) is subtracted, so one unknown (the first on ties) gets
    exactly 0 and the offsets between components stay undetermined (as in the
    reference). A warning is logged when there is more than one component and when
    unknowns take part in no used pair; their delta is NaN.

    Examples
    --------
    Three images in a chain whose skies are 100, 120 and 105 (constant skies, so each
    side of a pair measures its own sky):

    >>> sol = solve_match(3, [0, 1], [1, 2], [100.0, 120.0], [120.0, 105.0],
    ...                   [5000, 4000], [5000, 4000])
    >>> sol.delta.tolist()
    [0.0, 20.0, 5.0]
    """
    n = int(n)
    if n < 0:
        raise ValueError(f"'n' must be >= 0, got {n}")
    ii = _as_index_array("i", i, n)
    jj = _as_index_array("j", j, n)
    npairs = ii.size
    if jj.size != npairs:
        raise ValueError(f"'j' has {jj.size} values, expected {npairs} (one per pair)")
    si = _as_pair_array("sky_i", sky_i, npairs)
    sj = _as_pair_array("sky_j", sky_j, npairs)
    ni = _as_pair_array("npix_i", npix_i, npairs)
    nj = _as_pair_array("npix_j", npix_j, npairs)
    if np.any(ii == jj):
        raise ValueError("a pair must join two different unknowns (found i == j)")
    with np.errstate(invalid="ignore"):
        counted = (ni > 0) & (nj > 0) & np.isfinite(ni) & np.isfinite(nj)
    # the reference's row weight: the mean pixel count of the two sides
    weight = np.zeros(npairs)
    weight[counted] = 0.5 * (ni[counted] + nj[counted])
    with np.errstate(invalid="ignore"):
        diff = si - sj

    def solve(factor: np.ndarray) -> Any:
        return solve_offsets(
            n,
            row=np.repeat(np.arange(npairs), 2),
            index=np.column_stack([ii, jj]).ravel(),
            coef=np.tile([1.0, -1.0], npairs),
            value=diff,
            weight=weight * np.sqrt(factor),
            match_down=match_down,
            anchor=anchor,
        )

    factor = np.ones(npairs)
    sol = solve(factor)
    if robust and sol.used.any():
        err = (np.full(npairs, np.nan) if pair_err is None
               else _as_pair_array("pair_err", pair_err, npairs))
        factor = _soft_l1_factors(n, ii, jj, diff, err, sol)
        sol = solve(factor)
        for _ in range(_ROBUST_ITERATIONS):  # Tukey's biweight from there
            new = _robust_factors(sol.residual, err)
            if np.allclose(new, factor, rtol=0, atol=1e-9):
                break
            factor = new
            sol = solve(factor)
        low = np.flatnonzero(sol.used & (factor < 0.5))
        if low.size:
            log.info("robust solve: %d of %d pairs down-weighted below 0.5: %s", low.size,
                     int(sol.used.sum()),
                     ", ".join(f"{ii[k]}-{jj[k]}" for k in low[:20]))
    return MatchSolution(
        delta=sol.x,
        valid=sol.valid,
        components=sol.components,
        used=sol.used,
        weight=np.where(sol.used, weight, 0.0),
        residual=sol.residual,
        reference=sol.reference,
        robust_weight=factor,
    )


def combine_global_match(local, delta) -> np.ndarray:
    """Combine local skies and match deltas as the ``global+match`` method does.

    Parameters
    ----------
    local : array_like of float
        ``(n,)`` local (whole-image or whole-group) sky of every item; NaN where it
        could not be computed.
    delta : array_like of float
        ``(n,)`` match deltas (``MatchSolution.delta``); NaN where invalid.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` float64 sky ``d_k + b`` with ``d_k`` the delta (0 where invalid) and
        the baseline ``b = min_m (local_m - d_m)`` over the items where that difference
        is finite. All NaN if there is no such item (the reference then keeps the match
        result alone; the caller decides).

    Raises
    ------
    ValueError
        If the inputs are not 1-D arrays of the same length.

    Notes
    -----
    Items whose delta is invalid take part in the minimum with their full local sky
    and end up at the baseline, so, as in the reference, every item gets a finite sky
    when any local sky is finite. When every delta is valid, the result does not depend
    on how the deltas were referenced (a common shift cancels), hence not on
    ``match_down``. With invalid deltas it does, exactly as in the reference (checked
    with stcal 1.20.0): an isolated image keeps ``d = 0`` whatever the reference, so
    it can set the baseline differently for ``match_down=True`` and ``False``.

    Examples
    --------
    >>> combine_global_match([100.0, 120.0, 50.0], [0.0, 20.0, float("nan")]).tolist()
    [50.0, 70.0, 50.0]
    """
    loc = np.asarray(local, dtype=np.float64)
    dlt = np.asarray(delta, dtype=np.float64)
    if loc.ndim != 1 or dlt.shape != loc.shape:
        raise ValueError(
            f"'local' and 'delta' must be 1-D of the same length, got shapes "
            f"{loc.shape} and {dlt.shape}"
        )
    d = np.where(np.isfinite(dlt), dlt, 0.0)
    base = loc - d
    ok = np.isfinite(base)
    if not ok.any():
        return np.full(loc.shape, np.nan)
    return d + base[ok].min()


def match_offsets(
    measurements: Sequence[Any],
    neighbours: Sequence[Sequence[int]],
    match_down: bool,
    group_label: Callable[[int], str],
    anchor: str = "global",
    robust: bool = False,
) -> tuple[np.ndarray, list[np.ndarray], Any, np.ndarray]:
    """Solve the group offsets from the groups' skies in their overlaps.

    A pair of groups gives an equation when both measured their common overlap.

    Parameters
    ----------
    measurements : sequence of GroupMeasurement
        One per group, in group order.
    neighbours : sequence of sequence of int
        The neighbour groups whose overlaps each group measured (``measurement.sky``
        order).
    match_down : bool
        Reference the offsets to the lowest (True) or highest sky.
    group_label : callable
        The images of a group, for the warning about groups without a usable overlap.
    anchor : {'global', 'component'}, optional
        How the components are referenced (see `solve_match`).
    robust : bool, optional
        Down-weight outlying pairs (see `solve_match`).

    Returns
    -------
    delta : ndarray
        Offset per group (NaN where none).
    components : list of ndarray
        The groups of each connected component of the overlap graph.
    pairs : dict of ndarray
        The columns of the pair table (`skyeq.result.make_pair_table`): ``i``, ``j``,
        ``npix_i``, ``npix_j``, ``sky_i``, ``sky_j``, ``weight``, ``residual``.
    err : ndarray
        The standard error of every offset (`referenced_errors`).
    """
    lookup = {
        (r.index, h): (r.sky[q], r.npix[q])
        for r in measurements
        for q, h in enumerate(neighbours[r.index])
    }
    lookup_err = {
        (r.index, h): float(r.err[q])
        for r in measurements
        for q, h in enumerate(neighbours[r.index])
    }
    rows = []
    for (g, h), (s_g, n_g) in lookup.items():
        if g < h and (h, g) in lookup:
            s_h, n_h = lookup[(h, g)]
            rows.append((g, h, s_g, s_h, n_g, n_h))
    rows.sort(key=lambda r: (r[0], r[1]))
    cols = [np.array([r[k] for r in rows]) for k in range(6)]
    pi, pj, si, sj, ni, nj = cols
    pair_err = np.array([math.hypot(lookup_err[(g, h)], lookup_err[(h, g)])
                         for g, h in zip(pi, pj, strict=True)])
    return _solve_pairs(len(measurements), pi.astype(int), pj.astype(int), si, sj, ni, nj,
                        pair_err, match_down, group_label, anchor, robust)


def difference_offsets(
    measurements: Sequence[Any],
    gid: np.ndarray,
    ngroups: int,
    match_down: bool,
    group_label: Callable[[int], str],
    anchor: str = "global",
    robust: bool = False,
) -> tuple[np.ndarray, list[np.ndarray], Any, np.ndarray]:
    """Solve the group offsets from the pixel differences of overlapping images.

    For ``pair_stat="difference"``: every measured image pair ``(a, b)`` gives the
    statistic ``D`` of ``data_a - data_b`` over their overlap, from ``N`` differences.
    The pairs between groups ``G`` and ``H`` make one equation ``x_G - x_H = sum(N D) /
    sum(N)`` (``D`` negated for pairs measured the other way round), of weight
    ``sum(N)`` (the own-statistic rule's mean pixel count, both sides being the same
    pixels) and standard error ``sqrt(sum((N e)**2)) / sum(N)``.

    Parameters
    ----------
    measurements : sequence of PairMeasurement
        The pair tasks' results.
    gid : ndarray
        The group of every image.
    ngroups : int
        Number of groups.
    match_down, group_label, anchor, robust
        As for `match_offsets`.

    Returns
    -------
    delta, components, pairs, err
        As `match_offsets` returns them; in the pair table ``sky_i`` is the statistic of
        the differences and ``sky_j`` is 0, ``npix_i`` and ``npix_j`` both the number of
        differences.
    """
    sums: dict[tuple[int, int], list[float]] = {}
    for r in measurements:
        for b, d, k, e in zip(r.partners, r.value, r.npix, r.err, strict=True):
            if not (k > 0 and math.isfinite(d)):
                continue
            g, h, sign = int(gid[r.index]), int(gid[b]), 1.0
            if g > h:
                g, h, sign = h, g, -1.0
            acc = sums.setdefault((g, h), [0.0, 0.0, 0.0])
            acc[0] += k * d * sign
            acc[1] += k
            acc[2] += (k * e) ** 2
    keys = sorted(sums)
    pi = np.array([g for g, _ in keys], dtype=int)
    pj = np.array([h for _, h in keys], dtype=int)
    total = np.array([sums[k][1] for k in keys])
    value = np.array([sums[k][0] for k in keys]) / np.where(total > 0, total, 1.0)
    with np.errstate(invalid="ignore"):
        pair_err = np.sqrt(np.array([sums[k][2] for k in keys])) / np.where(total > 0, total,
                                                                            1.0)
    return _solve_pairs(ngroups, pi, pj, value, np.zeros(len(keys)), total, total, pair_err,
                        match_down, group_label, anchor, robust)


def _solve_pairs(
    n: int, pi: np.ndarray, pj: np.ndarray, si: np.ndarray, sj: np.ndarray, ni: np.ndarray,
    nj: np.ndarray, pair_err: np.ndarray, match_down: bool, group_label: Callable[[int], str],
    anchor: str, robust: bool,
) -> tuple[np.ndarray, list[np.ndarray], Any, np.ndarray]:
    """Solve a match system of group pairs; the offsets, components, pair table, errors."""
    sol = solve_match(n, pi, pj, si, sj, ni, nj, match_down=match_down, anchor=anchor,
                      robust=robust, pair_err=pair_err)
    for g in np.flatnonzero(~sol.valid):
        log.warning("Unable to compute the match offset of %s: no usable overlap",
                    group_label(int(g)))
    pairs = {"i": pi, "j": pj, "npix_i": ni, "npix_j": nj, "sky_i": si, "sky_j": sj,
             "weight": sol.weight, "residual": sol.residual,
             "robust_weight": sol.robust_weight}
    pick = np.argmin if match_down else np.argmax
    if anchor == "component":
        refs = [int(c[pick(sol.delta[c])]) for c in sol.components]
    else:  # errors only inside the reference's component: the others float freely
        refs = [sol.reference if sol.reference in c else -1 for c in sol.components]
    err = referenced_errors(n, pi, pj, sol.weight * np.sqrt(sol.robust_weight), pair_err,
                            sol.components, refs)
    return sol.delta, sol.components, pairs, err


#: Largest component whose offset errors are computed (two dense solves per component:
#: about a second for 2000 images).
_MAX_ERR_UNKNOWNS = 2000


def referenced_errors(
    n: int,
    i: np.ndarray,
    j: np.ndarray,
    weight: np.ndarray,
    err: np.ndarray,
    components: Sequence[np.ndarray],
    refs: Sequence[int],
) -> np.ndarray:
    """Return the standard errors of referenced match offsets from the pairs' variances.

    The referenced offsets ``y`` (``y_r = 0`` for the component's reference ``r``) solve
    the weighted normal equations with ``r`` removed, ``L_r y = (A^T W^2 b)_r``, so
    ``Cov(y) = L_r^-1 (A^T W^2 V W^2 A)_r L_r^-1`` with ``V`` the diagonal of the pair
    variances (``err**2``, ``err`` the standard error of ``sky_i - sky_j``). Pairs are
    taken as independent. Weights and errors are scaled to at most 1 first, so that
    neither overflows for data of any magnitude.

    Parameters
    ----------
    n : int
        Number of unknowns.
    i, j : ndarray of int
        The pairs.
    weight : ndarray
        Their row weights (0 for pairs not used).
    err : ndarray
        The standard error of each pair's difference.
    components : sequence of ndarray
        The connected components of the used pairs.
    refs : sequence of int
        The reference of each component, -1 for none (its errors stay NaN).

    Returns
    -------
    ndarray
        Per unknown: the standard error, 0 for a reference, NaN where not estimated (no
        reference, a pair without a variance, or a component of more than
        `_MAX_ERR_UNKNOWNS`).
    """
    out = np.full(n, np.nan)
    pos = np.full(n, -1, dtype=np.intp)
    used = weight > 0
    for c, r in zip(components, refs, strict=True):
        if r < 0:
            continue
        m = c.size
        if m > _MAX_ERR_UNKNOWNS:
            log.warning("Sky errors are not computed for a component of %d images (more "
                        "than %d)", m, _MAX_ERR_UNKNOWNS)
            continue
        pos[c] = np.arange(m)
        sel = used & (pos[i] >= 0)
        a, b = pos[i[sel]], pos[j[sel]]
        e = err[sel]
        scale = float(e.max()) if e.size else 0.0
        if not (np.all(np.isfinite(e)) and scale > 0):
            pos[c] = -1
            continue
        w2 = (weight[sel] / weight[sel].max()) ** 2
        v = (e / scale) ** 2
        lap = np.zeros((m, m))
        mid = np.zeros((m, m))
        for mat, g in ((lap, w2), (mid, w2 * w2 * v)):
            np.add.at(mat, (a, a), g)
            np.add.at(mat, (b, b), g)
            np.add.at(mat, (a, b), -g)
            np.add.at(mat, (b, a), -g)
        keep = np.arange(m) != pos[r]
        lr = lap[np.ix_(keep, keep)]
        half = np.linalg.solve(lr, mid[np.ix_(keep, keep)])
        cov = np.linalg.solve(lr, half.T)
        sd = np.zeros(m)
        sd[keep] = np.sqrt(np.clip(np.diag(cov), 0.0, None)) * scale
        out[c] = sd
        pos[c] = -1
    return out


#: Weight of the rows that keep a plane system regular, relative to the median cell.
_SLOPE_RIDGE = 1e-6


class PlaneSolution(NamedTuple):
    """The plane of every group from the cells of their overlaps (`plane_offsets`).

    Attributes
    ----------
    delta : numpy.ndarray
        ``(ngroups,)`` the plane of each group at the centre of its first image,
        referenced like the constant match offsets (the lowest, or highest, is 0); NaN
        for groups in no usable cell.
    slope : numpy.ndarray
        ``(ngroups, 2)`` the plane's change per pixel along x and y of the group's first
        image (NaN where ``delta`` is).
    components : list of numpy.ndarray
        The connected components of the groups (sorted group indices).
    pairs : dict of numpy.ndarray
        The columns of the pair table, one row per cell (`skyeq.result.make_pair_table`).
    """

    delta: np.ndarray
    slope: np.ndarray
    components: list[np.ndarray]
    pairs: dict[str, np.ndarray]


def plane_offsets(
    measurements: Sequence[Any],
    neighbours: Sequence[Sequence[int]],
    cells: np.ndarray,
    frames: np.ndarray,
    match_down: bool,
    group_label: Callable[[int], str],
    anchor: str = "global",
    robust: bool = False,
) -> PlaneSolution:
    """Solve a plane per group from the two sides' statistics in every overlap cell.

    Every cell of an overlap between groups G and H (`skyeq.geometry.split_piece`)
    gives the equation ``P_G(c_G) - P_H(c_H) = s_G - s_H``, with ``s`` each side's
    statistic in the cell, ``c`` the centre of its pixels there and ``P_G(x, y) = a +
    b u + c v`` the plane of G in its first image's pixels, ``u = (x - xc) / L`` and
    ``v = (y - yc) / L`` about that image's centre, ``L`` half its larger side. The row
    weight is ``1 / sqrt(e_G**2 + e_H**2)`` from the statistics' standard errors
    (``1 / sqrt(1/n_G + 1/n_H)`` from the pixel counts when one has none, as for the
    ``mode``). Overlaps see only differences: a constant is not determined at all, and
    a gradient shared by a whole connected component (a plane on the sky) only through
    the sub-pixel offsets between the two sides' centres, which would turn noise into
    large common slopes. So the component's first level is held at 0 while solving
    (`skyeq.solve.solve_offsets` with ``fixed``: a direct solve; rows ``b = 0``, ``c =
    0`` weighted `_SLOPE_RIDGE` times the median cell only keep it regular), the
    component's common gradient is then chosen to make its slopes smallest (least
    squares over its groups, in one gnomonic frame of the mosaic, `_flatten`), and the
    levels are referenced as in `solve_match` (``anchor``, ``match_down``).

    Parameters
    ----------
    measurements : sequence of GroupMeasurement
        One per group, with ``centroid`` (`skyeq._plan.GroupTask.centroids`).
    neighbours : sequence of sequence of int
        The cells each group measured, in ``measurement.sky`` order.
    cells : ndarray
        ``(ncells, 4)``: the groups ``G, H`` of every cell (then two image indices).
    frames : ndarray
        ``(ngroups, 9)``: ``xc, yc, L`` of every group's first image, then its centre
        and Jacobian in the mosaic's gnomonic frame (`skyeq._plan.plane_frames`).
    match_down : bool
        Reference the levels to the lowest (True) or highest.
    group_label : callable
        The images of a group, for the warning about groups without a usable cell.
    anchor : {'global', 'component'}, optional
        How the components are referenced (see `solve_match`).
    robust : bool, optional
        Down-weight outlying cells by Tukey's biweight (`_robust_factors`), by
        iteratively reweighted least squares from the plain solution.

    Returns
    -------
    PlaneSolution
        The planes, components and the cell table.
    """
    n = len(measurements)
    ncell = len(cells)
    side = np.zeros((ncell, 2, 5))  # per cell and side: sky, npix, err, x, y
    side[:, :, 0] = np.nan
    for r in measurements:
        at = {c: q for q, c in enumerate(neighbours[r.index])}
        for c, q in at.items():
            k = 0 if cells[c, 0] == r.index else 1
            side[c, k] = (r.sky[q], r.npix[q], r.err[q], *r.centroid[q])
    g, h = cells[:, 0].astype(np.intp), cells[:, 1].astype(np.intp)
    sky, npix, err = side[..., 0], side[..., 1], side[..., 2]
    value = sky[:, 0] - sky[:, 1]
    with np.errstate(invalid="ignore"):
        usable = (np.isfinite(value) & np.all(npix > 0, axis=1)
                  & np.all(np.isfinite(side[..., 3:]), axis=(1, 2)))
    pair_err = np.hypot(err[:, 0], err[:, 1])
    if usable.any() and np.all(np.isfinite(pair_err[usable]) & (pair_err[usable] > 0)):
        weight = 1.0 / pair_err
    else:
        with np.errstate(divide="ignore"):
            weight = 1.0 / np.sqrt(1.0 / npix[:, 0] + 1.0 / npix[:, 1])
    weight = np.where(usable, weight, 0.0)
    xc, yc, half = frames[:, 0], frames[:, 1], frames[:, 2]
    uv = np.stack([(side[:, k, 3:] - np.column_stack((xc, yc))[grp]) / half[grp, None]
                   for k, grp in ((0, g), (1, h))], axis=1)  # (ncell, side, 2)
    # the terms: +a_G +u b_G +v c_G -a_H -u b_H -v c_H
    row = np.repeat(np.arange(ncell), 6)
    index = np.column_stack((3 * g, 3 * g + 1, 3 * g + 2, 3 * h, 3 * h + 1, 3 * h + 2)).ravel()
    coef = np.nan_to_num(np.column_stack((np.ones(ncell), uv[:, 0, 0], uv[:, 0, 1],
                                          -np.ones(ncell), -uv[:, 1, 0], -uv[:, 1, 1])).ravel())
    # rows b = 0, c = 0 far below the data: they only keep the normal equations regular
    # where the common gradient is (nearly) blind; `_flatten` decides it afterwards
    seen = np.unique(np.concatenate((g[usable], h[usable])))
    slopes = np.concatenate((3 * seen + 1, 3 * seen + 2))
    ridge = _SLOPE_RIDGE * (float(np.median(weight[usable])) if usable.any() else 1.0)
    row = np.concatenate((row, ncell + np.arange(slopes.size)))
    index = np.concatenate((index, slopes))
    coef = np.concatenate((coef, np.ones(slopes.size)))
    value = np.concatenate((np.where(usable, value, np.nan), np.zeros(slopes.size)))
    components = _label_components(n, g[usable], h[usable])[1]
    held = np.array([3 * c[0] for c in components], dtype=np.intp)  # a level per component

    def solve(factor: np.ndarray) -> Any:
        w = np.concatenate((weight * np.sqrt(factor), np.full(slopes.size, ridge)))
        return solve_offsets(3 * n, row, index, coef, value, w, fixed=held)

    factor = np.ones(ncell)
    sol = solve(factor)
    if robust and usable.any():
        for _ in range(_ROBUST_ITERATIONS):
            new = _robust_factors(np.where(usable, sol.residual[:ncell], np.nan), pair_err)
            if np.allclose(new, factor, rtol=0, atol=1e-9):
                break
            factor = new
            sol = solve(factor)
        low = np.flatnonzero(usable & (factor < 0.5))
        if low.size:
            log.info("robust solve: %d of %d overlap cells down-weighted below 0.5 "
                     "(groups %s)", low.size, int(usable.sum()),
                     ", ".join(f"{g[k]}-{h[k]}" for k in low[:20]))
    x = sol.x.reshape(n, 3)
    level, slope = x[:, 0].copy(), x[:, 1:] / half[:, None]
    for c in components:
        _flatten(level, slope, frames[c], c)
    delta = _referenced(level, components, match_down, anchor)
    slope[~np.isfinite(delta)] = np.nan
    for k in np.flatnonzero(~np.isfinite(delta)):
        log.warning("Unable to compute the match plane of %s: no usable overlap",
                    group_label(int(k)))
    pairs = {"i": g, "j": h, "npix_i": npix[:, 0].astype(np.int64),
             "npix_j": npix[:, 1].astype(np.int64), "sky_i": sky[:, 0], "sky_j": sky[:, 1],
             "weight": weight, "residual": np.where(usable, sol.residual[:ncell], np.nan),
             "robust_weight": factor}
    return PlaneSolution(delta, slope, components, pairs)


def _flatten(level: np.ndarray, slope: np.ndarray, frames: np.ndarray,
             members: np.ndarray) -> None:
    """Remove from a component's planes the common plane that makes its slopes smallest.

    A plane ``t . (X, Y)`` on the sky (``X, Y`` the mosaic's gnomonic frame) adds
    ``J^T t`` to a group's slopes and ``t . (X0, Y0)`` to its level at its centre, and no
    overlap sees it. ``t`` minimises the sum of the squared slopes of ``members`` after
    its removal; ``level`` and ``slope`` are changed in place.
    """
    jac = frames[:, 5:9].reshape(-1, 2, 2)  # d(X, Y) / d(x, y) per group
    s = slope[members]
    # slope_g - J_g^T t: normal equations sum(J J^T) t = sum(J s)
    lhs = np.einsum("kij,klj->il", jac, jac)
    rhs = np.einsum("kij,kj->i", jac, s)
    t = np.linalg.lstsq(lhs, rhs, rcond=None)[0]
    slope[members] = s - np.einsum("kji,j->ki", jac, t)
    level[members] -= frames[:, 3:5] @ t


def _referenced(level: np.ndarray, components: Sequence[np.ndarray], match_down: bool,
                anchor: str) -> np.ndarray:
    """Shift levels so that the lowest (highest) is 0: of all, or of every component."""
    out = level.copy()
    pick = np.nanmin if match_down else np.nanmax
    if anchor == "component":
        for c in components:
            out[c] -= pick(level[c])
    elif np.isfinite(level).any():
        out -= pick(level)
    return out


def image_planes(level: np.ndarray, slope: np.ndarray, gid: np.ndarray,
                 frames: np.ndarray) -> np.ndarray:
    """Return every image's plane ``(level, gx, gy)`` about its own centre.

    Parameters
    ----------
    level, slope : ndarray
        ``(ngroups,)`` and ``(ngroups, 2)``: each group's plane at its first image's
        centre and its change per pixel of that image.
    gid : ndarray
        The group of every image.
    frames : ndarray
        ``(nimages, 6)``: each image's centre in its group's first image's pixels,
        relative to that image's centre (``dx, dy``), and the Jacobian ``J`` of that
        map (``J00, J01, J10, J11``: ``d(X, Y) / d(x, y)``).

    Returns
    -------
    ndarray
        ``(nimages, 3)``: the plane at the image's centre and its change per pixel of
        the image along x and y.
    """
    s = slope[gid]
    jac = frames[:, 2:].reshape(-1, 2, 2)
    out = np.empty((len(gid), 3))
    out[:, 0] = level[gid] + s[:, 0] * frames[:, 0] + s[:, 1] * frames[:, 1]
    out[:, 1:] = np.einsum("ki,kij->kj", s, jac)
    return out


def group_skies(
    method: str,
    local: np.ndarray,
    delta: np.ndarray,
    components: Sequence[np.ndarray] = (),
    anchor: str = "global",
) -> tuple[np.ndarray, np.ndarray]:
    """Compute the sky of every group by ``method`` from its local sky and match offset.

    Parameters
    ----------
    method : {'local', 'global', 'match', 'global+match'}
        The method.
    local, delta : ndarray
        Local sky and match offset per group (NaN where none).
    components : sequence of ndarray, optional
        The connected components of the match (group indices).
    anchor : {'global', 'component'}, optional
        With ``'component'``, ``global+match`` takes the baseline of every component
        (and of every group in none) from its own groups: each is tied to its own
        lowest sky instead of all to one.

    Returns
    -------
    sky, valid : ndarray
        The sky (NaN or anything where not valid) and whether it was computed.
    """
    ngroups = len(local)
    has_pixels = np.isfinite(local)  # no usable pixel, no sky (whatever the method)
    if method == "local":
        return local, has_pixels
    if method == "global":
        if has_pixels.any():
            return np.full(ngroups, local[has_pixels].min()), has_pixels
        log.warning('Unable to compute the "global" sky value')
        return np.full(ngroups, np.nan), np.zeros(ngroups, bool)
    if method == "match":
        return delta, np.isfinite(delta)
    if anchor == "component":  # global+match, each component on its own baseline
        combined = np.full(ngroups, np.nan)
        parts = list(components)
        inside = np.zeros(ngroups, bool)
        for c in parts:
            inside[c] = True
        parts += [np.array([g]) for g in np.flatnonzero(~inside)]
        for c in parts:
            combined[c] = combine_global_match(local[c], delta[c])
    else:
        combined = combine_global_match(local, delta)  # global+match
    if np.isfinite(combined).any():
        return combined, np.isfinite(combined) & has_pixels
    log.warning('Unable to compute the "global" sky value; keeping the match offsets')
    return delta, np.isfinite(delta)


def subtracted(data: Sequence[Any], sky: np.ndarray, valid: np.ndarray,
               inplace: bool, slope: np.ndarray | None = None) -> list[Any]:
    """Subtract the skies from the images (nothing from an image whose sky is invalid).

    Parameters
    ----------
    data : sequence
        The images.
    sky, valid : ndarray
        Sky per image and whether it is valid.
    inplace : bool
        Subtract from the images themselves (writable arrays, checked up front).
    slope : ndarray, optional
        ``(n, 2)``: each sky's change per pixel along x and y (plane models, see
        `_sky_array`); None for constant skies.

    Returns
    -------
    list
        Per image: the image itself (``inplace``), a new array, or for an image that
        loads on demand an array-like that subtracts when converted.
    """
    out = []
    for k, img in enumerate(data):
        level = sky[k] if valid[k] else 0.0
        gxy = (0.0, 0.0) if slope is None or not valid[k] else tuple(slope[k])
        if inplace:
            img -= _sky_array(img.shape, level, gxy).astype(img.dtype)
            out.append(img)
        elif _loads_on_demand(img):
            out.append(_Subtracted(img, level, gxy))
        else:
            out.append(_minus(np.asarray(img), level, gxy))
    return out


def _sky_array(shape: tuple[int, ...], level: float,
               slope: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Return the sky to subtract from an image of ``shape``: a scalar, or a plane.

    The plane is ``level + gx * (x - xc) + gy * (y - yc)`` in float64, with ``(xc,
    yc)`` the image centre (zero-based pixels); without slopes, ``level`` itself (a
    0-d array, broadcast).
    """
    gx, gy = slope
    if gx == 0.0 and gy == 0.0:
        return np.asarray(level)
    ny, nx = shape[-2:]
    return np.add.outer(gy * (np.arange(ny) - (ny - 1) / 2.0),
                        level + gx * (np.arange(nx) - (nx - 1) / 2.0))


def _loads_on_demand(image: Any) -> bool:
    """Whether ``image`` is an array-like that is read when converted (not an ndarray)."""
    return not isinstance(image, np.ndarray) and hasattr(image, "shape") and hasattr(
        image, "__array__"
    )


def _minus(image: np.ndarray, level: float,
           slope: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Return ``image - sky``, never truncated or wrapped around (`_sky_array`).

    A float image keeps its dtype (float32 stays float32); any other is subtracted in
    float64.
    """
    sky = _sky_array(image.shape, level, slope)
    if image.dtype.kind != "f":
        return image.astype(np.float64) - sky
    return image - sky.astype(image.dtype)


class _Subtracted:
    """An image that loads on demand, minus its sky: computed by `numpy.asarray`.

    What `match_sky` returns in ``result.data`` for such inputs, so that subtracting
    the sky of many files never holds more than one image in memory.
    """

    __slots__ = ("image", "level", "slope")

    def __init__(self, image: Any, level: float,
                 slope: tuple[float, float] = (0.0, 0.0)) -> None:
        self.image = image
        self.level = float(level)
        self.slope = (float(slope[0]), float(slope[1]))

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the image."""
        return tuple(np.shape(self.image))

    @property
    def ndim(self) -> int:
        """Number of dimensions (2)."""
        return len(self.shape)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = _minus(np.asarray(self.image), self.level, self.slope)
        return out if dtype is None else out.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"<{self.image!r} minus {self.level:.6g}>"
