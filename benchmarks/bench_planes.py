"""Sky planes: ``match_sky(..., model="plane")`` against Montage's ``mBgModel`` planes.

Run from the repository root::

    python -m benchmarks planes              # 3x3 tiles of 2048x2048
    python -m benchmarks planes --quick      # 2x2 tiles of 1024x1024, a fast check

The mosaic: `skyeq.synthetic.tile_grid` (TAN, 10 % overlap, noise sigma 1, its default
point and extended sources, seeded by ``--seed``), float32, plus a seeded sky plane
per image on top of its constant sky: ``sky_k(x, y) = level_k + gx_k (x - xc) + gy_k
(y - yc)`` in the image's zero-based pixels, ``xc = (nx - 1) / 2``, ``yc = (ny - 1) /
2``, with ``gx_k * nx`` and ``gy_k * ny`` uniform in +-3 noise sigma (the plane changes
by up to 3 sigma across an image).

Compared, on the same images:

* skyeq ``match_sky(data, wcs, method="match", model="plane")`` on the in-memory
  arrays (its ``SkyResult.plane``: ``(level, gx, gy)`` per image in the convention
  above), and the default constant model for comparison (fitted plane
  ``(sky, 0, 0)``), median statistic (the default), one run each, numba warm (both
  models are run once on a small mosaic first);
* Montage (MontagePy 2.3.0), the standard background chain on the images written as
  FITS files with an explicit CD matrix (MontagePy misreads astropy's PC/CDELT
  headers): ``mImgtbl`` -> ``mMakeHdr`` -> ``mProjExec`` -> ``mImgtbl`` (projected)
  -> ``mOverlaps`` -> ``mDiffExec`` -> ``mFitExec`` -> ``mBgModel``, once with planes
  (the defaults) and once level-only (``mFitExec(levelOnly=True)``,
  ``mBgModel(noslope=True)``). A Montage time is the whole chain from the FITS files:
  the shared part up to ``mDiffExec`` (reprojection included) plus that variant's
  ``mFitExec`` and ``mBgModel``; writing the FITS files is not timed, and ``mBgExec``
  (which only subtracts the corrections) is not run. ``mBgModel`` writes one
  correction ``A x + B y + C`` per projected image, with ``x = i - CRPIX1``,
  ``y = j - CRPIX2`` (``i, j`` zero-based pixels of the projected image, as
  ``mBackground`` applies it): what would be subtracted, i.e. Montage's relative sky.

The accuracy metric, the same for all: for image k, the error plane ``E_k = fitted_k
- truth_k`` is sampled on a 16x16 grid over the image; the points are mapped through
the image's WCS to the pixels of one mosaic frame (a TAN WCS at the mosaic centre with
the first tile's CD matrix); ONE plane ``P(X, Y)`` is fitted by least squares to all
samples of all images and subtracted (matching cannot see a common constant, and for
planes a common gradient, across the whole mosaic); the RMS and the largest absolute
value of what is left are reported in units of the noise sigma. The last column is
that removed plane's change across one image along the frame's x and y, in sigma: the
tool's common gradient (which the overlaps cannot determine) minus the mean injected
one. A constant model has no gradient, so its row shows minus the mean injected
gradient, and so, about, does a plane model that picks the smallest slopes that fit.
After the table, a line per Montage variant checks the sign of its corrections (they
must fit the truth better than their negatives do). All files go to a temporary
directory that is removed at the end; ``--no-ref`` skips Montage.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._common import environment, markdown_table, package_version

NGRID = 16  # sample points per image axis for the metric
GRADIENT = 3.0  # largest change of an injected plane across an image, in noise sigma


@dataclass
class Case:
    """A mosaic with injected planes and what the metric needs."""

    m: Any  # skyeq.synthetic.Mosaic, planes included in m.data
    truth: np.ndarray  # (n, 3) level, gx, gy per image (own zero-based pixels, centred)
    xs: np.ndarray  # (NGRID**2,) sample pixel x (the same for all images of one shape)
    ys: np.ndarray
    frame_xy: list[np.ndarray]  # per image (2, NGRID**2) sample positions in the frame


def _centred(shape: tuple[int, int]) -> tuple[float, float]:
    ny, nx = shape
    return (nx - 1) / 2.0, (ny - 1) / 2.0


def _mosaic(quick: bool, seed: int) -> Case:
    from skyeq import synthetic

    nrow, ncol, shape = (2, 2, (1024, 1024)) if quick else (3, 3, (2048, 2048))
    m = synthetic.tile_grid(nrow, ncol, shape=shape, overlap=0.1, seed=seed)
    rng = np.random.default_rng([seed, 7])  # a stream of its own for the planes
    n = len(m)
    truth = np.zeros((n, 3))
    truth[:, 0] = m.sky
    ny, nx = shape
    truth[:, 1] = rng.uniform(-GRADIENT, GRADIENT, n) * m.noise / nx
    truth[:, 2] = rng.uniform(-GRADIENT, GRADIENT, n) * m.noise / ny
    xc, yc = _centred(shape)
    x = np.arange(nx) - xc
    y = np.arange(ny) - yc
    for k, d in enumerate(m.data):
        d += (truth[k, 1] * x[None, :] + truth[k, 2] * y[:, None]).astype(d.dtype)

    frame = _frame(m)
    gx, gy = np.meshgrid(np.linspace(0.0, nx - 1.0, NGRID), np.linspace(0.0, ny - 1.0, NGRID))
    xs, ys = gx.ravel(), gy.ravel()
    frame_xy = []
    for w in m.wcs:
        world = w.pixel_to_world_values(xs, ys)
        frame_xy.append(np.array(frame.world_to_pixel_values(*world)))
    return Case(m, truth, xs, ys, frame_xy)


def _frame(m: Any) -> Any:
    """Return a TAN frame at the mosaic centre with the first tile's CD matrix."""
    frame = copy.deepcopy(m.wcs[0])
    ny, nx = m.data[0].shape
    centres = np.array([w.pixel_to_world_values((nx - 1) / 2.0, (ny - 1) / 2.0)
                        for w in m.wcs])
    frame.wcs.crval = centres.mean(axis=0)  # fine away from RA 0 and the poles
    frame.wcs.crpix = (0.0, 0.0)
    frame.wcs.set()
    return frame


