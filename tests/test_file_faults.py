"""Files as users really have them, and faults while writing them (issue 13).

Truncated FITS files, output paths that cannot be written, temporary files left by a
killed run, Ctrl-C, a closed standard output, a full disk, tile-compressed images,
big-endian float32 data, and a failure half-way through a set of writes: each gives the
right answer or one clear line naming the file, and no file is ever left half-written
or changed by a run that failed.
"""

import errno
import io as stdio
import logging
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from fits_helpers import snapshot, write_mosaic
from numpy.testing import assert_allclose, assert_array_equal

import skyeq
from skyeq import _fits, io, synthetic
from skyeq.cli import main

ROOT = Path(skyeq.__file__).resolve().parents[1]


def run(capsys, *args):
    code = main(["match", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err):
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def temp_files(*directories):
    return sorted(p.name for d in directories for p in Path(d).iterdir()
                  if p.name.endswith(".skyeq-tmp"))


@pytest.fixture(scope="module")
def mosaic():
    return synthetic.tile_grid(2, 2, shape=(64, 64), overlap=0.25, seed=13, point_sources=10,
                               extended_sources=0, dq_fraction=0.02)


@pytest.fixture
def files(mosaic, tmp_path):
    return write_mosaic(mosaic, tmp_path / "in")


# --------------------------------------------------------------------------- 1. truncated


def _cuts(path):
    """Byte counts that cut a JWST-like file (primary, SCI, DQ) in different places."""
    with fits.open(path) as hdul:
        sci, dq = hdul.fileinfo(1), hdul.fileinfo(2)
    size = path.stat().st_size
    return {
        "half the file": size // 2,
        "SCI header complete, its data cut": sci["datLoc"] + 1000,
        "SCI header complete, no data": sci["datLoc"],
        "DQ data cut": dq["datLoc"] + 2000,
        "DQ header cut": dq["hdrLoc"] + 1000,
    }


@pytest.mark.parametrize("where", ["half the file", "SCI header complete, its data cut",
                                   "SCI header complete, no data", "DQ data cut",
                                   "DQ header cut"])
def test_truncated_fits_is_one_error_naming_the_file(files, tmp_path, capsys, where):
    cut = tmp_path / "in" / "cut_cal.fits"
    cut.write_bytes(files[0].read_bytes()[:_cuts(files[0])[where]])
    pattern = rf"{re.escape(str(cut))} is truncated: the (data|header) of HDU [12]"
    with pytest.raises(ValueError, match=pattern):
        io.read_image(cut)
    with pytest.raises(ValueError, match=pattern):  # the headers are scanned up front
        io.match_files([cut, *files[1:]])
    before = snapshot([cut, *files[1:]])
    code, out, err = run(capsys, cut, *files[1:], "--in-place", "--table", tmp_path / "t.ecsv")
    assert code == 1 and out == ""
    line = one_line(err)  # and no astropy "WARNING: File may have been truncated"
    assert re.fullmatch(rf"skyeq: error: {pattern}.*\(an interrupted copy or download\?\)",
                        line), line
    assert snapshot([cut, *files[1:]]) == before
    assert not (tmp_path / "t.ecsv").exists() and temp_files(tmp_path / "in") == []


@pytest.mark.parametrize(("module", "suffix"), [("gzip", "gz"), ("bz2", "bz2"),
                                              ("lzma", "xz")])
def test_a_truncated_compressed_file_is_an_error_not_a_lost_extension(files, tmp_path,
                                                                       module, suffix):
    import importlib

    packed = importlib.import_module(module).compress(files[0].read_bytes())
    whole = tmp_path / f"whole.fits.{suffix}"
    whole.write_bytes(packed)
    img, ref = io.read_image(whole), io.read_image(files[0])
    assert_array_equal(img.data, ref.data)
    assert_array_equal(img.dq, ref.dq)
    cut = tmp_path / f"cut.fits.{suffix}"
    cut.write_bytes(packed[:-60])  # gzip: astropy read it without its DQ, silently
    with pytest.raises(ValueError, match=rf"{re.escape(str(cut))} (is truncated|as a FITS)"):
        io.read_image(cut)
    with pytest.raises(ValueError, match=rf"{re.escape(str(cut))} (is truncated|as a FITS)"):
        io.match_files([cut, *files[1:]])


def test_a_file_missing_only_its_final_padding_is_read_whole(files, tmp_path, caplog):
    # astropy reads it completely: the right answer, with the warning logged once
    short = tmp_path / "short.fits"
    short.write_bytes(files[0].read_bytes()[:-1])
    with caplog.at_level(logging.WARNING, logger="skyeq.io"):
        img = io.read_image(short)
    assert_array_equal(img.data, io.read_image(files[0]).data)
    assert_array_equal(img.dq, io.read_image(files[0]).dq)
    warned = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    assert len(warned) == 1 and str(short) in warned[0]


def test_lazy_array_of_a_file_cut_after_the_scan_names_the_file(files, tmp_path):
    path = tmp_path / "later.fits"
    path.write_bytes(files[0].read_bytes())
    # an array made on the truncated file itself: the read error names it
    lazy = _fits._FileArray(path, 1, (64, 64), to_float=True, what="science array")
    path.write_bytes(files[0].read_bytes()[:7000])
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))} has changed"):
        np.asarray(lazy)
    lazy = _fits._FileArray(path, 1, (64, 64), to_float=True, what="science array")
    with pytest.raises(ValueError, match=rf"cannot read the science array of "
                                         rf"{re.escape(str(path))}: "):
        np.asarray(lazy)


