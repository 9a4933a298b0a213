"""The real NIRCam detector WCS of tests/data for the tests, and subarrays of it."""

import copy
from pathlib import Path

import asdf
import gwcs
from astropy.modeling import models

DATA = Path(__file__).parent / "data"


def load_nircam():
    """The NIRCam B1 detector gwcs (2048 x 2048, its fitted inverse good to ~0.1 pixel)."""
    with asdf.open(DATA / "nrcb1-wcs.asdf", lazy_load=False, memmap=False) as af:
        return copy.deepcopy(af["wcs"])


def subarray(w, x0, y0, shape):
    """A subarray of a gwcs detector: its pixel (0, 0) is detector pixel (x0, y0)."""
    fwd = (models.Shift(x0) & models.Shift(y0)) | w.forward_transform
    out = gwcs.WCS(forward_transform=fwd, input_frame=w.input_frame, output_frame=w.output_frame)
    out.bounding_box = ((-0.5, shape[1] - 0.5), (-0.5, shape[0] - 0.5))
    return out
