"""``skyeq.compat.stcal.skymatch`` against ``stcal.skymatch.skymatch``: the one-import switch.

Run from the repository root::

    python -m benchmarks compat                       # 6x6 tiles and the NIRCam dithers
    python -m benchmarks compat --stats mode median

Both sides build the same objects from the same arrays (`SkyStats`, a `SkyImage` per
image around the WCS callables, boolean masks of the finite pixels) and call
``skymatch(images, skymethod="match")``, as a pipeline does; the time covers building
the objects (stcal traces every footprint there) and the call. A gwcs is passed as the
JWST step passes it, ``wcs.__call__`` and ``wcs.invert`` (skyeq.compat then uses the gwcs
itself); an astropy WCS as ``all_pix2world`` / ``all_world2pix`` wrappers. The mosaics are those of
``python -m benchmarks match`` (``6x6``: 36 TAN tiles of 2048x2048; ``realwcs``: 6
dithers of the real NIRCam gwcs). stcal runs once, skyeq ``--repeat`` times (median),
warm. "|skyeq - stcal|" is the largest difference of the skies in noise units.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ._common import environment, markdown_table
from .bench_match import CASES as LABELS
from .bench_match import _mosaic, _warmup, _wrap

CASES = ("6x6", "realwcs")


def _callables(w):
    """Return the (wcs_fwd, wcs_inv) a pipeline gives SkyImage: a gwcs's own methods."""
    if hasattr(w, "forward_transform"):
        return w.__call__, w.invert
    return _wrap(w)


def _run(mod, m, stat: str) -> tuple[float, np.ndarray]:
    masks = [np.isfinite(d) for d in m.data]
    t0 = time.perf_counter()
    skystat = mod.SkyStats(skystat=stat, nclip=5, lsig=4.0, usig=4.0, binwidth=0.1)
    images = [mod.SkyImage(d, good, *_callables(w), skystat, sky_id=k)
              for k, (d, good, w) in enumerate(zip(m.data, masks, m.wcs, strict=True))]
    mod.skymatch(images, skymethod="match", match_down=True, subtract=False)
    seconds = time.perf_counter() - t0
    return seconds, np.array([im.sky for im in images], dtype=float)


def main(argv: list[str]) -> int:
    """Time both on each case and print a markdown table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks compat", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--stats", nargs="+", default=["median"],
                        choices=["mean", "median", "mode", "midpt"])
    parser.add_argument("--repeat", type=int, default=3, help="skyeq runs (median time)")
    args = parser.parse_args(argv)

    import stcal.skymatch as ref

    from skyeq.compat import stcal as compat

    print(environment())
    print("warming up numba ...", flush=True)
    _warmup()
    rows = []
    for case in args.cases:
        m = _mosaic(case)
        noise = np.asarray(m.noise, dtype=float)
        for stat in args.stats:
            t_ref, sky_ref = _run(ref, m, stat)
            runs = [_run(compat, m, stat) for _ in range(args.repeat)]
            t_ours = float(np.median([t for t, _ in runs]))
            diff = float(np.max(np.abs(runs[0][1] - sky_ref) / noise))
            print(f"  {case} {stat}: stcal {t_ref:.2f} s, skyeq.compat {t_ours:.3f} s",
                  flush=True)
            rows.append([LABELS[case], len(m.data), stat, f"{t_ref:.2f}", f"{t_ours:.3f}",
                         f"{t_ref / t_ours:.0f}x", f"{diff:.1e}"])
    print()
    print(markdown_table(["mosaic", "images", "stat", "stcal.skymatch s",
                          "skyeq.compat.stcal s", "speed-up", "\\|skyeq - stcal\\| / sigma"],
                         rows))
    return 0