def _plane_at(plane: np.ndarray, shape: tuple[int, int], xs: np.ndarray,
              ys: np.ndarray) -> np.ndarray:
    xc, yc = _centred(shape)
    return plane[0] + plane[1] * (xs - xc) + plane[2] * (ys - yc)


def _residual(case: Case, fitted: list[np.ndarray]) -> tuple[float, float, str]:
    """Errors at the samples after one global plane, in sigma: RMS, max |.|, that plane.

    The plane is given by its change across one image (frame pixels are the size of
    the images' pixels) along the frame's x and y.
    """
    err, cols = [], []
    for k, f in enumerate(fitted):
        truth = _plane_at(case.truth[k], case.m.data[k].shape, case.xs, case.ys)
        err.append((f - truth) / case.m.noise[k])
        fx, fy = case.frame_xy[k]
        cols.append(np.column_stack([np.ones_like(fx), fx, fy]))
    e = np.concatenate(err)
    a = np.concatenate(cols)
    scale = np.abs(a).max(axis=0)  # condition the design matrix
    coef = np.linalg.lstsq(a / scale, e, rcond=None)[0]
    left = e - (a / scale) @ coef
    ny, nx = case.m.data[0].shape
    common = f"{coef[1] / scale[1] * nx:+.2f}, {coef[2] / scale[2] * ny:+.2f}"
    return float(np.sqrt(np.mean(left**2))), float(np.abs(left).max()), common


# ---- skyeq ---------------------------------------------------------------------------

def _check_plane_api() -> None:
    import skyeq

    if "model" not in inspect.signature(skyeq.match_sky).parameters:
        raise SystemExit(
            f"skyeq.match_sky (from {skyeq.__file__}) does not accept model=: this skyeq "
            "has no plane matching. Run from the repository root with PYTHONPATH=. "
            "on a tree that has it (an older skyeq may be installed in site-packages)."
        )


def _warmup() -> None:
    import skyeq
    from skyeq import synthetic

    small = synthetic.tile_grid(2, 2, shape=(128, 128), seed=0)
    skyeq.match_sky(small.data, small.wcs, method="match")
    skyeq.match_sky(small.data, small.wcs, method="match", model="plane")


def _run_skyeq(case: Case, model: str | None) -> tuple[float, np.ndarray]:
    """Wall time of one ``match_sky`` and the fitted planes, (n, 3)."""
    import skyeq

    kwargs = {} if model is None else {"model": model}
    t0 = time.perf_counter()
    res = skyeq.match_sky(case.m.data, case.m.wcs, method="match", **kwargs)
    seconds = time.perf_counter() - t0
    if model is None:
        planes = np.zeros((len(case.m), 3))
        planes[:, 0] = res.sky
    else:
        planes = np.asarray(res.plane, dtype=float)
        if planes.shape != (len(case.m), 3):
            raise RuntimeError(f"SkyResult.plane has shape {planes.shape}, "
                               f"expected {(len(case.m), 3)}")
    return seconds, planes


