"""skyeq.io: FITS images in and out, associations, the re-run rules, atomic writes."""

import csv
import io as io_text
import json
import os
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from fits_helpers import read_independently, snapshot, write_mosaic
from numpy.testing import assert_allclose, assert_array_equal

from skyeq import SkyResult, SkyStat, _fits, io, match_sky, synthetic

STAT = SkyStat("median", nclip=3)


def set_keywords(path, **cards):
    with fits.open(path, mode="update") as hdul:
        for key, value in cards.items():
            hdul["SCI"].header[key] = value


@pytest.fixture(scope="module")
def grid():
    return synthetic.tile_grid(2, 3, shape=(96, 96), overlap=0.2, seed=11, point_sources=40,
                               extended_sources=1, dq_fraction=0.02)


# --------------------------------------------------------------------------- reading


def test_read_image_sci_dq_native_byte_order(grid, tmp_path):
    (path,) = write_mosaic(grid, tmp_path, names=["a"])[:1]
    with fits.open(path) as hdul:
        assert not hdul["SCI"].data.dtype.isnative  # FITS is big-endian on disk
    img = io.read_image(path)
    assert img.sci == 1 and img.path == path
    assert img.data.dtype == np.float32 and img.data.dtype.isnative
    assert img.data.flags.c_contiguous and img.data.flags.writeable
    assert_array_equal(img.data, grid.data[0])
    assert img.dq.dtype.isnative and img.dq.dtype.kind == "u"
    assert_array_equal(img.dq, grid.dq[0])
    assert img.wcs.naxis == 2 and img.wcs.pixel_shape == (96, 96)
    x, y = np.array([0.0, 95.0, 40.5]), np.array([0.0, 95.0, 10.25])
    assert_allclose(img.wcs.pixel_to_world_values(x, y), grid.wcs[0].pixel_to_world_values(x, y),
                    rtol=0, atol=1e-10)
    assert (img.bkglevel, img.bkgsub, img.bkgmeth) == (None, None, None)


def test_read_plain_primary_image_integer_data_become_float64(grid, tmp_path):
    path = tmp_path / "plain.fits"
    counts = np.arange(96 * 96, dtype=np.int16).reshape(96, 96)
    fits.PrimaryHDU(counts, grid.wcs[1].to_header()).writeto(path)
    img = io.read_image(path)
    assert img.sci == 0 and img.dq is None
    assert img.data.dtype == np.float64 and img.data.dtype.isnative
    assert_array_equal(img.data, counts)


def test_read_image_errors_name_the_file(grid, tmp_path):
    nowcs = tmp_path / "nowcs.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(grid.data[0], name="SCI")]).writeto(nowcs)
    with pytest.raises(ValueError, match=r"image .*nowcs\.fits has no celestial WCS"):
        io.read_image(nowcs)
    spectral = tmp_path / "spectral.fits"
    hdr = fits.Header({"CTYPE1": "WAVE", "CTYPE2": "LINEAR", "CRVAL1": 1.0, "CDELT1": 0.1})
    fits.PrimaryHDU(grid.data[0], hdr).writeto(spectral)
    with pytest.raises(ValueError, match=r"spectral\.fits has no celestial WCS"):
        io.read_image(spectral)
    text = tmp_path / "text.fits"
    text.write_text("not a FITS file\n")
    with pytest.raises(ValueError, match=r"cannot read .*text\.fits as a FITS file"):
        io.read_image(text)
    with pytest.raises(FileNotFoundError, match=r"missing\.fits does not exist"):
        io.read_image(tmp_path / "missing.fits")
    cube = tmp_path / "cube.fits"
    fits.PrimaryHDU(np.zeros((2, 8, 8), np.float32)).writeto(cube)
    with pytest.raises(ValueError, match=r"cube\.fits is not a 2-D image"):
        io.read_image(cube)
    baddq = tmp_path / "baddq.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(grid.data[0], grid.wcs[0].to_header(),
                                                   name="SCI"),
                  fits.ImageHDU(np.zeros((4, 4), np.uint32), name="DQ")]).writeto(baddq)
    with pytest.raises(ValueError, match=r"DQ array of .*baddq\.fits has shape \(4, 4\)"):
        io.read_image(baddq)
    empty = tmp_path / "empty.fits"
    fits.PrimaryHDU().writeto(empty)
    with pytest.raises(ValueError, match=r"empty\.fits has no SCI extension"):
        io.read_image(empty)


