"""The scoreboard: skyeq against stcal 1.20 on every case, written to ``benchmarks/results/``.

Run from the repository root::

    python -m benchmarks all --quick     # about a minute
    python -m benchmarks all             # the full series (11 min on the 2-core machine)

One process runs every case in turn; each case generates its inputs once and gives
the same arrays (or files) to skyeq and to stcal. The measurements are those of the
case scripts, imported and called, not re-implemented:

* in-memory mosaics (``bench_match``): ``6x6`` tiles, ``dithers8``, ``dithers16``,
  ``dithers32``
  (``synthetic.dithers(32, shape=(2048, 2048), noise=(1.0, 2.0), seed=32)``),
  ``realwcs`` (6 dithers of the NIRCam gwcs) and ``nircam`` (a NIRCam-like grouped set:
  9 pointings on a 3x3 grid overlapping by about 10 %, 4 dithered exposures each, every
  exposure 2x4 detectors of 2048x2048 at 0.031"/pixel sharing one sky and passed as a
  group: 288 images, 36 groups; the WCSs from ``synthetic.exposures``, the pixels from
  ``synthetic.on_wcs`` so a source lies at one sky position in every image). skyeq:
  ``match_sky(method="match")``, median, nclip=5, median time of ``--repeat`` runs,
  serially and with a ``ThreadPoolExecutor`` of ``--threads`` threads, peak memory the
  growth of the resident set above the inputs during a first untimed serial run
  (``bench_match.run_skyeq``). stcal: ``skymatch`` from building the ``SkyImage`` (and
  ``SkyGroup``) objects to its end, one run, its memory sampled during that run
  (``bench_match.run_stcal(memory_run=False)``). The floor: the fastest of 3 passes of
  ``numpy.sum`` over every image in memory (``bench_match.numpy_pass``; every overlap
  pixel lies in the images, so this is one read of each).
* the scaling series from FITS files (``bench_scale``): 100, 300 and 1000 2048x2048
  images (tiles x 2 dithers, written once into ``--dir`` and reused). skyeq:
  ``io.match_files`` in a fresh process with the kernels loaded from the numba cache and
  ``--threads`` threads, one run, peak memory the process's ``VmHWM`` (Python, numba
  and astropy included; not ``ru_maxrss``, which Linux carries over fork and exec: a
  child of this large process would report at least its size); the files are left in
  the page cache as they are ("warm or partly": the 1000 files are 16.8 GB). stcal:
  ``bench_scale._stcal`` (every file read into memory, not timed; then ``skymatch``), its
  memory growth sampled around the whole call (the inputs it must hold included). No
  floor (the arrays are not in memory).

stcal's time grows as the square of the number of images (it intersects every pair and
fills full-size masks for each overlap), so every stcal run is predicted first from the
largest related case measured in the same run (``t * (n / n0) ** 2``): it runs only when
the prediction is within ``--limit`` seconds (600), in a forked child stopped at that
limit; otherwise its time is that extrapolation and the table says so (stcal's memory
and error are then missing). In ``--quick`` mode: ``6x6``, ``dithers8`` and ``realwcs``
with stcal, the series at 100 and 300 without it (extrapolated from the 6x6 tiles).
"err" is the largest absolute error of the relative skies, ``max |d - mean(d)|`` with
``d = sky - true sky``, in data units. Outputs: ``scoreboard.json`` (every number, the
environment, the date, the git commit, the mode; per case ``stcal_s`` is measured or
extrapolated as ``stcal_status`` and ``stcal_how`` say, ``stcal_measured_s`` null unless
measured), ``scoreboard.md`` (the table and a sentence per extrapolation) and
``scoreboard.png`` (time and peak memory against the number of images, log-log).
``--replot`` rewrites the three from the JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import bench_match, bench_scale
from ._common import PeakRSS, environment, markdown_table

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (2048, 2048)
MB_PER_IMAGE = SHAPE[0] * SHAPE[1] * 4 / 1e6  # float32 2048x2048
LABELS = {
    "6x6": "6x6 tiles, 10 % overlap",
    "dithers8": "8 dithers",
    "dithers16": "16 dithers",
    "dithers32": "32 dithers",
    "realwcs": "6 dithers, NIRCam gwcs",
    "nircam": "NIRCam-like: 9 pointings x 4 dithers x 8 detectors (36 groups)",
    "scale100": "tiles x 2 dithers from FITS",
    "scale300": "tiles x 2 dithers from FITS",
    "scale1000": "tiles x 2 dithers from FITS",
}
FULL = ["6x6", "dithers8", "dithers16", "dithers32", "realwcs", "nircam", "scale100",
        "scale300", "scale1000"]
QUICK = ["6x6", "dithers8", "realwcs", "scale100", "scale300"]
QUICK_NO_STCAL = {"scale100", "scale300"}
NIRCAM_POINTINGS, NIRCAM_DITHERS, NIRCAM_DETECTORS = 9, 4, (2, 4)


# --------------------------------------------------------------------------- inputs


def nircam_mosaic(shape: tuple[int, int] = SHAPE, seed: int = 288):
    """Build the NIRCam-like grouped set: 9 pointings x 4 dithered exposures x 2x4 detectors."""
    from skyeq import synthetic

    scale = 0.031
    ny, nx = shape
    gap = 0.05 * nx
    step_x = 0.9 * (4 * nx + 3 * gap) * scale / 3600.0  # degrees between pointings
    step_y = 0.9 * (2 * ny + gap) * scale / 3600.0
    dec0 = 2.0
    wcs: list[Any] = []
    for k in range(NIRCAM_POINTINGS):
        r, c = divmod(k, 3)
        ra = 150.0 + (c - 1) * step_x / np.cos(np.radians(dec0))
        dec = dec0 + (r - 1) * step_y
        layout = synthetic.exposures(NIRCAM_DITHERS, NIRCAM_DETECTORS, shape, seed=seed + k,
                                     pixel_scale=scale, ra=ra, dec=dec, noise=0.0,
                                     point_sources=0, extended_sources=0)
        wcs += layout.wcs
        del layout
    ngroup = NIRCAM_POINTINGS * NIRCAM_DITHERS
    per = NIRCAM_DETECTORS[0] * NIRCAM_DETECTORS[1]
    groups = np.repeat(np.arange(ngroup), per)
    sky = np.random.default_rng(seed).uniform(100.0, 120.0, ngroup)[groups]
    m = synthetic.on_wcs(wcs, [shape] * len(wcs), sky=sky, noise=(1.0, 2.0), seed=seed,
                         point_sources=300 * NIRCAM_POINTINGS,
                         extended_sources=5 * NIRCAM_POINTINGS)
    return dataclasses.replace(m, groups=groups)


def _subset(m, count: int):
    """Take the first ``count`` images of a mosaic (for a smaller stcal run)."""
    return dataclasses.replace(
        m, data=m.data[:count], wcs=m.wcs[:count], sky=m.sky[:count],
        groups=None if m.groups is None else m.groups[:count], names=m.names[:count],
        noise=m.noise[:count])


def _mosaic(case: str):
    from skyeq import synthetic

    if case == "dithers32":
        return synthetic.dithers(32, shape=SHAPE, noise=(1.0, 2.0), seed=32)
    if case == "nircam":
        return nircam_mosaic()
    return bench_match._mosaic(case)


# --------------------------------------------------------------------------- stcal


def limited(func: Callable[[], Any], limit: float) -> Any | None:
    """Run ``func()`` in a forked child; its result, or None when it ran over ``limit`` s."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")  # the child sees the parent's arrays without a copy
    recv, send = ctx.Pipe(duplex=False)

    def target() -> None:
        try:
            send.send(("ok", func()))
        except BaseException as exc:  # reported in the parent
            send.send(("error", repr(exc)))

    proc = ctx.Process(target=target, daemon=True)
    proc.start()
    send.close()
    try:
        if not recv.poll(limit):
            proc.terminate()
            return None
        try:
            status, value = recv.recv()
        except EOFError:  # the child died without an answer (out of memory?)
            status, value = "error", f"exit code {proc.exitcode}"
    finally:
        proc.join()
    if status != "ok":
        raise RuntimeError(f"stcal failed: {value}")
    return value


