"""Sums over a window: a summed variable that the variables around it pin to a few values.

The pullback of a max pooling, ``dX[p] = sum_i dY[i] * [p - 2*i = argmax ...]`` with
``p - 2 <= 2*i <= p``, reads two outputs for each input, yet a dense grid over ``(p, i)``
spans every output. Written as an offset below its top, ``i = p//2 - k`` with ``k`` in
0..1, the sum runs over the window only. The dense emitter and the dense evaluator both
rewrite their reductions this way; every condition on the variable, its box among them,
stays a condition (a mask), so the rewrite changes the grid, never the value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import sympy

from .. import ir
from ..solve import linear_part


def window_size(
    var: sympy.Symbol, node: ir.Reduce, outer: set[sympy.Symbol]
) -> tuple[int, sympy.Expr] | None:
    """``(count, top)``: the summed ``var`` of ``node`` takes at most ``count`` values, all
    ``<= top``, for given values of the ``outer`` variables (None unless a pair of its
    conditions bounds it so).

    ``c*var <= g`` and ``c'*var >= f``, with ``g/c - f/c'`` a number, give
    ``top = floor(g/c)`` and ``count = floor(g/c - f/c') + 1``.
    """
    others = set(node.variables) - {var}
    tops, bottoms = [], []
    for constraint in node.where:
        symbols = constraint.expr.free_symbols
        if constraint.kind != "ge" or var not in symbols or not symbols & outer or symbols & others:
            continue
        coefficient, remainder = linear_part(constraint, var)
        if coefficient.is_Integer and coefficient < 0:
            tops.append((remainder, -coefficient))
        elif coefficient.is_Integer and coefficient > 0:
            bottoms.append((-remainder, coefficient))
    best: tuple[int, sympy.Expr] | None = None
    for g, c in tops:
        for f, c_low in bottoms:
            width = ir.expand(g / c - f / c_low)
            if width.is_number and width >= 0:
                count = int(sympy.floor(width)) + 1
                if best is None or count < best[0]:
                    best = (count, sympy.floor(g / c, evaluate=False))
    return best


def narrowed(
    node: ir.Reduce,
    outer: set[sympy.Symbol],
    extent: Callable[[sympy.Symbol], int | None],
    fresh: Callable[[], sympy.Symbol],
) -> ir.Reduce:
    """``node`` with each variable that ``outer`` pins to a window of ``count`` values
    rewritten as ``top - k``, ``k`` a ``fresh`` variable in ``0..count-1`` -- where that
    window is under half of the variable's own range (``extent``, None if unknown)."""
    mapping: dict[sympy.Symbol, sympy.Expr] = {}
    variables, boxes = list(node.variables), []
    for position, var in enumerate(node.variables):
        window = window_size(var, node, outer)
        if window is None:
            continue
        count, top = window
        size = extent(var)
        if size is not None and size <= 2 * count:
            continue
        offset = fresh()
        mapping[var] = top - offset
        variables[position] = offset
        boxes += [ir.Constraint("ge", offset), ir.Constraint("ge", count - 1 - offset)]
    if not mapping:
        return node
    where = tuple(c.subs(mapping) for c in node.where) + tuple(boxes)
    return replace(node, variables=tuple(variables), body=ir.subs(node.body, mapping), where=where)