# --------------------------------------------------------------------------- 2. output paths


@pytest.fixture
def no_image_read(monkeypatch):
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError("an image was read before the output paths were checked")

    monkeypatch.setattr(io, "match_files", refuse)
    return calls


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--table", "nodir/t.ecsv", r"--table {p}: the directory {d} does not exist"),
        ("--plot", "nodir/p.png", r"--plot {p}: the directory {d} does not exist"),
        ("--plot", "plot.xyz", r"--plot {p}: unknown image format 'xyz' \(matplotlib "
                               r"writes .*png.*\)"),
        ("--table", "adir", r"--table {p} is a directory"),
        ("--table", "in/tile_r0_c0_cal.fits", r"--table {p} would overwrite the input "
                                              r"image {p}"),
    ],
)
def test_bad_output_paths_fail_before_any_image_is_read(files, tmp_path, capsys,
                                                        no_image_read, option, value,
                                                        message):
    pytest.importorskip("matplotlib")
    (tmp_path / "adir").mkdir()
    path = tmp_path / value
    before = snapshot(files)
    code, out, err = run(capsys, *files, "--method", "match", "--in-place", option, path)
    assert code == 1 and out == ""
    line = one_line(err)
    expected = message.format(p=re.escape(str(path)), d=re.escape(str(path.parent)))
    assert re.fullmatch(f"skyeq: error: {expected}", line), line
    assert no_image_read == []
    assert snapshot(files) == before and temp_files(tmp_path / "in", tmp_path) == []


def test_unwritable_output_directories_fail_before_any_image_is_read(
    files, tmp_path, capsys, no_image_read, monkeypatch
):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_open = os.open

    def no_new_file_in_locked(path, flags, *args, **kwargs):  # as a read-only directory
        if Path(path).parent == locked and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_new_file_in_locked)
    cases = [
        (["--table", locked / "t.ecsv"],
         rf"--table {re.escape(str(locked / 't.ecsv'))}: cannot create a file in "
         rf"{re.escape(str(locked))} \(Permission denied\)"),
        (["--output-dir", locked],
         rf"output directory {re.escape(str(locked))}: cannot create a file in "
         rf"{re.escape(str(locked))} \(Permission denied\)"),
        (["--output-dir", locked / "new" / "deeper"],
         rf"output directory .*deeper \(to be created in {re.escape(str(locked))}\): "
         rf"cannot create a file in {re.escape(str(locked))} \(Permission denied\)"),
    ]
    for args, pattern in cases:
        code, out, err = run(capsys, *files, *args)
        assert code == 1 and out == ""
        line = one_line(err)
        assert re.fullmatch(f"skyeq: error: {pattern}", line), line
    assert no_image_read == [] and list(locked.iterdir()) == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="permission bits do not stop root")
