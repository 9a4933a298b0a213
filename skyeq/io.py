"""Files in and out: FITS images, JWST-style associations, skylists, results.

Reading gives plain arrays and an astropy WCS per image, which then go through the
ordinary library call `skyeq.match_sky`: matching files gives exactly the numbers that
matching the same arrays gives. Writing puts the background keywords (BKGLEVEL,
BKGMETH, BKGSUB) into the SCI and primary headers, and the sky-subtracted data into the
SCI extension when the sky was subtracted. Every file is written to a temporary file in
its own directory, flushed to disk and then renamed over the target (an atomic
replacement on POSIX and Windows): a run that is interrupted leaves every file either
as it was or completely rewritten, never half-written.

Re-running on images that already carry background keywords follows the JWST step
(algorithm_spec section 7): a BKGLEVEL without a BKGSUB, a BKGSUB without a BKGLEVEL,
or a BKGSUB different from the requested ``subtract`` is an error, detected after
reading and before anything is computed or written. With ``subtract=True`` on images
whose sky was already subtracted, the new sky is measured on the subtracted data and
added to the previous BKGLEVEL (the level is cumulative; the data lose only the new
part); with ``subtract=False`` the previous level is replaced.

JWST products (FITS files with an ``ASDF`` extension, such as ``*_cal.fits``) are read
through `stdatamodels` when it is installed (``pip install "skyeq[jwst]"``): their WCS is
then the gwcs of ``meta.wcs``, with the full distortion model, instead of the FITS
approximation in the SCI header, and their results are written back through the
datamodel, so that ``meta.background``, ``meta.cal_step.skymatch``, the FITS keywords
and the embedded ASDF tree agree. Images of one JWST exposure share one sky, as in the
JWST step: the exposure is ``meta.group_id``, else the observation keywords (PROGRAM,
OBSERVTN, VISIT, VISITGRP, SEQ_ID, ACT_ID, EXPOSURE) of the primary header; an
association member's ``group_id`` takes precedence.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import numbers
import os
import stat
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from . import SkyResult, _dispatch, match_sky
from ._skylist import read_skylist

__all__ = [
    "Association",
    "FitsImage",
    "collect_inputs",
    "match_files",
    "output_paths",
    "read_association",
    "read_image",
    "read_skylist",
    "write_results",
    "write_table",
]

log = logging.getLogger(__name__)

#: Comments of the background keywords, as written into the headers.
_KEYWORD_COMMENTS = {
    "BKGLEVEL": "sky background level (data units)",
    "BKGMETH": "sky background method",
    "BKGSUB": "sky background subtracted from the data",
}

#: match_sky arguments that `match_files` fills in from the files itself.
_FROM_FILES = ("data", "wcs", "dq", "names", "inplace")

_IMAGE_HDUS = (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)

#: Primary-header keywords of a JWST exposure, in the order they form its group id.
_EXPOSURE_KEYWORDS = ("PROGRAM", "OBSERVTN", "VISIT", "VISITGRP", "SEQ_ID", "ACT_ID",
                      "EXPOSURE")

#: Extension name of the ASDF tree that marks a JWST datamodel file.
_ASDF_HDU = "ASDF"

_missing_stdatamodels_logged = False


# --------------------------------------------------------------------------- reading


@dataclass(eq=False, repr=False)
class FitsImage:
    """One image read from a FITS file.

    Parameters
    ----------
    path : pathlib.Path
        The file.
    data : numpy.ndarray
        The 2-D science array, in native byte order (floating-point data keep their
        precision; integer data become float64).
    wcs : astropy.wcs.WCS or gwcs.WCS
        The celestial WCS of the science array: the gwcs of a JWST datamodel file read
        through stdatamodels, else the astropy WCS of the SCI header (two axes,
        ``pixel_shape`` set).
    dq : numpy.ndarray or None
        The DQ array (native byte order), or None when the file has no DQ extension.
    sci : int
        Index of the HDU the science array came from (0 for a plain single-HDU file).
    bkglevel : float or None
        BKGLEVEL already in the file, or None.
    bkgsub : bool or None
        BKGSUB already in the file, or None.
    bkgmeth : str or None
        BKGMETH already in the file, or None.
    exposure : str or None
        The JWST exposure the image belongs to (images of one exposure share one sky):
        ``meta.group_id`` of a datamodel, else built from the observation keywords
        PROGRAM, OBSERVTN, VISIT, VISITGRP, SEQ_ID, ACT_ID and EXPOSURE of the primary
        header as the JWST pipeline builds it; None when the file has neither.
    datamodel : bool
        Whether the file was read through stdatamodels (a JWST datamodel file).
    """

    path: Path
    data: np.ndarray
    wcs: Any
    dq: np.ndarray | None
    sci: int
    bkglevel: float | None = None
    bkgsub: bool | None = None
    bkgmeth: str | None = None
    exposure: str | None = None
    datamodel: bool = False

    def __repr__(self) -> str:
        return (
            f"<FitsImage {str(self.path)!r} shape={self.data.shape} dtype={self.data.dtype} "
            f"hdu={self.sci} dq={self.dq is not None} BKGLEVEL={self.bkglevel} "
            f"BKGSUB={self.bkgsub} exposure={self.exposure!r} datamodel={self.datamodel}>"
        )


def _require_file(path: Path, what: str, where: str = "") -> None:
    """Raise FileNotFoundError (or IsADirectoryError) unless ``path`` is a file."""
    if not path.exists():
        raise FileNotFoundError(f"{what} {path}{where} does not exist")
    if not path.is_file():
        raise IsADirectoryError(f"{what} {path}{where} is not a file")


def _find_sci(hdul: fits.HDUList, path: Path) -> int:
    """Index of the science HDU: the SCI extension, else an image in the primary HDU."""
    sci = [k for k, h in enumerate(hdul) if isinstance(h, _IMAGE_HDUS) and h.name == "SCI"]
    if len(sci) > 1:
        raise ValueError(
            f"{path} has {len(sci)} SCI extensions; skyeq reads one image per file"
        )
    if sci:
        return sci[0]
    if int(hdul[0].header.get("NAXIS", 0)) > 0:
        return 0
    raise ValueError(f"{path} has no SCI extension and no image in its primary HDU")


def _native(array: np.ndarray, *, to_float: bool) -> np.ndarray:
    """Return a native-byte-order copy (integers become float64 when ``to_float``)."""
    dtype = array.dtype
    if to_float and dtype.kind in "biu":
        dtype = np.dtype(np.float64)
    return np.array(array, dtype=dtype.newbyteorder("="), order="C")


def _read_wcs(header: fits.Header, hdul: fits.HDUList, path: Path, shape: tuple) -> WCS:
    """Celestial astropy WCS of a header; ValueError naming the file if there is none."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            wcs = WCS(header, fobj=hdul)
        except Exception as err:
            raise ValueError(f"cannot read the WCS of image {path}: {err}") from err
    for w in caught:
        level = logging.DEBUG if issubclass(w.category, FITSFixedWarning) else logging.WARNING
        log.log(level, "%s: WCS: %s", path, w.message)
    if not wcs.has_celestial:
        raise ValueError(f"image {path} has no celestial WCS")
    if wcs.naxis != 2 or sorted((wcs.wcs.lng, wcs.wcs.lat)) != [0, 1]:
        wcs = wcs.celestial
        if wcs.naxis != 2:
            raise ValueError(f"image {path} has no celestial WCS on its two pixel axes")
    wcs.pixel_shape = (int(shape[1]), int(shape[0]))
    return wcs


