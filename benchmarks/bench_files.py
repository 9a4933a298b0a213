"""Matching FITS files: time and memory of ``skyeq.io`` on mosaics written to disk.

Run from the repository root::

    python -m benchmarks files                         # 3x3 and 6x6 tiles of 2048x2048
    python -m benchmarks files --cases 6x6 --keep DIR  # keep the files in DIR

Each case is a seeded synthetic tile mosaic (`skyeq.synthetic.tile_grid`, 10 %
overlaps, float32 images with a uint32 DQ array, 2048x2048) written as JWST-like FITS
files (empty primary HDU, SCI, DQ). Every measurement runs in a fresh Python process
(numba kernels loaded from the cache first), so that no memory of an earlier run is
reused:

* ``skyeq``: ``io.match_files(paths, method='match', stat=median, subtract=True)``
  (headers and WCS read up front, every image and DQ array read inside its
  measurement task), then ``io.write_results(..., output_dir=...)`` (each subtracted
  image computed from its file while it is written).
* ``all in memory``: what the first release of ``match_files`` did, for comparison:
  every image and DQ array read with ``io.read_image`` first, then ``match_sky`` on
  the arrays (the same skies).

"peak MB" is the largest growth of the process's resident memory during the phase
above what it held before (sampled every 2 ms: a floor). "inputs MB" is the size of
all images and DQ arrays. The reference (the JWST step) reads datamodels, which need
the jwst package, so it is not part of this benchmark.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ._common import PeakRSS, environment, markdown_table

SHAPE = (2048, 2048)
CASES = {"3x3": (3, 3), "6x6": (6, 6)}


def _write_case(case: str, directory: Path) -> list[Path]:
    from astropy.io import fits

    from skyeq import synthetic

    nrow, ncol = CASES[case]
    m = synthetic.tile_grid(nrow, ncol, shape=SHAPE, overlap=0.1, noise=(1.0, 2.0),
                            seed=nrow * 10 + ncol, dq_fraction=0.01)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, name in enumerate(m.names):
        hdul = fits.HDUList([fits.PrimaryHDU(),
                             fits.ImageHDU(m.data[k], m.wcs[k].to_header(), name="SCI"),
                             fits.ImageHDU(m.dq[k], name="DQ")])
        paths.append(directory / f"{name}_cal.fits")
        hdul.writeto(paths[-1], overwrite=True)
    return paths


def _child(variant: str, listing: str, out_dir: str) -> None:
    """Run one variant on the files listed in ``listing``; print one JSON line."""
    import skyeq
    from skyeq import _kernels, io, synthetic

    _kernels.warmup()
    small = synthetic.tile_grid(2, 2, shape=(128, 128), seed=0)
    skyeq.match_sky(small.data, small.wcs)
    paths = [Path(p) for p in Path(listing).read_text().split("\n") if p]
    stat = skyeq.SkyStat("median", nclip=5, lsigma=4.0, usigma=4.0)
    with PeakRSS() as mem_match:
        t0 = time.perf_counter()
        if variant == "skyeq":
            res = io.match_files(paths, method="match", stat=stat, subtract=True)
        else:
            images = [io.read_image(p) for p in paths]
            res = skyeq.match_sky([i.data for i in images], [i.wcs for i in images],
                                  dq=[i.dq for i in images], method="match", stat=stat,
                                  subtract=True, names=[str(p) for p in paths])
        t_match = time.perf_counter() - t0
    with PeakRSS() as mem_write:
        t0 = time.perf_counter()
        io.write_results(res, paths, output_dir=out_dir)
        t_write = time.perf_counter() - t0
    print(json.dumps({"t_match": t_match, "mem_match": mem_match.peak / 1e6,
                      "t_write": t_write, "mem_write": mem_write.peak / 1e6,
                      "sky": [float(s) for s in res.sky]}))


def _run(variant: str, paths: list[Path], work: Path) -> dict:
    listing = work / "inputs.txt"
    listing.write_text("\n".join(str(p) for p in paths))
    out = work / f"out-{variant}"
    code = ("import sys; from benchmarks.bench_files import _child; "
            "_child(sys.argv[1], sys.argv[2], sys.argv[3])")
    done = subprocess.run([sys.executable, "-c", code, variant, str(listing), str(out)],
                          check=True, capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks files", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--keep", metavar="DIR", help="write the files here and keep them")
    args = parser.parse_args(argv)

    print(environment())
    rows = []
    with tempfile.TemporaryDirectory(prefix="skyeq-bench-files-") as tmp:
        root = Path(args.keep) if args.keep else Path(tmp)
        for case in args.cases:
            print(f"writing {case} ...", flush=True)
            paths = _write_case(case, root / case)
            inputs_mb = len(paths) * SHAPE[0] * SHAPE[1] * (4 + 4) / 1e6
            results = {}
            for variant in ("skyeq", "all in memory"):
                results[variant] = r = _run(variant, paths, root / case)
                print(f"  {case} {variant}: match {r['t_match']:.2f} s "
                      f"{r['mem_match']:.0f} MB, write {r['t_write']:.2f} s "
                      f"{r['mem_write']:.0f} MB", flush=True)
                rows.append([case, len(paths), f"{inputs_mb:.0f}", variant,
                             f"{r['t_match']:.2f}", f"{r['mem_match']:.0f}",
                             f"{r['t_write']:.2f}", f"{r['mem_write']:.0f}"])
            same = np.array_equal(results["skyeq"]["sky"], results["all in memory"]["sky"])
            print(f"  {case}: the same skies: {same}", flush=True)
            if not same:
                raise SystemExit(f"{case}: the two variants gave different skies")
    print()
    print(markdown_table(
        ["mosaic", "files", "inputs MB", "variant", "match s", "match peak MB", "write s",
         "write peak MB"],
        rows,
    ))
    return 0
