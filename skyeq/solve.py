"""The one solver: weighted linear equations between unknowns, solved sparsely.

Every measurement becomes an equation between the unknowns (one per image or group for
a constant sky; more per image for richer models)::

    weight_k * sum_t(coef_t * x[index_t]) = weight_k * value_k      (terms t of row k)

given as sparse triplets (``row``, ``index``, ``coef``) plus one ``value`` and one
``weight`` (``1 / sigma``) per equation. The rows are multiplied by their weights, so
the weights enter the least-squares objective squared. Where the weights come from is
the caller's business (the measurements that make the equations know their pixel
counts and scatter); this module knows nothing of pixels, statistics or WCS.

Equations that are all differences ``x_i - x_j = value`` (the reference's match
system) are solved as a weighted graph Laplacian: singular, with a constant null vector
per connected component of the graph of used equations. Like the reference's dense
pseudo-inverse, the minimum-norm solution is returned (the unknowns of a component have
a zero unweighted mean), then all finite unknowns are referenced to one of them (the
lowest with ``match_down=True``, the highest otherwise), which gets exactly 0. Any other
system is solved by LSQR for its minimum-norm least-squares solution, unreferenced.
See `solve_offsets`.
"""

from __future__ import annotations

import heapq
import logging
import math
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import lsqr, splu

__all__ = ["ANCHORS", "OffsetSolution", "check_anchor", "solve_offsets"]

logger = logging.getLogger(__name__)

#: Largest number of solves (1 plain solve + refinement steps) per match system.
_MAX_SOLVES = 30
#: A refinement correction below this fraction of the solution scale ends the loop.
_REFINE_RTOL = 4.0 * np.finfo(np.float64).eps
#: A final relative correction above this sends the system to the fallback solver.
_FALLBACK_RTOL = 1e-12
#: A final relative correction above this is reported as inaccurate.
_ACCURACY_WARN = 1e-8
#: Largest ratio of pair weights for which the solver was verified to be accurate.
_MAX_WEIGHT_RATIO = 1e9


class OffsetSolution(NamedTuple):
    """The solution of a system of equations, as returned by `solve_offsets`.

    Attributes
    ----------
    x : numpy.ndarray
        ``(n,)`` float64 unknowns; NaN for those in no used equation. For a difference
        system, referenced: the ``reference`` unknown is exactly 0 and, with
        ``match_down=True``, all others are >= 0 (<= 0 with ``match_down=False``).
    valid : numpy.ndarray
        ``(n,)`` bool, True where ``x`` is finite.
    components : list of numpy.ndarray
        The connected components of the graph of unknowns that share a used equation:
        one sorted ``intp`` index array per component, the list ordered by smallest
        member. Unknowns in no used equation belong to no component.
    used : numpy.ndarray
        ``(neq,)`` bool, True for the equations that entered the system (finite
        positive weight, finite value and coefficients, at least one term).
    residual : numpy.ndarray
        ``(neq,)`` float64 ``value - sum(coef * x)`` of the used equations, NaN for the
        others.
    reference : int
        The unknown that a difference system is referenced to (exactly 0), or -1 (no
        finite unknown, or not a difference system).
    difference : bool
        Whether every used equation is a difference ``x_i - x_j`` (the Laplacian path).
    """

    x: np.ndarray
    valid: np.ndarray
    components: list[np.ndarray]
    used: np.ndarray
    residual: np.ndarray
    reference: int
    difference: bool


def _as_pair_array(name: str, value, npairs: int | None) -> np.ndarray:
    """Return a per-pair (or per-equation, per-term) input as a 1-D float64 array.

    Parameters
    ----------
    name : str
        Parameter name, used in error messages.
    value : array_like
        The values, one per pair.
    npairs : int or None
        Required length, or None to accept any length.

    Returns
    -------
    numpy.ndarray
        1-D float64 array.

    Raises
    ------
    ValueError
        If the array is not 1-D or has the wrong length.
    """
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"'{name}' must be 1-D, got shape {arr.shape}")
    if npairs is not None and arr.size != npairs:
        raise ValueError(f"'{name}' has {arr.size} values, expected {npairs} (one per pair)")
    return arr


