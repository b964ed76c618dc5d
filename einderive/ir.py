"""The intermediate representation: frozen dataclasses with sympy index expressions.

A forward program and its derived pullbacks use the same types, so a result can
be printed, evaluated, emitted and differentiated again.

Every index variable is bound, either by the left-hand side of its statement or
by a `Reduce`; a `Reduce` carries its domain as affine `Constraint`s (the box
``0 <= m <= M-1`` of a forward sum, and after a derivation the exact bounds and
divisibility conditions left by eliminating a Kronecker delta).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Literal

import sympy
from sympy.core.function import AppliedUndef, UndefinedFunction

from . import affine
from .errors import Span


class Clamp(sympy.Function):
    """``clamp(e, lo, hi)`` in an index position: ``lo`` below, ``hi`` above, else ``e``."""

    nargs = 3


class Reflect(sympy.Function):
    """``reflect(e, n)`` in an index position, as PyTorch's ``padding_mode='reflect'``: the
    positions mirrored about the first and the last without repeating them
    (``-1 -> 1``, ``n -> n - 2``)."""

    nargs = 2


class Divide(sympy.Function):
    """``e / n`` in an index position: exact division, a read only where ``n`` divides
    ``e`` (zero elsewhere); ``e`` itself where ``n`` divides every term (``2*i / 2``)."""

    nargs = 2

    @classmethod
    def eval(cls, numerator: sympy.Expr, divisor: sympy.Expr) -> sympy.Expr | None:
        quotient = sympy.together(numerator / divisor)
        if sympy.fraction(quotient)[1] == 1:
            return sympy.expand(quotient)
        return None


_OPAQUE = (
    sympy.floor,
    sympy.ceiling,
    sympy.Min,
    sympy.Max,
    sympy.Mod,
    Clamp,
    Reflect,
    Divide,
)


def _is_expanded(expr: sympy.Expr) -> bool:
    """Whether ``expr`` is a sum of products of numbers and symbols (and integer powers of
    symbols): sympy's automatic evaluation already leaves most index expressions so, and
    ``sympy.expand`` would give them back unchanged, slowly."""
    for term in expr.args if expr.is_Add else (expr,):
        if term.is_Atom:
            continue
        if not term.is_Mul:
            return False
        for factor in term.args:
            if not (
                factor.is_Atom
                or (factor.is_Pow and factor.base.is_Symbol and factor.exp.is_Integer)
            ):
                return False
    return True


def expand(expr: sympy.Expr) -> sympy.Expr:
    """Distribute products over sums, leaving the insides of floor/ceiling/Min/Max alone."""
    expr = sympy.sympify(expr)
    if _is_expanded(expr):
        return expr
    opaque = expr.atoms(*_OPAQUE)
    if not opaque:
        return sympy.expand(expr)
    hidden = {f: sympy.Dummy() for f in opaque}
    shown = {d: f for f, d in hidden.items()}
    return sympy.expand(expr.xreplace(hidden)).xreplace(shown)


class IndexRead(AppliedUndef):  # type: ignore[misc]
    """A read of an integer index array inside an index expression: ``tok[b]`` is
    ``index_array("tok")(b)``, an integer-valued sympy function of affine indices.

    The affine machinery sees it as an opaque term with no coefficient in any variable
    (``tok[b] + m - 1`` is affine in ``m``); a delta over it cannot be eliminated for a
    variable it depends on, so a pullback through it stays a scatter (``derive``).
    """

    @property
    def array(self) -> str:
        """The index array's name."""
        return type(self).__name__


@functools.cache
def index_array(name: str) -> type[IndexRead]:
    """The sympy function class of the index array ``name`` (one class per name)."""
    made: type[IndexRead] = UndefinedFunction(name, bases=(IndexRead,), integer=True)
    return made


def index_reads(expr: sympy.Basic) -> set[IndexRead]:
    """The reads of index arrays in ``expr``, nested ones included."""
    return expr.atoms(IndexRead) if isinstance(expr, sympy.Basic) else set()


