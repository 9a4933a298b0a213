"""Geometry benchmark: footprints, overlaps and overlap pixel spans, skyeq vs stcal 1.20.

Run from the repository root::

    python -m benchmarks geometry                 # all cases
    python -m benchmarks geometry --cases 6x6     # one case

For each case (2048x2048 tiles, TAN WCS, 0.1 arcsec/pixel) it times the work of finding
every overlapping pair of images and the pixels of both images in each overlap:

* skyeq: ``footprints`` -> ``find_overlaps`` (k-d tree candidates + batched exact
  intersections) -> ``overlap_spans_many`` per image (row spans, both directions).
* stcal: build ``SkyImage`` objects (footprint polygons), ``SkyImage.intersection`` for
  every unordered pair (the reference has no pre-filter), and for each overlapping
  pair the ``gwcs.region.Polygon(True, vertices).scan`` fill of every overlap piece into
  a new full-size boolean mask of each of the two images, as ``SkyImage.calc_sky``
  does. The reference intersects each pair twice (once per direction); it is timed
  once here, which favours the reference. SkyImage needs an image and a boolean mask
  of the image's shape; zero-memory ``np.broadcast_to`` views provide them (their
  values are never read by the timed code).

Large cases time the reference on a random sample of pairs (overlapping and
non-overlapping pairs sampled separately) and extrapolate to all pairs; the table says
which.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np

SCALE = 0.1 / 3600.0  # degrees per pixel
NPIX = 2048
SHAPE = (NPIX, NPIX)


def _tan_wcs(ra: float, dec: float, rot: float = 0.0, shape: tuple[int, int] = SHAPE):
    from astropy.wcs import WCS

    ny, nx = shape
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [(nx + 1) / 2, (ny + 1) / 2]
    c, s = np.cos(np.radians(rot)), np.sin(np.radians(rot))
    w.wcs.cd = SCALE * np.array([[-c, s], [s, c]])
    return w


def _grid(n: int, ra0: float = 150.0, dec0: float = 2.0) -> list:
    """Return n x n tiles with 10 % overlap between neighbours."""
    step = 0.9 * NPIX * SCALE
    out = []
    for i in range(n):
        dec = dec0 + (i - (n - 1) / 2) * step
        for j in range(n):
            ra = ra0 + (j - (n - 1) / 2) * step / np.cos(np.radians(dec))
            out.append(_tan_wcs(ra, dec))
    return out


def _dithers(n: int, seed: int = 1) -> list:
    """Return n dithers: offsets of a few arcsec, rotations of up to 0.5 degree."""
    rng = np.random.default_rng(seed)
    return [
        _tan_wcs(
            210.0 + rng.uniform(-4, 4) / 3600.0,
            -40.0 + rng.uniform(-4, 4) / 3600.0,
            rot=rng.uniform(-0.5, 0.5),
        )
        for _ in range(n)
    ]


# --------------------------------------------------------------------------------------
# skyeq
# --------------------------------------------------------------------------------------


def _skyeq_run(wcs_list: list) -> dict:
    from skyeq import geometry as geo
    from skyeq.wcs import as_wcs_adapter

    t0 = time.perf_counter()
    adapters = [as_wcs_adapter(w, f"image {i}", shape=SHAPE) for i, w in enumerate(wcs_list)]
    fps = geo.footprints(adapters, [SHAPE] * len(adapters))
    t1 = time.perf_counter()
    pairs, ovs = geo.find_overlaps(fps)
    t2 = time.perf_counter()
    npix = 0
    nspans = 0
    for k in range(len(fps)):
        for side in (0, 1):
            rows = np.flatnonzero(pairs[:, side] == k)
            if len(rows) == 0:
                continue
            spans = geo.overlap_spans_many([ovs[r] for r in rows], adapters[k], SHAPE)
            for s in spans:
                nspans += len(s)
                npix += int((s[:, 2] - s[:, 1] + 1).sum())
    t3 = time.perf_counter()
    return {
        "footprints": t1 - t0,
        "overlaps": t2 - t1,
        "spans": t3 - t2,
        "total": t3 - t0,
        "pairs": pairs,
        "npix": npix,
        "nspans": nspans,
    }


def _skyeq_timed(wcs_list: list, repeats: int) -> dict:
    runs = [_skyeq_run(wcs_list) for _ in range(repeats)]
    out = {k: statistics.median(r[k] for r in runs) for k in ("footprints", "overlaps", "spans")}
    out["total"] = statistics.median(r["total"] for r in runs)
    out["pairs"] = runs[0]["pairs"]
    out["npix"] = runs[0]["npix"]
    out["nspans"] = runs[0]["nspans"]
    return out


# --------------------------------------------------------------------------------------
# stcal reference
# --------------------------------------------------------------------------------------


def _ref_images(wcs_list: list) -> tuple[list, float]:
    from stcal.skymatch.skyimage import SkyImage

    image = np.broadcast_to(np.float32(0.0), SHAPE)
    mask = np.broadcast_to(np.True_, SHAPE)
    t0 = time.perf_counter()
    out = []
    for i, w in enumerate(wcs_list):
        out.append(
            SkyImage(
                image=image,
                mask=mask,
                wcs_fwd=lambda x, y, with_bounding_box=False, w=w: w.all_pix2world(x, y, 0),
                wcs_inv=lambda ra, dec, with_bounding_box=False, w=w: w.all_world2pix(
                    ra, dec, 0
                ),
                skystat=lambda d: (0.0, d.size),
                sky_id=i,
            )
        )
    return out, time.perf_counter() - t0


def _ref_pair(a, b) -> tuple[float, float, int]:
    """Time one reference pair: intersection, then fills in both images.

    Returns the two times and the number of filled pixels (both images; 0 when the
    pair does not overlap). The pixel count is taken outside the timed region.
    """
    from gwcs import region

    t0 = time.perf_counter()
    inter = a.intersection(b)
    area = abs(inter.area())
    t1 = time.perf_counter()
    if area == 0.0:
        return t1 - t0, 0.0, 0
    radec = list(inter.to_radec())
    t_fill = 0.0
    npix = 0
    for img in (a, b):
        t2 = time.perf_counter()
        fill = np.zeros(img.image.shape, dtype=bool)
        for ra, dec in radec:
            if len(ra) < 4:
                continue
            x, y = img._wcs_inv(ra, dec, with_bounding_box=False)
            fill = region.Polygon(True, list(zip(x, y, strict=True))).scan(fill)
        t_fill += time.perf_counter() - t2
        npix += int(np.count_nonzero(fill))
    return t1 - t0, t_fill, npix


def _ref_timed(wcs_list: list, overlapping: np.ndarray, max_pairs: int, seed: int) -> dict:
    n = len(wcs_list)
    imgs, t_build = _ref_images(wcs_list)
    npairs = n * (n - 1) // 2
    ov_set = {(int(i), int(j)) for i, j in overlapping}
    n_ov = len(ov_set)
    n_no = npairs - n_ov
    if npairs <= max_pairs:
        t_int = t_fill = 0.0
        npix = 0
        for i in range(n):
            for j in range(i + 1, n):
                a, b, p = _ref_pair(imgs[i], imgs[j])
                t_int += a
                t_fill += b
                npix += p
        return {
            "footprints": t_build,
            "intersections": t_int,
            "fills": t_fill,
            "total": t_build + t_int + t_fill,
            "sampled": False,
            "npix": npix,
            "note": f"all {npairs} pairs",
        }
    rng = np.random.default_rng(seed)
    # sample overlapping pairs and non-overlapping pairs separately
    k_no = min(n_no, max_pairs * 4 // 5)
    k_ov = min(n_ov, max_pairs - k_no)
    ov_list = sorted(ov_set)
    ov_pick = [ov_list[i] for i in rng.choice(n_ov, size=k_ov, replace=False)] if n_ov else []
    no_pick = []
    while len(no_pick) < k_no:
        i, j = sorted(rng.choice(n, size=2, replace=False))
        if (i, j) not in ov_set:
            no_pick.append((int(i), int(j)))
    ti_ov, tf_ov, ti_no = [], [], []
    for i, j in ov_pick:
        a, b, hit = _ref_pair(imgs[i], imgs[j])
        assert hit, "the reference finds no overlap where skyeq found one"
        ti_ov.append(a)
        tf_ov.append(b)
    for i, j in no_pick:
        a, b, hit = _ref_pair(imgs[i], imgs[j])
        assert not hit, "the reference finds an overlap that skyeq missed"
        ti_no.append(a)
    mean = statistics.fmean
    t_int = (mean(ti_ov) * n_ov if ti_ov else 0.0) + (mean(ti_no) * n_no if ti_no else 0.0)
    t_fill = mean(tf_ov) * n_ov if tf_ov else 0.0
    return {
        "footprints": t_build,
        "intersections": t_int,
        "fills": t_fill,
        "total": t_build + t_int + t_fill,
        "sampled": True,
        "npix": None,
        "note": (
            f"extrapolated from {k_ov} of {n_ov} overlapping and {k_no} of {n_no} "
            "non-overlapping pairs"
        ),
    }


# --------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------


def _environment() -> None:
    import astropy
    import numba
    import scipy
    import spherical_geometry

    print("environment")
    print(f"  python {platform.python_version()}  {platform.machine()}  cpus: {os.cpu_count()}")
    vers = [
        f"numpy {np.__version__}",
        f"numba {numba.__version__}",
        f"scipy {scipy.__version__}",
        f"astropy {astropy.__version__}",
        f"spherical_geometry {spherical_geometry.__version__}",
    ]
    try:
        import gwcs
        import stcal

        vers += [f"stcal {stcal.__version__}", f"gwcs {gwcs.__version__}"]
    except ImportError:
        vers.append("stcal: not installed")
    print("  " + ", ".join(vers))
    print(f"  NUMBA_CACHE_DIR={os.environ.get('NUMBA_CACHE_DIR', '(default)')}")


def _warmup() -> None:
    from skyeq import _kernels

    _kernels.warmup()
    ws = _grid(2)
    _skyeq_run(ws)


CASES = {
    "6x6": (lambda: _grid(6), "6x6 tiles, 10% overlap"),
    "30x30": (lambda: _grid(30), "30x30 tiles, 10% overlap"),
    "dithers100": (lambda: _dithers(100), "100 dithers"),
}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks geometry", description=__doc__)
    parser.add_argument(
        "--cases", nargs="+", default=list(CASES), choices=list(CASES), help="cases to run"
    )
    parser.add_argument("--repeats", type=int, default=3, help="skyeq repeats (median)")
    parser.add_argument(
        "--ref-pairs",
        type=int,
        default=800,
        help="time the reference on all pairs up to this many, else on a sample this big",
    )
    parser.add_argument(
        "--ref-pairs-dithers",
        type=int,
        default=40,
        help="reference sample size for the dither case (every pair overlaps)",
    )
    parser.add_argument("--no-ref", action="store_true", help="skip the stcal reference")
    parser.add_argument("--seed", type=int, default=12345)
    args = parser.parse_args(argv)

    _environment()
    print("warming up numba ...", flush=True)
    _warmup()
    rows = []
    for name in args.cases:
        make, label = CASES[name]
        ws = make()
        print(f"\n[{name}] {label}: {len(ws)} images of {NPIX}x{NPIX}", flush=True)
        sk = _skyeq_timed(ws, args.repeats)
        npairs = len(ws) * (len(ws) - 1) // 2
        print(
            f"  skyeq: {len(sk['pairs'])} overlapping pairs of {npairs}, "
            f"{sk['nspans']} spans, {sk['npix']} overlap pixels (both directions); "
            f"footprints {sk['footprints']:.3f} s, overlaps {sk['overlaps']:.3f} s, "
            f"spans {sk['spans']:.3f} s, total {sk['total']:.3f} s (median of {args.repeats})",
            flush=True,
        )
        ref = None
        if not args.no_ref:
            try:
                import stcal  # noqa: F401
            except ImportError:
                print("  stcal not installed: reference skipped")
            else:
                maxp = args.ref_pairs_dithers if name.startswith("dithers") else args.ref_pairs
                ref = _ref_timed(ws, sk["pairs"], maxp, args.seed)
                if ref["npix"] is not None:
                    print(
                        f"  overlap pixels: skyeq {sk['npix']}, stcal {ref['npix']} "
                        f"(ratio {sk['npix'] / ref['npix']:.5f}; stcal rounds vertices and "
                        "fills up to one extra column)"
                    )
                print(
                    f"  stcal: footprints {ref['footprints']:.2f} s, intersections "
                    f"{ref['intersections']:.2f} s, fills {ref['fills']:.2f} s, total "
                    f"{ref['total']:.2f} s ({ref['note']})",
                    flush=True,
                )
        rows.append((name, len(ws), len(sk["pairs"]), sk, ref))

    print("\nsummary (seconds; ratio = stcal / skyeq)")
    head = (
        f"{'case':<11} {'images':>6} {'overlaps':>8} {'skyeq':>8} {'stcal':>10} {'ratio':>8}"
        "  note"
    )
    print(head)
    print("-" * len(head))
    for name, n, nov, sk, ref in rows:
        if ref is None:
            print(f"{name:<11} {n:>6} {nov:>8} {sk['total']:>8.3f} {'-':>10} {'-':>8}")
            continue
        star = "*" if ref["sampled"] else ""
        print(
            f"{name:<11} {n:>6} {nov:>8} {sk['total']:>8.3f} {ref['total']:>9.1f}{star:1} "
            f"{ref['total'] / sk['total']:>7.0f}x  {ref['note']}"
        )
    if any(ref is not None and ref["sampled"] for *_, ref in rows):
        print("* stcal time extrapolated from a random sample of pairs (see note)")
    return 0
