"""The vectorized backends (numpy, jax, torch): each backward statement by its plan."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import ir
from ..conv.recognise import ConvPullback
from .dense import ArrayOps, DenseEvaluator
from .plan import Dense, Einsum, Method, Terms, plan

if TYPE_CHECKING:
    from ..derivation import Derivation

ConvRunner = Callable[[ConvPullback, Any, Any], Any]
EinsumRunner = Callable[..., Any]


def _shape(shape: Any) -> tuple[int, ...]:
    return tuple(int(n) for n in shape)


def plans(derivation: Derivation) -> dict[str, Method]:
    """The method of every backward statement of a numeric derivation."""
    shapes = derivation.shapes
    kernels = [t for t in derivation.program.shapes if t != derivation.program.output]
    return {s.target: plan(s, shapes, kernels) for s in derivation.backward.statements}


def run(
    derivation: Derivation,
    arrays: Mapping[str, np.ndarray],
    cotangent: np.ndarray,
    ops: ArrayOps,
    conv: ConvRunner,
    einsum: EinsumRunner,
    to_numpy: Callable[[Any], np.ndarray],
) -> dict[str, np.ndarray]:
    program = derivation.program
    shapes = derivation.shapes
    values: dict[str, Any] = {name: ops.asarray(a) for name, a in arrays.items()}
    written = {s.target for s in program.statements}
    read = {a.tensor for s in derivation.backward.statements for a in ir.accesses(s.rhs)}
    if read & written:
        for statement in program.statements:
            values[statement.target] = _compute(
                statement, plan(statement, shapes), values, shapes, ops, conv, einsum
            )
    values[derivation.backward.seeds[0]] = ops.asarray(cotangent)
    methods = plans(derivation)
    for statement in derivation.backward.statements:
        values[statement.target] = _compute(
            statement, methods[statement.target], values, shapes, ops, conv, einsum
        )
    return {
        name: to_numpy(values[pullback.name]).reshape(_shape(shapes[pullback.name]))
        for name, pullback in derivation.pullbacks.items()
    }


def _compute(
    statement: ir.Statement,
    method: Method,
    values: Mapping[str, Any],
    shapes: Mapping[str, Any],
    ops: ArrayOps,
    conv: ConvRunner,
    einsum: EinsumRunner,
) -> Any:
    if isinstance(method, Einsum):
        result = einsum(method.subscripts, *(values[name] for name in method.operands))
        return result * method.coefficient if method.coefficient != 1.0 else result
    if isinstance(method, ConvPullback):
        return conv(method, values[method.call.x], values[method.call.w])
    if isinstance(method, Terms):
        parts = [_compute(p, m, values, shapes, ops, conv, einsum) for p, m in method.parts]
        return sum(parts[1:], start=parts[0])
    assert isinstance(method, Dense)
    return DenseEvaluator(ops, values).statement(statement, _shape(shapes[statement.target]))