def index_arrays_read(node: Node) -> set[str]:
    """The index arrays ``node`` reads: inside its reads' brackets and its domains."""
    found: set[str] = set()
    for part in walk(node):
        exprs: list[sympy.Expr] = []
        if isinstance(part, Access):
            exprs += part.indices
        if isinstance(part, Reduce | IsExtremum):
            exprs += [c.expr for c in part.where]
        if isinstance(part, IsExtremum):
            exprs += part.at
        found |= {read.array for e in exprs for read in index_reads(e)}
    return found


def reads_through(expr: sympy.Expr, variables: Iterable[sympy.Symbol]) -> bool:
    """Whether ``expr`` reads an index array at a position that depends on ``variables``."""
    wanted = set(variables)
    return any(read.free_symbols & wanted for read in index_reads(expr))


Exact = int | Fraction  # an int where it is one: integer arithmetic is the fast common case
Linear = tuple[tuple[tuple[sympy.Expr, Exact], ...], Exact]


def _exact(number: sympy.Expr) -> Exact | None:
    if number.is_Integer:
        return int(number)
    return Fraction(int(number.p), int(number.q)) if number.is_Rational else None


def _number(value: Exact) -> sympy.Expr:
    if isinstance(value, int) or value.denominator == 1:
        return sympy.Integer(int(value))
    return sympy.Rational(value.numerator, value.denominator)


@functools.lru_cache(maxsize=65536)
def _linear(expr: sympy.Expr) -> Linear | None:
    """``expr`` as ((symbol, coefficient), ...) and a constant, if it is a sum of rational
    numbers and rational multiples of symbols; None otherwise."""
    constant: Exact = 0
    terms: list[tuple[sympy.Expr, Exact]] = []
    for term in expr.args if expr.is_Add else (expr,):
        if term.is_Symbol:
            terms.append((term, 1))
            continue
        factor, symbol = term.args if term.is_Mul and len(term.args) == 2 else (term, None)
        exact = _exact(factor)
        if exact is None or (symbol is not None and not symbol.is_Symbol):
            return None
        if symbol is None:
            constant = exact
        else:
            terms.append((symbol, exact))
    return tuple(terms), constant


def _linear_values(mapping: Mapping[sympy.Symbol, sympy.Expr]) -> dict[sympy.Symbol, Linear | None]:
    return {
        symbol: _linear(value if isinstance(value, sympy.Basic) else sympy.sympify(value))
        for symbol, value in mapping.items()
    }


def substitute(
    expr: sympy.Expr,
    mapping: Mapping[sympy.Symbol, sympy.Expr],
    values: Mapping[sympy.Symbol, Linear | None] | None = None,
) -> sympy.Expr:
    """``expand(expr.xreplace(mapping))``; an affine ``expr`` and affine values are combined
    term by term in exact numbers, and the result is built once from its terms.
    ``values`` are the mapping's values read as affine forms, if already known."""
    linear = _linear(expr)
    if linear is None:
        return expand(expr.xreplace(mapping))
    if values is None:
        values = _linear_values(mapping)
    terms, constant = linear
    if len(terms) == 1:  # one variable, as most indices: no collecting
        symbol, factor = terms[0]
        if symbol not in values:
            return expr
        inner = values[symbol]
        if inner is None:
            return expand(expr.xreplace(mapping))
        inner_terms, inner_constant = inner
        if factor != 1:
            inner_terms = tuple((other, factor * f) for other, f in inner_terms)
        return _affine(inner_terms, constant + factor * inner_constant)
    combined: dict[sympy.Expr, Exact] = {}  # symbol -> coefficient
    changed = False
    for symbol, factor in terms:
        if symbol not in values:
            combined[symbol] = combined.get(symbol, 0) + factor
            continue
        changed = True
        inner = values[symbol]
        if inner is None:
            return expand(expr.xreplace(mapping))
        for other, other_factor in inner[0]:
            combined[other] = combined.get(other, 0) + factor * other_factor
        constant += factor * inner[1]
    if not changed:
        return expr
    return _affine(tuple((s, f) for s, f in combined.items() if f != 0), constant)


