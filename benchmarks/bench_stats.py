"""Clipped statistics: skyeq's kernels against stcal's ``SkyStats`` on the same images.

Run as ``python -m benchmarks stats [--size 2048] [--repeat 5] [--nclip 5]``.

Inputs: a seeded float32 image (Gaussian sky 100, sigma 1, a few hundred positive
sources, 0.5 % cosmic-ray hits), a good-pixel mask with 10 % bad pixels, and a
rectangular "overlap" region of half the image given as row spans. For every statistic
(nclip=5, lsigma=usigma=4, binwidth=0.1, warm numba):

* no mask: stcal gets the image, skyeq gets the image;
* mask: stcal gets ``image[mask]`` (what its SkyImage passes; the indexing is timed as
  part of stcal's cost), skyeq gets the image and the mask;
* region: stcal gets ``image[region & mask]`` (its overlap path; the indexing is
  timed), skyeq gets the image, the mask and the region's row spans.

Also printed: one ``numpy.sum`` pass over the image (the memory floor), and skyeq's mean
time in units of it.
"""

from __future__ import annotations

import argparse

import numpy as np

from skyeq import SkyStat, _kernels

from ._common import environment, markdown_table, timeit

STATS = ("mean", "median", "mode", "midpt")


def make_image(size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (image, mask, region spans) for the benchmark."""
    rng = np.random.default_rng(seed)
    img = rng.normal(100.0, 1.0, (size, size)).astype(np.float32)
    yy, xx = np.mgrid[-8:9, -8:9]
    psf = np.exp(-(xx**2 + yy**2) / (2 * 2.0**2)).astype(np.float32)
    for _ in range(300):
        y, x = rng.integers(8, size - 8, 2)
        img[y - 8 : y + 9, x - 8 : x + 9] += rng.uniform(5, 500) * psf
    hits = rng.random(img.shape) < 0.005
    img[hits] += rng.uniform(50, 5000, hits.sum()).astype(np.float32)
    mask = rng.random(img.shape) > 0.1
    rows = np.arange(size, dtype=np.int64)
    spans = np.stack([rows, np.zeros_like(rows), np.full_like(rows, size // 2 - 1)], axis=1)
    return img, mask, spans


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks stats", description=__doc__)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--nclip", type=int, default=5)
    args = parser.parse_args(argv)

    from stcal.skymatch.skystatistics import SkyStats

    print(environment())
    img, mask, spans = make_image(args.size)
    region = np.zeros_like(mask)
    region[:, : args.size // 2] = True
    _kernels.warmup()
    t_sum = timeit(lambda: img.sum(), args.repeat)
    print(f"\n{args.size}x{args.size} float32, nclip={args.nclip}, median of {args.repeat} runs; "
          f"one numpy.sum pass: {t_sum * 1e3:.2f} ms\n")

    rows = []
    for name in STATS:
        ours = SkyStat(name, nclip=args.nclip)
        ref = SkyStats(skystat=name, nclip=args.nclip, lsig=4.0, usig=4.0, binwidth=0.1)
        cases = {
            "no mask": (lambda ref=ref: ref(img), lambda ours=ours: ours(img)),
            "mask": (lambda ref=ref: ref(img[mask]), lambda ours=ours: ours(img, mask)),
            "region": (
                lambda ref=ref: ref(img[region & mask]),
                lambda ours=ours: ours(img, mask, spans),
            ),
        }
        for case, (f_ref, f_ours) in cases.items():
            t_ref = timeit(f_ref, args.repeat)
            t_ours = timeit(f_ours, args.repeat)
            v_ref, n_ref = f_ref()
            v_ours, n_ours = f_ours()
            rows.append([
                name, case, f"{t_ref * 1e3:.1f}", f"{t_ours * 1e3:.2f}",
                f"{t_ref / t_ours:.1f}x", f"{t_ours / t_sum:.1f}",
                f"{float(v_ref):.5f}", f"{v_ours:.5f}", f"{n_ref}/{n_ours}",
            ])
    print(markdown_table(
        ["statistic", "input", "stcal ms", "skyeq ms", "speed-up", "skyeq / numpy.sum",
         "stcal value", "skyeq value", "npix stcal/skyeq"],
        rows,
    ))
    return 0
