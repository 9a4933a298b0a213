"""The FITS layout: science and DQ arrays, their WCS and keywords, in and out.

`_read_image` (behind `skyeq.io.read_image` and `skyeq.io.match_files`) finds the
science and DQ HDUs (`_find_sci`), reads the celestial WCS of the science header
(`_read_wcs`; for a JWST datamodel file the gwcs, through `skyeq._jwst`), the background
keywords already present (`_background_keywords`) and the JWST exposure, and returns a
`FitsImage` whose arrays are read (native byte order) or lazy file-backed `_FileArray`
objects. Every file is checked to be complete first (`_open_fits`): a file cut short (an
interrupted copy or download) is a ValueError naming it, never a numpy reshape error
later. `_write_fits` writes a file with new background keywords (and data) to a
temporary path, for the atomic writer of `skyeq.io`; tile-compressed extensions it does
not change are copied verbatim. Imports `skyeq._jwst` only.
"""

from __future__ import annotations

import importlib
import logging
import math
import numbers
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from ._jwst import _check_shape, _datamodel_wcs, _datamodels, _exposure_id, _write_datamodel

#: The logger of the public file face `skyeq.io`: records keep the name users configure.
log = logging.getLogger("skyeq.io")

#: Comments of the background keywords, as written into the headers.
_KEYWORD_COMMENTS = {
    "BKGLEVEL": "sky background level (data units)",
    "BKGMETH": "sky background method",
    "BKGSUB": "sky background subtracted from the data",
    "BKGERR": "standard error of BKGLEVEL (data units)",
    "BKGSLPX": "sky plane: change per pixel along x",
    "BKGSLPY": "sky plane: change per pixel along y",
}

_IMAGE_HDUS = (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)


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