def test_read_only_directory_for_the_table(files, tmp_path, capsys, no_image_read):
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        code, _, err = run(capsys, *files, "--table", locked / "t.ecsv")
    finally:
        locked.chmod(0o755)
    assert code == 1 and "cannot create a file in" in one_line(err)
    assert no_image_read == []


def test_table_and_plot_may_go_into_the_output_directory_it_creates(files, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "out" / "sub"
    code, _, err = run(capsys, *files, "--output-dir", out, "--table", out / "t.ecsv",
                       "--plot", out / "p.svg")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["t.ecsv", "p.svg", *(p.name for p in files)])
    code, _, err = run(capsys, *files, "--output-dir", tmp_path / "o2", "--table",
                       tmp_path / "o2" / files[1].name)
    assert code == 1 and "would overwrite the output image" in one_line(err)
    assert not (tmp_path / "o2").exists()


def test_write_table_to_a_missing_directory_names_it(files, tmp_path):
    res = io.match_files(files, method="local")
    with pytest.raises(FileNotFoundError, match=r"table file .*t\.ecsv: the directory "
                                                r".*nodir does not exist"):
        io.write_table(res, tmp_path / "nodir" / "t.ecsv")


# --------------------------------------------------------------------------- 3. stale temps


def test_stale_temporary_files_of_a_target_are_removed_by_its_next_write(
    files, tmp_path, caplog
):
    folder = files[0].parent
    name = files[0].name
    old = time.time() - 3600
    stale = [folder / f".{name}.0123456789ab.skyeq-tmp", folder / f".{name}.fedcba987654.skyeq-tmp"]
    fresh = folder / f".{name}.aaaaaaaaaaaa.skyeq-tmp"  # may be another run's, writing now
    other = folder / f".{files[1].name}.bbbbbbbbbbbb.skyeq-tmp"  # not written this time
    unlike = [folder / f".{name}.not-hex-digit.skyeq-tmp",
              folder / f"{name}.0123456789ab.skyeq-tmp",
              folder / f".{name}.0123456789ab.skyeq-tmp.keep"]
    for p in [*stale, fresh, other, *unlike]:
        p.write_bytes(b"SIMPLE  =  half a file")
        os.utime(p, (old, old))
    os.utime(fresh, None)
    res = io.match_files(files[:1], method="local")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="skyeq.io"):
        io.write_results(res, in_place=True)
    assert not any(p.exists() for p in stale)
    assert fresh.exists() and other.exists() and all(p.exists() for p in unlike)
    removed = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sorted(removed) == sorted(
        f"removed {p}, a temporary file left by an interrupted run (last modified "
        f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(old))})" for p in stale)
    # the table writer cleans its own target the same way
    table = tmp_path / "t.ecsv"
    left = tmp_path / ".t.ecsv.0123456789ab.skyeq-tmp"
    left.write_text("half a table")
    os.utime(left, (old, old))
    io.write_table(res, table)
    assert not left.exists() and table.exists()


# --------------------------------------------------------------------------- 4. Ctrl-C


def _interrupt_on(call, monkeypatch, target, name):
    """Make ``target.name`` raise KeyboardInterrupt on its ``call``-th call."""
    original = getattr(target, name)
    count = [0]

    def wrapped(*args, **kwargs):
        count[0] += 1
        if count[0] == call:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, wrapped)
    return count