def _skyeq_values(case: Case, planes: np.ndarray) -> list[np.ndarray]:
    return [_plane_at(p, d.shape, case.xs, case.ys) for p, d in zip(planes, case.m.data,
                                                                      strict=True)]


# ---- Montage -------------------------------------------------------------------------

def _write_fits(case: Case, raw: Path) -> list[Path]:
    """Write the images with an explicit CD matrix (MontagePy misreads PC + CDELT)."""
    from astropy.io import fits

    paths = []
    for k, (d, w) in enumerate(zip(case.m.data, case.m.wcs, strict=True)):
        hdr = w.to_header()
        cd = np.diag(w.wcs.cdelt) @ w.wcs.get_pc()
        for key in ("PC1_1", "PC1_2", "PC2_1", "PC2_2", "CDELT1", "CDELT2"):
            hdr.remove(key, ignore_missing=True)
        for i in range(2):
            for j in range(2):
                hdr[f"CD{i + 1}_{j + 1}"] = cd[i, j]
        path = raw / f"{case.m.names[k]}.fits"
        fits.PrimaryHDU(d, header=hdr).writeto(path)
        paths.append(path)
    return paths


def _ok(result: dict, name: str) -> dict:
    if result.get("status") not in (0, "0"):
        raise RuntimeError(f"Montage {name} failed: {result}")
    return result


def _montage_shared(work: Path) -> dict[str, Path]:
    """Run the chain up to the difference images: reprojection, overlaps, differences."""
    from MontagePy.main import mDiffExec, mImgtbl, mMakeHdr, mOverlaps, mProjExec

    p = {name: work / name for name in ("raw", "proj", "diff")}
    p["proj"].mkdir()
    p["diff"].mkdir()
    p["images"] = work / "images.tbl"
    p["hdr"] = work / "template.hdr"
    p["pimages"] = work / "pimages.tbl"
    p["diffs"] = work / "diffs.tbl"
    _ok(mImgtbl(str(p["raw"]), str(p["images"])), "mImgtbl")
    _ok(mMakeHdr(str(p["images"]), str(p["hdr"])), "mMakeHdr")
    r = _ok(mProjExec(str(p["raw"]), str(p["images"]), str(p["hdr"]),
                      projdir=str(p["proj"])), "mProjExec")
    if r.get("failed", 0):
        raise RuntimeError(f"mProjExec: {r}")
    _ok(mImgtbl(str(p["proj"]), str(p["pimages"])), "mImgtbl (projected)")
    _ok(mOverlaps(str(p["pimages"]), str(p["diffs"])), "mOverlaps")
    r = _ok(mDiffExec(str(p["proj"]), str(p["diffs"]), str(p["hdr"]),
                      diffdir=str(p["diff"])), "mDiffExec")
    if r.get("failed", 0):
        raise RuntimeError(f"mDiffExec: {r}")
    return p


def _montage_model(p: dict[str, Path], level_only: bool, tag: str) -> Path:
    from MontagePy.main import mBgModel, mFitExec

    fits_tbl = p["diffs"].parent / f"fits_{tag}.tbl"
    corr_tbl = p["diffs"].parent / f"corrections_{tag}.tbl"
    r = _ok(mFitExec(str(p["diffs"]), str(fits_tbl), diffdir=str(p["diff"]),
                     levelOnly=level_only), "mFitExec")
    if r.get("failed", 0):
        raise RuntimeError(f"mFitExec: {r}")
    _ok(mBgModel(str(p["pimages"]), str(fits_tbl), str(corr_tbl), noslope=level_only),
        "mBgModel")
    return corr_tbl


def _read_ipac(path: Path) -> Any:
    from astropy.io import ascii

    return ascii.read(str(path), format="ipac")