def _datamodels(hdul: fits.HDUList, path: Path) -> Any:
    """Return ``stdatamodels.jwst.datamodels`` for a JWST datamodel file, else None.

    A datamodel file is a FITS file with an ``ASDF`` extension. Without stdatamodels
    installed such a file is read (and written) as plain FITS; that is logged once, as
    a warning, since its WCS then is the SCI header's approximation of the gwcs.
    """
    global _missing_stdatamodels_logged
    if _ASDF_HDU not in hdul:
        return None
    try:
        from stdatamodels.jwst import datamodels
    except ImportError:
        if not _missing_stdatamodels_logged:
            _missing_stdatamodels_logged = True
            log.warning(
                "%s is a JWST datamodel file but stdatamodels is not installed: its WCS "
                "is read from the SCI header, not from its gwcs (pip install "
                "\"skyeq[jwst]\" to use the gwcs)", path,
            )
        return None
    return datamodels


def _open_datamodel(datamodels: Any, path: Path) -> Any:
    """Open ``path`` with stdatamodels; any failure is a ValueError naming the file."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = datamodels.open(path)
        except Exception as err:
            raise ValueError(f"cannot read {path} as a JWST datamodel: {err}") from err
    for w in caught:  # e.g. a file that does not validate against its schema
        log.warning("%s: stdatamodels: %s", path, w.message)
    return model


def _datamodel_wcs(datamodels: Any, path: Path, shape: tuple) -> tuple[Any, str | None]:
    """Return the gwcs (None if the model has none) and ``meta.group_id`` of a datamodel."""
    with _open_datamodel(datamodels, path) as model:
        wcs = model.meta.wcs
        group = getattr(model.meta, "group_id", None)
    if wcs is not None:
        try:
            ok = wcs.pixel_n_dim == 2 and wcs.world_n_dim == 2 and all(
                str(t).startswith("pos.") for t in wcs.world_axis_physical_types
            )
        except Exception:  # a gwcs without frames cannot tell its axes
            ok = False
        if not ok:
            raise ValueError(
                f"the gwcs of {path} does not map the image to two celestial axes"
            )
        if wcs.pixel_shape is None:
            wcs.pixel_shape = (int(shape[1]), int(shape[0]))
    return wcs, None if group is None else str(group)


def _exposure_id(header: fits.Header) -> str | None:
    """Return the JWST group id of an exposure from its primary header, or None.

    Built from PROGRAM, OBSERVTN, VISIT, VISITGRP, SEQ_ID, ACT_ID and EXPOSURE the way
    the JWST pipeline builds ``group_id``; None unless all seven are present.
    """
    values = []
    for key in _EXPOSURE_KEYWORDS:
        value = header.get(key)
        if value is None or isinstance(value, fits.card.Undefined) or str(value).strip() == "":
            return None
        values.append(str(value).strip())
    prog, obs, visit, vgroup, seq, act, exp = values
    return f"jw{prog}{obs}{visit}_{vgroup}{seq}{act}_{exp}"


def _keyword(headers: Sequence[fits.Header], key: str) -> Any:
    """Return ``key`` from the first header holding it; None if none holds it.

    Raises ValueError if two headers hold different values.
    """
    values = []
    for hdr in headers:
        if key in hdr:
            value = hdr[key]
            values.append(None if isinstance(value, fits.card.Undefined) else value)
    if not values:
        return None
    if any(v != values[0] for v in values[1:]):
        raise ValueError(f"{key} differs between the headers ({values[0]!r} vs {values[1]!r})")
    return values[0]


def _background_keywords(
    headers: Sequence[fits.Header], path: Path
) -> tuple[float | None, bool | None, str | None]:
    """BKGLEVEL, BKGSUB and BKGMETH of a file, checked for type."""
    try:
        level = _keyword(headers, "BKGLEVEL")
        sub = _keyword(headers, "BKGSUB")
        meth = _keyword(headers, "BKGMETH")
    except ValueError as err:
        raise ValueError(f"image {path}: {err}") from None
    if level is not None:
        if isinstance(level, bool) or not isinstance(level, numbers.Real):
            raise ValueError(f"image {path}: BKGLEVEL = {level!r} is not a number")
        level = float(level)
        if not math.isfinite(level):
            raise ValueError(f"image {path}: BKGLEVEL = {level!r} is not finite")
    if sub is not None and not isinstance(sub, bool):
        raise ValueError(f"image {path}: BKGSUB = {sub!r} is not a FITS logical (T or F)")
    return level, sub, None if meth is None else str(meth)


class _FileArray:
    """One 2-D array of a FITS file, read when converted with `numpy.asarray`.

    What `match_files` gives `skyeq.match_sky`, so that an image is in memory only
    while its measurement task runs (DESIGN.md: memory bounded by one group, not by
    the mosaic). Each conversion reads the HDU again (in native byte order) and
    refuses a file that changed since it was scanned: a result
    must never mix an image with its rewritten successor.
    """

    __slots__ = ("hdu", "path", "shape", "stamp", "to_float", "what")

    def __init__(self, path: Path, hdu: int, shape: tuple[int, int], *, to_float: bool,
                 what: str) -> None:
        self.path = path.absolute()  # a task may run in another directory or process
        self.hdu = hdu
        self.shape = shape
        self.to_float = to_float
        self.what = what
        self.stamp = _stamp(path)

    @property
    def ndim(self) -> int:
        """Number of dimensions (2)."""
        return len(self.shape)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        if _stamp(self.path) != self.stamp:
            raise ValueError(
                f"{self.path} has changed since it was read; read it again (e.g. after "
                "writing results in place, call match_files anew)"
            )
        try:
            with fits.open(self.path, memmap=False) as hdul:  # reads this HDU only
                raw = hdul[self.hdu].data
                if raw is None or raw.shape != self.shape:
                    raise ValueError(f"shape {None if raw is None else raw.shape}, expected "
                                     f"{self.shape}")
                arr = _native(raw, to_float=self.to_float)
                del raw
        except (OSError, ValueError, TypeError) as err:
            raise ValueError(f"cannot read the {self.what} of {self.path}: {err}") from err
        return arr if dtype is None else arr.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"<{self.what} of {str(self.path)!r}, HDU {self.hdu}, shape {self.shape}>"


def _stamp(path: Path) -> tuple[int, int, int, int]:
    """Identity of a file's content as the file system sees it (inode, size, times)."""
    st = path.stat()
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def read_image(path: str | PathLike) -> FitsImage:
    """Read the science image, its DQ array and its celestial WCS from a FITS file.

    The science array is the ``SCI`` extension when there is one (JWST/HST layout),
    else the image in the primary HDU. The DQ array is the ``DQ`` extension, if any.
    The WCS is read from the science header (SIP and lookup-table distortions
    included) and reduced to its two celestial axes; for a JWST datamodel file (one
    with an ``ASDF`` extension) read with stdatamodels installed, it is the gwcs of
    ``meta.wcs`` instead (the header's WCS only if the model has no gwcs).

    Parameters
    ----------
    path : str or path-like
        The FITS file.

    Returns
    -------
    FitsImage
        Native-byte-order arrays (FITS stores big-endian numbers; the numba kernels
        want native ones), the WCS, the background keywords already present and the
        JWST exposure (group id) of the image, if any.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file is not FITS, has no 2-D science image (or several SCI extensions),
        a DQ array of another shape, no usable celestial WCS (or a gwcs whose outputs
        are not two celestial axes), or background keywords of the wrong type. Every
        message names the file.
    """
    return _read_image(Path(path), lazy=False)


