"""The skylist of ``method="user"``: the file format and the name lookup.

A skylist is a two-column text file, image name and sky value per line (`read_skylist`),
or a mapping of the same. An image's name is looked up whole, then by file stem, then
by file stem without one JWST suffix (``_cal``, ``_crf``, ``-bsub``, ...), as the JWST
step does, so that a skylist written for the ``_cal`` files serves their ``_crf``
successors (`user_skies`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path

import numpy as np

__all__ = ["read_skylist", "user_skies"]


def read_skylist(path: str | PathLike) -> dict[str, float]:
    """Read a two-column skylist file: image name and sky value per line.

    Columns are separated by white space; ``#`` starts a comment; blank lines are
    skipped.

    Parameters
    ----------
    path : str or path-like
        The file.

    Returns
    -------
    dict
        Image name -> sky value, in file order.

    Raises
    ------
    ValueError
        For text that is not UTF-8, a line without exactly two columns, a value that
        is not a finite number, or a name given twice; each message names the file and
        the line.
    """
    path = Path(path)
    out: dict[str, float] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text ({err.reason})") from None
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        cols = line.split()
        if len(cols) != 2:
            raise ValueError(
                f"{path}:{lineno}: expected 2 columns (name sky), got {len(cols)}"
            )
        name, word = cols
        try:
            value = float(word)
        except ValueError:
            raise ValueError(f"{path}:{lineno}: sky value {word!r} is not a number") from None
        if not math.isfinite(value):
            raise ValueError(f"{path}:{lineno}: sky value {word!r} is not finite")
        if name in out:
            raise ValueError(f"{path}:{lineno}: image {name!r} is listed twice")
        out[name] = value
    return out


#: JWST pipeline product and step suffixes that a skylist name may differ by (the
#: JWST step compares names with one such suffix removed: a skylist written for the
#: ``_cal`` files applies to their ``_crf`` successors).
_JWST_SUFFIXES = frozenset({
    "uncal", "rate", "rateints", "cal", "calints", "crf", "crfints", "bsub", "bsubints",
    "i2d", "skymatch", "skymatchstep", "tweakreg", "tweakregstep", "outlierdetection",
    "outlierdetectionstep", "resample", "resamplestep",
})


def _file_stem(name: str) -> str:
    """Return the file name without directories and extension."""
    return Path(name).stem


def _jwst_root(name: str) -> str:
    """Return the file stem without one trailing JWST suffix (``_cal``, ``-bsub``, ...)."""
    stem = _file_stem(name)
    for sep in ("_", "-"):
        root, found, suffix = stem.rpartition(sep)
        if found and root and suffix.lower() in _JWST_SUFFIXES:
            return root
    return stem


def _checked_mapping(skylist: Mapping[str, float]) -> dict[str, float]:
    """Check a skylist given as a mapping as a file is checked; return name -> float."""
    out: dict[str, float] = {}
    for name, value in skylist.items():
        if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
            raise ValueError(f"skylist entry {name!r}: sky value {value!r} is not a number")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(
                f"skylist entry {name!r}: sky value {value!r} is not a number"
            ) from None
        if not math.isfinite(number):
            raise ValueError(f"skylist entry {name!r}: sky value {value!r} is not finite")
        out[str(name)] = number
    return out


def user_skies(
    skylist: str | PathLike | Mapping[str, float], names: Sequence[str] | None, n: int
) -> np.ndarray:
    """Sky per image from a skylist file or mapping (name -> value).

    An image's name is looked up whole, then by file stem, then by file stem without a
    JWST suffix (the rule of the JWST step); an ambiguous lookup is an error.
    """
    if names is None:
        raise ValueError("method 'user' needs image names (names=...) to look up the skylist")
    table = _checked_mapping(skylist) if isinstance(skylist, Mapping) else read_skylist(skylist)
    if len(table) != n:
        raise ValueError(f"the skylist has {len(table)} entries for {n} images")
    index: list[dict[str, list[str]]] = []
    for key_of in (_file_stem, _jwst_root):
        by_key: dict[str, list[str]] = {}
        for entry in table:
            by_key.setdefault(key_of(str(entry)), []).append(entry)
        index.append(by_key)
    out = np.empty(n)
    for k, name in enumerate(names):
        if name in table:
            out[k] = float(table[name])
            continue
        hits: list[str] = []
        for key_of, by_key in zip((_file_stem, _jwst_root), index, strict=True):
            hits = by_key.get(key_of(str(name)), [])
            if hits:
                break
        if not hits:
            raise ValueError(f"image {name!r} is not in the skylist")
        if len(hits) > 1:
            raise ValueError(f"image {name!r} is in the skylist more than once: {hits}")
        out[k] = float(table[hits[0]])
    return out
