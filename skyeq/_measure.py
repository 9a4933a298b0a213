"""Run one task: its overlap spans, its images' statistics there, and only numbers back.

Only small numbers come back (a few per image and overlap), so a task can run in
another thread, process or machine. An image that loads on demand (a file) is read
here and released before the next one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._plan import GroupTask
from ._records import good_pixels
from .stats import region_statistics

__all__ = ["GroupMeasurement", "measure_group"]


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
    """

    index: int
    local: float
    local_npix: int
    member_local: tuple[float, ...]
    sky: np.ndarray
    npix: np.ndarray


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
    best, best_n = math.nan, 0
    nb = len(task.neighbours)
    wsum = np.zeros(nb)
    nsum = np.zeros(nb, dtype=np.int64)
    for m, (data, mask, dq) in enumerate(zip(task.data, task.masks, task.dq, strict=True)):
        spans = task.member_spans(m)
        image = np.asarray(data)
        whole, values = region_statistics(
            task.stat, image, good_pixels(mask, dq, task.dqbits), spans,
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
    return GroupMeasurement(task.index, best, best_n, tuple(member_local), sky, nsum)
