"""Per-image HEALPix sky summaries: the clipped sky statistic in every HEALPix cell.

A catalogue-scale matcher (or a pipeline that matches skies on the sphere instead of
image by image) needs each image's sky where it lies, not the pixels: `sky_summaries`
gives, for every image and every NESTED HEALPix pixel (a "cell") the image covers, the
same clipped statistic as everywhere in skyeq, its pixel count and its standard error.
`skyeq.io.write_summaries` writes them as a FITS binary table (the format is described
there and in docs/methods.md).

Each image's pixels are assigned to cells by 16x16 blocks: the WCS is evaluated at the
centre of every block, not at every pixel, so a cell's edge is followed to within 8
pixels; choose ``nside`` so that a cell is much larger than a block (`pixel_size_deg`
gives a cell's size: nside 4096 is 0.86 arcmin, 8192 0.43 arcmin).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy.table import Table

from . import _dispatch
from ._healpix import ang2pix_nest, check_nside, pixel_size_deg
from ._measure import statistic_error
from ._records import DEFAULT_DQBITS, check_wcs_list, good_pixels, make_records
from .stats import SkyStat, as_skystat, region_statistics
from .wcs import as_wcs_adapter

__all__ = ["SUMMARY_COLUMNS", "pixel_size_deg", "sky_summaries"]

log = logging.getLogger(__name__)

#: Pixels per side of the blocks whose centres decide their pixels' cell.
_BLOCK = 16

#: Columns of the summary table, in order, with their descriptions.
SUMMARY_COLUMNS = (
    ("image", "index of the image"),
    ("name", "name of the image"),
    ("cell", "NESTED HEALPix pixel (ICRS)"),
    ("sky", "clipped sky statistic of the image's pixels in the cell"),
    ("npix", "pixels behind it (after masking and clipping)"),
    ("sky_err", "its standard error from the pixels' scatter, NaN for the mode"),
)


@dataclass(frozen=True)
class _SummaryTask:
    """One image to summarise (its data read when the task runs)."""

    index: int
    data: Any
    mask: Any
    dq: Any
    dqbits: str | int | None
    wcs: Any
    shape: tuple[int, int]
    nside: int
    stat: SkyStat
    label: str = ""


def _cell_regions(cells: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray,
                                                                      list[np.ndarray]]:
    """Return the distinct cells of a block map and the row spans of each.

    ``cells`` holds the cell of every block (``ceil(ny / 16) x ceil(nx / 16)``); a
    block's pixels are those of its 16x16 square, clipped to the image.
    """
    ny, nx = shape
    uniq, inverse = np.unique(cells, return_inverse=True)
    inverse = inverse.reshape(cells.shape)
    spans: list[list[np.ndarray]] = [[] for _ in uniq]
    for bi in range(cells.shape[0]):
        rows = np.arange(bi * _BLOCK, min((bi + 1) * _BLOCK, ny), dtype=np.int64)
        lab = inverse[bi]
        starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
        ends = np.r_[starts[1:], lab.size] - 1
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            x0, x1 = s * _BLOCK, min((e + 1) * _BLOCK, nx) - 1
            spans[lab[s]].append(np.column_stack((rows, np.full(rows.size, x0),
                                                  np.full(rows.size, x1))))
    out = []
    for parts in spans:
        sp = np.concatenate(parts)
        out.append(sp[np.argsort(sp[:, 0], kind="stable")])
    return uniq, out


def _summarise(task: _SummaryTask) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Run one `_SummaryTask`: the cells, their statistic, pixel counts and errors."""
    ny, nx = task.shape
    adapter = as_wcs_adapter(task.wcs, name=task.label, shape=task.shape)
    by = np.minimum(np.arange(0, ny, _BLOCK) + (_BLOCK - 1) / 2.0, ny - 1)
    bx = np.minimum(np.arange(0, nx, _BLOCK) + (_BLOCK - 1) / 2.0, nx - 1)
    gx, gy = np.meshgrid(bx, by)
    ra, dec = adapter.pixel_to_world(gx.ravel(), gy.ravel())
    if not (np.all(np.isfinite(ra)) and np.all(np.isfinite(dec))):
        raise ValueError(f"the WCS of {task.label} has no sky position for some pixels")
    block_deg = _BLOCK * math.degrees(adapter.pixel_scale)
    if pixel_size_deg(task.nside) < 4 * block_deg:
        log.warning("%s: HEALPix cells of nside %d (%.3g arcsec) are smaller than 4 blocks "
                    "of %d pixels (%.3g arcsec): their edges are followed only to half a "
                    "block", task.label, task.nside, 3600 * pixel_size_deg(task.nside),
                    _BLOCK, 3600 * block_deg)
    cells = ang2pix_nest(task.nside, ra, dec).reshape(gx.shape)
    uniq, regions = _cell_regions(cells, task.shape)
    image = np.asarray(task.data)
    _, values, spread = region_statistics(
        task.stat, image, good_pixels(task.mask, task.dq, task.dqbits), regions,
        scatter=True,
    )
    del image
    sky = np.array([v for v, _ in values], dtype=np.float64)
    npix = np.array([k for _, k in values], dtype=np.int64)
    err = np.array([statistic_error(task.stat.statistic, float(s), int(k))
                    for s, k in zip(spread[: len(values)], npix, strict=True)])
    return uniq, sky, npix, err


