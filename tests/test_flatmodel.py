"""The leaf-by-leaf evaluation of gwcs forward transforms (`skyeq._flatmodel`)."""

import pickle

import numpy as np
import pytest
from astropy import units as u
from astropy.modeling import Model, models
from nircam_helpers import load_nircam

from skyeq import _flatmodel, synthetic
from skyeq._flatmodel import FlatModel
from skyeq.wcs import as_wcs_adapter


@pytest.fixture(autouse=True)
def _fresh_trust(monkeypatch):
    """Every test starts with no structure judged."""
    monkeypatch.setattr(_flatmodel, "_TRUSTED", {})


def _points(n=500, seed=3):
    rng = np.random.default_rng(seed)
    return rng.uniform(-0.5, 2047.5, n), rng.uniform(-0.5, 2047.5, n)


def test_nircam_forward_is_reproduced_bit_for_bit_and_repointed_copies_run_flat():
    base = synthetic.repoint(load_nircam(), 0.0, 0.0)  # the structure of every dither
    x, y = _points()
    first = FlatModel(base.forward_transform)
    assert first.flat is None
    want = base.forward_transform(x, y)
    got = first(x, y)  # judges the structure: the model's own numbers come back
    assert first.flat is True
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
    # a dither: same structure, other parameters; runs the flat program straight away
    other = synthetic.repoint(load_nircam(), 7.0, -4.0).forward_transform
    flat = FlatModel(other)
    assert flat.flat is True
    x2, y2 = _points(seed=4)
    got = flat(x2, y2)
    want = other(x2, y2)
    assert not np.array_equal(want[0], base.forward_transform(x2, y2)[0])  # moved
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


def test_adapter_pixel_to_world_matches_the_gwcs_on_any_input_shape():
    w = load_nircam()
    adapter = as_wcs_adapter(w, shape=(2048, 2048))
    fwd = w.forward_transform
    assert _flatmodel._TRUSTED  # the check judged the structure
    for x, y in [(3.0, 4.0), (np.arange(6.0).reshape(2, 3), np.ones((2, 3))),
                 (np.zeros(0), np.zeros(0)), _points(7)]:
        ra, dec = adapter.pixel_to_world(x, y)
        wra, wdec = fwd(x, y)
        assert ra.shape == np.shape(x)
        np.testing.assert_array_equal(ra, np.mod(wra, 360.0))
        np.testing.assert_array_equal(dec, wdec)
    # a pickled adapter rebuilds its program and gives the same numbers
    back = pickle.loads(pickle.dumps(adapter))
    x, y = _points(9)
    for a, b in zip(back.pixel_to_world(x, y), adapter.pixel_to_world(x, y), strict=True):
        np.testing.assert_array_equal(a, b)


class _Louder(Model):
    """A model whose ``__call__`` does more than its ``evaluate``: flattening would lie."""

    n_inputs = 1
    n_outputs = 1

    @staticmethod
    def evaluate(x):
        return x

    def __call__(self, *args, **kwargs):
        return super().__call__(*args, **kwargs) + 1.0


def test_a_structure_whose_flat_program_disagrees_is_never_flattened():
    model = (models.Shift(2.0) & models.Shift(3.0)) | (_Louder() & models.Scale(2.0))
    x, y = _points(50)
    flat = FlatModel(model)
    assert flat.flat is None
    got = flat(x, y)
    assert flat.flat is False
    np.testing.assert_array_equal(got[0], x + 3.0)  # the model's own answer
    np.testing.assert_array_equal(got[1], 2.0 * (y + 3.0))
    again = FlatModel(model)(x, y)
    np.testing.assert_array_equal(again[0], x + 3.0)


