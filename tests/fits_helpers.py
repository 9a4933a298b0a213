"""FITS files for the file tests (test_io, test_cli): written and read with astropy only."""

import os
import warnings
from pathlib import Path

from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning


def write_mosaic(m, directory, *, plain=False, names=None):
    """Write a synthetic mosaic as JWST-like files (empty primary, SCI, DQ) or plain ones."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, name in enumerate(names or m.names):
        hdr = m.wcs[k].to_header()
        if plain:
            hdul = fits.HDUList([fits.PrimaryHDU(m.data[k], hdr)])
        else:
            hdus = [fits.PrimaryHDU(), fits.ImageHDU(m.data[k], hdr, name="SCI")]
            if m.dq is not None:
                hdus.append(fits.ImageHDU(m.dq[k], name="DQ"))
            hdul = fits.HDUList(hdus)
        path = directory / f"{name}_cal.fits"
        hdul.writeto(path)
        paths.append(path)
    return paths


def read_independently(paths):
    """Arrays, WCS and DQ read with astropy alone (not through skyeq.io)."""
    data, wcs, dq = [], [], []
    for p in paths:
        with fits.open(p) as hdul:
            sci = hdul["SCI"] if "SCI" in hdul else hdul[0]
            data.append(sci.data.astype(sci.data.dtype.newbyteorder("=")))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FITSFixedWarning)
                wcs.append(WCS(sci.header))
            dq.append(hdul["DQ"].data.astype("=u4") if "DQ" in hdul else None)
    return data, wcs, (dq if any(d is not None for d in dq) else None)


def snapshot(paths):
    return {Path(p): (Path(p).read_bytes(), os.stat(p).st_mtime_ns) for p in paths}