def _read_image(path: Path, *, lazy: bool) -> FitsImage:
    """`read_image`; with ``lazy`` the arrays are `_FileArray` objects, not read yet."""
    _require_file(path, "image file")
    try:
        hdul = fits.open(path, memmap=False)
    except OSError as err:
        raise ValueError(f"cannot read {path} as a FITS file: {err}") from err
    with hdul:
        k = _find_sci(hdul, path)
        hdu = hdul[k]
        shape = tuple(int(n) for n in hdu.shape)  # from the header: no data read
        if len(shape) != 2:
            raise ValueError(
                f"the science array of {path} is not a 2-D image (ndim={len(shape)})"
            )
        data: Any = (_FileArray(path, k, shape, to_float=True, what="science array")
                     if lazy else _native(hdu.data, to_float=True))
        datamodels = _datamodels(hdul, path)
        wcs = exposure = None
        if datamodels is not None:
            wcs, exposure = _datamodel_wcs(datamodels, path, shape)
            if wcs is None:
                log.debug("%s: the datamodel has no meta.wcs; using the SCI header", path)
        if wcs is None:
            wcs = _read_wcs(hdu.header, hdul, path, shape)
        dq: Any = None
        dq_at = [j for j, h in enumerate(hdul) if isinstance(h, _IMAGE_HDUS) and h.name == "DQ"]
        if dq_at and int(hdul[dq_at[0]].header.get("NAXIS", 0)) > 0:
            dq_shape = tuple(int(n) for n in hdul[dq_at[0]].shape)
            if dq_shape != shape:
                raise ValueError(
                    f"the DQ array of {path} has shape {dq_shape}, the science array {shape}"
                )
            dq = (_FileArray(path, dq_at[0], shape, to_float=False, what="DQ array")
                  if lazy else _native(hdul[dq_at[0]].data, to_float=False))
        headers = [hdu.header] if k == 0 else [hdu.header, hdul[0].header]
        level, sub, meth = _background_keywords(headers, path)
        if exposure is None:
            exposure = _exposure_id(hdul[0].header)
    log.debug("read %s: HDU %d, shape %s, DQ %s, exposure %s, %s", path, k, shape,
              dq is not None, exposure, type(wcs).__module__)
    return FitsImage(path, data, wcs, dq, k, level, sub, meth, exposure,
                     datamodels is not None)


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


