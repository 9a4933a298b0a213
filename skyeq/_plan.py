"""The plan: which groups overlap, where, and the independent tasks that measure them.

A group's footprint is its members' footprints (no union polygon is built): member m of
group G overlaps group H in the union of m's intersections with H's members, as in the
reference. `make_plan` checks every WCS on its image and outlines its footprint (one
dispatcher task per image), then finds the candidate pairs and exact intersections;
`group_tasks` makes one `GroupTask` per group holding its members' overlap pieces,
whose row spans the task computes when it runs (`GroupTask.member_spans`), so that the
spans of different groups are computed in parallel. Pair tasks (for
``pair_stat="difference"``) will be planned here too.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _dispatch, geometry
from ._records import Inputs
from .stats import SkyStat
from .wcs import WCSAdapter, _radec_to_xyz, _tangent_basis, as_wcs_adapter

__all__ = ["GroupTask", "PairTask", "Plan", "group_tasks", "make_plan", "pair_tasks",
           "plane_frames"]


@dataclass(frozen=True)
class GroupTask:
    """Everything one group's measurement needs: its images and its overlaps.

    Images, masks and DQ arrays are held as given: an array-like that loads on demand
    (a file) is converted only when the task runs. The overlaps are held as polygon
    pieces with each member's checked WCS; `member_spans` turns them into row spans
    where the task runs. Picklable, for process pools and clusters (as far as the WCSs
    are).
    """

    index: int
    members: tuple[int, ...]
    data: tuple[Any, ...]
    masks: tuple[Any, ...]
    dq: tuple[Any, ...]
    dqbits: str | int | None
    neighbours: tuple[int, ...]
    #: pieces[m][h]: the overlap pieces of member m with neighbour group h (maybe none)
    pieces: tuple[tuple[tuple[Any, ...], ...], ...]
    #: the members' checked WCSs (None without overlaps) and image shapes
    adapters: tuple[WCSAdapter | None, ...]
    shapes: tuple[tuple[int, int], ...]
    stat: SkyStat
    want_local: bool
    #: the images of the group, for error messages
    label: str = ""
    #: also locate every region (plane models): its centroid in the first member's pixels
    centroids: bool = False

    def member_spans(self, m: int) -> list[np.ndarray]:
        """Row spans of member ``m``'s pixels in its overlap with each neighbour group.

        Parameters
        ----------
        m : int
            The member's position in the group.

        Returns
        -------
        list of ndarray of int64, shape (k, 3)
            One per neighbour group (empty where the member does not overlap it).
        """
        empty = np.zeros((0, 3), dtype=np.int64)
        pieces = self.pieces[m]
        have = [h for h, p in enumerate(pieces) if p]
        if not have:
            return [empty] * len(pieces)
        found = geometry.overlap_spans_many(
            [list(pieces[h]) for h in have], self.adapters[m], self.shapes[m]
        )
        out = [empty] * len(pieces)
        for h, spans in zip(have, found, strict=True):
            out[h] = spans
        return out


@dataclass(frozen=True, eq=False)
class Plan:
    """Which groups overlap, and where.

    Parameters
    ----------
    neighbours : list of list of int
        The groups each group overlaps, sorted.
    pieces : dict
        ``(image m, group H) -> overlap pieces`` of member m with group H.
    footprints : list of Footprint
        The image footprints (for `SkyResult.footprints`).
    adapters : list of WCSAdapter
        The images' checked WCSs.
    cells : ndarray or None
        For plane models (``make_plan(..., cells=True)``): the overlaps are cut into
        cells (`skyeq.geometry.split_piece`) and the regions are cells, not neighbour
        groups: ``neighbours[g]`` lists the cells group ``g`` takes part in, ``pieces``
        is keyed ``(image m, cell)``, and row ``c`` of this ``(ncells, 4)`` int array
        is ``(group G, group H, image of G, image of H)``: the cell lies in the
        overlap of those two images. None otherwise.
    image_pairs : list or None
        For ``pair_stat="difference"`` (``make_plan(..., pairs=True)``): ``(a, b,
        pieces)`` for every two overlapping images of different groups, ``a < b``, in
        order. None otherwise.
    """

    neighbours: list[list[int]]
    pieces: dict[tuple[int, int], list]
    footprints: list[geometry.Footprint]
    adapters: list[Any]
    cells: np.ndarray | None = None
    image_pairs: list[tuple[int, int, list]] | None = None


@dataclass(frozen=True)
class _OutlineTask:
    """Check one image's WCS on it and outline its footprint."""

    wcs: Any
    shape: tuple[int, int]
    stepsize: int | None
    label: str