@functools.lru_cache(maxsize=65536)
def _affine(terms: tuple[tuple[sympy.Expr, Exact], ...], constant: Exact) -> sympy.Expr:
    """``sum(factor * symbol) + constant`` as a sympy expression (remembered: the few
    index expressions of many pullbacks are built once)."""
    parts = [
        symbol if factor == 1 else sympy.Mul(_number(factor), symbol) for symbol, factor in terms
    ]
    return sympy.Add(*parts, _number(constant))


def coefficient(expr: sympy.Expr, var: sympy.Symbol) -> sympy.Expr:
    """The coefficient of ``var`` in an expanded ``expr`` (``expr.coeff(var)``, without
    sympy's general machinery for the terms einderive writes: ``var`` alone or as a factor).
    """
    if expr == var:
        return sympy.Integer(1)
    found: list[sympy.Expr] = []
    for term in expr.args if expr.is_Add else (expr,):
        if term == var:
            found.append(sympy.Integer(1))
        elif term.is_Mul and var in term.args:
            others = [factor for factor in term.args if factor != var]
            if any(factor.has(var) for factor in others):
                return expr.coeff(var)
            found.append(sympy.Mul(*others))
        elif not term.is_Atom and term.has(var):
            return expr.coeff(var)
    return sympy.Add(*found) if found else sympy.Integer(0)


def exact_quotient(expr: sympy.Expr) -> tuple[sympy.Expr, sympy.Expr, sympy.Expr] | None:
    """An index with fractions as ``numerator / denominator + rest``, the terms with a
    denominator over a common (positive) one and ``rest`` the integral terms: ``p/2 - 1/2 - i``
    is ``((p - 1), 2, -i)``; None when no term has a denominator.

    A derived pullback reads ``dY[p/2 - 1/2]`` only where 2 divides ``p - 1``: the notation
    writes it ``dY[(p - 1) / 2 - i]``, ``/`` in a bracket being exact division.
    """
    fractional: list[sympy.Expr] = []
    integral: list[sympy.Expr] = []
    for term in sympy.Add.make_args(expand(expr)):
        (integral if sympy.fraction(term)[1] == 1 else fractional).append(term)
    if not fractional:
        return None
    numerator, denominator = sympy.fraction(sympy.together(sympy.Add(*fractional)))
    if denominator.could_extract_minus_sign():
        numerator, denominator = -numerator, -denominator
    return expand(numerator), denominator, sympy.Add(*integral)


ReduceOp = Literal["sum", "max", "min", "prod"]
ConstraintKind = Literal["ge", "eq", "div"]


@dataclass(frozen=True)
class Constraint:
    """An affine condition: ``expr >= 0``, ``expr == 0`` or ``modulus | expr``."""

    kind: ConstraintKind
    expr: sympy.Expr
    modulus: sympy.Expr = sympy.Integer(1)

    def subs(self, mapping: Mapping[sympy.Symbol, sympy.Expr]) -> Constraint:
        return normalise(
            replace(
                self,
                expr=substitute(self.expr, mapping),
                modulus=self.modulus.xreplace(mapping),
            )
        )

    @property
    def free_symbols(self) -> set[sympy.Symbol]:
        return self.expr.free_symbols | self.modulus.free_symbols


def normalise(constraint: Constraint) -> Constraint:
    """One canonical form: denominators cleared, positive common factors divided out.

    Multiplying ``expr >= 0`` by a positive number keeps its meaning; so does
    dividing ``c*e >= 0`` by a positive ``c`` (and ``c*m | c*e`` by ``c``).
    """
    return _normalise(constraint.kind, expand(constraint.expr), constraint.modulus)