def _open_fits(path: Path) -> fits.HDUList:
    """Open a FITS file (headers only) after checking that no part of it is missing.

    The warnings astropy gives while reading the headers are logged (as warnings, each
    once) unless the file is refused; a refused file is closed.

    Raises
    ------
    ValueError
        If the file is not FITS or is truncated (see `_check_complete`), naming it.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            hdul = fits.open(path, memmap=False)
        except OSError as err:
            raise ValueError(f"cannot read {path} as a FITS file: {err}") from err
        try:
            _check_complete(hdul, path)
        except BaseException:
            hdul.close()
            raise
    for message in dict.fromkeys(" ".join(str(w.message).split()) for w in caught):
        log.warning("%s: %s", path, message)
    return hdul


def _check_complete(hdul: fits.HDUList, path: Path) -> None:
    """Raise ValueError naming ``path`` if the file is shorter than its headers say.

    Reads every header (not the data). The data of every HDU must be in the file (its
    final padding to a 2880-byte block may be missing: astropy reads such a file
    whole), and no extension header may be cut off after the last complete HDU. A
    file compressed as a whole (gzip, bzip2, xz: ``.fits.gz`` and the like), whose end
    astropy cannot see, is decompressed once through to its end (`_stream_size`), since
    astropy takes a stream that ends too soon for the end of the file and silently
    drops the HDUs it lost.
    """
    with path.open("rb") as fh:
        magic = fh.read(6)
    if magic == b"SIMPLE":
        size = path.stat().st_size
    else:
        size = _stream_size(path, magic)
        if size is None:
            return
    count = len(hdul)  # reads every header
    end = 0
    for k in range(count):
        info = hdul.fileinfo(k)
        need = info["datLoc"] + _data_bytes(hdul, k, path)
        if size < need:
            raise ValueError(
                f"{path} is truncated: the data of HDU {k} ({hdul[k].name or 'PRIMARY'}) "
                f"end at byte {need} but the file has {size} bytes (an interrupted copy "
                "or download?)"
            )
        end = info["datLoc"] + info["datSpan"]
    if magic == b"SIMPLE" and size > end:
        with path.open("rb") as fh:
            fh.seek(end)
            start = fh.read(8)
        if start == b"XTENSION":
            raise ValueError(
                f"{path} is truncated: the header of HDU {count} is cut off at byte "
                f"{size} (an interrupted copy or download?)"
            )


#: Decompressors of the whole-file compressions astropy reads, by their magic bytes.
_STREAMS = {b"\x1f\x8b": ("gzip", "gzip"), b"BZh": ("bz2", "bzip2"),
            b"\xfd7zXZ": ("lzma", "xz")}


def _stream_size(path: Path, magic: bytes) -> int | None:
    """Return the decompressed size of a gzip, bzip2 or xz file; None for other files.

    Reads the whole stream (constant memory). Raises ValueError naming the file if the
    stream ends too soon or is corrupt.
    """
    found = [kind for head, kind in _STREAMS.items() if magic.startswith(head)]
    if not found:
        return None
    module, kind = found[0]
    opener = importlib.import_module(module).open
    size = 0
    try:
        with opener(path, "rb") as stream:
            while chunk := stream.read(1 << 22):
                size += len(chunk)
    except Exception as err:  # EOFError, gzip.BadGzipFile, lzma.LZMAError, zlib.error...
        raise ValueError(f"{path} is truncated or corrupt: its {kind} stream cannot be "
                         f"decompressed to its end ({err})") from err
    return size


def _data_bytes(hdul: fits.HDUList, k: int, path: Path) -> int:
    """Return the bytes of data (without padding) of HDU ``k``, as its header states.

    A tile-compressed HDU's header is that of the image it holds, so its stored size is
    read from its raw (binary table) header.
    """
    if not isinstance(hdul[k], fits.CompImageHDU):
        return int(hdul[k].size)
    with fits.open(path, memmap=False, disable_image_compression=True) as raw:
        return int(raw[k].size)


def _find_sci(hdul: fits.HDUList, path: Path | str) -> int:
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


def _read_array(
    hdul: fits.HDUList, k: int, path: Path, *, to_float: bool, what: str,
    shape: tuple | None = None,
) -> np.ndarray:
    """Read the data of HDU ``k`` in native byte order (see `_native`).

    Floating-point data keep their type (big-endian float32 becomes native float32);
    integers become float64 when ``to_float``. Any failure (an I/O error, a compressed
    file that ends too soon, a warning turned into an error, ...), or data of another
    shape than ``shape``, is a ValueError naming the file and ``what`` was read.
    """
    try:
        raw = hdul[k].data
        if raw is None or (shape is not None and raw.shape != tuple(shape)):
            raise ValueError(f"shape {None if raw is None else raw.shape}, expected {shape}")
        return _native(raw, to_float=to_float)
    except Exception as err:  # whatever astropy or a decompressor raises
        raise ValueError(f"cannot read the {what} of {path}: {err}") from err


def _read_wcs(header: fits.Header, hdul: fits.HDUList, path: Path | str, shape: tuple) -> WCS:
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

    What `skyeq.io.match_files` gives `skyeq.match_sky`, so that an image is in memory only
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
            hdul = fits.open(self.path, memmap=False)  # reads this HDU only
        except (OSError, Warning) as err:
            raise ValueError(f"cannot read the {self.what} of {self.path}: {err}") from err
        with hdul:
            arr = _read_array(hdul, self.hdu, self.path, to_float=self.to_float,
                              what=self.what, shape=self.shape)
        return arr if dtype is None else arr.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"<{self.what} of {str(self.path)!r}, HDU {self.hdu}, shape {self.shape}>"


def _stamp(path: Path) -> tuple[int, int, int, int]:
    """Identity of a file's content as the file system sees it (inode, size, times)."""
    st = path.stat()
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _find_dq(hdul: fits.HDUList, path: Path | str, shape: tuple) -> int | None:
    """Index of the DQ extension holding an array of ``shape``; None when there is none."""
    dq_at = [j for j, h in enumerate(hdul) if isinstance(h, _IMAGE_HDUS) and h.name == "DQ"]
    if not dq_at or int(hdul[dq_at[0]].header.get("NAXIS", 0)) == 0:
        return None
    dq_shape = tuple(int(n) for n in hdul[dq_at[0]].shape)
    if dq_shape != shape:
        raise ValueError(
            f"the DQ array of {path} has shape {dq_shape}, the science array {shape}"
        )
    return dq_at[0]


def _hdulist_image(hdul: fits.HDUList, where: str) -> tuple[np.ndarray, Any, np.ndarray | None]:
    """Read the science array, celestial WCS and DQ array (or None) of an open HDUList.

    The arrays are copied in native byte order (integer science data as float64), so
    they stay valid after the file is closed. ``where`` names the HDUList in errors.
    """
    k = _find_sci(hdul, where)
    hdu = hdul[k]
    shape = tuple(int(n) for n in hdu.shape)
    if len(shape) != 2:
        raise ValueError(f"the science array of {where} is not a 2-D image (ndim={len(shape)})")
    wcs = _read_wcs(hdu.header, hdul, where, shape)
    j = _find_dq(hdul, where, shape)
    dq = None if j is None else _native(hdul[j].data, to_float=False)
    return _native(hdu.data, to_float=True), wcs, dq


