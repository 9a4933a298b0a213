"""One adapter from any supported WCS to vectorised pixel <-> world functions.

skyeq needs only two things from a WCS: sky coordinates (degrees) of pixel positions
and pixel positions of sky coordinates, with zero-based pixel coordinates and pixel
centres at integers. `as_wcs_adapter` turns any of these into a `WCSAdapter`:

* an `astropy.wcs.WCS` (with or without SIP / lookup-table distortions; the full
  ``all_pix2world`` / ``all_world2pix`` transforms are used);
* a ``gwcs.WCS`` (its forward and inverse transforms are called with
  ``with_bounding_box=False``, so the detector outline at the pixel edges is never
  turned into NaN by the bounding box);
* any other APE 14 low-level WCS (``pixel_to_world_values`` /
  ``world_to_pixel_values``), or an object with a ``low_level_wcs`` attribute
  (e.g. `astropy.wcs.wcsapi.HighLevelWCSWrapper`);
* a pair of callables ``(fwd, inv)`` with ``fwd(x, y) -> (ra, dec)`` and
  ``inv(ra, dec) -> (x, y)``, degrees and zero-based pixel centres.

Longitudes are returned wrapped to [0, 360). The adapter stores the wrapped object
itself (no closures), so it pickles whenever that object pickles.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["WCSAdapter", "as_wcs_adapter"]

log = logging.getLogger(__name__)

_KINDS = ("fitswcs", "gwcs", "ape14", "callables")


@dataclass(frozen=True, eq=False)
class WCSAdapter:
    """Vectorised pixel <-> world transforms of one image.

    Build it with `as_wcs_adapter`; the fields are an implementation detail.

    Parameters
    ----------
    name : str
        Name of the image, used in error messages.
    kind : {'fitswcs', 'gwcs', 'ape14', 'callables'}
        How ``wcs`` is called.
    wcs : object
        The wrapped WCS, or the ``(fwd, inv)`` pair for ``kind='callables'``.
    lon_axis : int
        Index of the longitude among the world axes (0 or 1).
    """

    name: str
    kind: str
    wcs: Any
    lon_axis: int = 0

    def __repr__(self) -> str:
        return f"WCSAdapter(name={self.name!r}, kind={self.kind!r})"

    def pixel_to_world(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """Sky coordinates of pixel positions.

        Parameters
        ----------
        x, y : array_like
            Zero-based pixel coordinates (pixel centres at integers), broadcastable.

        Returns
        -------
        ra, dec : ndarray of float64
            Longitude in [0, 360) and latitude, in degrees. Positions where the WCS
            is undefined are NaN.

        Raises
        ------
        ValueError
            If the wrapped WCS raises; the message names the image.
        """
        x, y = np.broadcast_arrays(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
        try:
            if self.kind == "fitswcs":
                w = self.wcs.all_pix2world(x, y, 0)
            elif self.kind == "gwcs":
                w = self.wcs(x, y, with_bounding_box=False)
            elif self.kind == "ape14":
                w = self.wcs.pixel_to_world_values(x, y)
            else:
                w = self.wcs[0](x, y)
        except Exception as err:
            raise ValueError(
                f"the WCS of {self.name} failed to map pixel to world coordinates: {err}"
            ) from err
        lon = _values(w[self.lon_axis])
        lat = _values(w[1 - self.lon_axis])
        return _wrap360(np.broadcast_to(lon, x.shape)), np.array(
            np.broadcast_to(lat, x.shape), dtype=float
        )

    def world_to_pixel(self, ra: Any, dec: Any) -> tuple[np.ndarray, np.ndarray]:
        """Pixel positions of sky coordinates.

        Parameters
        ----------
        ra, dec : array_like
            Longitude and latitude in degrees, broadcastable.

        Returns
        -------
        x, y : ndarray of float64
            Zero-based pixel coordinates (pixel centres at integers); NaN where the
            WCS has no inverse.

        Raises
        ------
        ValueError
            If the wrapped WCS raises (for instance an iterative SIP inverse that
            does not converge); the message names the image.
        """
        ra, dec = np.broadcast_arrays(np.asarray(ra, dtype=float), np.asarray(dec, dtype=float))
        world = (ra, dec) if self.lon_axis == 0 else (dec, ra)
        try:
            if self.kind == "fitswcs":
                p = self.wcs.all_world2pix(*world, 0, tolerance=1e-6, maxiter=50)
            elif self.kind == "gwcs":
                p = self.wcs.invert(*world, with_bounding_box=False)
            elif self.kind == "ape14":
                p = self.wcs.world_to_pixel_values(*world)
            else:
                p = self.wcs[1](ra, dec)
        except Exception as err:
            raise ValueError(
                f"the WCS of {self.name} failed to map world to pixel coordinates: {err}"
            ) from err
        x = np.array(np.broadcast_to(_values(p[0]), ra.shape), dtype=float)
        y = np.array(np.broadcast_to(_values(p[1]), ra.shape), dtype=float)
        return x, y


def _values(a: Any) -> np.ndarray:
    """Return a float64 array of plain values (degrees if ``a`` is a Quantity).

    Parameters
    ----------
    a : array_like or astropy.units.Quantity
        Coordinates.

    Returns
    -------
    ndarray
        Float64 values.
    """
    if hasattr(a, "unit") and hasattr(a, "to_value"):
        unit = a.unit
        if unit is not None and unit.physical_type == "angle":
            return np.asarray(a.to_value("deg"), dtype=float)
        return np.asarray(a.value, dtype=float)
    return np.asarray(a, dtype=float)


def _wrap360(lon: np.ndarray) -> np.ndarray:
    """Wrap longitudes (degrees) to [0, 360).

    Parameters
    ----------
    lon : ndarray
        Longitudes in degrees.

    Returns
    -------
    ndarray
        A new float64 array in [0, 360) (NaN stays NaN).
    """
    out = np.mod(np.asarray(lon, dtype=float), 360.0)
    # np.mod(-1e-20, 360) rounds to 360.0
    return np.where(out >= 360.0, out - 360.0, out)


def _lon_axis_from_types(types: Any) -> int:
    """Index of the longitude axis from APE 14 world physical types.

    Parameters
    ----------
    types : sequence of str or None
        ``world_axis_physical_types`` of a two-axis celestial WCS.

    Returns
    -------
    int
        1 if the first world axis is a latitude (``*.dec`` / ``*.lat``), else 0.
    """
    try:
        first = str(types[0]).lower()
    except (TypeError, IndexError):
        return 0
    return 1 if first.endswith((".dec", ".lat")) else 0


def _is_callable_pair(obj: Any) -> bool:
    """Return True for a tuple or list of exactly two callables.

    Parameters
    ----------
    obj : object
        Candidate.

    Returns
    -------
    bool
        Whether ``obj`` is an ``(fwd, inv)`` pair.
    """
    return (
        isinstance(obj, tuple | list)
        and len(obj) == 2
        and callable(obj[0])
        and callable(obj[1])
    )


def as_wcs_adapter(wcs: Any, name: str | None = None) -> WCSAdapter:
    """Wrap a WCS (or a pair of callables) in a `WCSAdapter`.

    Parameters
    ----------
    wcs : astropy.wcs.WCS, gwcs.WCS, APE 14 low-level WCS, tuple of callables or WCSAdapter
        The image's WCS; see the module docstring for what each kind means. A
        `WCSAdapter` is returned unchanged (renamed when ``name`` is given).
    name : str, optional
        Name of the image in error messages; defaults to ``'image'``.

    Returns
    -------
    WCSAdapter
        The adapter.

    Raises
    ------
    TypeError
        If ``wcs`` is None or not a supported kind of object.
    ValueError
        If the WCS does not have exactly two pixel and two world axes.

    Examples
    --------
    >>> from astropy.wcs import WCS
    >>> w = WCS(naxis=2)
    >>> w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    >>> w.wcs.crval = [10.0, -30.0]
    >>> w.wcs.crpix = [50.5, 50.5]
    >>> w.wcs.cdelt = [-1e-4, 1e-4]
    >>> ad = as_wcs_adapter(w, name="tile 3")
    >>> ra, dec = ad.pixel_to_world([49.5], [49.5])
    >>> print(f"{ra[0]:.6f} {dec[0]:.6f}")
    10.000000 -30.000000
    """
    label = "image" if name is None else str(name)
    if isinstance(wcs, WCSAdapter):
        if name is None or name == wcs.name:
            return wcs
        return WCSAdapter(label, wcs.kind, wcs.wcs, wcs.lon_axis)
    if wcs is None:
        raise TypeError(f"{label} has no WCS (got None)")
    if _is_callable_pair(wcs):
        return WCSAdapter(label, "callables", tuple(wcs), 0)
    obj = wcs
    if not hasattr(obj, "pixel_to_world_values") and hasattr(obj, "low_level_wcs"):
        obj = obj.low_level_wcs
    if not (hasattr(obj, "pixel_to_world_values") and hasattr(obj, "world_to_pixel_values")):
        raise TypeError(
            f"the WCS of {label} is a {type(wcs).__name__}, not an APE 14 WCS "
            "(astropy.wcs.WCS, gwcs.WCS, an object with pixel_to_world_values and "
            "world_to_pixel_values) nor a pair of callables (fwd, inv)"
        )
    try:
        npix = int(obj.pixel_n_dim)
        nworld = int(obj.world_n_dim)
    except Exception as err:
        raise TypeError(f"the WCS of {label} does not describe its axes: {err}") from err
    if npix != 2 or nworld != 2:
        raise ValueError(
            f"the WCS of {label} must have 2 pixel and 2 world axes, "
            f"got {npix} and {nworld}"
        )
    try:
        types = obj.world_axis_physical_types
    except Exception:
        types = None
    lon_axis = _lon_axis_from_types(types)
    kind = _kind_of(obj)
    return WCSAdapter(label, kind, obj, lon_axis)


def _kind_of(obj: Any) -> str:
    """Choose how to call an APE 14 object.

    Parameters
    ----------
    obj : object
        A low-level WCS.

    Returns
    -------
    str
        ``'fitswcs'`` for `astropy.wcs.WCS` (direct ``all_pix2world`` /
        ``all_world2pix`` calls: no ``pixel_bounds`` NaNs, no convergence warnings),
        ``'gwcs'`` for gwcs-like objects (callable, ``invert``, ``forward_transform``),
        ``'ape14'`` otherwise.
    """
    from astropy.wcs import WCS

    if isinstance(obj, WCS):
        return "fitswcs"
    if callable(obj) and hasattr(obj, "invert") and hasattr(obj, "forward_transform"):
        return "gwcs"
    return "ape14"


def _check_round_trip(
    adapter: WCSAdapter,
    x: np.ndarray,
    y: np.ndarray,
    atol: float = 0.01,
) -> tuple[np.ndarray, np.ndarray]:
    """Map pixels to the sky and back, checking that the WCS is invertible there.

    Parameters
    ----------
    adapter : WCSAdapter
        The image's transforms.
    x, y : ndarray
        Pixel positions (for a footprint: its outline on the pixel edges).
    atol : float, optional
        Largest allowed round-trip error in pixels (default 0.01).

    Returns
    -------
    ra, dec : ndarray
        Sky coordinates of ``x, y`` in degrees.

    Raises
    ------
    ValueError
        If the sky coordinates or the inverted pixels are not finite, or the round
        trip misses by more than ``atol`` pixels; the message names the image.
    """
    ra, dec = adapter.pixel_to_world(x, y)
    if not (np.all(np.isfinite(ra)) and np.all(np.isfinite(dec))):
        raise ValueError(
            f"the WCS of {adapter.name} gives non-finite sky coordinates on the image "
            "outline (is the WCS defined up to the detector edges?)"
        )
    xb, yb = adapter.world_to_pixel(ra, dec)
    err = np.hypot(xb - x, yb - y)
    if not np.all(np.isfinite(err)):
        raise ValueError(
            f"the WCS of {adapter.name} cannot be inverted on the image outline "
            "(world -> pixel gives non-finite values)"
        )
    worst = float(err.max()) if err.size else 0.0
    if worst > atol:
        k = int(np.argmax(err))
        raise ValueError(
            f"the WCS of {adapter.name} cannot be inverted on the image outline: the "
            f"pixel -> world -> pixel round trip misses by {worst:.3g} pixels at "
            f"({x.flat[k]:.1f}, {y.flat[k]:.1f}) (tolerance {atol} pixels)"
        )
    return ra, dec


def _callable_pair(adapter: WCSAdapter) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """Return ``(fwd, inv)`` callables of an adapter, stcal style.

    Parameters
    ----------
    adapter : WCSAdapter
        The adapter.

    Returns
    -------
    fwd, inv : callable
        ``fwd(x, y, with_bounding_box=False) -> (ra, dec)`` and
        ``inv(ra, dec, with_bounding_box=False) -> (x, y)`` (the keyword is accepted
        and ignored), as the reference implementation expects.
    """

    def fwd(x: Any, y: Any, with_bounding_box: bool = False) -> tuple[np.ndarray, np.ndarray]:
        return adapter.pixel_to_world(x, y)

    def inv(ra: Any, dec: Any, with_bounding_box: bool = False) -> tuple[np.ndarray, np.ndarray]:
        return adapter.world_to_pixel(ra, dec)

    return fwd, inv
