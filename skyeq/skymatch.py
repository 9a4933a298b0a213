"""`match_sky`: records -> plan -> dispatch -> methods -> `SkyResult`.

This is the only module that wires the stages together (DESIGN.md), and it has no pixel
loop of its own: `skyeq._records` validates every argument and image up front,
`skyeq._plan` finds the overlaps and makes one task per group (its spans computed as
the task is made), `skyeq._dispatch` runs `skyeq._measure.measure_group` on every task
(serially or on any executor; only small numbers come back), and `skyeq._methods`
solves the offsets and gives every group its sky.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from os import PathLike
from typing import Any

import numpy as np

from . import _dispatch, geometry
from ._measure import measure_group, measure_pairs
from ._methods import (
    check_method,
    check_model,
    check_pair_stat,
    difference_offsets,
    group_skies,
    image_planes,
    match_offsets,
    plane_offsets,
    subtracted,
)
from ._plan import group_tasks, make_plan, pair_tasks, plane_frames
from ._records import DEFAULT_DQBITS, Inputs, check_wcs_list, make_records
from ._skylist import user_skies
from .result import SkyResult, make_pair_table
from .solve import check_anchor
from .stats import SkyStat, as_skystat, notice_first_compile

__all__ = ["match_sky"]

log = logging.getLogger(__name__)


def match_sky(
    data: Sequence[Any],
    wcs: Sequence[Any] | None = None,
    mask: Sequence[np.ndarray | None] | None = None,
    groups: Sequence[Any] | None = None,
    method: str = "match",
    stat: SkyStat | str | None = None,
    match_down: bool = True,
    subtract: bool = False,
    skylist: str | PathLike | Mapping[str, float] | None = None,
    stepsize: float | None = None,
    executor: Executor | None = None,
    progress: bool | Callable[[int, int], Any] = False,
    *,
    dq: Sequence[np.ndarray | None] | None = None,
    dqbits: str | int | None = DEFAULT_DQBITS,
    names: Sequence[str] | None = None,
    inplace: bool = False,
    anchor: str = "global",
    robust: bool = False,
    model: str = "constant",
    pair_stat: str = "own",
) -> SkyResult:
    """Compute and match the sky levels of a set of overlapping images.

    Parameters
    ----------
    data : sequence of images
        The images, in surface-brightness units: 2-D arrays; masked arrays (masked
        pixels are not used); `astropy.nddata.NDData` or ``CCDData`` (their ``mask``,
        True = bad, and their ``wcs`` are used); `astropy.io.fits.HDUList` objects or
        FITS file paths (the SCI extension, else the primary image; the DQ extension;
        the header's WCS, or a JWST datamodel's gwcs). A path is read lazily, like any
        array-like that is read when converted (anything with ``shape`` and
        ``__array__`` that is not a numpy array, such as the file-backed images of
        `skyeq.io.match_files`): it is converted with `numpy.asarray` only inside its
        group's measurement task and released after it, so memory holds one group per
        running task, not the mosaic. ``mask`` and ``dq`` entries may be such
        array-likes too.
    wcs : sequence, optional
        One WCS per image (None for an image that carries its own): astropy.wcs.WCS,
        gwcs, any APE 14 low-level WCS, or a pair of callables ``(fwd, inv)`` with
        ``fwd(x, y) -> (ra, dec)`` and ``inv(ra, dec) -> (x, y)`` (degrees, zero-based
        pixels). Needed by the ``match`` methods (default: each image's own);
        ignored by ``local``, ``global`` and ``user``.
    mask : sequence of bool arrays or None, optional
        Good-pixel masks (True = use). NaN/inf pixels are never used either way.
    groups : sequence, optional
        A group id per image: images sharing an id share one sky (their local sky is
        the minimum of the members'; their sky in an overlap is the npix-weighted mean
        of the members'). Default: every image is its own group.
    method : {'match', 'local', 'global', 'global+match', 'user'}, optional
        ``local``: each group's own sky. ``global``: the minimum local sky, for all.
        ``match``: offsets that minimise the pairwise differences in the overlaps,
        referenced to the lowest (``match_down``) or highest offset. ``global+match``:
        the match offsets plus the smallest ``local - offset``. ``user``: values from
        ``skylist``. Default ``'match'`` (as the JWST step).
    stat : SkyStat or str, optional
        The statistic: a `SkyStat`, or a statistic name (``"mode"`` means
        ``SkyStat("mode")``). Default ``SkyStat("median", nclip=5, lsigma=4, usigma=4)``.
    match_down : bool, optional
        Reference match offsets to the lowest (True, default) or highest sky.
    subtract : bool, optional
        Return sky-subtracted copies in ``result.data`` (or subtract in place with
        ``inplace=True``). Default False. For an image that is read when converted,
        ``result.data`` holds an array-like too: the image minus its sky, computed
        from the image when converted with `numpy.asarray`.
    skylist : path or mapping, optional
        For ``method='user'``: a two-column whitespace file (image name, sky) or a
        mapping name -> sky. Names are compared whole, then by file stem, then by file
        stem without a JWST suffix (``_cal``, ``_crf``, ``-bsub``, ...).
    stepsize : float, optional
        Sample the footprint edges every ``stepsize`` pixels (>= 1; at most 129
        points per side) for distorted WCSs. Default None: the four corners.
    executor : concurrent.futures.Executor, optional
        Runs the tasks: one per image that checks its WCS and outlines its footprint,
        then one per group that computes its overlap spans and measures its images
        (threads work well: the kernels release the GIL; a dask.distributed Client's
        executor works too; with processes the WCSs must be picklable). Default:
        serially. If a task fails, its error names its image or the group's images and
        the tasks not started are cancelled.
    progress : bool or callable, optional
        True: a progress bar for each phase (footprints, overlaps, measuring; with tqdm, the
        extra ``skyeq[progress]``; without it a line per tenth of the work, logged at
        INFO or printed on stderr when INFO is not shown). A callable is called as
        ``progress(done, total)`` after each group's measurement. Default False.
    dq : sequence of int arrays, optional
        Data-quality arrays, turned into masks with ``dqbits`` (ANDed with ``mask``).
    dqbits : str, int or None, optional
        DQ bits to ignore (astropy bitmask syntax with JWST mnemonics; a leading ``~``
        means "all bits but these"). Default ``'~DO_NOT_USE+NON_SCIENCE'``: a pixel is
        bad only when DO_NOT_USE or NON_SCIENCE is set. None: DQ is not used.
    names : sequence of str, optional
        Image names (for messages, the result table and ``method='user'``). Default:
        the file names when every image comes from a file, else none (messages say
        ``#0``, ``#1``, ...).
    inplace : bool, optional
        With ``subtract=True``, subtract from the input arrays themselves (they must be
        writable). Default False.
    anchor : {'global', 'component'}, optional
        How the connected components of the overlap graph are referenced when the
        images do not all overlap (``match`` and ``global+match``). ``'global'``
        (default, the reference's behaviour): one reference for all, so the offsets
        between components are arbitrary (each component is centred on its own mean).
        ``'component'``: each component is referenced to its own lowest (highest with
        ``match_down=False``) image, and with ``global+match`` tied to its own lowest
        ``local - offset``: the skies of different components are then not tied to
        each other, which the warning about the components says.
    robust : bool, optional
        Solve the match robustly (the soft-L1 minimum, then Tukey's biweight by
        reweighting) on the pair residuals scaled by their expected errors, so that a
        few contaminated overlaps (a galaxy, a satellite trail, scattered light in one
        image) do not pull the skies; each pair's factor is the ``robust_weight``
        column of ``result.pairs`` (below 1: down-weighted) and the pairs below 0.5 are
        logged. Default False (the reference's plain weighted least squares).
    model : {'constant', 'plane'}, optional
        ``'constant'`` (default, the reference's): one sky level per image or group.
        ``'plane'`` (``match`` and ``global+match``): a plane ``a + b x + c y`` per
        group, in the pixels of its first image, fitted from both sides' statistics in
        a few cells of every overlap (`skyeq.geometry.split_piece`); ``sky`` (BKGLEVEL)
        is then each image's plane at its own centre and ``result.plane`` holds the
        planes; ``subtract=True`` subtracts the planes. Overlaps see only
        differences: besides the constant, a gradient shared by the whole mosaic is not
        determined (the smallest slopes that fit are chosen). ``sky_err`` is NaN.
    pair_stat : {'own', 'difference'}, optional
        How the sky difference of two overlapping images is measured (``match`` and
        ``global+match``). ``'own'`` (default, the reference's): each image's statistic
        over its own pixels in the overlap, then their difference. ``'difference'``: the
        statistic of the co-located pixel differences: every pixel of one image in the
        overlap minus the other image sampled at the same sky position (bilinear
        interpolation through the two WCSs; pixels good in both), so that sources and
        extended emission common to both images cancel instead of biasing each side's
        statistic differently. The pairs of two groups combine their member pairs'
        differences weighted by their counts. Needs ``model='constant'``.

    Returns
    -------
    SkyResult
        Per image: ``sky`` (BKGLEVEL), ``valid``; overall ``method``, ``subtracted``,
        ``components`` and the ``pairs`` table; for the match methods also the image
        ``footprints`` (RA/Dec outlines, used by `SkyResult.plot`).

    Raises
    ------
    ValueError
        For an unknown method, no images, mismatched lengths or shapes, a missing or
        inconsistent skylist, or a missing WCS for a match method.
    """
    t0 = time.perf_counter()
    meth = check_method(method)
    check_anchor(anchor)
    check_model(model, meth)
    check_pair_stat(pair_stat, model)
    stepsize = geometry.check_stepsize(stepsize)
    stat = as_skystat(stat)
    inputs = make_records(data, wcs=wcs, mask=mask, dq=dq, dqbits=dqbits, groups=groups,
                          names=names, writable=subtract and inplace)
    if meth == "user":
        if skylist is None:
            raise ValueError("method 'user' needs a skylist (a file path or a mapping)")
        sky = user_skies(skylist, inputs.names, len(inputs.records))
        return _result(inputs, meth, sky, np.isfinite(sky), subtract, inplace, t0)
    rule = _nothing_to_match(inputs) if meth == "match" else meth  # how skies are made
    plan = None
    planes = model == "plane" and "match" in rule
    differences = pair_stat == "difference" and "match" in rule
    if "match" in rule:
        notice_first_compile()  # before the geometry kernels compile
        plan = make_plan(inputs, check_wcs_list(inputs, meth), stepsize, executor,
                         progress, cells=planes, pairs=differences)
    want_local = rule != "match"
    meas, pair_meas = [], []
    if differences:
        notice_first_compile(pairs=True)
        tasks = pair_tasks(inputs, plan, stat)
        pair_meas = _dispatch.run(measure_pairs, tasks, executor, progress,
                                  total=len(tasks), phase="measuring pairs")
    if want_local or not differences:
        meas = _dispatch.run(measure_group,
                             group_tasks(inputs, None if differences else plan, stat,
                                         want_local),
                             executor, progress, total=inputs.ngroups, phase="measuring")
    nothing = np.full(inputs.ngroups, np.nan)  # no group task ran (differences, match)
    local = np.array([r.local for r in meas]) if meas else nothing
    local_err = np.array([r.local_err for r in meas]) if meas else nothing
    if want_local:
        for g in np.flatnonzero(~np.isfinite(local)):
            log.warning("Unable to compute the sky of %s: no usable pixel",
                        inputs.group_label(int(g)))
    delta, components, pairs = np.full(inputs.ngroups, np.nan), [], None  # None: no pair
    derr = np.full(inputs.ngroups, np.nan)
    if planes:
        gframes, iframes = plane_frames(inputs, plan)
        fit = plane_offsets(meas, plan.neighbours, plan.cells, gframes, match_down,
                            inputs.group_label, anchor, robust)
        delta, components, pairs = fit.delta, fit.components, make_pair_table(**fit.pairs)
    elif differences:
        delta, components, columns, derr = difference_offsets(
            pair_meas, inputs.gid, inputs.ngroups, match_down, inputs.group_label, anchor,
            robust)
        pairs = make_pair_table(**columns)
    elif plan is not None:
        delta, components, columns, derr = match_offsets(meas, plan.neighbours, match_down,
                                                         inputs.group_label, anchor, robust)
        pairs = make_pair_table(**columns)
    gsky, gvalid = group_skies(rule, local, delta, components, anchor)
    gerr = _sky_errors(rule, local_err, local, derr)
    image_local = np.full(len(inputs.records), np.nan)
    for r in meas:
        image_local[inputs.members[r.index]] = r.member_local
    valid = gvalid[inputs.gid]
    plane = None
    if planes:
        plane = np.where(valid[:, None], image_planes(gsky, fit.slope, inputs.gid, iframes),
                         0.0)
    sky = plane[:, 0] if plane is not None else np.where(gvalid, gsky, 0.0)[inputs.gid]
    return _result(
        inputs, meth, sky, valid, subtract,
        inplace, t0, local=image_local if want_local else None, pairs=pairs, plane=plane,
        components=[np.sort(np.concatenate([inputs.members[g] for g in c]))
                    for c in components],
        sky_err=np.where(gvalid, gerr, np.nan)[inputs.gid],
        footprints=None if plan is None else [np.column_stack(f.radec)
                                              for f in plan.footprints],
    )


def _nothing_to_match(inputs: Inputs) -> str:
    """Return ``"match"``, or ``"global"`` (with a warning) when there is one group only.

    One image (or one group) has nothing to match its sky to: its sky is then its own
    local sky, as ``method="global"`` gives it, rather than an offset that no overlap
    defines.
    """
    if inputs.ngroups != 1:
        return "match"
    what = "one image" if len(inputs.records) == 1 else "one group of images"
    log.warning("nothing to match: %s (%s); its sky is its local sky, as method='global' "
                "gives it (match needs two or more overlapping images or groups)", what,
                inputs.group_label(0))
    return "global"


def _sky_errors(rule: str, local_err: np.ndarray, local: np.ndarray,
                derr: np.ndarray) -> np.ndarray:
    """Return the standard error of every group's sky by ``rule`` (`SkyResult.sky_err`)."""
    n = len(local)
    if rule == "match":
        return derr
    if rule == "local":
        return local_err
    if rule == "global" and np.isfinite(local).any():
        return np.full(n, local_err[np.nanargmin(local)])
    return np.full(n, np.nan)


def _result(inputs: Inputs, method: str, sky: np.ndarray, valid: np.ndarray, subtract: bool,
            inplace: bool, t0: float, *, local: np.ndarray | None = None, pairs: Any = None,
            components: list[np.ndarray] | None = None,
            footprints: list[np.ndarray] | None = None,
            sky_err: np.ndarray | None = None, plane: np.ndarray | None = None) -> SkyResult:
    """Subtract if asked, log the skies, and build the `SkyResult`."""
    slope = None if plane is None else plane[:, 1:]
    out_data = (subtracted([r.data for r in inputs.records], sky, valid, inplace, slope)
                if subtract else None)
    for k in np.flatnonzero(valid):
        log.info("%s: sky background %.6g (%s)", inputs.records[k].label, sky[k], method)
    log.info("sky matching of %d images took %.3f s", len(inputs.records),
             time.perf_counter() - t0)
    return SkyResult(
        sky=np.asarray(sky, dtype=np.float64),
        method=method,
        subtracted=bool(subtract),
        valid=np.asarray(valid, dtype=bool),
        components=components if components is not None else [],
        pairs=pairs if pairs is not None else make_pair_table(),
        names=inputs.names,
        groups=None if inputs.groups is None else np.asarray(inputs.groups),
        local=local,
        data=out_data,
        footprints=footprints,
        sky_err=sky_err,
        plane=plane,
    )
