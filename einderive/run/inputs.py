"""Arrays given to a derivation: their names and shapes checked, sizes read from them."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import sympy

from ..errors import ArgumentError, EinderiveError
from ..front import (
    ParamValues,
    RangeValues,
    ShapeValues,
    analyse,
    input_names,
    learnable_scalars,
)
from ..model import Program, index_positions


def as_array(name: str, value: object) -> np.ndarray:
    detach = getattr(value, "detach", None)  # a torch tensor, perhaps requiring grad
    if callable(detach):
        value = detach().cpu()
    try:
        return np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError):
        raise ArgumentError(f"{name!r} must be a numeric array") from None


def as_index_array(name: str, value: object, keep_tensor: bool = False) -> Any:
    """An index array as int64 NumPy: integers only (a float array is refused, even one
    holding whole numbers: positions are integers by type, as in torch and NumPy).

    ``keep_tensor``: a torch tensor stays one, int64 on its device (the PyTorch backend's
    modules read it there, with no copy to the host)."""
    detach = getattr(value, "detach", None)
    if callable(detach) and keep_tensor:
        tensor: Any = detach()
        if tensor.is_floating_point() or tensor.is_complex() or str(tensor.dtype) == "torch.bool":
            raise ArgumentError(
                f"{name!r} is read inside brackets, so it is an index array: it must hold "
                f"integers, not {str(tensor.dtype).removeprefix('torch.')}"
            )
        return tensor.long()
    if callable(detach):
        value = detach().cpu().numpy()
    array = np.asarray(value)
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.integer) or (array.size == 0 and array.dtype == np.float64)
    ):
        raise ArgumentError(
            f"{name!r} is read inside brackets, so it is an index array: it must hold "
            f"integers, not {array.dtype}"
        )
    return array.astype(np.int64, copy=False)


def _shape_of(name: str, value: Any) -> tuple[int, ...]:
    shape = getattr(value, "shape", None)
    if shape is None:
        shape = as_array(name, value).shape
    return tuple(int(n) for n in shape)


def _input_shapes(
    inputs: Mapping[str, Any], shapes: ShapeValues | None
) -> dict[str, tuple[int, ...]]:
    merged: dict[str, tuple[int, ...]] = {k: tuple(v) for k, v in (shapes or {}).items()}
    for name, array in inputs.items():
        shape = _shape_of(name, array)
        if name in merged and tuple(merged[name]) != shape:
            raise ArgumentError(
                f"{name!r} has shape {shape}, but shapes= says {tuple(merged[name])}"
            )
        merged[name] = shape
    return merged


def numeric_program(
    text: str,
    inputs: Mapping[str, Any],
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
        program = analyse(text, params, _input_shapes(inputs, shapes), ranges, scalars)
    except EinderiveError as error:
        raise error.with_text(text) from None
    if program.params:
        symbolic = ", ".join(p.name for p in program.params)
        raise ArgumentError(f"give a number for every parameter: params={{...}} for {symbolic}")
    given = all(name in inputs for name in program.inputs)  # else: "no array given"
    for name in {s.target for s in program.statements} if given else ():
        # an axis written through an index array (Y[idx[i], d]): no array gives its size
        shape = program.shapes[name]
        unknown = [n for n in shape if not sympy.sympify(n).is_number]
        if unknown:
            sizes = ", ".join(str(n) for n in unknown)
            raise ArgumentError(
                f"the shape of {name!r} is {tuple(shape)}: no array gives {sizes}; "
                f"declare it (shapes={{{name!r}: (...)}}, or --shape {name}=...)"
            )
    return program


def check_inputs(program: Program, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The inputs of ``program`` as float64 arrays (an error names a missing or extra one)."""
    missing = [name for name in program.inputs if name not in inputs]
    if missing:
        raise ArgumentError(f"no array given for {', '.join(map(repr, missing))}")
    extra = [name for name in inputs if name not in program.inputs]
    if extra:
        raise ArgumentError(
            f"arrays given for {', '.join(map(repr, extra))}, which the expression does not read"
        )
    return {
        name: (
            as_index_array(name, inputs[name])
            if name in program.index_arrays
            else as_array(name, inputs[name])
        )
        for name in program.inputs
    }


def check_index_values(program: Program, arrays: Mapping[str, Any]) -> None:
    """Refuse an index array with a value outside an axis it stands as a whole position
    of (``out_of_range="raise"``; by default such a read is zero, as every read outside
    a tensor)."""
    for name, uses in index_positions(program).items():
        values = arrays[name]  # NumPy, or a torch tensor on its device
        if math.prod(values.shape) == 0:
            continue
        low, high = int(values.min()), int(values.max())
        for size, where in uses:
            if low >= 0 and high < int(size):
                continue
            bad = low if low < 0 else high
            if isinstance(values, np.ndarray):
                position = tuple(int(k) for k in np.argwhere(values == bad)[0])
            else:  # a tensor: its first such position, read back for the message only
                position = tuple((values == bad).nonzero()[0].tolist())
            raise ArgumentError(
                f"{name}{list(position)} = {bad} is outside {where}, which has size "
                f"{int(size)} (out_of_range='raise'; with 'zero' that read is zero)"
            )
