"""Vectorized evaluation of any IR statement over a dense grid of its index variables.

A term ``sum_{v in D} body(u, v)`` is computed as one array over the grid of
``(u, v)``: index arithmetic in NumPy (it does not depend on the data), reads as
gathers with zeros outside (and where a rational index is not an integer), the
domain as a mask, then a sum over the ``v`` axes. No Python loop runs over
elements. The data path goes through an ``ArrayOps`` adapter, so the same code
runs in NumPy, JAX and PyTorch; it is the fallback for pullbacks that are
neither convolutions nor plain contractions (those have faster paths).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sympy

from .. import ir
from ..errors import ArgumentError
from .window import narrowed

Array = Any


@dataclass(frozen=True)
class ArrayOps:
    """The array operations the dense evaluator needs, for one framework."""

    name: str
    asarray: Callable[[Any], Array]
    gather: Callable[[Array, np.ndarray], Array]  # flat gather with NumPy int64 indices
    where: Callable[[Any, Array, Array], Array]
    sum: Callable[[Array, tuple[int, ...]], Array]
    maximum: Callable[[Array, tuple[int, ...]], Array]
    minimum: Callable[[Array, tuple[int, ...]], Array]
    functions: Mapping[str, Callable[[Array], Array]]
    broadcast: Callable[[Array, tuple[int, ...]], Array]
    mask: Callable[[np.ndarray], Any]


def numpy_ops() -> ArrayOps:
    return ArrayOps(
        name="numpy",
        asarray=lambda a: np.asarray(a, dtype=np.float64),
        gather=lambda a, flat: np.ravel(a)[flat],
        where=np.where,
        sum=lambda a, axes: np.sum(a, axis=axes),
        maximum=lambda a, axes: np.max(a, axis=axes),
        minimum=lambda a, axes: np.min(a, axis=axes),
        functions={
            "exp": np.exp,
            "log": np.log,
            "sqrt": np.sqrt,
            "abs": np.abs,
            "tanh": np.tanh,
            "sigmoid": lambda a: 0.5 * (1.0 + np.tanh(0.5 * a)),
            "relu": lambda a: np.maximum(a, 0.0),
            "step": lambda a: (a > 0).astype(np.float64),
            "sign": np.sign,
        },
        broadcast=np.broadcast_to,
        mask=lambda m: m,
    )


def _symbol_ranges(
    variables: Sequence[sympy.Symbol], where: Sequence[ir.Constraint]
) -> dict[sympy.Symbol, tuple[int, int]]:
    """Each variable's numeric range, from its box among the constraints."""
    ranges: dict[sympy.Symbol, list[int | None]] = {v: [None, None] for v in variables}
    for constraint in where:
        if constraint.kind != "ge":
            continue
        expr = ir.expand(constraint.expr)
        symbols = expr.free_symbols
        if len(symbols) != 1:
            continue
        (var,) = symbols
        if var not in ranges:
            continue
        coefficient = expr.coeff(var)
        rest = expr - coefficient * var
        if not (coefficient.is_number and rest.is_number):
            continue
        if coefficient > 0:
            low = int(sympy.ceiling(-rest / coefficient))
            current = ranges[var][0]
            ranges[var][0] = low if current is None else max(current, low)
        elif coefficient < 0:
            high = int(sympy.floor(rest / -coefficient))
            current = ranges[var][1]
            ranges[var][1] = high if current is None else min(current, high)
    result: dict[sympy.Symbol, tuple[int, int]] = {}
    for var, (first, last) in ranges.items():
        if first is None or last is None:
            raise ArgumentError(f"the range of {var} is not bounded by numbers")
        result[var] = (first, last)
    return result


