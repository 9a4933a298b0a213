"""The ``skyeq match`` command: same numbers as the library, options, exit codes, errors."""

import json
import logging
import re
import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from fits_helpers import read_independently, snapshot, write_mosaic
from numpy.testing import assert_allclose, assert_array_equal

import skyeq
import skyeq.io
from skyeq import SkyStat, match_sky, synthetic
from skyeq.cli import main


def run(capsys, *args):
    code = main(["match", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    m = synthetic.tile_grid(2, 3, shape=(64, 64), overlap=0.2, seed=21, point_sources=30,
                            extended_sources=0, dq_fraction=0.02)
    return m, write_mosaic(m, tmp_path_factory.mktemp("small"))


# --------------------------------------------------------------------------- numbers


def test_cli_on_36_files_equals_the_library_call(tmp_path, capsys):
    m = synthetic.tile_grid(6, 6, shape=(64, 64), overlap=0.15, seed=3, point_sources=60,
                            extended_sources=2, dq_fraction=0.01)
    paths = write_mosaic(m, tmp_path / "in")
    table = tmp_path / "skies.ecsv"
    code, out, err = run(capsys, *paths, "--table", table, "--output-dir", tmp_path / "out")
    assert code == 0, err
    assert err == ""
    assert "wrote 36 file(s)" in out and "sky computed for 36 of 36 images" in out
    data, wcs, dq = read_independently(paths)
    lib = match_sky(data, wcs, dq=dq)  # the library defaults are the command's defaults
    got = Table.read(table, format="ascii.ecsv")
    assert_array_equal(got["sky"], lib.sky)
    assert_array_equal(got["valid"], lib.valid)
    assert list(got["name"]) == [str(p) for p in paths]
    assert set(got["method"]) == {"match"} and not any(got["subtracted"])
    for k, p in enumerate(paths):
        hdr = fits.getheader(tmp_path / "out" / p.name, "SCI")
        assert_allclose(hdr["BKGLEVEL"], lib.sky[k], rtol=1e-15)
        assert (hdr["BKGMETH"], hdr["BKGSUB"]) == ("match", False)
    # and the offsets are the true relative skies
    assert lib.sky.min() == 0.0
    assert_allclose(lib.sky, m.sky - m.sky[np.argmin(lib.sky)], atol=0.25)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (["--method", "local", "--stat", "mean", "--nclip", "0"],
         dict(method="local", stat=SkyStat("mean", nclip=0))),
        (["--method", "global+match", "--stat", "mode", "--binwidth", "0.2",
          "--lsigma", "3", "--usigma", "2.5"],
         dict(method="global+match", stat=SkyStat("mode", lsigma=3, usigma=2.5,
                                                    binwidth=0.2))),
        (["--match-up", "--stat", "midpt", "--upper", "130", "--lower", "50"],
         dict(match_down=False, stat=SkyStat("midpt", lower=50, upper=130))),
        (["--no-match-down", "--dqbits", "none", "--stepsize", "16", "--threads", "2"],
         dict(match_down=False, dqbits=None, stepsize=16)),
        (["--method", "global", "--dqbits", "0"], dict(method="global", dqbits="0")),
        (["--anchor", "component", "--robust"], dict(anchor="component", robust=True)),
    ],
)
def test_options_reach_the_library(small, tmp_path, capsys, args, kwargs):
    _, paths = small
    table = tmp_path / "t.ecsv"
    code, _, err = run(capsys, *paths, *args, "--table", table)
    assert code == 0, err
    data, wcs, dq = read_independently(paths)
    lib = match_sky(data, wcs, dq=dq, **kwargs)
    assert_array_equal(Table.read(table, format="ascii.ecsv")["sky"], lib.sky)


def test_subtract_in_place(small, tmp_path, capsys):
    m, _ = small
    paths = write_mosaic(m, tmp_path)
    data, wcs, dq = read_independently(paths)
    lib = match_sky(data, wcs, dq=dq, method="local", subtract=True)
    code, out, err = run(capsys, *paths, "--method", "local", "--subtract", "--in-place")
    assert code == 0, err
    assert "wrote 6 file(s) in place" in out
    for k, p in enumerate(paths):
        with fits.open(p) as hdul:
            assert hdul[0].header["BKGSUB"] is True and hdul["SCI"].header["BKGSUB"] is True
            assert_allclose(hdul["SCI"].header["BKGLEVEL"], lib.sky[k], rtol=1e-15)
            assert_array_equal(hdul["SCI"].data, lib.data[k])
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".skyeq-tmp")]
    # matching again with --subtract: cumulative BKGLEVEL (algorithm_spec section 7)
    again = match_sky(read_independently(paths)[0], wcs, dq=dq, method="local")
    code, _, err = run(capsys, *paths, "--method", "local", "--subtract", "--in-place")
    assert code == 0, err
    for k, p in enumerate(paths):
        assert_allclose(fits.getheader(p, "SCI")["BKGLEVEL"], lib.sky[k] + again.sky[k],
                        rtol=1e-15)


