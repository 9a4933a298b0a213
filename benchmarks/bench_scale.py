"""Thousands of images: time and peak memory of ``skyeq.io.match_files`` against their number.

Run from the repository root::

    python -m benchmarks scale --sizes 100 300 1000 --dir /tmp/skyeq-scale
    python -m benchmarks scale --sizes 100 --stcal      # stcal on the 100 too
    python -m benchmarks scale --sizes 1000 --profile   # where the time goes

The mosaics: a grid of tiles, every tile observed at two dither positions (the second
shifted by 6 and 4 arcsec and rotated by 0.3 degree), 2048x2048 float32 images at 0.1
arcsec per pixel with 10 % overlaps between neighbouring tiles, TAN WCSs in the FITS
headers; sizes 100 (10x5 tiles x 2), 300 (15x10 x 2) and 1000 (25x20 x 2). Each image is
a constant sky (seeded, 100 to 120) plus Gaussian noise of sigma 1 (no sources: this
measures the machinery, not the statistics' robustness), written once as a plain FITS
file (one primary HDU, 16.8 MB) into ``--dir`` and reused by later runs (a manifest
holds the true skies).

Each size runs ``io.match_files(paths, method="match")`` (median, nclip=5) in a fresh
Python process, numba kernels loaded from the cache first, with a
``ThreadPoolExecutor`` of ``--threads`` threads (default 2, the machine's cores) as the
executor: footprints from the headers, every image memory-mapped and read inside its
measurement task. Reported: wall time of the call, the process's peak resident memory
(``VmHWM``, the whole process: Python, numba, astropy included), the largest error
of the relative skies (``max |d - mean(d)|``, ``d = sky - true sky``, noise sigma 1),
with ``--dask`` the same on a dask.distributed ``LocalCluster`` of ``--threads`` worker
processes (its executor; the files read by the workers) and the largest difference of
its skies from the threads' run,
and the page-cache state of the files ("cold" when ``--drop-cache`` could drop it,
else "warm" or "partly": the files of 1000 images are 16.8 GB, the machine has 24 GiB).
With ``--stcal``, stcal 1.20's ``skymatch`` runs on the sizes up to 100 (all images
read into memory first, not timed), and its time for the larger sizes is extrapolated
as ``t_100 * (n / 100) ** 2`` (its overlap search and pixel fill scale with the number
of pairs it tries: all of them).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ._common import environment, markdown_table

SHAPE = (2048, 2048)
SCALE = 0.1 / 3600.0  # degrees per pixel
GRIDS = {100: (10, 5), 300: (15, 10), 1000: (25, 20)}


def _wcs(ra: float, dec: float, rot: float):
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [(SHAPE[1] + 1) / 2, (SHAPE[0] + 1) / 2]
    c, s = np.cos(np.radians(rot)), np.sin(np.radians(rot))
    w.wcs.cd = SCALE * np.array([[-c, s], [s, c]])
    w.pixel_shape = SHAPE[::-1]
    return w


def _layout(n: int) -> list[tuple[float, float, float]]:
    """(ra, dec, rotation) of every image: tiles row by row, each at two dithers."""
    from astropy.wcs import WCS

    ncol, nrow = GRIDS[n]
    plane = WCS(naxis=2)
    plane.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    plane.wcs.crval = [150.0, 2.0]
    plane.wcs.cdelt = [-SCALE, SCALE]
    step = 0.9 * SHAPE[1]
    out = []
    for r in range(nrow):
        for c in range(ncol):
            x, y = (c - (ncol - 1) / 2) * step, (r - (nrow - 1) / 2) * step
            for dx, dy, rot in ((0.0, 0.0, 0.0), (60.0, 40.0, 0.3)):  # pixels: 6", 4"
                ra, dec = plane.wcs_pix2world([[x + dx, y + dy]], 0)[0]
                out.append((float(ra), float(dec), rot))
    return out


def _write(n: int, directory: Path) -> tuple[list[Path], np.ndarray]:
    """Write (or find) the FITS files of size ``n``; return the paths and true skies."""
    from astropy.io import fits

    directory.mkdir(parents=True, exist_ok=True)
    manifest = directory / "manifest.json"
    if manifest.exists():
        info = json.loads(manifest.read_text())
        paths = [directory / p for p in info["files"]]
        if all(p.exists() for p in paths):
            return paths, np.array(info["sky"])
    rng = np.random.default_rng(n)
    sky = rng.uniform(100.0, 120.0, n)
    paths = []
    t0 = time.perf_counter()
    for k, (ra, dec, rot) in enumerate(_layout(n)):
        data = rng.standard_normal(SHAPE, dtype=np.float32)
        data += np.float32(sky[k])
        path = directory / f"img{k:04d}.fits"
        fits.PrimaryHDU(data, _wcs(ra, dec, rot).to_header()).writeto(path, overwrite=True)
        paths.append(path)
        if (k + 1) % 100 == 0:
            print(f"  wrote {k + 1}/{n} files ({time.perf_counter() - t0:.0f} s)", flush=True)
    manifest.write_text(json.dumps({"files": [p.name for p in paths], "sky": sky.tolist()}))
    return paths, sky


def _drop_cache(paths: list[Path]) -> str:
    """Ask the kernel to forget the files' pages; return the cache state it leaves."""
    import os

    if not hasattr(os, "posix_fadvise"):
        return "warm"
    for p in paths:
        with open(p, "rb") as f:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    return "cold"