def _outline(task: _OutlineTask) -> tuple[WCSAdapter, geometry.Footprint]:
    """Run an `_OutlineTask`: the checked WCS and the footprint."""
    adapter = as_wcs_adapter(task.wcs, name=task.label, shape=task.shape)
    return adapter, geometry.footprint(adapter, task.shape, task.stepsize)


def make_plan(
    inputs: Inputs,
    wcs: list[Any],
    stepsize: int | None,
    executor: Executor | None = None,
    progress: _dispatch.Progress = False,
    cells: bool = False,
    pairs: bool = False,
) -> Plan:
    """Find the footprints, the overlapping pairs and the overlap of every group pair.

    Parameters
    ----------
    inputs : Inputs
        The validated images and groups.
    wcs : list
        One WCS per image; each is checked on its image (`skyeq.wcs.as_wcs_adapter`)
        in a task of its own.
    stepsize : int or None
        Footprint outline sampling (see `skyeq.footprints`).
    executor : concurrent.futures.Executor, optional
        Runs the per-image checks (see `skyeq._dispatch.run`), unless it is a thread pool:
        they hold the GIL, and run in this thread then.
    progress : bool or callable, optional
        A progress bar for the checks when True (a callable is not called here: it
        reports the measurements).
    cells : bool, optional
        Cut every overlap of two images into cells, each a region of its own (plane
        models; see `Plan`). Default False: a group's regions are its neighbour groups.
    pairs : bool, optional
        Also keep the overlap of every two images of different groups
        (`Plan.image_pairs`, for pair tasks). Default False.

    Returns
    -------
    Plan
        The overlaps.

    Raises
    ------
    ValueError
        If a WCS cannot be used on its image (the error names it).
    """
    gid = inputs.gid
    tasks = [_OutlineTask(w, r.shape, stepsize, r.label)
             for w, r in zip(wcs, inputs.records, strict=True)]
    # The checks are Python (WCS calls on small arrays: they hold the GIL). On threads
    # they cannot run at once, and taking turns costs: 6 NIRCam gwcs took 55 ms on two
    # threads against 29 ms in this thread (TAN: the same either way). Processes and
    # clusters run them in parallel.
    outline_on = None if isinstance(executor, ThreadPoolExecutor) else executor
    checked = _dispatch.run(_outline, tasks, outline_on,
                            progress if isinstance(progress, bool) else False,
                            phase="footprints")
    adapters = [a for a, _ in checked]
    fps = [f for _, f in checked]
    # one call for every pair (a k-d tree, then the exact intersections); run through
    # the dispatcher as one task so that a progress report names the phase
    [(pair_idx, overlaps)] = _dispatch.run(geometry.find_overlaps, [fps], None,
                                           progress if isinstance(progress, bool) else False,
                                           total=1, phase="overlaps")
    pieces: dict[tuple[int, int], list] = {}
    cell_rows: list[tuple[int, int, int, int]] = []
    image_pairs: list[tuple[int, int, list]] | None = [] if pairs else None
    for (a, b), ov in zip(pair_idx.tolist(), overlaps, strict=True):
        if gid[a] == gid[b] or ov.area <= 0.0:
            continue
        if image_pairs is not None:
            image_pairs.append((min(a, b), max(a, b), list(ov.pieces)))
        if cells:
            for piece in ov.pieces:
                for cell in geometry.split_piece(piece):
                    pieces[(a, len(cell_rows))] = pieces[(b, len(cell_rows))] = [cell]
                    cell_rows.append((int(gid[a]), int(gid[b]), a, b))
            continue
        pieces.setdefault((a, int(gid[b])), []).extend(ov.pieces)
        pieces.setdefault((b, int(gid[a])), []).extend(ov.pieces)
    neighbours: list[list[int]] = [[] for _ in range(inputs.ngroups)]
    if cells:
        for c, (g, h, _, _) in enumerate(cell_rows):
            neighbours[g].append(c)
            neighbours[h].append(c)
        table = np.array(cell_rows, dtype=np.intp).reshape(-1, 4)
        return Plan(neighbours, pieces, fps, adapters, table, image_pairs)
    for m, h in pieces:
        g = int(gid[m])
        if h not in neighbours[g]:
            neighbours[g].append(h)
    for row in neighbours:
        row.sort()
    if image_pairs is not None:
        image_pairs.sort(key=lambda p: (p[0], p[1]))
    return Plan(neighbours, pieces, fps, adapters, None, image_pairs)


