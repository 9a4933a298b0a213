"""Kernel costs: passes and ns per pixel of every statistic on three region layouts.

Run as ``python -m benchmarks kernels [--size 2048] [--repeat 21] [--nclip 5]``.

Input: a seeded float32 image (Gaussian sky 100, sigma 1, a few hundred point sources
with a Gaussian PSF), no mask, all pixels finite. For every statistic (``nclip=5``,
``lsigma=usigma=4``, ``binwidth=0.1``, numba warm, one thread) and every layout:

* ``whole image``: one region, the image itself, ``SkyStat(...)(image)`` (the kernels
  read the image in place, no gather);
* ``tile strips``: the overlaps of an interior tile of a 6x6 grid with 10 % overlaps,
  its 8 neighbours: 4 edge strips and 4 corner squares, through
  ``region_statistics``: the bucketed-cell path (``cell_stats``) for the mean and the
  median, the direct path (each region gathered, then clipped) for the mode and midpt
  (their cells win only from about one image of region pixels; see
  ``skyeq.stats._CELL_COVERAGE``);
* ``tile strips, direct path``: the same regions through the direct kernel
  ``region_stats``, for comparison;
* ``dithers``: 5 regions each covering 89-93 % of the image (the overlaps with 5
  other pointings shifted by 30-150 pixels along each axis and rotated by up to 0.45
  degrees), through ``region_statistics`` (the cells);
* ``dithers, direct path``: the same regions through ``region_stats``.

Reported per statistic and layout: the median time of ``--repeat`` runs, in ns per
image pixel and per region pixel (summed over the regions), and in passes: the time
over that of one ``numpy.sum`` over the same image. The runs go round robin (each round
times the numpy pass, warm, then every case once; a first round warms up), so that a
change of load on the shared machine hits every case alike; the unit is the median of
the rounds' numpy passes. Also the clipping passes actually run (one
moments pass, then one per clip iteration until the pixel set stops changing, at most
``nclip``), found by re-running the clipping in numpy on the same pixels (its final
pixel counts are checked against the kernels'), and from them an analytic count of the
pixel reads: the direct path reads a region once to gather it (not for the whole
image), once per moments pass, and twice more for the median (coarse histogram, then
the values of the median's bins), the mode and the midpt (min/max, then the histogram);
the cell path reads the covered pixels once (each cell's sums, and the values of the
kept buckets: the tails and, for a median, its middle buckets), the mode and midpt
once more (the buckets straddling a histogram bin edge), and then, per region, only
the kept values (not counted).

For the dithers the phases of the cell path are timed by calling the private kernels of
``skyeq._kernels.stats``: ``_cell_segments`` (rows cut into segments of equal region
coverage), ``_bucket_placement`` (bucket edges from a sample of 16384 values), the one
read ``_bucket_histogram`` (reported without its placement), and the rest of
``cell_stats`` (every region's clipping and final statistic from the buckets, and for
the mode and midpt the second read and the queries again): ``cell_stats`` less the
others. "kept": the values the read copies, per image pixel.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from skyeq import SkyStat, _kernels
from skyeq._kernels import stats as kstats
from skyeq.stats import _takes_cells, region_statistics

from ._common import environment, markdown_table, timeit

STATS = ("mean", "median", "mode", "midpt")
CODES = {"mean": _kernels.STAT_MEAN, "median": _kernels.STAT_MEDIAN,
         "mode": _kernels.STAT_MODE, "midpt": _kernels.STAT_MIDPT}
#: Extra reads of the region by the final statistic on the direct path (see __doc__).
FINAL_READS = {"mean": 0, "median": 2, "mode": 2, "midpt": 2}
#: Pointings of the other dithers: (dx, dy) shift in pixels of a 2048x2048 image (scaled
#: with the size) and rotation in degrees.
DITHERS = ((120.0, -40.0, 0.30), (-90.0, 110.0, -0.40), (60.0, 150.0, 0.15),
           (-150.0, -70.0, -0.20), (30.0, -130.0, 0.45))
BIG = float(np.finfo(np.float64).max)
NO_MASK = np.zeros((0, 0), dtype=np.bool_)


def make_image(size: int, seed: int = 18) -> np.ndarray:
    """Return a seeded float32 sky image: N(100, 1) plus point sources.

    Parameters
    ----------
    size : int
        The image is ``size`` x ``size``.
    seed : int, optional
        Seed of the random generator.

    Returns
    -------
    ndarray of float32, shape (size, size)
    """
    rng = np.random.default_rng(seed)
    img = rng.normal(100.0, 1.0, (size, size)).astype(np.float32)
    half = 10
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    psf = np.exp(-(xx**2 + yy**2) / (2 * 2.0**2)).astype(np.float32)
    nsrc = max(1, size * size // 10000)  # ~420 on 2048x2048
    for _ in range(nsrc):
        y, x = rng.integers(half, size - half, 2)
        img[y - half : y + half + 1, x - half : x + half + 1] += 10 ** rng.uniform(0.5, 3) * psf
    return img


def _box(size: int, lo: float, hi: float) -> tuple[int, int]:
    """First and last pixel index of ``[0, size)`` with centre in ``[lo, hi]``."""
    return max(math.ceil(lo), 0), min(math.floor(hi), size - 1)


def tile_regions(size: int, overlap: float = 0.1) -> list[np.ndarray]:
    """Row spans of the overlaps of an interior tile with its 8 neighbours.

    Neighbours sit ``(1 - overlap) * size`` pixels away along each axis (the layout of
    ``skyeq.synthetic.tile_grid``); a pixel is in an overlap when its centre lies within
    the neighbour's pixel area ``[-0.5, size - 0.5]``.

    Parameters
    ----------
    size : int
        The tiles are ``size`` x ``size``.
    overlap : float, optional
        Fractional overlap of neighbouring tiles.

    Returns
    -------
    list of ndarray of int64, shape (k, 3)
        4 edge strips and 4 corner squares, as ``(row, first, last)`` spans.
    """
    step = (1.0 - overlap) * size
    regions = []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dx == dy == 0:
                continue
            y0, y1 = _box(size, dy * step - 0.5, dy * step + size - 0.5)
            x0, x1 = _box(size, dx * step - 0.5, dx * step + size - 0.5)
            rows = np.arange(y0, y1 + 1, dtype=np.int64)
            regions.append(np.column_stack(
                [rows, np.full_like(rows, x0), np.full_like(rows, x1)]))
    return regions


def dither_region(size: int, dx: float, dy: float, angle_deg: float) -> np.ndarray:
    """Row spans of the overlap with another pointing, shifted and rotated.

    A pixel ``(x, y)`` of this image lies at ``R(-angle) ((x, y) - c - d) + c`` in the
    other image (``c`` the centre, ``d = (dx, dy)``); it is in the overlap when that
    point is within the other image's pixel area ``[-0.5, size - 0.5]`` on both axes,
    which on every row is one interval of columns.

    Parameters
    ----------
    size : int
        Both images are ``size`` x ``size``.
    dx, dy : float
        Shift of the other pointing, in pixels.
    angle_deg : float
        Its rotation, in degrees.

    Returns
    -------
    ndarray of int64, shape (k, 3)
        ``(row, first, last)`` spans.
    """
    c = (size - 1) / 2.0
    cos, sin = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    y = np.arange(size, dtype=float)
    # u = cos * x + bu,  v = -sin * x + bv  (x, y shifted by c + d, then back by c)
    bu = -cos * (c + dx) + sin * (y - c - dy) + c
    bv = sin * (c + dx) + cos * (y - c - dy) + c
    lo, hi = -0.5, size - 0.5
    x_lo = (lo - bu) / cos
    x_hi = (hi - bu) / cos
    if sin > 0.0:
        x_lo = np.maximum(x_lo, (bv - hi) / sin)
        x_hi = np.minimum(x_hi, (bv - lo) / sin)
    elif sin < 0.0:
        x_lo = np.maximum(x_lo, (bv - lo) / sin)
        x_hi = np.minimum(x_hi, (bv - hi) / sin)
    else:
        out = (bv < lo) | (bv > hi)
        x_lo = np.where(out, np.inf, x_lo)
    first = np.maximum(np.ceil(x_lo), 0.0)
    last = np.minimum(np.floor(x_hi), size - 1.0)
    keep = last >= first
    rows = np.arange(size, dtype=np.int64)[keep]
    return np.column_stack([rows, first[keep].astype(np.int64), last[keep].astype(np.int64)])


def region_mask(shape: tuple[int, int], spans: np.ndarray) -> np.ndarray:
    """Boolean image of the pixels of some row spans."""
    out = np.zeros(shape, dtype=bool)
    for r, c0, c1 in spans:
        out[r, c0 : c1 + 1] = True
    return out


def clip_passes(values: np.ndarray, nclip: int, lsigma: float, usigma: float
                ) -> tuple[int, int]:
    """Moments passes the clipping runs on some values, and the pixels it keeps.

    The rule of `skyeq.SkyStat` (no ``lower``/``upper``), in float64 numpy: a first pass
    over the finite values, then up to ``nclip`` passes with the bounds
    ``[mean - lsigma * std, mean + usigma * std]`` of the previous one (``std`` with
    ddof=1), stopping as soon as a pass keeps exactly the pixels of the pass before.

    Parameters
    ----------
    values : ndarray
        The region's values.
    nclip : int
        Most clip iterations.
    lsigma, usigma : float
        Clip limits in units of the standard deviation.

    Returns
    -------
    passes : int
        Moments passes run, from 1 to ``nclip + 1``.
    npix : int
        Pixels of the final pass.
    """
    v = values.astype(np.float64, copy=False)
    keep = np.isfinite(v)
    prev = None
    passes = 1
    for _ in range(nclip):
        n = int(keep.sum())
        if n == 0 or (prev is not None and np.array_equal(keep, prev)):
            break
        sel = v[keep]
        mean, std = float(sel.mean()), float(sel.std(ddof=1)) if n > 1 else 0.0
        prev = keep
        keep = (v >= mean - lsigma * std) & (v <= mean + usigma * std)
        passes += 1
    return passes, int(keep.sum())


@dataclass
class Layout:
    """One region layout of the image: its name, regions and how it is timed."""

    name: str
    regions: list[np.ndarray] | None  # None: the whole image
    path: str  # "in place", "direct-forced" (region_stats) or "auto" (region_statistics)

    def path_of(self, name: str, shape: tuple[int, int]) -> str:
        """Return the path ``region_statistics`` takes for statistic ``name`` here."""
        if self.path != "auto":
            return self.path.replace("-forced", "")
        use = _takes_cells(name, len(self.regions or ()), sum(self.region_pixels(shape)),
                           shape[0] * shape[1])
        return "cells" if use else "direct"

    def region_pixels(self, shape: tuple[int, int]) -> list[int]:
        """Pixels of every region."""
        if self.regions is None:
            return [shape[0] * shape[1]]
        return [int((s[:, 2] - s[:, 1] + 1).sum()) for s in self.regions]


def _concat(regions: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """All spans and the offsets of each region's, as `region_statistics` passes them."""
    off = np.zeros(len(regions) + 1, dtype=np.int64)
    np.cumsum([len(s) for s in regions], out=off[1:])
    return np.ascontiguousarray(np.concatenate(regions), dtype=np.int64), off