def _child(listing: str, threads: int, profile: bool, dask: bool = False) -> None:
    """Match the listed files in this fresh process; print one JSON line."""
    from concurrent.futures import ThreadPoolExecutor

    import skyeq
    from skyeq import _kernels, io, synthetic

    _kernels.warmup()
    small = synthetic.tile_grid(2, 2, shape=(128, 128), seed=0)
    skyeq.match_sky(small.data, small.wcs)
    paths = [p for p in Path(listing).read_text().split("\n") if p]
    stat = skyeq.SkyStat("median", nclip=5, lsigma=4.0, usigma=4.0)
    client = None
    if dask:  # worker processes, each reading its groups' files
        from dask.distributed import Client, LocalCluster

        client = Client(LocalCluster(n_workers=threads, threads_per_worker=1,
                                     processes=True, dashboard_address=None))
        client.run(_kernels.warmup)
        pool = client.get_executor()
    else:
        pool = ThreadPoolExecutor(threads) if threads > 1 else None
    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    t0 = time.perf_counter()
    res = io.match_files(paths, method="match", stat=stat, executor=pool)
    wall = time.perf_counter() - t0
    if prof is not None:
        prof.disable()
        _print_profile(prof)
    if client is not None:
        client.close()
    elif pool is not None:
        pool.shutdown()
    rss = _peak_rss_mb()
    print(json.dumps({"wall": wall, "rss_mb": rss, "sky": [float(s) for s in res.sky],
                      "pairs": len(res.pairs)}))