def collect_inputs(
    inputs: str | PathLike | Sequence[str | PathLike],
) -> tuple[list[Path], list[str] | None]:
    """Expand FITS paths and association files (``*.json``) into images and groups.

    Parameters
    ----------
    inputs : path or sequence of paths
        FITS files and/or association files (see `read_association`).

    Returns
    -------
    paths : list of pathlib.Path
        Every image file, in input order (association members in file order).
    groups : list of str or None
        The group id of every image as a string, or None when no association member
        has a ``group_id``. Images given directly, and members without a
        ``group_id``, are each their own group (a generated id that no other image
        shares). These are the associations' groups only: `match_files` also groups
        the images of one JWST exposure, which needs the files read.

    Raises
    ------
    FileNotFoundError
        If an input or an association member does not exist (checked for all before
        anything is read).
    ValueError
        If an association is malformed, an image is given twice, or there is none.
    """
    paths, gids = _expand_inputs(inputs)
    return paths, _group_labels(paths, gids)


def _expand_inputs(
    inputs: str | PathLike | Sequence[str | PathLike],
) -> tuple[list[Path], list[Any]]:
    """Return the image files of `collect_inputs` and their association group ids."""
    if isinstance(inputs, str | PathLike):
        inputs = [inputs]
    paths: list[Path] = []
    gids: list[Any] = []
    origin: list[str] = []
    for item in inputs:
        item = Path(item)
        if item.suffix.lower() == ".json":
            asn = read_association(item)
            paths += asn.members
            gids += asn.groups
            origin += [f" (listed in {item})"] * len(asn.members)
        else:
            paths.append(item)
            gids.append(None)
            origin.append("")
    if not paths:
        raise ValueError("no input image")
    seen: dict[Path, Path] = {}
    for p, where in zip(paths, origin, strict=True):
        _require_file(p, "image file", where)
        key = p.resolve()
        if key in seen:
            raise ValueError(f"image {p} is given twice (also as {seen[key]})")
        seen[key] = p
    return paths, gids


