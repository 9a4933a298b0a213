"""Pictures: SkyResult.plot (footprints, overlap graph), the before/after preview, --plot."""

import itertools
import os
import stat

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import colors  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402

from skyeq import SkyResult, _plot, match_sky, synthetic  # noqa: E402
from skyeq.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def mosaic():
    return synthetic.tile_grid(3, 3, shape=(64, 64), seed=2, point_sources=0,
                               extended_sources=0, noise=1.0)


@pytest.fixture(scope="module")
def result(mosaic):
    return match_sky(mosaic.data, mosaic.wcs, method="match")


def _lines(ax):
    lines = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert len(lines) == 1
    return lines[0]


def _sky_axes_read_well(fig, ax):
    """RA increases to the left, axis labels in degrees, no two tick labels overlap."""
    assert ax.xaxis_inverted()
    assert "RA" in ax.get_xlabel() and "(deg)" in ax.get_xlabel()
    assert "Dec" in ax.get_ylabel() and "(deg)" in ax.get_ylabel()
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    for axis in (ax.xaxis, ax.yaxis):
        boxes = [t.get_window_extent(renderer) for t in axis.get_ticklabels()
                 if t.get_visible() and t.get_text()]
        assert len(boxes) >= 2
        for a, b in itertools.pairwise(boxes):
            assert not a.overlaps(b)


@pytest.fixture(scope="module")
def result300():
    m = synthetic.tile_grid(15, 20, shape=(64, 64), seed=3, point_sources=0,
                            extended_sources=0, rotation_jitter=2.0)
    return match_sky(m.data, m.wcs, method="match")


def test_footprint_patches_coloured_by_sky(result):
    fig = result.plot(cmap="viridis")
    ax = fig.axes[0]
    assert len(ax.patches) == len(result) == 9
    norm = colors.Normalize(result.sky.min(), result.sky.max())
    cmap = plt.get_cmap("viridis")
    for patch, sky in zip(ax.patches, result.sky, strict=True):
        np.testing.assert_allclose(patch.get_facecolor(), cmap(norm(sky)), atol=1e-6)
    lines = _lines(ax)
    assert len(lines.get_segments()) == len(result.pairs) > 0
    # one component: every pair in its colour (black), not a second colour scale
    assert all(colors.same_color(c, _plot.COMPONENT_COLOURS[0]) for c in lines.get_colors())
    _sky_axes_read_well(fig, ax)
    labels = [a.get_ylabel() for a in fig.axes[1:]]
    assert len(fig.axes) == 2 and "BKGLEVEL" in labels[0] and "data units" in labels[0]
    plt.close(fig)


def test_residual_plot(result, result300):
    for res in (result, result300):
        fig = res.plot(kind="residuals")
        ax = fig.axes[0]
        assert len(ax.patches) == len(res)
        lines = _lines(ax)
        resid = np.asarray(res.pairs["residual"])
        drawn = np.ma.filled(lines.get_array(), np.nan)
        assert len(lines.get_segments()) == len(resid)
        # every residual drawn once, the largest last (on top)
        np.testing.assert_allclose(np.sort(drawn), np.sort(resid))
        assert np.all(np.diff(np.abs(drawn)) >= 0)
        # a diverging scale centred on 0
        assert lines.norm.vmin == -lines.norm.vmax > -np.inf
        assert lines.norm.vmax <= np.abs(resid).max()
        assert "residual" in fig.axes[1].get_ylabel()
        _sky_axes_read_well(fig, ax)
        plt.close(fig)
    with pytest.raises(ValueError, match="kind"):
        result.plot(kind="pairs")


def test_labels_only_where_they_fit(result300):
    m = synthetic.tile_grid(2, 3, shape=(64, 64), seed=1, point_sources=0,
                            extended_sources=0)
    six = match_sky(m.data, m.wcs, method="match")
    for kind in ("footprints", "residuals"):
        fig = six.plot(kind=kind)
        assert sorted(t.get_text() for t in fig.axes[0].texts) == [str(k) for k in range(6)]
        plt.close(fig)
        # 300 images of 64x64 pixels: too small to carry labels
        fig = result300.plot(kind=kind)
        assert len(fig.axes[0].texts) < 30
        plt.close(fig)
    fig = result300.plot(labels=True)
    assert len(fig.axes[0].texts) == 300
    plt.close(fig)
    fig = six.plot(labels=False)
    assert not fig.axes[0].texts
    plt.close(fig)
    # a name too long for its footprint gives way to the index
    named = match_sky(m.data, m.wcs, method="match",
                      names=[f"jw01234001001_0210{k}_00001_nrcb1_cal.fits" for k in range(6)])
    fig = named.plot()
    assert sorted(t.get_text() for t in fig.axes[0].texts) == [str(k) for k in range(6)]
    plt.close(fig)
    with pytest.raises(ValueError, match="labels"):
        six.plot(labels="some")


