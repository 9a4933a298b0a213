"""Full sky matching: ``skyeq.match_sky`` against stcal 1.20 ``skymatch`` on the same mosaics.

Run from the repository root::

    python -m benchmarks match                          # 6x6 tiles and 8 dithers, median
    python -m benchmarks match --cases 6x6 --stats median mode

Each case is a seeded synthetic mosaic of 2048x2048 float32 images from
`skyeq.synthetic` (TAN WCS, skies 100-120, noise sigma 1-2, point and extended
sources). Both sides get the same arrays, the same WCS (stcal through the
``(wcs_fwd, wcs_inv)`` callables its ``SkyImage`` takes, wrapping the same astropy
WCS), the same good-pixel masks (all finite pixels) and the same statistic
(``nclip=5``, ``lsigma=usigma=4``, ``binwidth=0.1``), with ``method='match'``.

Timed: skyeq from the arrays to the `SkyResult` (footprints, overlaps, spans,
statistics, solve), numba warm (a small mosaic is matched first), median of
``--repeat`` runs, serially and with a ``ThreadPoolExecutor`` of ``--threads`` threads
as ``executor`` (the per-group tasks release the GIL); stcal from the list of
``SkyImage`` objects to the end of ``skymatch`` (building the SkyImage objects, which
computes their footprints, is timed too), one run. "peak MB" is the largest growth of
the process's resident memory during the run, above what it held before (the input
arrays are already in memory for both), sampled every 2 ms: a floor, since allocations
that live less than 2 ms can be missed. "err" is the largest absolute error of the
recovered relative skies, ``max |d - mean(d)|`` with ``d = sky - true sky``, in data
units.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ._common import PeakRSS, environment, markdown_table

SHAPE = (2048, 2048)
CASES = {
    "6x6": "6x6 tiles, 10 % overlap",
    "dithers8": "8 dithers",
}


def _mosaic(case: str):
    from skyeq import synthetic

    if case == "6x6":
        return synthetic.tile_grid(6, 6, shape=SHAPE, overlap=0.1, noise=(1.0, 2.0), seed=6)
    if case == "dithers8":
        return synthetic.dithers(8, shape=SHAPE, noise=(1.0, 2.0), seed=8)
    raise ValueError(f"unknown case {case!r}; known: {', '.join(CASES)}")


def _err(sky: np.ndarray, truth: np.ndarray) -> float:
    d = np.asarray(sky, dtype=float) - truth
    return float(np.abs(d - d.mean()).max())


def _wrap(w):
    def fwd(x, y, with_bounding_box=False):
        return w.all_pix2world(x, y, 0)

    def inv(ra, dec, with_bounding_box=False):
        return w.all_world2pix(ra, dec, 0)

    return fwd, inv


def _run_skyeq(m, stat: str, repeat: int, threads: int) -> tuple[float, float, float]:
    from concurrent.futures import ThreadPoolExecutor

    import skyeq

    st = skyeq.SkyStat(stat, nclip=5, lsigma=4.0, usigma=4.0, binwidth=0.1)
    times, peak, res = [], 0, None
    pool = ThreadPoolExecutor(threads) if threads > 1 else None
    try:
        for _ in range(repeat):
            with PeakRSS() as mem:
                t0 = time.perf_counter()
                res = skyeq.match_sky(m.data, m.wcs, method="match", stat=st, executor=pool)
                times.append(time.perf_counter() - t0)
            peak = max(peak, mem.peak)
    finally:
        if pool is not None:
            pool.shutdown()
    return float(np.median(times)), peak / 1e6, _err(res.sky, m.sky)


def _run_stcal(m, stat: str) -> tuple[float, float, float]:
    from stcal.skymatch import skymatch
    from stcal.skymatch.skyimage import SkyImage
    from stcal.skymatch.skystatistics import SkyStats

    masks = [np.isfinite(d) for d in m.data]
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        skystat = SkyStats(skystat=stat, nclip=5, lsig=4.0, usig=4.0, binwidth=0.1)
        images = [
            SkyImage(d, good, *_wrap(w), skystat, sky_id=k)
            for k, (d, good, w) in enumerate(zip(m.data, masks, m.wcs, strict=True))
        ]
        skymatch(images, skymethod="match", match_down=True, subtract=False)
        seconds = time.perf_counter() - t0
    sky = np.array([im.sky for im in images], dtype=float)
    return seconds, mem.peak / 1e6, _err(sky, m.sky)


def _warmup() -> None:
    import skyeq
    from skyeq import _kernels, synthetic

    _kernels.warmup()
    small = synthetic.tile_grid(2, 2, shape=(128, 128), seed=0)
    for stat in ("mean", "median", "mode", "midpt"):
        skyeq.match_sky(small.data, small.wcs, stat=skyeq.SkyStat(stat))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks match", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--stats", nargs="+", default=["median"],
                        choices=["mean", "median", "mode", "midpt"])
    parser.add_argument("--repeat", type=int, default=3, help="skyeq runs (median time)")
    parser.add_argument("--threads", type=int, default=2,
                        help="also time skyeq with a ThreadPoolExecutor of this many threads "
                             "(default 2; 1: serial only)")
    parser.add_argument("--no-ref", action="store_true", help="skip stcal")
    args = parser.parse_args(argv)

    print(environment())
    print("warming up numba ...", flush=True)
    _warmup()
    rows = []
    for case in args.cases:
        m = _mosaic(case)
        t_sum = min(
            _time(lambda m=m: sum(float(np.sum(d)) for d in m.data)) for _ in range(3)
        )
        for stat in args.stats:
            t_ours, mem_ours, err_ours = _run_skyeq(m, stat, args.repeat, 1)
            t_par = float("nan")
            if args.threads > 1:
                t_par = _run_skyeq(m, stat, args.repeat, args.threads)[0]
            if args.no_ref:
                t_ref = mem_ref = err_ref = float("nan")
            else:
                t_ref, mem_ref, err_ref = _run_stcal(m, stat)
            rows.append([
                CASES[case], len(m), stat, f"{t_sum:.3f}", f"{t_ref:.2f}", f"{t_ours:.3f}",
                f"{t_ref / t_ours:.0f}x", f"{t_par:.3f}", f"{t_ref / t_par:.0f}x",
                f"{mem_ref:.0f}", f"{mem_ours:.0f}",
                f"{err_ref:.4f}", f"{err_ours:.4f}",
            ])
            print(f"  {case} {stat}: stcal {t_ref:.2f} s, skyeq {t_ours:.3f} s "
                  f"({t_par:.3f} s on {args.threads} threads)", flush=True)
        del m
    print()
    print(markdown_table(
        ["mosaic", "images", "stat", "numpy pass s", "stcal s", "skyeq s", "speed-up",
         f"skyeq s, {args.threads} threads", "speed-up", "stcal peak MB", "skyeq peak MB",
         "stcal err", "skyeq err"],
        rows,
    ))
    return 0


def _time(func) -> float:
    t0 = time.perf_counter()
    func()
    return time.perf_counter() - t0