def test_bkgerr_goes_into_the_written_headers(small, tmp_path, capsys):
    _, paths = small
    code, _, err = run(capsys, *paths, "--bkgerr", "--output-dir", tmp_path / "out")
    assert code == 0, err
    data, wcs, dq = read_independently(paths)
    lib = match_sky(data, wcs, dq=dq)
    for k, path in enumerate(paths):
        with fits.open(tmp_path / "out" / path.name) as hdul:
            assert hdul["SCI"].header["BKGERR"] == lib.sky_err[k]


def test_association_and_user_skylist(tmp_path, capsys):
    m = synthetic.exposures(2, (1, 2), shape=(64, 64), seed=8, point_sources=20,
                            extended_sources=0, sky=[105.0, 101.0])
    paths = write_mosaic(m, tmp_path / "data")
    asn = tmp_path / "asn.json"
    asn.write_text(json.dumps({"products": [{"members": [
        {"expname": f"data/{p.name}", "exptype": "science", "group_id": f"e{g}"}
        for p, g in zip(paths, m.groups, strict=True)]}]}))
    table = tmp_path / "t.ecsv"
    code, _, err = run(capsys, asn, "--method", "global+match", "--table", table)
    assert code == 0, err
    data, wcs, _ = read_independently(paths)
    lib = match_sky(data, wcs, groups=m.groups, method="global+match")
    got = Table.read(table, format="ascii.ecsv")
    assert_array_equal(got["sky"], lib.sky)
    assert list(got["group"]) == ["e0", "e0", "e1", "e1"]
    skylist = tmp_path / "skies.txt"
    skylist.write_text("".join(f"{p.name} {100 + k}.25\n" for k, p in enumerate(paths)))
    code, _, err = run(capsys, asn, "--method", "user", "--skylist", skylist, "--table", table)
    assert code == 0, err
    assert_array_equal(Table.read(table, format="ascii.ecsv")["sky"],
                       [100.25, 101.25, 102.25, 103.25])


@pytest.mark.parametrize("ext", ["ecsv", "csv", "fits", "html", "txt"])
def test_table_format_follows_the_extension(small, tmp_path, capsys, ext):
    _, paths = small
    table = tmp_path / f"skies.{ext}"
    code, out, err = run(capsys, *paths, "--method", "global+match", "--table", table)
    assert code == 0, err
    assert f"wrote the table to {table}" in out
    lib = skyeq.io.match_files(paths, method="global+match")
    same = skyeq.io.write_table(lib, tmp_path / f"library.{ext}")
    assert table.read_bytes() == same.read_bytes()  # the library's writer, same numbers
    if ext == "html":  # reading HTML back needs bs4: test_io reads it without
        assert table.read_text().lstrip().startswith("<html>")
        assert all(f"<td>{p}</td>" in table.read_text() for p in paths)
        return
    fmt = {"ecsv": "ascii.ecsv", "csv": "ascii.csv", "fits": "fits",
           "txt": "ascii.fixed_width_two_line"}[ext]
    got = Table.read(table, format=fmt, **({"mask_invalid": False} if ext == "fits" else {}))
    want = lib.to_table()
    assert got.colnames == want.colnames
    assert [str(v) for v in got["name"].tolist()] == [str(p) for p in paths]
    assert_array_equal(got["sky"], lib.sky)
    assert_array_equal(got["local"], lib.local)
    assert got["index"].dtype.kind == "i" and got["component"].dtype.kind == "i"
    assert got["index"].tolist() == list(range(len(paths)))
    assert got["component"].tolist() == want["component"].tolist()
    assert [str(v) for v in got["group"].tolist()] == [str(v) for v in want["group"]]
    assert [str(v) for v in got["valid"].tolist()] == [str(v) for v in want["valid"]]
    if ext in ("ecsv", "fits"):
        assert got.meta["BKGMETH"] == "global+match" and got.meta["BKGSUB"] is False


