"""Scatter -> gather: eliminating a Kronecker delta over the integers, and exact loop bounds.

``gather`` turns

    out[u] = sum_{v in D} [u = L(v)] * body(v)

into a gather over the variables the equations leave, by solving each equation
for one variable (a unit coefficient where there is one, so no condition
appears; otherwise a divisibility condition). Equations left without a
variable are guards (the diagonal ``Y[i] = X[i,i]`` keeps ``p = q``), and the
box of every eliminated variable becomes affine bounds on the others.

``loop_bounds`` turns a domain into per-variable lower and upper bounds by
Fourier-Motzkin elimination, innermost variable first.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import sympy

from . import affine, ir
from .ir import expand


def _sign(coefficient: sympy.Expr) -> int:
    """+1 or -1 when the sign is known from the assumptions, 0 when it is not."""
    if affine.positive(coefficient):
        return 1
    if affine.negative(coefficient):
        return -1
    return 0


def _pivot_rank(
    coefficient: sympy.Expr, var: sympy.Symbol, prefer: Sequence[sympy.Symbol]
) -> tuple[int, int] | None:
    if coefficient in (1, -1):
        kind = 0
    elif coefficient.is_number and coefficient != 0:
        kind = 1
    elif _sign(coefficient):
        kind = 2
    else:
        return None
    order = prefer.index(var) if var in prefer else len(prefer)
    return kind, order


def _leads_negative(expr: sympy.Expr) -> bool:
    """Whether the first term, in an order that ignores coefficients, has a minus sign.

    ``e = 0`` and ``m | e`` mean the same as for ``-e``; this picks one of the two.
    """
    terms = [t.as_coeff_Mul() for t in sympy.Add.make_args(expr) if not t.is_number]
    if not terms:
        return bool(expr.is_negative)
    coefficient, _ = min(terms, key=lambda cm: sympy.default_sort_key(cm[1]))
    return bool(coefficient.is_negative)


def simplify_constraints(constraints: Sequence[ir.Constraint]) -> tuple[ir.Constraint, ...] | None:
    """Drop constraints that always hold and duplicates; None if one can never hold."""
    kept: dict[tuple[str, sympy.Expr, sympy.Expr], ir.Constraint] = {}
    for constraint in constraints:
        constraint = ir.normalise(constraint)
        expr = constraint.expr
        if constraint.kind == "div":
            if constraint.modulus in (1, -1):
                continue
            if expr.is_number and constraint.modulus.is_number:
                if expr % constraint.modulus != 0:
                    return None
                continue
            if sympy.Mod(expr, constraint.modulus) == 0:
                continue
            if _leads_negative(expr):
                constraint = ir.Constraint("div", -expr, constraint.modulus)
        elif constraint.kind == "eq":
            if expr.is_number:
                if expr != 0:
                    return None
                continue
            # a canonical sign, so that p - q and q - p are one guard
            if _leads_negative(expr):
                constraint = ir.Constraint("eq", -expr)
        else:
            if affine.nonnegative(expr):
                continue
            if affine.negative(expr):
                return None
        kept[(constraint.kind, constraint.expr, constraint.modulus)] = constraint
    return tuple(kept.values())


def _solvable(
    equation: sympy.Expr,
    coefficient: sympy.Expr,
    var: sympy.Symbol,
    remaining: Sequence[sympy.Symbol],
    targets: Sequence[sympy.Symbol],
) -> bool:
    """Whether ``equation = 0`` may be solved for ``var``: not if ``var`` is also inside an
    index-array read (``i = idx[i]`` is no solution), nor if the equation ties a target to
    a read of an index array at another variable still summed over (``m = p - tok[i]``
    would leave, for each ``p``, a search over every ``i``: the delta stays, a scatter)."""
    if not ir.index_reads(equation):
        return True
    rest = expand(equation - coefficient * var)
    if ir.reads_through(rest, [var]):
        return False
    others = [v for v in remaining if v != var]
    return not (ir.reads_through(rest, others) and equation.free_symbols & set(targets))


def gather(
    targets: Sequence[sympy.Symbol],
    writes: Sequence[sympy.Expr],
    body: ir.Node,
    scope: Sequence[sympy.Symbol],
    where: Sequence[ir.Constraint],
    prefer: Sequence[sympy.Symbol] = (),
    trace: list[tuple[sympy.Symbol, sympy.Expr, ir.Constraint | None]] | None = None,
) -> ir.Node:
    """``sum_{scope in where} [targets = writes] body`` with the delta eliminated.

    ``prefer`` orders the variables to solve for among equally good pivots (the
    forward's summed variables first gives the gather form ``W[p - s*i + 1]``).
    ``trace``, if given, gets ``(variable, solution, divisibility condition or None)``
    for each elimination, in order (``--explain`` shows them).
    """
    equations = [expand(t - w) for t, w in zip(targets, writes, strict=True)]
    remaining = list(scope)
    # an equality among the domain's constraints is one more delta to eliminate
    constraints = [c for c in where if not (c.kind == "eq" and c.free_symbols & set(scope))]
    equations += [c.expr for c in where if c.kind == "eq" and c.free_symbols & set(scope)]
    while True:
        best: tuple[tuple[int, int], int, sympy.Symbol] | None = None
        for k, equation in enumerate(equations):
            for var in remaining:
                coefficient = ir.coefficient(equation, var)
                if coefficient == 0 or not _solvable(
                    equation, coefficient, var, remaining, targets
                ):
                    continue
                rank = _pivot_rank(coefficient, var, prefer)
                if rank is not None and (best is None or rank < best[0]):
                    best = (rank, k, var)
        if best is None:
            break
        _, k, var = best
        equation = equations.pop(k)
        coefficient = ir.coefficient(equation, var)
        rest = expand(equation - coefficient * var)
        solution = expand(-rest / coefficient)
        condition = None
        if coefficient not in (1, -1):
            modulus = coefficient if _sign(coefficient) > 0 else -coefficient
            condition = ir.Constraint("div", rest, modulus)
            constraints.append(condition)
        if trace is not None:
            trace.append((var, solution, condition))
        mapping = {var: solution}
        remaining.remove(var)
        equations = [ir.substitute(e, mapping) for e in equations]
        constraints = [c.subs(mapping) for c in constraints]
        body = ir.subs(body, mapping)
    constraints += [ir.Constraint("eq", e) for e in equations]
    simplified = simplify_constraints(constraints)
    if simplified is None or body == ir.ZERO:
        return ir.ZERO
    return ir.Reduce("sum", tuple(remaining), body, simplified)


def implied_by_box(constraint: ir.Constraint, boxes: dict[sympy.Symbol, sympy.Expr]) -> bool:
    """Whether an inequality over boxed variables holds on the whole box: each variable
    at its worst corner, then the sizes' signs settle it (``affine.nonnegative``)."""
    if constraint.kind != "ge":
        return False
    worst = constraint.expr
    for var, extent in boxes.items():
        coefficient = ir.coefficient(constraint.expr, var)
        if coefficient == 0:
            continue
        sign = _sign(coefficient)
        if sign == 0:
            return False
        worst = worst.xreplace({var: sympy.Integer(0) if sign > 0 else extent - 1})
    return affine.nonnegative(expand(worst))


@dataclass(frozen=True)
class Bounds:
    """Inclusive bounds of one loop variable: ``max(lower) <= var <= min(upper)``, step 1."""

    var: sympy.Symbol
    lower: tuple[sympy.Expr, ...]
    upper: tuple[sympy.Expr, ...]

    @property
    def low(self) -> sympy.Expr:
        return affine.maximum(self.lower)

    @property
    def high(self) -> sympy.Expr:
        return affine.minimum(self.upper)


def linear_part(constraint: ir.Constraint, var: sympy.Symbol) -> tuple[sympy.Expr, sympy.Expr]:
    """``constraint.expr`` as ``c*var + r``: the pair ``(c, r)`` (the one place bounds are
    read out of a constraint: ``c*var + r >= 0`` is ``var >= -r/c`` for ``c > 0``)."""
    coefficient = ir.coefficient(constraint.expr, var)
    return coefficient, expand(constraint.expr - coefficient * var)


def bound_of(constraint: ir.Constraint, var: sympy.Symbol) -> tuple[int, sympy.Expr] | None:
    """``c*var + r >= 0`` read as a bound on var: (+1, ceil(-r/c)) or (-1, floor(r/|c|))."""
    coefficient, rest = linear_part(constraint, var)
    sign = _sign(coefficient)
    if sign == 0 or ir.reads_through(rest, [var]):
        return None
    if sign > 0:
        return 1, sympy.ceiling(-rest / coefficient)
    return -1, sympy.floor(rest / -coefficient)


def loop_bounds(
    variables: Sequence[sympy.Symbol], where: Sequence[ir.Constraint]
) -> tuple[list[Bounds], list[ir.Constraint]]:
    """Bounds for nested loops over ``variables`` (outermost first), by Fourier-Motzkin.

    Returns the bounds and the conditions to check besides them: the guards on
    the outer variables alone, equalities, divisibility, and inequalities whose
    coefficient has an unknown sign. What Fourier-Motzkin derives for the outer
    variables is implied by a non-empty loop and is not repeated.
    """
    summed = set(variables)
    guards = [c for c in where if not c.free_symbols & summed]
    conditions = [c for c in where if c.kind != "ge" and c.free_symbols & summed]
    inequalities = [c for c in where if c.kind == "ge" and c.free_symbols & summed]
    result: list[Bounds] = []
    for var in reversed(list(variables)):
        lower: list[sympy.Expr] = []
        upper: list[sympy.Expr] = []
        positive: list[ir.Constraint] = []
        negative: list[ir.Constraint] = []
        others: list[ir.Constraint] = []
        for constraint in inequalities:
            bound = bound_of(constraint, var) if constraint.expr.has(var) else None
            if bound is None:
                (conditions if constraint.expr.has(var) else others).append(constraint)
                continue
            side, value = bound
            (lower if side > 0 else upper).append(value)
            (positive if side > 0 else negative).append(constraint)
        # every lower bound paired with every upper bound: the outer variables must admit a point
        for low in positive:
            for high in negative:
                a = ir.coefficient(low.expr, var)
                b = -ir.coefficient(high.expr, var)
                others.append(ir.Constraint("ge", expand(b * low.expr + a * high.expr)))
        inequalities = _prune(
            [c for c in simplify_constraints(others) or () if c.free_symbols & summed]
        )
        result.append(Bounds(var, tuple(dict.fromkeys(lower)), tuple(dict.fromkeys(upper))))
    return list(reversed(result)), guards + conditions


def _prune(constraints: list[ir.Constraint]) -> list[ir.Constraint]:
    """Drop inequalities implied by another with the same variable part and a smaller constant."""
    kept: list[ir.Constraint] = []
    for constraint in constraints:
        implied = False
        for other in constraints:
            if other is constraint:
                continue
            difference = expand(constraint.expr - other.expr)
            earlier = constraints.index(other) < constraints.index(constraint)
            if affine.positive(difference) or (difference == 0 and earlier):
                implied = True
                break
        if not implied:
            kept.append(constraint)
    return kept


def definition_facts(symbol: sympy.Symbol, definition: sympy.Expr) -> list[sympy.Expr]:
    """What ``symbol = floor(n/d) + c`` (or a min of such) says as affine facts ``>= 0``."""
    facts = []
    parts = definition.args if isinstance(definition, sympy.Min) else (definition,)
    for part in parts:
        floors = [t for t in sympy.Add.make_args(part) if isinstance(t, sympy.floor)]
        if not floors:
            facts.append(ir.expand(part - symbol))
        if len(floors) != 1:
            continue
        offset = ir.expand(part - floors[0])
        numerator, denominator = quotient(floors[0].args[0])
        scaled = ir.expand(denominator * (symbol - offset))
        # d*(symbol - c) <= n, and > n - d when the definition is a single floor
        facts.append(ir.expand(numerator - scaled))
        if len(parts) == 1:
            facts.append(ir.expand(scaled - numerator + denominator - 1))
    return facts


@functools.lru_cache(maxsize=4096)
def quotient(expr: sympy.Expr) -> tuple[sympy.Expr, sympy.Expr]:
    """``expr`` as ``numerator / denominator``, the denominator positive where it is a number."""
    numerator, denominator = sympy.fraction(sympy.together(expr))
    if denominator.is_number and denominator < 0:
        numerator, denominator = -numerator, -denominator
    return ir.expand(numerator), denominator
