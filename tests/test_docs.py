"""The Sphinx documentation builds without warnings and shows computed tables and figures."""

import re

import pytest

pytest.importorskip("sphinx")
pytest.importorskip("numpydoc")
pytest.importorskip("myst_parser")
pytest.importorskip("matplotlib")

import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_docs_build_without_warnings(tmp_path):
    out = tmp_path / "html"
    # a subprocess, exactly as documented (pytest's filterwarnings=error would turn
    # third-party deprecation warnings inside Sphinx extensions into errors)
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html", "-d",
         str(tmp_path / "doctrees"), str(DOCS), str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    methods = (out / "methods.html").read_text()
    cells = re.findall(r"<td><p>([-0-9.]+)</p></td>", methods)
    # the two tables of the JWST skymatch documentation: sky, local, global, match,
    # global+match per image
    table1 = [(100, 100, 100, 0, 100), (120, 120, 100, 20, 120), (105, 105, 100, 5, 105),
              (110, 110, 100, 10, 110), (105, 105, 100, 5, 105), (115, 115, 100, 15, 115)]
    table2 = [(100, 100, 90, 0, 86.25), (120, 120, 90, 20, 106.25),
              (105, 105, 90, 5, 91.25), (110, 110, 90, 10, 96.25), (95, 95, 90, 8.75, 95),
              (90, 90, 90, 3.75, 90), (100, 100, 90, 13.75, 100)]
    expected = [f"{v:g}" for row in table1 + table2 for v in row]
    assert cells == expected
    assert len(list((out / "_images").glob("*.png"))) >= 2
    api = (out / "api.html").read_text()
    for name in ("match_sky", "SkyResult", "SkyStat", "sky_statistic", "write_results"):
        assert name in api