def _group_labels(paths: Sequence[Path], gids: Sequence[Any]) -> list[str] | None:
    """Group ids as strings, a unique label for each None; None if all are None."""
    if all(g is None for g in gids):
        return None
    used = {str(g) for g in gids if g is not None}
    groups = []
    for p, g in zip(paths, gids, strict=True):
        if g is None:
            label = f"<{p}>"
            while label in used:
                label += "'"
            used.add(label)
            groups.append(label)
        else:
            groups.append(str(g))
    return groups


def _previous_levels(images: Sequence[FitsImage], subtract: bool) -> np.ndarray:
    """Apply the re-run rules; return the level each image's new sky starts from.

    algorithm_spec section 7 (the JWST step): BKGLEVEL without BKGSUB, BKGSUB without
    BKGLEVEL, and BKGSUB != ``subtract`` are errors. With ``subtract`` the sky is
    cumulative (starts from the old BKGLEVEL); without, the old level is replaced.
    """
    out = np.zeros(len(images))
    for k, img in enumerate(images):
        if img.bkgsub is None:
            if img.bkglevel is not None:
                raise ValueError(
                    f"image {img.path} has BKGLEVEL = {img.bkglevel!r} but no BKGSUB: "
                    "cannot tell whether that sky was subtracted"
                )
            continue
        if img.bkglevel is None:
            raise ValueError(
                f"image {img.path} has BKGSUB = {'T' if img.bkgsub else 'F'} but no BKGLEVEL"
            )
        if img.bkgsub != subtract:
            if img.bkgsub:
                why = ("its sky was already subtracted (BKGSUB = T): it can only be matched "
                       "again with subtraction")
            else:
                why = ("it was matched before without subtraction (BKGSUB = F): it can only "
                       "be matched again without subtraction")
            raise ValueError(
                f"subtract={subtract} is inconsistent with the background keywords of image "
                f"{img.path}; {why}"
            )
        if subtract:
            out[k] = img.bkglevel
    return out