# --------------------------------------------------------------------------- round trip


def test_fits_round_trip_keywords_and_subtracted_data(grid, tmp_path):
    paths = write_mosaic(grid, tmp_path / "in")
    before = snapshot(paths)
    res = io.match_files(paths, method="global+match", stat=STAT, subtract=True)
    data, wcs, dq = read_independently(paths)
    lib = match_sky(data, wcs, method="global+match", stat=STAT, subtract=True, dq=dq)
    assert_array_equal(res.sky, lib.sky)
    assert res.valid.all() and res.names == [str(p) for p in paths]
    # the recovered skies are the true ones (global+match brings all to a common zero)
    assert_allclose(res.sky - res.sky.min(), grid.sky - grid.sky.min(), atol=0.25)
    written = io.write_results(res, output_dir=tmp_path / "out")
    assert [w.name for w in written] == [p.name for p in paths]
    assert snapshot(paths) == before  # inputs untouched
    for k, path in enumerate(written):
        with fits.open(path) as hdul:
            for hdr in (hdul[0].header, hdul["SCI"].header):
                assert hdr["BKGMETH"] == "global+match"
                assert hdr["BKGSUB"] is True
                assert_allclose(hdr["BKGLEVEL"], res.sky[k], rtol=1e-15)
            out = hdul["SCI"].data
            assert out.dtype == np.dtype(">f4")
            assert_array_equal(out, lib.data[k])
            assert_array_equal(out, grid.data[k] - np.float32(res.sky[k]))
            assert_array_equal(hdul["DQ"].data, grid.dq[k])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in paths)


def test_bkgerr_is_written_only_when_asked(grid, tmp_path):
    paths = write_mosaic(grid, tmp_path / "in")
    res = io.match_files(paths, method="match", stat=STAT)
    assert np.isfinite(res.sky_err).all() and np.count_nonzero(res.sky_err == 0) == 1
    plain = io.write_results(res, output_dir=tmp_path / "plain")
    with_err = io.write_results(res, output_dir=tmp_path / "err", errors=True)
    for k, (a, b) in enumerate(zip(plain, with_err, strict=True)):
        with fits.open(a) as ha, fits.open(b) as hb:
            for hdr in (ha[0].header, ha["SCI"].header):
                assert "BKGERR" not in hdr
            for hdr in (hb[0].header, hb["SCI"].header):
                assert hdr["BKGERR"] == res.sky_err[k]
                assert "standard error" in hdr.comments["BKGERR"]
    assert res.keywords(0, errors=True)["BKGERR"] == res.sky_err[0]
    assert "BKGERR" not in res.keywords(0)


