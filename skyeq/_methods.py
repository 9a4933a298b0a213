"""The sky methods: their names (`METHODS`), their skies, and the subtraction.

This is the one home of the method names; `match_offsets` and `group_skies` turn the
groups' measurements into skies, and `subtracted` removes them from the images.
``local``, ``global``, ``match``, ``global+match`` and ``user`` are the methods of the
JWST ``skymatch`` step; `skyeq.match_sky` takes them as ``method=`` and a `SkyResult`
carries one as BKGMETH.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .solve import combine_global_match, solve_match

__all__ = [
    "METHODS",
    "check_method",
    "group_skies",
    "match_offsets",
    "subtracted",
]

log = logging.getLogger(__name__)

#: The sky methods, as `skyeq.match_sky` takes them and BKGMETH records them.
METHODS = ("local", "global", "match", "global+match", "user")


def check_method(method: Any) -> str:
    """Return the method name in lower case, or raise a `ValueError` listing the valid ones."""
    meth = str(method).lower()
    if meth not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    return meth


def match_offsets(
    measurements: Sequence[Any],
    neighbours: Sequence[Sequence[int]],
    match_down: bool,
    group_label: Callable[[int], str],
) -> tuple[np.ndarray, list[np.ndarray], Any]:
    """Solve the group offsets from the groups' skies in their overlaps.

    A pair of groups gives an equation when both measured their common overlap.

    Parameters
    ----------
    measurements : sequence of GroupMeasurement
        One per group, in group order.
    neighbours : sequence of sequence of int
        The neighbour groups whose overlaps each group measured (``measurement.sky``
        order).
    match_down : bool
        Reference the offsets to the lowest (True) or highest sky.
    group_label : callable
        The images of a group, for the warning about groups without a usable overlap.

    Returns
    -------
    delta : ndarray
        Offset per group (NaN where none).
    components : list of ndarray
        The groups of each connected component of the overlap graph.
    pairs : dict of ndarray
        The columns of the pair table (`skyeq.result.make_pair_table`): ``i``, ``j``,
        ``npix_i``, ``npix_j``, ``sky_i``, ``sky_j``, ``weight``, ``residual``.
    """
    lookup = {
        (r.index, h): (r.sky[q], r.npix[q])
        for r in measurements
        for q, h in enumerate(neighbours[r.index])
    }
    rows = []
    for (g, h), (s_g, n_g) in lookup.items():
        if g < h and (h, g) in lookup:
            s_h, n_h = lookup[(h, g)]
            rows.append((g, h, s_g, s_h, n_g, n_h))
    rows.sort(key=lambda r: (r[0], r[1]))
    cols = [np.array([r[k] for r in rows]) for k in range(6)]
    pi, pj, si, sj, ni, nj = cols
    sol = solve_match(len(measurements), pi.astype(int), pj.astype(int), si, sj, ni, nj,
                      match_down=match_down)
    for g in np.flatnonzero(~sol.valid):
        log.warning("Unable to compute the match offset of %s: no usable overlap",
                    group_label(int(g)))
    pairs = {"i": pi, "j": pj, "npix_i": ni, "npix_j": nj, "sky_i": si, "sky_j": sj,
             "weight": sol.weight, "residual": sol.residual}
    return sol.delta, sol.components, pairs


def group_skies(method: str, local: np.ndarray, delta: np.ndarray) -> tuple[np.ndarray,
                                                                           np.ndarray]:
    """Compute the sky of every group by ``method`` from its local sky and match offset.

    Parameters
    ----------
    method : {'local', 'global', 'match', 'global+match'}
        The method.
    local, delta : ndarray
        Local sky and match offset per group (NaN where none).

    Returns
    -------
    sky, valid : ndarray
        The sky (NaN or anything where not valid) and whether it was computed.
    """
    ngroups = len(local)
    if method == "local":
        return local, np.isfinite(local)
    if method == "global":
        finite = local[np.isfinite(local)]
        if finite.size:
            return np.full(ngroups, finite.min()), np.ones(ngroups, bool)
        log.warning('Unable to compute the "global" sky value')
        return np.full(ngroups, np.nan), np.zeros(ngroups, bool)
    if method == "match":
        return delta, np.isfinite(delta)
    combined = combine_global_match(local, delta)  # global+match
    if np.isfinite(combined).any():
        return combined, np.isfinite(combined)
    log.warning('Unable to compute the "global" sky value; keeping the match offsets')
    return delta, np.isfinite(delta)


def subtracted(data: Sequence[Any], sky: np.ndarray, valid: np.ndarray,
               inplace: bool) -> list[Any]:
    """Subtract the skies from the images (nothing from an image whose sky is invalid).

    Parameters
    ----------
    data : sequence
        The images.
    sky, valid : ndarray
        Sky per image and whether it is valid.
    inplace : bool
        Subtract from the images themselves (writable arrays, checked up front).

    Returns
    -------
    list
        Per image: the image itself (``inplace``), a new array, or for an image that
        loads on demand an array-like that subtracts when converted.
    """
    out = []
    for k, img in enumerate(data):
        level = sky[k] if valid[k] else 0.0
        if inplace:
            img -= np.asarray(level).astype(img.dtype)
            out.append(img)
        elif _loads_on_demand(img):
            out.append(_Subtracted(img, level))
        else:
            out.append(_minus(np.asarray(img), level))
    return out


def _loads_on_demand(image: Any) -> bool:
    """Whether ``image`` is an array-like that is read when converted (not an ndarray)."""
    return not isinstance(image, np.ndarray) and hasattr(image, "shape") and hasattr(
        image, "__array__"
    )


def _minus(image: np.ndarray, level: float) -> np.ndarray:
    """Return ``image - level``, never truncated or wrapped around.

    A float image keeps its dtype (float32 stays float32); any other is subtracted in
    float64.
    """
    if image.dtype.kind != "f":
        return image.astype(np.float64) - float(level)
    return image - np.asarray(level).astype(image.dtype)


class _Subtracted:
    """An image that loads on demand, minus its sky: computed by `numpy.asarray`.

    What `match_sky` returns in ``result.data`` for such inputs, so that subtracting
    the sky of many files never holds more than one image in memory.
    """

    __slots__ = ("image", "level")

    def __init__(self, image: Any, level: float) -> None:
        self.image = image
        self.level = float(level)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the image."""
        return tuple(np.shape(self.image))

    @property
    def ndim(self) -> int:
        """Number of dimensions (2)."""
        return len(self.shape)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = _minus(np.asarray(self.image), self.level)
        return out if dtype is None else out.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"<{self.image!r} minus {self.level:.6g}>"
