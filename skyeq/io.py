"""Files in and out. For now: the skylist parser of ``method='user'``."""

from __future__ import annotations

import math
from os import PathLike
from pathlib import Path

__all__ = ["read_skylist"]


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
        For a line without exactly two columns, a value that is not a finite number, or
        a name given twice; each message names the file and the line.
    """
    path = Path(path)
    out: dict[str, float] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            cols = line.split()
            if len(cols) != 2:
                raise ValueError(
                    f"{path}:{lineno}: expected 2 columns (name sky), got {len(cols)}"
                )
            name, text = cols
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"{path}:{lineno}: sky value {text!r} is not a number") from None
            if not math.isfinite(value):
                raise ValueError(f"{path}:{lineno}: sky value {text!r} is not finite")
            if name in out:
                raise ValueError(f"{path}:{lineno}: image {name!r} is listed twice")
            out[name] = value
    return out