@functools.lru_cache(maxsize=65536)
def _normalise(kind: ConstraintKind, expr: sympy.Expr, modulus: sympy.Expr) -> Constraint:
    terms = expr.as_coefficients_dict()
    if any(not c.is_Integer for c in terms.values()) or any(
        exponent.is_negative for term in terms for exponent in term.as_powers_dict().values()
    ):
        # a denominator: clear it (rare: strides solved for, rational coefficients)
        numerator, denominator = sympy.fraction(sympy.together(expr))
        if not affine.positive(denominator):
            numerator, denominator = expr, sympy.Integer(1)
            for coefficient in terms.values():
                if coefficient.is_Rational:
                    denominator = sympy.ilcm(denominator, coefficient.q)
            numerator = expr * denominator
        expr = expand(numerator)
        if kind == "div":
            modulus = modulus * denominator
        terms = expr.as_coefficients_dict()
    # common positive factors: the integer content, and symbols shared by every term
    common: list[sympy.Expr] = []
    content = math.gcd(*(int(c) for c in terms.values())) if terms else 1
    if content > 1:
        common.append(sympy.Integer(content))
    monomials = [set(t.as_powers_dict()) for t in terms if t != 1]
    if monomials and len(monomials) == len(terms):
        shared = set.intersection(*monomials)
        common += [f for f in shared if f.is_positive and f.is_integer]
    for factor in common:
        if kind == "div" and sympy.Mod(modulus, factor) != 0:
            continue
        expr = expand(expr / factor)
        if kind == "div":
            modulus = modulus / factor
    return Constraint(kind, expr, modulus)


def box(var: sympy.Symbol, extent: sympy.Expr) -> tuple[Constraint, Constraint]:
    """``0 <= var <= extent - 1``."""
    return Constraint("ge", var), Constraint("ge", expand(extent - 1 - var))


@dataclass(frozen=True)
class Node:
    """Base of the expression nodes; ``span`` points into the source text."""


@dataclass(frozen=True)
class Const(Node):
    """A number, or an expression in parameters and index variables (``sin(i / 100)``
    reads the index ``i`` as a number): constant with respect to every tensor."""

    value: sympy.Expr
    span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Access(Node):
    """A read ``T[e0, e1, ...]``; zero outside the tensor's shape.

    Between the front end and ``reads.rewrite_statement`` only, an index may hold an
    index function (``floor``, ``Mod``, ``Clamp``, ``Reflect``, ``Divide``) and ``pad`` the
    value read out of range; a program's statements hold neither (they are rewritten into pieces).
    """

    tensor: str
    indices: tuple[sympy.Expr, ...]
    span: Span | None = field(default=None, compare=False)
    pad: sympy.Expr | None = None


@dataclass(frozen=True)
class Add(Node):
    terms: tuple[Node, ...]
    span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Mul(Node):
    factors: tuple[Node, ...]
    span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Pow(Node):
    """``base ** exponent`` with a numeric exponent (``-1`` is division)."""

    base: Node
    exponent: sympy.Expr
    span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Call(Node):
    """An elementwise function, by its name in ``functions.FUNCTIONS``: ``arg`` is its
    first argument, ``rest`` the others (``max(a, b)``)."""

    func: str
    arg: Node
    span: Span | None = field(default=None, compare=False)
    rest: tuple[Node, ...] = ()

    @property
    def args(self) -> tuple[Node, ...]:
        return (self.arg, *self.rest)


@dataclass(frozen=True)
class Reduce(Node):
    """``op`` over the integer points of ``variables`` that satisfy every constraint."""

    op: ReduceOp
    variables: tuple[sympy.Symbol, ...]
    body: Node
    where: tuple[Constraint, ...]
    span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True)
