"""skyeq: fast sky (background) matching for mosaics of overlapping astronomical images.

The public API is what this module exports; everything in modules whose names start
with an underscore, and every name starting with an underscore, is private.
"""

from importlib.metadata import PackageNotFoundError, version

from .stats import SkyStat, SkyValue, sky_statistic

try:
    __version__ = version("skyeq")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["SkyStat", "SkyValue", "__version__", "sky_statistic"]
