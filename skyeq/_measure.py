"""Run one task: its overlap spans, its images' statistics there, and only numbers back.

Only small numbers come back (a few per image and overlap), so a task can run in
another thread, process or machine. An image that loads on demand (a file) is read
here and released before the next one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import geometry
from ._pairs import pair_difference
from ._plan import GroupTask, PairTask
from ._records import good_pixels
from .stats import region_statistics

__all__ = ["GroupMeasurement", "PairMeasurement", "measure_group", "measure_pairs",
           "statistic_error"]


@dataclass(frozen=True)
class GroupMeasurement:
    """What one group's task measured.

    Parameters
    ----------
    index : int
        The group.
    local, local_npix : float, int
        The group's local sky (the smallest of its members') and its pixel count.
    member_local : tuple of float
        Each member's local sky (NaN where not measured or not usable).
    sky, npix : ndarray
        The group's statistic in the overlap with each neighbour group, and the pixels
        behind it.
    err : ndarray
        The standard error of ``sky`` expected from the pixels' scatter
        (`statistic_error`).
    local_err : float
        That of ``local``.
    centroid : ndarray or None
        For plane models (`GroupTask.centroids`): ``(nregions, 2)`` pixel-count
        weighted mean ``(x, y)`` of the members' region pixels in the first member's
        pixel frame (NaN where none), else None.
    """

    index: int
    local: float
    local_npix: int
    member_local: tuple[float, ...]
    sky: np.ndarray
    npix: np.ndarray
    err: np.ndarray
    local_err: float
    centroid: np.ndarray | None = None


#: Variance of a statistic of ``n`` Gaussian pixels of deviation ``s``, in units of
#: ``s**2 / n``: 1 for the mean, pi/2 for the median (and the midpt, an interpolated
#: median); the histogram mode has no such simple law (NaN: no uncertainty).
_EFFICIENCY = {"mean": 1.0, "median": math.pi / 2, "midpt": math.pi / 2, "mode": math.nan}


def statistic_error(statistic: str, std: float, npix: float) -> float:
    """Return the standard error of a sky statistic of ``npix`` pixels of deviation ``std``.

    Parameters
    ----------
    statistic : str
        The statistic's name.
    std : float
        The ddof=1 standard deviation of the pixels it was computed from.
    npix : float
        Their number.

    Returns
    -------
    float
        ``sqrt(c / npix) * std`` with ``c`` from `_EFFICIENCY` (NaN when unknown or no
        pixel).
    """
    if not npix > 0:
        return math.nan
    return math.sqrt(_EFFICIENCY[statistic] / npix) * std


def _group_error(statistic: str, npix: np.ndarray, std: np.ndarray) -> float:
    """Return the standard error of the npix-weighted mean of members' statistics.

    ``sqrt(sum((n_m * e_m)**2)) / sum(n_m)`` with ``e_m`` each member's
    `statistic_error`; `math.hypot` keeps it from overflowing for data near 1e300.
    """
    ok = npix > 0
    if not ok.any():
        return math.nan
    terms = [k * statistic_error(statistic, s, k) for k, s in zip(npix[ok].tolist(),
                                                                  std[ok].tolist(),
                                                                  strict=True)]
    return math.hypot(*terms) / float(npix[ok].sum())


def measure_group(task: GroupTask) -> GroupMeasurement:
    """Measure one group: local sky of each member, and sky in every overlap.

    The group's local sky is the minimum over members that gave a value (the
    reference's rule); its sky in an overlap is the npix-weighted mean of the members'
    statistics there.

    Parameters
    ----------
    task : GroupTask
        The group.

    Returns
    -------
    GroupMeasurement
        Its numbers.
    """
    member_local = []
    best, best_n, best_err = math.nan, 0, math.nan
    nb = len(task.neighbours)
    wsum = np.zeros(nb)
    counts = np.zeros((len(task.data), nb), dtype=np.int64)  # per member and neighbour
    spreads = np.full((len(task.data), nb), np.nan)
    where, area = np.zeros((nb, 2)), np.zeros(nb)
    for m, (data, mask, dq) in enumerate(zip(task.data, task.masks, task.dq, strict=True)):
        spans = task.member_spans(m)
        if task.centroids:
            xy, k = _region_centres(task, m, spans)
            ok = k > 0
            where[ok] += xy[ok] * k[ok, None]
            area += k
        image = np.asarray(data)
        whole, values, spread = region_statistics(
            task.stat, image, good_pixels(mask, dq, task.dqbits), spans,
            whole=task.want_local, scatter=True,
        )
        del image  # an image loaded from a file is released before the next one
        value, npix = whole if whole is not None else (math.nan, 0)
        member_local.append(value)
        if npix > 0 and math.isfinite(value) and not value >= best:
            best, best_n = value, npix
            best_err = statistic_error(task.stat.statistic, float(spread[-1]), npix)
        for h, (v, k) in enumerate(values):
            if k > 0 and math.isfinite(v):
                wsum[h] += v * k
                counts[m, h] = k
                spreads[m, h] = spread[h]
    nsum = counts.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        sky = np.where(nsum > 0, wsum / np.maximum(nsum, 1), np.nan)
    err = np.array([_group_error(task.stat.statistic, counts[:, h], spreads[:, h])
                    for h in range(nb)])
    centroid = None
    if task.centroids:
        with np.errstate(invalid="ignore", divide="ignore"):
            centroid = where / area[:, None]
    return GroupMeasurement(task.index, best, best_n, tuple(member_local), sky, nsum, err,
                            best_err, centroid)


def _region_centres(task: GroupTask, m: int,
                    spans: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Return the centre of member ``m``'s pixels in each region, in the group's frame.

    The centre is the mean position of the region's pixel centres (masks and clipping
    aside), taken to the first member's pixel frame through the two WCSs.

    Returns
    -------
    xy : ndarray, shape (nregions, 2)
        The centres (NaN where the member has no pixel in the region).
    npix : ndarray, shape (nregions,)
        The regions' pixel counts in this member.
    """
    xy = np.full((len(spans), 2), np.nan)
    npix = np.zeros(len(spans))
    for h, sp in enumerate(spans):
        if len(sp):
            width = (sp[:, 2] - sp[:, 1] + 1).astype(float)
            npix[h] = width.sum()
            xy[h] = (np.dot(width, 0.5 * (sp[:, 1] + sp[:, 2])) / npix[h],
                     np.dot(width, sp[:, 0]) / npix[h])
    ok = npix > 0
    if m > 0 and ok.any():
        ra, dec = task.adapters[m].pixel_to_world(xy[ok, 0], xy[ok, 1])
        x, y = task.adapters[0].world_to_pixel(ra, dec)
        xy[ok] = np.column_stack((x, y))
    return xy, npix


