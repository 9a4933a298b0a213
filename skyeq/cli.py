"""The ``skyeq`` command line: ``skyeq demo``.

Uses only the public API of :mod:`skyeq`.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import skyeq

__all__ = ["main"]


def _demo_stats(seed: int) -> int:
    """Clipped statistics of a seeded synthetic image with a known sky."""
    rng = np.random.default_rng(seed)
    true_sky, noise = 100.0, 1.0
    img = rng.normal(true_sky, noise, (1024, 1024)).astype(np.float32)
    yy, xx = np.mgrid[-10:11, -10:11]
    psf = np.exp(-(xx**2 + yy**2) / 8.0)
    for _ in range(200):
        y, x = rng.integers(10, 1014, 2)
        img[y - 10 : y + 11, x - 10 : x + 11] += rng.uniform(5, 300) * psf
    hits = rng.random(img.shape) < 0.002
    img[hits] += rng.uniform(100, 5000, hits.sum()).astype(np.float32)
    mask = rng.random(img.shape) > 0.05
    print(f"skyeq {skyeq.__version__}: clipped statistics of a 1024x1024 image")
    print(f"true sky {true_sky}, noise {noise}, 200 sources, 0.2 % cosmic rays, 5 % masked\n")
    print(f"{'statistic':<10}{'value':>12}{'error/noise':>13}{'npix':>10}{'ms':>8}")
    for name in skyeq.stats.STATISTICS:
        stat = skyeq.SkyStat(name, nclip=5)
        stat(img, mask)  # compile or load the kernels first
        t0 = time.perf_counter()
        value, npix = skyeq.sky_statistic(img, mask, stat)
        dt = (time.perf_counter() - t0) * 1e3
        print(f"{name:<10}{value:>12.4f}{(value - true_sky) / noise:>13.4f}{npix:>10}{dt:>8.2f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the ``skyeq`` command; returns the exit code."""
    parser = argparse.ArgumentParser(prog="skyeq", description=skyeq.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run skyeq on a built-in synthetic example")
    demo.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "demo":
        return _demo_stats(args.seed)
    return 2  # pragma: no cover - argparse rejects unknown commands
