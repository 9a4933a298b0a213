"""Pictures of a sky-matching run (needs matplotlib: ``pip install "skyeq[plot]"``).

Private: the public entry points are `skyeq.SkyResult.plot` and
`skyeq.SkyResult.preview`. `plot_footprints` draws the image footprints on the sky
filled with their sky level and the overlap graph in the colours of its connected
components; `plot_residuals` the pair residuals on the overlap graph; `plot_preview` a
mosaic before and after sky subtraction, resampled (nearest neighbour, downsampled) onto
one tangent-plane grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .wcs import as_wcs_adapter

__all__ = ["COMPONENT_COLOURS", "plot_footprints", "plot_preview", "plot_residuals",
           "preview_grid"]


def _pyplot():
    """Import and return `matplotlib.pyplot`, with an install hint if it is missing."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - exercised without matplotlib
        raise ImportError('skyeq plots need matplotlib: pip install "skyeq[plot]"') from err
    return plt


def _sky_map_axes(plt, ax):
    """Return ``ax``, or the axes of a new figure sized for a sky map when it is None."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7.0, 5.5), layout="constrained")
    return ax


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


#: Colour-blind-safe categorical colours (Okabe & Ito 2008, without its yellow, which
#: vanishes on the bright end of viridis): the connected components, in order.
COMPONENT_COLOURS = ("#000000", "#D55E00", "#0072B2", "#009E73", "#CC79A7", "#E69F00",
                     "#56B4E9")

#: Colour of the pairs that were measured but not used in the solve.
_UNUSED = "#7f7f7f"


def _geometry(result: Any) -> dict[str, Any]:
    """Plane coordinates of a result's footprints, image centres and pair sides.

    RA is unwrapped around the mosaic centre (no jump at 0/360 degrees).

    Returns
    -------
    dict
        ``polygons`` (one ``(m, 2)`` array of (RA, Dec) per image), ``centres``
        (``(n, 2)``), ``dec0`` (Dec of the mosaic centre), ``segments`` (``(p, 2, 2)``:
        the two side centres of every pair; a side is an image, or a group's members'
        mean direction when grouped) and ``pair_component`` (component number of every
        pair's first side, -1 for none).
    """
    if result.footprints is None:
        raise ValueError("the result has no footprints (only the match methods compute them)")
    vectors = [_unit(fp[:, 0], fp[:, 1]) for fp in result.footprints]
    centres = np.array([v.mean(axis=0) for v in vectors])
    ra0, dec0 = _radec(np.concatenate(vectors).sum(axis=0))
    centre_radec = np.array([_radec(c) for c in centres]).reshape(-1, 2)
    centre_radec[:, 0] = _unwrap(centre_radec[:, 0], ra0)
    polygons = [np.column_stack([_unwrap(fp[:, 0], ra0), fp[:, 1]])
                for fp in result.footprints]
    component = result.component_id
    if result.groups is not None:  # pair sides are groups, numbered by first appearance
        order: dict[Any, int] = {}
        gid = np.array([order.setdefault(g, len(order)) for g in result.groups.tolist()])
        side = np.array([_radec(centres[gid == g].sum(axis=0))
                         for g in range(len(order))]).reshape(-1, 2)
        side[:, 0] = _unwrap(side[:, 0], ra0)
        first = np.array([np.flatnonzero(gid == g)[0] for g in range(len(order))],
                         dtype=np.intp)
        side_component = component[first]
    else:
        side, side_component = centre_radec, component
    i = np.asarray(result.pairs["i"], dtype=np.intp)
    j = np.asarray(result.pairs["j"], dtype=np.intp)
    segments = np.stack([side[i], side[j]], axis=1) if i.size else np.zeros((0, 2, 2))
    return {"polygons": polygons, "centres": centre_radec, "dec0": dec0,
            "segments": segments, "pair_component": side_component[i]}


def _size_points(ax: Any, polygons: list[np.ndarray]) -> float:
    """Median width of the footprints on ``ax``, in points (before the final layout)."""
    widths = []
    for xy in polygons:
        disp = ax.transData.transform(xy)
        widths.append(np.ptp(disp, axis=0).min())
    return float(np.median(widths)) * 72.0 / ax.figure.dpi if widths else 0.0


def _sky_axes(ax: Any, dec0: float, polygons: list[np.ndarray]) -> None:
    """RA/Dec axes: RA increasing to the left, aspect cos(Dec), few readable ticks."""
    from matplotlib.ticker import MaxNLocator

    allxy = np.concatenate(polygons)
    lo, hi = allxy.min(axis=0), allxy.max(axis=0)
    pad = 0.03 * (hi - lo)
    ax.set_xlim(hi[0] + pad[0], lo[0] - pad[0])  # inverted: RA increases to the left
    ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
    ax.set_aspect(1.0 / max(np.cos(np.radians(dec0)), 1e-3))
    ax.xaxis.set_major_locator(MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
    ax.ticklabel_format(useOffset=False)  # plain degrees, no "+1.5e2" offset
    ax.set_xlabel("RA (deg)")
    ax.set_ylabel("Dec (deg)")


def _label_images(ax: Any, result: Any, centres: np.ndarray, polygons: list[np.ndarray],
                  labels: bool | str) -> None:
    """Write each image's name, else its index, at its centre where it fits.

    ``labels='auto'`` lays the figure out once, then keeps a label only if its box is at
    most half the footprint's width and height on the axes (so that the picture is not
    covered with text) and does not overlap a label kept before it (a name that does
    not fit is replaced by the image index, which may). True keeps every label (the
    name, else the index), False writes none.
    """
    if labels is False or len(result) == 0:
        return
    if labels not in (True, "auto"):
        raise ValueError(f"labels must be True, False or 'auto', got {labels!r}")
    style = {"ha": "center", "va": "center", "fontsize": 8, "zorder": 5,
             "bbox": {"boxstyle": "round,pad=0.15", "facecolor": "white", "alpha": 0.8,
                      "linewidth": 0}}
    names = result.names if result.names is not None else [str(k) for k in range(len(result))]
    texts = [ax.text(*centres[k], names[k], **style) for k in range(len(result))]
    if labels is True:
        return
    fig = ax.figure
    fig.draw_without_rendering()  # final positions (constrained layout, colorbars)
    renderer = fig.canvas.get_renderer()
    # every index label counts as wide as the widest, so that footprints of one size
    # are all labelled or none is (not just the one-digit ones)
    texts[-1].set_text(str(len(result) - 1))
    widest = texts[-1].get_window_extent(renderer).width
    kept: list[Any] = []
    for k, text in enumerate(texts):
        room = np.ptp(ax.transData.transform(polygons[k]), axis=0)
        box = None
        for candidate in dict.fromkeys((names[k], str(k))):
            text.set_text(candidate)
            ext = text.get_window_extent(renderer)
            width = max(ext.width, widest) if candidate == str(k) else ext.width
            if width <= 0.5 * room[0] and ext.height <= 0.5 * room[1]:
                box = ext
                break
        if box is None or any(box.overlaps(other) for other in kept):
            text.remove()
        else:
            kept.append(box)


def plot_footprints(
    result: Any,
    ax: Any = None,
    *,
    cmap: Any = "viridis",
    labels: bool | str = "auto",
) -> Any:
    """Draw the footprints of a `skyeq.SkyResult` filled with their sky, and its overlap graph.

    The axes are RA and Dec in degrees, RA increasing to the left, with the aspect ratio
    scaled by cos(Dec) at the mosaic centre. Every image is one
    `matplotlib.patches.Polygon` (the first ``len(result)`` patches, in image order),
    filled with ``cmap(Normalize(min, max)(sky))`` over the valid images' skies; an
    invalid image is light grey and hatched. One line per row of ``result.pairs`` joins
    the centres of the two sides (group centres when the images are grouped), in one
    `matplotlib.collections.LineCollection` with a white halo: a used pair in the colour
    of its connected component (`COMPONENT_COLOURS`, in component order, repeating after
    seven components; a legend when there are several), a pair not used dashed grey.

    Parameters
    ----------
    result : skyeq.SkyResult
        A result with ``footprints`` (a match method).
    ax : matplotlib.axes.Axes, optional
        Axes to draw into. Default: a new figure.
    cmap : str or matplotlib.colors.Colormap, optional
        Colormap of the sky levels. Default ``'viridis'`` (colour-blind safe).
    labels : bool or 'auto', optional
        Write each image's name (its index if it has none, or if the name does not fit)
        at its centre: ``'auto'`` (default) only where the label fits inside the
        footprint without overlapping another, decided at the figure's size when drawn
        here; True always; False never.

    Returns
    -------
    matplotlib.figure.Figure
        The figure of ``ax``.

    Raises
    ------
    ValueError
        If ``result.footprints`` is None or ``labels`` is not True, False or 'auto'.
    """
    plt = _pyplot()
    from matplotlib import colors
    from matplotlib.cm import ScalarMappable
    from matplotlib.layout_engine import ConstrainedLayoutEngine
    from matplotlib.lines import Line2D

    geo = _geometry(result)
    ax = _sky_map_axes(plt, ax)
    fig = ax.figure
    sky_cmap = plt.get_cmap(cmap)
    valid = np.asarray(result.valid)
    good = result.sky[valid]
    lo, hi = (float(good.min()), float(good.max())) if good.size else (0.0, 1.0)
    norm = colors.Normalize(lo, hi if hi > lo else lo + 1.0)
    _draw_polygons(ax, geo["polygons"], valid,
                   [sky_cmap(norm(s)) for s in result.sky], edgecolor="black")
    _sky_axes(ax, geo["dec0"], geo["polygons"])
    width = _line_width(ax, geo["polygons"])

    used = _used_pairs(result)
    comp = geo["pair_component"]
    edge_colours = [COMPONENT_COLOURS[c % len(COMPONENT_COLOURS)] if u and c >= 0
                    else _UNUSED for u, c in zip(used, comp, strict=True)]
    _draw_pairs(ax, geo["segments"], edge_colours, used, width)

    if len(result.components) > 1:
        shown = result.components[: len(COMPONENT_COLOURS)]
        handles = [Line2D([], [], color=COMPONENT_COLOURS[k], linewidth=2,
                          label=f"component {k} ({len(idx)} images)")
                   for k, idx in enumerate(shown)]
        more = len(result.components) - len(shown)
        title = f"{more} more (colours repeat)" if more else None
        style = {"handles": handles, "fontsize": 8, "title": title, "title_fontsize": 8,
                 "ncols": min(len(shown), 3), "frameon": False}
        if isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine):
            fig.legend(loc="outside lower center", **style)  # off the footprints
        else:
            ax.legend(loc="best", **style)
    what = "sky offset" if result.method == "match" else "sky"
    ax.set_title(_title(result))
    fig.colorbar(ScalarMappable(norm=norm, cmap=sky_cmap), ax=ax, shrink=0.8,
                 label=f"{what}, BKGLEVEL (data units)")
    _label_images(ax, result, geo["centres"], geo["polygons"], labels)
    return fig


def plot_residuals(
    result: Any,
    ax: Any = None,
    *,
    cmap: Any = "PuOr",
    labels: bool | str = "auto",
) -> Any:
    """Draw the pair residuals of a `skyeq.SkyResult` on its overlap graph.

    The footprints (the first ``len(result)`` patches, in image order) are mid-grey,
    hatched where the image is invalid. One line per row of ``result.pairs`` joins the
    centres of its two sides, in one `matplotlib.collections.LineCollection` coloured
    by the signed residual ``(sky_i - sky_j) - (delta_i - delta_j)`` on a diverging
    scale symmetric about 0, up to the largest ``|residual|`` (the 98th percentile from
    50 pairs on, the colorbar then extended, so that a few outliers do not wash out the
    rest). The lines are in order of increasing ``|residual|`` (the largest on top), a
    pair with a NaN residual (not used) first, dashed dark grey. Axes, ticks and labels
    as in `plot_footprints`.

    Parameters
    ----------
    result : skyeq.SkyResult
        A result with ``footprints`` (a match method).
    ax : matplotlib.axes.Axes, optional
        Axes to draw into. Default: a new figure.
    cmap : str or matplotlib.colors.Colormap, optional
        Diverging colormap of the residuals. Default ``'PuOr'`` (colour-blind safe).
    labels : bool or 'auto', optional
        Image labels, as in `plot_footprints`. Default ``'auto'``.

    Returns
    -------
    matplotlib.figure.Figure
        The figure of ``ax``.

    Raises
    ------
    ValueError
        If ``result.footprints`` is None or ``labels`` is not True, False or 'auto'.
    """
    plt = _pyplot()
    from matplotlib import colors

    geo = _geometry(result)
    ax = _sky_map_axes(plt, ax)
    fig = ax.figure
    valid = np.asarray(result.valid)
    _draw_polygons(ax, geo["polygons"], valid, ["0.82"] * len(result), edgecolor="0.55")
    _sky_axes(ax, geo["dec0"], geo["polygons"])
    width = _line_width(ax, geo["polygons"])

    resid = np.asarray(result.pairs["residual"], dtype=np.float64)
    finite = np.abs(resid[np.isfinite(resid)])
    # a few outliers must not wash out the other pairs' colours: with many pairs the
    # scale ends at the 98th percentile of |residual| (the colorbar is then extended)
    big = finite.size >= 50
    rmax = float(np.percentile(finite, 98.0) if big else finite.max()) if finite.size else 0.0
    rmax = rmax if rmax > 0.0 else 1.0
    extend = "both" if finite.size and finite.max() > rmax else "neither"
    norm = colors.Normalize(-rmax, rmax)
    edge_map = plt.get_cmap(cmap).with_extremes(bad=_UNUSED)
    # largest residuals drawn last (on top); not used (NaN) first
    order = np.argsort(np.where(np.isfinite(resid), np.abs(resid), -1.0), kind="stable")
    resid = resid[order]
    lines = _draw_pairs(ax, geo["segments"][order], None, np.isfinite(resid), width * 1.5,
                        halo=False)
    lines.set_cmap(edge_map)
    lines.set_norm(norm)
    lines.set_array(np.ma.masked_invalid(resid))
    ax.set_title(_title(result))
    fig.colorbar(lines, ax=ax, shrink=0.8, extend=extend,
                 label="pair residual after the solve (data units)")
    _label_images(ax, result, geo["centres"], geo["polygons"], labels)
    return fig


def _title(result: Any) -> str:
    """``"6 images, 11 pairs, 1 component, method match"``."""
    nc = len(result.components)
    return (f"{len(result)} images, {len(result.pairs)} pairs, {nc} component"
            f"{'' if nc == 1 else 's'}, method {result.method}")


def _used_pairs(result: Any) -> np.ndarray:
    """Whether every pair of ``result.pairs`` was used in the solve (finite residual)."""
    return np.isfinite(np.asarray(result.pairs["residual"], dtype=np.float64))


def _draw_polygons(ax: Any, polygons: list[np.ndarray], valid: np.ndarray,
                   facecolors: Sequence[Any], edgecolor: Any) -> None:
    """Add one patch per footprint (invalid: light grey, hatched), then all outlines.

    The outlines are one `matplotlib.collections.PolyCollection` above every fill, so
    that where footprints overlap both edges show.
    """
    from matplotlib.collections import PolyCollection
    from matplotlib.patches import Polygon

    lw = 0.6 if len(polygons) <= 50 else 0.3
    for k, xy in enumerate(polygons):
        if valid[k]:
            patch = Polygon(xy, closed=True, facecolor=facecolors[k], edgecolor=edgecolor,
                            linewidth=lw)
        else:
            patch = Polygon(xy, closed=True, facecolor="lightgrey", edgecolor="dimgrey",
                            hatch="///", linewidth=lw)
        ax.add_patch(patch)
    ax.add_collection(PolyCollection(polygons, facecolors="none", edgecolors=edgecolor,
                                     linewidths=lw, zorder=2))


def _line_width(ax: Any, polygons: list[np.ndarray]) -> float:
    """Width of the graph lines in points: thinner as the footprints get smaller."""
    return float(np.clip(_size_points(ax, polygons) / 60.0, 0.4, 1.5))


def _draw_pairs(ax: Any, segments: np.ndarray, edge_colours: Sequence[Any] | None,
                used: np.ndarray, width: float, halo: bool = True) -> Any:
    """Add the pair lines (not used: dashed) as one LineCollection, with a white halo."""
    from matplotlib import patheffects
    from matplotlib.collections import LineCollection

    styles = ["solid" if u else (0, (2, 2)) for u in used]
    lines = LineCollection(list(segments), linewidths=width, linestyles=styles, zorder=3,
                           capstyle="round")
    if edge_colours is not None:
        lines.set_color(list(edge_colours))
    if halo:
        lines.set_path_effects([
            patheffects.Stroke(linewidth=2.2 * width, foreground="white"),
            patheffects.Normal(),
        ])
    ax.add_collection(lines)
    return lines


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
