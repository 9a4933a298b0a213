"""Association files: JWST-style JSON lists of the images to match and their groups.

`read_association` (public through `skyeq.io`) reads one into an `Association`: the
science members (`_science_member`), with relative file names resolved against the
association's directory, and their ``group_id``. Imports `skyeq._fits` only.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

from ._fits import _require_file

#: The logger of the public file face `skyeq.io`: records keep the name users configure.
log = logging.getLogger("skyeq.io")


@dataclass(frozen=True)
class Association:
    """The science members of an association file.

    Parameters
    ----------
    path : pathlib.Path
        The association file.
    members : list of pathlib.Path
        The science members' files (relative names resolved against the directory of
        the association file), in file order.
    groups : list
        The ``group_id`` of every member, or None for a member without one.
    """

    path: Path
    members: list[Path]
    groups: list[Any]


def _science_member(
    member: Any, where: str, folder: Path, bad: Callable[[str], ValueError]
) -> tuple[Path, Any] | None:
    """Return ``(file, group_id)`` of a science member of an association, else None.

    A member without ``exptype`` counts as science; a relative ``expname`` is relative
    to ``folder``. ``bad(why)`` makes the error for a malformed member.
    """
    if not isinstance(member, dict):
        raise bad(f"{where} is not a JSON object")
    exptype = member.get("exptype", "science")
    if not isinstance(exptype, str):
        raise bad(f"{where}.exptype is not a string")
    if exptype.strip().lower() != "science":
        return None
    expname = member.get("expname")
    if not isinstance(expname, str) or not expname.strip():
        raise bad(f"{where} has no 'expname' (a file name)")
    file = Path(expname.strip())
    if not file.is_absolute():
        file = folder / file
    gid = member.get("group_id")
    if isinstance(gid, bool) or not (gid is None or isinstance(gid, str | int)):
        raise bad(f"{where}.group_id must be a string or an integer, got {gid!r}")
    return file, gid


def read_association(path: str | PathLike) -> Association:
    """Read a JWST-style association (JSON) file.

    The members are ``products[*].members[*]``; each has an ``expname`` (a file name,
    relative to the directory of the association file unless absolute), an optional
    ``exptype`` (only ``science`` members are used; a member without one counts as
    science) and an optional ``group_id`` (members sharing a ``group_id`` share one
    sky).

    Parameters
    ----------
    path : str or path-like
        The association file.

    Returns
    -------
    Association
        The science members and their group ids.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file is not JSON, lacks ``products`` or ``members``, a member lacks a
        usable ``expname``, a ``group_id`` is not a string or an integer, a member is
        listed twice, or there is no science member. Every message names the file.
    """
    path = Path(path)
    _require_file(path, "association file")
    try:
        with path.open(encoding="utf-8") as fh:
            asn = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"association {path} is not valid JSON: {err}") from None

    def bad(why: str) -> ValueError:
        return ValueError(f"malformed association {path}: {why}")

    if not isinstance(asn, dict):
        raise bad("the top level is not a JSON object")
    products = asn.get("products")
    if not isinstance(products, list) or not products:
        raise bad("'products' is missing or not a non-empty list")
    members: list[Path] = []
    groups: list[Any] = []
    seen: dict[Path, str] = {}
    for p, product in enumerate(products):
        if not isinstance(product, dict) or not isinstance(product.get("members"), list):
            raise bad(f"products[{p}] has no 'members' list")
        for m, member in enumerate(product["members"]):
            where = f"products[{p}].members[{m}]"
            science = _science_member(member, where, path.parent, bad)
            if science is None:
                continue
            file, gid = science
            key = Path(os.path.normpath(file.absolute()))
            if key in seen:
                raise bad(f"{where}: {member['expname']!r} is already listed as {seen[key]}")
            seen[key] = where
            members.append(file)
            groups.append(gid)
    if not members:
        raise bad("no science member")
    log.debug("association %s: %d science members", path, len(members))
    return Association(path, members, groups)
