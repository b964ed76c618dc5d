"""The reference interpreter: evaluates IR statements point by point, zero outside every tensor.

This is the ``loops`` backend and the forward reference of the verification.
It needs numbers for every parameter and size; each IR node is compiled once
into a Python closure, then called per point.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction

import numpy as np
import sympy

from .. import ir
from ..errors import ArgumentError
from ..functions import FUNCTIONS
from ..solve import linear_part

Env = dict[sympy.Symbol, int]
Tensors = Mapping[str, np.ndarray]
Affine = Callable[[Env], int | Fraction]
# an index expression that reads an index array: None where a read falls outside that array
Position = Callable[[Env], int | Fraction | None]


def affine(expr: sympy.Expr, tensors: Tensors | None = None) -> Affine:
    """A closure computing an affine expression of index variables (exact, as int or Fraction).

    An expression that reads index arrays (``tok[b] + m``) needs their ``tensors``; its
    closure gives None where such a read falls outside its array.
    """
    expr = sympy.expand(expr)
    if expr.is_Integer:
        constant = int(expr)
        return lambda env: constant
    terms: list[tuple[sympy.Symbol, int | Fraction]] = []
    reads: list[tuple[Position, int | Fraction]] = []
    constant_part: int | Fraction = 0
    for term, coefficient in expr.as_coefficients_dict().items():
        value = _number(coefficient)
        if term == 1:
            constant_part = value
        elif isinstance(term, sympy.Symbol):
            terms.append((term, value))
        elif isinstance(term, ir.IndexRead) and tensors is not None:
            reads.append((_index_read(term, tensors), value))
        else:
            raise ArgumentError(f"index expression {expr} still has a symbol with no value")
    if reads:
        plain = _affine_terms(terms, constant_part)

        def through_arrays(env: Env) -> int | Fraction | None:
            total = plain(env)
            for read, c in reads:
                value = read(env)
                if value is None:
                    return None
                total += c * value
            return total

        return through_arrays  # type: ignore[return-value]
    return _affine_terms(terms, constant_part)


def _index_read(read: ir.IndexRead, tensors: Tensors) -> Position:
    """``tok[b]``: the integer in the index array, None outside it."""
    if read.array not in tensors:
        raise ArgumentError(f"no array given for {read.array!r}")
    array = tensors[read.array]
    positions = [affine(e, tensors) for e in read.args]
    shape = array.shape

    def value(env: Env) -> int | None:
        at: list[int] = []
        for position, size in zip(positions, shape, strict=True):
            found = position(env)
            index = None if found is None else _integer(found)
            if index is None or not 0 <= index < size:
                return None
            at.append(index)
        return int(array[tuple(at)])

    return value


def _affine_terms(
    terms: list[tuple[sympy.Symbol, int | Fraction]], constant_part: int | Fraction
) -> Affine:
    if len(terms) == 1 and not isinstance(terms[0][1], Fraction):
        (var, c), k = terms[0], constant_part
        if c == 1:
            return lambda env: env[var] + k
        return lambda env: c * env[var] + k
    return lambda env: sum((c * env[v] for v, c in terms), constant_part)


def _number(value: sympy.Expr) -> int | Fraction:
    if value.is_Integer:
        return int(value)
    if value.is_Rational:
        return Fraction(int(value.p), int(value.q))
    raise ArgumentError(f"{value} has no numeric value; give every parameter a number")


def _integer(value: int | Fraction) -> int | None:
    if isinstance(value, int):
        return value
    return int(value) if value.denominator == 1 else None


def _read(array: np.ndarray, indices: Sequence[Position]) -> Callable[[Env], float]:
    shape = array.shape
    if not indices:
        scalar = float(array)
        return lambda env: scalar

    def read(env: Env) -> float:
        position = []
        for index, size in zip(indices, shape, strict=True):
            at = index(env)
            value = None if at is None else _integer(at)
            if value is None or not 0 <= value < size:
                return 0.0
            position.append(value)
        return float(array[tuple(position)])

    return read


class _Domain:
    """The integer points of a Reduce, iterated in row-major order of its variables."""

    def __init__(
        self,
        variables: Sequence[sympy.Symbol],
        where: Sequence[ir.Constraint],
        tensors: Tensors | None = None,
    ) -> None:
        self.variables = list(variables)
        levels = {v: k for k, v in enumerate(self.variables)}
        self.guards: list[Callable[[Env], bool]] = []
        self.lower: list[list[tuple[int | Fraction, Affine]]] = [[] for _ in self.variables]
        self.upper: list[list[tuple[int | Fraction, Affine]]] = [[] for _ in self.variables]
        self.filters: list[list[Callable[[Env], bool]]] = [[] for _ in self.variables]
        for constraint in where:
            owners = [levels[s] for s in constraint.free_symbols if s in levels]
            check = _condition(constraint, tensors)
            if not owners:
                self.guards.append(check)
                continue
            level = max(owners)
            var = self.variables[level]
            coefficient, remainder = linear_part(constraint, var)
            if (
                constraint.kind == "ge"
                and coefficient.is_number
                and coefficient != 0
                and not ir.index_reads(remainder)
            ):
                c = _number(coefficient)
                rest = affine(remainder)
                (self.lower if c > 0 else self.upper)[level].append((c, rest))
            else:
                self.filters[level].append(check)
        for level, var in enumerate(self.variables):
            if not self.lower[level] or not self.upper[level]:
                raise ArgumentError(f"the domain of {var} is unbounded")

    def iterate(self, env: Env, visit: Callable[[Env], None]) -> None:
        if not all(guard(env) for guard in self.guards):
            return
        self._level(0, env, visit)

    def _level(self, level: int, env: Env, visit: Callable[[Env], None]) -> None:
        if level == len(self.variables):
            visit(env)
            return
        var = self.variables[level]
        # c*var + rest >= 0  =>  var >= ceil(-rest/c) (c > 0), var <= floor(rest/-c) (c < 0)
        low = max(math.ceil(Fraction(-rest(env)) / c) for c, rest in self.lower[level])
        high = min(math.floor(Fraction(rest(env)) / -c) for c, rest in self.upper[level])
        filters = self.filters[level]
        for value in range(low, high + 1):
            env[var] = value
            if all(check(env) for check in filters):
                self._level(level + 1, env, visit)
        env.pop(var, None)


def _condition(constraint: ir.Constraint, tensors: Tensors | None = None) -> Callable[[Env], bool]:
    """The constraint as a test; false where it reads an index array outside that array."""
    expr: Position = affine(constraint.expr, tensors)
    if constraint.kind == "ge":
        return lambda env: (value := expr(env)) is not None and value >= 0
    if constraint.kind == "eq":
        return lambda env: (value := expr(env)) is not None and value == 0
    modulus = _number(constraint.modulus)
    return lambda env: (value := expr(env)) is not None and Fraction(value) % modulus == 0


def compile_node(node: ir.Node, tensors: Tensors) -> Callable[[Env], float]:
    """A closure evaluating ``node`` at a point (a mapping of index variables to integers)."""
    if isinstance(node, ir.Const):
        value = node.value
        if not value.is_number:
            return _index_value(value)
        constant = float(value)
        return lambda env: constant
    if isinstance(node, ir.Access):
        if node.tensor not in tensors:
            raise ArgumentError(f"no array given for {node.tensor!r}")
        return _read(tensors[node.tensor], [affine(e, tensors) for e in node.indices])
    if isinstance(node, ir.Add):
        terms = [compile_node(t, tensors) for t in node.terms]
        return lambda env: sum(t(env) for t in terms)
    if isinstance(node, ir.Mul):
        factors = [compile_node(f, tensors) for f in node.factors]

        def product(env: Env) -> float:
            result = 1.0
            for factor in factors:
                result *= factor(env)
                if result == 0.0:
                    return 0.0
            return result

        return product
    if isinstance(node, ir.Pow):
        base = compile_node(node.base, tensors)
        exponent = float(node.exponent)
        integral = exponent == int(exponent)

        def power(env: Env) -> float:
            value = base(env)
            if value == 0.0 and exponent < 0:
                return math.inf
            if value < 0 and not integral:
                return math.nan
            return value**exponent

        return power
    if isinstance(node, ir.Call):
        function = FUNCTIONS[node.func].value
        if node.rest:
            arguments = [compile_node(a, tensors) for a in node.args]
            return lambda env: function(*(a(env) for a in arguments))
        argument = compile_node(node.arg, tensors)
        return lambda env: function(argument(env))
    if isinstance(node, ir.Reduce):
        return _compile_reduce(node, tensors)
    if isinstance(node, ir.IsExtremum):
        return _compile_is_extremum(node, tensors)
    raise TypeError(f"unknown node {node!r}")  # pragma: no cover


def _index_value(value: sympy.Expr) -> Callable[[Env], float]:
    """A polynomial of indices read as a number (``i / 100``, ``(2*i + 1)*(j - i)``), at a
    point: exact where the coefficients are rational, so that i/100 rounds once, as NumPy's
    division does."""
    terms: list[tuple[int | Fraction | float, list[tuple[sympy.Symbol, int]]]] = []
    for term, coefficient in sympy.expand(value).as_coefficients_dict().items():
        powers = [] if term == 1 else list(term.as_powers_dict().items())
        if not coefficient.is_number or not all(
            isinstance(base, sympy.Symbol) and exponent.is_Integer and exponent > 0
            for base, exponent in powers
        ):
            raise ArgumentError(f"{value} has no numeric value; give every parameter a number")
        number = _number(coefficient) if coefficient.is_Rational else float(coefficient)
        terms.append((number, [(base, int(exponent)) for base, exponent in powers]))

    def evaluate(env: Env) -> float:
        total: int | Fraction | float = 0
        for coefficient, powers in terms:
            product = coefficient
            for var, exponent in powers:
                product *= env[var] ** exponent
            total += product
        return float(total)

    return evaluate


def _compile_reduce(node: ir.Reduce, tensors: Tensors) -> Callable[[Env], float]:
    domain = _Domain(node.variables, node.where, tensors)
    body = compile_node(node.body, tensors)
    if not node.variables:
        guards = domain.guards
        return lambda env: body(env) if all(g(env) for g in guards) else 0.0
    if node.op == "sum":

        def total(env: Env) -> float:
            acc = [0.0]

            def visit(point: Env) -> None:
                acc[0] += body(point)

            domain.iterate(env, visit)
            return acc[0]

        return total
    if node.op == "prod":

        def product(env: Env) -> float:
            acc = [1.0]

            def visit(point: Env) -> None:
                acc[0] *= body(point)

            domain.iterate(env, visit)
            return acc[0]

        return product
    better = (lambda a, b: a > b) if node.op == "max" else (lambda a, b: a < b)

    def extremum(env: Env) -> float:
        best: list[float | None] = [None]

        def visit(point: Env) -> None:
            value = body(point)
            if best[0] is None or better(value, best[0]):
                best[0] = value

        domain.iterate(env, visit)
        return 0.0 if best[0] is None else best[0]

    return extremum


def _compile_is_extremum(node: ir.IsExtremum, tensors: Tensors) -> Callable[[Env], float]:
    domain = _Domain(node.variables, node.where, tensors)
    body = compile_node(node.body, tensors)
    at = [affine(e, tensors) for e in node.at]
    better = (lambda a, b: a > b) if node.op == "max" else (lambda a, b: a < b)

    def indicator(env: Env) -> float:
        best: list = [None, None]

        def visit(point: Env) -> None:
            value = body(point)
            if best[0] is None or better(value, best[0]):
                best[0] = value
                best[1] = tuple(point[v] for v in node.variables)

        domain.iterate(dict(env), visit)
        target = tuple(a(env) for a in at)
        return 1.0 if best[1] == target else 0.0

    return indicator


def run_statement(statement: ir.Statement, shape: Sequence[int], tensors: Tensors) -> np.ndarray:
    """The array a statement defines, computed point by point."""
    rhs = compile_node(statement.rhs, tensors)
    out = np.zeros(tuple(shape), dtype=np.float64)
    env: Env = {}
    for position in np.ndindex(*shape) if shape else [()]:
        for var, value in zip(statement.indices, position, strict=True):
            env[var] = value
        out[position] = rhs(env)
    return out


def numeric_shape(shape: Sequence[sympy.Expr], what: str) -> tuple[int, ...]:
    try:
        return tuple(int(n) for n in shape)
    except TypeError:
        raise ArgumentError(
            f"the shape of {what} is {tuple(shape)}; give numbers for every size"
        ) from None


def run_statements(
    statements: Sequence[ir.Statement],
    shapes: Mapping[str, Sequence[sympy.Expr]],
    tensors: Mapping[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """Evaluate statements in order; each result is available to the next."""
    values = dict(tensors)
    for statement in statements:
        shape = numeric_shape(shapes[statement.target], statement.target)
        values[statement.target] = run_statement(statement, shape, values)
    return values
