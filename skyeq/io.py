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
import logging
import os
import stat
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from . import SkyResult, _dispatch, match_sky
from ._asn import Association, read_association
from ._fits import FitsImage, _read_image, _require_file, _write_fits
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

#: match_sky arguments that `match_files` fills in from the files itself.
_FROM_FILES = ("data", "wcs", "dq", "names", "inplace")


# --------------------------------------------------------------------------- reading


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
