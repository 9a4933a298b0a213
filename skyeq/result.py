"""The result of a sky-matching run: sky per image, provenance, pairs and components.

`SkyResult` holds what the reference writes into every image's metadata (BKGLEVEL,
BKGMETH, BKGSUB) plus what it only logs or discards: which images were valid, the
connected components of the overlap graph and the table of measured pairs with their
weights and residuals. `make_pair_table` builds that table with fixed column names and
types, so every producer writes the same schema.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from astropy.table import Table

from ._methods import METHODS

__all__ = ["PAIR_COLUMNS", "SkyResult", "make_pair_table"]


#: Column names and dtypes of the pair table, in order.
PAIR_COLUMNS = (
    ("i", np.int64),
    ("j", np.int64),
    ("npix_i", np.int64),
    ("npix_j", np.int64),
    ("sky_i", np.float64),
    ("sky_j", np.float64),
    ("weight", np.float64),
    ("residual", np.float64),
    ("robust_weight", np.float64),
)

#: Number of sky values shown at each end of a long ``repr``.
_REPR_EDGE = 3


def make_pair_table(
    i=(),
    j=(),
    npix_i=(),
    npix_j=(),
    sky_i=(),
    sky_j=(),
    weight=(),
    residual=(),
    robust_weight=None,
) -> Table:
    """Build the pair table of a `SkyResult` from per-pair arrays.

    Parameters
    ----------
    i, j : array_like of int
        Indices of the two matched items (images, or group numbers when images are
        grouped) of every measured pair.
    npix_i, npix_j : array_like of int
        Pixels of each side that survived masking and clipping in the overlap (whole
        numbers; floats holding whole numbers are accepted and stored as integers).
    sky_i, sky_j : array_like of float
        Statistic of each side inside the overlap (NaN if it could not be computed).
    weight : array_like of float
        Row weight of the pair in the match system, 0 for pairs not used.
    residual : array_like of float
        ``(sky_i - sky_j) - (delta_i - delta_j)`` after the solve, NaN for pairs not
        used.
    robust_weight : array_like of float, optional
        The factor (0 to 1) a robust solve gave the pair's squared residual (below 1:
        down-weighted as an outlier); 1 for every pair by default.

    Returns
    -------
    astropy.table.Table
        Table with the columns of `PAIR_COLUMNS`, one row per pair. With no argument,
        an empty table with those columns.

    Raises
    ------
    ValueError
        If the arrays are not 1-D or differ in length, or a pixel count is not a whole
        number.

    Examples
    --------
    >>> t = make_pair_table([0], [1], [900], [880], [100.0], [120.0], [890.0], [0.0])
    >>> t.colnames
    ['i', 'j', 'npix_i', 'npix_j', 'sky_i', 'sky_j', 'weight', 'residual', 'robust_weight']
    """
    if robust_weight is None:
        robust_weight = np.ones(np.asarray(i).size)
    values = (i, j, npix_i, npix_j, sky_i, sky_j, weight, residual, robust_weight)
    columns = []
    for (name, dtype), value in zip(PAIR_COLUMNS, values, strict=True):
        arr = np.asarray(value)
        if arr.ndim != 1:
            raise ValueError(f"pair column '{name}' must be 1-D, got shape {arr.shape}")
        if np.issubdtype(dtype, np.integer):
            arr = _whole_numbers(name, arr)
        columns.append(arr.astype(dtype, copy=False))
    lengths = {c.size for c in columns}
    if len(lengths) > 1:
        raise ValueError(f"pair columns differ in length: {sorted(lengths)}")
    return Table(columns, names=[name for name, _ in PAIR_COLUMNS], copy=False)


def _whole_numbers(name: str, arr: np.ndarray) -> np.ndarray:
    """Return ``arr`` unchanged after checking that it holds whole numbers only.

    Parameters
    ----------
    name : str
        Column name, used in the error message.
    arr : numpy.ndarray
        The values (integers, or floats such as ``353.0``).

    Returns
    -------
    numpy.ndarray
        ``arr``.

    Raises
    ------
    ValueError
        If a value is not a finite whole number (``353.5``, NaN), or not a number.
    """
    if arr.dtype.kind in "iub":
        return arr
    if arr.dtype.kind != "f" or not np.all(np.isfinite(arr) & (arr == np.round(arr))):
        raise ValueError(f"pair column '{name}' must hold whole pixel counts")
    return arr


def _check_length(name: str, arr, n: int) -> None:
    """Raise if a per-image value does not have one entry per image.

    Parameters
    ----------
    name : str
        Attribute name, used in the error message.
    arr : sized
        The value.
    n : int
        Number of images.

    Raises
    ------
    ValueError
        If ``len(arr) != n``.
    """
    if len(arr) != n:
        raise ValueError(f"'{name}' has {len(arr)} entries, expected {n} (one per image)")


@dataclass(eq=False)
class SkyResult:
    """Sky levels of a set of images, as computed by `skyeq.match_sky`.

    Parameters
    ----------
    sky : array_like of float
        Sky level of every image (BKGLEVEL), in data units: the cumulative sky of the
        image for ``local``/``global``/``global+match``/``user``, the offset relative
        to the reference image for ``match``. Must be finite; for an image whose sky
        could not be computed the reference leaves 0.0, and so does skyeq.
    method : str
        Method used (BKGMETH): one of `METHODS`.
    subtracted : bool
        Whether the sky was subtracted from the data (BKGSUB).
    valid : array_like of bool
        Whether the sky of each image was computed (JWST ``cal_step.skymatch``
        COMPLETE) or not (SKIPPED).
    components : list of array_like of int, optional
        Connected components of the overlap graph as index arrays of *images* (a
        group's members all belong to its component). Images in no used pair are in
        none. Empty by default (methods without matching).
    pairs : astropy.table.Table, optional
        The measured pairs, with the columns of `PAIR_COLUMNS` (see
        `make_pair_table`); ``i`` and ``j`` index images, or groups when ``groups``
        is given. An empty table by default.
    names : list of str, optional
        A name per image (file name or model name), or None.
    groups : array_like, optional
        The group id of every image (images sharing an id share one sky), or None when
        every image is its own group.
    local : array_like of float, optional
        The local (whole-image, or whole-group) sky of every image, NaN where it could
        not be computed, or None if it was not measured.
    data : list of numpy.ndarray, optional
        The sky-subtracted images when subtraction was requested (the input arrays
        themselves with ``inplace``), else None. For an input that is read when
        converted (a file of `skyeq.io.match_files`), its entry is an array-like that
        computes the subtracted image when converted with `numpy.asarray`.
    footprints : list of numpy.ndarray, optional
        The outline of every image on the sky: an ``(m, 2)`` array of the ``(ra, dec)``
        vertices in degrees per image (as `skyeq.Footprint.radec`), or None (the default,
        and what ``local``, ``global`` and ``user`` give). Used by `plot`.
    sky_err : array_like of float, optional
        The standard error of every image's ``sky`` expected from the pixels' scatter
        (NaN where not estimated; all NaN by default). ``match``: from the weighted
        normal equations of the solve with each pair's variance (the clipped scatter
        and pixel counts of both sides), relative to the component's reference image
        (whose error is 0 by definition); images outside the reference's component
        get NaN unless ``anchor="component"``. ``local``: the statistic's own error;
        ``global``: that of the smallest local sky. NaN for ``global+match``, ``user``,
        ``model="plane"`` and the ``mode`` statistic (no simple error law). For the
        mean the variance of a statistic of ``n`` pixels of deviation ``s`` is
        ``s**2/n``, for the median and midpt ``(pi/2) s**2/n`` (Gaussian pixels).
    plane : array_like of float, optional
        For ``model="plane"``: ``(n, 3)``, every image's sky plane in its own zero-based
        pixels, ``level + gx * (x - xc) + gy * (y - yc)`` about its centre ``xc = (nx -
        1) / 2``, ``yc = (ny - 1) / 2``, as ``(level, gx, gy)``; ``level`` is ``sky``
        (0 for an invalid image, like its slopes). None (default) for constant skies.

    Raises
    ------
    ValueError
        If an attribute does not have one entry per image, ``method`` is unknown, a sky
        is not finite, a component index is out of range or in two components, the
        pair table lacks a column, or a footprint is not an ``(m, 2)`` array of finite
        values with at least 3 vertices.

    Examples
    --------
    >>> res = SkyResult(sky=[0.0, 20.0, 0.0], method="match", subtracted=False,
    ...                 valid=[True, True, False], components=[[0, 1]])
    >>> res.keywords(1)
    {'BKGLEVEL': 20.0, 'BKGMETH': 'match', 'BKGSUB': False}
    >>> res.keywords(2)
    {}
    >>> res.component_id.tolist()
    [0, 0, -1]
    """

    sky: np.ndarray
    method: str
    subtracted: bool
    valid: np.ndarray
    components: list[np.ndarray] = field(default_factory=list)
    pairs: Table | None = None
    names: list[str] | None = None
    groups: np.ndarray | None = None
    local: np.ndarray | None = None
    data: list[np.ndarray] | None = None
    footprints: list[np.ndarray] | None = None
    sky_err: np.ndarray | None = None
    plane: np.ndarray | None = None

    def __post_init__(self):
        self.sky = np.array(self.sky, dtype=np.float64)
        if self.sky.ndim != 1:
            raise ValueError(f"'sky' must be 1-D, got shape {self.sky.shape}")
        n = self.sky.size
        if not np.all(np.isfinite(self.sky)):
            raise ValueError("'sky' must be finite (use 0.0 for images without a sky)")
        if self.method not in METHODS:
            raise ValueError(f"'method' must be one of {METHODS}, got {self.method!r}")
        self.subtracted = bool(self.subtracted)
        valid = np.asarray(self.valid)
        if valid.ndim != 1 or valid.dtype != np.bool_:
            raise ValueError("'valid' must be a 1-D array of booleans")
        _check_length("valid", valid, n)
        self.valid = valid.copy()
        self.components = self._checked_components(self.components, n)
        self.pairs = self._checked_pairs(self.pairs)
        if self.names is not None:
            if isinstance(self.names, str):
                raise ValueError("'names' must be a sequence of str, not one str")
            self.names = [str(name) for name in self.names]
            _check_length("names", self.names, n)
        if self.groups is not None:
            self.groups = np.asarray(self.groups)
            if self.groups.ndim != 1:
                raise ValueError(f"'groups' must be 1-D, got shape {self.groups.shape}")
            _check_length("groups", self.groups, n)
        if self.local is not None:
            self.local = np.array(self.local, dtype=np.float64)
            if self.local.ndim != 1:
                raise ValueError(f"'local' must be 1-D, got shape {self.local.shape}")
            _check_length("local", self.local, n)
        if self.data is not None:
            self.data = list(self.data)
            _check_length("data", self.data, n)
        if self.footprints is not None:
            self.footprints = self._checked_footprints(self.footprints, n)
        self.sky_err = self._checked_errors(self.sky_err, n)
        if self.plane is not None:
            self.plane = self._checked_plane(self.plane, self.sky)

    @staticmethod
    def _checked_errors(sky_err: Any, n: int) -> np.ndarray:
        """Return the standard errors as ``(n,)`` float64 (all NaN for None), checked."""
        err = np.full(n, np.nan) if sky_err is None else np.array(sky_err, dtype=np.float64)
        if err.ndim != 1:
            raise ValueError(f"'sky_err' must be 1-D, got shape {err.shape}")
        _check_length("sky_err", err, n)
        if np.any(err < 0) or np.any(np.isinf(err)):
            raise ValueError("'sky_err' must be NaN or finite and >= 0")
        return err

    @staticmethod
    def _checked_plane(plane: Any, sky: np.ndarray) -> np.ndarray:
        """Return the planes as an ``(n, 3)`` float64 array whose first column is ``sky``."""
        out = np.array(plane, dtype=np.float64)
        if out.shape != (sky.size, 3) or not np.all(np.isfinite(out)):
            raise ValueError(f"'plane' must be an ({sky.size}, 3) array of finite values, got "
                             f"shape {out.shape}")
        if not np.array_equal(out[:, 0], sky):
            raise ValueError("'plane[:, 0]' must equal 'sky' (the plane at the centre)")
        return out

    @staticmethod
    def _checked_pairs(pairs: Table | None) -> Table:
        """Return the pair table (an empty one for None) after checking its columns."""
        if pairs is None:
            return make_pair_table()
        if not isinstance(pairs, Table):
            raise ValueError(f"'pairs' must be an astropy Table, got {type(pairs)}")
        if "robust_weight" not in pairs.colnames:  # a table from before robust solves
            pairs = pairs.copy(copy_data=False)
            pairs["robust_weight"] = np.ones(len(pairs))
        missing = [name for name, _ in PAIR_COLUMNS if name not in pairs.colnames]
        if missing:
            raise ValueError(f"'pairs' lacks the column(s) {missing}")
        return pairs

    @staticmethod
    def _checked_footprints(footprints, n: int) -> list[np.ndarray]:
        """Return the footprints as float64 ``(m, 2)`` arrays after checking them.

        Parameters
        ----------
        footprints : sequence of array_like
            The ``(ra, dec)`` vertices of every image, in degrees.
        n : int
            Number of images.

        Returns
        -------
        list of numpy.ndarray
            One ``(m, 2)`` array per image.

        Raises
        ------
        ValueError
            If there is not one footprint per image, or one is not an ``(m, 2)`` array of
            finite values with ``m >= 3``.
        """
        out = [np.array(fp, dtype=np.float64) for fp in footprints]
        _check_length("footprints", out, n)
        for k, fp in enumerate(out):
            if fp.ndim != 2 or fp.shape[1] != 2 or fp.shape[0] < 3:
                raise ValueError(
                    f"footprint {k} must be an (m, 2) array of (ra, dec) with m >= 3, "
                    f"got shape {fp.shape}"
                )
            if not np.all(np.isfinite(fp)):
                raise ValueError(f"footprint {k} has non-finite vertices")
        return out

    @staticmethod
    def _checked_components(components, n: int) -> list[np.ndarray]:
        """Return the components as sorted ``intp`` arrays after checking them.

        Parameters
        ----------
        components : list of array_like of int
            Image indices of every component.
        n : int
            Number of images.

        Returns
        -------
        list of numpy.ndarray
            One sorted index array per component, in the given order.

        Raises
        ------
        ValueError
            If an index is out of range or appears more than once.
        """
        out = []
        seen = np.zeros(n, dtype=bool)
        for k, comp in enumerate(components):
            idx = np.sort(np.asarray(comp, dtype=np.intp).ravel())
            if idx.size and (idx[0] < 0 or idx[-1] >= n):
                raise ValueError(f"component {k} holds image indices outside [0, {n})")
            if np.any(seen[idx]) or np.any(idx[1:] == idx[:-1]):
                raise ValueError(f"component {k} repeats an image already listed")
            seen[idx] = True
            out.append(idx)
        return out

    def __len__(self) -> int:
        return int(self.sky.size)

    @property
    def component_id(self) -> np.ndarray:
        """numpy.ndarray: The component number of every image, -1 if in none."""
        out = np.full(len(self), -1, dtype=np.intp)
        for k, idx in enumerate(self.components):
            out[idx] = k
        return out

    def keywords(self, i: int, errors: bool = False) -> dict:
        """Return the background keywords of image ``i``, as the reference writes them.

        Parameters
        ----------
        i : int
            Image index (negative values count from the end).
        errors : bool, optional
            Also ``BKGERR``, the standard error of BKGLEVEL (`sky_err`), when it was
            estimated. Default False (the reference's three keywords only).

        Returns
        -------
        dict
            ``{"BKGLEVEL": float, "BKGMETH": str, "BKGSUB": bool}`` for a valid image
            (and ``"BKGERR": float`` if asked and finite; with a plane model
            ``"BKGSLPX"`` and ``"BKGSLPY"``, the sky's change per pixel along x and y,
            `plane`). For an invalid image the
            reference leaves the background keywords untouched (JWST marks the step
            SKIPPED), so the dict is empty: updating a header with it changes nothing.

        Raises
        ------
        IndexError
            If ``i`` is out of range.
        """
        k = operator.index(i)
        if not -len(self) <= k < len(self):
            raise IndexError(f"image index {k} out of range for {len(self)} images")
        if not self.valid[k]:
            return {}
        out = {"BKGLEVEL": float(self.sky[k]), "BKGMETH": self.method,
               "BKGSUB": self.subtracted}
        if errors and np.isfinite(self.sky_err[k]):
            out["BKGERR"] = float(self.sky_err[k])
        if self.plane is not None:
            out["BKGSLPX"], out["BKGSLPY"] = (float(v) for v in self.plane[k, 1:])
        return out

    def to_table(self) -> Table:
        """Return one row per image.

        The same columns for every method, so that tables of different runs can be
        stacked and compared.

        Returns
        -------
        astropy.table.Table
            Columns, in this order:

            - ``index`` (int): the image index;
            - ``name`` (str): the image name, ``"image 0"``, ``"image 1"``, ... when the
              result has no names (in-memory arrays);
            - ``group`` (int, or the group labels): the group of the image, its index
              when images are not grouped;
            - ``sky`` (float): BKGLEVEL (0.0 where not computed, see ``valid``);
            - ``valid`` (bool): whether the sky was computed;
            - ``component`` (int): the connected component, -1 for none;
            - ``method`` (str) and ``subtracted`` (bool): BKGMETH and BKGSUB;
            - ``local`` (float): the local sky of the image (its whole-image
              statistic, as ``local`` gives it), NaN where it was not measured (every
              image with ``method="match"``, which measures overlaps only) or could
              not be computed. A float column with NaN rather than a masked column, so
              that it reads back the same from every table format;
            - ``sky_err`` (float): the standard error of ``sky`` (see ``sky_err``), NaN
              where not estimated.

            ``meta`` holds ``BKGMETH`` (the method) and ``BKGSUB`` (whether the sky was
            subtracted), which file formats with metadata (ECSV, FITS) keep.

        Examples
        --------
        >>> res = SkyResult(sky=[0.0, 20.0], method="match", subtracted=False,
        ...                 valid=[True, True])
        >>> t = res.to_table()
        >>> t["name"].tolist(), t["index"].dtype.kind, bool(np.isnan(t["local"]).all())
        (['image 0', 'image 1'], 'i', True)
        """
        n = len(self)
        index = np.arange(n, dtype=np.int64)
        names = self.names if self.names is not None else [f"image {k}" for k in index]
        groups = index if self.groups is None else self.groups
        if groups.dtype == object:  # labels of mixed types: as text, writable everywhere
            groups = groups.astype(str)
        local = self.local if self.local is not None else np.full(n, np.nan)
        columns = (
            ("index", index, "image index"),
            ("name", np.array(names, dtype=str), "image name"),
            ("group", groups, "group of the image (its index when not grouped)"),
            ("sky", self.sky, "sky level BKGLEVEL (0.0 where not computed)"),
            ("valid", self.valid, "whether the sky was computed"),
            ("component", self.component_id.astype(np.int64),
             "connected component of the overlap graph, -1 for none"),
            ("method", np.full(n, self.method), "sky method BKGMETH"),
            ("subtracted", np.full(n, self.subtracted), "whether the sky was subtracted"),
            ("local", local, "local sky of the image, NaN where not measured"),
            ("sky_err", self.sky_err, "standard error of sky, NaN where not estimated"),
        )
        table = Table(meta={"BKGMETH": self.method, "BKGSUB": self.subtracted})
        for name, values, description in columns:
            table[name] = values
            table[name].description = description
        return table

    def plot(self, ax: Any = None, *, kind: str = "footprints", **kw: Any) -> Any:
        """Draw the image footprints on the sky: their sky, or the pair residuals.

        RA and Dec in degrees, RA increasing to the left (as on the sky), every image
        outlined where it lies. With ``kind='footprints'`` each footprint is filled with
        the colour of its sky (a colorbar labelled BKGLEVEL, viridis) and a line joins
        the two sides of every measured pair (the overlap graph), drawn in the colour of
        its connected component (colour-blind-safe colours, a legend when there are
        several components) or dashed grey for a pair not used; images whose sky was not
        computed are grey and hatched. With ``kind='residuals'`` the footprints are grey
        and each line is coloured by the pair's residual after the solve, on a diverging
        scale centred on 0. Images are labelled with their name (or index) where the
        label fits inside the footprint. Needs matplotlib (``pip install
        "skyeq[plot]"``).

        Parameters
        ----------
        ax : matplotlib.axes.Axes, optional
            Axes to draw into. Default: a new figure.
        kind : {'footprints', 'residuals'}, optional
            What to show. Default ``'footprints'``.
        **kw
            ``cmap``: the colormap of the sky (default ``'viridis'``) or of the
            residuals (default ``'PuOr'``); ``labels``: ``'auto'`` (default: only the
            labels that fit at the figure's size, so none for hundreds of small
            images), True (every image) or False (none).

        Returns
        -------
        matplotlib.figure.Figure
            The figure drawn into.

        Raises
        ------
        ImportError
            If matplotlib is not installed.
        ValueError
            If the result has no footprints (methods ``local``, ``global`` and
            ``user`` do not compute them), or ``kind`` is unknown.

        Examples
        --------
        >>> from skyeq import match_sky, synthetic
        >>> m = synthetic.tile_grid(2, 3, shape=(64, 64), seed=1)
        >>> res = match_sky(m.data, m.wcs, method="match")
        >>> fig = res.plot()                    # doctest: +SKIP
        >>> fig = res.plot(kind="residuals")    # doctest: +SKIP
        """
        if kind not in ("footprints", "residuals"):
            raise ValueError(f"kind must be 'footprints' or 'residuals', got {kind!r}")
        if self.footprints is None:
            raise ValueError(
                f"this result (method {self.method!r}) has no footprints to plot; only "
                "the match methods ('match', 'global+match') compute them"
            )
        try:
            import matplotlib  # noqa: F401
        except ImportError as err:
            raise ImportError(
                'SkyResult.plot needs matplotlib: pip install "skyeq[plot]"'
            ) from err
        from ._plot import plot_footprints, plot_residuals

        draw = plot_footprints if kind == "footprints" else plot_residuals
        return draw(self, ax=ax, **kw)

    def preview(self, data: Any, wcs: Any, *, downsample: int = 8, cmap: Any = "gray",
                percentiles: tuple[float, float] = (1.0, 99.0)) -> Any:
        """Show the images before and after subtracting this result's sky.

        Two panels on one colour scale (the given percentiles of both together): the
        images, and the images minus `sky`, block-averaged by ``downsample`` and placed
        by nearest neighbour on one tangent-plane grid (a quick look, not a resampled
        mosaic; RA increases to the left, north is up). Where images overlap, the last
        one is shown. Needs matplotlib (``pip install "skyeq[plot]"``).

        Parameters
        ----------
        data : sequence of 2-D arrays
            The images this result was computed from (with ``subtract=False``).
        wcs : sequence
            One WCS per image (anything `skyeq.match_sky` accepts).
        downsample : int, optional
            Block size, in image pixels, of one preview pixel. Default 8.
        cmap : str or matplotlib.colors.Colormap, optional
            Colormap. Default ``'gray'``.
        percentiles : (float, float), optional
            Lower and upper percentiles of the colour scale. Default (1, 99).

        Returns
        -------
        matplotlib.figure.Figure
            The figure: the two image axes first, then a shared colorbar.

        Raises
        ------
        ImportError
            If matplotlib is not installed.
        ValueError
            If ``data`` or ``wcs`` does not have one entry per image, or
            ``downsample < 1``.
        """
        _check_length("data", data, len(self))
        try:
            import matplotlib  # noqa: F401
        except ImportError as err:
            raise ImportError(
                'SkyResult.preview needs matplotlib: pip install "skyeq[plot]"'
            ) from err
        from ._plot import plot_preview

        return plot_preview(data, wcs, self.sky, downsample=downsample, cmap=cmap,
                            percentiles=percentiles)

    def __repr__(self) -> str:
        n = len(self)
        if n <= 2 * _REPR_EDGE:
            shown = [f"{v:.6g}" for v in self.sky]
        else:
            shown = [f"{v:.6g}" for v in self.sky[:_REPR_EDGE]]
            shown += ["..."] + [f"{v:.6g}" for v in self.sky[-_REPR_EDGE:]]
        return (
            f"<SkyResult method={self.method!r} subtracted={self.subtracted} "
            f"images={n} valid={int(np.count_nonzero(self.valid))} "
            f"components={len(self.components)} pairs={len(self.pairs)} "
            f"sky=[{', '.join(shown)}]>"
        )
