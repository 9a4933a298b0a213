"""Property-based tests (hypothesis) of `skyeq.match_sky` and `skyeq.sky_statistic`.

The invariants of issue 13 and DESIGN.md, over random image shapes (16-64 px a side),
dtypes (float32, float64, int16, uint16, int32; native or big-endian; C, Fortran or
strided memory), good-pixel masks (None, bool, 0/1 uint8), DQ arrays, NaN fractions
(0 to 0.5), images with one to three or no usable pixel, groups, constant offsets and
small random WCS offsets of synthetic layouts (tiles, dithers, exposures):

* adding a constant ``c`` to every image shifts ``local``, ``global`` and
  ``global+match`` skies by ``c`` and leaves ``match`` offsets unchanged;
* permuting the images (with their WCS, masks, DQ arrays, groups, names) permutes
  every result;
* no input is modified unless ``subtract=True`` and ``inplace=True``;
* every sky is finite, an invalid image's sky is 0.0, and an image with no usable
  pixel is invalid;
* ``subtract=True`` returns ``input - sky`` (float64 for integer input, never
  wrapped), and ``inplace=True`` changes the images only;
* `sky_statistic` gives the same number for the same values in another dtype or
  byte order, and scales exactly with the data by powers of two.

Pixel values are drawn on a grid (multiples of 1/16, or integers) and offsets on the
same grid, so that ``data + c`` is exact in every dtype: the relations are then exact
for the median and hold to a few units in the last place for the other statistics
(accumulation in float64, DESIGN.md).

A case is drawn as a *recipe* (a dict of plain numbers, shown in falsifying examples)
and built by `build_case`, so ``build_case({...})`` reproduces any reported example.
Every test is derandomized (the same examples on every run, no example database) with
an explicit ``max_examples``; shrinking is off unless ``SKYEQ_HYPOTHESIS_SHRINK=1``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_array_equal

from skyeq import SkyStat, match_sky, sky_statistic, synthetic

# after a failure (xfail cases included) hypothesis imports libcst to suggest an explicit
# example, and libcst's import warns about mypy_extensions
pytestmark = pytest.mark.filterwarnings(
    "ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning"
)

#: The image dtypes users have (FITS BITPIX 16/32 as int16/int32, uint16 with BZERO).
DTYPES = ("float32", "float64", "int16", "uint16", "int32")
STATISTICS = ("mean", "median", "mode", "midpt")
METHODS = ("local", "global", "match", "global+match")
#: JWST DQ bits: DO_NOT_USE and NON_SCIENCE make a pixel bad under the default dqbits,
#: JUMP_DET and OUTLIER alone do not.
DO_NOT_USE, JUMP_DET, OUTLIER, NON_SCIENCE = 1, 4, 16, 512
BAD_DQ = DO_NOT_USE | NON_SCIENCE
#: Float pixel values are multiples of this, so that sums and shifts are exact.
GRID = 1.0 / 16.0
#: What an image holds: sky + noise + sources, its sky only, one to three usable
#: pixels, or no usable pixel (all NaN, all masked, all flagged DO_NOT_USE).
KINDS = ("normal", "constant", "sparse", "empty:nan", "empty:mask", "empty:dq")

#: Shrinking a falsifying example takes minutes here (each example runs match_sky a few
#: times) and the known failures are marked xfail: shrink only when asked, e.g.
#: ``SKYEQ_HYPOTHESIS_SHRINK=1 pytest tests/test_properties.py --runxfail``.
_PHASES = (Phase.explicit, Phase.generate) + (
    (Phase.shrink,) if os.environ.get("SKYEQ_HYPOTHESIS_SHRINK") else ()
)


def _settings(max_examples: int) -> settings:
    """Hypothesis settings of this file: deterministic, no deadline, explicit budget."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=_PHASES,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# --------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    """One `match_sky` input: images and everything given per image.

    Attributes
    ----------
    data : list of ndarray
        The images (one dtype, byte order and memory layout for all).
    wcs : list of astropy.wcs.WCS
        One TAN WCS per image.
    mask, dq : list or None
        Per-image good-pixel masks / uint32 DQ arrays (entries may be None).
    groups : list of int or None
        Group ids.
    names : list of str or None
        Image names.
    recipe : dict
        What it was built from (`build_case`), and how it was changed since.
    """

    data: list[np.ndarray]
    wcs: list[Any]
    mask: list[np.ndarray | None] | None
    dq: list[np.ndarray | None] | None
    groups: list[int] | None
    names: list[str] | None
    recipe: dict = field(default_factory=dict, compare=False)

    def __repr__(self) -> str:
        return f"build_case({self.recipe})"

    def _repr_pretty_(self, printer, cycle) -> None:
        """Show the recipe, not the pixels, in hypothesis' falsifying examples."""
        printer.text(repr(self))

    @property
    def dtype(self) -> np.dtype:
        """The images' dtype."""
        return self.data[0].dtype

    def run(self, method: str, **kw: Any):
        """Run `match_sky` on this case."""
        return match_sky(self.data, self.wcs, method=method, mask=self.mask, dq=self.dq,
                         groups=self.groups, names=self.names, **kw)

    def usable(self) -> np.ndarray:
        """Whether each image has a usable pixel (finite, mask True, no bad DQ bit)."""
        out = []
        for k, img in enumerate(self.data):
            good = np.isfinite(img) if img.dtype.kind == "f" else np.ones(img.shape, bool)
            if self.mask is not None and self.mask[k] is not None:
                good &= self.mask[k].astype(bool)
            if self.dq is not None and self.dq[k] is not None:
                good &= (self.dq[k] & BAD_DQ) == 0
            out.append(bool(good.any()))
        return np.array(out)

    def group_usable(self) -> np.ndarray:
        """Whether each image's group (the image itself without groups) has a usable pixel."""
        usable = self.usable()
        if self.groups is None:
            return usable
        gid = np.asarray(self.groups)
        return np.array([usable[gid == g].any() for g in gid])

    def permuted(self, perm: list[int]) -> Case:
        """The same images in the order ``perm`` (new position p holds image perm[p])."""

        def take(seq):
            return None if seq is None else [seq[k] for k in perm]

        return Case(take(self.data), take(self.wcs), take(self.mask), take(self.dq),
                    take(self.groups), take(self.names), {**self.recipe, "perm": perm})

    def shifted(self, c: float) -> Case:
        """Every image plus ``c`` (exact: see `_offset`), same dtype and memory layout."""
        out = [_as_layout((img.astype(np.float64) + c).astype(img.dtype), _order(img))
               for img in self.data]
        return replace(self, data=out, recipe={**self.recipe, "plus": c})


