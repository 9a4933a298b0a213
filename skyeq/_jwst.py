"""JWST datamodel files, read and written through stdatamodels; JWST exposure ids.

A JWST datamodel file is a FITS file with an ``ASDF`` extension (`_datamodels`, which
imports stdatamodels when it is installed). Here are opening such a file
(`_open_datamodel`), its gwcs and ``meta.group_id`` (`_datamodel_wcs`), writing it back
with new background metadata (`_write_datamodel`), the exposure id built from the
observation keywords of a primary header (`_exposure_id`), and the shape check of the
subtracted data that both writers use (`_check_shape`; here so that `skyeq._fits` can
import it without a cycle). Imports no other skyeq module.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

#: The logger of the public file face `skyeq.io`: records keep the name users configure.
log = logging.getLogger("skyeq.io")

#: Primary-header keywords of a JWST exposure, in the order they form its group id.
_EXPOSURE_KEYWORDS = ("PROGRAM", "OBSERVTN", "VISIT", "VISITGRP", "SEQ_ID", "ACT_ID",
                      "EXPOSURE")

#: Extension name of the ASDF tree that marks a JWST datamodel file.
_ASDF_HDU = "ASDF"

_missing_stdatamodels_logged = False


# --------------------------------------------------------------------------- reading


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


# --------------------------------------------------------------------------- writing


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
            if "BKGERR" in keywords:
                log.info("%s: a JWST datamodel has no field for BKGERR; not written", source)
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