def _peak_rss_mb() -> float:
    """Return the peak resident memory of this process in MB: ``VmHWM``, else ``ru_maxrss``.

    ``ru_maxrss`` survives ``fork`` and ``exec``: a child of a large parent (after
    ``--stcal`` read its images) would report at least the parent's size. ``VmHWM``
    belongs to the address space, which ``exec`` makes anew.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _print_profile(prof) -> None:
    """Print the cumulative time of the functions that matter (to stderr)."""
    import io as _io
    import pstats

    out = _io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(30)
    print(out.getvalue(), file=sys.stderr)


def _run(paths: list[Path], work: Path, threads: int, profile: bool,
         dask: bool = False) -> dict:
    listing = work / "inputs.txt"
    listing.write_text("\n".join(str(p) for p in paths))
    code = ("import sys; from benchmarks.bench_scale import _child; "
            "_child(sys.argv[1], int(sys.argv[2]), sys.argv[3] == '1', sys.argv[4] == '1')")
    done = subprocess.run([sys.executable, "-c", code, str(listing), str(threads),
                           "1" if profile else "0", "1" if dask else "0"], check=True,
                          capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent)
    if profile:
        print(done.stderr[-12000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def _stcal(paths: list[Path]) -> tuple[float, np.ndarray]:
    from astropy.io import fits
    from astropy.wcs import WCS
    from stcal.skymatch import skymatch
    from stcal.skymatch.skyimage import SkyImage
    from stcal.skymatch.skystatistics import SkyStats

    st = SkyStats(skystat="median", nclip=5, lsig=4.0, usig=4.0, binwidth=0.1)
    arrays = []
    for p in paths:
        with fits.open(p) as hl:
            arrays.append((hl[0].data.astype(np.float32), WCS(hl[0].header)))
    t0 = time.perf_counter()
    images = []
    for k, (d, w) in enumerate(arrays):
        def fwd(x, y, with_bounding_box=False, w=w):
            return w.all_pix2world(x, y, 0)

        def inv(ra, dec, with_bounding_box=False, w=w):
            return w.all_world2pix(ra, dec, 0)

        images.append(SkyImage(d, np.isfinite(d), fwd, inv, st, sky_id=k))
    skymatch(images, skymethod="match", match_down=True, subtract=False)
    return time.perf_counter() - t0, np.array([im.sky for im in images], dtype=float)


def _err(sky, truth) -> float:
    d = np.asarray(sky, dtype=float) - truth
    return float(np.abs(d - d.mean()).max())


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks scale", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", type=int, default=[100, 300, 1000],
                   choices=sorted(GRIDS))
    p.add_argument("--dir", default="/tmp/skyeq-scale", help="where the files are kept")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--drop-cache", action="store_true",
                   help="drop the files from the page cache before each run")
    p.add_argument("--stcal", action="store_true", help="stcal on the sizes up to 100")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--dask", action="store_true",
                   help="also run on a dask.distributed LocalCluster of --threads worker "
                   "processes and compare the skies with the threads' run")
    args = p.parse_args(argv)
    print(environment())
    rows = []
    t_ref_100 = None
    for n in args.sizes:
        print(f"size {n}: files ...", flush=True)
        paths, truth = _write(n, Path(args.dir) / str(n))
        cache = _drop_cache(paths) if args.drop_cache else "warm or partly"
        work = Path(args.dir) / str(n)
        out = _run(paths, work, args.threads, args.profile)
        ref = "-"
        if args.stcal and n <= 100:
            t_ref, sky_ref = _stcal(paths)
            t_ref_100 = t_ref * (100 / n) ** 2
            ref = f"{t_ref:.1f} (err {_err(sky_ref, truth):.4f})"
        elif t_ref_100 is not None:
            ref = f"~{t_ref_100 * (n / 100) ** 2:.0f} (extrapolated)"
        cluster = "-"
        if args.dask:
            other = _run(paths, work, args.threads, False, dask=True)
            diff = float(np.abs(np.subtract(other["sky"], out["sky"])).max())
            cluster = f"{other['wall']:.1f} s, max diff {diff:.1e}"
        rows.append([n, out["pairs"], f"{16.8 * n / 1000:.1f}", cache, f"{out['wall']:.1f}",
                     f"{out['rss_mb']:.0f}", f"{_err(out['sky'], truth):.4f}", ref, cluster])
        print(f"  {n} images: {out['wall']:.1f} s, peak RSS {out['rss_mb']:.0f} MB",
              flush=True)
    print()
    print(markdown_table(["images", "pairs", "GB of files", "page cache", "skyeq s",
                          "peak RSS MB", "err", "stcal s", "dask LocalCluster"], rows))
    return 0