def match_files(
    inputs: str | PathLike | Sequence[str | PathLike],
    *,
    subtract: bool = False,
    **kwargs: Any,
) -> SkyResult:
    """Read FITS images (or association files) and match their skies.

    The arrays, WCS and DQ arrays that `read_image` reads go to `skyeq.match_sky`
    unchanged, so the skies are exactly those of ``match_sky`` on the same arrays. Only
    the headers and WCS are read up front: every image (and DQ array) is read inside
    its measurement task and released after it, so memory holds one image group per
    running task whatever the number of files.

    Parameters
    ----------
    inputs : path or sequence of paths
        FITS files and/or association files (names ending in ``.json``, see
        `read_association`). Images share one sky when they share a group id: an
        association member's ``group_id``, else the JWST exposure of the file
        (`FitsImage.exposure`: the detectors of one JWST exposure share one sky, as in
        the JWST step); other images are matched on their own.
    subtract : bool, optional
        Subtract the sky. Default False. ``result.data`` then holds, per image, an
        array-like that reads the file and subtracts its sky when converted with
        `numpy.asarray` (`write_results` does that one file at a time); it refuses to
        read a file that has changed since, e.g. after an in-place write.
    **kwargs
        Any other argument of `skyeq.match_sky` (``method``, ``stat``, ``match_down``,
        ``skylist``, ``stepsize``, ``executor``, ``progress``, ``mask``, ``dqbits``,
        ``groups`` to override the groups of the associations and exposures, e.g.
        ``groups=None`` to give every image its own sky), except ``data``, ``wcs``,
        ``dq``, ``names`` and ``inplace``, which come from the files.

    Returns
    -------
    SkyResult
        ``names`` are the image paths (as strings) and ``groups`` the group ids (None
        when neither an association nor a JWST exposure groups the images). When
        re-running with
        ``subtract=True`` on images whose sky was already subtracted, ``sky`` is the
        cumulative level (the previous BKGLEVEL plus the sky measured now on the
        subtracted data); ``local`` and ``pairs`` describe the data as read.

    Raises
    ------
    FileNotFoundError
        If an input file does not exist.
    ValueError
        For unreadable or malformed inputs (see `read_image`, `read_association`),
        background keywords that break the re-run rules (BKGLEVEL without BKGSUB,
        BKGSUB without BKGLEVEL, BKGSUB different from ``subtract``), or anything
        `skyeq.match_sky` rejects.
    TypeError
        If ``kwargs`` holds one of the arguments taken from the files.
    """
    taken = [k for k in _FROM_FILES if k in kwargs]
    if taken:
        raise TypeError(f"match_files takes {', '.join(taken)} from the files themselves")
    paths, gids = _expand_inputs(inputs)
    images = [_read_image(p, lazy=True) for p in paths]  # headers and WCS only
    if "groups" in kwargs:
        groups = kwargs.pop("groups")
    else:  # an association's group_id first, then the JWST exposure of the file
        groups = _group_labels(
            paths, [img.exposure if g is None else g for g, img in zip(gids, images, strict=True)]
        )
    previous = _previous_levels(images, bool(subtract))
    dq = [img.dq for img in images]
    result = match_sky(
        [img.data for img in images],
        [img.wcs for img in images],
        groups=groups,
        subtract=subtract,
        dq=dq if any(d is not None for d in dq) else None,
        names=[str(p) for p in paths],
        **kwargs,
    )
    if np.any(previous != 0.0):
        for k in np.flatnonzero(previous != 0.0):
            log.info("%s: previous sky %.6g already subtracted; new level %.6g", paths[k],
                     previous[k], previous[k] + result.sky[k])
        result = dataclasses.replace(result, sky=result.sky + previous)
    return result


# --------------------------------------------------------------------------- writing


def _new_temp(target: Path) -> Path:
    """Create an empty, uniquely named file beside ``target`` and return its path.

    Created with mode 0o666, so the process umask applies as for any new file (unlike
    `tempfile.mkstemp`, whose 0o600 would need the umask read back, which is not
    thread-safe).
    """
    for _ in range(100):
        tmp = target.parent / f".{target.name}.{os.urandom(6).hex()}.skyeq-tmp"
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"could not create a temporary file beside {target}")


def _atomic_write(target: Path, write: Callable[[Path], None], mode_of: Path | None) -> None:
    """Write ``target`` through a temporary file in its directory and an atomic rename.

    ``write(tmp)`` writes the complete new content to ``tmp``; the file is then flushed
    to disk, given the permissions of the existing target (else of ``mode_of``, else
    the umask default) and renamed over ``target`` with `os.replace` (a symbolic link is
    followed: the file it points to is replaced, the link kept). On any failure the
    temporary file is removed and ``target`` is left as it was.
    """
    target = Path(target).resolve()  # through symbolic links: replace the real file
    tmp = _new_temp(target)
    try:
        write(tmp)
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
        like = target if target.exists() else mode_of
        if like is not None and like.exists():
            os.chmod(tmp, stat.S_IMODE(like.stat().st_mode))
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable (POSIX)
        dirfd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)


def _check_shape(source: Path, data: np.ndarray, shape: tuple) -> None:
    """Raise ValueError unless the subtracted ``data`` have the file's image ``shape``."""
    if data.shape != tuple(shape):
        raise ValueError(
            f"the subtracted data for {source} have shape {data.shape}, the file {shape}"
        )


