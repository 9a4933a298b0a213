"""An astropy compound model evaluated leaf by leaf: a gwcs forward transform, cheaply.

Calling an astropy compound model costs about 0.1 ms per leaf whatever the number of
points: each leaf's ``__call__`` validates and broadcasts its inputs, builds its
parameter sets and reshapes its outputs. The forward transform of a JWST NIRCam
detector has 23 leaves joined by ``|`` and ``&``: 2.2 ms per call, while its arithmetic
on a thousand points takes about a third of that. `FlatModel` walks the tree once and
calls each leaf's ``evaluate`` with the parameter sets taken at that time, passing
arrays from leaf to leaf as the operators say.

It also takes the steps of a gwcs pipeline as they are, ``FlatModel(*steps)`` for
``steps[0] | steps[1] | ...``, and composes that compound model only if it has to call
it: astropy builds a model of a few dozen leaves in about a millisecond.

It is trusted only as far as it was seen to agree. Each model *structure* (the tree of
operators, the leaf classes and their parameter shapes: everything but the parameter
values) is judged once per process: the first call of a model of an unseen structure
calls the model itself and the flat program on the same points, and the structure is
trusted when every output is identical to the last bit (the flat program runs the very
same ``evaluate`` code on the very same parameter arrays, so anything else means the
model's ``__call__`` does more, and then the model is always called). Models with
units, model sets, or operators other than ``|`` and ``&`` are never flattened.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: structure -> whether its flat program reproduced the model's own call.
_TRUSTED: dict[tuple, bool] = {}

_Program = Callable[..., tuple[Any, ...]]


def _compile(model: Any) -> tuple[_Program, tuple] | None:
    """Return the flat program of a model and its structure (None: not flattened)."""
    op = getattr(model, "op", None)
    if op is not None:  # a compound model
        if op not in ("|", "&"):
            return None
        left, right = _compile(model.left), _compile(model.right)
        if left is None or right is None:
            return None
        if op == "|":
            return _pipe(left, right)
        run_left, run_right = left[0], right[0]
        split = int(model.left.n_inputs)

        def join(*args: Any) -> tuple[Any, ...]:
            return (*run_left(*args[:split]), *run_right(*args[split:]))

        return join, ("&", left[1], right[1])
    if len(model) != 1 or getattr(model, "_has_units", True):
        return None
    params = tuple(model._param_sets(raw=True, units=False))
    evaluate = model.evaluate
    n_out = int(model.n_outputs)
    cls = type(model)
    shape = (f"{cls.__module__}.{cls.__qualname__}", int(model.n_inputs), n_out,
             tuple(np.shape(p) for p in params), getattr(model, "mapping", None))
    if n_out == 1:
        def one(*args: Any) -> tuple[Any, ...]:
            return (evaluate(*args, *params),)

        return one, shape

    def many(*args: Any) -> tuple[Any, ...]:
        return tuple(evaluate(*args, *params))

    return many, shape


def uses_quantity(*parts: Any) -> bool:
    """Tell whether ``parts[0] | parts[1] | ...`` would be evaluated with quantities.

    astropy's ``Model.uses_quantity`` of the composed model (no parameter at all, or a
    parameter with a unit), read from the leaves' parameters instead of converting
    every parameter to a Quantity (0.1-0.2 ms for a NIRCam detector). Anything that
    is not an astropy model counts as using quantities (the gwcs is then called).
    """
    leaves: list[Any] = []
    todo = list(parts)
    while todo:
        model = todo.pop()
        if getattr(model, "op", None) is not None:
            todo += [model.left, model.right]
        else:
            leaves.append(model)
    try:
        if not any(leaf.param_names for leaf in leaves):
            return True
        return any(leaf._has_units for leaf in leaves if leaf.param_names)
    except AttributeError:
        return True


def _pipe(left: tuple[_Program, tuple] | None,
          right: tuple[_Program, tuple] | None) -> tuple[_Program, tuple] | None:
    """Return the flat program and structure of ``left | right`` (None if either is)."""
    if left is None or right is None:
        return None
    run_left, run_right = left[0], right[0]

    def chain(*args: Any) -> tuple[Any, ...]:
        return run_right(*run_left(*args))

    return chain, ("|", left[1], right[1])


class FlatModel:
    """A chain of astropy models, called leaf by leaf once its structure is trusted.

    Parameters
    ----------
    *parts : astropy.modeling.Model
        The models ``parts[0] | parts[1] | ...`` (one model, or the steps of a gwcs
        pipeline); their parameter values are read now (later changes are not seen).
        The compound model itself is only built when it has to be called (to judge a
        structure not seen yet, or when the flat program cannot run): astropy
        composes a large model in about a millisecond.
    """

    __slots__ = ("_model", "_parts", "_program", "_structure")

    def __init__(self, *parts: Any) -> None:
        if not parts:
            raise TypeError("FlatModel needs at least one model")
        self._parts = parts
        self._model = parts[0] if len(parts) == 1 else None
        try:  # (a leaf with units is not compiled: `_compile` returns None)
            compiled = _compile(parts[0])
            for part in parts[1:]:
                compiled = _pipe(compiled, _compile(part))
        except Exception:  # an astropy without the internals used here: call the model
            compiled = None
        self._program, self._structure = compiled if compiled is not None else (None, None)

    @property
    def model(self) -> Any:
        """The compound model ``parts[0] | parts[1] | ...`` (built on first use)."""
        if self._model is None:
            model = self._parts[0]
            for part in self._parts[1:]:
                model = model | part
            self._model = model
        return self._model

    @property
    def flat(self) -> bool | None:
        """Whether calls run the flat program: True, False, or None (not judged yet)."""
        if self._program is None:
            return False
        return _TRUSTED.get(self._structure)

    def __call__(self, *inputs: np.ndarray) -> tuple[Any, ...]:
        """Evaluate the model on 1-D float arrays of one length.

        Parameters
        ----------
        *inputs : ndarray
            One per model input, 1-D, all of the same length.

        Returns
        -------
        tuple of ndarray
            One per model output, the shape of the inputs.
        """
        trusted = self.flat
        if trusted is False or inputs[0].ndim != 1 or inputs[0].size == 0:
            return self._called(inputs)
        if trusted is None:
            out = self._called(inputs)
            _TRUSTED[self._structure] = same = self._agrees(inputs, out)
            log.debug("%s the leaf-by-leaf evaluation of a model of %d leaves",
                      "trusting" if same else "not trusting",
                      getattr(self.model, "n_submodels", 1))
            return out
        try:
            out = self._program(*inputs)
        except Exception:  # unexpected: the model itself says what went wrong
            return self._called(inputs)
        if all(np.shape(o) == inputs[0].shape for o in out):
            return out
        return self._called(inputs)

    def _called(self, inputs: tuple[np.ndarray, ...]) -> tuple[Any, ...]:
        """Call the model itself; its outputs as a tuple (one output included)."""
        out = self.model(*inputs)
        return out if isinstance(out, tuple) else (out,)

    def _agrees(self, inputs: tuple[np.ndarray, ...], expected: tuple[Any, ...]) -> bool:
        """Whether the flat program gives exactly ``expected`` on ``inputs``."""
        try:
            out = self._program(*inputs)
        except Exception:
            return False
        return len(out) == len(expected) and all(
            isinstance(e, np.ndarray) and np.shape(o) == e.shape
            and np.array_equal(o, e, equal_nan=True)
            for o, e in zip(out, expected, strict=True)
        )
