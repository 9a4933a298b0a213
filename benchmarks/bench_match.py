"""Full sky matching: ``skyeq.match_sky`` against stcal 1.20 ``skymatch`` on the same mosaics.

Run from the repository root::

    python -m benchmarks match                          # 6x6 tiles and 8 dithers, median
    python -m benchmarks match --cases realwcs sip --profile
    python -m benchmarks match --cases 6x6 --stats median mode

Each case is a seeded synthetic mosaic of 2048x2048 float32 images from
`skyeq.synthetic` (skies 100-120, noise sigma 1-2, point and extended sources):

* ``6x6``, ``dithers8``, ``dithers16``: TAN WCSs;
* ``realwcs``: 6 dithers of the real JWST NIRCam detector gwcs of ``tests/data``
  (``synthetic.repoint`` by up to 10 arcsec, ~330 pixels), sources fixed on the sky and
  rendered through the distortion, skies 100 plus offsets within +-1, noise 1;
* ``sip``: the same on the HST ACS/WFC SIP header of ``tests/data`` (order-4 SIP, the
  left 2048x2048 half of the chip, dithers up to 15 arcsec, ~300 pixels);
* ``tan6``: the ``realwcs`` layout (same offsets, skies and noise) on a TAN WCS of the
  same pixel scale: what the real WCSs cost is their time beyond this one.

Both sides get the same arrays, the same WCS, the same good-pixel masks (all finite
pixels) and the same statistic (``nclip=5``, ``lsigma=usigma=4``, ``binwidth=0.1``),
with ``method='match'``. stcal takes the WCS as the ``(wcs_fwd, wcs_inv)`` callables of
its ``SkyImage``: astropy's ``all_pix2world`` / ``all_world2pix``, or for a gwcs its
forward and backward transform models composed once (as the Roman step passes them;
the JWST step's ``wcs.invert`` recomposes the backward transform on every call, which
would only slow stcal down).

Timed: skyeq from the arrays to the `SkyResult` (WCS checks, footprints, overlaps,
spans, statistics, solve), numba warm (a small mosaic is matched first), median of
``--repeat`` runs, serially and with a ``ThreadPoolExecutor`` of ``--threads`` threads
as ``executor`` (the per-group tasks release the GIL); stcal from the list of
``SkyImage`` objects to the end of ``skymatch`` (building the SkyImage objects, which
computes their footprints, is timed too), median of ``--ref-repeat`` runs (default
one: stcal's time moves by ~10 % between runs, and the ratio with it). The runs are
interleaved: each round times the numpy pass, one skyeq run of each kind (after an
untimed one: the first skyeq run after a stcal run pays for cold caches and fresh
pages) and one stcal run, so that both sides see the same spells of a shared machine
(skyeq's times moved by up to 50 % between runs minutes apart here). "numpy passes"
is skyeq's time on the threads over the fastest numpy pass: the figure that does not
depend on the machine's speed of the moment. "peak MB" is
the largest growth of the process's resident memory during a first, untimed run of
each (the sampling thread competes for the GIL), above what it held before (the input
arrays are already in memory for both), sampled every 2 ms: a floor, since allocations
that live less than 2 ms can be missed. "err" is the largest absolute error of the
recovered relative skies, ``max |d - mean(d)|`` with ``d = sky - true sky``, in data
units; "|skyeq - stcal|" the largest difference of the two answers. ``--profile``
adds one cProfile'd serial skyeq run per case and prints the share of its time spent
in WCS calls (everything below `skyeq.wcs` entered from outside it) and in the
statistics (`skyeq.stats.region_statistics`); profiling inflates Python-heavy parts.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np

from ._common import PeakRSS, environment, markdown_table

SHAPE = (2048, 2048)
CASES = {
    "6x6": "6x6 tiles, 10 % overlap",
    "dithers8": "8 dithers",
    "dithers16": "16 dithers",
    "realwcs": "6 dithers, NIRCam gwcs",
    "sip": "6 dithers, ACS SIP",
    "tan6": "6 dithers, TAN",
}
DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def _real_wcs(case: str):
    """Read the real WCS of a case from tests/data; also the dither reach in arcsec."""
    if case == "tan6":  # the NIRCam layout without distortion: a TAN WCS, 0.031"/pixel
        from skyeq import synthetic

        w = synthetic.tile_grid(1, 1, shape=SHAPE, pixel_scale=0.031, point_sources=0,
                                extended_sources=0, noise=0.0).wcs[0]
        return w, 10.0
    if case == "realwcs":
        import asdf

        with asdf.open(DATA / "nrcb1-wcs.asdf", lazy_load=False, memmap=False) as af:
            return copy.deepcopy(af["wcs"]), 10.0
    from astropy.io import fits
    from astropy.wcs import WCS

    with fits.open(DATA / "j94f05bgq_flt.fits") as hl:
        return WCS(hl[1].header, hl), 15.0


def _mosaic(case: str):
    from skyeq import synthetic

    if case == "6x6":
        return synthetic.tile_grid(6, 6, shape=SHAPE, overlap=0.1, noise=(1.0, 2.0), seed=6)
    if case == "dithers8":
        return synthetic.dithers(8, shape=SHAPE, noise=(1.0, 2.0), seed=8)
    if case == "dithers16":
        return synthetic.dithers(16, shape=SHAPE, noise=(1.0, 2.0), seed=16)
    if case in ("realwcs", "sip", "tan6"):
        base, reach = _real_wcs(case)
        rng = np.random.default_rng(11)
        offsets = np.vstack([[0.0, 0.0], rng.uniform(-reach, reach, (5, 2))])
        ws = [synthetic.repoint(base, e, n) for e, n in offsets]
        return synthetic.on_wcs(ws, [SHAPE] * 6, sky=100.0 + rng.uniform(-1.0, 1.0, 6),
                                noise=1.0, seed=12)
    raise ValueError(f"unknown case {case!r}; known: {', '.join(CASES)}")


def _err(sky: np.ndarray, truth: np.ndarray) -> float:
    d = np.asarray(sky, dtype=float) - truth
    return float(np.abs(d - d.mean()).max())


def _wrap(w):
    if hasattr(w, "all_pix2world"):
        def fwd(x, y, with_bounding_box=False):
            return w.all_pix2world(x, y, 0)

        def inv(ra, dec, with_bounding_box=False):
            return w.all_world2pix(ra, dec, 0)

        return fwd, inv
    return w.forward_transform, w.backward_transform


class _SkyeqRuns:
    """Timed ``match_sky`` runs of one mosaic and statistic, on ``threads`` threads.

    A context manager (it holds the thread pool); `memory` samples the peak in an
    untimed run, `once` times one run.
    """

    def __init__(self, m, stat: str, threads: int, groups=None) -> None:
        import skyeq

        self._call = lambda pool: skyeq.match_sky(
            m.data, m.wcs, method="match", stat=skyeq.SkyStat(stat, nclip=5, lsigma=4.0,
                                                              usigma=4.0, binwidth=0.1),
            executor=pool, groups=groups)
        self._threads = threads
        self._pool = None
        self.times: list[float] = []
        self.result = None

    def __enter__(self) -> _SkyeqRuns:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(self._threads) if self._threads > 1 else None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    def memory(self) -> float:
        """Peak MB of an untimed run (the sampler holds the GIL: not a timed one)."""
        with PeakRSS() as mem:
            self.result = self._call(self._pool)
        return mem.peak / 1e6

    def warm(self) -> None:
        """Run once, untimed."""
        self._call(self._pool)

    def once(self) -> None:
        t0 = time.perf_counter()
        self.result = self._call(self._pool)
        self.times.append(time.perf_counter() - t0)


def run_skyeq(m, stat: str, repeat: int, threads: int, groups=None) -> tuple[float, float, object]:
    """Time ``match_sky`` on a mosaic: (median s of ``repeat`` runs, peak MB, last `SkyResult`).

    The peak is sampled in a first, untimed run; ``groups`` is passed to ``match_sky``.
    """
    with _SkyeqRuns(m, stat, threads, groups) as runs:
        peak = runs.memory()
        for _ in range(repeat):
            runs.once()
    return float(np.median(runs.times)), peak, runs.result


def _profile_shares(m, stat: str) -> tuple[float, float]:
    """Measure the shares of WCS calls and statistics in a profiled serial skyeq run."""
    import cProfile
    import pstats

    import skyeq

    st = skyeq.SkyStat(stat, nclip=5, lsigma=4.0, usigma=4.0, binwidth=0.1)
    prof = cProfile.Profile()
    prof.runcall(skyeq.match_sky, m.data, m.wcs, method="match", stat=st)
    entries = pstats.Stats(prof).stats
    total = max(ct for (_, _, _, ct, _) in entries.values())

    def inside(func, module: str) -> bool:
        return func[0].replace("\\", "/").endswith(module)

    wcs = sum(  # time of every call into skyeq/wcs.py made from outside it
        caller_ct
        for func, (_, _, _, _, callers) in entries.items() if inside(func, "skyeq/wcs.py")
        for caller, (_, _, _, caller_ct) in callers.items()
        if not inside(caller, "skyeq/wcs.py")
    )
    stats = sum(ct for func, (_, _, _, ct, _) in entries.items()
                if inside(func, "skyeq/stats.py") and func[2] == "region_statistics")
    return wcs / total, stats / total


class _StcalRuns:
    """Timed runs of stcal's ``skymatch`` on one mosaic and statistic.

    ``groups``: a group id per image; images sharing one go into one ``SkyGroup``. A
    run is timed from building the ``SkyImage`` objects (which computes their
    footprints) to the end of ``skymatch``; `sky` holds the last run's skies.
    """

    def __init__(self, m, stat: str, groups=None) -> None:
        self._m, self._stat, self._groups = m, stat, groups
        self._masks = [np.isfinite(d) for d in m.data]
        self.times: list[float] = []
        self.sky = np.full(len(m), np.nan)

    def _run(self) -> None:
        from stcal.skymatch import skymatch
        from stcal.skymatch.skyimage import SkyGroup, SkyImage
        from stcal.skymatch.skystatistics import SkyStats

        m = self._m
        skystat = SkyStats(skystat=self._stat, nclip=5, lsig=4.0, usig=4.0, binwidth=0.1)
        images = [
            SkyImage(d, good, *_wrap(w), skystat, sky_id=k)
            for k, (d, good, w) in enumerate(zip(m.data, self._masks, m.wcs, strict=True))
        ]
        items: list = images
        if self._groups is not None:
            ids = np.asarray(self._groups)
            items = [SkyGroup([images[k] for k in np.flatnonzero(ids == g)], sky_id=int(g))
                     for g in np.unique(ids)]
        skymatch(items, skymethod="match", match_down=True, subtract=False)
        self.sky = np.array([im.sky for im in images], dtype=float)

    def memory(self, timed: bool = False) -> float:
        """Peak MB of a run (sampled: the sampler holds the GIL; ``timed``: time it anyway)."""
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            self._run()
            if timed:
                self.times.append(time.perf_counter() - t0)
        return mem.peak / 1e6

    def once(self) -> None:
        t0 = time.perf_counter()
        self._run()
        self.times.append(time.perf_counter() - t0)


def run_stcal(m, stat: str, groups=None, memory_run: bool = True, repeat: int = 1
              ) -> tuple[float, float, np.ndarray]:
    """Time stcal's ``skymatch`` on a mosaic: (median s of the runs, peak MB, sky of every image).

    ``groups``: see `_StcalRuns`. ``memory_run``: sample the memory in a first, untimed
    run (else during the first timed one). ``repeat``: timed runs (their median time is
    returned).
    """
    runs = _StcalRuns(m, stat, groups)
    peak = runs.memory(timed=not memory_run)
    while len(runs.times) < max(repeat, 1):
        runs.once()
    return float(np.median(runs.times)), peak, runs.sky


def numpy_pass(data) -> float:
    """Time the floor: the fastest of 3 ``numpy.sum`` passes over every array, in s."""
    return min(_time(lambda: sum(float(np.sum(d)) for d in data)) for _ in range(3))


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
    parser.add_argument("--ref-repeat", type=int, default=1,
                        help="stcal runs (median time; default 1: its time moves by "
                             "+-10 %% between runs, so the ratio does too)")
    parser.add_argument("--profile", action="store_true",
                        help="also report the shares of WCS calls and statistics in a "
                             "cProfile'd skyeq run")
    args = parser.parse_args(argv)

    print(environment())
    print("warming up numba ...", flush=True)
    _warmup()
    rows: list[list[object]] = []
    profiles: list[list[object]] = []
    for case in args.cases:
        m = _mosaic(case)
        for stat in args.stats:
            row = _interleaved(m, stat, args)
            rows.append([CASES[case], len(m), stat, *row])
            print(f"  {case} {stat}: stcal {row[1]} s, skyeq {row[2]} s "
                  f"({row[4]} s on {args.threads} threads)", flush=True)
            if args.profile:
                wcs_share, stats_share = _profile_shares(m, stat)
                profiles.append([CASES[case], stat, f"{100 * wcs_share:.0f} %",
                                 f"{100 * stats_share:.0f} %"])
        del m
    print()
    print(markdown_table(
        ["mosaic", "images", "stat", "numpy pass s", "stcal s", "skyeq s", "speed-up",
         f"skyeq s, {args.threads} threads", "speed-up", "numpy passes",
         "stcal peak MB", "skyeq peak MB", "stcal err", "skyeq err",
         "\\|skyeq - stcal\\|"],
        rows,
    ))
    if profiles:
        print()
        print(markdown_table(["mosaic", "stat", "WCS calls", "statistics"], profiles))
    return 0


def _interleaved(m, stat: str, args) -> list[str]:
    """Time skyeq (serial and on ``args.threads`` threads), stcal and the floor in rounds.

    After one untimed run of each for the memory, every round times the numpy pass,
    one skyeq run of each kind (while rounds < ``--repeat``) and one stcal run (while
    rounds < ``--ref-repeat``): the two sides are timed in the same minutes, so that a
    slower spell of a shared machine weighs on both. skyeq's timed runs follow an
    untimed one, as its consecutive runs did before the rounds: the first run after a
    multi-second stcal run pays for cold caches and fresh pages (the NIRCam dithers on
    two threads: ~49 ms right after stcal, ~40 after another skyeq run, measured).
    Returns the table row after
    ``stat``: medians of the runs, the fastest numpy pass, and skyeq's time (on the
    threads) in numpy passes.
    """
    floor = []
    with _SkyeqRuns(m, stat, 1) as ours, _SkyeqRuns(m, stat, args.threads) as par:
        mem_ours = ours.memory()
        ref = None if args.no_ref else _StcalRuns(m, stat)
        mem_ref = ref.memory() if ref is not None else float("nan")
        for r in range(max(args.repeat, 0 if ref is None else args.ref_repeat)):
            floor.append(numpy_pass(m.data))
            if r < args.repeat:
                (par if args.threads > 1 else ours).warm()  # after stcal: see the docstring
                ours.once()
                if args.threads > 1:
                    par.once()
            if ref is not None and r < args.ref_repeat:
                ref.once()
    t_sum = min(floor)
    t_ours = float(np.median(ours.times))
    t_par = float(np.median(par.times)) if par.times else float("nan")
    t_ref = float(np.median(ref.times)) if ref is not None else float("nan")
    sky_ref = ref.sky if ref is not None else np.full(len(m), np.nan)
    best = t_par if par.times else t_ours
    return [
        f"{t_sum:.3f}", f"{t_ref:.2f}", f"{t_ours:.3f}", f"{t_ref / t_ours:.0f}x",
        f"{t_par:.3f}", f"{t_ref / t_par:.0f}x", f"{best / t_sum:.1f}",
        f"{mem_ref:.0f}", f"{mem_ours:.0f}",
        f"{_err(sky_ref, m.sky):.4f}", f"{_err(ours.result.sky, m.sky):.4f}",
        f"{np.abs(ours.result.sky - sky_ref).max():.1e}",
    ]


def _time(func) -> float:
    t0 = time.perf_counter()
    func()
    return time.perf_counter() - t0
