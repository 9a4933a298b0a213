"""Paired differences: ``pair_stat="difference"`` against each image's own statistics and stcal.

Run from the repository root::

    python -m benchmarks paired                        # 6x6 tiles, with and without a nebula
    python -m benchmarks paired --cases 6x6 dithers8 realwcs --no-stcal
    python -m benchmarks paired --cases 6x6-nebula --stats median mode

Cases (seeded 2048x2048 float32 mosaics, the ``match`` benchmark's, `bench_match`):

* ``6x6``: 6x6 tiles, 10 % overlap, skies 100-120, noise 1-2, point and extended
  sources (the mosaic of ``shared/PEERS.md``);
* ``6x6-nebula``: the same plus `skyeq.synthetic.add_nebula` (four Gaussians on the sky,
  peaks up to 300 noise sigmas: overlaps filled with emission varying across them);
* ``dithers8``, ``realwcs`` (6 dithers on the real NIRCam gwcs): as in ``match``.

For each: skyeq ``method="match"`` serially with the default own statistics and with
``pair_stat="difference"``, numba warm (a small mosaic of the same statistic is matched
first), median of ``--repeat`` runs of each, the two paths alternating; stcal 1.20
(own statistics, one run) unless ``--no-stcal``. "err" is `bench_match`'s (and
PEERS.md's): the largest absolute error of the relative skies, ``max |d - mean(d)|``,
``d = sky - true sky``, in data units (noise 1-2); "rms/sigma" the RMS of
``d - mean(d)`` in units of each image's noise. "ms per pair" divides the skyeq time by
the number of overlapping pairs (what the issue compares: the difference path's work is
per pair, the own path's per image).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ._common import environment, markdown_table
from .bench_match import _mosaic, _wrap

CASES = ("6x6", "6x6-nebula", "dithers8", "realwcs")


def _case(name: str):
    from skyeq import synthetic

    if name == "6x6-nebula":
        return synthetic.add_nebula(_mosaic("6x6"))
    return _mosaic(name)


def _errors(sky: np.ndarray, truth: np.ndarray, noise: np.ndarray) -> tuple[float, float]:
    d = np.asarray(sky, dtype=float) - truth
    d -= d.mean()
    return float(np.abs(d).max()), float(np.sqrt(np.mean((d / noise) ** 2)))


def _skyeq(m, stat: str, repeat: int) -> tuple[dict[str, float], dict[str, np.ndarray], int]:
    """Time both paths, alternating (own, difference, then difference, own, ...).

    Returns the median time and the skies of each ``pair_stat``, and the pair count: a
    change of load on the shared machine then hits both paths alike.
    """
    import skyeq

    st = skyeq.SkyStat(stat, nclip=5, lsigma=4.0, usigma=4.0, binwidth=0.1)
    times: dict[str, list[float]] = {"own": [], "difference": []}
    sky, npairs = {}, 0
    for r in range(repeat):
        for pair_stat in ("own", "difference") if r % 2 == 0 else ("difference", "own"):
            t0 = time.perf_counter()
            res = skyeq.match_sky(m.data, m.wcs, stat=st, pair_stat=pair_stat)
            times[pair_stat].append(time.perf_counter() - t0)
            sky[pair_stat] = res.sky
            npairs = len(res.pairs) if pair_stat == "own" else npairs
    return {k: float(np.median(v)) for k, v in times.items()}, sky, npairs


def _stcal(m, stat: str) -> tuple[float, np.ndarray]:
    from stcal.skymatch import skymatch
    from stcal.skymatch.skyimage import SkyImage
    from stcal.skymatch.skystatistics import SkyStats

    st = SkyStats(skystat=stat, nclip=5, lsig=4.0, usig=4.0, binwidth=0.1)
    t0 = time.perf_counter()
    images = [SkyImage(d, np.isfinite(d), *_wrap(w), st, sky_id=k)
              for k, (d, w) in enumerate(zip(m.data, m.wcs, strict=True))]
    skymatch(images, skymethod="match", match_down=True, subtract=False)
    return time.perf_counter() - t0, np.array([im.sky for im in images], dtype=float)


def _warm(stats: list[str]) -> None:
    import skyeq
    from skyeq import synthetic

    m = synthetic.dithers(3, shape=(128, 128), seed=1)
    for stat in stats:
        for pair_stat in ("own", "difference"):
            skyeq.match_sky(m.data, m.wcs, stat=stat, pair_stat=pair_stat)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks paired", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", choices=CASES, default=["6x6", "6x6-nebula"])
    p.add_argument("--stats", nargs="+", default=["median"],
                   choices=["mean", "median", "mode", "midpt"])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--no-stcal", action="store_true")
    args = p.parse_args(argv)
    print(environment())
    _warm(args.stats)
    rows = []
    for name in args.cases:
        m = _case(name)
        for stat in args.stats:
            t, sky, npairs = _skyeq(m, stat, args.repeat)
            t_own, t_diff, own, diff = t["own"], t["difference"], sky["own"], sky["difference"]
            e_own, r_own = _errors(own, m.sky, m.noise)
            e_diff, r_diff = _errors(diff, m.sky, m.noise)
            ref = ("-", "-", "-")
            if not args.no_stcal:
                t_ref, sky_ref = _stcal(m, stat)
                e_ref, r_ref = _errors(sky_ref, m.sky, m.noise)
                ref = (f"{t_ref:.2f}", f"{e_ref:.4f}", f"{r_ref:.4f}")
            rows.append([name, stat, npairs, f"{t_own:.3f}", f"{t_diff:.3f}",
                         f"{1e3 * t_own / npairs:.1f}", f"{1e3 * t_diff / npairs:.1f}",
                         f"{t_diff / t_own:.2f}", f"{e_own:.4f}", f"{r_own:.4f}",
                         f"{e_diff:.4f}", f"{r_diff:.4f}", *ref])
            print(f"  {name} {stat}: own {t_own:.3f} s, difference {t_diff:.3f} s", flush=True)
        del m
    print()
    print(markdown_table(
        ["case", "stat", "pairs", "own s", "difference s", "own ms/pair",
         "difference ms/pair", "time ratio", "own err", "own rms/sigma", "difference err",
         "difference rms/sigma", "stcal s", "stcal err", "stcal rms/sigma"], rows))
    return 0