def test_writes_on_threads_equal_serial_writes_and_name_a_failing_file(grid, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    paths = write_mosaic(grid, tmp_path / "in")
    res = io.match_files(paths, method="match", stat=STAT, subtract=True)
    serial = io.write_results(res, output_dir=tmp_path / "serial")
    calls = []
    with ThreadPoolExecutor(3) as pool:
        threaded = io.write_results(res, output_dir=tmp_path / "threads", executor=pool,
                                    progress=lambda done, total: calls.append(done))
    assert [p.name for p in threaded] == [p.name for p in serial]
    assert [p.read_bytes() for p in threaded] == [p.read_bytes() for p in serial]
    assert calls == list(range(1, len(paths) + 1))
    # a file that cannot be written: the error names it, no temporary file is left
    (tmp_path / "blocked").mkdir()
    (tmp_path / "blocked" / paths[2].name).mkdir()  # a directory where the file goes
    with ThreadPoolExecutor(2) as pool, pytest.raises(OSError, match=paths[2].name):
        io.write_results(res, output_dir=tmp_path / "blocked", executor=pool)
    assert not list((tmp_path / "blocked").glob(".*skyeq-tmp"))


def test_match_files_reads_each_image_inside_its_task_only(grid, tmp_path, monkeypatch):
    import weakref

    paths = write_mosaic(grid, tmp_path / "in")
    count = {"loads": 0, "alive": 0, "peak": 0}
    original = _fits._FileArray.__array__

    def tracked(self, dtype=None, copy=None):
        out = original(self, dtype, copy)
        count["loads"] += 1
        count["alive"] += 1
        count["peak"] = max(count["peak"], count["alive"])
        weakref.finalize(out, lambda: count.__setitem__("alive", count["alive"] - 1))
        return out

    monkeypatch.setattr(_fits._FileArray, "__array__", tracked)
    res = io.match_files(paths, method="global+match", stat=STAT, subtract=True)
    # one read of every SCI and every DQ array, one image (and its DQ) alive at a time
    assert count == {"loads": 2 * len(paths), "alive": 0, "peak": 2}
    data, wcs, dq = read_independently(paths)
    lib = match_sky(data, wcs, method="global+match", stat=STAT, subtract=True, dq=dq)
    assert_array_equal(res.sky, lib.sky)
    # the subtracted images are read again, one at a time, when written
    io.write_results(res, output_dir=tmp_path / "out")
    assert count["loads"] == 3 * len(paths) and count["alive"] == 0
    assert_array_equal(np.asarray(res.data[2]), lib.data[2])


def test_match_files_on_a_process_pool_reads_the_files_in_the_workers(grid, tmp_path,
                                                                      monkeypatch):
    # the tasks travel to other processes (as to a dask.distributed cluster): each
    # carries file names, not pixels, and the workers read the files themselves
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    paths = write_mosaic(grid, tmp_path / "in")
    monkeypatch.chdir(tmp_path / "in")
    names = [p.name for p in paths]  # relative names, made absolute at the scan
    assert _fits._read_image(Path(names[0]), lazy=True).data.path == paths[0].absolute()
    serial = io.match_files(names, method="match", stat=STAT)
    spawn = multiprocessing.get_context("spawn")  # fresh workers, nothing inherited
    with ProcessPoolExecutor(2, mp_context=spawn) as pool:
        pooled = io.match_files(names, method="match", stat=STAT, executor=pool)
    assert_array_equal(pooled.sky, serial.sky)
    data, wcs, dq = read_independently(paths)
    assert_array_equal(serial.sky, match_sky(data, wcs, dq=dq, method="match", stat=STAT).sky)


def test_subtracted_data_of_a_rewritten_file_are_refused(grid, tmp_path):
    paths = write_mosaic(grid, tmp_path)
    res = io.match_files(paths, method="match", stat=STAT, subtract=True)
    first = np.asarray(res.data[1])
    io.write_results(res, in_place=True)
    # the file now holds the subtracted data: subtracting again would be a silent error
    with pytest.raises(ValueError, match=r"tile_r0_c1_cal\.fits has changed since it was read"):
        np.asarray(res.data[1])
    with fits.open(paths[1]) as hdul:
        assert_array_equal(hdul["SCI"].data, first)


def test_keywords_only_without_subtract_and_invalid_image_left_alone(tmp_path):
    # a pair that overlaps plus one lone tile: 'match' cannot give the lone one a sky
    m = synthetic.disjoint([(1, 2), (1, 1)], shape=(64, 64), seed=4, point_sources=10,
                           extended_sources=0)
    paths = write_mosaic(m, tmp_path, plain=True)
    res = io.match_files(paths, stat=STAT)
    assert res.valid.tolist() == [True, True, False]
    lone_bytes = paths[2].read_bytes()
    io.write_results(res, in_place=True)
    for k in (0, 1):
        hdr = fits.getheader(paths[k])
        assert (hdr["BKGMETH"], hdr["BKGSUB"]) == ("match", False)
        assert_allclose(hdr["BKGLEVEL"], res.sky[k], rtol=1e-15)
        assert_array_equal(fits.getdata(paths[k]), m.data[k])  # not subtracted
    assert "BKGLEVEL" not in fits.getheader(paths[2])
    assert_array_equal(fits.getdata(paths[2]), m.data[2])
    assert len(paths[2].read_bytes()) == len(lone_bytes)


def test_in_place_through_a_symbolic_link_keeps_the_link(grid, tmp_path):
    (real,) = write_mosaic(grid, tmp_path / "real", plain=True, names=["a"])[:1]
    link = tmp_path / "a_link.fits"
    link.symlink_to(real)
    res = io.match_files([link], method="local", stat=STAT)
    io.write_results(res, in_place=True)
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert_allclose(fits.getheader(real)["BKGLEVEL"], res.sky[0], rtol=1e-15)
    assert _no_temp_files(tmp_path / "real") == [] and _no_temp_files(tmp_path) == []


def test_write_table_is_exact_ecsv(grid, tmp_path):
    paths = write_mosaic(grid, tmp_path)
    res = io.match_files(paths, method="local", stat=STAT)
    out = io.write_table(res, tmp_path / "skies.ecsv")
    table = Table.read(out, format="ascii.ecsv")
    assert_array_equal(table["sky"], res.sky)
    assert_array_equal(table["local"], res.local)
    assert list(table["name"]) == [str(p) for p in paths]


# --------------------------------------------------------------------------- tables

TABLE_READ_FORMATS = {
    "ecsv": "ascii.ecsv",
    "csv": "ascii.csv",
    "fits": "fits",
    "html": "ascii.html",
    "txt": "ascii.fixed_width_two_line",
}


@pytest.fixture(scope="module")
def row_results():
    m = synthetic.tile_grid(1, 3, shape=(64, 64), seed=1)
    return {meth: match_sky(m.data, m.wcs, method=meth) for meth in ("global+match", "match")}


class _HtmlCells(HTMLParser):
    """The text of every header and data cell of an HTML table, row by row (stdlib)."""

    def __init__(self):
        super().__init__()
        self.rows, self._cell = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.rows[-1].append(self._cell)
            self._cell = None


def _read_html_without_bs4(path):
    """Read an HTML table with the standard library (astropy's reader needs bs4)."""
    parser = _HtmlCells()
    parser.feed(Path(path).read_text())
    text = io_text.StringIO()
    csv.writer(text).writerows(parser.rows)
    return Table.read(text.getvalue(), format="ascii.csv")


def _read_table(path, ext):
    if ext == "fits":  # NaN stays NaN (astropy masks it by default)
        return Table.read(path, format="fits", mask_invalid=False)
    if ext == "html":
        try:
            import bs4  # noqa: F401
        except ImportError:
            return _read_html_without_bs4(path)
    return Table.read(path, format=TABLE_READ_FORMATS[ext])


def _as_bools(values):
    return [v if isinstance(v, bool) else {"True": True, "False": False}[v] for v in values]


def assert_same_table(got, want):
    """Every column and value of ``want`` in ``got``, with its kind (int, float, ...)."""
    assert got.colnames == want.colnames
    assert len(got) == len(want)
    for name in want.colnames:
        g, w = got[name], want[name]
        kind = w.dtype.kind
        if kind == "f":
            assert g.dtype.kind == "f", name
            assert_array_equal(np.asarray(g, dtype=np.float64), np.asarray(w), err_msg=name)
        elif kind in "iu":
            assert g.dtype.kind in "iu", (name, g.dtype)
            assert g.tolist() == w.tolist(), name
        elif kind == "b":  # the text formats give 'True' and 'False'
            assert _as_bools(g.tolist()) == w.tolist(), name
        else:
            assert [str(v) for v in g.tolist()] == w.tolist(), name


@pytest.mark.parametrize("method", ["global+match", "match"])
@pytest.mark.parametrize("ext", list(TABLE_READ_FORMATS))
def test_write_table_format_from_the_extension(row_results, tmp_path, ext, method):
    res = row_results[method]
    want = res.to_table()
    out = io.write_table(res, tmp_path / f"skies.{ext}")
    assert out == tmp_path / f"skies.{ext}"
    got = _read_table(out, ext)
    assert_same_table(got, want)
    assert got["name"].tolist() == ["image 0", "image 1", "image 2"]
    assert_array_equal(got["sky"], res.sky)
    if method == "global+match":
        assert np.all(np.isfinite(res.local))
        assert_array_equal(got["local"], res.local)
    else:  # match measures no local sky: NaN in every format
        assert np.all(np.isnan(np.asarray(got["local"], dtype=np.float64)))
    if ext in ("ecsv", "fits"):  # the formats with metadata keep it
        assert got.meta["BKGMETH"] == method and got.meta["BKGSUB"] is False
    if ext == "fits":
        with fits.open(out) as hdul:
            assert isinstance(hdul[1], fits.BinTableHDU)
            assert hdul[1].header["BKGMETH"] == method
    if ext == "ecsv":
        assert "local sky of the image" in got["local"].description
    assert _no_temp_files(tmp_path) == []


def test_write_table_txt_is_aligned_text(row_results, tmp_path):
    out = io.write_table(row_results["global+match"], tmp_path / "skies.txt")
    lines = out.read_text().splitlines()
    assert lines[0].split() == ["index", "name", "group", "sky", "valid", "component",
                                "method", "subtracted", "local", "sky_err"]
    assert set(lines[1]) <= {"-", " "}  # the dashed line under the header
    assert len({len(line.rstrip()) for line in lines[1:]}) == 1  # aligned columns
    assert lines[2].split()[:3] == ["0", "image", "0"]


def test_write_table_extension_any_case_and_replaces_a_file(row_results, tmp_path):
    res = row_results["global+match"]
    path = tmp_path / "SKIES.FITS"
    path.write_text("an old file\n")
    io.write_table(res, path)
    assert_same_table(_read_table(path, "fits"), res.to_table())
    with fits.open(path) as hdul:
        assert hdul[1].header["BKGMETH"] == "global+match"


@pytest.mark.parametrize("ext", list(TABLE_READ_FORMATS))
def test_write_table_names_that_are_not_ascii(tmp_path, ext):
    names = ["čas_é.fits", "日本.fits"]
    res = SkyResult(sky=[0.0, 2.5], method="match", subtracted=False,
                    valid=np.array([True, True]), names=names, groups=["é", "b"])
    got = _read_table(io.write_table(res, tmp_path / f"t.{ext}"), ext)
    assert_same_table(got, res.to_table())
    assert [str(v) for v in got["name"].tolist()] == names


@pytest.mark.parametrize("name", ["skies.xlsx", "skies", "skies.fits.gz", "skies.dat"])
def test_write_table_unknown_extension_fails_first(row_results, tmp_path, name):
    path = tmp_path / "missing_dir" / name  # the extension is checked before the directory
    with pytest.raises(ValueError) as info:
        io.write_table(row_results["match"], path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    for ext in (".ecsv", ".csv", ".fits", ".html", ".txt"):
        assert ext in message
    assert list(tmp_path.iterdir()) == []


def test_write_table_failure_keeps_the_old_file(row_results, tmp_path, monkeypatch):
    path = tmp_path / "skies.csv"
    path.write_text("old table\n")

    def fail(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Table, "write", fail)
    with pytest.raises(OSError, match=r"skies\.csv"):
        io.write_table(row_results["match"], path)
    assert path.read_text() == "old table\n"
    assert _no_temp_files(tmp_path) == []


def test_new_files_get_the_umask_mode_and_rewrites_keep_theirs(grid, tmp_path):
    import stat

    paths = write_mosaic(grid, tmp_path)
    res = io.match_files(paths, method="local", stat=STAT)
    old = os.umask(0o027)
    try:
        out = io.write_table(res, tmp_path / "skies.ecsv")
        assert stat.S_IMODE(out.stat().st_mode) == 0o640  # 0o666 & ~0o027
        os.chmod(out, 0o604)
        io.write_table(res, out)
        assert stat.S_IMODE(out.stat().st_mode) == 0o604
    finally:
        os.umask(old)


# --------------------------------------------------------------------------- atomic writes


def _no_temp_files(directory):
    return [p.name for p in Path(directory).iterdir() if p.name.endswith(".skyeq-tmp")]


def test_crash_between_temp_write_and_rename_keeps_original(grid, tmp_path, monkeypatch):
    paths = write_mosaic(grid, tmp_path)
    res = io.match_files(paths, stat=STAT, subtract=True)
    before = snapshot(paths)
    calls = []

    def crash(src, dst):
        calls.append((Path(src), Path(dst)))
        assert Path(src).stat().st_size > 0  # the new file was completely written
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        io.write_results(res, in_place=True)
    assert len(calls) == 1 and calls[0][1] == paths[0]
    assert calls[0][0].parent == paths[0].parent  # temp file in the same directory
    assert snapshot(paths) == before  # byte-identical, not even touched
    assert _no_temp_files(tmp_path) == []
    table = tmp_path / "t.ecsv"
    table.write_text("old table\n")
    with pytest.raises(OSError, match="simulated crash"):
        io.write_table(res, table)
    assert table.read_text() == "old table\n"
    assert _no_temp_files(tmp_path) == []


def test_crash_while_writing_the_temp_file_removes_it(grid, tmp_path, monkeypatch):
    paths = write_mosaic(grid, tmp_path)
    res = io.match_files(paths, stat=STAT)
    before = snapshot(paths)

    def half_write(self, name, *args, **kwargs):
        Path(name).write_bytes(b"SIMPLE  =   half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(fits.HDUList, "writeto", half_write)
    with pytest.raises(KeyboardInterrupt):
        io.write_results(res, in_place=True)
    assert snapshot(paths) == before
    assert _no_temp_files(tmp_path) == []


def test_output_paths_never_overwrite_inputs(grid, tmp_path):
    paths = write_mosaic(grid, tmp_path / "in")
    res = io.match_files(paths[:2], stat=STAT)
    with pytest.raises(ValueError, match="would overwrite an input"):
        io.write_results(res, output_dir=tmp_path / "in")
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "in")
    with pytest.raises(ValueError, match="would overwrite an input"):
        io.output_paths(paths, output_dir=link)
    other = write_mosaic(grid, tmp_path / "other")  # same file names, other directory
    with pytest.raises(ValueError, match="two images would be written to the same file"):
        io.output_paths([paths[0], other[0]], output_dir=tmp_path / "out")
    with pytest.raises(ValueError, match="exactly one of"):
        io.output_paths(paths)
    with pytest.raises(ValueError, match="exactly one of"):
        io.write_results(res, output_dir=tmp_path / "out", in_place=True)
    assert not (tmp_path / "out").exists()
    assert io.output_paths(paths, in_place=True) == paths


# --------------------------------------------------------------------------- associations


def _exposures():
    return synthetic.exposures(3, (1, 2), shape=(64, 64), seed=5, point_sources=20,
                               extended_sources=0, sky=[110.0, 104.5, 107.25])


def test_association_groups_match_library_groups(tmp_path):
    m = _exposures()
    paths = write_mosaic(m, tmp_path / "data")
    members = [
        {"expname": f"data/{p.name}", "exptype": "science", "group_id": f"exp{g}"}
        for p, g in zip(paths, m.groups, strict=True)
    ]
    # a background member (not a science one) is ignored: its file is never opened
    members.insert(2, {"expname": "data/missing_bkg.fits", "exptype": "background"})
    asn = tmp_path / "image3_asn.json"
    asn.write_text(json.dumps({"asn_type": "image3", "products": [
        {"name": "mosaic", "members": members}]}))
    read = io.read_association(asn)
    assert read.members == [tmp_path / "data" / p.name for p in paths]
    assert read.groups == ["exp0", "exp0", "exp1", "exp1", "exp2", "exp2"]
    for method in ("match", "global+match", "local"):
        res = io.match_files(asn, method=method, stat=STAT)
        data, wcs, dq = read_independently(paths)
        lib = match_sky(data, wcs, groups=m.groups, method=method, stat=STAT, dq=dq)
        assert_array_equal(res.sky, lib.sky, err_msg=method)
        assert_array_equal(res.valid, lib.valid)
        assert res.groups.tolist() == read.groups
    # every detector of one exposure got its exposure's sky
    res = io.match_files(asn, method="global+match", stat=STAT)
    assert_array_equal(res.sky[0::2], res.sky[1::2])
    assert_allclose(res.sky - res.sky.min(), m.sky - m.sky.min(), atol=0.05)


def test_association_members_without_group_are_their_own_group(tmp_path):
    m = _exposures()
    paths = write_mosaic(m, tmp_path)
    members = [{"expname": str(p), "group_id": 7} for p in paths[:4]]  # absolute names
    members += [{"expname": p.name} for p in paths[4:]]
    asn = tmp_path / "asn.json"
    asn.write_text(json.dumps({"products": [{"members": members[:3]},
                                            {"members": members[3:]}]}))
    got, groups = io.collect_inputs(asn)
    assert got == paths
    assert groups[:4] == ["7"] * 4 and len(set(groups[4:])) == 2 and "7" not in groups[4:]
    res = io.match_files(asn, method="local", stat=STAT)
    data, wcs, dq = read_independently(paths)
    lib = match_sky(data, wcs, groups=[0, 0, 0, 0, 1, 2], method="local", stat=STAT, dq=dq)
    assert_array_equal(res.sky, lib.sky)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "top level is not a JSON object"),
        ('{"asn_type": "image3"}', "'products' is missing"),
        ('{"products": []}', "'products' is missing"),
        ('{"products": [{"name": "x"}]}', r"products\[0\] has no 'members' list"),
        ('{"products": [{"members": [3]}]}', r"members\[0\] is not a JSON object"),
        ('{"products": [{"members": [{"exptype": "science"}]}]}', "has no 'expname'"),
        ('{"products": [{"members": [{"expname": "a.fits", "group_id": [1]}]}]}',
         "group_id must be a string or an integer"),
        ('{"products": [{"members": [{"expname": "a.fits"}, {"expname": "./a.fits"}]}]}',
         "already listed"),
        ('{"products": [{"members": [{"expname": "a.fits", "exptype": "background"}]}]}',
         "no science member"),
    ],
)
def test_malformed_association_names_the_file(tmp_path, content, match):
    asn = tmp_path / "bad_asn.json"
    asn.write_text(content)
    with pytest.raises(ValueError, match=match) as err:
        io.read_association(asn)
    assert "bad_asn.json" in str(err.value)