def _runner(layout: Layout, stat: SkyStat, img: np.ndarray) -> Callable[[], list[int]]:
    """Return a call computing ``stat`` on the layout (it returns the pixels kept)."""
    if layout.regions is None:
        return lambda: [stat(img).npix]
    if layout.path == "direct-forced":
        spans, off = _concat(layout.regions)
        code = CODES[stat.statistic]

        def direct() -> list[int]:
            _, npix, _ = kstats.region_stats(img, NO_MASK, False, spans, off, False, -BIG,
                                             BIG, stat.nclip, stat.lsigma, stat.usigma,
                                             stat.binwidth, code)
            return [int(n) for n in npix]

        return direct
    regions = layout.regions
    return lambda: [v.npix for v in region_statistics(stat, img, None, regions)[1]]


def measure_layouts(img: np.ndarray, layouts: Sequence[Layout], args: argparse.Namespace
                    ) -> tuple[list[list[object]], float]:
    """Time every statistic on every layout; return the table rows and the numpy pass."""
    npix_img = img.size
    # the clipping passes do not depend on the statistic: once per region
    passes = {}
    kept = {}
    for lay in layouts:
        if lay.regions is None:
            p, n = clip_passes(img.ravel(), args.nclip, 4.0, 4.0)
            passes[lay.name], kept[lay.name] = [p], [n]
            continue
        res = [clip_passes(img[region_mask(img.shape, s)], args.nclip, 4.0, 4.0)
               for s in lay.regions]
        passes[lay.name] = [p for p, _ in res]
        kept[lay.name] = [n for _, n in res]
    cases = []
    for name in STATS:
        stat = SkyStat(name, nclip=args.nclip, lsigma=4.0, usigma=4.0, binwidth=0.1)
        cases += [(name, lay, _runner(lay, stat, img)) for lay in layouts]
    # round robin: every round times the numpy pass (warm, median of 3) and every case
    # once, so that a change of load on the shared machine hits them all alike
    sums: list[float] = []
    times: list[list[float]] = [[] for _ in cases]
    for r in range(args.repeat + 1):  # round 0 warms up
        sums.append(timeit(lambda: img.sum(), 3))
        for k, (_, _, run) in enumerate(cases):
            t0 = time.perf_counter()
            run()
            if r:
                times[k].append(time.perf_counter() - t0)
    t_sum = float(np.median(sums[1:]))
    timed = [(name, lay, float(np.median(t)), run())
             for (name, lay, run), t in zip(cases, times, strict=True)]
    rows: list[list[object]] = []
    for name, lay, t, npix in timed:
        sizes = lay.region_pixels(img.shape)
        p = passes[lay.name]
        path = lay.path_of(name, img.shape)
        if path == "cells":
            union = region_mask(img.shape, np.concatenate(lay.regions)).sum()
            rereads = 2 if name in ("mode", "midpt") else 1
            reads = f"{rereads * union / npix_img:.2f} + kept"
        else:
            gather = 0 if lay.regions is None else 1
            total = sum(n * (gather + q + FINAL_READS[name])
                        for n, q in zip(sizes, p, strict=True))
            reads = f"{total / npix_img:.2f}"
        rows.append([
            name, lay.name, path, len(sizes),
            f"{sum(sizes) / npix_img:.2f}",
            f"{min(p)}" if min(p) == max(p) else f"{min(p)}-{max(p)}",
            f"{t * 1e3:.2f}", f"{t / npix_img * 1e9:.2f}", f"{t / sum(sizes) * 1e9:.2f}",
            f"{t / t_sum:.1f}", reads,
            "yes" if list(npix) == list(kept[lay.name]) else f"no: {npix} vs {kept[lay.name]}",
        ])
    return rows, t_sum