@dataclasses.dataclass
class Stcal:
    """What happened to stcal on one case."""

    seconds: float | None = None
    status: str = "skipped"  # measured, extrapolated, skipped
    how: str = ""
    peak_mb: float | None = None
    sky: np.ndarray | None = None


def _stcal(run: Callable[[], tuple[float, float, np.ndarray]], predicted: float | None,
           basis: str, limit: float) -> Stcal:
    """Run stcal if ``predicted`` (from ``basis``) fits in ``limit`` s; else extrapolate."""
    if predicted is not None and predicted > limit:
        return Stcal(predicted, "extrapolated",
                     f"not run: {basis}, over the {limit:.0f} s limit")
    t0 = time.perf_counter()
    out = limited(run, limit)
    if out is not None:
        seconds, peak, sky = out
        return Stcal(seconds, "measured", "", peak, sky)
    spent = time.perf_counter() - t0
    if predicted is None:
        return Stcal(None, "skipped", f"stopped after {spent:.0f} s (over the {limit:.0f} s "
                     "limit), no basis for an extrapolation")
    return Stcal(predicted, "extrapolated",
                 f"stopped after {spent:.0f} s (over the {limit:.0f} s limit); {basis}")


# --------------------------------------------------------------------------- cases


def _err(sky: np.ndarray | None, truth: np.ndarray) -> float | None:
    return None if sky is None else bench_match._err(sky, truth)