def _as_index_array(name: str, value, n: int) -> np.ndarray:
    """Return a per-pair index input as a 1-D intp array of indices in ``[0, n)``.

    Parameters
    ----------
    name : str
        Parameter name, used in error messages.
    value : array_like
        Integer indices. An empty input of any dtype is accepted.
    n : int
        Number of unknowns.

    Returns
    -------
    numpy.ndarray
        1-D ``intp`` array.

    Raises
    ------
    ValueError
        If the array is not 1-D, not integer, or holds an index out of range.
    """
    arr = np.asarray(value)
    if arr.ndim != 1:
        raise ValueError(f"'{name}' must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.intp)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"'{name}' must hold integer indices, got dtype {arr.dtype}")
    if arr.min() < 0 or arr.max() >= n:
        raise ValueError(f"'{name}' holds indices outside [0, {n})")
    return arr.astype(np.intp, copy=False)


def _label_components(
    n: int, iu: np.ndarray, ju: np.ndarray
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Label the connected components of the graph of used pairs.

    Parameters
    ----------
    n : int
        Number of unknowns.
    iu, ju : numpy.ndarray
        Endpoints of the used pairs.

    Returns
    -------
    label : numpy.ndarray
        ``(n,)`` intp component number of every unknown, -1 for unknowns in no pair.
        Components are numbered in the order of their smallest member.
    components : list of numpy.ndarray
        Sorted member indices of each component, in component-number order.
    """
    label = np.full(n, -1, dtype=np.intp)
    members = np.flatnonzero(np.bincount(np.concatenate([iu, ju]), minlength=n) > 0)
    if members.size == 0:
        return label, []
    graph = sp.csr_array((np.ones(iu.size), (iu, ju)), shape=(n, n))
    _, raw = connected_components(graph, directed=False)
    # Renumber by smallest member: ``members`` is sorted, so the first occurrence of a
    # raw label in it is that component's smallest member.
    uniq, first = np.unique(raw[members], return_index=True)
    renumber = np.empty(raw.max() + 1, dtype=np.intp)
    renumber[uniq[np.argsort(first)]] = np.arange(uniq.size)
    label[members] = renumber[raw[members]]
    order = np.argsort(label[members], kind="stable")
    counts = np.bincount(label[members], minlength=uniq.size)
    components = np.split(members[order], np.cumsum(counts)[:-1])
    return label, components


def _scatter_pairs(n: int, iu: np.ndarray, ju: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Sum per-pair values into their nodes (+ at ``i``, - at ``j``), almost exactly.

    The sum at a node is computed with the error-free splitting of Rump, Ogita and Oishi
    (ExtractVector): every term is split into a high part, a multiple of a power of two
    chosen per node so that the high parts add up without any rounding, and a low part
    of size ``~eps`` relative to the terms, which is summed normally. The result has
    an error of one rounding of the exact sum plus at most ``4 k**2 eps**2`` times the
    sum of the absolute terms (``k`` terms at the node), so large terms that cancel at a
    node (the currents of strongly weighted pairs around inconsistent loops) leave no
    spurious net value behind, where plain summation leaves ``~eps`` times them.

    Parameters
    ----------
    n : int
        Number of nodes.
    iu, ju : numpy.ndarray
        Endpoints of the pairs.
    value : numpy.ndarray
        One float64 value per pair.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` float64 nodal sums.
    """
    node = np.concatenate([iu, ju])
    term = np.concatenate([value, -value])
    total = np.bincount(node, np.abs(term), minlength=n)
    # sigma = 2**k >= 4 * sum |term| at the node: the high parts are multiples of
    # 2**-53 * sigma and all their partial sums stay below sigma / 2, hence exact.
    sigma = np.ldexp(1.0, np.frexp(total)[1] + 2)[node]
    high = (sigma + term) - sigma
    low = term - high
    return np.bincount(node, high, minlength=n) + np.bincount(node, low, minlength=n)


def _gauge_nodes(
    n: int, iu: np.ndarray, ju: np.ndarray, cond: np.ndarray, label: np.ndarray
) -> np.ndarray:
    """Choose the unknown held at 0 in every component.

    Parameters
    ----------
    n : int
        Number of unknowns.
    iu, ju : numpy.ndarray
        Endpoints of the used pairs.
    cond : numpy.ndarray
        Scaled squared weights of the used pairs.
    label : numpy.ndarray
        Component number of every unknown (-1 for unknowns in no pair).

    Returns
    -------
    numpy.ndarray
        ``(n,)`` bool, True for the unknowns that are solved for: members of a
        component except its gauge, the member with the largest weighted degree (the
        lowest index on ties).
    """
    members = np.flatnonzero(label >= 0)
    wdeg = np.bincount(iu, cond, minlength=n) + np.bincount(ju, cond, minlength=n)
    order = np.lexsort((members, -wdeg[members], label[members]))
    first = np.ones(order.size, dtype=bool)
    first[1:] = label[members[order[1:]]] != label[members[order[:-1]]]
    free = label >= 0
    free[members[order[first]]] = False
    return free


class _AccurateLaplacianFactor:
    """Subtraction-free symmetric elimination of a grounded weighted graph Laplacian.

    The fallback factorisation of `_solve_laplacian`. The matrix is never stored as
    numbers that cancel: it is kept as its positive edge conductances plus, per node,
    the conductance to the ground (the gauge unknowns). Eliminating a node ``p`` of
    total conductance ``D`` adds ``c_ap * c_bp / D`` between its neighbours and
    ``c_ap * g_p / D`` to a neighbour's ground conductance; every pivot is a sum of
    positive numbers, so the factor has a small relative error in every entry however
    widely the weights range (ordinary LU computes the pivot of a weakly attached
    cluster as a difference of large numbers and can lose it entirely). Nodes are
    eliminated in approximate minimum-degree order. Plain Python: slower than SuperLU,
    used only when SuperLU fails or its refinement does not converge.

    Parameters
    ----------
    nfree : int
        Number of unknowns of the reduced system.
    ia, ja : numpy.ndarray
        Endpoints (reduced indices) of the pairs joining two free unknowns.
    cij : numpy.ndarray
        Their conductances (> 0).
    ground : numpy.ndarray
        ``(nfree,)`` total conductance of each free unknown to gauge unknowns.
    """

    def __init__(
        self, nfree: int, ia: np.ndarray, ja: np.ndarray, cij: np.ndarray, ground: np.ndarray
    ):
        adj: list[dict[int, float]] = [{} for _ in range(nfree)]
        for a, b, c in zip(ia.tolist(), ja.tolist(), cij.tolist(), strict=True):
            adj[a][b] = adj[a].get(b, 0.0) + c
            adj[b][a] = adj[a][b]
        gnd = ground.tolist()
        heap = [(len(nbrs), k) for k, nbrs in enumerate(adj)]
        heapq.heapify(heap)
        done = [False] * nfree
        steps: list[tuple[int, float, list[tuple[int, float]]]] = []
        while heap:
            deg, p = heapq.heappop(heap)
            if done[p] or deg != len(adj[p]):
                continue  # already eliminated, or a stale degree (re-pushed on change)
            done[p] = True
            items = list(adj[p].items())
            total = math.fsum(c for _, c in items) + gnd[p]
            for a, _ in items:
                del adj[a][p]
            for k, (a, ca) in enumerate(items):
                gnd[a] += ca * gnd[p] / total
                fa = ca / total
                adj_a = adj[a]
                for b, cb in items[k + 1 :]:
                    adj_a[b] = adj_a.get(b, 0.0) + fa * cb
                    adj[b][a] = adj_a[b]
            for a, _ in items:
                heapq.heappush(heap, (len(adj[a]), a))
            adj[p] = {}
            steps.append((p, total, items))
        self._steps = steps
        self._n = nfree

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        """Solve the factorised system.

        Parameters
        ----------
        rhs : numpy.ndarray
            ``(nfree,)`` right-hand side.

        Returns
        -------
        numpy.ndarray
            ``(nfree,)`` solution.
        """
        g = rhs.tolist()
        for p, total, items in self._steps:
            gp = g[p] / total
            for a, ca in items:
                g[a] += ca * gp
        x = [0.0] * self._n
        for p, total, items in reversed(self._steps):
            x[p] = (g[p] + math.fsum(ca * x[a] for a, ca in items)) / total
        return np.array(x)


def _refine(
    solve,
    n: int,
    iu: np.ndarray,
    ju: np.ndarray,
    diff: np.ndarray,
    cond: np.ndarray,
    free_idx: np.ndarray,
) -> tuple[np.ndarray, float, int]:
    """Solve the normal equations by iterative refinement with pair-wise residuals.

    Parameters
    ----------
    solve : callable
        Approximate inverse of the reduced Laplacian (``rhs -> solution``).
    n : int
        Number of unknowns.
    iu, ju : numpy.ndarray
        Endpoints of the used pairs.
    diff : numpy.ndarray
        ``sky_i - sky_j`` of the used pairs.
    cond : numpy.ndarray
        Scaled squared weights of the used pairs.
    free_idx : numpy.ndarray
        Indices of the unknowns solved for (the others stay 0).

    Returns
    -------
    x : numpy.ndarray
        ``(n,)`` solution.
    correction : float
        Size (max norm) of the last correction applied, relative to the scale of the
        solution and the data (``inf`` if nothing converged).
    nsolve : int
        Number of solves made.
    """
    x = np.zeros(n)
    scale = float(np.max(np.abs(diff)))
    previous = np.inf
    nsolve = 0
    while nsolve < _MAX_SOLVES:
        nsolve += 1
        # The residual is taken pair by pair and summed almost exactly per node.
        grad = _scatter_pairs(n, iu, ju, cond * (diff - (x[iu] - x[ju])))
        step = solve(grad[free_idx])
        size = float(np.max(np.abs(step)))
        # The first correction may be as large as the first solution when the weights
        # are extreme; from the third solve on, a growing correction means divergence.
        if not np.isfinite(size) or (nsolve > 2 and size > previous):
            break  # keep the last iterate
        x[free_idx] += step
        scale = max(scale, float(np.max(np.abs(x))))
        converged = size <= _REFINE_RTOL * scale
        stalled = nsolve > 2 and size > 0.5 * previous
        previous = size
        if converged or stalled:
            break
    return x, (previous / scale if scale > 0 else 0.0), nsolve


def _solve_laplacian(
    n: int,
    iu: np.ndarray,
    ju: np.ndarray,
    diff: np.ndarray,
    cond: np.ndarray,
    label: np.ndarray,
) -> np.ndarray:
    """Solve the weighted normal equations of the match system, one gauge per component.

    The normal equations of the pair system are ``L d = g`` with ``L`` the graph
    Laplacian weighted by ``cond = (wm / max(wm))**2`` and ``g = K^T W^2 diff``. ``L`` is
    singular with one constant null vector per component; holding one unknown of each
    component at 0 leaves a symmetric positive definite system, factorised once with
    SuperLU. As the weights enter squared and span up to ~13 decades, the factor can be
    inaccurate, so the solution is polished by iterative refinement whose residual is
    evaluated pair by pair (``diff - (d_i - d_j)``) and summed almost exactly per node;
    this makes the result as accurate as the data allow, not limited by the
    conditioning of ``L``. If SuperLU fails or the refinement does not converge
    (weights spanning more than ~15 decades once squared), the system is factorised
    again by `_AccurateLaplacianFactor`.

    Parameters
    ----------
    n : int
        Number of unknowns.
    iu, ju : numpy.ndarray
        Endpoints of the used pairs.
    diff : numpy.ndarray
        ``sky_i - sky_j`` of the used pairs.
    cond : numpy.ndarray
        Scaled squared row weights of the used pairs (all in ``(0, 1]``).
    label : numpy.ndarray
        Component number of every unknown (-1 for unknowns in no pair).

    Returns
    -------
    numpy.ndarray
        ``(n,)`` float64 least-squares deltas with the gauge unknown of every component
        at 0 (0 as well for unknowns in no pair).
    """
    free = _gauge_nodes(n, iu, ju, cond, label)
    free_idx = np.flatnonzero(free)
    if free_idx.size == 0:
        return np.zeros(n)
    rows = np.concatenate([iu, ju, iu, ju])
    cols = np.concatenate([iu, ju, ju, iu])
    vals = np.concatenate([cond, cond, -cond, -cond])
    lap = sp.csr_array((vals, (rows, cols)), shape=(n, n))
    reduced = lap[free_idx, :][:, free_idx].tocsc()
    x, correction, nsolve = np.zeros(n), np.inf, 0
    try:
        lu = splu(
            reduced,
            permc_spec="MMD_AT_PLUS_A",
            diag_pivot_thresh=0.1,
            options={"SymmetricMode": True},
        )
    except RuntimeError as exc:  # "Factor is exactly singular": a pivot cancelled out
        logger.debug("SuperLU failed on the match system (%s)", exc)
    else:
        x, correction, nsolve = _refine(lu.solve, n, iu, ju, diff, cond, free_idx)
    method = "SuperLU"
    if not correction <= _FALLBACK_RTOL:
        logger.info(
            "The match system is badly conditioned (squared pair weights span %.1f "
            "decades); solving it with the subtraction-free elimination instead",
            float(-np.log10(np.min(cond))),
        )
        reduced_index = np.full(n, -1, dtype=np.intp)
        reduced_index[free_idx] = np.arange(free_idx.size)
        ra, rb = reduced_index[iu], reduced_index[ju]
        both = (ra >= 0) & (rb >= 0)
        ground = np.zeros(free_idx.size)
        ground += np.bincount(ra[rb < 0], cond[rb < 0], minlength=free_idx.size)
        ground += np.bincount(rb[ra < 0], cond[ra < 0], minlength=free_idx.size)
        factor = _AccurateLaplacianFactor(free_idx.size, ra[both], rb[both], cond[both], ground)
        x, correction, nsolve = _refine(factor.solve, n, iu, ju, diff, cond, free_idx)
        method = "subtraction-free elimination"
    logger.debug(
        "match system: %d unknowns solved for, %d used pairs, %s, %d solves, "
        "last relative correction %.3g",
        free_idx.size,
        iu.size,
        method,
        nsolve,
        correction,
    )
    if not correction <= _ACCURACY_WARN:
        logger.warning(
            "The match system did not converge (last relative correction %.3g); the sky "
            "offsets may be inaccurate",
            correction,
        )
    return x




def solve_offsets(
    n: int,
    row,
    index,
    coef,
    value,
    weight,
    *,
    match_down: bool = True,
    anchor: str = "global",
    fixed=None,
) -> OffsetSolution:
    """Solve weighted linear equations between ``n`` unknowns given as sparse triplets.

    Equation ``k`` reads ``sum(coef[t] * x[index[t]] for t with row[t] == k) =
    value[k]``, with row weight ``weight[k]`` (``1 / sigma``: the row is multiplied by
    it, so it enters the objective squared).

    Parameters
    ----------
    n : int
        Number of unknowns, >= 0.
    row, index : array_like of int
        For every term: its equation (in ``[0, len(value))``) and its unknown (in
        ``[0, n)``). An unknown appearing twice in an equation has its coefficients
        added.
    coef : array_like of float
        The coefficient of every term.
    value, weight : array_like of float
        Per equation: the measured value and the row weight. An equation with a
        non-finite value, weight or coefficient, a weight <= 0 or no term is not used.
    match_down : bool, optional
        For a difference system: reference the unknowns to the lowest (True, default)
        or the highest (False) one.
    anchor : {'global', 'component'}, optional
        For a difference system: one reference for all connected components
        (``'global'``, default: the offsets between components are arbitrary) or one
        per component (``'component'``: each component's lowest, or highest, unknown
        is exactly 0; ``reference`` is then that of the first component).
    fixed : array_like of int, optional
        For a system that is not a difference system: unknowns held at exactly 0, one
        for every direction the equations cannot see (a plane system: one level per
        connected component). The others are then the unique least-squares solution,
        found by a sparse direct solve of the normal equations polished by iterative
        refinement, instead of LSQR's minimum-norm one (which converges slowly where
        the equations are nearly blind). Should the fixed unknowns not remove every
        blind direction, LSQR is used after all, with a warning.

    Returns
    -------
    OffsetSolution
        The unknowns, their validity and components, the equations used and their
        residuals.

    Raises
    ------
    ValueError
        If ``n`` is negative, the arrays are not 1-D or differ in length, or an
        equation or unknown index is out of range.

    Notes
    -----
    When every used equation is a difference ``x_i - x_j = value`` (one term +1, one
    term -1, ``i != j``), the system is the reference's match system and is solved as
    a graph Laplacian: the weighted normal equations with one unknown per connected
    component held at 0 are factorised once by SuperLU and the solution is polished by
    iterative refinement with residuals computed equation by equation and summed per
    unknown without rounding loss (should SuperLU fail or the refinement not converge,
    because the squared weights span more than ~15 decades, a slower subtraction-free
    elimination takes over). Every component is then shifted to zero mean (the
    minimum-norm solution, as the reference's ``pinv`` gives) and all finite unknowns
    referenced to one of them. With weights spanning up to 9 decades the result agrees
    with the exact least-squares solution to 1e-11 relative to the values or better; a
    warning is logged beyond. The offsets between components stay undetermined, as in
    the reference: a warning says so.

    Any other system (planes, anchors, several terms per equation) is solved by LSQR
    (`scipy.sparse.linalg.lsqr`, started from 0, so the minimum-norm least-squares
    solution) to a relative tolerance of 1e-14, and not referenced.

    Examples
    --------
    Three images in a chain whose skies are 100, 120 and 105: two differences, row
    weights 1.

    >>> sol = solve_offsets(3, row=[0, 0, 1, 1], index=[0, 1, 1, 2],
    ...                     coef=[1.0, -1.0, 1.0, -1.0], value=[-20.0, 15.0],
    ...                     weight=[1.0, 1.0])
    >>> sol.x.tolist(), sol.reference
    ([0.0, 20.0, 5.0], 0)
    """
    n = int(n)
    if n < 0:
        raise ValueError(f"'n' must be >= 0, got {n}")
    check_anchor(anchor)
    val = _as_pair_array("value", value, None)
    neq = val.size
    wgt = _as_pair_array("weight", weight, neq)
    rr = _as_index_array("row", row, neq)
    ii = _as_index_array("index", index, n)
    cc = _as_pair_array("coef", coef, rr.size)
    if ii.size != rr.size:
        raise ValueError(f"'index' has {ii.size} values, expected {rr.size} (one per term)")

    with np.errstate(invalid="ignore"):
        bad_term = np.bincount(rr, ~np.isfinite(cc), minlength=neq) > 0
        nterms = np.bincount(rr, minlength=neq)
        used = np.isfinite(val) & np.isfinite(wgt) & (wgt > 0) & ~bad_term & (nterms > 0)
    term_used = used[rr]
    ends = _difference_ends(rr, ii, cc, used, nterms)
    if ends is not None:
        iu, ju = ends
        x, reference, components = _solve_difference(n, iu, ju, val[used], wgt[used],
                                                      match_down, anchor)
        residual = np.full(neq, np.nan)
        residual[used] = val[used] - (x[iu] - x[ju])
        what = "pair"
    else:
        x, components = _solve_general(n, rr[term_used], ii[term_used], cc[term_used],
                                       val, wgt, used,
                                       None if fixed is None else
                                       _as_index_array("fixed", fixed, n))
        residual = np.full(neq, np.nan)
        fitted = np.bincount(rr[term_used], cc[term_used] * np.nan_to_num(x[ii[term_used]]),
                             minlength=neq)
        residual[used] = val[used] - fitted[used]
        reference = -1
        what = "equation"
    _report(n, components, int(used.sum()), neq, what, anchor)
    return OffsetSolution(
        x=x, valid=np.isfinite(x), components=components, used=used, residual=residual,
        reference=reference, difference=ends is not None,
    )


def _difference_ends(
    row: np.ndarray, index: np.ndarray, coef: np.ndarray, used: np.ndarray,
    nterms: np.ndarray,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Return the two unknowns (+1, -1) of every used equation, if all are differences.

    Returns ``(i, j)`` in equation order, or None when a used equation is not
    ``x_i - x_j`` with ``i != j``.
    """
    nused = int(used.sum())
    if nused == 0:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    neq = used.size
    t = used[row]
    plus = t & (coef == 1.0)
    minus = t & (coef == -1.0)
    if not (
        np.all(nterms[used] == 2)
        and np.all(np.bincount(row[plus], minlength=neq)[used] == 1)
        and np.all(np.bincount(row[minus], minlength=neq)[used] == 1)
    ):
        return None
    i = np.empty(neq, dtype=np.intp)
    j = np.empty(neq, dtype=np.intp)
    i[row[plus]] = index[plus]
    j[row[minus]] = index[minus]
    i, j = i[used], j[used]
    if np.any(i == j):
        return None
    return i, j


#: How a difference system's connected components are referenced (see `solve_offsets`).
ANCHORS = ("global", "component")


def check_anchor(anchor: Any) -> str:
    """Return ``anchor`` if it is one of `ANCHORS`, else raise ValueError."""
    if not isinstance(anchor, str) or anchor not in ANCHORS:
        raise ValueError(f"anchor must be one of {', '.join(map(repr, ANCHORS))}, got "
                         f"{anchor!r}")
    return anchor


def _solve_difference(
    n: int, iu: np.ndarray, ju: np.ndarray, diff: np.ndarray, weight: np.ndarray,
    match_down: bool, anchor: str = "global",
) -> tuple[np.ndarray, int, list[np.ndarray]]:
    """Solve a difference system (the Laplacian path).

    Returns the referenced unknowns, the reference (with ``anchor='component'``, that of
    the first component) and the components.
    """
    label, components = _label_components(n, iu, ju)
    ncomp = len(components)
    x = np.full(n, np.nan)
    if not ncomp:
        return x, -1, components
    wmax = float(weight.max())
    wmin = float(weight.min())
    cond = (weight / wmax) ** 2
    if wmax > _MAX_WEIGHT_RATIO * wmin:
        logger.warning(
            "The pair weights range from %.3g to %.3g; beyond a ratio of %.0e the "
            "match solution is not guaranteed to be accurate",
            wmin,
            wmax,
            _MAX_WEIGHT_RATIO,
        )
    members = np.flatnonzero(label >= 0)
    solved = _solve_laplacian(n, iu, ju, diff, cond, label)
    xm = solved[members]
    lab = label[members]
    mean = np.bincount(lab, xm, minlength=ncomp) / np.bincount(lab, minlength=ncomp)
    x[members] = xm - mean[lab]
    pick = np.argmin if match_down else np.argmax
    if anchor == "component":
        refs = [int(c[pick(x[c])]) for c in components]
        for c, r in zip(components, refs, strict=True):
            x[c] -= x[r]
        return x, refs[0], components
    reference = int(members[pick(x[members])])
    x[members] -= x[reference]
    return x, reference, components


def _solve_general(
    n: int, row: np.ndarray, index: np.ndarray, coef: np.ndarray, value: np.ndarray,
    weight: np.ndarray, used: np.ndarray, fixed: np.ndarray | None = None,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Weighted least squares; the unknowns and the components.

    ``row``, ``index`` and ``coef`` are the terms of the used equations only. Without
    ``fixed``: the minimum-norm solution by LSQR; with it, `_solve_fixed`.
    """
    x = np.full(n, np.nan)
    order = np.argsort(row, kind="stable")
    r, k = row[order], index[order]
    same = r[1:] == r[:-1]
    # unknowns sharing an equation are linked (consecutive terms); every unknown with
    # a term is a node (a self-link)
    _, components = _label_components(n, np.concatenate([k[:-1][same], k]),
                                      np.concatenate([k[1:][same], k]))
    if not components:
        return x, components
    eqs = np.flatnonzero(used)
    wmax = float(weight[used].max())
    w = weight / wmax
    compact = np.full(used.size, -1, dtype=np.intp)
    compact[eqs] = np.arange(eqs.size)
    matrix = sp.csr_array((coef * w[row], (compact[row], index)), shape=(eqs.size, n))
    rhs = value[eqs] * w[eqs]
    members = np.concatenate(components)
    if fixed is not None:
        solved = _solve_fixed(matrix, rhs, members, fixed)
        if solved is not None:
            x[members] = solved[members]
            return x, components
    out = lsqr(matrix, rhs, atol=1e-14, btol=1e-14, conlim=1e14,
               iter_lim=max(1000, 50 * n))
    istop, itn = int(out[1]), int(out[2])
    if istop in (3, 6, 7):
        logger.warning("The equations were not solved to full accuracy (LSQR stopped "
                       "with code %d after %d iterations)", istop, itn)
    x[members] = out[0][members]
    return x, components


#: Largest number of refinement steps of `_solve_fixed`.
_FIXED_STEPS = 10


def _solve_fixed(matrix: Any, rhs: np.ndarray, members: np.ndarray,
                 fixed: np.ndarray) -> np.ndarray | None:
    """Least squares with some unknowns held at 0, by the normal equations.

    The normal matrix of the free unknowns is factorised once by SuperLU and the
    solution refined with residuals of the original rows (each step removes the
    error of the squared conditioning). Returns the ``(n,)`` solution (0 at the fixed
    unknowns and outside ``members``), or None, logged, when the normal matrix is
    singular (the fixed unknowns leave a blind direction) or the refinement diverges.
    """
    free = np.zeros(matrix.shape[1], dtype=bool)
    free[members] = True
    free[fixed] = False
    cols = np.flatnonzero(free)
    x = np.zeros(matrix.shape[1])
    if cols.size == 0:
        return x
    a = matrix[:, cols].tocsc()
    normal = (a.T @ a).tocsc()
    try:
        lu = splu(normal, permc_spec="MMD_AT_PLUS_A")
    except RuntimeError as exc:
        logger.warning("The equations leave a direction undetermined (%s); solving them "
                       "by LSQR instead", exc)
        return None
    z = np.zeros(cols.size)
    scale = max(float(np.max(np.abs(rhs))), np.finfo(float).tiny)
    for _ in range(_FIXED_STEPS):
        step = lu.solve(a.T @ (rhs - a @ z))
        if not np.all(np.isfinite(step)):
            logger.warning("The normal equations diverged; solving them by LSQR instead")
            return None
        z += step
        if float(np.max(np.abs(step))) <= _REFINE_RTOL * max(scale, float(np.max(np.abs(z)))):
            break
    x[cols] = z
    return x


def _report(n: int, components: list[np.ndarray], nused: int, neq: int, what: str,
            anchor: str = "global") -> None:
    """Log the disconnected components and the unknowns in no used equation."""
    ninside = int(sum(c.size for c in components))
    if len(components) > 1:
        how = ""
        if what == "pair":
            how = (" (each component is referenced to its own lowest or highest image: "
                   "their skies are not tied to each other)" if anchor == "component" else
                   " (each component is centred on its own mean and all share one "
                   "reference)")
        logger.warning(
            "The overlap graph has %d disconnected components; the sky offsets between "
            "components are not constrained by the data%s.", len(components), how,
        )
    logger.debug("%s system: %d unknowns, %d of %d %ss used, %d in %ss, rank %d",
                 "match" if what == "pair" else "linear", n, nused, neq, what,
                 ninside, what, ninside - len(components))
    nfree = n - ninside
    if nfree:
        inside = np.zeros(n, dtype=bool)
        if components:
            inside[np.concatenate(components)] = True
        lonely = np.flatnonzero(~inside)
        shown = ", ".join(str(k) for k in lonely[:10]) + (", ..." if nfree > 10 else "")
        # a general system's unknowns are its caller's (three per group for planes): the
        # caller names the images; a match system's unknowns are the groups themselves
        logger.log(
            logging.WARNING if what == "pair" else logging.DEBUG,
            "%d of %d unknowns take part in no usable %s (indices %s); their match "
            "offsets cannot be computed.",
            nfree,
            n,
            what,
            shown,
        )
