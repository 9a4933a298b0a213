"""Sphinx configuration of the skyeq documentation.

Build with ``python -m sphinx -W -b html docs <outdir>``. Everything shown as a number or
a figure is computed at build time: the documentation tables are written by
`_write_generated` into ``docs/_generated/`` (not committed) and the figures come from
matplotlib's ``plot`` directive.
"""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import skyeq
import skyeq.synthetic

HERE = Path(__file__).parent
GENERATED = HERE / "_generated"

project = "skyeq"
author = "The skyeq developers"
copyright = "The skyeq developers"
release = skyeq.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "numpydoc",
    "matplotlib.sphinxext.plot_directive",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "_generated/*.md"]
myst_heading_anchors = 3
numpydoc_show_class_members = False
numpydoc_xref_param_type = False
default_role = "py:obj"
nitpicky = False
html_theme = "alabaster"
plot_include_source = True
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 80)]
plot_rcparams = {"figure.max_open_warning": 0}

TABLE1_SKY = [100, 120, 105, 110, 105, 115]
TABLE2_SKY = [100, 120, 105, 110, 95, 90, 100]
METHODS = ("local", "global", "match", "global+match")


def _table(skies, layout) -> str:
    """Return a markdown table of every method run on `synthetic.constant_mosaic`."""
    m = skyeq.synthetic.constant_mosaic(skies, layout=layout)
    # Table 2's mosaics are disjoint on purpose (the page says so): its "disconnected
    # components" warnings would be stray lines in the build log, so they are held back
    # here and the number of components checked instead.
    log = logging.getLogger("skyeq")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        res = {meth: skyeq.match_sky(m.data, m.wcs, method=meth) for meth in METHODS}
    finally:
        log.setLevel(level)
    parts = 1 if isinstance(layout, tuple) else len(layout)
    if len(res["match"].components) != parts:
        raise RuntimeError(f"expected {parts} connected component(s) for layout {layout}")
    lines = ["| Sky | Local | Global | Match | Global+Match |", "|---|---|---|---|---|"]
    for k, sky in enumerate(skies):
        cells = [f"{sky:g}"] + [f"{res[meth].sky[k] + 0.0:g}" for meth in METHODS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _write_generated() -> None:
    """Write the code-generated pages' pieces into ``docs/_generated``."""
    GENERATED.mkdir(exist_ok=True)
    (GENERATED / "table1.md").write_text(_table(TABLE1_SKY, (2, 3)))
    (GENERATED / "table2.md").write_text(_table(TABLE2_SKY, [(2, 2), (1, 3)]))
    readme = HERE.parent / "benchmarks" / "README.md"
    if readme.exists():
        text = "```{include} ../benchmarks/README.md\n:heading-offset: 1\n```\n"
    else:
        text = ("The benchmarks are run with `python -m benchmarks` from the source tree "
                "(`pip install \".[bench]\"` first); see the `benchmarks/` folder.\n")
    (GENERATED / "performance.md").write_text(text)


_write_generated()
