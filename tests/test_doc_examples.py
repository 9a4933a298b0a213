"""Every Python example of the README and the docs runs as written (so they cannot rot).

The ``.. plot::`` examples run in the documentation build (test_docs.py); these are the
plain code blocks.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _blocks() -> list[tuple[str, int, str]]:
    """``(file, line, code)`` of every fenced ```python block."""
    found = []
    for path in SOURCES:
        text = path.read_text()
        for m in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
            line = text.count("\n", 0, m.start()) + 1
            found.append((path.relative_to(ROOT).as_posix(), line, m.group(1)))
    return found


BLOCKS = _blocks()


def test_the_examples_were_found():
    assert {f for f, _, _ in BLOCKS} >= {"README.md", "docs/index.md"}


@pytest.mark.parametrize(("source", "line", "code"), BLOCKS,
                         ids=[f"{f}:{n}" for f, n, _ in BLOCKS])
def test_example_runs(source, line, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, f"{source}:{line}", "exec"), namespace)  # our own docs
    res = namespace.get("res")
    if res is not None and "keywords(0)" in code:
        # what the comments promise
        assert set(res.keywords(0)) == {"BKGLEVEL", "BKGMETH", "BKGSUB"}
        assert res.keywords(0)["BKGMETH"] == "match" and res.keywords(0)["BKGSUB"] is False
        assert res.sky.min() == 0.0
