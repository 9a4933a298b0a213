"""`match_sky`: the sky methods, groups, the per-group measurements and the solve.

This is the only module that wires the pieces together (DESIGN.md): inputs become
per-image records, the geometry finds which groups overlap and the row spans of every
overlap in every image, one independent task per group measures its local sky and its
sky inside each overlap (only small numbers come back), and the solver turns the pair
measurements into offsets.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from os import PathLike
from typing import Any

import numpy as np

from . import _dispatch, geometry
from ._methods import METHODS
from ._records import DEFAULT_DQBITS, JWST_DQ_FLAGS, check_dqbits, good_pixels
from ._skylist import user_skies
from .result import SkyResult, make_pair_table
from .solve import combine_global_match, solve_match
from .stats import SkyStat, region_statistics
from .wcs import as_wcs_adapter

__all__ = ["JWST_DQ_FLAGS", "METHODS", "match_sky"]

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class _GroupTask:
    """Everything one group's measurement needs: its images and its overlap spans.

    Images, masks and DQ arrays are held as given: an array-like that loads on demand
    (a file, see `match_sky`) is converted only when the task runs.
    """

    index: int
    members: tuple[int, ...]
    data: tuple[Any, ...]
    masks: tuple[Any, ...]
    dq: tuple[Any, ...]
    dqbits: str | int | None
    neighbours: tuple[int, ...]
    #: spans[m][h]: row spans of member m's pixels in the overlap with neighbour group h
    spans: tuple[tuple[np.ndarray, ...], ...]
    stat: SkyStat
    want_local: bool
    #: the images of the group, for error messages
    label: str = ""


@dataclass(frozen=True)
class _GroupMeasurement:
    index: int
    local: float
    local_npix: int
    member_local: tuple[float, ...]
    sky: np.ndarray  # (len(neighbours),) group statistic in each overlap
    npix: np.ndarray  # (len(neighbours),) pixels behind it


def _measure_group(task: _GroupTask) -> _GroupMeasurement:
    """Measure one group: local sky of each member, and sky in every overlap.

    The group's local sky is the minimum over members that gave a value (the
    reference's rule); its sky in an overlap is the npix-weighted mean of the members'
    statistics there.
    """
    member_local = []
    best, best_n = math.nan, 0
    nb = len(task.neighbours)
    wsum = np.zeros(nb)
    nsum = np.zeros(nb, dtype=np.int64)
    for m, (data, mask, dq) in enumerate(zip(task.data, task.masks, task.dq, strict=True)):
        image = np.asarray(data)
        whole, values = region_statistics(
            task.stat, image, good_pixels(mask, dq, task.dqbits), list(task.spans[m]),
            whole=task.want_local,
        )
        del image  # an image loaded from a file is released before the next one
        value, npix = whole if whole is not None else (math.nan, 0)
        member_local.append(value)
        if npix > 0 and math.isfinite(value) and not value >= best:
            best, best_n = value, npix
        for h, (v, k) in enumerate(values):
            if k > 0 and math.isfinite(v):
                wsum[h] += v * k
                nsum[h] += k
    with np.errstate(invalid="ignore", divide="ignore"):
        sky = np.where(nsum > 0, wsum / np.maximum(nsum, 1), np.nan)
    return _GroupMeasurement(task.index, best, best_n, tuple(member_local), sky, nsum)


def _check_masks(
    data: Sequence[Any],
    mask: Sequence[Any] | None,
    dq: Sequence[Any] | None,
    names: Sequence[str],
) -> tuple[list[Any], list[Any]]:
    """Check the lengths and shapes of masks and DQ arrays; return one entry per image.

    Only shapes are compared (``numpy.shape``), so array-likes that load on demand are
    not loaded here.
    """
    n = len(data)
    out = []
    for label, seq in (("mask", mask), ("dq", dq)):
        if seq is None:
            out.append([None] * n)
            continue
        if len(seq) != n:
            raise ValueError(f"{label} has {len(seq)} entries for {n} images")
        for k in range(n):
            if seq[k] is not None and np.shape(seq[k]) != np.shape(data[k]):
                raise ValueError(
                    f"image {names[k]!r}: {label} shape {np.shape(seq[k])} != data shape "
                    f"{np.shape(data[k])}"
                )
        out.append(list(seq))
    return out[0], out[1]


def _group_index(groups: Sequence[Any] | None, n: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Map group ids to 0..G-1 in order of first appearance; members per group."""
    if groups is None:
        gid = np.arange(n)
    else:
        if len(groups) != n:
            raise ValueError(f"groups has {len(groups)} entries for {n} images")
        order: dict[Any, int] = {}
        gid = np.array([order.setdefault(g, len(order)) for g in groups], dtype=np.intp)
    members = [np.flatnonzero(gid == g) for g in range(int(gid.max()) + 1 if n else 0)]
    return gid, members