def measure_memory_case(case: str, args: argparse.Namespace, done: dict[str, dict]) -> dict:
    """Measure one in-memory mosaic: floor, skyeq serial and threaded, stcal."""
    t0 = time.perf_counter()
    m = _mosaic(case)
    print(f"  inputs: {len(m)} images in {time.perf_counter() - t0:.0f} s", flush=True)
    groups = m.groups
    floor = bench_match.numpy_pass(m.data)
    t_serial, peak, res = bench_match.run_skyeq(m, "median", args.repeat, 1, groups)
    t_par = None
    if args.threads > 1:
        t_par = bench_match.run_skyeq(m, "median", args.repeat, args.threads, groups)[0]
    print(f"  skyeq {t_serial:.3f} s serial, {t_par or float('nan'):.3f} s on "
          f"{args.threads} threads; floor {floor:.3f} s", flush=True)

    def run(m=m) -> tuple[float, float, np.ndarray]:
        return bench_match.run_stcal(m, "median", groups=groups, memory_run=False)

    predicted, basis = None, ""
    n_dithers = {"dithers16": 16, "dithers32": 32}.get(case)
    if n_dithers and done.get("dithers8", {}).get("stcal_s") is not None:
        t8 = done["dithers8"]["stcal_s"]
        predicted = t8 * (n_dithers / 8) ** 2
        basis = (f"t(dithers8) * ({n_dithers}/8)**2 = {t8:.1f} * {(n_dithers / 8) ** 2:.0f} "
                 f"= {predicted:.0f} s")
    if case == "nircam":  # predicted from stcal on the first pointing: 4 groups, 32 images
        first = NIRCAM_DITHERS * NIRCAM_DETECTORS[0] * NIRCAM_DETECTORS[1]
        sub = _subset(m, first)
        out = limited(lambda: bench_match.run_stcal(sub, "median", groups=sub.groups,
                                                    memory_run=False), args.limit)
        if out is not None:
            t_sub, k = out[0], len(m) // first
            predicted = t_sub * k ** 2
            ngroup = len(np.unique(groups))
            by_pairs = t_sub * len(res.pairs) / (NIRCAM_DITHERS * (NIRCAM_DITHERS - 1) / 2)
            basis = (f"stcal on the first pointing ({first} images, {NIRCAM_DITHERS} groups, "
                     f"{NIRCAM_DITHERS * (NIRCAM_DITHERS - 1) // 2} overlapping group pairs) "
                     f"took {t_sub:.1f} s; t * ({len(m)}/{first})**2 = {predicted:.0f} s "
                     f"(scaled by the overlapping group pairs instead, {len(res.pairs)} of "
                     f"{ngroup * (ngroup - 1) // 2}: {by_pairs:.0f} s)")
            print(f"  stcal on the first pointing: {t_sub:.1f} s", flush=True)
        del sub
    st = _stcal(run, predicted, basis, args.limit)
    print(f"  stcal {st.status}: {_f(st.seconds, '.1f')} s {st.how}", flush=True)
    row = {
        "case": case, "label": LABELS[case], "input": "memory", "images": len(m),
        "groups": None if groups is None else len(np.unique(groups)),
        "shape": list(m.data[0].shape), "pairs": len(res.pairs),
        "overlap_pixels": int(np.sum(res.pairs["npix_i"]) + np.sum(res.pairs["npix_j"])),
        "floor_s": floor, "skyeq_s_serial": t_serial, "skyeq_s_threads": t_par,
        "threads": args.threads, "skyeq_peak_mb": peak,
        "skyeq_peak_kind": "RSS growth above the inputs, first serial run",
        "skyeq_err": _err(res.sky, m.sky), "stcal_s": st.seconds, "stcal_status": st.status,
        "stcal_how": st.how, "stcal_peak_mb": st.peak_mb,
        "stcal_peak_kind": "RSS growth above the inputs, during the timed run",
        "stcal_err": _err(st.sky, m.sky),
        "skyeq_minus_stcal": None if st.sky is None else float(np.abs(res.sky - st.sky).max()),
        "page_cache": None,
    }
    del m, res
    return row