def _half_write_then(exc, call, monkeypatch):
    """Make the FITS writer write part of its temporary file and raise, at call ``call``."""
    original = io._write_fits
    seen = []

    def writer(source, tmp, name, keywords, data):
        seen.append(Path(tmp))
        if len(seen) == call:
            Path(tmp).write_bytes(Path(source).read_bytes()[:5000])  # part of the data
            raise exc
        return original(source, tmp, name, keywords, data)

    monkeypatch.setattr(io, "_write_fits", writer)
    return seen


@pytest.mark.parametrize("threads", ["1", "2"])
def test_ctrl_c_while_writing_exits_130_and_changes_nothing(files, tmp_path, capsys,
                                                            monkeypatch, threads):
    pytest.importorskip("matplotlib")
    seen = _half_write_then(KeyboardInterrupt(), 2, monkeypatch)
    before = snapshot(files)
    table, plot = tmp_path / "t.ecsv", tmp_path / "p.png"
    code, out, err = run(capsys, *files, "--subtract", "--in-place", "--table", table,
                         "--plot", plot, "--threads", threads)
    assert (code, out, err) == (130, "", "skyeq: interrupted\n")
    assert len(seen) >= 2
    assert snapshot(files) == before  # not one file replaced, the first one neither
    assert not table.exists() and not plot.exists()
    assert temp_files(tmp_path / "in", tmp_path) == []


def test_ctrl_c_while_measuring_exits_130_and_writes_nothing(files, tmp_path, capsys,
                                                             monkeypatch):
    _interrupt_on(3, monkeypatch, _fits._FileArray, "__array__")
    before = snapshot(files)
    code, out, err = run(capsys, *files, "--output-dir", tmp_path / "out",
                         "--table", tmp_path / "t.ecsv")
    assert (code, out, err) == (130, "", "skyeq: interrupted\n")
    assert snapshot(files) == before
    assert not (tmp_path / "out").exists() and not (tmp_path / "t.ecsv").exists()


def test_ctrl_c_with_debug_raises(files, monkeypatch):
    _interrupt_on(1, monkeypatch, _fits._FileArray, "__array__")
    with pytest.raises(KeyboardInterrupt):
        main(["match", *map(str, files), "--debug"])


# --------------------------------------------------------------------------- 5. broken pipe


class ClosedPipe(stdio.TextIOBase):
    """A standard output whose reader has gone (``| head -1`` after its line)."""

    def write(self, text):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    def flush(self):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")


