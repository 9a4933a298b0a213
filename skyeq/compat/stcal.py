"""``stcal.skymatch`` with skyeq underneath: switch by changing one import.

The public names and call conventions of stcal 1.20.0's ``skymatch`` package::

    # from stcal.skymatch import SkyGroup, SkyImage, SkyStats, skymatch
    from skyeq.compat.stcal import SkyGroup, SkyImage, SkyStats, skymatch

`SkyStats` is called on an array and returns ``(value, npix)``; `SkyImage` holds an
image **by reference** with its good-pixel mask and its WCS as two callables taking
``with_bounding_box``; `SkyGroup` holds the images of one exposure, whose sky changes
together; `skymatch` computes the skies and leaves them in the objects (``sky``,
``is_sky_valid``), subtracting them from the caller's arrays in place when asked.
Underneath, `skymatch` is one `skyeq.match_sky` call (spans, candidate pairs, the
sparse solve), not a second implementation.

Where the reference crashes or silently gives up (its algorithm_spec section 8),
this module raises a clear error or gives skyeq's documented outcome instead; see
docs/differences.md, "The stcal interface".
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from .. import geometry
from ..skymatch import match_sky
from ..stats import SkyStat

__all__ = ["SkyGroup", "SkyImage", "SkyStats", "skymatch"]

log = logging.getLogger(__name__)

_METHODS = ("local", "global", "match", "global+match")


class SkyStats:
    """A clipped sky statistic, called on an array: ``SkyStats(...)(data) -> (value, npix)``.

    Parameters
    ----------
    skystat : {'mean', 'median', 'mode', 'midpt'}, optional
        The statistic. Default ``'mean'`` (the reference's default here; its JWST and
        Roman steps pass ``'mode'``).
    lower, upper : float or None, optional
        Inclusive limits on usable pixel values. Default: none.
    nclip : int, optional
        Clipping iterations. Default 5.
    lsig, usig : float, optional
        Lower and upper clipping limits in standard deviations. Default 4.
    binwidth : float, optional
        Histogram bin width for ``mode`` and ``midpt``, in standard deviations.
        Default 0.1.

    Raises
    ------
    ValueError, TypeError
        For an unknown statistic or invalid settings, here (the reference raised only
        when called, and its callers then treated every sky as uncomputable).
    """

    def __init__(
        self,
        skystat: str = "mean",
        lower: float | None = None,
        upper: float | None = None,
        nclip: int = 5,
        lsig: float = 4.0,
        usig: float = 4.0,
        binwidth: float = 0.1,
    ) -> None:
        self.stat = SkyStat(skystat, lower=lower, upper=upper, nclip=nclip, lsigma=lsig,
                            usigma=usig, binwidth=binwidth)
        self.npix: int | None = None
        self.skyval: float | None = None

    def calc_sky(self, data: Any) -> tuple[float, int]:
        """Compute the statistic of ``data``.

        Parameters
        ----------
        data : array_like
            Pixel values (any shape; NaN and infinite values are not used).

        Returns
        -------
        tuple
            ``(value, npix)``.

        Raises
        ------
        ValueError
            If no value is usable (as the reference does; `SkyImage.calc_sky` turns
            it into "no sky").
        """
        arr = np.asarray(data)
        if arr.size == 0:
            raise ValueError("Not enough data points to compute statistics.")
        value, npix = self.stat(arr.reshape(1, -1))
        if npix == 0:
            raise ValueError("No usable data points to compute statistics.")
        self.skyval, self.npix = value, npix
        return value, npix

    def __call__(self, data: Any) -> tuple[float, int]:
        """Compute the statistic of ``data`` (see `calc_sky`)."""
        return self.calc_sky(data)


class SkyImage:
    """One image for `skymatch`: the data (by reference), its mask, WCS and sky.

    Parameters
    ----------
    image : ndarray, 2-D
        The image, kept by reference: ``skymatch(..., subtract=True)`` subtracts the
        sky from this very array.
    mask : ndarray of bool, 2-D
        True for pixels usable for the sky; the shape of ``image``.
    wcs_fwd : callable
        ``wcs_fwd(x, y, with_bounding_box=False) -> (ra, dec)`` in degrees, zero-based
        pixel coordinates.
    wcs_inv : callable
        ``wcs_inv(ra, dec, with_bounding_box=False) -> (x, y)``.
    skystat : SkyStats
        The statistic (every image of one `skymatch` call must use the same settings).
    sky_id : any, optional
        Stored as ``sky_id`` (names the image in messages).
    stepsize : int or None, optional
        Spacing of the footprint's outline samples in pixels; None: the corners.
    meta : dict, optional
        Stored as ``meta``.

    Attributes
    ----------
    sky : float
        The sky level, cumulative over `skymatch` calls (starts at 0.0).
    is_sky_valid : bool
        Whether the last `skymatch` could compute it (starts False).

    Raises
    ------
    ValueError
        If the mask's shape differs from the image's.
    """

    def __init__(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        wcs_fwd: Callable[..., Any],
        wcs_inv: Callable[..., Any],
        skystat: SkyStats | Callable[[Any], tuple[float, int]],
        sky_id: Any = None,
        stepsize: int | None = None,
        meta: dict | None = None,
    ) -> None:
        if np.shape(image) != np.shape(mask):
            raise ValueError("'mask' must have the same shape as 'image'.")
        self.image = image
        self.mask = mask
        self.meta = meta
        self.sky_id = sky_id
        self.skystat = skystat
        self.stepsize = stepsize
        self._wcs_fwd = wcs_fwd
        self._wcs_inv = wcs_inv
        self.sky = 0.0
        self.is_sky_valid = False
        self._footprint: geometry.Footprint | None = None

    @property
    def wcs(self) -> Any:
        """The WCS as skyeq takes it.

        When ``wcs_fwd`` and ``wcs_inv`` are methods of one gwcs (the JWST step passes
        ``wcs.__call__`` and ``wcs.invert`` of the image's gwcs), that gwcs itself, so
        that skyeq sees what it is (it is then inverted through a verified polynomial
        fit instead of its slow backward transform); otherwise the pair ``(fwd, inv)``,
        called without the keyword.
        """
        owner = getattr(self._wcs_fwd, "__self__", None)
        if owner is not None and getattr(self._wcs_inv, "__self__", None) is owner:
            if type(owner).__module__.split(".")[0] == "gwcs":
                return owner
        return (lambda x, y: self._wcs_fwd(x, y, with_bounding_box=False),
                lambda ra, dec: self._wcs_inv(ra, dec, with_bounding_box=False))

    @property
    def footprint(self) -> geometry.Footprint:
        """The image's outline on the sky (computed on first use)."""
        if self._footprint is None:
            self._footprint = geometry.footprint(self.wcs, np.shape(self.image),
                                                 self.stepsize, name=str(self.sky_id))
        return self._footprint

    def _overlap(self, other: SkyImage | SkyGroup) -> geometry.Overlap:
        members = [other] if isinstance(other, SkyImage) else list(other)
        pieces: list[np.ndarray] = []
        area = 0.0
        for im in members:
            ov = geometry.intersect(self.footprint, im.footprint)
            pieces.extend(ov.pieces)
            area += ov.area
        return geometry.Overlap(tuple(pieces), area)

    def intersection(self, skyimage: SkyImage | SkyGroup) -> Any:
        """Return the overlap of this image with another image or a group.

        Parameters
        ----------
        skyimage : SkyImage or SkyGroup
            The other.

        Returns
        -------
        spherical_geometry.polygon.SphericalPolygon
            The overlap (with a group: the union of the overlaps with its members).
        """
        return self._overlap(skyimage).to_polygon()

    def calc_sky(
        self, overlap: SkyImage | SkyGroup | None = None, delta: bool = True
    ) -> tuple[float | None, int, float]:
        """Compute the sky of the whole image or of its overlap with another.

        Parameters
        ----------
        overlap : SkyImage, SkyGroup or None, optional
            None: the whole image (its usable pixels); otherwise the pixels of this
            image inside its overlap with that image or group.
        delta : bool, optional
            Return the value minus the current ``sky``. Default True.

        Returns
        -------
        skyval : float or None
            None when no pixel is usable or there is no overlap.
        npix : int
            Pixels behind the value.
        polyarea : float
            Area (steradians) of the footprint or of the overlap.
        """
        spans = None
        if overlap is None:
            area = self.footprint.area
        else:
            ov = self._overlap(overlap)
            if ov.area == 0.0:
                return None, 0, 0.0
            area = ov.area
            spans = geometry.overlap_spans(ov, self.wcs, np.shape(self.image))
        stat = _stat_of(self)
        value, npix = stat(np.asarray(self.image), np.asarray(self.mask, dtype=bool), spans)
        if npix == 0 or not math.isfinite(value):
            return None, 0, 0.0
        return (value - self.sky if delta else value), int(npix), float(area)


class SkyGroup:
    """Images whose sky changes together (one exposure's detectors).

    Parameters
    ----------
    images : list of SkyImage
        The members, at least one.
    sky_id : any, optional
        Stored as ``sky_id``.

    Raises
    ------
    ValueError
        If ``images`` is empty.
    """

    def __init__(self, images: Sequence[SkyImage], sky_id: Any = None) -> None:
        if not images:
            raise ValueError("SkyGroup requires a list of images")
        self._images = images
        self.sky_id = sky_id
        self._sky = 0.0

    @property
    def sky(self) -> float:
        """The group's sky; setting it adds the change to every member's ``sky``."""
        return self._sky

    @sky.setter
    def sky(self, sky: float) -> None:
        change = sky - self._sky
        self._sky = sky
        for im in self._images:
            im.sky += change

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, idx: int) -> SkyImage:
        return self._images[idx]

    def __iter__(self) -> Iterator[SkyImage]:
        yield from self._images

    def intersection(self, skyimage: SkyImage | SkyGroup) -> Any:
        """Return the union of the members' overlaps with another image or group."""
        pieces: list[np.ndarray] = []
        for im in self._images:
            pieces.extend(im._overlap(skyimage).pieces)
        return geometry.Overlap(tuple(pieces), 0.0).to_polygon()

    def calc_sky(
        self, overlap: SkyImage | SkyGroup | None = None, delta: bool = True
    ) -> tuple[float | None, int, float]:
        """Compute the group's sky (see `SkyImage.calc_sky`).

        Without ``overlap``: the smallest of the members' skies (its npix and area);
        with one: the npix-weighted mean of the members' skies in their overlaps with
        it (the summed npix and areas).
        """
        if overlap is None:
            best: tuple[float | None, int, float] = (None, 0, 0.0)
            for im in self._images:
                value, npix, area = im.calc_sky(None, delta)
                if value is not None and (best[0] is None or value < best[0]):
                    best = (value, npix, area)
            return best
        wsum, nsum, asum = 0.0, 0, 0.0
        for im in self._images:
            value, npix, area = im.calc_sky(overlap, delta)
            asum += area
            if value is not None and npix > 0:
                wsum += value * npix
                nsum += npix
        if nsum == 0 or asum == 0.0:
            return None, nsum, asum
        return wsum / nsum, nsum, asum


