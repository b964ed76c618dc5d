"""The public entry points and objects: derive, evaluate, vjp, compile; Derivation, Pullback.

The core builds plain records (``model``); this is where they meet the features
that are functions of them (printers, recognition, explanation, the matrix view),
offered as methods of the public ``Derivation`` and ``Pullback``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from . import model
from .conv.padding import NotPaddedConv, PaddedConv, padding_mode_call
from .conv.recognise import Recognition, convolutions
from .derive import derivation as derive_record
from .emit.latex import derivation_latex, statement_latex
from .emit.outputs import source as emitted_source
from .emit.padding_mode import padding_mode_data
from .emit.text import derivation_text, statement_text
from .errors import ArgumentError, EinderiveError
from .explain import Explanation, Step, explain, steps
from .front import ParamValues, RangeValues, ShapeValues, analyse, learnable_scalars
from .matrix import Im2col, Jacobian, im2col, jacobian
from .run.compile import Compiled, _frozen
from .run.compile import compile as compile_text


class Pullback(model.Pullback):
    """The pullback (vector-Jacobian product) into one tensor, in gather form."""

    def notation(self) -> str:
        """The pullback in the notation, on one line (reads out of range are zero)."""
        return statement_text(self.statement, with_domain=False, shapes=self.shapes)

    def latex(self) -> str:
        return statement_latex(self.statement)

    def _repr_latex_(self) -> str:
        return f"$\\displaystyle {self.latex()}$"

    def __str__(self) -> str:
        return statement_text(self.statement, shapes=self.shapes)

    def __repr__(self) -> str:
        return f"Pullback({self.notation()!r})"


class Derivation(model.Derivation):
    """A forward program and the pullbacks of its inputs, printable and runnable."""

    pullbacks: Mapping[str, Pullback]

    @property
    def intermediates(self) -> tuple[Pullback, ...]:
        """The pullbacks into intermediate tensors (their cotangents), in evaluation order.

        >>> derive("H[i] = W[m]*X[i+m]; Y[i] = tanh(H[i])").intermediates
        (Pullback('dH[p] = dY[p] * (1 - tanh(H[p])**2)'),)
        """
        return tuple(
            Pullback(p.tensor, p.statement, p.cotangent, p.shapes) for p in super().intermediates
        )

    @property
    def convolutions(self) -> dict[str, Recognition]:
        """Each pullback recognised as a generic convolution call, or why it is not one."""
        return convolutions(self)

    @property
    def padding_mode(self) -> PaddedConv | NotPaddedConv | None:
        """The forward as PyTorch's convolution with a ``padding_mode`` (a convolution over
        a wrapped, clamped or reflected read, the sizes given): the mode, the padding, the
        unpadded call on the padded input and each pullback's call on it; or why it is not
        one call; None if the forward reads nothing through ``mod``, ``clamp``, ``reflect``.

        >>> d = derive("Y[i] = W[m]*X[mod(i+m-1, 8)]", shapes={"X": (8,), "W": (3,), "Y": (8,)})
        >>> d.padding_mode.mode, d.padding_mode.padding
        ('circular', ((1, 1),))
        """
        return padding_mode_call(self)

    def padding_mode_calls(self) -> dict[str, Any] | None:
        """``padding_mode`` as code that runs as printed (the ``padding_mode`` entry of the
        JSON): ``forward.{jax,torch}.code`` (the pad, then the call; ``torch.module``: the
        same as ``nn.ConvNd(padding=p, padding_mode=...)`` where it is one),
        ``pullbacks.<T>.{jax,torch}.code`` (the call on the padded input, the input's then
        folded back by the adjoint of the padding); ``{"reason": ...}`` if not one call.
        """
        return padding_mode_data(self)

    def source(self, kind: str = "loops") -> str:
        """Standalone Python source of the forward and every pullback.

        ``kind`` is ``"loops"`` (NumPy loops with the exact bounds), ``"numpy"``
        (vectorized NumPy), ``"jax"`` or ``"torch"`` (the convolution calls, einsum
        elsewhere).
        """
        return emitted_source(self, kind)

    def steps(self) -> list[Step]:
        """The derivation as numbered steps."""
        return steps(self)

    def explain(self) -> Explanation:
        """The steps, printable as text (``.text()``) and LaTeX (``.latex()``)."""
        return explain(self)

    def jacobian(self, wrt: str, **options: Any) -> Jacobian:
        """The Jacobian of the output in ``wrt`` over the flattened tensors (numeric sizes)."""
        return jacobian(self, wrt, **options)

    def im2col(self) -> Im2col:
        """The im2col view of a convolution: the unfolded input and the reshaped kernel."""
        return im2col(self)

    def latex(self) -> str:
        return derivation_latex(self)

    def _repr_latex_(self) -> str:
        return f"$\\displaystyle {self.latex()}$"

    def __str__(self) -> str:
        return derivation_text(self)

    def __repr__(self) -> str:
        names = ", ".join(p.name for p in self.pullbacks.values())
        return f"Derivation({self.program.text!r} -> {names})"


def public(record: model.Derivation) -> Derivation:
    """The record as the public object (its pullbacks too)."""
    if isinstance(record, Derivation):
        return record
    pullbacks = {
        name: Pullback(p.tensor, p.statement, p.cotangent, p.shapes)
        for name, p in record.pullbacks.items()
    }
    return Derivation(record.program, record.backward, pullbacks)


def derive_program(program: model.Program, wrt: Iterable[str] | None = None) -> Derivation:
    """The pullbacks of an analysed program."""
    return public(derive_record(program, wrt))


@functools.lru_cache(maxsize=256)
def _derive_cached(
    text: str, params: tuple | None, shapes: tuple | None, ranges: tuple | None, wrt: tuple | None
) -> Derivation:
    program = analyse(
        text,
        dict(params) if params is not None else None,
        dict(shapes) if shapes is not None else None,
        dict(ranges) if ranges is not None else None,
        learnable_scalars(text, wrt),
    )
    return derive_program(program, wrt)


def derive(
    text: str,
    params: ParamValues | None = None,
    shapes: ShapeValues | None = None,
    ranges: RangeValues | None = None,
    wrt: Iterable[str] | None = None,
) -> Derivation:
    """Derive the pullback of every input of ``text`` in gather form.

    >>> d = derive("Y[i] = W[m]*X[i+m]")
    >>> print(d.pullbacks["X"].notation())
    dX[p] = sum_{i}(dY[i] * W[p - i])
    """
    if not isinstance(text, str):
        raise ArgumentError(f"the expression must be a string, not {type(text).__name__}")
    try:
        try:
            key = (_frozen(params), _frozen(shapes), _frozen(ranges))
        except TypeError:
            program = analyse(text, params, shapes, ranges, learnable_scalars(text, wrt))
            return derive_program(program, wrt)
        return _derive_cached(text, *key, tuple(wrt) if wrt is not None else None)
    except EinderiveError as error:
        raise error.with_text(text) from None


def compile(  # noqa: A001 - the name users expect, as re.compile
    text: str,
    params: ParamValues | None = None,
    shapes: ShapeValues | None = None,
    ranges: RangeValues | None = None,
    backend: str = "numpy",
    out_of_range: str = "zero",
) -> Compiled:
    """``text`` planned once for ``backend``: ``.forward(**inputs)``, ``.vjp(dY, **inputs)``.

    The printed module of ``backend`` (``"numpy"``, ``"jax"``, ``"torch"``; ``"loops"``
    is the reference interpreter) is compiled once per input shapes and cached, per
    text, parameters, shapes, ranges and backend.

    ``out_of_range``: a value of an index array outside the axis it reads (``tok`` in
    ``E[tok[b], d]`` past E's rows) reads zero (``"zero"``, as every read outside a
    tensor), or is an error naming the value and the axis (``"raise"``).

    >>> c = compile("Y[i] = W[m]*X[i+m]")
    >>> c.forward(W=np.array([1.0, 2.0]), X=np.array([1.0, 0.0, 3.0]))
    array([1., 6.])
    """
    return compile_text(text, params, shapes, ranges, backend, out_of_range)


def _inputs(inputs: Mapping[str, Any]) -> Mapping[str, Any]:
    if type(inputs) is dict and all([type(k) is str for k in inputs]):
        return inputs  # the usual case, checked without the ABC machinery
    if not isinstance(inputs, Mapping) or not all(isinstance(k, str) for k in inputs):
        raise ArgumentError("inputs must map tensor names to arrays")
    return inputs


def evaluate(
    text: str,
    inputs: Mapping[str, Any],
    params: ParamValues | None = None,
    shapes: ShapeValues | None = None,
    ranges: RangeValues | None = None,
    out_of_range: str = "zero",
) -> np.ndarray:
    """The forward value of ``text`` (its last statement) by the reference interpreter.

    >>> evaluate("Y[i] = W[m]*X[i+m]", {"W": [1.0, 2.0], "X": [1.0, 0.0, 3.0]})
    array([1., 6.])
    """
    compiled = compile_text(text, params, shapes, ranges, "loops", out_of_range)
    return compiled.forward(**_inputs(inputs))


def vjp(
    text: str,
    inputs: Mapping[str, Any],
    cotangent: Any,
    params: ParamValues | None = None,
    shapes: ShapeValues | None = None,
    ranges: RangeValues | None = None,
    backend: str = "loops",
    out_of_range: str = "zero",
) -> dict[str, Any]:
    """The pullback of ``cotangent`` into every input, computed by ``backend``.

    NumPy arrays in give NumPy arrays out; the backend's own arrays (torch tensors,
    JAX arrays) give the backend's arrays.

    >>> grads = vjp("Y[i] = W[m]*X[i+m]", {"W": [1.0, 2.0], "X": [1.0, 0.0, 3.0]}, [1.0, 1.0])
    >>> grads["X"]
    array([1., 3., 2.])
    """
    compiled = compile_text(text, params, shapes, ranges, backend, out_of_range)
    return compiled.vjp(cotangent, **_inputs(inputs))