def test_closed_stdout_is_success_and_every_output_is_written(files, tmp_path, capsys,
                                                              monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    table, plot = tmp_path / "t.ecsv", tmp_path / "p.png"
    code = main(["match", *map(str, files), "--in-place", "--table", str(table),
                 "--plot", str(plot)])
    assert code == 0
    assert capsys.readouterr().err == ""
    skies = Table.read(table, format="ascii.ecsv")["sky"]
    for k, p in enumerate(files):
        assert_allclose(fits.getheader(p, "SCI")["BKGLEVEL"], skies[k], rtol=1e-15)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_real_broken_pipe_exits_0_silently(files, tmp_path):
    table = tmp_path / "t.ecsv"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    with subprocess.Popen(
        [sys.executable, "-m", "skyeq", "match", *map(str, files), "--in-place",
         "--table", str(table)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    ) as proc:
        proc.stdout.close()  # the reader is gone before the first line
        err = proc.stderr.read().decode()
        code = proc.wait(timeout=300)
    assert code == 0, err
    assert err == ""
    assert table.exists() and all("BKGLEVEL" in fits.getheader(p, "SCI") for p in files)


# --------------------------------------------------------------------------- 6. disk full


def test_disk_full_names_the_target_and_changes_nothing(files, tmp_path, capsys, monkeypatch):
    full = OSError(errno.ENOSPC, "No space left on device")
    seen = _half_write_then(full, 2, monkeypatch)
    res = io.match_files(files, method="match", subtract=True)
    before = snapshot(files)
    with pytest.raises(OSError) as info:
        io.write_results(res, in_place=True)
    assert info.value.errno == errno.ENOSPC
    assert info.value.filename == str(files[1])
    assert str(info.value) == f"[Errno 28] No space left on device: '{files[1]}'"
    assert ".skyeq-tmp" not in str(info.value) and len(seen) == 2
    assert snapshot(files) == before and temp_files(tmp_path / "in") == []
    # the command line: one line naming the file
    seen.clear()
    code, out, err = run(capsys, *files, "--in-place")
    assert code == 1 and out == ""
    assert one_line(err) == f"skyeq: error: No space left on device: {files[1]}"
    assert snapshot(files) == before and temp_files(tmp_path / "in") == []


def test_disk_full_while_writing_the_table(files, tmp_path, monkeypatch):
    res = io.match_files(files, method="local")
    table = tmp_path / "t.ecsv"
    table.write_text("old table\n")

    def full(result, path, fmt):
        Path(path).write_text("# %ECSV 1.0\n")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io, "_write_table", full)
    with pytest.raises(OSError, match=rf"No space left on device: '{re.escape(str(table))}'"):
        io.write_table(res, table)
    assert table.read_text() == "old table\n" and temp_files(tmp_path) == []


# --------------------------------------------------------------------------- 7. compressed


def _compressed(mosaic, path):
    hdul = fits.HDUList([
        fits.PrimaryHDU(),
        fits.CompImageHDU(mosaic.data[0] + np.float32(1000), mosaic.wcs[0].to_header(),
                          name="SCI"),
        fits.CompImageHDU(np.full((64, 64), 0.1, np.float32) + mosaic.data[0] * 1e-3,
                          name="ERR"),
        fits.ImageHDU(mosaic.dq[0], name="DQ"),
    ])
    hdul.writeto(path)
    return path


def test_keywords_only_write_keeps_compressed_data_bit_for_bit(mosaic, tmp_path):
    path = _compressed(mosaic, tmp_path / "c.fits")
    with fits.open(path) as hdul:
        sci, err = hdul["SCI"].data.copy(), hdul["ERR"].data.copy()
    res = io.match_files([path], method="local")
    io.write_results(res, in_place=True)
    with fits.open(path) as hdul:
        assert isinstance(hdul["SCI"], fits.CompImageHDU)
        assert isinstance(hdul["ERR"], fits.CompImageHDU)
        assert_allclose(hdul["SCI"].header["BKGLEVEL"], res.sky[0], rtol=1e-15)
        assert hdul["SCI"].header["BKGSUB"] is False
        # re-compressing would have quantized these again (they changed by ~0.06 before)
        assert_array_equal(hdul["SCI"].data, sci)
        assert_array_equal(hdul["ERR"].data, err)


def test_subtracted_data_of_a_compressed_sci_are_written_uncompressed(mosaic, tmp_path,
                                                                      caplog):
    path = _compressed(mosaic, tmp_path / "c.fits")
    with fits.open(path) as hdul:
        err = hdul["ERR"].data.copy()
    res = io.match_files([path], method="local", subtract=True)
    expected = np.asarray(res.data[0])
    assert expected.dtype == np.float32
    with caplog.at_level(logging.WARNING, logger="skyeq.io"):
        io.write_results(res, in_place=True)
    with fits.open(path) as hdul:
        assert [type(h).__name__ for h in hdul] == ["PrimaryHDU", "ImageHDU", "CompImageHDU",
                                                    "ImageHDU"]
        assert hdul[1].name == "SCI" and hdul["SCI"].header["BKGSUB"] is True
        assert hdul["SCI"].data.dtype == np.dtype(">f4")
        assert_array_equal(hdul["SCI"].data, expected)  # exact, not re-quantized
        assert_array_equal(hdul["ERR"].data, err)
        assert_array_equal(hdul["DQ"].data, mosaic.dq[0])
    warned = [r.getMessage() for r in caplog.records if "tile-compressed" in r.getMessage()]
    assert len(warned) == 1 and all(r.levelno == logging.WARNING for r in caplog.records
                                    if "tile-compressed" in r.getMessage())
    assert warned[0].startswith(f"writing c.fits from {path}: its SCI extension is "
                                "tile-compressed; the sky-subtracted data are written "
                                "uncompressed")
    # and it reads back as the same image, with the same WCS
    img = io.read_image(path)
    assert_array_equal(img.data, expected)
    assert img.wcs.wcs.compare(io.read_image(_compressed(mosaic, tmp_path / "d.fits")).wcs.wcs)


# --------------------------------------------------------------------------- 8. big-endian


@pytest.mark.parametrize("scaling", [{}, {"BSCALE": 1.0, "BZERO": 0.0}])
def test_big_endian_float32_stays_float32(mosaic, tmp_path, scaling):
    path = tmp_path / "be.fits"
    data = mosaic.data[0].astype(">f4")
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data, mosaic.wcs[0].to_header(),
                                                   name="SCI")]).writeto(path)
    if scaling:
        with fits.open(path, mode="update", do_not_scale_image_data=True) as hdul:
            hdul["SCI"].header.update(scaling)
    with fits.open(path, do_not_scale_image_data=True) as hdul:
        assert hdul["SCI"].data.dtype == np.dtype(">f4")
    eager = io.read_image(path).data
    lazy = np.asarray(_fits._read_image(path, lazy=True).data)
    for arr in (eager, lazy):
        assert arr.dtype == np.dtype("float32") and arr.dtype.isnative
        assert_array_equal(arr, data)
    res = io.match_files([path], method="local", subtract=True)
    sub = np.asarray(res.data[0])
    assert sub.dtype == np.dtype("float32") and sub.dtype.isnative
    out = io.write_results(res, output_dir=tmp_path / "out")[0]
    with fits.open(out) as hdul:
        assert hdul["SCI"].data.dtype == np.dtype(">f4")
        assert_array_equal(hdul["SCI"].data, sub)


