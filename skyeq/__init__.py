"""skyeq: fast sky (background) matching for mosaics of overlapping astronomical images.

The public API is what this module exports (``skyeq.__all__``, including the module
`skyeq.synthetic`) and what `skyeq.io` exports (``skyeq.io.__all__``); the API page of
the documentation lists every public name. Everything else is internal and may change
without notice: the other modules (``skyeq.geometry``, ``skyeq.wcs``, ``skyeq.solve``,
...) hold the stages the public functions are built from, and every name starting with
an underscore or living in a module whose name does is private.
"""

from importlib.metadata import PackageNotFoundError, version

from . import synthetic
from .geometry import Footprint, Overlap, footprints, overlap_graph
from .result import SkyResult
from .skymatch import match_sky
from .stats import SkyStat, SkyValue, sky_statistic
from .summaries import sky_summaries

try:
    __version__ = version("skyeq")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "Footprint",
    "Overlap",
    "SkyResult",
    "SkyStat",
    "SkyValue",
    "__version__",
    "footprints",
    "match_sky",
    "overlap_graph",
    "sky_statistic",
    "sky_summaries",
    "synthetic",
]


def __dir__() -> list[str]:
    """List the public API only (the internal modules stay importable, not advertised)."""
    return sorted(__all__)