def test_missing_member_is_reported_before_reading(tmp_path):
    asn = tmp_path / "asn.json"
    asn.write_text(json.dumps({"products": [{"members": [{"expname": "gone.fits"}]}]}))
    with pytest.raises(FileNotFoundError, match=r"gone\.fits \(listed in .*asn\.json\)"):
        io.match_files(asn)


# --------------------------------------------------------------------------- re-run rules


@pytest.mark.parametrize(
    ("cards", "subtract", "match"),
    [
        ({"BKGSUB": True}, True, "BKGSUB = T but no BKGLEVEL"),
        ({"BKGSUB": False}, False, "BKGSUB = F but no BKGLEVEL"),
        ({"BKGLEVEL": 3.5}, False, "BKGLEVEL = 3.5 but no BKGSUB"),
        ({"BKGLEVEL": 3.5, "BKGSUB": True}, False, "already subtracted"),
        ({"BKGLEVEL": 3.5, "BKGSUB": False}, True, "matched before without subtraction"),
        ({"BKGLEVEL": "high", "BKGSUB": False}, False, "is not a number"),
        ({"BKGLEVEL": 1.0, "BKGSUB": "yes"}, False, "is not a FITS logical"),
    ],
)
def test_inconsistent_background_keywords_raise_before_anything_is_written(
    grid, tmp_path, cards, subtract, match
):
    paths = write_mosaic(grid, tmp_path)
    set_keywords(paths[-1], **cards)  # the last file: every other one would be fine
    before = snapshot(paths)
    with pytest.raises(ValueError, match=match) as err:
        io.match_files(paths, subtract=subtract, stat=STAT)
    assert paths[-1].name in str(err.value)
    assert snapshot(paths) == before
    assert _no_temp_files(tmp_path) == []


