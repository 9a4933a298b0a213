"""Pictures: SkyResult.plot (footprints, overlap graph), the before/after preview, --plot."""

import os
import stat

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import colors  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402

from skyeq import _plot, match_sky, synthetic  # noqa: E402
from skyeq.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def mosaic():
    return synthetic.tile_grid(3, 3, shape=(64, 64), seed=2, point_sources=0,
                               extended_sources=0, noise=1.0)


@pytest.fixture(scope="module")
def result(mosaic):
    return match_sky(mosaic.data, mosaic.wcs, method="match")


def test_footprint_patches_coloured_by_sky(result):
    fig = result.plot(cmap="viridis")
    ax = fig.axes[0]
    assert len(ax.patches) == len(result) == 9
    norm = colors.Normalize(result.sky.min(), result.sky.max())
    cmap = plt.get_cmap("viridis")
    for patch, sky in zip(ax.patches, result.sky, strict=True):
        np.testing.assert_allclose(patch.get_facecolor(), cmap(norm(sky)), atol=1e-6)
    lines = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert len(lines) == 1 and len(lines[0].get_segments()) == len(result.pairs) > 0
    np.testing.assert_allclose(lines[0].get_array(), np.abs(result.pairs["residual"]))
    assert ax.xaxis_inverted()  # RA increases to the left
    labels = {a.get_ylabel() for a in fig.axes[1:]}
    assert "BKGLEVEL" in labels and len(fig.axes) == 3
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
    fig = _plot.plot_preview(mosaic.data, mosaic.wcs, mosaic.sky, downsample=4)
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


def test_cli_plot_writes_png(tmp_path, mosaic, capsys):
    from astropy.io import fits

    paths = []
    for k, name in enumerate(mosaic.names):
        path = tmp_path / f"{name}_cal.fits"
        fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(mosaic.data[k],
                      mosaic.wcs[k].to_header(), name="SCI")]).writeto(path)
        paths.append(path)
    out = tmp_path / "overlaps.png"
    umask = os.umask(0o022)
    try:
        assert main(["match", *map(str, paths), "--plot", str(out)]) == 0
    finally:
        os.umask(umask)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*skyeq-tmp"))
    # written with the usual permissions (0o666 less the umask), not a temporary's 0o600
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert main(["match", *map(str, paths), "--method", "local", "--plot", str(out)]) == 2
    assert "--plot needs a match method" in capsys.readouterr().err


def test_plot_without_matplotlib_says_how_to_install(result, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r'pip install "skyeq\[plot\]"'):
        result.plot()