class IsExtremum(Node):
    """1 where ``at`` is the first (row-major) point of ``op`` of ``body`` over ``variables``.

    This is the derivative of ``max_`` / ``min_`` with respect to its body.
    """

    op: ReduceOp
    variables: tuple[sympy.Symbol, ...]
    body: Node
    where: tuple[Constraint, ...]
    at: tuple[sympy.Expr, ...]
    span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Statement:
    """``target[indices] = rhs`` in gather form: each index a distinct variable."""

    target: str
    indices: tuple[sympy.Symbol, ...]
    rhs: Node
    span: Span | None = field(default=None, compare=False)
    # the statement as written, where its reads were rewritten into pieces (for printing)
    written: str | None = field(default=None, compare=False)


ZERO = Const(sympy.Integer(0))
ONE = Const(sympy.Integer(1))


def children(node: Node) -> tuple[Node, ...]:
    if isinstance(node, Add):
        return node.terms
    if isinstance(node, Mul):
        return node.factors
    if isinstance(node, Pow):
        return (node.base,)
    if isinstance(node, Call):
        return node.args
    if isinstance(node, Reduce | IsExtremum):
        return (node.body,)
    return ()


def map_children(node: Node, function: Callable[[Node], Node]) -> Node:
    """``node`` with ``function`` applied to each of its children (nothing else changes)."""
    if isinstance(node, Add):
        return Add(tuple(function(t) for t in node.terms), node.span)
    if isinstance(node, Mul):
        return Mul(tuple(function(f) for f in node.factors), node.span)
    if isinstance(node, Pow):
        return replace(node, base=function(node.base))
    if isinstance(node, Call):
        return replace(node, arg=function(node.arg), rest=tuple(function(a) for a in node.rest))
    if isinstance(node, Reduce | IsExtremum):
        return replace(node, body=function(node.body))
    return node


def walk(node: Node) -> Iterator[Node]:
    """Every node of the tree, parents first (children in order, depth first)."""
    pending = [node]
    while pending:
        current = pending.pop()
        yield current
        below = children(current)
        if below:
            pending.extend(reversed(below))


def accesses(node: Node) -> Iterator[Access]:
    return (n for n in walk(node) if isinstance(n, Access))


def subs(node: Node, mapping: Mapping[sympy.Symbol, sympy.Expr]) -> Node:
    """Substitute index variables (or parameters) everywhere in ``node``.

    Bound variables are unique by construction (see ``ir.fresh``), so
    they are never captured; they are still shielded from the mapping.
    """
    if not mapping:
        return node
    return _subs(node, mapping, _linear_values(mapping))


def _subs(
    node: Node,
    mapping: Mapping[sympy.Symbol, sympy.Expr],
    values: Mapping[sympy.Symbol, Linear | None],
) -> Node:
    """``subs`` with the mapping's values read as affine forms once, not once per read."""
    if type(node) is Access:
        indices = tuple(substitute(e, mapping, values) for e in node.indices)
        return Access(node.tensor, indices, node.span, node.pad)
    if isinstance(node, Const):
        return replace(node, value=node.value.xreplace(mapping))
    if isinstance(node, Add | Mul | Pow | Call):
        return map_children(node, lambda child: _subs(child, mapping, values))
    if isinstance(node, Reduce | IsExtremum):
        inner = {k: v for k, v in mapping.items() if k not in node.variables}
        updated = replace(
            node,
            body=subs(node.body, inner),
            where=tuple(c.subs(inner) for c in node.where),
        )
        if isinstance(updated, IsExtremum):
            updated = replace(updated, at=tuple(substitute(e, mapping) for e in updated.at))
        return updated
    raise TypeError(f"unknown node {node!r}")


def free_index_symbols(node: Node) -> set[sympy.Symbol]:
    """Symbols used in index positions, constraints and index values (``sin(i / 100)``) of
    ``node`` that it does not bind."""
    if isinstance(node, Const):
        return set(node.value.free_symbols)
    if isinstance(node, Access):
        return set().union(*(e.free_symbols for e in node.indices)) if node.indices else set()
    if isinstance(node, Reduce | IsExtremum):
        inner = free_index_symbols(node.body)
        for constraint in node.where:
            inner |= constraint.free_symbols
        if isinstance(node, IsExtremum):
            for e in node.at:
                inner |= e.free_symbols
        return inner - set(node.variables)
    result: set[sympy.Symbol] = set()
    for child in children(node):
        result |= free_index_symbols(child)
    return result