def _write_datamodel(
    datamodels: Any, source: Path, tmp: Path, name: str, keywords: dict,
    data: np.ndarray | None,
) -> None:
    """Write the datamodel ``source`` with new background metadata (and data) to ``tmp``.

    Sets ``meta.background`` and ``meta.cal_step.skymatch`` (COMPLETE, or SKIPPED when
    the sky was not computed and the background is left as it was), as the JWST step
    does, and ``meta.filename`` to ``name``. Background keywords that an earlier plain
    FITS write left in the SCI header (kept by stdatamodels as ``extra_fits``) are
    updated too, so that the headers never disagree.
    """
    with _open_datamodel(datamodels, source) as model:
        if data is not None:
            _check_shape(source, data, model.data.shape)
            model.data = data
        if keywords:
            model.meta.background.level = keywords["BKGLEVEL"]
            model.meta.background.method = keywords["BKGMETH"]
            model.meta.background.subtracted = keywords["BKGSUB"]
            model.meta.cal_step.skymatch = "COMPLETE"
            try:
                cards = model.extra_fits.SCI.header
            except AttributeError:
                cards = []
            for i, card in enumerate(cards):
                if card[0] in keywords:
                    cards[i] = [card[0], keywords[card[0]], card[2]]
        else:
            model.meta.cal_step.skymatch = "SKIPPED"
        model.meta.filename = name
        with tmp.open("wb") as fh:  # a file object: to_fits leaves meta.filename alone
            model.to_fits(fh)


def _write_fits(
    source: Path, tmp: Path, name: str, keywords: dict, data: np.ndarray | None
) -> None:
    """Write ``source`` with new background keywords (and SCI data) to ``tmp``.

    A JWST datamodel file is written through stdatamodels when it is installed (see
    `_write_datamodel`); ``name`` is the file name of the final target.
    """
    with fits.open(source, memmap=False) as hdul:
        datamodels = _datamodels(hdul, source)
        if datamodels is not None:
            hdul.close()
            _write_datamodel(datamodels, source, tmp, name, keywords, data)
            return
        k = _find_sci(hdul, source)
        sci = hdul[k]
        if data is not None:
            _check_shape(source, data, sci.data.shape)
            sci.data = data
        headers = [sci.header] if k == 0 else [sci.header, hdul[0].header]
        for hdr in headers:
            for key, value in keywords.items():
                hdr[key] = (value, _KEYWORD_COMMENTS[key])
        hdul.writeto(tmp, overwrite=True)


def output_paths(
    paths: Sequence[str | PathLike],
    *,
    output_dir: str | PathLike | None = None,
    in_place: bool = False,
) -> list[Path]:
    """Return the files `write_results` would write, after checking they are safe.

    Nothing is written or created: call it before a long run to fail early.

    Parameters
    ----------
    paths : sequence of path
        The input files, one per image.
    output_dir : path, optional
        The output directory (the outputs keep the input file names).
    in_place : bool, optional
        Rewrite the inputs. Exactly one of ``output_dir`` and ``in_place=True`` must be
        given.

    Returns
    -------
    list of pathlib.Path
        The output file of every image.

    Raises
    ------
    ValueError
        If neither or both destinations are given, two images would go to the same
        file, or (with ``output_dir``) an output would overwrite an input file.
    FileNotFoundError
        If an input file does not exist.
    NotADirectoryError
        If ``output_dir`` exists and is not a directory.
    """
    if (output_dir is None) == (not in_place):
        raise ValueError("give exactly one of output_dir or in_place=True")
    sources = [Path(p) for p in paths]
    for p in sources:
        _require_file(p, "image file")
    if in_place:
        targets = sources
    else:
        out = Path(output_dir)
        if out.exists() and not out.is_dir():
            raise NotADirectoryError(f"output directory {out} is not a directory")
        targets = [out / p.name for p in sources]
    resolved = [t.resolve() for t in targets]
    seen: set[Path] = set()
    for t, r in zip(targets, resolved, strict=True):
        if r in seen:
            raise ValueError(f"two images would be written to the same file {t}")
        seen.add(r)
    if not in_place:
        inputs = {p.resolve() for p in sources}
        inodes = {(st.st_dev, st.st_ino) for st in (p.stat() for p in sources)}
        for t, r in zip(targets, resolved, strict=True):
            st = t.stat() if t.exists() else None
            if r in inputs or (st is not None and (st.st_dev, st.st_ino) in inodes):
                raise ValueError(
                    f"writing {t} would overwrite an input file (use in-place writing to "
                    "rewrite the inputs)"
                )
    return targets