def group_tasks(
    inputs: Inputs, plan: Plan | None, stat: SkyStat, want_local: bool
) -> Iterator[GroupTask]:
    """Yield the measurement task of every group (its spans are computed when it runs).

    Parameters
    ----------
    inputs : Inputs
        The validated images and groups.
    plan : Plan or None
        The overlaps (None: the local skies only, no overlap).
    stat : SkyStat
        The statistic.
    want_local : bool
        Also measure each member's whole image.

    Yields
    ------
    GroupTask
        One per group, in group order.
    """
    for g, members in enumerate(inputs.members):
        neighbours = tuple(plan.neighbours[g]) if plan is not None else ()
        pieces = tuple(
            tuple(tuple(plan.pieces.get((int(m), h), ())) for h in neighbours)
            if plan is not None else ()
            for m in members
        )
        yield GroupTask(
            index=g,
            members=tuple(int(m) for m in members),
            data=tuple(inputs.records[m].data for m in members),
            masks=tuple(inputs.records[m].mask for m in members),
            dq=tuple(inputs.records[m].dq for m in members),
            dqbits=inputs.dqbits,
            neighbours=neighbours,
            pieces=pieces,
            adapters=tuple(plan.adapters[m] if plan is not None else None for m in members),
            shapes=tuple(inputs.records[m].shape for m in members),
            stat=stat,
            want_local=want_local,
            label=inputs.group_label(g),
            centroids=plan is not None and plan.cells is not None,
        )


@dataclass(frozen=True)
class PairTask:
    """Measure the pixel differences between one image and its partners.

    For ``pair_stat="difference"``: image ``index`` (``i``) is loaded once; every partner
    ``j`` is loaded in turn and released before the next, so a task holds at most two
    images. Picklable, as far as the WCSs are.
    """

    index: int
    data: Any
    mask: Any
    dq: Any
    adapter: WCSAdapter
    shape: tuple[int, int]
    partners: tuple[int, ...]
    partner_data: tuple[Any, ...]
    partner_masks: tuple[Any, ...]
    partner_dq: tuple[Any, ...]
    partner_adapters: tuple[WCSAdapter, ...]
    #: the overlap pieces with each partner
    pieces: tuple[tuple[Any, ...], ...]
    dqbits: str | int | None
    stat: SkyStat
    #: the image, for error messages
    label: str = ""


def pair_tasks(inputs: Inputs, plan: Plan, stat: SkyStat) -> list[PairTask]:
    """Return the pair tasks: one per image with partners of a higher index.

    Every overlapping pair ``(a, b)``, ``a < b``, of images of different groups is
    measured once, in ``a``'s task: ``a`` is read once and each partner once per task
    it is a partner in (``n + npairs`` reads in all, not ``2 npairs``).

    Parameters
    ----------
    inputs : Inputs
        The validated images.
    plan : Plan
        The overlaps, with ``image_pairs``.
    stat : SkyStat
        The statistic of the differences.

    Returns
    -------
    list of PairTask
        In image order (images without a partner of higher index have no task).
    """
    by_image: dict[int, list[tuple[int, list]]] = {}
    for a, b, pieces in plan.image_pairs or ():
        by_image.setdefault(a, []).append((b, pieces))
    tasks = []
    for a in sorted(by_image):
        rec = inputs.records[a]
        partners = by_image[a]
        js = tuple(b for b, _ in partners)
        tasks.append(PairTask(
            index=a, data=rec.data, mask=rec.mask, dq=rec.dq, adapter=plan.adapters[a],
            shape=rec.shape, partners=js,
            partner_data=tuple(inputs.records[b].data for b in js),
            partner_masks=tuple(inputs.records[b].mask for b in js),
            partner_dq=tuple(inputs.records[b].dq for b in js),
            partner_adapters=tuple(plan.adapters[b] for b in js),
            pieces=tuple(tuple(p) for _, p in partners), dqbits=inputs.dqbits, stat=stat,
            label=rec.label,
        ))
    return tasks