def measure_scale_case(case: str, args: argparse.Namespace, done: dict[str, dict]) -> dict:
    """Measure one size of the FITS series: skyeq in a fresh process, stcal in a child."""
    n = int(case.removeprefix("scale"))
    work = Path(args.dir) / str(n)
    paths, truth = bench_scale._write(n, work)
    out = bench_scale._run(paths, work, args.threads, False)
    print(f"  skyeq {out['wall']:.1f} s on {args.threads} threads, peak RSS "
          f"{out['rss_mb']:.0f} MB", flush=True)
    # the basis: the largest size of the series stcal ran on, else the 6x6 tiles
    ran = [r for r in done.values() if r["input"] == "fits" and r["stcal_status"] == "measured"]
    predicted, basis = None, ""
    if ran:
        ref = max(ran, key=lambda r: r["images"])
        predicted = ref["stcal_s"] * (n / ref["images"]) ** 2
        basis = (f"t({ref['images']}) * ({n}/{ref['images']})**2 = {ref['stcal_s']:.1f} * "
                 f"{(n / ref['images']) ** 2:.2f} = {predicted:.0f} s")
    elif done.get("6x6", {}).get("stcal_status") == "measured":
        t36 = done["6x6"]["stcal_s"]
        predicted = t36 * (n / 36) ** 2
        basis = (f"t(6x6 tiles, 36 images, in memory) * ({n}/36)**2 = {t36:.1f} * "
                 f"{(n / 36) ** 2:.2f} = {predicted:.0f} s")

    def run(paths=paths) -> tuple[float, float, np.ndarray]:
        with PeakRSS() as mem:
            seconds, sky = bench_scale._stcal(paths)
        return seconds, mem.peak / 1e6, sky

    if args.quick and case in QUICK_NO_STCAL:
        if predicted is None:
            st = Stcal(None, "skipped", "not run in --quick")
        else:
            st = Stcal(predicted, "extrapolated", f"not run in --quick: {basis}")
    else:
        st = _stcal(run, predicted, basis, args.limit)
    print(f"  stcal {st.status}: {_f(st.seconds, '.1f')} s {st.how}", flush=True)
    return {
        "case": case, "label": LABELS[case], "input": "fits", "images": n, "groups": None,
        "shape": list(SHAPE), "pairs": out["pairs"], "overlap_pixels": None,
        "floor_s": None, "skyeq_s_serial": None, "skyeq_s_threads": out["wall"],
        "threads": args.threads, "skyeq_peak_mb": out["rss_mb"],
        "skyeq_peak_kind": "VmHWM of the whole fresh process",
        "skyeq_err": bench_scale._err(out["sky"], truth), "stcal_s": st.seconds,
        "stcal_status": st.status, "stcal_how": st.how, "stcal_peak_mb": st.peak_mb,
        "stcal_peak_kind": "RSS growth while reading every file and matching",
        "stcal_err": _err(st.sky, truth),
        "skyeq_minus_stcal": (None if st.sky is None
                              else float(np.abs(np.asarray(out["sky"]) - st.sky).max())),
        "page_cache": "warm or partly (not dropped)",
    }


# --------------------------------------------------------------------------- outputs


