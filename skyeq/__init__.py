"""skyeq: fast sky (background) matching for mosaics of overlapping astronomical images.

The public API is what this module exports; everything in modules whose names start
with an underscore, and every name starting with an underscore, is private.
"""

from importlib.metadata import PackageNotFoundError, version

from .geometry import Footprint, Overlap, footprints, overlap_graph
from .result import SkyResult
from .skymatch import match_sky
from .stats import SkyStat, SkyValue, sky_statistic

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
]
