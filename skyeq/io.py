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

import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table

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
    "write_summaries",
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
        subtracted data); ``local`` and ``pairs`` describe the data as read. With
        ``model="plane"``, ``plane``'s level is cumulative too, its slopes are those
        measured on the data as read.

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
        plane = None
        if result.plane is not None:  # the level is cumulative; the slopes are new
            plane = result.plane.copy()
            plane[:, 0] += previous
        result = dataclasses.replace(result, sky=result.sky + previous, plane=plane)
    return result


# --------------------------------------------------------------------------- writing

#: Suffix of the temporary files: ``.<target name>.<12 hex digits>.skyeq-tmp``.
_TEMP_SUFFIX = ".skyeq-tmp"

#: Seconds without modification after which a temporary file of a target is stale.
_STALE_TEMP_AGE = 600.0


def _temp_name(target: Path, token: str | None = None) -> Path:
    """Return the temporary file ``.<target name>.<token>.skyeq-tmp`` beside ``target``.

    ``token`` is 12 hexadecimal digits (random when not given): the pattern that
    `_remove_stale_temps` recognises.
    """
    token = os.urandom(6).hex() if token is None else token
    return target.parent / f".{target.name}.{token}{_TEMP_SUFFIX}"


def _naming(err: OSError, target: Path) -> OSError:
    """Return an OSError like ``err`` (same errno and subclass) that names ``target``.

    A failure while writing a temporary file must name the file the user asked for,
    not the hidden temporary file: ``[Errno 28] No space left on device: 'target'``.
    """
    if err.errno is None or not err.strerror:
        try:
            return type(err)(f"cannot write {target}: {err}")
        except Exception:  # a subclass with another constructor
            return OSError(f"cannot write {target}: {err}")
    return OSError(err.errno, err.strerror, str(target))  # the subclass of the errno


def _remove_stale_temps(target: Path) -> list[Path]:
    """Remove the temporary files of ``target`` that an interrupted run left behind.

    A run killed while writing (SIGKILL, a power cut: an ordinary error or Ctrl-C
    removes its own) leaves hidden files named ``.<target name>.<12 hex
    digits>.skyeq-tmp`` beside its targets. Every write of a target first removes the
    files of that exact pattern for that target that were last modified more than
    `_STALE_TEMP_AGE` seconds (10 minutes) ago; a younger one may belong to another
    run writing the same file right now and is left alone. Each removal is logged as a
    warning; a file that cannot be removed is logged at debug level and skipped.

    Returns
    -------
    list of pathlib.Path
        The files removed.
    """
    prefix = f".{target.name}."
    pattern = re.compile(rf"{re.escape(prefix)}[0-9a-f]{{12}}{re.escape(_TEMP_SUFFIX)}")
    limit = time.time() - _STALE_TEMP_AGE
    removed: list[Path] = []
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(prefix) or not pattern.fullmatch(entry.name):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode) or st.st_mtime > limit:
                continue
            os.unlink(entry.path)
        except OSError as err:
            log.debug("could not remove the stale temporary file %s: %s", entry.path, err)
            continue
        log.warning("removed %s, a temporary file left by an interrupted run (last "
                    "modified %s)", entry.path, time.strftime("%Y-%m-%d %H:%M:%S",
                                                              time.localtime(st.st_mtime)))
        removed.append(Path(entry.path))
    return removed


@dataclass(frozen=True)
class _Slot:
    """One file of a `_Batch`: the target as given, the real file and its temporary."""

    shown: Path
    target: Path
    tmp: Path