def _f(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def table(rows: list[dict], threads: int) -> str:
    """Render the scoreboard as a markdown table."""
    out = []
    for r in rows:
        best = r["skyeq_s_threads"] or r["skyeq_s_serial"]
        stcal = _f(r["stcal_s"], ".1f")
        if r["stcal_status"] == "extrapolated":
            stcal = f"~{stcal}*"
        speed = "-" if r["stcal_s"] is None else f"{r['stcal_s'] / best:.0f}x"
        out.append([
            r["case"], r["label"], r["input"], r["images"], r["pairs"], _f(r["floor_s"], ".3f"),
            _f(r["skyeq_s_serial"], ".3f"), _f(r["skyeq_s_threads"], ".3f"), stcal, speed,
            _f(r["skyeq_peak_mb"], ".0f") + ("" if r["input"] == "memory" else " (process)"),
            _f(r["stcal_peak_mb"], ".0f"), _f(r["skyeq_err"], ".4f"), _f(r["stcal_err"], ".4f"),
        ])
    return markdown_table(
        ["case", "mosaic", "input", "images", "pairs", "floor s", "skyeq s serial",
         f"skyeq s {threads} threads", "stcal s", "speed-up", "skyeq peak MB",
         "stcal peak MB", "skyeq err", "stcal err"], out)


def write_json(path: Path, meta: dict, rows: list[dict]) -> None:
    """Write ``scoreboard.json``; ``stcal_measured_s`` is null unless stcal ran."""
    for r in rows:
        r["stcal_measured_s"] = r["stcal_s"] if r["stcal_status"] == "measured" else None
    path.write_text(json.dumps({**meta, "cases": rows}, indent=1) + "\n")


def write_markdown(path: Path, meta: dict, rows: list[dict]) -> None:
    """Write ``scoreboard.md``: how it was measured, the table, the extrapolations."""
    lines = [
        f"# skyeq scoreboard ({meta['mode']} mode)",
        "",
        f"`{meta['command']}` on {meta['date']}, commit {meta['git_commit'][:10]}"
        f"{' (with uncommitted changes)' if meta['git_dirty'] else ''}, "
        f"{meta['wall_s'] / 60:.1f} min in all.",
        "",
        meta["environment"],
        "",
        "method='match', median, nclip=5, lsigma=usigma=4, numba warm. skyeq: median of "
        f"{meta['repeat']} runs (in memory), one run in a fresh process (FITS). stcal 1.20: one "
        "run. floor: one numpy.sum pass over every image in memory. speed-up: stcal over "
        f"skyeq on {meta['threads']} threads. Peak MB: resident-memory growth above the "
        "inputs (in memory); for the FITS series skyeq's is the whole process's VmHWM "
        "and stcal's includes reading every file. err: max |d - mean(d)|, d = sky - true "
        "sky. * extrapolated, see below. The full definitions: `benchmarks/bench_all.py`.",
        "",
        table(rows, meta["threads"]),
        "",
    ]
    for r in rows:
        if r["stcal_status"] == "extrapolated":
            lines.append(f"- {r['case']} ({r['images']} images): stcal's "
                         f"{r['stcal_s']:.0f} s is extrapolated ({r['stcal_how']}).")
        elif r["stcal_status"] == "skipped":
            lines.append(f"- {r['case']}: stcal {r['stcal_how']}.")
    path.write_text("\n".join(lines) + "\n")


def plot(path: Path, meta: dict, rows: list[dict]) -> None:
    """Write ``scoreboard.png``: time and peak memory against the number of images."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(13, 5.5))
    mem = [r for r in rows if r["input"] == "memory"]
    fits = sorted((r for r in rows if r["input"] == "fits"), key=lambda r: r["images"])

    def skyeq_t(r: dict) -> float:
        return r["skyeq_s_threads"] or r["skyeq_s_serial"]

    # time panel
    ax_t.plot([r["images"] for r in mem], [skyeq_t(r) for r in mem], "o", color="C0",
              label=f"skyeq, in memory ({meta['threads']} threads)")
    if fits:
        ax_t.plot([r["images"] for r in fits], [skyeq_t(r) for r in fits], "o-", color="C0",
                  mfc="white", label=f"skyeq, FITS tiles series ({meta['threads']} threads)")
    meas = [r for r in rows if r["stcal_status"] == "measured"]
    extr = [r for r in rows if r["stcal_status"] == "extrapolated"]
    ax_t.plot([r["images"] for r in meas], [r["stcal_s"] for r in meas], "s", color="C3",
              label="stcal, measured")
    ax_t.plot([r["images"] for r in extr], [r["stcal_s"] for r in extr], "s", color="C3",
              mfc="white", label="stcal, extrapolated")
    series = [r for r in fits if r["stcal_s"] is not None]
    if len(series) > 1:
        ax_t.plot([r["images"] for r in series], [r["stcal_s"] for r in series], "--",
                  color="C3", lw=1)
    floor = [r for r in mem if r["floor_s"]]
    ax_t.plot([r["images"] for r in floor], [r["floor_s"] for r in floor], "x", color="0.4",
              ms=8, label="floor: one numpy pass over the images")
    for r in rows:
        for y in (skyeq_t(r), r["stcal_s"]):
            if y:
                ax_t.annotate(r["case"], (r["images"], y), textcoords="offset points",
                              xytext=(5, 3), fontsize=7, color="0.3")
    ax_t.set_ylabel("wall time (s)")
    ax_t.set_title("time to match")

    # memory panel
    ax_m.plot([r["images"] for r in mem], [max(r["skyeq_peak_mb"], 1.0) for r in mem], "o",
              color="C0", label="skyeq, in memory: growth above the inputs")
    if fits:
        ax_m.plot([r["images"] for r in fits], [r["skyeq_peak_mb"] for r in fits], "o-",
                  color="C0", mfc="white", label="skyeq, FITS: whole process (VmHWM)")
    st = [r for r in rows if r["stcal_peak_mb"] is not None]
    ax_m.plot([r["images"] for r in st], [max(r["stcal_peak_mb"], 1.0) for r in st], "s",
              color="C3", label="stcal: growth (FITS: reading the files included)")
    n = np.array(sorted({r["images"] for r in rows}), dtype=float)
    ax_m.plot(n, n * MB_PER_IMAGE, ":", color="0.4",
              label="every input in memory (n x 16.8 MB)")
    for r in rows:
        ax_m.annotate(r["case"], (r["images"], max(r["skyeq_peak_mb"], 1.0)),
                      textcoords="offset points", xytext=(5, 3), fontsize=7, color="0.3")
    ax_m.set_ylabel("peak memory (MB; values under 1 MB drawn at 1)")
    ax_m.set_title("peak memory")
    ticks = [t for t in (5, 10, 30, 100, 300, 1000) if n.min() / 1.5 <= t <= n.max() * 1.5]
    for ax in (ax_t, ax_m):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("number of images (2048x2048 float32)")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(f"skyeq vs stcal 1.20, method='match' ({meta['mode']} mode, {meta['date']}, "
                 f"{meta['git_commit'][:10]})", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _git() -> tuple[str, bool]:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip() or "unknown"
    dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=ROOT,
                                capture_output=True, text=True).stdout.strip())
    return head, dirty


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks all", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the few-minute subset")
    p.add_argument("--cases", nargs="+", choices=FULL, help="only these cases")
    p.add_argument("--repeat", type=int, default=3, help="skyeq runs per in-memory case")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=float, default=600.0,
                   help="longest stcal run in s (default 600); beyond it, extrapolate")
    p.add_argument("--dir", default="/tmp/skyeq-scale", help="the FITS files of the series")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--replot", action="store_true",
                   help="only rewrite scoreboard.md and .png from the scoreboard.json in --out")
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.replot:
        saved = json.loads((out / "scoreboard.json").read_text())
        rows = saved.pop("cases")
        write_json(out / "scoreboard.json", saved, rows)
        write_markdown(out / "scoreboard.md", saved, rows)
        plot(out / "scoreboard.png", saved, rows)
        print((out / "scoreboard.md").read_text())
        return 0
    cases = args.cases or (QUICK if args.quick else FULL)
    t_start = time.perf_counter()
    env = environment()
    print(env)
    print(f"mode {'quick' if args.quick else 'full'}: {', '.join(cases)}")
    print("warming up numba ...", flush=True)
    bench_match._warmup()
    done: dict[str, dict] = {}
    for case in cases:
        print(f"{case}: {LABELS[case]} ({time.perf_counter() - t_start:.0f} s so far)",
              flush=True)
        measure = measure_scale_case if case.startswith("scale") else measure_memory_case
        done[case] = measure(case, args, done)
    rows = list(done.values())
    commit, dirty = _git()
    meta = {
        "mode": "quick" if args.quick else "full",
        "command": "python -m benchmarks all" + (" --quick" if args.quick else "")
                   + (f" --cases {' '.join(args.cases)}" if args.cases else ""),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "git_commit": commit, "git_dirty": dirty, "environment": env,
        "repeat": args.repeat, "threads": args.threads, "stcal_limit_s": args.limit,
        "wall_s": time.perf_counter() - t_start,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "scoreboard.json", meta, rows)
    write_markdown(out / "scoreboard.md", meta, rows)
    plot(out / "scoreboard.png", meta, rows)
    print()
    print((out / "scoreboard.md").read_text())
    print(f"wrote {out}/scoreboard.{{json,md,png}} in {meta['wall_s'] / 60:.1f} min")
    return 0