def _overlap_plan(
    adapters: list,
    shapes: list[tuple[int, int]],
    gid: np.ndarray,
    members: list[np.ndarray],
    stepsize: int | None,
) -> tuple[list[list[int]], dict[tuple[int, int], list], list[geometry.Footprint]]:
    """Find which groups overlap, and where: footprints, pairs and overlap pieces.

    A group's footprint is its members' footprints (no union polygon): member m of
    group G overlaps group H in the union of m's intersections with H's members.

    Returns
    -------
    neighbours : list of list of int
        The groups each group overlaps, sorted.
    pieces : dict
        ``(image m, group H) -> overlap pieces`` of member m with group H.
    footprints : list of Footprint
        The image footprints (for `SkyResult.footprints`).
    """
    fps = [geometry.footprint(a, s, stepsize) for a, s in zip(adapters, shapes, strict=True)]
    pair_idx, overlaps = geometry.find_overlaps(fps)
    pieces: dict[tuple[int, int], list] = {}
    for (a, b), ov in zip(pair_idx.tolist(), overlaps, strict=True):
        if gid[a] == gid[b] or ov.area <= 0.0:
            continue
        pieces.setdefault((a, int(gid[b])), []).extend(ov.pieces)
        pieces.setdefault((b, int(gid[a])), []).extend(ov.pieces)
    neighbours: list[list[int]] = [[] for _ in range(len(members))]
    for m, h in pieces:
        g = int(gid[m])
        if h not in neighbours[g]:
            neighbours[g].append(h)
    for row in neighbours:
        row.sort()
    return neighbours, pieces, fps


def _group_spans(
    group: np.ndarray,
    neighbours: list[int],
    pieces: dict[tuple[int, int], list],
    adapters: list,
    shapes: list[tuple[int, int]],
) -> tuple[tuple[np.ndarray, ...], ...]:
    """Row spans of each member of a group in its overlap with each neighbour group."""
    empty = np.zeros((0, 3), dtype=np.int64)
    per_member = []
    for m in (int(k) for k in group):
        keys = [h for h in neighbours if (m, h) in pieces]
        found = geometry.overlap_spans_many(
            [pieces[(m, h)] for h in keys], adapters[m], shapes[m]
        ) if keys else []
        by_h = dict(zip(keys, found, strict=True))
        per_member.append(tuple(by_h.get(h, empty) for h in neighbours))
    return tuple(per_member)