def _stage_file(slot: _Slot, write: Callable[[Path], None], mode_of: Path | None) -> None:
    """Write the new content of ``slot.target`` completely into ``slot.tmp``.

    Removes the stale temporary files of the target (`_remove_stale_temps`), creates
    the temporary file (mode 0o666, so the process umask applies as for any new file;
    `tempfile.mkstemp`'s 0o600 would need the umask read back, which is not
    thread-safe), calls ``write(tmp)``, flushes the file to disk and gives it the
    permissions of the existing target (else of ``mode_of``, else the umask default).
    On any failure the temporary file is removed; an OSError is raised again naming
    the target (`_naming`). Runs wherever the task runs (a thread, a process).
    """
    _remove_stale_temps(slot.target)
    try:
        os.close(os.open(slot.tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    except OSError as err:
        raise _naming(err, slot.shown) from err
    try:
        write(slot.tmp)
        with slot.tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
        like = slot.target if slot.target.exists() else mode_of
        if like is not None and like.exists():
            os.chmod(slot.tmp, stat.S_IMODE(like.stat().st_mode))
    except BaseException as err:
        with contextlib.suppress(OSError):
            slot.tmp.unlink()
        if isinstance(err, OSError):
            raise _naming(err, slot.shown) from err
        raise


def _link_backup(target: Path) -> Path | None:
    """Hard-link ``target`` under a temporary name, to restore it from; None if impossible."""
    for _ in range(100):
        backup = _temp_name(target)
        try:
            os.link(target, backup)
        except FileExistsError:
            continue
        except OSError as err:  # e.g. a file system without hard links
            log.debug("%s: no hard link to restore it from (%s)", target, err)
            return None
        return backup
    return None


class _Batch:
    """Replace several files all together, or leave every one of them as it was.

    `add` reserves the temporary file of a target (``.<name>.<batch token>.skyeq-tmp``
    in the target's directory); `_stage_file` writes it completely (anywhere: in a
    thread or another process); `commit` renames every temporary file over its target
    (`os.replace`, atomic on POSIX and Windows). If anything fails before or during
    the commit, or the run is interrupted, `abort` removes every temporary file and the
    directories `make_dirs` created (when empty), and a commit that fails half-way puts
    back the targets it already replaced: each existing target is first hard-linked
    under a temporary name, so it comes back with its bytes and modification time (on a
    file system without hard links a replaced target cannot be put back; that is
    logged as an error). Every file of a batch is on disk at the same time before the
    commit: a batch needs free space for all its new files.
    """

    def __init__(self) -> None:
        self.token = os.urandom(6).hex()
        self._slots: list[_Slot] = []
        self._targets: set[Path] = set()
        self._made: list[Path] = []
        self._notes: list[tuple[Any, ...]] = []
        self._lock = threading.Lock()

    def add(self, target: str | PathLike) -> _Slot:
        """Reserve the temporary file of ``target`` (a symbolic link is followed)."""
        shown = Path(target)
        real = shown.resolve()  # through symbolic links: replace the real file
        slot = _Slot(shown, real, _temp_name(real, self.token))
        with self._lock:
            if real in self._targets:
                raise ValueError(f"{shown} is written twice in one batch")
            self._targets.add(real)
            self._slots.append(slot)
        return slot

    def stage(self, target: str | PathLike, write: Callable[[Path], None],
              mode_of: Path | None = None) -> Path:
        """`add` ``target`` and write its temporary file here (`_stage_file`)."""
        slot = self.add(target)
        _stage_file(slot, write, mode_of)
        return slot.shown

    def make_dirs(self, directory: str | PathLike) -> None:
        """Create ``directory`` and its missing parents; `abort` removes them if empty."""
        directory = Path(directory)
        missing = []
        p = directory
        while not p.exists() and p != p.parent:
            missing.append(p)
            p = p.parent
        directory.mkdir(parents=True, exist_ok=True)
        self._made += reversed(missing)

    def note(self, *args: Any) -> None:
        """Keep a log message (format and arguments) to log at INFO once committed."""
        self._notes.append(args)

    def commit(self) -> None:
        """Rename every temporary file over its target; all or nothing (see the class)."""
        done: list[tuple[_Slot, bool, Path | None]] = []
        try:
            for slot in self._slots:
                existed = slot.target.exists()
                backup = _link_backup(slot.target) if existed else None
                done.append((slot, existed, backup))  # before: an interruption may come
                try:
                    os.replace(slot.tmp, slot.target)
                except OSError as err:  # not replaced: nothing to put back
                    done.pop()
                    if backup is not None:
                        with contextlib.suppress(OSError):
                            backup.unlink()
                    raise _naming(err, slot.shown) from err
        except BaseException:
            self._roll_back(done)
            self.abort()
            raise
        for _, _, backup in done:
            if backup is not None:
                with contextlib.suppress(OSError):
                    backup.unlink()
        for parent in dict.fromkeys(slot.target.parent for slot in self._slots):
            _sync_directory(parent)
        self._slots, self._made = [], []
        for args in self._notes:
            log.info(*args)
        self._notes = []

    def _roll_back(self, done: list[tuple[_Slot, bool, Path | None]]) -> None:
        """Put back the targets of a failed commit (newest first)."""
        for slot, existed, backup in reversed(done):
            try:
                if backup is not None:
                    os.replace(backup, slot.target)
                elif not existed:
                    slot.target.unlink(missing_ok=True)
                else:
                    log.error("%s may have been replaced and cannot be restored (no hard "
                              "link to it could be made)", slot.shown)
            except OSError as err:
                where = f" (its previous content is in {backup})" if backup is not None else ""
                log.error("could not restore %s: %s%s", slot.shown, err, where)

    def abort(self) -> None:
        """Remove every temporary file and the directories made (if empty); idempotent."""
        with self._lock:
            slots, self._slots = self._slots, []
        for slot in slots:
            with contextlib.suppress(OSError):
                slot.tmp.unlink()
        for directory in reversed(self._made):
            with contextlib.suppress(OSError):
                directory.rmdir()
        self._made, self._notes = [], []


def _sync_directory(directory: Path) -> None:
    """Flush a directory's entries to disk (makes renames durable on POSIX)."""
    with contextlib.suppress(OSError):
        dirfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)


def _atomic_write(target: Path, write: Callable[[Path], None], mode_of: Path | None) -> None:
    """Write ``target`` through a temporary file in its directory and an atomic rename.

    ``write(tmp)`` writes the complete new content to ``tmp``; the file is then flushed
    to disk, given the permissions of the existing target (else of ``mode_of``, else
    the umask default) and renamed over ``target`` with `os.replace` (a symbolic link is
    followed: the file it points to is replaced, the link kept). On any failure, or an
    interruption, the temporary file is removed and ``target`` is left as it was; an
    OSError names ``target``. A one-file `_Batch`.
    """
    batch = _Batch()
    try:
        batch.stage(target, write, mode_of)
        batch.commit()
    finally:
        batch.abort()  # nothing left to do after a commit


def _check_writable_dir(directory: Path, what: str) -> None:
    """Raise an OSError naming ``what`` unless a file can be created in ``directory``.

    Tries it: creates and removes a temporary file (as root, or with ACLs, permission
    bits tell nothing).
    """
    probe = _temp_name(directory / ".skyeq-probe")
    try:
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    except OSError as err:
        raise type(err)(f"{what}: cannot create a file in {directory} "
                        f"({err.strerror or err})") from None
    with contextlib.suppress(OSError):
        probe.unlink()


def _check_output_file(
    path: str | PathLike, what: str, created: Sequence[Path] = (),
) -> Path:
    """Check, before anything is written, that a file can be written at ``path``.

    Nothing stays on disk. ``what`` names the path in errors, e.g. ``"--table
    skies.ecsv"``. ``created``: directories that the run will create (already checked
    with `_check_output_dirs`), where a file may go although they do not exist yet.

    Raises
    ------
    IsADirectoryError
        If ``path`` is a directory.
    FileNotFoundError, NotADirectoryError
        If its directory does not exist, or is not a directory.
    PermissionError, OSError
        If no file can be created in its directory.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{what} is a directory")
    folder = path.resolve().parent
    if not folder.exists() and folder in {Path(c).resolve() for c in created}:
        return path
    if not folder.exists():
        raise FileNotFoundError(f"{what}: the directory {path.parent} does not exist")
    if not folder.is_dir():
        raise NotADirectoryError(f"{what}: {path.parent} is not a directory")
    _check_writable_dir(folder, what)
    return path


def _check_output_dirs(targets: Sequence[Path]) -> None:
    """Check that the image files `output_paths` returned can be created, writing nothing.

    A directory that does not exist yet (``output_dir``) is checked at its nearest
    existing parent, where it will be created.
    """
    for folder in dict.fromkeys(Path(t).resolve().parent for t in targets):
        existing = folder
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise NotADirectoryError(f"cannot write into {folder}: {existing} is not a "
                                     "directory")
        what = f"output directory {folder}" if existing == folder else (
            f"output directory {folder} (to be created in {existing})")
        _check_writable_dir(existing, what)


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
    IsADirectoryError
        If an output file would replace a directory.
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
        if r.is_dir():
            raise IsADirectoryError(f"output file {t} is a directory")
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
    errors: bool = False,
) -> list[Path]:
    """Write the background keywords (and subtracted data) of a result into FITS files.

    For every image whose sky is valid, BKGLEVEL, BKGMETH and BKGSUB (`SkyResult.keywords`)
    go into the SCI header and the primary header, and when ``result.subtracted`` the
    SCI data are replaced by ``result.data``. The background keywords of an image whose
    sky is not valid are left as they were (as the JWST step does), and so are its data.

    The files are replaced all together or not at all: every new file is first written
    completely to a temporary file beside its target (``.<name>.<12 hex
    digits>.skyeq-tmp``), and only when all are written are they renamed over their
    targets (`os.replace`, atomic). Any failure or interruption before that leaves every
    target exactly as it was (bytes and modification time) and removes the temporary
    files (and an ``output_dir`` this call created, if it is still empty); a rename
    that fails half-way puts back the files already replaced (see ``_Batch``). The run
    therefore needs free disk space for one new copy of every file at once. Temporary
    files that a killed run left behind are removed by the next write of the same file
    once they are 10 minutes old (logged as a warning).

    A tile-compressed SCI extension is written uncompressed when the subtracted data go
    into it (re-compressing would quantize them again and lose precision; logged as a
    warning); tile-compressed extensions that are not changed are copied verbatim.

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
    errors : bool, optional
        Also write BKGERR, the standard error of BKGLEVEL, where it was estimated (plain
        FITS headers; a JWST datamodel has no field for it). Default False.

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
    OSError
        If a file cannot be written (no space left, no permission, ...): the message
        names the target file, and no file has been changed.
    """
    batch = _Batch()
    try:
        targets = _stage_results(batch, result, paths, output_dir=output_dir,
                                 in_place=in_place, executor=executor, progress=progress,
                                 errors=errors)
        batch.commit()
    finally:
        batch.abort()  # nothing left to do after a commit
    return targets


def _stage_results(
    batch: _Batch,
    result: SkyResult,
    paths: Sequence[str | PathLike] | None = None,
    *,
    output_dir: str | PathLike | None = None,
    in_place: bool = False,
    executor: Executor | None = None,
    progress: bool | Callable[[int, int], Any] = False,
    errors: bool = False,
) -> list[Path]:
    """Write the new files of `write_results` to the temporary files of ``batch``.

    Nothing is replaced until ``batch.commit()``: the command line commits the images,
    the table and the plot together. Returns the target files, in image order.
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
        batch.make_dirs(output_dir)  # type: ignore[arg-type]
    tasks = []
    for k, (src, dst) in enumerate(zip(sources, targets, strict=True)):
        keywords = result.keywords(k, errors=errors)
        data = result.data[k] if result.subtracted and keywords else None  # type: ignore[index]
        tasks.append(_WriteTask(src, batch.add(dst), keywords, data))
        if keywords:
            batch.note("wrote %s: BKGLEVEL = %.6g, BKGSUB = %s", dst, keywords["BKGLEVEL"],
                       keywords["BKGSUB"])
        else:
            batch.note("wrote %s: sky not computed, background keywords left unchanged", dst)
    tracked = None if executor is None else _TrackingExecutor(executor)
    try:
        _dispatch.run(_write_one, tasks, tracked, progress, phase="writing")
    except BaseException:
        if tracked is not None:  # let the running writes end before their files go
            concurrent.futures.wait(tracked.futures)
        raise
    return targets


class _TrackingExecutor(Executor):
    """An executor that runs on another one and keeps the futures it submits.

    The dispatcher re-raises the first failure at once, cancelling the tasks not yet
    started; the writes already running go on. `_stage_results` waits for them (their
    futures) before the batch removes the temporary files, so that none is created
    after the clean-up.
    """

    def __init__(self, inner: Executor) -> None:
        self.inner = inner
        self.futures: list[concurrent.futures.Future] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Submit to the wrapped executor; keep the future."""
        future = self.inner.submit(fn, *args, **kwargs)
        self.futures.append(future)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Do nothing: the wrapped executor belongs to the caller."""


@dataclass(frozen=True)
class _WriteTask:
    """One file to write: its source, destination slot, keywords and subtracted data.

    ``data`` may be an array-like that reads the source and subtracts when converted
    (`match_files` with ``subtract=True``): it is converted inside the task, so a task
    holds one image at a time.
    """

    source: Path
    slot: _Slot
    keywords: dict[str, Any]
    data: Any

    @property
    def label(self) -> str:
        """The file, for error messages."""
        return str(self.slot.shown)


def _write_one(task: _WriteTask) -> None:
    """Write the temporary file of one file of `write_results` (`_stage_file`)."""
    data = None if task.data is None else np.asarray(task.data)
    _stage_file(
        task.slot,
        lambda tmp: _write_fits(task.source, tmp, task.slot.shown.name, task.keywords, data),
        task.source,
    )


#: The table formats of `write_table`: file extension -> astropy ``Table.write`` format.
#: ``.txt`` is astropy's ``ascii.fixed_width_two_line``: aligned columns under a
#: dashed header line, for reading by eye, read back with that format name.
_TABLE_FORMATS = {
    ".ecsv": "ascii.ecsv",
    ".csv": "ascii.csv",
    ".fits": "fits",
    ".html": "ascii.html",
    ".txt": "ascii.fixed_width_two_line",
}


def _table_format(path: str | PathLike, what: str | None = None) -> str:
    """Return the astropy format of a table file from its extension (``_TABLE_FORMATS``).

    The extension is compared without regard to case. ``what`` names the path in the
    error (default ``"table file <path>"``; the command line gives ``"--table
    <path>"``). Reads and writes nothing: call it before any work.

    Raises
    ------
    ValueError
        If the extension is not one of ``_TABLE_FORMATS``.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in _TABLE_FORMATS:
        what = f"table file {path}" if what is None else what
        shown = f"extension {suffix!r}" if suffix else "no extension"
        raise ValueError(f"{what}: unknown table format ({shown}); use one of "
                         f"{', '.join(_TABLE_FORMATS)}")
    return _TABLE_FORMATS[suffix]


def write_table(result: SkyResult, path: str | PathLike) -> Path:
    """Write `SkyResult.to_table` to a file, in the format of its extension, atomically.

    The extension chooses the format (in any case): ``.ecsv`` (ECSV),
    ``.csv`` (comma-separated values), ``.fits`` (a FITS binary table), ``.html`` (an
    HTML table) or ``.txt`` (astropy's ``ascii.fixed_width_two_line``: aligned columns
    under a dashed line). The table's metadata (``BKGMETH``, ``BKGSUB``) is kept by ECSV
    (with the column descriptions) and FITS (as header keywords); every format has the
    ``method`` and ``subtracted`` columns. Read the file back with
    ``astropy.table.Table.read(path, format=...)`` and the same format name. In FITS a
    ``local`` sky that was not measured is NaN, which astropy masks on reading unless
    ``mask_invalid=False``; the text formats write ``nan``.

    The file is written to a temporary file beside it and renamed over ``path`` (as
    `write_results` writes images): an existing file is replaced whole or left as it
    was.

    Parameters
    ----------
    result : SkyResult
        The result.
    path : path
        The table file; an existing file is replaced.

    Returns
    -------
    pathlib.Path
        The file written.

    Raises
    ------
    ValueError
        If the extension of ``path`` is not one of ``.ecsv``, ``.csv``, ``.fits``,
        ``.html``, ``.txt`` (checked first: nothing is written).
    OSError
        If ``path`` is a directory, its directory does not exist, or the file cannot be
        written; the message names ``path``, which is left as it was.

    Examples
    --------
    >>> import skyeq, tempfile, pathlib
    >>> res = skyeq.SkyResult(sky=[0.0, 2.5], method="match", subtracted=False,
    ...                       valid=[True, True])
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = write_table(res, pathlib.Path(d) / "skies.csv")
    ...     print(path.read_text().splitlines()[1])
    0,image 0,0,0.0,True,-1,match,False,nan
    """
    fmt = _table_format(path)
    path = _check_output_file(path, f"table file {path}")
    _atomic_write(path, lambda tmp: _write_table(result, tmp, fmt), None)
    log.info("wrote the table of %d images to %s", len(result), path)
    return path


def write_summaries(table: Table, path: str | PathLike) -> Path:
    """Write HEALPix sky summaries (`skyeq.sky_summaries`) as a FITS table, atomically.

    The format: one binary-table extension ``SKYSUMMARY``, a row per image and NESTED
    HEALPix cell, columns ``image`` (int64), ``name`` (text), ``cell`` (int64, the
    NESTED pixel index), ``sky`` (float64, the clipped statistic of the image's pixels
    in the cell, data units), ``npix`` (int64) and ``sky_err`` (float64, NaN where not
    estimated); header keywords ``NSIDE``, ``ORDERING`` = ``NESTED``, ``COORDSYS`` =
    ``C``, ``SKYSTAT``, ``NCLIP``, ``LSIGMA``, ``USIGMA``, ``BLOCK`` (pixels per side
    of the blocks that assign pixels to cells) and ``CELLDEG``. Read it back with
    ``astropy.table.Table.read(path, hdu="SKYSUMMARY")``; the cells map to sky
    positions with any HEALPix library (e.g. ``astropy_healpix.HEALPix(nside,
    order="nested").healpix_to_lonlat``).

    Parameters
    ----------
    table : astropy.table.Table
        What `skyeq.sky_summaries` returned.
    path : path
        The ``.fits`` file; an existing one is replaced whole or left as it was.

    Returns
    -------
    pathlib.Path
        The file written.

    Raises
    ------
    ValueError
        If ``table`` lacks a column or ``NSIDE`` of a summary, or ``path`` does not end
        in ``.fits`` (checked first: nothing is written).
    OSError
        If the file cannot be written (the message names it).
    """
    from .summaries import SUMMARY_COLUMNS

    missing = [c for c, _ in SUMMARY_COLUMNS if c not in table.colnames]
    if missing or "NSIDE" not in table.meta:
        raise ValueError(f"not a sky summary table (missing {missing or ['NSIDE']})")
    if not str(path).lower().endswith(".fits"):
        raise ValueError(f"sky summaries are written as FITS: {path} does not end in .fits")
    target = _check_output_file(path, f"summary file {path}")

    def write(tmp: Path) -> None:
        out = table.copy(copy_data=False)
        out["name"] = np.char.encode(np.asarray(out["name"], dtype=str), "utf-8")
        hdu = fits.table_to_hdu(out)
        hdu.name = "SKYSUMMARY"
        fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(tmp)

    _atomic_write(target, write, None)
    log.info("wrote the sky summaries of %d cells to %s", len(table), target)
    return target


def _write_table(result: SkyResult, path: Path, fmt: str) -> None:
    """Write `SkyResult.to_table` to ``path`` in the astropy format ``fmt``.

    The one home of the table writing (`write_table`, ``skyeq match --table``).
    ``path`` is a temporary file whose name says nothing of the format: ``fmt`` is
    always given. For FITS, text columns are stored as UTF-8 bytes: astropy would
    refuse a name that is not ASCII, and decodes UTF-8 when reading back.
    """
    table = result.to_table()
    if fmt == "fits":
        for name in table.colnames:
            if table[name].dtype.kind == "U":
                table[name] = np.char.encode(np.asarray(table[name]), "utf-8")
    table.write(path, format=fmt, overwrite=True)
