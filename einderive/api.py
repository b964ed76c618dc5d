"""The public entry points: derive, evaluate, vjp (verify lives in verify.py)."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from . import backends
from .analysis import (
    ParamValues,
    Program,
    RangeValues,
    ShapeValues,
    analyse,
    input_names,
    learnable_scalars,
)
from .derivation import Derivation, Pullback
from .derive import pullbacks
from .errors import ArgumentError, EinderiveError
from .evaluate import run_statements


def _frozen(mapping: Mapping | None) -> tuple | None:
    """A hashable key for the derivation cache (TypeError if the values are not hashable)."""
    if mapping is None:
        return None
    if not isinstance(mapping, Mapping):
        raise ArgumentError(f"expected a mapping of names, not {mapping!r}")
    key = tuple(
        sorted(
            ((k, tuple(v) if isinstance(v, list | tuple) else v) for k, v in mapping.items()),
            key=lambda item: str(item[0]),
        )
    )
    hash(key)
    return key


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


def derive_program(program: Program, wrt: Iterable[str] | None = None) -> Derivation:
    """The pullbacks of an analysed program."""
    if not program.inputs:
        raise nothing_to_differentiate(program)
    if wrt is not None:
        unknown = [name for name in wrt if name not in program.inputs]
        integers = [p.name for p in program.params if p.name in unknown and p.is_integer]
        if integers:
            raise ArgumentError(
                f"cannot differentiate with respect to {', '.join(map(repr, integers))}: "
                "used in an index, a parameter is an integer (a stride, a dilation, an "
                "offset); only one used as a value (alpha*X[i]) can be learned"
            )
        if unknown:
            raise ArgumentError(
                f"cannot differentiate with respect to {', '.join(map(repr, unknown))}: "
                f"the inputs are {', '.join(program.inputs)}"
            )
    backward = pullbacks(program, wrt)
    result = {
        name: Pullback(
            name,
            next(s for s in backward.statements if s.target == backward.cotangents[name]),
            backward.seeds[0],
        )
        for name in program.inputs
        if wrt is None or name in wrt
    }
    return Derivation(program, backward, result)


def nothing_to_differentiate(program: Program) -> ArgumentError:
    """The error for a program that reads no tensor, with the way to make one."""
    statement = program.statements[-1]
    named = sorted({p.name for p in program.params} | set(program.values))
    if not named:
        return ArgumentError("nothing to differentiate: the expression reads no tensor")
    names = ", ".join(named)
    first = named[0]
    return ArgumentError(
        f"nothing to differentiate: the expression reads no tensor ({names} "
        f"{'is a parameter' if len(named) == 1 else 'are parameters'}); write {first}[] "
        f"for a 0-d tensor, or differentiate with respect to it (--wrt {first}, "
        f"wrt=[{first!r}])",
        statement.span,
        program.text,
    )


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


def _as_array(name: str, value: object) -> np.ndarray:
    detach = getattr(value, "detach", None)  # a torch tensor that requires grad
    if callable(detach):
        value = detach().cpu()
    try:
        array = np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError):
        raise ArgumentError(f"{name!r} must be a numeric array") from None
    return array


def _input_shapes(
    text: str, inputs: Mapping[str, np.ndarray], shapes: ShapeValues | None
) -> dict[str, tuple[int, ...]]:
    merged: dict[str, tuple[int, ...]] = {k: tuple(v) for k, v in (shapes or {}).items()}
    for name, array in inputs.items():
        shape = tuple(np.shape(_as_array(name, array)))
        if name in merged and tuple(merged[name]) != shape:
            raise ArgumentError(
                f"{name!r} has shape {shape}, but shapes= says {tuple(merged[name])}"
            )
        merged[name] = shape
    return merged


def _check_inputs(program: Program, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    missing = [name for name in program.inputs if name not in inputs]
    if missing:
        raise ArgumentError(f"no array given for {', '.join(map(repr, missing))}")
    extra = [name for name in inputs if name not in program.inputs]
    if extra:
        raise ArgumentError(
            f"arrays given for {', '.join(map(repr, extra))}, which the expression does not read"
        )
    return {name: _as_array(name, inputs[name]) for name in program.inputs}


def numeric_program(
    text: str,
    inputs: Mapping[str, np.ndarray],
    params: ParamValues | None,
    shapes: ShapeValues | None,
    ranges: RangeValues | None,
) -> Program:
    """The program with every size taken from the arrays; every parameter must have a number."""
    if not isinstance(inputs, Mapping):
        raise ArgumentError("inputs must map tensor names to arrays")
    try:
        names = input_names(text)
    except EinderiveError as error:
        raise error.with_text(text) from None
    # an array for a parameter used as a value makes it a 0-d input (a learnable scalar)
    scalars = learnable_scalars(text, [name for name in inputs if name not in names])
    extra = [name for name in inputs if name not in names and name not in scalars]
    if extra:
        raise ArgumentError(
            f"arrays given for {', '.join(map(repr, extra))}, which the expression does not read"
        )
    try:
        program = analyse(text, params, _input_shapes(text, inputs, shapes), ranges, scalars)
    except EinderiveError as error:
        raise error.with_text(text) from None
    if program.params:
        symbolic = ", ".join(p.name for p in program.params)
        raise ArgumentError(f"give a number for every parameter: params={{...}} for {symbolic}")
    return program


def evaluate(
    text: str,
    inputs: Mapping[str, np.ndarray],
    params: ParamValues | None = None,
    shapes: ShapeValues | None = None,
    ranges: RangeValues | None = None,
) -> np.ndarray:
    """The forward value of ``text`` (its last statement) by direct interpretation.

    >>> evaluate("Y[i] = W[m]*X[i+m]", {"W": [1.0, 2.0], "X": [1.0, 0.0, 3.0]})
    array([1., 6.])
    """
    program = numeric_program(text, inputs, params, shapes, ranges)
    arrays = _check_inputs(program, inputs)
    values = run_statements(program.statements, program.shapes, arrays)
    return values[program.output]


def vjp(
    text: str,
    inputs: Mapping[str, np.ndarray],
    cotangent: np.ndarray,
    params: ParamValues | None = None,
    shapes: ShapeValues | None = None,
    ranges: RangeValues | None = None,
    backend: str = "loops",
) -> dict[str, Any]:
    """The pullback of ``cotangent`` into every input, computed by ``backend``.

    NumPy arrays, or with ``backend="torch"`` (``"jax"``) torch tensors (jax arrays) for
    the inputs given as such, in their dtype.

    >>> grads = vjp("Y[i] = W[m]*X[i+m]", {"W": [1.0, 2.0], "X": [1.0, 0.0, 3.0]}, [1.0, 1.0])
    >>> grads["X"]
    array([1., 3., 2.])
    """
    program = numeric_program(text, inputs, params, shapes, ranges)
    arrays = _check_inputs(program, inputs)
    derivation = derive_program(program)
    output_shape = tuple(int(n) for n in program.shapes[program.output])
    cotangent = _as_array("cotangent", cotangent)
    if cotangent.shape != output_shape:
        raise ArgumentError(
            f"the cotangent has shape {cotangent.shape}; the output "
            f"{program.output!r} has shape {output_shape}"
        )
    grads = backends.run(backend, derivation, arrays, cotangent)
    return _as_given(grads, inputs, backend)


def _as_given(
    grads: dict[str, np.ndarray], inputs: Mapping[str, Any], backend: str
) -> dict[str, Any]:
    """The torch (jax) backend's pullbacks as torch tensors (jax arrays) where the inputs
    were: each in its input's dtype and device, as the framework's own gradients are."""
    if backend == "torch":
        import torch

        return {
            name: torch.from_numpy(np.ascontiguousarray(grad)).to(
                device=inputs[name].device, dtype=inputs[name].dtype
            )
            if isinstance(inputs[name], torch.Tensor)
            else grad
            for name, grad in grads.items()
        }
    if backend == "jax":
        import jax

        return {
            name: jax.numpy.asarray(grad, dtype=inputs[name].dtype)
            if isinstance(inputs[name], jax.Array)
            else grad
            for name, grad in grads.items()
        }
    return grads
