"""Write the PNGs of ``docs/_static/plots/``: the plots of `skyeq.SkyResult`, and paired.

Run from the source tree: ``python docs/make_plot_pngs.py``. Both plots of a result for 6
and 300 images (the mosaics of ``docs/plots.rst``, which the documentation build draws
itself), and the figure of ``docs/paired.md`` (a nebula mosaic matched with each
image's own statistics and with ``pair_stat="difference"``). The PNGs are kept in the
repository so that the figures can be seen without building the documentation.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # this source tree, not an installed skyeq

import skyeq  # noqa: E402
from skyeq import synthetic  # noqa: E402

OUT = HERE / "_static" / "plots"

#: name -> mosaic of the documentation page (6 tiles; 300 small rotated tiles)
MOSAICS = {
    "6": lambda: synthetic.tile_grid(2, 3, shape=(64, 64), seed=1, point_sources=20,
                                     extended_sources=0),
    "300": lambda: synthetic.tile_grid(15, 20, shape=(64, 64), seed=1, point_sources=600,
                                       extended_sources=0, rotation_jitter=2.0),
}


def main() -> None:
    """Draw and save ``footprints-<n>.png`` and ``residuals-<n>.png`` for each mosaic."""
    OUT.mkdir(parents=True, exist_ok=True)
    for name, make in MOSAICS.items():
        mosaic = make()
        result = skyeq.match_sky(mosaic.data, mosaic.wcs, method="match")
        for kind in ("footprints", "residuals"):
            fig = result.plot(kind=kind)
            path = OUT / f"{kind}-{name}.png"
            fig.savefig(path, dpi=100)
            plt.close(fig)
            print(f"wrote {path.relative_to(HERE.parent)}")


def paired() -> None:
    """Draw ``paired-errors.png`` (docs/paired.md): each image's sky error, both ways."""
    import numpy as np

    m = synthetic.add_nebula(synthetic.tile_grid(3, 3, shape=(256, 256), seed=4))
    own = skyeq.match_sky(m.data, m.wcs)
    diff = skyeq.match_sky(m.data, m.wcs, pair_stat="difference")
    fig, ax = plt.subplots(figsize=(6.4, 3.6), layout="constrained")
    k = np.arange(len(m))
    for res, label, marker, colour in ((own, "own statistics (default)", "o", "#E69F00"),
                                       (diff, 'pair_stat="difference"', "s", "#0072B2")):
        d = (res.sky - m.sky) / m.noise
        ax.plot(k, d - d.mean(), marker, color=colour, label=label, ms=7)
    ax.axhline(0.0, color="0.5", lw=0.8)
    ax.set_title("3x3 tiles in a nebula: sky errors of the match")
    ax.set_xlabel("image")
    ax.set_ylabel("sky error (noise sigma)")
    ax.set_xticks(k)
    ax.legend(loc="best", frameon=False)
    fig.savefig(OUT / "paired-errors.png", dpi=100)
    plt.close(fig)
    print(f"wrote {(OUT / 'paired-errors.png').relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
    paired()