def make_mul(factors: list[Node]) -> Node:
    """A product, with constants folded and ones dropped; zero if any factor is zero."""
    coefficient: sympy.Expr = sympy.Integer(1)
    rest: list[Node] = []
    for factor in factors:
        parts = factor.factors if isinstance(factor, Mul) else (factor,)
        for part in parts:
            if isinstance(part, Const):
                coefficient = coefficient * part.value
            else:
                rest.append(part)
    if coefficient == 0:
        return ZERO
    if coefficient != 1 or not rest:
        rest.insert(0, Const(coefficient))
    return rest[0] if len(rest) == 1 else Mul(tuple(rest))


def make_add(terms: list[Node]) -> Node:
    """A sum, with zeros dropped and constants folded."""
    constant: sympy.Expr = sympy.Integer(0)
    rest: list[Node] = []
    for term in terms:
        parts = term.terms if isinstance(term, Add) else (term,)
        for part in parts:
            if isinstance(part, Const):
                constant = constant + part.value
            else:
                rest.append(part)
    if constant != 0 or not rest:
        rest.append(Const(constant))
    return rest[0] if len(rest) == 1 else Add(tuple(rest))


def make_pow(base: Node, exponent: sympy.Expr) -> Node:
    if exponent == 1:
        return base
    if exponent == 0:
        return ONE
    if isinstance(base, Const):
        return Const(base.value**exponent)
    return Pow(base, exponent)


def fresh(name: str, taken: set[str]) -> sympy.Symbol:
    """An integer symbol named after ``name`` that is not in ``taken`` (and then is)."""
    candidate = name
    for k in itertools.count(1):
        if candidate not in taken:
            break
        candidate = f"{name}{k}"
    taken.add(candidate)
    return sympy.Symbol(candidate, integer=True)


@dataclass(frozen=True)
class Scatter:
    """A term that writes through an index array: ``sum_{v} body [t = w(v)]`` where ``w``
    reads an index array at the summed variables, for some of the statement's own
    variables ``t``. Its natural form is a scatter-add, ``T[..., w(v), ...] += body``;
    a gather would search every ``v`` for ``w(v) = t``."""

    variables: tuple[sympy.Symbol, ...]
    body: Node
    writes: dict[sympy.Symbol, sympy.Expr]  # each pinned variable of the target -> w(v)
    where: tuple[Constraint, ...]  # the rest of the domain

    def positions(self, indices: Sequence[sympy.Symbol]) -> tuple[sympy.Expr, ...]:
        """The target's position written: ``(tok[b], q)`` for ``dE[p, q]``."""
        return tuple(self.writes.get(v, v) for v in indices)


def scatter(term: Node, indices: Sequence[sympy.Symbol]) -> Scatter | None:
    """``term`` of a statement over ``indices`` as a Scatter, if it is one."""
    if not isinstance(term, Reduce) or term.op != "sum" or not term.variables:
        return None
    writes: dict[sympy.Symbol, sympy.Expr] = {}
    rest: list[Constraint] = []
    for constraint in term.where:
        pinned = None
        if constraint.kind == "eq" and reads_through(constraint.expr, term.variables):
            for var in indices:
                if var in writes:
                    continue
                c = coefficient(constraint.expr, var)
                remainder = expand(constraint.expr - c * var)
                if c in (1, -1) and not remainder.has(var):
                    pinned = var, expand(-remainder / c)
                    break
        if pinned is None:
            rest.append(constraint)
        else:
            writes[pinned[0]] = pinned[1]
    if not writes:
        return None
    return Scatter(term.variables, term.body, writes, tuple(rest))