def test_components_in_distinct_colours():
    m = synthetic.constant_mosaic([100, 120, 105, 110, 95, 90, 100], layout=[(2, 2), (1, 3)])
    res = match_sky(m.data, m.wcs)
    assert len(res.components) == 2
    fig = res.plot()
    lines = _lines(fig.axes[0])
    comp = res.component_id[np.asarray(res.pairs["i"])]
    edge = [colors.to_hex(c) for c in lines.get_colors()]
    first = {e for e, c in zip(edge, comp, strict=True) if c == 0}
    second = {e for e, c in zip(edge, comp, strict=True) if c == 1}
    assert len(first) == len(second) == 1 and first != second
    # colour-blind-safe, distinct, and no yellow (it vanishes on viridis' bright end)
    palette = [colors.to_rgb(c) for c in _plot.COMPONENT_COLOURS]
    assert len(set(palette)) == len(palette)
    assert all(not (r > 0.8 and g > 0.8 and b < 0.5) for r, g, b in palette)
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["component 0 (4 images)",
                                                           "component 1 (3 images)"]
    plt.close(fig)


def test_invalid_image_is_hatched_grey():
    m = synthetic.constant_mosaic([10, 20, 30, 5], layout=[(1, 3), (1, 1)])
    res = match_sky(m.data, m.wcs)
    assert not res.valid[3]
    fig = res.plot()
    patch = fig.axes[0].patches[3]
    assert patch.get_hatch() and colors.same_color(patch.get_facecolor(), "lightgrey")
    plt.close(fig)


def test_preview_before_after(mosaic):
    res = SkyResult(sky=mosaic.sky, method="user", subtracted=False,
                    valid=np.ones(len(mosaic), dtype=bool))
    fig = res.preview(mosaic.data, mosaic.wcs, downsample=4)
    image_axes = [a for a in fig.axes if a.images]
    assert len(image_axes) == 2
    expected, owner = _plot.preview_grid(mosaic.data, mosaic.wcs, 4, offsets=mosaic.sky)
    before, after = (np.ma.filled(a.images[0].get_array(), np.nan) for a in image_axes)
    assert before.shape == after.shape == expected.shape
    assert image_axes[0].images[0].norm.vmin == image_axes[1].images[0].norm.vmin
    np.testing.assert_allclose(after, expected)
    for k in range(len(mosaic)):
        assert (owner == k).sum() > 20
        assert abs(np.median(after[owner == k])) < 0.2  # 4x4 block means: sigma 0.25
        assert np.median(before[owner == k]) == pytest.approx(mosaic.sky[k], abs=0.2)
    plt.close(fig)


def test_plot_needs_footprints(mosaic):
    res = match_sky(mosaic.data, mosaic.wcs, method="local")
    assert res.footprints is None
    with pytest.raises(ValueError, match="no footprints"):
        res.plot()


@pytest.fixture
def fits_paths(tmp_path, mosaic):
    from astropy.io import fits

    paths = []
    for k, name in enumerate(mosaic.names):
        path = tmp_path / f"{name}_cal.fits"
        fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(mosaic.data[k],
                      mosaic.wcs[k].to_header(), name="SCI")]).writeto(path)
        paths.append(str(path))
    return paths


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_cli_plot_writes_png(tmp_path, fits_paths, capsys, umask):
    out = tmp_path / "overlaps.png"
    table = tmp_path / "skies.ecsv"
    old = os.umask(umask)
    try:
        assert main(["match", *fits_paths, "--plot", str(out), "--table", str(table)]) == 0
    finally:
        os.umask(old)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*skyeq-tmp"))
    # written with the usual permissions (0o666 less the umask), not a temporary's 0o600
    for path in (out, table):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert main(["match", *fits_paths, "--method", "local", "--plot", str(out)]) == 2
    assert "--plot needs a match method" in capsys.readouterr().err


def test_cli_plot_extension_checked_before_any_work(tmp_path, fits_paths, capsys,
                                                    monkeypatch):
    import skyeq.io

    def no_work(*args, **kwargs):
        raise AssertionError("the images were read before the --plot format was checked")

    monkeypatch.setattr(skyeq.io, "match_files", no_work)
    out = tmp_path / "overlaps.xyz"
    assert main(["match", *fits_paths, "--plot", str(out)]) == 1
    assert "unknown image format 'xyz'" in capsys.readouterr().err
    assert not out.exists()


def test_plot_without_matplotlib_says_how_to_install(result, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r'pip install "skyeq\[plot\]"'):
        result.plot()
