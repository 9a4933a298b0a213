"""The plan: which groups overlap, where, and the independent tasks that measure them.

A group's footprint is its members' footprints (no union polygon is built): member m of
group G overlaps group H in the union of m's intersections with H's members, as in the
reference. `make_plan` finds the overlaps (footprints, candidate pairs, exact
intersections); `group_tasks` makes one `GroupTask` per group, lazily, each with the
row spans of its members' pixels in every overlap, so that a dispatcher can start
measuring a group while the next group's spans are computed. Pair tasks (for
``pair_stat="difference"``) will be planned here too.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import geometry
from ._records import Inputs
from .stats import SkyStat

__all__ = ["GroupTask", "Plan", "group_tasks", "make_plan"]


@dataclass(frozen=True)
class GroupTask:
    """Everything one group's measurement needs: its images and its overlap spans.

    Images, masks and DQ arrays are held as given: an array-like that loads on demand
    (a file) is converted only when the task runs. Picklable, for process pools and
    clusters.
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
    """

    neighbours: list[list[int]]
    pieces: dict[tuple[int, int], list]
    footprints: list[geometry.Footprint]
    adapters: list[Any]


def make_plan(inputs: Inputs, adapters: list[Any], stepsize: int | None) -> Plan:
    """Find the footprints, the overlapping pairs and the overlap of every group pair.

    Parameters
    ----------
    inputs : Inputs
        The validated images and groups.
    adapters : list of WCSAdapter
        Their WCSs, checked on them.
    stepsize : int or None
        Footprint outline sampling (see `skyeq.footprints`).

    Returns
    -------
    Plan
        The overlaps.
    """
    gid = inputs.gid
    fps = [geometry.footprint(a, s, stepsize)
           for a, s in zip(adapters, inputs.shapes, strict=True)]
    pair_idx, overlaps = geometry.find_overlaps(fps)
    pieces: dict[tuple[int, int], list] = {}
    for (a, b), ov in zip(pair_idx.tolist(), overlaps, strict=True):
        if gid[a] == gid[b] or ov.area <= 0.0:
            continue
        pieces.setdefault((a, int(gid[b])), []).extend(ov.pieces)
        pieces.setdefault((b, int(gid[a])), []).extend(ov.pieces)
    neighbours: list[list[int]] = [[] for _ in range(inputs.ngroups)]
    for m, h in pieces:
        g = int(gid[m])
        if h not in neighbours[g]:
            neighbours[g].append(h)
    for row in neighbours:
        row.sort()
    return Plan(neighbours, pieces, fps, adapters)


def group_tasks(
    inputs: Inputs, plan: Plan | None, stat: SkyStat, want_local: bool
) -> Iterator[GroupTask]:
    """Yield the measurement task of every group, its spans computed as it is made.

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
        spans = (
            _group_spans(members, neighbours, plan, inputs.shapes)
            if plan is not None else tuple(() for _ in members)
        )
        yield GroupTask(
            index=g,
            members=tuple(int(m) for m in members),
            data=tuple(inputs.data[m] for m in members),
            masks=tuple(inputs.masks[m] for m in members),
            dq=tuple(inputs.dqs[m] for m in members),
            dqbits=inputs.dqbits,
            neighbours=neighbours,
            spans=spans,
            stat=stat,
            want_local=want_local,
            label=inputs.group_label(g),
        )


def _group_spans(
    group: np.ndarray,
    neighbours: tuple[int, ...],
    plan: Plan,
    shapes: list[tuple[int, int]],
) -> tuple[tuple[np.ndarray, ...], ...]:
    """Row spans of each member of a group in its overlap with each neighbour group."""
    empty = np.zeros((0, 3), dtype=np.int64)
    per_member = []
    for m in (int(k) for k in group):
        keys = [h for h in neighbours if (m, h) in plan.pieces]
        found = geometry.overlap_spans_many(
            [plan.pieces[(m, h)] for h in keys], plan.adapters[m], shapes[m]
        ) if keys else []
        by_h = dict(zip(keys, found, strict=True))
        per_member.append(tuple(by_h.get(h, empty) for h in neighbours))
    return tuple(per_member)