def match_sky(
    data: Sequence[np.ndarray],
    wcs: Sequence[Any] | None = None,
    mask: Sequence[np.ndarray | None] | None = None,
    groups: Sequence[Any] | None = None,
    method: str = "match",
    stat: SkyStat | None = None,
    match_down: bool = True,
    subtract: bool = False,
    skylist: str | PathLike | Mapping[str, float] | None = None,
    stepsize: int | None = None,
    executor: Executor | None = None,
    progress: bool | Callable[[int, int], Any] = False,
    *,
    dq: Sequence[np.ndarray | None] | None = None,
    dqbits: str | int | None = DEFAULT_DQBITS,
    names: Sequence[str] | None = None,
    inplace: bool = False,
) -> SkyResult:
    """Compute and match the sky levels of a set of overlapping images.

    Parameters
    ----------
    data : sequence of 2-D arrays
        The images, in surface-brightness units. An image may also be an array-like
        that is read when converted (anything with ``shape`` and ``__array__`` that is
        not a numpy array, such as the file-backed images of `skyeq.io.match_files`):
        it is then converted with `numpy.asarray` only inside its group's measurement
        task and released after it, so memory holds one group per running task, not
        the mosaic. ``mask`` and ``dq`` entries may be such array-likes too.
    wcs : sequence, optional
        One WCS per image: astropy.wcs.WCS, gwcs, any APE 14 low-level WCS, or a pair of
        callables ``(fwd, inv)`` with ``fwd(x, y) -> (ra, dec)`` and
        ``inv(ra, dec) -> (x, y)`` (degrees, zero-based pixels). Needed by the ``match``
        methods; ignored by ``local``, ``global`` and ``user``.
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
    stat : SkyStat, optional
        The statistic. Default ``SkyStat("median", nclip=5, lsigma=4, usigma=4)``.
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
    stepsize : int, optional
        Sample the footprint edges every ``stepsize`` pixels (for distorted WCS).
        Default None: the four corners.
    executor : concurrent.futures.Executor, optional
        Runs the per-group measurement tasks (threads work well: the kernels release
        the GIL; a dask.distributed Client's executor works too). Default: serially.
        Each group's task starts as soon as its overlap spans are computed; if one
        fails, its error names the group's images and the tasks not started are
        cancelled.
    progress : bool or callable, optional
        True: a progress bar over the measurement tasks (with tqdm, the extra
        ``skyeq[progress]``; log lines at INFO without it). A callable is called as
        ``progress(done, total)`` after each group. Default False.
    dq : sequence of int arrays, optional
        Data-quality arrays, turned into masks with ``dqbits`` (ANDed with ``mask``).
    dqbits : str, int or None, optional
        DQ bits to ignore (astropy bitmask syntax with JWST mnemonics; a leading ``~``
        means "all bits but these"). Default ``'~DO_NOT_USE+NON_SCIENCE'``: a pixel is
        bad only when DO_NOT_USE or NON_SCIENCE is set. None: DQ is not used.
    names : sequence of str, optional
        Image names (for messages, the result table and ``method='user'``).
    inplace : bool, optional
        With ``subtract=True``, subtract from the input arrays themselves (they must be
        writable). Default False.

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
    meth = str(method).lower()
    if meth not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    if isinstance(data, np.ndarray) and data.ndim == 2:
        raise TypeError("data must be a sequence of 2-D images, not a single 2-D array")
    data = list(data)
    n = len(data)
    if n == 0:
        raise ValueError("data must contain at least one image")
    for k, img in enumerate(data):
        ndim = len(np.shape(img))  # np.shape reads a .shape without converting
        if ndim != 2:
            raise ValueError(f"image {k} is not a 2-D array (ndim={ndim})")
    if names is not None:
        names = [str(s) for s in names]
        if len(names) != n:
            raise ValueError(f"names has {len(names)} entries for {n} images")
    labels = names if names is not None else [f"#{k}" for k in range(n)]
    if stat is None:
        stat = SkyStat()
    elif not isinstance(stat, SkyStat):
        raise TypeError(f"stat must be a SkyStat, got {type(stat).__name__}")
    if subtract and inplace:
        for k, img in enumerate(data):
            if not (isinstance(img, np.ndarray) and img.flags.writeable):
                raise ValueError(f"inplace=True needs writable arrays; image {labels[k]} is not")

    if meth == "user":
        if skylist is None:
            raise ValueError("method 'user' needs a skylist (a file path or a mapping)")
        sky = user_skies(skylist, names, n)
        valid = np.isfinite(sky)
        return _finish(data, sky, valid, meth, subtract, inplace, [], make_pair_table(),
                       names, groups, None, t0)

    gid, members = _group_index(groups, n)
    ngroups = len(members)
    do_match = "match" in meth
    want_local = meth != "match"
    masks, dqs = _check_masks(data, mask, dq, labels)
    if dq is not None:  # parse before any task: fail fast
        check_dqbits(dqbits)

    if do_match:
        if wcs is None or len(wcs) != n:
            raise ValueError(
                f"method {meth!r} needs one WCS per image ({n}); got "
                f"{'none' if wcs is None else len(wcs)}"
            )
        shapes = [tuple(int(s) for s in np.shape(img)) for img in data]
        # checked once here (inverse measured, refined if needed) for footprints and spans
        adapters = [
            as_wcs_adapter(w, name=labels[k], shape=shapes[k]) for k, w in enumerate(wcs)
        ]
        neighbours, pieces, fps = _overlap_plan(adapters, shapes, gid, members, stepsize)
        outlines = [np.column_stack(fp.radec) for fp in fps]
    else:
        outlines = None
        neighbours = [[] for _ in range(ngroups)]
        pieces = {}

    def spans_of(g: int) -> tuple[tuple[np.ndarray, ...], ...]:
        if not do_match:
            return tuple(() for _ in members[g])
        return _group_spans(members[g], neighbours[g], pieces, adapters, shapes)

    tasks = (
        _GroupTask(
            index=g,
            members=tuple(int(m) for m in members[g]),
            data=tuple(data[m] for m in members[g]),
            masks=tuple(masks[m] for m in members[g]),
            dq=tuple(dqs[m] for m in members[g]),
            dqbits=dqbits,
            neighbours=tuple(neighbours[g]),
            spans=spans_of(g),
            stat=stat,
            want_local=want_local,
            label=", ".join(labels[m] for m in members[g]),
        )
        for g in range(ngroups)
    )
    meas = _dispatch.run(_measure_group, tasks, executor, progress, total=ngroups,
                         phase="measuring")
    local = np.array([r.local for r in meas])
    for r in meas:
        if want_local and not math.isfinite(r.local):
            names_g = ", ".join(labels[m] for m in members[r.index])
            log.warning("Unable to compute the sky of %s: no usable pixel", names_g)

    comps_g: list[np.ndarray] = []
    pairs = make_pair_table()
    delta = np.full(ngroups, np.nan)
    if do_match:
        pi, pj, si, sj, ni, nj = [], [], [], [], [], []
        lookup = {
            (r.index, h): (r.sky[q], r.npix[q])
            for r in meas
            for q, h in enumerate(neighbours[r.index])
        }
        for (g, h), (s_g, n_g) in lookup.items():
            if g < h and (h, g) in lookup:
                s_h, n_h = lookup[(h, g)]
                pi.append(g), pj.append(h), si.append(s_g), sj.append(s_h)
                ni.append(n_g), nj.append(n_h)
        order = np.lexsort((pj, pi)) if pi else np.zeros(0, int)
        cols = [np.asarray(c)[order] for c in (pi, pj, si, sj, ni, nj)]
        sol = solve_match(ngroups, *cols, match_down=match_down)
        delta = sol.delta
        comps_g = sol.components
        pairs = make_pair_table(
            cols[0], cols[1], cols[4], cols[5], cols[2], cols[3], sol.weight, sol.residual
        )
        for g in np.flatnonzero(~sol.valid):
            log.warning(
                "Unable to compute the match offset of %s: no usable overlap",
                ", ".join(labels[m] for m in members[g]),
            )

    if meth == "local":
        gsky, gvalid = local, np.isfinite(local)
    elif meth == "global":
        finite = local[np.isfinite(local)]
        if finite.size:
            gsky, gvalid = np.full(ngroups, finite.min()), np.ones(ngroups, bool)
        else:
            log.warning('Unable to compute the "global" sky value')
            gsky, gvalid = np.full(ngroups, np.nan), np.zeros(ngroups, bool)
    elif meth == "match":
        gsky, gvalid = delta, np.isfinite(delta)
    else:  # global+match
        combined = combine_global_match(local, delta)
        if np.isfinite(combined).any():
            gsky, gvalid = combined, np.isfinite(combined)
        else:
            log.warning('Unable to compute the "global" sky value; keeping the match offsets')
            gsky, gvalid = delta, np.isfinite(delta)

    sky = np.where(gvalid, gsky, 0.0)[gid]
    valid = gvalid[gid]
    image_local = np.full(n, np.nan)
    for r in meas:
        for m, v in zip(members[r.index], r.member_local, strict=True):
            image_local[m] = v
    comps = [np.sort(np.concatenate([members[g] for g in c])) for c in comps_g]
    return _finish(data, sky, valid, meth, subtract, inplace, comps, pairs, names,
                   groups, image_local if want_local else None, t0, footprints=outlines)


def _loads_on_demand(image: Any) -> bool:
    """Whether ``image`` is an array-like that is read when converted (not an ndarray)."""
    return not isinstance(image, np.ndarray) and hasattr(image, "shape") and hasattr(
        image, "__array__"
    )


def _minus(image: np.ndarray, level: float) -> np.ndarray:
    """Return ``image - level``, the level cast to the image's dtype (float32 stays)."""
    return image - np.asarray(level).astype(image.dtype)


