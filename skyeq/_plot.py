"""Pictures of a sky-matching run (needs matplotlib: ``pip install "skyeq[plot]"``).

Private: the public entry point is `skyeq.SkyResult.plot`. `plot_footprints` draws the
image footprints on the sky filled with their sky level and the overlap graph coloured
by the pair residuals; `plot_preview` shows a mosaic before and after sky subtraction,
resampled (nearest neighbour, downsampled) onto one tangent-plane grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .wcs import as_wcs_adapter

__all__ = ["plot_footprints", "plot_preview", "preview_grid"]


def _pyplot():
    """Import and return `matplotlib.pyplot`, with an install hint if it is missing."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - exercised without matplotlib
        raise ImportError('skyeq plots need matplotlib: pip install "skyeq[plot]"') from err
    return plt


def _unit(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Return the unit vectors of ``(ra, dec)`` in degrees, shape ``(..., 3)``."""
    a, d = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(d) * np.cos(a), np.cos(d) * np.sin(a), np.sin(d)], axis=-1)


def _radec(v: np.ndarray) -> tuple[float, float]:
    """RA in [0, 360) and Dec, in degrees, of the direction of vector ``v``."""
    v = v / np.linalg.norm(v)
    return float(np.degrees(np.arctan2(v[1], v[0])) % 360.0), float(
        np.degrees(np.arcsin(np.clip(v[2], -1.0, 1.0)))
    )


def _unwrap(ra: np.ndarray, ra0: float) -> np.ndarray:
    """RA values brought within 180 degrees of ``ra0`` (no jump at 0/360)."""
    return (np.asarray(ra) - ra0 + 180.0) % 360.0 - 180.0 + ra0


def plot_footprints(
    result: Any,
    ax: Any = None,
    *,
    cmap: Any = "viridis",
    edge_cmap: Any = "plasma",
    labels: bool = False,
) -> Any:
    """Draw the footprints of a `skyeq.SkyResult` coloured by sky, and its overlap graph.

    The axes are RA and Dec in degrees, RA increasing to the left, with the aspect ratio
    scaled by cos(Dec) at the mosaic centre. Every image is one
    `matplotlib.patches.Polygon` (in image order), filled with
    ``cmap(Normalize(min, max)(sky))`` over the valid images' skies; an invalid image is
    light grey and hatched. One line per row of ``result.pairs`` joins the centres of the
    two sides (group centres when the images are grouped), in one
    `matplotlib.collections.LineCollection` coloured by ``|residual|`` (grey where the
    residual is NaN, i.e. the pair was not used).

    Parameters
    ----------
    result : skyeq.SkyResult
        A result with ``footprints`` (a match method).
    ax : matplotlib.axes.Axes, optional
        Axes to draw into. Default: a new figure.
    cmap : str or matplotlib.colors.Colormap, optional
        Colormap of the sky levels. Default ``'viridis'``.
    edge_cmap : str or matplotlib.colors.Colormap, optional
        Colormap of the absolute pair residuals. Default ``'plasma'``.
    labels : bool, optional
        Write each image's name (or index) at its centre. Default False.

    Returns
    -------
    matplotlib.figure.Figure
        The figure of ``ax``.

    Raises
    ------
    ValueError
        If ``result.footprints`` is None.
    """
    plt = _pyplot()
    from matplotlib import colors
    from matplotlib.cm import ScalarMappable
    from matplotlib.collections import LineCollection
    from matplotlib.patches import Polygon

    if result.footprints is None:
        raise ValueError("the result has no footprints (only the match methods compute them)")
    if ax is None:
        fig, ax = plt.subplots(figsize=(7.0, 5.5), layout="constrained")
    fig = ax.figure
    n = len(result)
    vectors = [_unit(fp[:, 0], fp[:, 1]) for fp in result.footprints]
    centres = np.array([v.mean(axis=0) for v in vectors])
    ra0, dec0 = _radec(np.concatenate(vectors).sum(axis=0))
    centre_radec = np.array([_radec(c) for c in centres])
    centre_radec[:, 0] = _unwrap(centre_radec[:, 0], ra0)

    sky_cmap = plt.get_cmap(cmap)
    valid = np.asarray(result.valid)
    good = result.sky[valid]
    lo, hi = (float(good.min()), float(good.max())) if good.size else (0.0, 1.0)
    norm = colors.Normalize(lo, hi)
    for k, fp in enumerate(result.footprints):
        xy = np.column_stack([_unwrap(fp[:, 0], ra0), fp[:, 1]])
        if valid[k]:
            patch = Polygon(xy, closed=True, facecolor=sky_cmap(norm(result.sky[k])),
                            edgecolor="black", linewidth=0.6)
        else:
            patch = Polygon(xy, closed=True, facecolor="lightgrey", edgecolor="dimgrey",
                            hatch="///", linewidth=0.6)
        ax.add_patch(patch)
        if labels:
            name = result.names[k] if result.names is not None else str(k)
            ax.annotate(name, centre_radec[k], ha="center", va="center", fontsize=7)

    # pair sides are images, or groups (numbered in order of first appearance)
    if result.groups is not None:
        order: dict[Any, int] = {}
        gid = np.array([order.setdefault(g, len(order)) for g in result.groups.tolist()])
        side = np.array([
            _radec(centres[gid == g].sum(axis=0)) for g in range(len(order))
        ]).reshape(-1, 2)
        side[:, 0] = _unwrap(side[:, 0], ra0)
    else:
        side = centre_radec
    i = np.asarray(result.pairs["i"], dtype=np.intp)
    j = np.asarray(result.pairs["j"], dtype=np.intp)
    segments = np.stack([side[i], side[j]], axis=1) if i.size else np.zeros((0, 2, 2))
    resid = np.abs(np.asarray(result.pairs["residual"], dtype=np.float64))
    finite = resid[np.isfinite(resid)]
    rmax = float(finite.max()) if finite.size else 0.0
    edge_norm = colors.Normalize(0.0, rmax if rmax > 0.0 else 1.0)
    edge_map = plt.get_cmap(edge_cmap).with_extremes(bad="grey")
    lines = LineCollection(list(segments), cmap=edge_map, norm=edge_norm, linewidths=2.0,
                           zorder=3)
    lines.set_array(np.ma.masked_invalid(resid))
    ax.add_collection(lines)

    ax.set_aspect(1.0 / max(np.cos(np.radians(dec0)), 1e-3))
    ax.autoscale_view()
    if not ax.xaxis_inverted():
        ax.invert_xaxis()
    ax.ticklabel_format(useOffset=False)  # plain degrees, no "+1.5e2" offset
    ax.set_xlabel("RA (deg)")
    ax.set_ylabel("Dec (deg)")
    ax.set_title(f"{n} images, method {result.method}, {len(result.pairs)} pairs")
    sm = ScalarMappable(norm=norm, cmap=sky_cmap)
    fig.colorbar(sm, ax=ax, label="BKGLEVEL", shrink=0.8)
    fig.colorbar(lines, ax=ax, label="|pair residual|", shrink=0.8)
    return fig


def preview_grid(
    data: Sequence[np.ndarray],
    wcs: Sequence[Any],
    downsample: int = 8,
    offsets: Sequence[float] | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Place block-averaged images on one tangent-plane grid by nearest neighbour.

    The grid is a gnomonic projection at the mean direction of the image centres, with
    pixels ``downsample`` times the first image's pixel scale and x increasing to the
    west (so RA increases to the left with ``origin='lower'``). Every image is
    block-averaged by ``downsample`` (NaN ignored); each grid pixel takes the value of
    the block containing it in the last image covering it.

    Parameters
    ----------
    data : sequence of 2-D arrays
        The images.
    wcs : sequence
        One WCS per image (anything `skyeq.match_sky` accepts).
    downsample : int, optional
        Block size in image pixels and grid pixel size in image pixels. Default 8.
    offsets : array_like of float, optional
        Subtracted from each image (its sky) before placing it. Default: none.

    Returns
    -------
    image : numpy.ndarray
        The grid, NaN where no image falls.
    owner : numpy.ndarray of int
        Index of the image each grid pixel came from, -1 where none.

    Raises
    ------
    ValueError
        If ``downsample < 1`` or the lengths differ.
    """
    from astropy.wcs import WCS

    f = int(downsample)
    if f < 1:
        raise ValueError(f"downsample must be at least 1, got {downsample}")
    if len(wcs) != len(data):
        raise ValueError(f"{len(wcs)} WCS for {len(data)} images")
    off = np.zeros(len(data)) if offsets is None else np.asarray(offsets, dtype=np.float64)
    if off.shape != (len(data),):
        raise ValueError(f"offsets must have one value per image ({len(data)})")
    adapters = [as_wcs_adapter(w) for w in wcs]
    shapes = [np.shape(d) for d in data]
    corners, centres = [], []
    for a, (ny, nx) in zip(adapters, shapes, strict=True):
        ra, dec = a.pixel_to_world(
            np.array([-0.5, nx - 0.5, nx - 0.5, -0.5]), np.array([-0.5, -0.5, ny - 0.5, ny - 0.5])
        )
        corners.append((ra, dec))
        centres.append(_unit(ra, dec).mean(axis=0))
    ra0, dec0 = _radec(np.sum(centres, axis=0))
    ny0, nx0 = shapes[0]
    r1, d1 = adapters[0].pixel_to_world(np.array([nx0 / 2, nx0 / 2 + 1.0]),
                                        np.array([ny0 / 2, ny0 / 2]))
    u = _unit(r1, d1)
    scale = float(np.degrees(np.arccos(np.clip(np.dot(u[0], u[1]), -1.0, 1.0))))
    grid = WCS(naxis=2)
    grid.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    grid.wcs.crval = [ra0, dec0]
    grid.wcs.cdelt = [-scale * f, scale * f]
    grid.wcs.crpix = [1.0, 1.0]
    boxes = [np.array(grid.wcs_world2pix(ra, dec, 0)) for ra, dec in corners]
    allxy = np.concatenate(boxes, axis=1)
    x0, y0 = np.floor(allxy.min(axis=1))
    x1, y1 = np.ceil(allxy.max(axis=1))
    grid.wcs.crpix = [1.0 - x0, 1.0 - y0]
    nx, ny = int(x1 - x0) + 1, int(y1 - y0) + 1
    image = np.full((ny, nx), np.nan)
    owner = np.full((ny, nx), -1, dtype=np.intp)
    for k, (img, a) in enumerate(zip(data, adapters, strict=True)):
        arr = np.asarray(img, dtype=np.float64)
        by, bx = arr.shape[0] // f, arr.shape[1] // f
        if by == 0 or bx == 0:
            continue
        blocks = arr[: by * f, : bx * f].reshape(by, f, bx, f)
        finite = np.isfinite(blocks)
        count = finite.sum(axis=(1, 3))
        total = np.where(finite, blocks, 0.0).sum(axis=(1, 3))
        small = np.full((by, bx), np.nan)
        np.divide(total, count, out=small, where=count > 0)
        small -= off[k]
        bxy = boxes[k] - np.array([[x0], [y0]])
        gx0, gy0 = (max(int(v), 0) for v in np.floor(bxy.min(axis=1)))
        gx1, gy1 = np.ceil(bxy.max(axis=1)).astype(int)
        gx1, gy1 = min(gx1, nx - 1), min(gy1, ny - 1)
        gy, gx = np.mgrid[gy0 : gy1 + 1, gx0 : gx1 + 1]
        ra, dec = grid.wcs_pix2world(gx.ravel().astype(float), gy.ravel().astype(float), 0)
        px, py = a.world_to_pixel(ra, dec)
        with np.errstate(invalid="ignore"):
            ix = np.floor((np.asarray(px) + 0.5) / f)
            iy = np.floor((np.asarray(py) + 0.5) / f)
        inside = (ix >= 0) & (ix < bx) & (iy >= 0) & (iy < by)
        ix, iy = ix[inside].astype(np.intp), iy[inside].astype(np.intp)
        ty, tx = gy.ravel()[inside], gx.ravel()[inside]
        image[ty, tx] = small[iy, ix]
        owner[ty, tx] = k
    return image, owner


def plot_preview(
    data: Sequence[np.ndarray],
    wcs: Sequence[Any],
    sky: Sequence[float] | np.ndarray,
    *,
    downsample: int = 8,
    cmap: Any = "gray",
    percentiles: tuple[float, float] = (1.0, 99.0),
) -> Any:
    """Show a mosaic before and after subtracting its sky, on one colour scale.

    Two panels made by `preview_grid`: the data, and the data minus ``sky``. The colour
    limits are the given percentiles of both panels' finite values together, so the two
    panels are directly comparable.

    Parameters
    ----------
    data : sequence of 2-D arrays
        The images (e.g. ``Mosaic.data`` of `skyeq.synthetic`).
    wcs : sequence
        One WCS per image.
    sky : array_like of float
        Sky per image, subtracted in the second panel (e.g. ``SkyResult.sky``).
    downsample : int, optional
        Block size of the preview (see `preview_grid`). Default 8.
    cmap : str or matplotlib.colors.Colormap, optional
        Colormap. Default ``'gray'``.
    percentiles : (float, float), optional
        Lower and upper percentiles of the colour scale. Default (1, 99).

    Returns
    -------
    matplotlib.figure.Figure
        The figure, with the two image axes first and a shared colorbar.
    """
    plt = _pyplot()
    from matplotlib import colors

    before, _ = preview_grid(data, wcs, downsample)
    after, _ = preview_grid(data, wcs, downsample, offsets=sky)
    both = np.concatenate([before[np.isfinite(before)], after[np.isfinite(after)]])
    lo, hi = np.percentile(both, percentiles) if both.size else (0.0, 1.0)
    norm = colors.Normalize(float(lo), float(hi) if hi > lo else float(lo) + 1.0)
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 4.5), layout="constrained",
                             sharex=True, sharey=True)
    for ax, arr, title in zip(axes, (before, after), ("before (data)", "after (data - sky)"),
                              strict=True):
        im = ax.imshow(np.ma.masked_invalid(arr), origin="lower", cmap=cmap, norm=norm,
                       interpolation="nearest")
        ax.set_title(title)
        ax.set_xlabel(f"tangent-plane x ({downsample}-pixel blocks, RA to the left)")
    axes[0].set_ylabel("tangent-plane y (north up)")
    fig.colorbar(im, ax=list(axes), label="data units", shrink=0.8)
    return fig
