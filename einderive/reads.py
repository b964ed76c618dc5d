"""Reads beyond affine, rewritten into what the core already handles exactly.

Every new read is a sum of *pieces*, each an affine read guarded by affine conditions
(a ``Reduce`` with ``where`` constraints), so that derivation, elimination of the
Kronecker delta, exact bounds, the interpreter and the vectorized lowering see nothing
new::

    X[e // n]            = sum_{k : n*k <= e <= n*k + n - 1} X[k]
    X[e / n]             = X[e/n] [n divides e]           (exact division)
    X[mod(e, n)]         = sum_{k : n*k <= e <= n*k + n - 1} X[e - n*k]
    X[clamp(e, lo, hi)]  = X[lo] [e < lo] + X[e] [lo <= e <= hi] + X[hi] [e > hi]
    X[reflect(e, n)]     = X[-e] [e < 0] + X[e] [0 <= e <= n-1] + X[2n-2-e] [e > n-1]
    X[e, pad=v]          = X[e] + v [e out of range]      (one piece per side of each axis)
    (i <= j) * body      = body [i <= j]                  ((i != j): two pieces)

``k`` is a fresh index variable that its two conditions pin to one value. A product of
pieces is distributed, and a sum over a piece takes its conditions and variables, so
that a pullback gets exact bounds per piece: ``Y[i] = X[i // 2]`` gives
``dX[p] = sum_{i : 2p <= i <= 2p+1} dY[i]``.

In the index expressions the analysis builds, the index functions are
``sympy.floor(e/n)``, ``sympy.Mod(e, n)``, ``Clamp(e, lo, hi)``, ``Reflect(e, n)`` and
``Divide(e, n)``; the read of an exact division is the read a derivation makes when it
solves ``2*i = p`` for ``i`` (``dY[p/2]`` where 2 divides ``p``), so that a printed
pullback reads back as itself.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import sympy

from . import ir
from .ir import Clamp, Divide, Reflect
from .solve import implied_by_box, quotient, simplify_constraints

INDEX_FUNCTIONS = (sympy.floor, sympy.Mod, Clamp, Reflect, Divide)

# a product of pieces is distributed up to this many pieces (four 3-D clamped reads make
# 3**12); past it the pieces stay a sum, computed as a value
MAX_PIECES = 256


@dataclass(frozen=True)
class Piece:
    """``sum_{variables : where} body``: one guarded part of a read or a product."""

    variables: tuple[sympy.Symbol, ...]
    body: ir.Node
    where: tuple[ir.Constraint, ...]

    def node(self) -> ir.Node:
        if not self.variables and not self.where:
            return self.body
        return ir.Reduce("sum", self.variables, self.body, self.where)


def is_index_function(expr: sympy.Expr) -> bool:
    return isinstance(expr, INDEX_FUNCTIONS)


def has_index_function(expr: sympy.Expr) -> bool:
    return bool(expr.atoms(*INDEX_FUNCTIONS))


def _ge(expr: sympy.Expr) -> ir.Constraint:
    return ir.Constraint("ge", ir.expand(expr))


@dataclass(frozen=True)
class Alternative:
    """One value of an index expression, where its conditions hold."""

    value: sympy.Expr
    where: tuple[ir.Constraint, ...]
    variables: tuple[sympy.Symbol, ...]
    # the range of each new quotient in the sizes alone, implied by ``where`` and the
    # boxes around: a dense grid needs it (by quotient)
    ranges: tuple[tuple[sympy.Symbol, tuple[ir.Constraint, ...]], ...] = ()


def _innermost(expr: sympy.Expr) -> sympy.Expr | None:
    for atom in sympy.preorder_traversal(expr):
        if is_index_function(atom) and not any(has_index_function(a) for a in atom.args):
            return atom
    return None


Quotients = dict[tuple[sympy.Expr, sympy.Expr], sympy.Symbol]
Boxes = Mapping[sympy.Symbol, sympy.Expr]


def value_range(expr: sympy.Expr, boxes: Boxes) -> tuple[sympy.Expr, sympy.Expr] | None:
    """The least and the largest value of an affine ``expr`` over the boxes ``0 <= v <
    extent`` of its variables (None if a variable has no box or a coefficient no sign)."""
    low = high = expr
    for var in expr.free_symbols & set(boxes):
        coefficient = ir.coefficient(expr, var)
        if not coefficient.is_number:
            return None
        top = boxes[var] - 1
        low = low.xreplace({var: sympy.Integer(0) if coefficient > 0 else top})
        high = high.xreplace({var: top if coefficient > 0 else sympy.Integer(0)})
    if (low.free_symbols | high.free_symbols) - _sizes(expr, boxes):
        return None
    return ir.expand(low), ir.expand(high)


def _sizes(expr: sympy.Expr, boxes: Boxes) -> set[sympy.Symbol]:
    """The symbols of ``expr`` that are not variables: sizes and parameters, and those of
    the extents of its variables."""
    found = {s for s in expr.free_symbols if s not in boxes}
    for var in expr.free_symbols & set(boxes):
        found |= boxes[var].free_symbols
    return found


def _alternatives_of(
    function: sympy.Expr, taken: set[str], quotients: Quotients, boxes: Boxes
) -> list[Alternative]:
    """The values of one index function whose arguments are affine (``i // 2`` and
    ``mod(i, 2)`` in one read share their quotient: one variable, not two)."""
    if isinstance(function, sympy.floor | sympy.Mod):
        if isinstance(function, sympy.floor):
            numerator, divisor = quotient(function.args[0])
        else:
            numerator, divisor = ir.expand(function.args[0]), function.args[1]
        known = quotients.get((numerator, divisor))
        quotient_var = known if known is not None else ir.fresh("k", taken)
        quotients[(numerator, divisor)] = quotient_var
        where: tuple[ir.Constraint, ...] = (
            _ge(numerator - divisor * quotient_var),
            _ge(divisor * quotient_var + divisor - 1 - numerator),
        )
        span = value_range(numerator, boxes)
        ranges: tuple[tuple[sympy.Symbol, tuple[ir.Constraint, ...]], ...] = ()
        if known is None and span is not None:
            # the same, with the numerator at its extremes (n*k >= low - n + 1, n*k <= high)
            low, high = span
            bounds = (
                _ge(divisor * quotient_var - low + divisor - 1),
                _ge(high - divisor * quotient_var),
            )
            ranges = ((quotient_var, bounds),)
        value = (
            quotient_var
            if isinstance(function, sympy.floor)
            else numerator - divisor * quotient_var
        )
        new = () if known is not None else (quotient_var,)
        return [Alternative(ir.expand(value), where, new, ranges)]
    if isinstance(function, Divide):
        e, n = (ir.expand(a) for a in function.args)
        return [Alternative(ir.expand(e / n), (ir.Constraint("div", e, n),), ())]
    if isinstance(function, Clamp):
        e, lo, hi = (ir.expand(a) for a in function.args)
        return [
            Alternative(lo, (_ge(lo - 1 - e),), ()),
            Alternative(e, (_ge(e - lo), _ge(hi - e)), ()),
            Alternative(hi, (_ge(e - hi - 1),), ()),
        ]
    e, n = (ir.expand(a) for a in function.args)
    return [
        Alternative(ir.expand(-e), (_ge(-e - 1),), ()),
        Alternative(e, (_ge(e), _ge(n - 1 - e)), ()),
        Alternative(ir.expand(2 * n - 2 - e), (_ge(e - n),), ()),
    ]


def alternatives(
    expr: sympy.Expr, taken: set[str], quotients: Quotients, boxes: Boxes
) -> list[Alternative]:
    """An index expression with index functions as affine alternatives, innermost first
    (``mod(i // 2, 3)`` is the alternatives of ``i // 2``, each then wrapped)."""
    inner = _innermost(expr)
    if inner is None:
        return [Alternative(ir.expand(expr), (), ())]
    placeholder = sympy.Dummy("inner", integer=True)
    outer = expr.xreplace({inner: placeholder})
    result = []
    for alternative in _alternatives_of(inner, taken, quotients, boxes):
        rest = outer.xreplace({placeholder: alternative.value})
        for more in alternatives(rest, taken, quotients, boxes):
            result.append(
                Alternative(
                    more.value,
                    alternative.where + more.where,
                    alternative.variables + more.variables,
                    alternative.ranges + more.ranges,
                )
            )
    return result


class Pieces:
    """The rewriting of one statement's right-hand side (fresh names from ``taken``)."""

    def __init__(
        self,
        shapes: Mapping[str, Sequence[sympy.Expr]],
        boxes: Mapping[sympy.Symbol, sympy.Expr],
        taken: set[str],
    ) -> None:
        self.shapes = shapes
        self.boxes = dict(boxes)
        self.taken = taken

    def _guards(
        self, where: Sequence[ir.Constraint], variables: Sequence[sympy.Symbol] = ()
    ) -> tuple[ir.Constraint, ...] | None:
        """The conditions that the boxes of the variables around do not already imply
        (None if they can never hold together, inside those boxes: a clamped read whose
        upper piece no output reaches has no piece there)."""
        simplified = simplify_constraints(where)
        if simplified is None:
            return None
        boxed = [c for v, extent in self.boxes.items() for c in ir.box(v, extent)]
        if not feasible([*simplified, *boxed], [*variables, *self.boxes]):
            return None
        return tuple(c for c in simplified if not implied_by_box(c, self.boxes))

    def read(self, access: ir.Access) -> list[Piece] | None:
        """A read's pieces; None if it is a plain affine read with no pad value."""
        pad = access.pad
        if pad is not None and pad == 0:
            pad = None
        if pad is None and not any(has_index_function(e) for e in access.indices):
            return None
        plain = replace(access, pad=None)
        pieces: list[Piece] = []
        quotients: Quotients = {}
        per_axis = [alternatives(e, self.taken, quotients, self.boxes) for e in access.indices]
        for combination in itertools.product(*per_axis):
            where = tuple(c for a in combination for c in a.where)
            variables = tuple(v for a in combination for v in a.variables)
            indices = tuple(a.value for a in combination)
            shape = self.shapes[access.tensor]
            for quotient_var, bounds in (r for a in combination for r in a.ranges):
                if pad is None and quotient_var in indices:
                    # a quotient that is a position: its axis bounds it (zero past it), and
                    # its pullback's guards are then the pullback's own box
                    bounds = ir.box(quotient_var, shape[indices.index(quotient_var)])
                where += bounds
            read = replace(plain, indices=indices)
            guards = self._guards(where, variables)
            if guards is None:
                continue
            pieces.append(Piece(variables, read, guards))
            if pad is not None:
                pieces += self._outside(variables, indices, guards, access.tensor, pad)
        return pieces

    def _outside(
        self,
        variables: tuple[sympy.Symbol, ...],
        indices: tuple[sympy.Expr, ...],
        where: tuple[ir.Constraint, ...],
        tensor: str,
        pad: sympy.Expr,
    ) -> list[Piece]:
        """``pad`` where the read is out of range: below or above axis ``k``, every axis
        before it in range (so that the pieces never overlap)."""
        pieces = []
        inside: tuple[ir.Constraint, ...] = ()
        for index, size in zip(indices, self.shapes[tensor], strict=True):
            for side in (_ge(-1 - index), _ge(index - size)):
                guards = self._guards(where + inside + (side,), variables)
                if guards is not None:  # implied by the box: pad everywhere it ranges
                    pieces.append(Piece(variables, ir.Const(pad), guards))
            inside += (_ge(index), _ge(size - 1 - index))
        return pieces

    def pieces(self, node: ir.Node) -> list[Piece] | None:
        """``node`` as pieces where it is a read or an indicator that splits; else None."""
        if isinstance(node, ir.Access):
            return self.read(node)
        if is_indicator(node):
            return [_as_piece(t) for t in ir_terms(node)]
        return None

    def rewrite(self, node: ir.Node) -> ir.Node:
        """``node`` with every new read and indicator in pieces, distributed into products
        and taken into the sums around them."""
        if isinstance(node, ir.Access):
            pieces = self.read(node)
            return node if pieces is None else _sum_of(pieces)
        if isinstance(node, ir.Mul):
            return self._product(node)
        if isinstance(node, ir.Reduce):
            return self._reduce(node)
        return ir.map_children(node, self.rewrite)

    def _product(self, node: ir.Mul) -> ir.Node:
        options: list[list[Piece]] = []
        for factor in node.factors:
            split = self.pieces(factor)
            options.append(split if split is not None else [Piece((), self.rewrite(factor), ())])
        count = 1
        for option in options:
            count *= len(option)
        if count > MAX_PIECES:
            return ir.make_mul([_sum_of(o) for o in options])
        terms: list[ir.Node] = []
        for combination in itertools.product(*options):
            variables = tuple(v for p in combination for v in p.variables)
            guards = self._guards([c for p in combination for c in p.where], variables)
            if guards is None:
                continue
            body = ir.make_mul([p.body for p in combination])
            terms.append(Piece(variables, body, guards).node())
        return ir.make_add(terms)

    def _reduce(self, node: ir.Reduce) -> ir.Node:
        inner = Pieces(self.shapes, self.boxes, self.taken)
        for constraint in node.where:  # a sum's own box bounds its variables for the guards
            for var in node.variables:
                if constraint.kind == "ge" and ir.coefficient(constraint.expr, var) == -1:
                    rest = ir.expand(constraint.expr + var)
                    if not rest.free_symbols & set(node.variables):
                        inner.boxes[var] = ir.expand(rest + 1)
        body = inner.rewrite(node.body)
        if node.op != "sum":
            return replace(node, body=body)
        # a sum of pieces is a sum of sums, each over its piece's variables and conditions
        terms: list[ir.Node] = []
        for term in ir_terms(body):
            if isinstance(term, ir.Reduce) and term.op == "sum":
                terms.append(
                    replace(
                        node,
                        variables=node.variables + term.variables,
                        body=term.body,
                        where=node.where + term.where,
                    )
                )
            else:
                terms.append(replace(node, body=term))
        return ir.make_add(terms)


def feasible(constraints: Sequence[ir.Constraint], variables: Sequence[sympy.Symbol]) -> bool:
    """False where the inequalities have no point, as far as Fourier-Motzkin over the
    rationals shows it (True when unsure: a symbolic coefficient, a size to compare)."""
    current = [c for c in constraints if c.kind == "ge"]
    for var in variables:
        lower: list[tuple[sympy.Expr, sympy.Expr]] = []
        upper: list[tuple[sympy.Expr, sympy.Expr]] = []
        rest: list[ir.Constraint] = []
        for constraint in current:
            coefficient = ir.coefficient(constraint.expr, var)
            if coefficient == 0:
                rest.append(constraint)
            elif not coefficient.is_number:
                return True
            else:
                (lower if coefficient > 0 else upper).append((coefficient, constraint.expr))
        for a, low in lower:
            for b, high in upper:
                rest.append(ir.Constraint("ge", ir.expand(-b * low + a * high)))
        simplified = simplify_constraints(rest)
        if simplified is None:
            return False
        current = list(simplified)
    return True


def ir_terms(node: ir.Node) -> tuple[ir.Node, ...]:
    return node.terms if isinstance(node, ir.Add) else (node,)


def is_indicator(node: ir.Node) -> bool:
    """Whether ``node`` is an index comparison: guarded ones, or a sum of them (``!=``)."""
    return all(
        isinstance(t, ir.Reduce) and not t.variables and t.where and t.body == ir.ONE
        for t in ir_terms(node)
    )


def _as_piece(node: ir.Node) -> Piece:
    assert isinstance(node, ir.Reduce)
    return Piece(node.variables, node.body, node.where)


def _sum_of(pieces: list[Piece]) -> ir.Node:
    return ir.make_add([p.node() for p in pieces]) if pieces else ir.ZERO


def comparison(op: str, left: sympy.Expr, right: sympy.Expr) -> ir.Node:
    """``(left op right)`` as an indicator: 1 where it holds (``!=`` is two pieces)."""
    difference = ir.expand(right - left)  # >= 0 for <=
    if op == "<=":
        where = [(_ge(difference),)]
    elif op == "<":
        where = [(_ge(difference - 1),)]
    elif op == ">=":
        where = [(_ge(-difference),)]
    elif op == ">":
        where = [(_ge(-difference - 1),)]
    elif op == "==":
        where = [(ir.Constraint("eq", difference),)]
    else:
        where = [(_ge(difference - 1),), (_ge(-difference - 1),)]
    return ir.make_add([ir.Reduce("sum", (), ir.ONE, w) for w in where])


def rewrite_statement(
    statement: ir.Statement,
    shapes: Mapping[str, Sequence[sympy.Expr]],
    extents: Mapping[sympy.Symbol, sympy.Expr],
    taken: set[str],
    written: str,
) -> ir.Statement:
    """The statement with its new reads in pieces; ``written`` (the text as the user wrote
    it) is kept for printing when anything changed."""
    boxes = {v: extents[v] for v in statement.indices if v in extents}
    rhs = Pieces(shapes, boxes, taken).rewrite(statement.rhs)
    if rhs == statement.rhs:
        return statement
    return replace(statement, rhs=rhs, written=written)


def needs_rewrite(node: ir.Node) -> bool:
    """Whether ``node`` holds a read with an index function or a pad value, or a comparison."""
    for part in ir.walk(node):
        if isinstance(part, ir.Access) and (
            part.pad is not None or any(has_index_function(e) for e in part.indices)
        ):
            return True
        if isinstance(part, ir.Reduce) and is_indicator(part):
            return True
    return False


def _extreme(function: sympy.Expr, largest: bool) -> sympy.Expr | None:
    """The largest (or smallest) value of an index function whatever its argument; None
    for ``floor``, which has neither."""
    if isinstance(function, sympy.Mod | Reflect):
        return ir.expand(function.args[1] - 1) if largest else sympy.Integer(0)
    if isinstance(function, Clamp):
        return function.args[2] if largest else function.args[1]
    return None


def bounding(expr: sympy.Expr, size: sympy.Expr) -> list[tuple[sympy.Expr, sympy.Expr]]:
    """What an index position says about the extents of the variables in it, as affine
    reads ``(e, n)`` that must not run past ``n`` (the read it is, when affine).

    ``X[i // 2]`` on an axis of ``N`` is ``i`` on ``2N``; ``X[4*c + 2*mod(i, 2)]`` is
    ``4*c + 2`` on ``N`` (every value of the wrap taken); a whole wrapped, clamped or
    reflected position never runs past its tensor, and says nothing. An exact division is
    its value (``X[p / 2]`` on ``N`` is ``p/2 <= N - 1``: it reads where it divides).
    """
    if expr.has(Divide):
        expr = ir.expand(expr.replace(Divide, lambda numerator, divisor: numerator / divisor))
    if not has_index_function(expr):
        return [(expr, size)]
    rest: sympy.Expr = sympy.Integer(0)
    floors: list[sympy.Expr] = []
    for term in sympy.Add.make_args(ir.expand(expr)):
        if not has_index_function(term):
            rest += term
            continue
        coefficient, function = term.as_coeff_Mul()
        if not is_index_function(function) or not coefficient.is_number:
            return []
        if isinstance(function, sympy.floor):
            if coefficient != 1:
                return []
            floors.append(function)
            continue
        extreme = _extreme(function, largest=coefficient > 0)
        assert extreme is not None
        rest += coefficient * extreme
    if not floors:
        return [] if rest.is_number else [(ir.expand(rest), size)]
    if len(floors) > 1:
        return []
    numerator, divisor = quotient(floors[0].args[0])
    # floor(a/n) + r <= size - 1  <=>  a + n*r <= n*size - 1
    return [(ir.expand(numerator + divisor * rest), ir.expand(divisor * size))]