def _order(img: np.ndarray) -> str:
    """The memory layout of ``img``: C, F or strided."""
    return "C" if img.flags.c_contiguous else "F" if img.flags.f_contiguous else "strided"


def _as_layout(img: np.ndarray, order: str) -> np.ndarray:
    """``img``'s values in C order, Fortran order, or as a strided view of a bigger buffer."""
    if order == "F":
        return np.asfortranarray(img)
    if order == "strided":
        buf = np.zeros((img.shape[0], 2 * img.shape[1]), img.dtype)
        buf[:, ::2] = img
        return buf[:, ::2]
    return np.ascontiguousarray(img)


def _quantised(img: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round a float64 image to the value grid of ``dtype`` and convert it (clipped)."""
    if dtype.kind == "f":
        return (np.round(img / GRID) * GRID).astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(img), info.min, info.max).astype(dtype)


def _mosaic(recipe: dict) -> synthetic.Mosaic:
    """The synthetic layout of a recipe (float64 images)."""
    common = {"seed": recipe["seed"], "point_sources": recipe["point_sources"],
              "noise": recipe["noise"], "extended_sources": 0, "dtype": np.float64}
    shape, size = tuple(recipe["shape"]), recipe["size"]
    if recipe["layout"] == "tiles":
        return synthetic.tile_grid(*size, shape, overlap=0.3, **common)
    if recipe["layout"] == "dithers":
        return synthetic.dithers(size, shape, offset_arcsec=0.4, **common)
    return synthetic.exposures(size, (1, 2), shape, offset_arcsec=0.4, **common)


def _image(m: synthetic.Mosaic, k: int, recipe: dict, spec: dict, rng: np.random.Generator):
    """Build image ``k`` of a recipe: its pixels, good-pixel mask and DQ array."""
    dtype, kind = np.dtype(recipe["dtype"]), spec["kind"]
    shape = m.data[k].shape
    img = np.full(shape, m.sky[k]) if kind == "constant" else m.data[k].copy()
    if dtype.kind == "f":
        img[rng.random(shape) < recipe["nan_fraction"]] = np.nan
    img = _quantised(img, dtype)
    good = None
    if recipe["mask"] != "none" or kind == "sparse":
        good = rng.random(shape) >= spec["masked"]
    dq = None
    if recipe["dq"]:
        flags = np.array([0, JUMP_DET, DO_NOT_USE | OUTLIER, NON_SCIENCE], np.uint32)
        dq = rng.choice(flags, size=shape, p=[0.85, 0.05, 0.05, 0.05])
    if kind == "sparse":  # one to three usable pixels, all finite
        idx = rng.choice(img.size, spec["nsparse"], replace=False)
        good[...] = False
        good.flat[idx] = True
        img.flat[idx] = _quantised(m.data[k].flat[idx], dtype)
        if dq is not None:
            dq.flat[idx] = 0
    elif kind == "empty:nan":
        img[...] = np.nan
    elif kind == "empty:mask":
        good = np.zeros(shape, bool)
    elif kind == "empty:dq":
        dq = np.full(shape, DO_NOT_USE, np.uint32) if dq is None else dq | DO_NOT_USE
    if good is not None and recipe["mask"] == "uint8":
        good = good.astype(np.uint8)
    img = _as_layout(img.astype(dtype.newbyteorder(recipe["byteorder"])), recipe["order"])
    return img, good, dq


def build_case(recipe: dict) -> Case:
    """Build the `Case` a recipe describes (see `recipes`); the same recipe, the same case.

    Parameters
    ----------
    recipe : dict
        ``layout`` ('tiles', 'dithers', 'exposures'), ``size`` (grid, number of images
        or of exposures), ``shape``, ``seed``, ``point_sources``, ``noise`` (the
        synthetic layout); ``moves`` (east, north arcsec per image: the WCS offsets);
        ``dtype``, ``byteorder``, ``order`` (C, F, strided), ``nan_fraction``, ``mask``
        ('none', 'bool', 'uint8'), ``dq`` (bool), ``rng`` (seed of the pixel draws);
        ``images`` (per image: ``kind``, ``masked`` fraction, ``nsparse``); ``groups``
        and ``names`` (bool).
    """
    m = _mosaic(recipe)
    n = len(recipe["moves"])
    wcs = [synthetic.repoint(w, east, north)
           for w, (east, north) in zip(m.wcs, recipe["moves"], strict=False)]
    rng = np.random.default_rng(recipe["rng"])
    images = [_image(m, k, recipe, recipe["images"][k], rng) for k in range(n)]
    masks = [good for _, good, _ in images]
    dqs = [dq for _, _, dq in images]
    return Case(
        data=[img for img, _, _ in images], wcs=wcs,
        mask=masks if any(x is not None for x in masks) else None,
        dq=dqs if any(x is not None for x in dqs) else None,
        groups=recipe["groups"],
        names=[f"img{k}.fits" for k in range(n)] if recipe["names"] else None,
        recipe=recipe,
    )


_LAYOUTS = {
    "tiles": st.sampled_from([(1, 2), (2, 1), (2, 2), (1, 3), (2, 3)]),
    "dithers": st.integers(2, 6),
    "exposures": st.integers(2, 3),  # of 1 x 2 detectors
}


@st.composite
def recipes(draw, dtypes=DTYPES) -> dict:
    """Draw a recipe for `build_case`: groups are the exposures', random or none.

    Parameters
    ----------
    dtypes : sequence of str
        The image dtypes to draw from.
    """
    layout = draw(st.sampled_from(sorted(_LAYOUTS)))
    size = draw(_LAYOUTS[layout])
    n = {"tiles": int(np.prod(size)), "dithers": size, "exposures": 2 * size}[layout]
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    move = st.floats(-0.25, 0.25).map(lambda v: round(v, 3))  # arcsec: up to 2.5 px
    kind = st.sampled_from(KINDS)
    if dtype.kind != "f":
        kind = kind.filter(lambda k: k != "empty:nan")
    recipe = {
        "layout": layout, "size": size,
        "shape": (draw(st.integers(16, 64)), draw(st.integers(16, 64))),
        "seed": draw(st.integers(0, 2**16)), "point_sources": draw(st.integers(0, 30)),
        "noise": draw(st.sampled_from([1.0, 0.0, 3.0])),
        "moves": [(draw(move), draw(move)) for _ in range(n)],
        "dtype": dtype.name, "byteorder": draw(st.sampled_from("=>")),
        "order": draw(st.sampled_from(["C", "F", "strided"])),
        "nan_fraction": draw(st.sampled_from([0.2, 0.05, 0.5, 0.0]))
        if dtype.kind == "f" else 0.0,
        "mask": draw(st.sampled_from(["none", "bool", "uint8"])), "dq": draw(st.booleans()),
        "rng": draw(st.integers(0, 2**16)),
        "images": [{"kind": draw(kind), "masked": draw(st.sampled_from([0.1, 0.5, 0.0])),
                    "nsparse": draw(st.integers(1, 3))} for _ in range(n)],
        "groups": None, "names": draw(st.booleans()),
    }
    if layout == "exposures":
        recipe["groups"] = [k // 2 for k in range(n)]
    elif draw(st.booleans()):
        recipe["groups"] = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    return recipe


def cases(**kw) -> st.SearchStrategy[Case]:
    """Strategy for a `Case` (keywords as `recipes`)."""
    return recipes(**kw).map(build_case)


def _stats() -> st.SearchStrategy[SkyStat]:
    """Strategy for a `SkyStat`: any statistic, 0 to 5 clipping iterations."""
    return st.builds(SkyStat, st.sampled_from(STATISTICS), nclip=st.sampled_from([0, 1, 3, 5]))


# --------------------------------------------------------------------------- constant offset


#: Offsets, in steps of `GRID` for float images and of 1 for integer ones (see
#: `_offset`): small and large alike.
_STEPS = st.one_of(st.integers(-(2**14), 2**14), st.integers(-(2**40), 2**40))


def _offset(case: Case, steps: int) -> float:
    """The constant ``c`` for ``steps``, such that ``image + c`` is exact in the dtype.

    Float images hold multiples of 1/16 of a few thousand at most: float64 takes any
    multiple of 1/16 up to 2**36, float32 up to 2**19 (the sums stay below 2**20: exact
    in 24 bits).
    Integer images take ``steps`` clipped so that every pixel stays within the dtype's
    range.
    """
    dtype = case.dtype
    if dtype.kind == "f":
        bound = 2**40 if dtype.itemsize == 8 else 2**23
        return float(np.clip(steps, -bound, bound)) * GRID
    info = np.iinfo(dtype)
    lo = int(info.min) - min(int(np.min(img)) for img in case.data)
    hi = int(info.max) - max(int(np.max(img)) for img in case.data)
    return float(np.clip(steps, lo, hi))


def _finite_values(case: Case) -> np.ndarray:
    """All finite pixel values of a case, as float64."""
    values = np.concatenate([img.astype(np.float64).ravel() for img in case.data])
    return values[np.isfinite(values)]


def _tolerance(statistic: str, method: str, case: Case, c: float) -> float:
    """How far the shift relation may miss.

    * 0 for median skies without groups and without ``global+match``: the median of a
      shifted set is the shifted median exactly (values and offset on a grid), and the
      match solver then sees the same differences;
    * 16 units in the last place of the largest value involved for the rest: a mean
      accumulates in float64, a group's sky in an overlap is the npix-weighted mean of
      its members' (DESIGN.md), and ``global+match`` adds ``local - offset`` to the
      offsets, all rounded differently after a shift;
    * plus 1e-9 of the data's range for the histogram statistics (mode, midpt), whose
      bin positions are converted back to data values with a bin width computed from
      the shifted values' standard deviation (rounded differently).
    """
    if statistic == "median" and case.groups is None and method != "global+match":
        return 0.0
    values = _finite_values(case)
    big = float(np.abs(values).max(initial=0.0))
    tol = 16.0 * float(np.spacing(big + abs(c)))
    if statistic in ("mode", "midpt") and values.size:
        tol += 1e-9 * float(values.max() - values.min())
    return tol


#: Four float64 tiles with noise 1 and point sources, plainly measured.
_TILES = {
    "layout": "tiles", "size": (2, 2), "shape": (48, 48), "seed": 1, "point_sources": 20,
    "noise": 1.0, "moves": [(0.0, 0.0)] * 4, "dtype": "float64", "byteorder": "=",
    "order": "C", "nan_fraction": 0.0, "mask": "none", "dq": False, "rng": 0,
    "images": [{"kind": "normal", "masked": 0.0, "nsparse": 1}] * 4, "groups": None,
    "names": False,
}


@pytest.mark.parametrize("statistic", STATISTICS)
@_settings(40)
@given(recipe=recipes(), steps=_STEPS, nclip=st.sampled_from([0, 3]))
@example(recipe=_TILES, steps=16 * 10**6, nclip=3)  # a sky of 1e6 for noise 1 (issue 13)
def test_a_constant_shifts_skies_and_leaves_match_offsets(statistic, recipe, steps, nclip):
    case = build_case(recipe)
    c = _offset(case, steps)
    stat = SkyStat(statistic, nclip=nclip)
    moved = case.shifted(c)
    ngroups = len(set(case.groups)) if case.groups is not None else len(case.data)
    # one group has nothing to match: its "match" sky is its local sky (issue 14)
    match_shift = c if ngroups == 1 else 0.0
    for method, shift in (("global", c), ("match", match_shift), ("global+match", c)):
        tol = _tolerance(statistic, method, case, c)
        before, after = case.run(method, stat=stat), moved.run(method, stat=stat)
        assert_array_equal(after.valid, before.valid, err_msg=method)
        ok = before.valid
        np.testing.assert_allclose(after.sky[ok], before.sky[ok] + shift, rtol=0, atol=tol,
                                   err_msg=f"{method}, c={c}")
        if before.local is not None:  # every image's own (local) sky
            assert_array_equal(np.isnan(after.local), np.isnan(before.local))
            fin = np.isfinite(before.local)
            np.testing.assert_allclose(after.local[fin], before.local[fin] + c, rtol=0,
                                       atol=tol, err_msg=f"local of {method}, c={c}")


# --------------------------------------------------------------------------- permutations


def _components(res, names: list[str]) -> set[frozenset[str]]:
    """The result's connected components as sets of image names."""
    return {frozenset(names[int(k)] for k in comp) for comp in res.components}


def _check_permutation(recipe: dict, key: list[int], stat: SkyStat, exact: bool) -> None:
    """Run every method on a case and on a permutation of it; compare the results.

    The permutation sorts the images by ``key``. Validity, components, local skies and
    the skies of ``local`` and ``global`` are compared exactly. The match offsets
    (``match``, ``global+match``) are compared exactly when ``exact``, else to 16 units
    in the last place of the largest pair sky (a least-squares solve whose equations
    come in another order may round otherwise).
    """
    case = build_case(recipe)
    n = len(case.data)
    perm = [int(k) for k in np.argsort(key[:n], kind="stable")]
    case = replace(case, names=[f"img{k}" for k in range(n)])
    other = case.permuted(perm)
    for method in METHODS:
        a, b = case.run(method, stat=stat), other.run(method, stat=stat)
        assert_array_equal(b.valid, a.valid[perm], err_msg=method)
        if a.local is not None:
            assert_array_equal(b.local, a.local[perm], err_msg=method)
        assert _components(b, other.names) == _components(a, case.names), method
        tol = 0.0
        if "match" in method and not exact and len(a.pairs):
            skies = np.concatenate([a.pairs["sky_i"], a.pairs["sky_j"]])
            tol = 16.0 * float(np.spacing(np.abs(skies[np.isfinite(skies)]).max(initial=1.0)))
        np.testing.assert_allclose(b.sky, a.sky[perm], rtol=0, atol=tol, err_msg=method)


#: A permutation of up to 6 images: the order that sorts these keys.
_KEYS = st.lists(st.integers(0, 5), min_size=6, max_size=6)


@_settings(50)
@given(recipe=recipes(), key=_KEYS, stat=_stats())
def test_permuting_the_images_permutes_every_result(recipe, key, stat):
    _check_permutation(recipe, key, stat, exact=False)


# --------------------------------------------------------------------------- no modification


def _snapshot(case: Case) -> list:
    """Everything the caller owns, as bytes: images, masks, DQ arrays, WCS headers."""

    def state(a):
        if a is None:
            return None
        return (a.dtype.str, a.shape, a.strides, a.flags.writeable, a.tobytes(order="A"))

    return [
        [state(a) for a in case.data],
        None if case.mask is None else [state(a) for a in case.mask],
        None if case.dq is None else [state(a) for a in case.dq],
        [w.to_header_string() for w in case.wcs],
        None if case.groups is None else list(case.groups),
        None if case.names is None else list(case.names),
    ]


def _expected_subtracted(img: np.ndarray, sky: float, valid: bool) -> np.ndarray:
    """What ``subtract=True`` should return: ``img - sky`` (float64 for integers).

    A float image keeps its precision and subtracts the sky rounded to it (as numpy's
    ``img - sky`` does); an integer image is subtracted in float64, never wrapped.
    Nothing is subtracted from an invalid image.
    """
    level = sky if valid else 0.0
    if img.dtype.kind == "f":
        return img - img.dtype.type(level)
    return img.astype(np.float64) - level


@_settings(60)
@given(case=cases(), method=st.sampled_from(METHODS), stat=_stats())
def test_inputs_are_unchanged_and_subtraction_is_exact(case, method, stat):
    before = _snapshot(case)
    plain = case.run(method, stat=stat)
    assert _snapshot(case) == before
    assert plain.data is None and not plain.subtracted
    res = case.run(method, stat=stat, subtract=True)
    assert _snapshot(case) == before
    assert_array_equal(res.sky, plain.sky)
    assert_array_equal(res.valid, plain.valid)
    assert res.subtracted
    for k, (img, out) in enumerate(zip(case.data, res.data, strict=True)):
        out = np.asarray(out)
        assert out.dtype.kind == "f", k
        assert out.dtype.itemsize == (img.dtype.itemsize if img.dtype.kind == "f" else 8), k
        assert not np.shares_memory(out, img), k
        assert_array_equal(out, _expected_subtracted(img, res.sky[k], res.valid[k]),
                           err_msg=f"image {k}")


@_settings(40)
@given(case=cases(dtypes=("float32", "float64")), method=st.sampled_from(METHODS))
def test_inplace_subtraction_changes_only_the_images(case, method):
    originals = [img.copy() for img in case.data]
    before = _snapshot(case)
    res = case.run(method, subtract=True, inplace=True)
    assert _snapshot(case)[1:] == before[1:]  # masks, DQ, WCS, groups, names untouched
    for k, (img, out) in enumerate(zip(case.data, res.data, strict=True)):
        assert out is img, k
        assert_array_equal(img, _expected_subtracted(originals[k], res.sky[k], res.valid[k]),
                           err_msg=f"image {k}")


@_settings(20)
@given(case=cases(dtypes=("int16", "uint16", "int32")))
def test_inplace_on_integer_images_is_refused_before_anything_changes(case):
    before = _snapshot(case)
    with pytest.raises(ValueError, match="inplace"):
        case.run("local", subtract=True, inplace=True)
    assert _snapshot(case) == before


def test_the_same_array_twice_inplace_is_refused_or_subtracted_once():
    m = synthetic.tile_grid(1, 2, shape=(32, 32), seed=1, point_sources=0, dtype=np.float64)
    img = m.data[0]
    original = img.copy()
    try:
        res = match_sky([img, img], [m.wcs[0], m.wcs[0]], method="local", subtract=True,
                        inplace=True)
    except ValueError:
        assert_array_equal(img, original)
        return
    assert res.sky[0] == res.sky[1]
    assert_array_equal(img, original - res.sky[0])


# --------------------------------------------------------------------------- finite or invalid


@pytest.mark.parametrize("method", METHODS)
@_settings(50)
@given(case=cases(), stat=_stats())
def test_skies_are_finite_and_images_without_pixels_invalid(method, case, stat):
    res = case.run(method, stat=stat)
    usable = case.group_usable()
    assert np.isfinite(res.sky).all()
    assert (res.sky[~res.valid] == 0.0).all()
    assert not res.valid[~usable].any(), "an image with no usable pixel has a sky"
    if method != "match":
        # every image with a usable pixel has a local sky, and no other image has one
        assert_array_equal(np.isfinite(res.local), case.usable())
    if method in ("local", "global"):
        assert res.valid[usable].all()


# --------------------------------------------------------------------------- sky_statistic


#: For each source dtype: the float dtypes that hold all its values exactly, and the
#: values drawn for it.
_EXACT_CASTS = {
    "int16": (("float32", "float64"), st.integers(-(2**15), 2**15 - 1)),
    "uint16": (("float32", "float64"), st.integers(0, 2**16 - 1)),
    "int32": (("float32", "float64"), st.integers(-(2**24), 2**24)),
    "int32_wide": (("float64",), st.integers(-(2**31), 2**31 - 1)),
    "float32": (("float64",), st.one_of(st.floats(-1e6, 1e6, width=32),
                                        st.sampled_from([np.nan, np.inf, -np.inf]))),
}


@st.composite
def arrays_and_masks(draw) -> tuple[np.ndarray, np.ndarray | None]:
    """Draw a 2-D array (16-64 a side) of a `_EXACT_CASTS` source dtype, and a mask.

    Half the arrays hold a few values drawn by hypothesis (ties, extremes, NaN and inf
    for float32), scattered at random; half are rounded Gaussian noise (a sky).
    """
    source = draw(st.sampled_from(sorted(_EXACT_CASTS)))
    dtype = np.dtype("int32" if source == "int32_wide" else source)
    shape = (draw(st.integers(16, 64)), draw(st.integers(16, 64)))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if draw(st.booleans()):
        palette = draw(st.lists(_EXACT_CASTS[source][1], min_size=1, max_size=8))
        arr = rng.choice(np.array(palette, dtype=np.float64 if dtype.kind == "f" else np.int64),
                         size=shape).astype(dtype)
    else:
        sigma = draw(st.sampled_from([0.5, 5.0, 50.0]))
        arr = rng.normal(100.0, sigma, shape).round().astype(dtype)
    mask = None
    if draw(st.booleans()):
        mask = rng.random(shape) >= draw(st.sampled_from([0.1, 0.5, 0.99]))
    return arr, mask


def _exact_targets(arr: np.ndarray) -> tuple[str, ...]:
    """The float dtypes that hold every value of ``arr`` exactly."""
    if arr.dtype == np.int32 and np.abs(arr.astype(np.int64)).max(initial=0) > 2**24:
        return _EXACT_CASTS["int32_wide"][0]
    return _EXACT_CASTS[arr.dtype.name][0]


@pytest.mark.parametrize("statistic", STATISTICS)
@_settings(100)
@given(arr_mask=arrays_and_masks(), nclip=st.sampled_from([0, 1, 3, 5]))
@example(arr_mask=(np.array([[4, 1, 4, 3]], np.int16), None), nclip=0)
def test_sky_statistic_is_the_same_in_any_float_dtype_that_holds_the_values(
    statistic, arr_mask, nclip
):
    """The same values give the same statistic in any dtype that holds them exactly.

    Except float32 for ``mode`` and ``midpt``: float32 data are binned in float32
    arithmetic, as the reference bins them (values on a bin edge may fall into the
    other bin than in float64); their parity with the reference is tested in
    test_stats_parity.
    """
    arr, mask = arr_mask
    stat = SkyStat(statistic, nclip=nclip)
    histogram = statistic in ("mode", "midpt")
    if histogram and arr.dtype == np.float32:
        return  # its only exact target is float64
    want = sky_statistic(arr, mask, stat)
    for target in _exact_targets(arr):
        if histogram and np.dtype(target) == np.float32:
            continue
        got = sky_statistic(arr.astype(target), mask, stat)
        assert got.npix == want.npix, target
        assert_array_equal(got.value, want.value, err_msg=target)


@pytest.mark.parametrize("statistic", STATISTICS)
@_settings(60)
@given(arr_mask=arrays_and_masks(), nclip=st.sampled_from([0, 1, 3, 5]))
@example(arr_mask=(np.array([[4, 1, 4, 3]], np.float32), None), nclip=0)  # issue 13
def test_sky_statistic_does_not_depend_on_byte_order(statistic, arr_mask, nclip):
    """Big-endian data (as FITS files hold them) give the native result, bit for bit."""
    arr, mask = arr_mask
    stat = SkyStat(statistic, nclip=nclip)
    want = sky_statistic(arr, mask, stat)
    got = sky_statistic(arr.astype(arr.dtype.newbyteorder(">")), mask, stat)
    assert got.npix == want.npix
    assert_array_equal(got.value, want.value)


@pytest.mark.parametrize("statistic", STATISTICS)
@_settings(100)
@given(dtype=st.sampled_from(["float32", "float64"]), seed=st.integers(0, 2**16),
       sigma=st.sampled_from([0.5, 2.0, 10.0]),
       k=st.one_of(st.integers(-64, 64), st.integers(-1000, 1000)),
       nclip=st.sampled_from([0, 1, 3, 5]))
@example(dtype="float64", seed=0, sigma=2.0, k=-20, nclip=0)  # a sky of 1e-4
@example(dtype="float64", seed=0, sigma=2.0, k=-665, nclip=3)  # 1e-200 (issue 13)
@example(dtype="float64", seed=0, sigma=2.0, k=830, nclip=3)  # 1e252
def test_sky_statistic_scales_exactly_by_powers_of_two(statistic, dtype, seed, sigma, k,
                                                        nclip):
    """``stat(x * 2**k) == stat(x) * 2**k``: a statistic does not depend on the units.

    float32 values of ~100 stay normal for ``|k| <= 100`` (``k`` is clipped to that);
    float64 ones for any ``k`` here, though their squares under- or overflow beyond
    ``|k|`` ~ 450 (the statistics must rescale).
    """
    if dtype == "float32":
        k = max(-100, min(100, k))
    stat = SkyStat(statistic, nclip=nclip)
    rng = np.random.default_rng(seed)
    arr = (np.round(rng.normal(100.0, sigma, (40, 30)) / GRID) * GRID).astype(dtype)
    want = sky_statistic(arr, None, stat)
    got = sky_statistic(np.ldexp(arr, k).astype(dtype), None, stat)
    assert got.npix == want.npix
    assert got.value == np.ldexp(want.value, k)