@pytest.mark.parametrize("table", ["skies.xlsx", "skies", "out/skies.fits.gz"])
@pytest.mark.parametrize("dest", ["--in-place", "--output-dir"])
def test_unknown_table_extension_fails_before_any_image(small, tmp_path, capsys, monkeypatch,
                                                        table, dest):
    m, _ = small
    paths = write_mosaic(m, tmp_path / "in")
    before = snapshot(paths)

    def no_reading(*args, **kwargs):
        raise AssertionError("an image was read")

    monkeypatch.setattr(skyeq.io, "match_files", no_reading)
    monkeypatch.chdir(tmp_path)
    where = [dest] if dest == "--in-place" else [dest, tmp_path / "out"]
    code, out, err = run(capsys, *paths, *where, "--table", table)
    line = _one_error_line(err)
    assert code == 1 and out == ""
    assert line.startswith(f"skyeq: error: --table {table}: unknown table format")
    assert line.endswith("use one of .ecsv, .csv, .fits, .html, .txt")
    assert snapshot(paths) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # no out/, no table
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == sorted(p.name for p in paths)


def test_help_explains_every_option(capsys):
    assert main(["match", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # undo the line wrapping
    for option in ("--method", "--stat", "--lower", "--upper", "--nclip", "--lsigma",
                   "--usigma", "--binwidth", "--dqbits", "--stepsize", "--match-up",
                   "--no-match-down", "--subtract", "--skylist", "--output-dir",
                   "--in-place", "--table", "--debug", "--anchor", "--robust", "--bkgerr",
                   "BKGLEVEL", "BKGSUB", "BKGMETH",
                   "group_id", "exit status"):
        assert option in text, option
    assert "default: match" in text and "default: median" in text and "(default: 5)" in text
    assert main(["demo", "--help"]) == 0


# --------------------------------------------------------------------------- errors


def _one_error_line(err):
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("skyeq")
    assert "Traceback" not in err
    return lines[0]


def test_error_paths_give_one_line_and_exit_codes(small, tmp_path, capsys):
    _, paths = small
    nowcs = tmp_path / "nowcs.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.ones((8, 8), np.float32),
                                                   name="SCI")]).writeto(nowcs)
    bad_skylist = tmp_path / "bad.txt"
    bad_skylist.write_text("a.fits 1.0 2.0\n")
    garbage = tmp_path / "garbage.fits"
    garbage.write_text("hello\n")
    bad_asn = tmp_path / "bad_asn.json"
    bad_asn.write_text('{"products": 3}')
    cases = [
        ([tmp_path / "missing.fits"], 1, r"missing\.fits does not exist"),
        ([paths[0], nowcs], 1, r"nowcs\.fits has no celestial WCS"),
        ([*paths, "--method", "user", "--skylist", bad_skylist], 1, r"bad\.txt:1: expected 2"),
        ([*paths, "--method", "user", "--skylist", tmp_path / "nope.txt"], 1, r"nope\.txt"),
        ([garbage], 1, r"garbage\.fits as a FITS file"),
        ([bad_asn], 1, r"malformed association .*bad_asn\.json"),
        ([paths[0], "--method", "fancy"], 2, r"invalid choice: 'fancy'"),
        ([paths[0], "--stat", "max"], 2, r"invalid choice: 'max'"),
        ([paths[0], "--nclip", "many"], 2, r"invalid int value"),
        ([paths[0], "--lsigma", "-1"], 2, r"lsigma"),
        ([paths[0], "--method", "user"], 2, r"needs --skylist"),
        ([paths[0], "--skylist", bad_skylist], 2, r"only used with --method user"),
        ([paths[0], "--in-place", "--output-dir", tmp_path], 2, r"not allowed with"),
        ([paths[0], "--output-dir", paths[0].parent], 1, r"would overwrite an input"),
        ([], 2, r"required: FILE_OR_ASN"),
    ]
    for args, code, pattern in cases:
        got, _, err = run(capsys, *args)
        line = _one_error_line(err)
        assert got == code, (args, err)
        assert re.search(pattern, line), (pattern, line)
        if code == 1:
            assert line.startswith("skyeq: error: ")
    assert main(["frobnicate"]) == 2
    _one_error_line(capsys.readouterr().err)