@dataclass(frozen=True)
class PairMeasurement:
    """What one pair task measured: the differences of its image with each partner.

    Parameters
    ----------
    index : int
        The image ``i``.
    partners : tuple of int
        The images ``j``.
    value, npix, err : ndarray
        Per partner: the statistic of ``data_i - data_j`` over their overlap, the number
        of differences behind it and its standard error (`statistic_error`).
    """

    index: int
    partners: tuple[int, ...]
    value: np.ndarray
    npix: np.ndarray
    err: np.ndarray


def measure_pairs(task: PairTask) -> PairMeasurement:
    """Measure the pixel differences of one image with each of its partners.

    The image's overlap with every partner becomes row spans in the image (one batched
    call), then each partner is read, the two are sampled at each other's pixels (both
    ways, on alternate rows, so that the smoothing of interpolation cancels:
    `skyeq._pairs.pair_difference`) and the partner is released.

    Parameters
    ----------
    task : PairTask
        The image and its partners.

    Returns
    -------
    PairMeasurement
        Its numbers.
    """
    spans = geometry.overlap_spans_many([list(p) for p in task.pieces], task.adapter,
                                        task.shape)
    image = np.asarray(task.data)
    good = good_pixels(task.mask, task.dq, task.dqbits)
    nb = len(task.partners)
    value, npix, err = np.full(nb, np.nan), np.zeros(nb, dtype=np.int64), np.full(nb, np.nan)
    for q in range(nb):
        if not len(spans[q]):
            continue
        other = np.asarray(task.partner_data[q])
        v, k, std = pair_difference(
            task.stat, image, good, task.adapter, other,
            good_pixels(task.partner_masks[q], task.partner_dq[q], task.dqbits),
            task.partner_adapters[q], spans[q],
        )
        del other  # a partner read from a file is released before the next one
        if k > 0 and math.isfinite(v):
            value[q], npix[q] = v, k
            err[q] = statistic_error(task.stat.statistic, std, k)
    return PairMeasurement(task.index, task.partners, value, npix, err)