def test_keywords_that_disagree_between_headers_raise(grid, tmp_path):
    paths = write_mosaic(grid, tmp_path)
    set_keywords(paths[0], BKGLEVEL=1.0, BKGSUB=False)
    with fits.open(paths[0], mode="update") as hdul:
        hdul[0].header["BKGLEVEL"] = 2.0
    with pytest.raises(ValueError, match="BKGLEVEL differs between the headers"):
        io.read_image(paths[0])


def test_rerun_with_subtract_is_cumulative(grid, tmp_path):
    paths = write_mosaic(grid, tmp_path / "in")
    first = io.match_files(paths, method="local", stat=STAT, subtract=True)
    once = io.write_results(first, output_dir=tmp_path / "once")
    # the sky measured now on the subtracted data is small; BKGLEVEL accumulates it
    data, wcs, dq = read_independently(once)
    lib = match_sky(data, wcs, method="local", stat=STAT, subtract=True, dq=dq)
    assert np.abs(lib.sky).max() < 0.05
    second = io.match_files(once, method="local", stat=STAT, subtract=True)
    assert_array_equal(second.sky, first.sky + lib.sky)
    twice = io.write_results(second, output_dir=tmp_path / "twice")
    for k, path in enumerate(twice):
        with fits.open(path) as hdul:
            assert_allclose(hdul["SCI"].header["BKGLEVEL"], first.sky[k] + lib.sky[k],
                            rtol=1e-15)
            assert hdul[0].header["BKGSUB"] is True
            # data lose only the new part: data_out = data_in - (new level - old level)
            assert_array_equal(hdul["SCI"].data, data[k] - np.float32(lib.sky[k]))