def sky_summaries(
    data: Sequence[Any],
    wcs: Sequence[Any] | None = None,
    mask: Sequence[Any] | None = None,
    *,
    nside: int,
    stat: SkyStat | str | None = None,
    dq: Sequence[Any] | None = None,
    dqbits: str | int | None = DEFAULT_DQBITS,
    names: Sequence[str] | None = None,
    executor: Executor | None = None,
    progress: Any = False,
) -> Table:
    """Summarise every image's sky on the HEALPix grid: its statistic in every cell.

    Parameters
    ----------
    data : sequence of images
        The images, as `skyeq.match_sky` takes them (arrays, masked arrays, NDData,
        HDULists, FITS paths read lazily inside their task).
    wcs : sequence, optional
        One WCS per image (None: the image's own), as for `skyeq.match_sky`.
    mask : sequence of bool arrays or None, optional
        Good-pixel masks (True = use).
    nside : int
        The HEALPix resolution, a power of 2 (cells of `pixel_size_deg` ``(nside)``
        degrees; pick cells much larger than 16 pixels).
    stat : SkyStat or str, optional
        The statistic (default ``SkyStat("median")``, as `skyeq.match_sky`).
    dq, dqbits, names : optional
        As for `skyeq.match_sky`.
    executor : concurrent.futures.Executor, optional
        Runs one task per image (default: serially).
    progress : bool or callable, optional
        As for `skyeq.match_sky`.

    Returns
    -------
    astropy.table.Table
        One row per image and cell it covers, the columns of `SUMMARY_COLUMNS`, in
        image then cell order; ``meta`` holds ``NSIDE``, ``ORDERING`` (``NESTED``),
        ``COORDSYS`` (``C``: the WCSs' equatorial frame), ``SKYSTAT``, ``NCLIP``,
        ``LSIGMA``, ``USIGMA`` and ``BLOCK`` (16). A cell with no usable pixel has
        ``npix`` 0 and NaN ``sky``.

    Raises
    ------
    ValueError
        For an ``nside`` that is not a power of 2 from 1 to 2**29, an image without a
        WCS, or any of `skyeq.match_sky`'s input errors.

    Examples
    --------
    >>> from skyeq import synthetic
    >>> m = synthetic.tile_grid(1, 2, shape=(64, 64), seed=1, point_sources=0,
    ...                         extended_sources=0)
    >>> t = sky_summaries(m.data, m.wcs, nside=2**14)
    >>> t.colnames, t.meta["NSIDE"]
    (['image', 'name', 'cell', 'sky', 'npix', 'sky_err'], 16384)
    >>> int(t["npix"][t["image"] == 0].sum()) > 0.99 * 64 * 64
    True
    """
    nside = check_nside(nside)
    stat = as_skystat(stat)
    inputs = make_records(data, wcs=wcs, mask=mask, dq=dq, dqbits=dqbits, names=names)
    wcs_list = check_wcs_list(inputs, "sky_summaries")
    tasks = [
        _SummaryTask(r.index, r.data, r.mask, r.dq, inputs.dqbits, w, r.shape, nside, stat,
                     r.label)
        for r, w in zip(inputs.records, wcs_list, strict=True)
    ]
    done = _dispatch.run(_summarise, tasks, executor, progress, total=len(tasks),
                         phase="summaries")
    labels = inputs.names or [r.label for r in inputs.records]
    counts = [len(c) for c, _, _, _ in done]
    columns = {
        "image": np.repeat(np.arange(len(done), dtype=np.int64), counts),
        "name": np.repeat(np.array(labels, dtype=str), counts),
        "cell": np.concatenate([c for c, _, _, _ in done]).astype(np.int64),
        "sky": np.concatenate([s for _, s, _, _ in done]),
        "npix": np.concatenate([k for _, _, k, _ in done]).astype(np.int64),
        "sky_err": np.concatenate([e for _, _, _, e in done]),
    }
    table = Table(meta={
        "NSIDE": nside, "ORDERING": "NESTED", "COORDSYS": "C", "SKYSTAT": stat.statistic,
        "NCLIP": stat.nclip, "LSIGMA": stat.lsigma, "USIGMA": stat.usigma, "BLOCK": _BLOCK,
        "CELLDEG": pixel_size_deg(nside),
    })
    for name, description in SUMMARY_COLUMNS:
        table[name] = columns[name]
        table[name].description = description
    return table