# --------------------------------------------------------------------------- 9. mid-way


@pytest.mark.parametrize("where", ["in_place", "output_dir", "threads"])
def test_a_write_failing_mid_way_leaves_every_file_as_it_was(files, tmp_path, monkeypatch,
                                                             where):
    res = io.match_files(files, method="match", subtract=True)
    out = tmp_path / "new" / "out"
    old = tmp_path / "old"  # an output directory that already holds older outputs
    old.mkdir()
    for p in files:
        (old / p.name).write_bytes(b"an older output")
    watched = [*files, *(old / p.name for p in files)]
    before = snapshot(watched)
    seen = _half_write_then(RuntimeError("writer failed half-way"), 2, monkeypatch)
    with pytest.raises(RuntimeError, match="writer failed half-way"):
        if where == "in_place":
            io.write_results(res, in_place=True)
        elif where == "output_dir":
            io.write_results(res, output_dir=out)
        else:
            with ThreadPoolExecutor(2) as pool:
                io.write_results(res, output_dir=old, executor=pool)
    assert len(seen) >= 2
    assert snapshot(watched) == before  # bytes and modification times
    assert not (tmp_path / "new").exists()  # the directories it made are gone again
    assert temp_files(tmp_path / "in", old) == []


def test_a_rename_failing_mid_way_puts_back_the_files_already_replaced(files, tmp_path,
                                                                       monkeypatch, caplog):
    res = io.match_files(files, method="match", subtract=True)
    before = snapshot(files)
    real_replace = os.replace
    renamed = []

    def third_rename_fails(src, dst):
        if str(src).endswith(".skyeq-tmp") and Path(dst) in files:
            renamed.append(Path(dst))
            if len(renamed) == 3:
                raise PermissionError(errno.EACCES, "Permission denied", str(src))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", third_rename_fails)
    with pytest.raises(PermissionError) as info:
        io.write_results(res, in_place=True)
    assert info.value.filename == str(files[2])
    assert renamed == [*files[:3], files[1], files[0]]  # the last two: putting them back
    assert snapshot(files) == before  # the two already replaced are back, mtime and all
    assert temp_files(tmp_path / "in") == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