def measure_phases(img: np.ndarray, regions: list[np.ndarray], args: argparse.Namespace,
                   t_sum: float) -> list[list[object]]:
    """Time the phases of the bucketed-cell path on the dithers; return the table rows.

    Each phase is a call of its own: ``_cell_segments``, ``_bucket_placement``,
    ``_bucket_histogram`` (the one read, which runs the placement first: reported
    without it) and ``cell_stats`` (all of it in one call); the rest (queries, and for
    the mode and midpt the second read) is ``cell_stats`` less the others. Round robin
    as in `measure_layouts`; each figure is the median over the rounds.
    """
    ny, nx = img.shape
    spans, off = _concat(regions)
    scratch = np.empty(img.size + 1, dtype=img.dtype)
    kept_v = np.empty(img.size // 4 + 1, dtype=img.dtype)
    kept_k = np.empty(img.size // 4 + 1, dtype=np.int32)
    seg, keys = kstats._cell_segments(spans, off, ny, nx, False)
    ncell = keys.shape[0]
    print(f"  dithers: {len(seg)} segments in {ncell} cells", flush=True)
    calls = {
        "segments": lambda: kstats._cell_segments(spans, off, ny, nx, False),
        "placement": lambda: kstats._bucket_placement(img, NO_MASK, False, seg, -BIG, BIG),
    }
    kept = {}
    for name, code in CODES.items():
        flags = (name in ("mode", "midpt"), name in ("median", "midpt"), False)
        part, _, _ = kstats._bucket_histogram(img, NO_MASK, False, seg, ncell, -BIG, BIG,
                                              scratch, kept_v, kept_k, *flags)
        kept[name] = int(part[2][:, -1].sum())
        calls["read " + name] = lambda flags=flags: kstats._bucket_histogram(
            img, NO_MASK, False, seg, ncell, -BIG, BIG, scratch, kept_v, kept_k, *flags)
        calls[name] = lambda code=code: kstats.cell_stats(
            img, NO_MASK, False, spans, off, False, -BIG, BIG, args.nclip, 4.0, 4.0, 0.1,
            code, scratch, kept_v, kept_k)
    times: dict[str, list[float]] = {k: [] for k in calls}
    for r in range(args.repeat + 1):
        for key, call in calls.items():
            t0 = time.perf_counter()
            call()
            if r:  # round 0 warms up
                times[key].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    rows: list[list[object]] = []
    for name in STATS:
        read = med["read " + name] - med["placement"]
        rest = med[name] - med["segments"] - med["placement"] - read
        phases = (med["segments"], med["placement"], read, rest, med[name])
        rows.append([name] + [f"{t * 1e3:.2f} ({t / t_sum:.1f})" for t in phases]
                    + [f"{kept[name] / img.size:.3f}", f"{100 * read / med[name]:.0f} %"])
    return rows


def measure_direct(img: np.ndarray, args: argparse.Namespace, t_sum: float
                   ) -> list[list[object]]:
    """Time the two phases of the direct path on the whole image; return the table rows.

    The clipping (`clip_moments`: all its moments passes) and the final statistic
    (`_median_near`, or `histogram_stat` for mode and midpt, with the final clip
    bounds), round robin as in `measure_phases`.
    """
    flat = img.reshape(-1)
    n = flat.size
    count, mean, std, lo, hi = kstats.clip_moments(flat, n, -BIG, BIG, args.nclip, 4.0, 4.0)
    calls = {
        "clip": lambda: kstats.clip_moments(flat, n, -BIG, BIG, args.nclip, 4.0, 4.0),
        "median": lambda: kstats._median_near(flat, n, lo, hi, count, mean, std),
        "mode": lambda: kstats.histogram_stat(flat, n, lo, hi, BIG, std, 0.1, False),
        "midpt": lambda: kstats.histogram_stat(flat, n, lo, hi, BIG, std, 0.1, True),
    }
    times: dict[str, list[float]] = {k: [] for k in calls}
    for r in range(args.repeat + 1):
        for key, call in calls.items():
            t0 = time.perf_counter()
            call()
            if r:  # round 0 warms up (and compiles these kernels' own signatures)
                times[key].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    rows: list[list[object]] = []
    for name in STATS:
        final = med.get(name, 0.0)
        total = med["clip"] + final
        rows.append([name] + [f"{t * 1e3:.2f} ({t / t_sum:.1f})"
                              for t in (med["clip"], final, total)]
                    + [f"{100 * final / total:.0f} %"])
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks kernels", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=21, help="runs per timing (median)")
    parser.add_argument("--nclip", type=int, default=5)
    args = parser.parse_args(argv)

    print(environment())
    t0 = time.perf_counter()
    img = make_image(args.size)
    scale = args.size / 2048  # the same coverage on other sizes
    dithers = [dither_region(args.size, dx * scale, dy * scale, a) for dx, dy, a in DITHERS]
    strips = tile_regions(args.size)
    layouts = [
        Layout("whole image", None, "in place"),
        Layout("tile strips", strips, "auto"),
        Layout("tile strips, direct path", strips, "direct-forced"),
        Layout("dithers", dithers, "auto"),
        Layout("dithers, direct path", dithers, "direct-forced"),
    ]
    cover = ", ".join(f"{n / img.size:.3f}" for n in layouts[3].region_pixels(img.shape))
    print(f"dither regions cover {cover} of the image", flush=True)
    _kernels.warmup()
    print(f"timing: {args.repeat} rounds of {4 * len(layouts)} cases, then the phases ...",
          flush=True)
    rows, t_sum = measure_layouts(img, layouts, args)
    phase_rows = measure_phases(img, dithers, args, t_sum)
    direct_rows = measure_direct(img, args, t_sum)
    print(f"\n{args.size}x{args.size} float32, nclip={args.nclip}, lsigma=usigma=4, median of "
          f"{args.repeat} runs, one thread; one numpy.sum pass: {t_sum * 1e3:.2f} ms "
          f"({t_sum / img.size * 1e9:.3f} ns per pixel)\n")
    print(markdown_table(
        ["statistic", "layout", "path", "regions", "region px / image px", "moments passes",
         "ms", "ns / image px", "ns / region px", "numpy passes", "reads / image px",
         "npix as numpy"],
        rows,
    ))
    print("\nPhases of the cell path on the dithers: ms (numpy passes)\n")
    print(markdown_table(
        ["statistic", "segments", "bucket placement", "read", "queries (+ second read)",
         "cell_stats", "kept / image px", "read share"],
        phase_rows,
    ))
    print("\nPhases of the direct path on the whole image: ms (numpy passes)\n")
    print(markdown_table(
        ["statistic", "clipping (moments passes)", "final statistic", "sum",
         "final statistic share"],
        direct_rows,
    ))
    print(f"\nwhole run {time.perf_counter() - t0:.0f} s")
    return 0