def write_results(
    result: SkyResult,
    paths: Sequence[str | PathLike] | None = None,
    *,
    output_dir: str | PathLike | None = None,
    in_place: bool = False,
    executor: Executor | None = None,
    progress: bool | Callable[[int, int], Any] = False,
) -> list[Path]:
    """Write the background keywords (and subtracted data) of a result into FITS files.

    For every image whose sky is valid, BKGLEVEL, BKGMETH and BKGSUB (`SkyResult.keywords`)
    go into the SCI header and the primary header, and when ``result.subtracted`` the
    SCI data are replaced by ``result.data``. The background keywords of an image whose
    sky is not valid are left as they were (as the JWST step does), and so are its data.
    Every file is replaced atomically (temporary file in the same directory, then
    `os.replace`).

    Parameters
    ----------
    result : SkyResult
        The result of `match_files` on these files (its ``sky`` already includes any
        previous level, see the re-run rules in the module docstring).
    paths : sequence of path, optional
        The input files, one per image. Default: ``result.names``.
    output_dir : path, optional
        Write copies with the same file names into this directory (created if needed).
        Existing files there are replaced, except that an input file is never
        overwritten this way.
    in_place : bool, optional
        Rewrite the input files themselves. Exactly one of ``output_dir`` and
        ``in_place=True`` must be given.
    executor : concurrent.futures.Executor, optional
        Writes the files on it, one task per file (threads suit: reading and writing
        FITS files releases the GIL for the I/O). Default: one after the other.
    progress : bool or callable, optional
        As for `skyeq.match_sky`, over the files.

    Returns
    -------
    list of pathlib.Path
        The files written, in image order.

    Raises
    ------
    ValueError
        If neither or both destinations are given, the paths do not match the result,
        two images would be written to the same file, an output would overwrite an
        input (see `output_paths`), or the subtracted data are missing. These are
        checked before any file is written.
    FileNotFoundError
        If an input file does not exist.
    """
    if paths is None:
        if result.names is None:
            raise ValueError("the result has no names: give the input paths")
        paths = result.names
    sources = [Path(p) for p in paths]
    if len(sources) != len(result):
        raise ValueError(f"{len(sources)} paths for a result of {len(result)} images")
    if result.subtracted and result.data is None:
        raise ValueError("the result says the sky was subtracted but holds no data")
    targets = output_paths(sources, output_dir=output_dir, in_place=in_place)
    if not in_place:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
    tasks = []
    for k, (src, dst) in enumerate(zip(sources, targets, strict=True)):
        keywords = result.keywords(k)
        data = result.data[k] if result.subtracted and keywords else None  # type: ignore[index]
        tasks.append(_WriteTask(src, dst, keywords, data))
    _dispatch.run(_write_one, tasks, executor, progress, phase="writing")
    return targets


@dataclass(frozen=True)
class _WriteTask:
    """One file to write: its source, destination, keywords and subtracted data.

    ``data`` may be an array-like that reads the source and subtracts when converted
    (`match_files` with ``subtract=True``): it is converted inside the task, so a task
    holds one image at a time.
    """

    source: Path
    target: Path
    keywords: dict[str, Any]
    data: Any

    @property
    def label(self) -> str:
        """The file, for error messages."""
        return str(self.target)


def _write_one(task: _WriteTask) -> None:
    """Write one file of `write_results` through the atomic writer."""
    data = None if task.data is None else np.asarray(task.data)
    _atomic_write(
        task.target,
        lambda tmp: _write_fits(task.source, tmp, task.target.name, task.keywords, data),
        task.source,
    )
    if task.keywords:
        log.info("wrote %s: BKGLEVEL = %.6g, BKGSUB = %s", task.target,
                 task.keywords["BKGLEVEL"], task.keywords["BKGSUB"])
    else:
        log.info("wrote %s: sky not computed, background keywords left unchanged",
                 task.target)


def write_table(result: SkyResult, path: str | PathLike) -> Path:
    """Write `SkyResult.to_table` as an ECSV file, atomically.

    Parameters
    ----------
    result : SkyResult
        The result.
    path : path
        The ECSV file; an existing file is replaced.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    path = Path(path)
    table = result.to_table()
    _atomic_write(path, lambda tmp: table.write(tmp, format="ascii.ecsv", overwrite=True), None)
    log.info("wrote the table of %d images to %s", len(result), path)
    return path