def _read_image(path: Path, *, lazy: bool) -> FitsImage:
    """`skyeq.io.read_image`; with ``lazy`` the arrays are `_FileArray` objects, not read yet."""
    _require_file(path, "image file")
    with _open_fits(path) as hdul:
        k = _find_sci(hdul, path)
        hdu = hdul[k]
        shape = tuple(int(n) for n in hdu.shape)  # from the header: no data read
        if len(shape) != 2:
            raise ValueError(
                f"the science array of {path} is not a 2-D image (ndim={len(shape)})"
            )
        data: Any = (_FileArray(path, k, shape, to_float=True, what="science array")
                     if lazy else _read_array(hdul, k, path, to_float=True, what="science array"))
        datamodels = _datamodels(hdul, path)
        wcs = exposure = None
        if datamodels is not None:
            wcs, exposure = _datamodel_wcs(datamodels, path, shape)
            if wcs is None:
                log.debug("%s: the datamodel has no meta.wcs; using the SCI header", path)
        if wcs is None:
            wcs = _read_wcs(hdu.header, hdul, path, shape)
        dq: Any = None
        j = _find_dq(hdul, path, shape)
        if j is not None:
            dq = (_FileArray(path, j, shape, to_float=False, what="DQ array")
                  if lazy else _read_array(hdul, j, path, to_float=False, what="DQ array"))
        headers = [hdu.header] if k == 0 else [hdu.header, hdul[0].header]
        level, sub, meth = _background_keywords(headers, path)
        if exposure is None:
            exposure = _exposure_id(hdul[0].header)
    log.debug("read %s: HDU %d, shape %s, DQ %s, exposure %s, %s", path, k, shape,
              dq is not None, exposure, type(wcs).__module__)
    return FitsImage(path, data, wcs, dq, k, level, sub, meth, exposure,
                     datamodels is not None)


# --------------------------------------------------------------------------- writing


def _write_fits(
    source: Path, tmp: Path, name: str, keywords: dict, data: np.ndarray | None
) -> None:
    """Write ``source`` with new background keywords (and SCI data) to ``tmp``.

    A JWST datamodel file is written through stdatamodels when it is installed (see
    `skyeq._jwst._write_datamodel`); ``name`` is the file name of the final target.

    Tile-compressed extensions (`astropy.io.fits.CompImageHDU`) are copied verbatim,
    their compressed bytes untouched: writing only keywords never re-quantizes an image
    (re-compressing a lossy quantized float image would change its values). When the
    sky-subtracted data go into a tile-compressed SCI extension, that extension is
    written *uncompressed* (an image extension of the same name and header, holding
    exactly the subtracted values): compressing them again would quantize them anew and
    lose precision. That is logged as a warning naming the file; the file grows.
    """
    with fits.open(source, memmap=False) as hdul:
        datamodels = _datamodels(hdul, source)
        if datamodels is not None:
            hdul.close()
            _write_datamodel(datamodels, source, tmp, name, keywords, data)
            return
        k = _find_sci(hdul, source)
        sci = hdul[k]
        compressed = isinstance(sci, fits.CompImageHDU)
        if data is not None:
            _check_shape(source, data, tuple(int(n) for n in sci.shape))
        image_header = sci.header.copy() if compressed else None
    # compressed HDUs as their raw binary tables: copied as they are in the file
    with fits.open(source, memmap=False, disable_image_compression=True) as hdul:
        if data is not None and compressed:
            hdul[k] = fits.ImageHDU(data, image_header)
            log.warning(
                "writing %s from %s: its SCI extension is tile-compressed; the "
                "sky-subtracted data are written uncompressed (the file grows), since "
                "compressing them again would quantize them anew and lose precision",
                name, source,
            )
        elif data is not None:
            hdul[k].data = data
        headers = [hdul[k].header] if k == 0 else [hdul[k].header, hdul[0].header]
        for hdr in headers:
            for key, value in keywords.items():
                hdr[key] = (value, _KEYWORD_COMMENTS[key])
        hdul.writeto(tmp, overwrite=True)