@pytest.mark.parametrize("model", [
    models.Shift(1.0) & models.Shift(2.0) | models.Mapping((0, 1)) + models.Mapping((1, 0)),
    models.Shift(1.0 * u.pix) & models.Shift(2.0 * u.pix),
    models.Shift([1.0, 2.0], n_models=2) & models.Shift([3.0, 4.0], n_models=2),
])
def test_arithmetic_units_and_model_sets_are_called_as_they_are(model):
    flat = FlatModel(model)
    assert flat.flat is False
    x = np.arange(2.0) * (u.pix if model.uses_quantity else 1.0)
    got = flat(x, x)
    want = model(x, x)
    for g, w in zip(got, want, strict=True):
        assert np.array_equal(g, w)
    assert not _flatmodel._TRUSTED


def test_one_output_comes_back_as_a_tuple_either_way():
    model = models.Shift(1.0) | models.Scale(3.0)
    x = np.arange(5.0)
    flat = FlatModel(model)
    first = flat(x)  # judged on this call: the model's own output
    assert flat.flat is True
    second = flat(x)  # the flat program's
    for out in (first, second):
        assert isinstance(out, tuple) and len(out) == 1
        np.testing.assert_array_equal(out[0], 3.0 * (x + 1.0))


def test_pipeline_steps_are_called_without_composing_them():
    # a JWST gwcs has four frames: the adapter keeps the three step transforms and
    # never reads gwcs's forward_transform (which composes them, ~1.4 ms a read)
    w = load_nircam()
    cls = type(w)
    reads = []
    prop = cls.forward_transform

    class Counting(cls):
        @property
        def forward_transform(self):  # an override: composed the gwcs way, counted
            reads.append(1)
            return prop.fget(self)

    steps = [s.transform for s in w.pipeline[:-1]]
    assert len(steps) == 3
    fwd = w.forward_transform
    x, y = _points(300, seed=8)
    want = fwd(x, y)
    flat = FlatModel(*steps)
    assert flat.flat is None and flat._model is None
    got = flat(x, y)  # judged: the compound model is built for that, once
    assert flat.flat is True and flat._model is not None
    for g, e in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, e)
    again = FlatModel(*steps)
    for g, e in zip(again(x, y), want, strict=True):
        np.testing.assert_array_equal(g, e)
    assert again._model is None  # trusted: never composed
    # through the adapter: the steps, bit for bit what the gwcs gives
    adapter = as_wcs_adapter(w, shape=(2048, 2048))
    assert len(adapter.transforms.parts) == 3
    ra, dec = adapter.pixel_to_world(x, y)
    np.testing.assert_array_equal(ra, np.mod(want[0], 360.0))
    np.testing.assert_array_equal(dec, want[1])
    # a subclass with its own forward_transform is read through that property
    sub = Counting(forward_transform=w.pipeline, output_frame=w.output_frame)
    ad = as_wcs_adapter(sub, shape=(2048, 2048))
    assert reads and len(ad.transforms.parts) == 1
    np.testing.assert_array_equal(ad.pixel_to_world(x, y)[0], ra)


@pytest.mark.parametrize("model", [
    models.Shift(1.0) | models.Scale(2.0),
    models.Mapping((0, 1)) | models.Mapping((1, 0)),  # no parameter at all
    models.Shift(1.0 * u.deg) & models.Shift(2.0),
    (models.Shift(1.0) & models.Shift(2.0 * u.deg)) | (models.Scale(3.0) & models.Scale(1.0)),
    models.Shift(1.0) + models.Shift(2.0 * u.deg),
    models.Identity(2),
    models.Polynomial2D(2),
])
def test_uses_quantity_as_astropy_says(model):
    assert _flatmodel.uses_quantity(model) is model.uses_quantity
    if getattr(model, "op", None) == "|":  # the same, given as two steps
        assert _flatmodel.uses_quantity(model.left, model.right) is model.uses_quantity


def test_uses_quantity_of_the_nircam_steps():
    w = load_nircam()
    steps = [s.transform for s in w.pipeline[:-1]]
    assert _flatmodel.uses_quantity(*steps) is w.forward_transform.uses_quantity is False