def _montage_values(case: Case, p: dict[str, Path], corr_tbl: Path) -> list[np.ndarray]:
    """Montage's relative sky of each original image at its sample points."""
    from astropy.io import fits
    from astropy.wcs import WCS

    images = _read_ipac(p["pimages"])
    corr = _read_ipac(corr_tbl)
    abc = {int(r["id"]): (float(r["a"]), float(r["b"]), float(r["c"])) for r in corr}
    by_name = {Path(str(r["fname"])).name: int(r["cntr"]) for r in images}
    values = []
    for name, w in zip(case.m.names, case.m.wcs, strict=True):
        proj = p["proj"] / f"hdu0_{name}.fits"
        if proj.name not in by_name:
            raise RuntimeError(f"{proj.name} is not in {p['pimages'].name}: "
                               f"{sorted(by_name)}")
        cntr = by_name[proj.name]
        if cntr not in abc:  # mBgModel writes no correction for an image it gave up on
            print(f"  warning: mBgModel gave no correction for {name}: taken as 0")
        a, b, c = abc.get(cntr, (0.0, 0.0, 0.0))
        hdr = fits.getheader(proj)
        pw = WCS(hdr)
        i, j = pw.world_to_pixel_values(*w.pixel_to_world_values(case.xs, case.ys))
        values.append(a * (i - hdr["CRPIX1"]) + b * (j - hdr["CRPIX2"]) + c)
    return values


def _timed(func: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = func()
    return time.perf_counter() - t0, out


def _run_montage(case: Case, work: Path) -> list[tuple[str, float, list[np.ndarray]]]:
    raw = work / "raw"
    raw.mkdir()
    _write_fits(case, raw)
    t_shared, p = _timed(lambda: _montage_shared(work))
    print(f"  Montage reprojection + overlaps + differences: {t_shared:.2f} s", flush=True)
    out = []
    for label, level_only, tag in (("level-only (mFitExec -l, mBgModel -l)", True, "level"),
                                   ("planes (defaults)", False, "plane")):
        t_fit, corr = _timed(lambda lo=level_only, tg=tag: _montage_model(p, lo, tg))
        values = _montage_values(case, p, corr)
        out.append((label, t_shared + t_fit, values))
        print(f"  Montage {label}: fit + model {t_fit:.2f} s", flush=True)
    return out


def _sign_check(case: Case, values: list[np.ndarray]) -> str:
    """Check that the correction (Montage's relative sky) fits better than its negative."""
    plus = _residual(case, values)[0]
    minus = _residual(case, [-v for v in values])[0]
    return "ok" if plus <= minus else f"reversed? rms {plus:.3f} vs {minus:.3f} negated"


# ---- main ----------------------------------------------------------------------------

def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks planes", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="2x2 tiles of 1024x1024 instead of 3x3 of 2048x2048")
    parser.add_argument("--seed", type=int, default=3, help="mosaic and planes seed")
    parser.add_argument("--no-ref", action="store_true", help="skip Montage")
    parser.add_argument("--tmpdir", default=None, help="parent of the temporary directory")
    args = parser.parse_args(argv)

    import skyeq

    print(environment() + f"; MontagePy {package_version('MontagePy')}")
    print(f"skyeq imported from {Path(skyeq.__file__).parent}")
    _check_plane_api()
    print("warming up numba (both models on a 2x2 mosaic of 128x128) ...", flush=True)
    _warmup()
    case = _mosaic(args.quick, args.seed)
    m = case.m
    ny, nx = m.data[0].shape
    print(f"mosaic: {len(m)} tiles of {nx}x{ny}, 10 % overlap, seed {args.seed}, noise "
          f"{m.noise.min():g}-{m.noise.max():g}; injected planes: up to "
          f"{np.abs(case.truth[:, 1] * nx / m.noise).max():.2f} sigma across x, "
          f"{np.abs(case.truth[:, 2] * ny / m.noise).max():.2f} across y", flush=True)

    rows: list[list[object]] = []
    t_const, p_const = _run_skyeq(case, None)
    t_plane, p_plane = _run_skyeq(case, "plane")
    for label, t, planes in (('skyeq, model="plane"', t_plane, p_plane),
                             ("skyeq, constant (default model)", t_const, p_const)):
        rms, mx, common = _residual(case, _skyeq_values(case, planes))
        rows.append([label, f"{t:.3f}", f"{rms:.4f}", f"{mx:.4f}", common])
        print(f"  {label}: {t:.3f} s", flush=True)

    notes = []
    if not args.no_ref:
        work = Path(tempfile.mkdtemp(prefix="bench_planes_", dir=args.tmpdir))
        try:
            for label, t, values in _run_montage(case, work):
                rms, mx, common = _residual(case, values)
                rows.append([f"Montage, {label}", f"{t:.2f}", f"{rms:.4f}", f"{mx:.4f}",
                             common])
                notes.append(f"sign of Montage {label}: {_sign_check(case, values)}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(markdown_table(["tool / model", "wall s", "residual RMS (sigma)",
                          "max \\|residual\\| (sigma)",
                          "common plane removed (sigma across an image, x, y)"], rows))
    for note in notes:
        print(note)
    return 0