class _Grid:
    """Index variables laid out as broadcasting axes: ``values[v]`` spans axis ``axis[v]``."""

    def __init__(self) -> None:
        self.variables: list[sympy.Symbol] = []
        self.starts: list[int] = []
        self.sizes: list[int] = []

    def extended(self, ranges: Mapping[sympy.Symbol, tuple[int, int]]) -> _Grid:
        grid = _Grid()
        grid.variables = [*self.variables, *ranges]
        grid.starts = [*self.starts, *(low for low, _ in ranges.values())]
        grid.sizes = [*self.sizes, *(max(0, high - low + 1) for low, high in ranges.values())]
        return grid

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.sizes)

    def values(self, var: sympy.Symbol) -> np.ndarray:
        axis = self.variables.index(var)
        shape = [1] * len(self.sizes)
        shape[axis] = self.sizes[axis]
        return (np.arange(self.sizes[axis], dtype=np.int64) + self.starts[axis]).reshape(shape)

    def affine(self, expr: sympy.Expr) -> tuple[np.ndarray, int]:
        """``expr`` over the grid as ``(numerator, denominator)``, exact integers."""
        expr = ir.expand(expr)
        denominator = 1
        for coefficient in expr.as_coefficients_dict().values():
            if not coefficient.is_Rational:
                raise ArgumentError(f"{expr} still has a symbol with no value")
            denominator = int(sympy.ilcm(denominator, coefficient.q))
        total = np.zeros([1] * len(self.sizes), dtype=np.int64)
        for term, coefficient in expr.as_coefficients_dict().items():
            scaled = int(coefficient * denominator)
            if term == 1:
                total = total + scaled
            elif isinstance(term, sympy.Symbol) and term in self.variables:
                total = total + scaled * self.values(term)
            elif isinstance(term, sympy.floor):  # the top of a window (backends/window.py)
                inner, inner_denominator = self.affine(term.args[0])
                total = total + scaled * (inner // inner_denominator)
            else:
                raise ArgumentError(f"{term} in {expr} has no value")
        return total, denominator


class DenseEvaluator:
    """Evaluates statements over dense index grids with one framework's array operations."""

    def __init__(self, ops: ArrayOps, tensors: Mapping[str, Array]) -> None:
        self.ops = ops
        self.tensors = dict(tensors)

    def statement(self, statement: ir.Statement, shape: Sequence[int]) -> Array:
        grid = _Grid().extended(
            {v: (0, int(n) - 1) for v, n in zip(statement.indices, shape, strict=True)}
        )
        value = self.node(statement.rhs, grid)
        return self.ops.broadcast(value, grid.shape) if grid.shape else value

    def mask(self, where: Sequence[ir.Constraint], grid: _Grid) -> np.ndarray:
        result = np.ones([1] * len(grid.sizes), dtype=bool)
        for constraint in where:
            numerator, denominator = grid.affine(constraint.expr)
            if constraint.kind == "ge":
                result = result & (numerator >= 0)
            elif constraint.kind == "eq":
                result = result & (numerator == 0)
            else:
                modulus = int(constraint.modulus) * denominator
                result = result & (numerator % modulus == 0)
        return result

    def node(self, node: ir.Node, grid: _Grid) -> Array:
        ops = self.ops
        if isinstance(node, ir.Const):
            if not node.value.is_number:
                raise ArgumentError(f"{node.value} has no numeric value")
            return float(node.value)
        if isinstance(node, ir.Access):
            return self.read(node, grid)
        if isinstance(node, ir.Add):
            total = self.node(node.terms[0], grid)
            for term in node.terms[1:]:
                total = total + self.node(term, grid)
            return total
        if isinstance(node, ir.Mul):
            product = self.node(node.factors[0], grid)
            for factor in node.factors[1:]:
                product = product * self.node(factor, grid)
            return product
        if isinstance(node, ir.Pow):
            return self.node(node.base, grid) ** float(node.exponent)
        if isinstance(node, ir.Call):
            return ops.functions[node.func](self.node(node.arg, grid))
        if isinstance(node, ir.Reduce):
            return self.reduce(node, grid)
        if isinstance(node, ir.IsExtremum):
            return self.is_extremum(node, grid)
        raise TypeError(f"unknown node {node!r}")  # pragma: no cover

    def read(self, node: ir.Access, grid: _Grid) -> Array:
        array = self.tensors[node.tensor]
        shape = tuple(int(n) for n in np.shape(array))
        if not node.indices:
            return array
        valid = np.ones([1] * len(grid.sizes), dtype=bool)
        flat = np.zeros([1] * len(grid.sizes), dtype=np.int64)
        for expr, size in zip(node.indices, shape, strict=True):
            numerator, denominator = grid.affine(expr)
            if denominator != 1:
                valid = valid & (numerator % denominator == 0)
                numerator = numerator // denominator
            valid = valid & (numerator >= 0) & (numerator < size)
            flat = flat * size + np.clip(numerator, 0, max(size - 1, 0))
        flat, valid = np.broadcast_arrays(flat, valid)
        if array is None or 0 in shape:
            return np.zeros(flat.shape)
        values = self.ops.gather(array, np.where(valid, flat, 0))
        return self.ops.where(self.ops.mask(valid), values, 0.0 * values)

    def _inner(self, node: ir.Reduce | ir.IsExtremum, grid: _Grid) -> tuple[_Grid, Array, Any]:
        ranges = _symbol_ranges(node.variables, node.where)
        inner = grid.extended(ranges)
        mask = np.broadcast_to(self.mask(node.where, inner), inner.shape)
        body = self.ops.broadcast(self.node(node.body, inner) * 1.0, inner.shape)
        return inner, body, mask

    def reduce(self, node: ir.Reduce, grid: _Grid) -> Array:
        def size(var: sympy.Symbol) -> int:
            low, high = _symbol_ranges([var], node.where)[var]
            return high - low + 1

        node = narrowed(node, set(grid.variables), size, lambda: sympy.Dummy("k", integer=True))
        axes = tuple(range(len(grid.sizes), len(grid.sizes) + len(node.variables)))
        inner, body, mask = self._inner(node, grid)
        ops = self.ops
        if node.op == "sum":
            return ops.sum(ops.where(ops.mask(mask), body, 0.0), axes)  # no nan * 0 outside
        extreme = np.inf if node.op == "min" else -np.inf
        masked = ops.where(ops.mask(mask), body, 0.0 * body + extreme)
        return (ops.maximum if node.op == "max" else ops.minimum)(masked, axes)

    def is_extremum(self, node: ir.IsExtremum, grid: _Grid) -> Array:
        """1 where ``at`` is the first (row-major) extremum: no earlier point ties or beats it."""
        outer = len(grid.sizes)
        inner, body, mask = self._inner(node, grid)
        ops = self.ops
        extreme = np.inf if node.op == "min" else -np.inf
        masked = ops.where(ops.mask(mask), body, 0.0 * body + extreme)
        axes = tuple(range(outer, len(inner.sizes)))
        best = (ops.maximum if node.op == "max" else ops.minimum)(masked, axes)
        best = ops.broadcast(_expand(best, len(axes)), inner.shape)
        is_best = masked == best
        # row-major order of the inner point against the point `at`
        rank = np.zeros([1] * len(inner.sizes), dtype=np.int64)
        for var in node.variables:
            rank = rank * inner.sizes[inner.variables.index(var)] + (
                inner.values(var) - inner.starts[inner.variables.index(var)]
            )
        target = np.zeros([1] * len(inner.sizes), dtype=np.int64)
        at_valid = np.ones([1] * len(inner.sizes), dtype=bool)
        for var, expr in zip(node.variables, node.at, strict=True):
            numerator, denominator = grid.affine(expr)
            numerator = _expand(numerator, len(axes))
            if denominator != 1:
                at_valid = at_valid & (numerator % denominator == 0)
                numerator = numerator // denominator
            axis = inner.variables.index(var)
            at_valid = at_valid & (numerator >= inner.starts[axis])
            at_valid = at_valid & (numerator < inner.starts[axis] + inner.sizes[axis])
            target = target * inner.sizes[axis] + (numerator - inner.starts[axis])
        earlier = np.broadcast_to(rank < target, inner.shape)
        at_point = np.broadcast_to(rank == target, inner.shape)
        zero = 0.0 * best
        beaten = ops.sum(ops.where(ops.mask(earlier & mask), 1.0 * is_best, zero), axes)
        attained = ops.sum(ops.where(ops.mask(at_point & mask), 1.0 * is_best, zero), axes)
        valid = np.broadcast_to(np.squeeze(at_valid, axis=axes), grid.shape or ())
        first = ops.where(ops.mask(np.asarray(valid)), attained, 0.0 * attained)
        return ops.where(beaten > 0, 0.0 * first, first)


def _expand(array: Any, count: int) -> Any:
    """Append ``count`` unit axes."""
    for _ in range(count):
        array = array[..., None]
    return array