def test_debug_reraises(small, tmp_path):
    _, paths = small
    with pytest.raises(FileNotFoundError, match="missing"):
        main(["match", str(tmp_path / "missing.fits"), "--debug"])
    nowcs = tmp_path / "nowcs.fits"
    fits.PrimaryHDU(np.ones((8, 8), np.float32)).writeto(nowcs)
    with pytest.raises(ValueError, match="has no celestial WCS"):
        main(["match", str(paths[0]), str(nowcs), "--debug"])


@pytest.mark.parametrize(
    ("cards", "flags"),
    [
        ({"BKGSUB": True}, ["--subtract"]),
        ({"BKGLEVEL": 2.0}, []),
        ({"BKGLEVEL": 2.0, "BKGSUB": True}, []),
        ({"BKGLEVEL": 2.0, "BKGSUB": False}, ["--subtract"]),
    ],
)
def test_inconsistent_reruns_touch_no_file(small, tmp_path, capsys, cards, flags):
    m, _ = small
    paths = write_mosaic(m, tmp_path / "in")
    with fits.open(paths[3], mode="update") as hdul:
        for key, value in cards.items():
            hdul["SCI"].header[key] = value
    before = snapshot(paths)
    for dest in (["--in-place"], ["--output-dir", tmp_path / "out"]):
        code, _, err = run(capsys, *paths, *flags, *dest, "--table", tmp_path / "t.ecsv")
        line = _one_error_line(err)
        assert code == 1 and paths[3].name in line
        assert snapshot(paths) == before
        assert not (tmp_path / "out").exists() and not (tmp_path / "t.ecsv").exists()
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == sorted(p.name for p in paths)


def test_console_entry_point_exit_code(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "skyeq", "match", str(tmp_path / "missing.fits")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"skyeq: error: image file {tmp_path / 'missing.fits'} does not exist"
    ]
    assert proc.stdout == ""


def test_demo_recovers_the_relative_skies(capsys):
    # the README's main job: 12 tiles, every method; match within 0.02 noise sigma
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith("tile_r")]
    assert len(rows) == 12
    true_rel = np.array([float(r[2]) for r in rows])
    local, match = (np.array([float(r[k]) for r in rows]) for k in (3, 5))
    err = match - true_rel
    assert np.abs(err - np.median(err)).max() < 0.02
    assert np.abs(local - np.array([float(r[1]) for r in rows])).max() < 0.1  # sources bias
    assert "largest error of the relative skies" in out


def test_warmup_compiles_or_loads_the_kernels(capsys):
    assert main(["warmup"]) == 0
    out = capsys.readouterr().out
    assert re.match(r"skyeq \S+: kernels (loaded|compiled) in \d+\.\d s \(numba cache: ", out)


def test_the_first_compile_is_announced_once(monkeypatch, caplog):
    from skyeq import _kernels, stats

    monkeypatch.setattr(stats, "_noticed", False)
    monkeypatch.setattr(_kernels, "warm", lambda: False)
    m = synthetic.tile_grid(1, 2, shape=(32, 32), seed=1)
    with caplog.at_level(logging.WARNING, logger="skyeq"):
        skyeq.match_sky(m.data, m.wcs)
        skyeq.match_sky(m.data, m.wcs)
        skyeq.sky_statistic(m.data[0])
    notes = [r for r in caplog.records if "skyeq is compiling its numba kernels" in r.message]
    assert len(notes) == 1
    assert "python -m skyeq warmup" in notes[0].message
    # a warm cache says nothing
    monkeypatch.setattr(stats, "_noticed", False)
    monkeypatch.setattr(_kernels, "warm", lambda: True)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="skyeq"):
        skyeq.match_sky(m.data, m.wcs)
    assert not [r for r in caplog.records if "compiling" in r.message]



def test_the_first_compile_of_the_pair_kernels_is_announced_once(monkeypatch, caplog):
    from skyeq import _kernels, stats

    monkeypatch.setattr(stats, "_noticed_pairs", False)
    monkeypatch.setattr(_kernels, "pairs_warm", lambda: False)
    m = synthetic.tile_grid(1, 2, shape=(32, 32), seed=1)
    with caplog.at_level(logging.WARNING, logger="skyeq"):
        skyeq.match_sky(m.data, m.wcs)  # own statistics: no word about the pair kernels
        assert not [r for r in caplog.records if "pair_stat" in r.message]
        skyeq.match_sky(m.data, m.wcs, pair_stat="difference")
        skyeq.match_sky(m.data, m.wcs, pair_stat="difference")
    notes = [r for r in caplog.records if "kernels of pair_stat='difference'" in r.message]
    assert len(notes) == 1