class _Subtracted:
    """An image that loads on demand, minus its sky: computed by `numpy.asarray`.

    What `match_sky` returns in ``result.data`` for such inputs, so that subtracting
    the sky of many files never holds more than one image in memory.
    """

    __slots__ = ("image", "level")

    def __init__(self, image: Any, level: float) -> None:
        self.image = image
        self.level = float(level)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the image."""
        return tuple(np.shape(self.image))

    @property
    def ndim(self) -> int:
        """Number of dimensions (2)."""
        return len(self.shape)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = _minus(np.asarray(self.image), self.level)
        return out if dtype is None else out.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"<{self.image!r} minus {self.level:.6g}>"


def _finish(data, sky, valid, method, subtract, inplace, comps, pairs, names, groups, local, t0,
            footprints=None):
    """Subtract if asked, log the skies, and build the `SkyResult`."""
    out_data = None
    if subtract:
        out_data = []
        for k, img in enumerate(data):
            level = sky[k] if valid[k] else 0.0
            if inplace:
                img -= np.asarray(level).astype(img.dtype)
                out_data.append(img)
            elif _loads_on_demand(img):
                out_data.append(_Subtracted(img, level))
            else:
                out_data.append(_minus(np.asarray(img), level))
    for k in range(len(data)):
        label = names[k] if names is not None else f"#{k}"
        if valid[k]:
            log.info("%s: sky background %.6g (%s)", label, sky[k], method)
    log.info("sky matching of %d images took %.3f s", len(data), time.perf_counter() - t0)
    return SkyResult(
        sky=np.asarray(sky, dtype=np.float64),
        method=method,
        subtracted=bool(subtract),
        valid=np.asarray(valid, dtype=bool),
        components=comps,
        pairs=pairs,
        names=list(names) if names is not None else None,
        groups=None if groups is None else np.asarray(groups),
        local=local,
        data=out_data,
        footprints=footprints,
    )