def test_rerun_without_subtract_replaces_the_level(grid, tmp_path):
    paths = write_mosaic(grid, tmp_path / "in")
    first = io.match_files(paths, method="local", stat=STAT)
    once = io.write_results(first, output_dir=tmp_path / "once")
    second = io.match_files(once, method="global", stat=STAT)
    assert_array_equal(second.sky, np.full(len(paths), first.sky.min()))
    io.write_results(second, in_place=True)
    for k, path in enumerate(once):
        hdr = fits.getheader(path, "SCI")
        assert (hdr["BKGMETH"], hdr["BKGSUB"]) == ("global", False)
        assert_allclose(hdr["BKGLEVEL"], first.sky.min(), rtol=1e-15)
        assert_array_equal(fits.getdata(path, "SCI"), grid.data[k])


def test_match_files_takes_arrays_only_from_the_files(grid, tmp_path):
    paths = write_mosaic(grid, tmp_path)
    with pytest.raises(TypeError, match="names"):
        io.match_files(paths, names=["a"] * len(paths))
    with pytest.raises(ValueError, match="given twice"):
        io.match_files([paths[0], tmp_path / "." / paths[0].name])


def test_reading_gives_native_arrays_and_leaves_a_callers_hdulist_intact(tmp_path):
    # big-endian FITS data come back native; an HDUList the caller passes is not touched
    data = np.arange(64 * 48, dtype=">f4").reshape(64, 48) + 100.0
    header = synthetic.dithers(1, shape=(64, 48), seed=1).wcs[0].to_header()
    path = tmp_path / "a.fits"
    fits.PrimaryHDU(data, header).writeto(path)
    img = io.read_image(path)
    assert img.data.dtype == np.float32 and img.data.dtype.isnative
    assert_array_equal(img.data, data)
    lazy = io.match_files([path], method="local")  # read inside its task
    assert lazy.sky[0] == pytest.approx(float(np.median(data)))
    with fits.open(path, memmap=False) as hdul:
        before = hdul[0].data.copy()
        res = match_sky([hdul], method="local")
        assert_array_equal(hdul[0].data, before)
    assert res.sky[0] == pytest.approx(float(np.median(data)))