def plane_frames(inputs: Inputs, plan: Plan) -> tuple[np.ndarray, np.ndarray]:
    """Return the pixel frames of plane models: per group, and per image in its group.

    A group's plane lives in the pixels of its first image, about that image's centre.
    Every frame is tied to the others through the least-squares affine map of a 5 x 5
    grid of its pixels (exact for linear WCSs, the best linear one otherwise).

    Parameters
    ----------
    inputs : Inputs
        The validated images and groups.
    plan : Plan
        The overlaps (its checked WCSs map the pixels between the frames).

    Returns
    -------
    groups : ndarray
        ``(ngroups, 9)``: ``xc, yc, L`` of every group's first image (its centre and half
        its larger side, in pixels), then its centre ``X0, Y0`` and Jacobian ``J00, J01,
        J10, J11`` (``d(X, Y) / d(x, y)``) in one gnomonic frame of the whole mosaic
        (radians, about the mean direction of the footprints).
    images : ndarray
        ``(nimages, 6)``: every image's centre in its group's first image's pixels,
        relative to that image's centre, and the Jacobian of the map from the image's
        pixels to those (``dx, dy, J00, J01, J10, J11``).
    """
    tangent = np.concatenate([f.vertices for f in plan.footprints]).sum(axis=0)
    tangent /= np.linalg.norm(tangent)
    east, north = _tangent_basis(tangent[None, :])

    def to_sky_frame(ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        v = _radec_to_xyz(ra, dec)
        v = v / (v @ tangent)[:, None]
        return v @ east[0], v @ north[0]

    gframes = np.empty((inputs.ngroups, 9))
    iframes = np.tile([0.0, 0.0, 1.0, 0.0, 0.0, 1.0], (len(inputs.records), 1))
    for g, members in enumerate(inputs.members):
        f = int(members[0])
        ad = plan.adapters[f]
        affine = _affine(inputs.records[f].shape, lambda x, y, ad=ad: to_sky_frame(
            *ad.pixel_to_world(x, y)))
        gframes[g, :3] = (*_centre(inputs.records[f].shape),
                          max(inputs.records[f].shape) / 2.0)
        gframes[g, 3:] = affine
        for k in (int(m) for m in members[1:]):
            ak = plan.adapters[k]
            dx, dy, *jac = _affine(inputs.records[k].shape,
                                   lambda x, y, ak=ak, ad=ad: ad.world_to_pixel(
                                       *ak.pixel_to_world(x, y)))
            iframes[k] = (dx - gframes[g, 0], dy - gframes[g, 1], *jac)
    return gframes, iframes


def _centre(shape: tuple[int, int]) -> tuple[float, float]:
    """Return the centre ``(xc, yc)`` of an image of ``shape``, in zero-based pixels."""
    return (shape[1] - 1) / 2.0, (shape[0] - 1) / 2.0


def _affine(shape: tuple[int, int], to: Any) -> np.ndarray:
    """Least-squares affine map of an image's pixels by ``to(x, y) -> (X, Y)``.

    Returns ``X0, Y0, J00, J01, J10, J11``: the image centre's image and the Jacobian,
    from a 5 x 5 grid over the image.
    """
    ny, nx = shape
    x, y = (a.ravel() for a in np.meshgrid(np.linspace(0, nx - 1, 5), np.linspace(0, ny - 1, 5)))
    big_x, big_y = to(x, y)
    xc, yc = _centre(shape)
    design = np.column_stack((np.ones(x.size), x - xc, y - yc))
    c = np.linalg.lstsq(design, np.column_stack((big_x, big_y)), rcond=None)[0]
    return np.array([c[0, 0], c[0, 1], c[1, 0], c[2, 0], c[1, 1], c[2, 1]])