def _stat_of(image: SkyImage) -> SkyStat:
    """Return the `SkyStat` of an image's ``skystat``, or raise a clear error."""
    st = image.skystat
    if isinstance(st, SkyStats):
        return st.stat
    if isinstance(st, SkyStat):
        return st
    raise TypeError(
        f"the skystat of image {image.sky_id!r} must be a skyeq.compat.stcal.SkyStats (or "
        f"a skyeq.SkyStat), got {type(st).__name__}: skyeq computes the statistic itself"
    )


def skymatch(
    images: Sequence[SkyImage | SkyGroup],
    skymethod: str = "global+match",
    match_down: bool = True,
    subtract: bool = False,
) -> None:
    """Compute (and match) the skies of images and groups; leave them in the objects.

    Parameters
    ----------
    images : list of SkyImage or SkyGroup
        The images; a group's members share one sky.
    skymethod : {'local', 'global', 'match', 'global+match'}, optional
        As in `skyeq.match_sky` (case-insensitive). Default ``'global+match'``.
    match_down : bool, optional
        Match to the lowest sky (True, default) or the highest.
    subtract : bool, optional
        Subtract the change of each sky from its image, in place. Default False.

    Raises
    ------
    ValueError
        For an unknown method or no image.
    TypeError
        For an element that is neither a `SkyImage` nor a `SkyGroup`, or a
        ``skystat`` that is not a `SkyStats`.

    Notes
    -----
    Each ``sky`` is cumulative: it grows by what this call computes. Without
    ``subtract`` the statistics are those of the images minus their current ``sky``;
    with it, of the images as they are (the reference's convention: what was
    subtracted before is in ``sky`` already). ``is_sky_valid`` is set per image; with
    a ``global`` method an image whose sky could not be computed keeps its previous
    ``sky`` and validity only when no image had a sky.
    """
    method = skymethod.lower() if isinstance(skymethod, str) else skymethod
    if method not in _METHODS:
        raise ValueError(
            "Unsupported 'skymethod'. Valid values are: 'local', 'global', 'match', or "
            "'global+match'"
        )
    items = list(images)
    flat, gid = _flatten(items)
    if not flat:
        raise ValueError("Argument 'images' must contain at least one image")
    stats = {_stat_of(im) for im in flat}
    if len(stats) > 1:
        raise ValueError(
            "skyeq.compat.stcal.skymatch needs one statistic for all images; got "
            f"{len(stats)} different SkyStats settings"
        )
    stat = stats.pop()
    steps = {im.stepsize for im in flat}
    stepsize = None if steps == {None} else min(s for s in steps if s is not None)
    if method == "match" and len(items) == 1:
        # the reference: one image or group has nothing to match: no change, invalid
        log.warning("Nothing to match: one image or group; its sky is not changed")
        for im in flat:
            im.is_sky_valid = False
        return
    data = []
    for im in flat:
        arr = np.asarray(im.image)
        data.append(arr - im.sky if (im.sky != 0.0 and not subtract) else arr)
    result = match_sky(
        data, [im.wcs for im in flat], mask=[np.asarray(im.mask, dtype=bool) for im in flat],
        groups=gid, method=method, stat=stat, match_down=match_down, subtract=False,
        stepsize=stepsize, names=[str(im.sky_id) for im in flat],
    )
    if "global" in method and not result.valid.any():
        return  # no sky anywhere: the reference leaves skies and validity as they were
    change = np.where(result.valid, result.sky, 0.0)
    first: dict[int, int] = {}
    for m, g in enumerate(gid):
        first.setdefault(g, m)
    for g, item in enumerate(items):
        _apply(item, float(change[first[g]]), bool(result.valid[first[g]]), subtract)


def _flatten(items: list[Any]) -> tuple[list[SkyImage], list[int]]:
    """Return every image of ``items`` and the index of the item it belongs to."""
    flat: list[SkyImage] = []
    gid: list[int] = []
    for k, item in enumerate(items):
        if isinstance(item, SkyImage):
            members = [item]
        elif isinstance(item, SkyGroup):
            members = list(item)
        else:
            raise TypeError(
                "Each element of the 'images' must be either a 'SkyImage' or a 'SkyGroup'"
            )
        flat.extend(members)
        gid.extend([k] * len(members))
    return flat, gid


def _apply(item: SkyImage | SkyGroup, change: float, valid: bool, subtract: bool) -> None:
    """Add a sky change to an image or group (and subtract it from the data if asked)."""
    members = [item] if isinstance(item, SkyImage) else list(item)
    kind = "Image" if isinstance(item, SkyImage) else "Group"
    if subtract and change != 0.0:
        for im in members:
            im.image -= change
    item.sky += change
    for im in members:
        im.is_sky_valid = valid
    if not valid:
        log.warning("   *  %s ID=%s: Unable to compute sky value", kind, item.sky_id)
    log.info("   *  %s ID=%s. Sky background: %s", kind, item.sky_id, f"{members[0].sky:G}")
