"""Write the PNGs of ``docs/_static/plots/``: both plots of `skyeq.SkyResult` for 6 and 300 images.

Run from the source tree: ``python docs/make_plot_pngs.py``. The mosaics are the ones of
``docs/plots.rst`` (which the documentation build draws itself); the PNGs are kept in the
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


if __name__ == "__main__":
    main()
