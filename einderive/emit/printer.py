"""The notation printer: one ``_print_<Node>`` method per IR class, in plain text.

``LatexPrinter`` (latex.py) changes only the spelling: operators, brackets,
the sum sign, and how bounds are written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import sympy
from sympy.printing.str import StrPrinter

from .. import affine, ir
from ..solve import Bounds, loop_bounds, simplify_constraints

Shapes = Mapping[str, Sequence[sympy.Expr]]


class ScalarPrinter(StrPrinter):
    """sympy's str printer with the spelling of Python and NumPy users: max, min, ceil."""

    def _print_Max(self, expr: sympy.Max) -> str:
        return f"max({', '.join(self._print(a) for a in _sorted_args(expr))})"

    def _print_Min(self, expr: sympy.Min) -> str:
        return f"min({', '.join(self._print(a) for a in _sorted_args(expr))})"

    def _print_ceiling(self, expr: sympy.ceiling) -> str:
        return f"ceil({self._print(expr.args[0])})"

    def _print_Mod(self, expr: sympy.Mod) -> str:
        # `mod(a, q)`: `-a % q` would read as `(-a) % q`
        return f"mod({self._print(expr.args[0])}, {self._print(expr.args[1])})"

    def _print_Exp1(self, expr: sympy.Expr) -> str:
        return "exp(1)"  # `E` would read back as a parameter


def _sorted_args(expr: sympy.Expr) -> list[sympy.Expr]:
    """Numbers first, then the rest as sympy orders them."""
    return sorted(expr.args, key=lambda a: (not a.is_number, sympy.default_sort_key(a)))


# Precedence levels, loosest first.
ADD, MUL, UNARY, POW, ATOM = range(5)


class NotationPrinter:
    """Prints IR nodes, index expressions, bounds and conditions in the notation."""

    times = " * "
    equals = "=="  # an index comparison's equality
    minus = "-"
    at_most = "<="
    at_least = ">="

    def __init__(self, order: Sequence[sympy.Symbol] = (), shapes: Shapes | None = None) -> None:
        self.order = list(order)
        self._order_key = tuple(order)
        # the tensors' shapes, where known: a bound that a read's own axis implies is not
        # printed (without them, one in numbers is taken as the axis's, as for sizes)
        self.shapes = shapes
        # top-level sums whose bounds and conditions are printed as the domain's lines
        self.domain_terms: set[int] = set()

    # ---- scalars: index expressions, bounds, parameters ----------------------------------

    def symbol(self, symbol: sympy.Symbol) -> str:
        return symbol.name

    def number(self, value: sympy.Expr) -> str:
        return str(value)

    def scalar(self, expr: sympy.Expr) -> str:
        """A constant or bound expression (parameters, sizes, floor/ceiling, max/min)."""
        return ScalarPrinter().doprint(expr)

    def product(self, coefficient: str, symbol: str) -> str:
        return f"{coefficient}*{symbol}"

    def index(self, expr: sympy.Expr) -> str:
        """An affine index expression, variables in the reader's order: ``p - s*i + 1``.

        A pure function of the printer's kind, its order and ``expr``, so it is
        remembered: a pullback of a product of n factors prints n - 1 reads of each
        of n pullbacks, whose index expressions are few (``p + 3``).
        """
        return _index_text(type(self), self._order_key, expr)

    def index_text(self, expr: sympy.Expr) -> str:
        """``index`` computed afresh.

        The terms with a denominator are one exact quotient, ``(p - 1) / 2 - i``: read back,
        ``/`` in a bracket reads only where the division is exact, the condition that the
        derivation attached to such a read (``2 divides p - 1``).
        """
        expr = ir.expand(expr)
        parts: list[tuple[bool, str]] = []
        exact = ir.exact_quotient(expr)
        if exact is not None:
            numerator, denominator, expr = exact
            negative = _looks_negative(numerator)
            magnitude = ir.expand(-numerator if negative else numerator)
            text = self.quotient(
                self.index(magnitude),
                self.scalar(denominator),
                isinstance(magnitude, sympy.Add),
                not (denominator.is_Integer or denominator.is_Symbol),
            )
            parts.append((negative, text))
        variables = [v for v in self.order if expr.has(v)]
        rest = expr
        # reads of index arrays first: `tok[b] + m - 1`
        for term in sympy.Add.make_args(expr):
            reads = ir.index_reads(term)
            if not reads:
                continue
            rest = ir.expand(rest - term)
            read = max(reads, key=lambda r: len(str(r)))  # the outermost
            coefficient = term / read
            negative = _looks_negative(coefficient)
            magnitude = -coefficient if negative else coefficient
            text = self.index_read(read)
            if magnitude != 1:
                text = self.product(self.scalar(magnitude), text)
            parts.append((negative, text))
        for var in variables:
            coefficient = ir.coefficient(expr, var)
            if coefficient == 0:
                continue
            rest = ir.expand(rest - coefficient * var)
            negative = _looks_negative(coefficient)
            magnitude = -coefficient if negative else coefficient
            name = self.symbol(var)
            if magnitude == 1:
                text = name
            elif magnitude.is_Integer:
                text = self.product(self.number(magnitude), name)
            else:
                numerator, denominator = sympy.fraction(magnitude)
                if denominator != 1:
                    top = name if numerator == 1 else self.product(self.scalar(numerator), name)
                    text = self.fraction(
                        top, self.scalar(denominator), isinstance(denominator, sympy.Add)
                    )
                else:
                    wrapped = self.scalar(magnitude)
                    if isinstance(magnitude, sympy.Add):
                        wrapped = f"({wrapped})"
                    text = self.product(wrapped, name)
            parts.append((negative, text))
        if rest != 0:
            negative = _looks_negative(rest)
            magnitude = -rest if negative else rest
            text = self.number(magnitude) if magnitude.is_Integer else self.scalar(magnitude)
            if isinstance(magnitude, sympy.Add):
                text = f"({text})"
            parts.append((negative, text))
        if not parts:
            return "0"
        # lead with a positive term where there is one: `9 - p`, not `-p + 9`
        leading = next((k for k, (negative, _) in enumerate(parts) if not negative), 0)
        parts.insert(0, parts.pop(leading))
        first_negative, first = parts[0]
        out = (self.minus if first_negative else "") + first
        for negative, text in parts[1:]:
            out += f" - {text}" if negative else f" + {text}"
        return out

    def index_read(self, read: ir.IndexRead) -> str:
        """A read of an index array inside an index: ``tok[b]``."""
        return f"{read.array}[{', '.join(self.index(e) for e in read.args)}]"

    # ---- value expressions --------------------------------------------------------------

    def expr(self, node: ir.Node, context: int = ADD) -> str:
        method = getattr(self, f"_print_{type(node).__name__}")
        text, level = method(node)
        return self.group(text) if level < context else text

    def group(self, text: str) -> str:
        return f"({text})"

    def _print_Const(self, node: ir.Const) -> tuple[str, int]:
        value = node.value
        if _looks_negative(value):
            magnitude = -value
            text = self.scalar(magnitude)
            if _constant_level(magnitude) < MUL:
                text = self.group(text)  # `-(2 - sqrt(2))`
            return self.minus + text, UNARY
        return self.scalar(value), _constant_level(value)

    def _print_Access(self, node: ir.Access) -> tuple[str, int]:
        if not node.indices:
            return node.tensor, ATOM
        return f"{node.tensor}[{', '.join(self.index(e) for e in node.indices)}]", ATOM

    def padded(self, read: ir.Access, pad: sympy.Expr) -> str:
        """``X[e, pad=v]``: the read, ``v`` out of range."""
        value = "-inf" if pad == -sympy.oo else "inf" if pad == sympy.oo else self.scalar(pad)
        text, _ = self._print_Access(read)
        return f"{text[:-1]}, pad={value}]"

    def _print_Add(self, node: ir.Add) -> tuple[str, int]:
        padded = _padded_read(node)
        if padded is not None:  # X[e] and the pad value where e is out of range
            return self.padded(*padded), ATOM
        out = ""
        terms = list(node.terms)
        # lead with a positive term where there is one: `1 - sigmoid(z)`
        leading = next((k for k, t in enumerate(terms) if not _split_sign(t)[0]), 0)
        terms.insert(0, terms.pop(leading))
        for k, term in enumerate(terms):
            negative, magnitude = _split_sign(term)
            text = self.expr(magnitude, ADD if k == 0 and not negative else MUL)
            if k == 0:
                out = (self.minus if negative else "") + text
            else:
                out += (" - " if negative else " + ") + text
        return out, ADD

    def _print_Mul(self, node: ir.Mul) -> tuple[str, int]:
        negative, magnitude = _split_sign(node)
        factors = magnitude.factors if isinstance(magnitude, ir.Mul) else (magnitude,)
        numerator = [f for f in factors if not (isinstance(f, ir.Pow) and f.exponent < 0)]
        denominator = [
            ir.make_pow(f.base, -f.exponent)
            for f in factors
            if isinstance(f, ir.Pow) and f.exponent < 0
        ]
        text = self.join_product(numerator) if numerator else "1"
        if denominator:
            compound = len(denominator) > 1
            # a single divisor binds tighter than `/`: `x / (a / b)`, `x / X[p]**2`
            divisor = self.join_product(denominator) if compound else self.expr(denominator[0], POW)
            text = self.fraction(text, divisor, compound)
        if negative:
            return self.minus + text, UNARY
        return text, MUL

    def join_product(self, factors: Sequence[ir.Node]) -> str:
        # a fraction constant needs no brackets in a product: `a * 1/2 * b` is `a*b/2`
        return self.times.join(
            self.expr(f, MUL if len(factors) == 1 or isinstance(f, ir.Const) else MUL + 1)
            for f in factors
        )

    def fraction(self, numerator: str, denominator: str, compound: bool) -> str:
        return f"{numerator} / " + (f"({denominator})" if compound else denominator)

    def quotient(self, numerator: str, denominator: str, sum_above: bool, compound: bool) -> str:
        """An exact division in an index: ``(p - 1) / 2``, ``p / (2*s)``."""
        above = self.group(numerator) if sum_above else numerator
        return self.fraction(above, denominator, compound)

    def _print_Pow(self, node: ir.Pow) -> tuple[str, int]:
        base = self.expr(node.base, ATOM)
        exponent = self.scalar(node.exponent)
        if not sympy.sympify(node.exponent).is_Integer:
            exponent = self.group(exponent)  # `x**(1/2)`: `x**1/2` reads as `x/2`
        return f"{base}**{exponent}", POW

    def _print_Call(self, node: ir.Call) -> tuple[str, int]:
        return f"{node.func}({', '.join(self.expr(a) for a in node.args)})", ATOM

    def _print_Reduce(self, node: ir.Reduce) -> tuple[str, int]:
        names = ",".join(self.symbol(v) for v in node.variables)
        unsaid = [c for c in node.where if not _implied_in(c, node.body, self.shapes)]
        if not node.variables and unsaid:
            # a guarded term: its conditions that no factor implies as comparisons (factors
            # of the notation), then its value, so that the line reads back as derived (a
            # top-level term's domain lines say them too); a divisibility is said by the
            # exact division that reads the value (dY[p / 2])
            factors = [self.comparison(c) for c in unsaid]
            return self.times.join([*factors, self.expr(node.body, MUL)]), MUL
        if not node.variables:
            return self.expr(node.body, MUL), MUL
        if isinstance(node.body, ir.Const) and node.body.value == 0:
            # zero, however many terms; `sum_{n}(0)` would not say n's range when read back
            return self.expr(node.body), ATOM
        conditions = self.reduction_conditions(node)
        if conditions:
            names += " : " + ", ".join(conditions)
        return f"{node.op}_{{{names}}}({self.expr(node.body)})", ATOM

    def reduction_conditions(self, node: ir.Reduce | ir.IsExtremum) -> list[str]:
        """The conditions written in a reduction's braces (``prod_{k : k <= j - 1}``): all
        but its box, which reading it back gives again (``k >= 0`` and an upper bound
        by sizes), and those of a top-level sum that the domain's lines print."""
        where = [c for c in node.where if not _is_box(c, node, self.shapes)]
        if node.op == "sum" and id(node) in self.domain_terms:
            # the domain's lines print the bounds; the braces, what no factor implies
            where = [c for c in where if not _implied_by_factors(c, node, self.shapes)]
        else:
            # a divisibility is said by the exact division that reads the value
            where = [
                c for c in where if c.kind != "div" or not _implied_by_factors(c, node, self.shapes)
            ]
        return [self.relation(c, node.variables) for c in where]

    def relation(self, constraint: ir.Constraint, first: Sequence[sympy.Symbol] = ()) -> str:
        """A condition as the notation reads it back: ``==`` for an equation; a variable of
        ``first`` (else of the order) alone on the left where it can be: ``k <= j - 1``,
        ``2*i <= p``."""
        if constraint.kind == "ge":
            for var in [*first, *self.order]:
                coefficient = ir.coefficient(constraint.expr, var)
                if coefficient.is_Integer and coefficient != 0:
                    sign = 1 if coefficient > 0 else -1
                    rest = ir.expand(-sign * (constraint.expr - coefficient * var))
                    relation = self.at_least if sign > 0 else self.at_most
                    left = self.index(sign * coefficient * var)
                    return f"{left} {relation} {self.side(rest)}"
        text = self.condition(constraint)
        return text.replace(" = ", f" {self.equals} ") if constraint.kind == "eq" else text

    def _print_IsExtremum(self, node: ir.IsExtremum) -> tuple[str, int]:
        """``(p - 2*i == argmax_{m}(X[2*i + m]))``: 1 where the position is the argmax (a
        tuple of positions for several indices, ``((p, q) == argmax_{m,n}(...))``)."""
        names = ",".join(self.symbol(v) for v in node.variables)
        conditions = self.reduction_conditions(node)
        if conditions:
            names += " : " + ", ".join(conditions)
        at = ", ".join(self.index(e) for e in node.at)
        if len(node.at) > 1:
            at = self.group(at)
        extremum = f"arg{node.op}_{{{names}}}({self.expr(node.body)})"
        return self.group(f"{at} {self.equals} {extremum}"), ATOM

    # ---- bounds and conditions ----------------------------------------------------------

    def condition(self, constraint: ir.Constraint) -> str:
        expr = constraint.expr
        if constraint.kind == "div":
            return f"{self.scalar(constraint.modulus)} divides {self.index(expr)}"
        if constraint.kind == "eq":
            expr = self.leading_positive(expr)
        left, right, flipped = self.sides(expr)
        relation = "=" if constraint.kind == "eq" else ("<=" if flipped else ">=")
        return f"{self.index(left)} {relation} {self.side(right)}"

    def comparison(self, constraint: ir.Constraint) -> str:
        """A condition as an index comparison of the notation: ``(p >= 2*i)``."""
        if constraint.kind != "eq":
            return self.group(self.condition(constraint))
        left, right, _ = self.sides(self.leading_positive(constraint.expr))
        return self.group(f"{self.index(left)} {self.equals} {self.side(right)}")

    def side(self, expr: sympy.Expr) -> str:
        """The right side of a condition: an index expression, or a plain scalar."""
        if expr.free_symbols & set(self.order):
            return self.index(expr)
        return self.scalar(expr)

    def leading_positive(self, expr: sympy.Expr) -> sympy.Expr:
        """An equation ``expr = 0`` signed so that its first variable has a plus: ``p - q``."""
        for var in self.order:
            coefficient = ir.coefficient(expr, var)
            if coefficient != 0:
                return -expr if _looks_negative(coefficient) else expr
        return expr

    def sides(self, expr: sympy.Expr) -> tuple[sympy.Expr, sympy.Expr, bool]:
        """``expr >= 0`` as ``left >= right`` (or ``<=`` when flipped, the third value).

        Index terms with a plus sign go left, everything else right.
        """
        left, right = sympy.Integer(0), sympy.Integer(0)
        for term in sympy.Add.make_args(ir.expand(expr)):
            if term.free_symbols & set(self.order) and not _looks_negative(term):
                left += term
            else:
                right -= term
        if left == 0:
            # 0 >= right: the index terms of `right` <= the rest, negated
            index = sum(
                (t for t in sympy.Add.make_args(right) if t.free_symbols & set(self.order)),
                sympy.Integer(0),
            )
            return index, ir.expand(index - right), True
        return left, right, False

    def bounds(self, bound: Bounds) -> str:
        return (
            f"{self.symbol(bound.var)} from {self.scalar(bound.low)} to {self.scalar(bound.high)}"
        )

    def domain(self, term: ir.Node) -> list[str]:
        """The bounds and conditions of a top-level term, one line each."""
        if not isinstance(term, ir.Reduce) or term.op != "sum":
            return []
        bounds, conditions = loop_bounds(term.variables, term.where)
        return [self.bounds(b) for b in bounds] + [self.condition(c) for c in conditions]


def _padded_read(node: ir.Add) -> tuple[ir.Access, sympy.Expr] | None:
    """``X[e]`` plus one pad value under conditions on ``e`` alone, at most two per axis:
    what ``reads`` makes of ``X[e, pad=v]`` (None for any other sum)."""
    reads = [t for t in node.terms if isinstance(t, ir.Access)]
    pads = [
        t
        for t in node.terms
        if isinstance(t, ir.Reduce) and not t.variables and isinstance(t.body, ir.Const)
    ]
    if len(reads) != 1 or not pads or len(reads) + len(pads) != len(node.terms):
        return None
    read = reads[0]
    values = {p.body.value for p in pads if isinstance(p.body, ir.Const)}
    positions = {e for e in read.indices}
    if len(values) != 1 or len(pads) > 2 * len(read.indices):
        return None
    for pad in pads:
        for constraint in pad.where:
            position = ir.expand(constraint.expr)
            if not any(
                not (ir.expand(position - sign * e).free_symbols & e.free_symbols)
                for e in positions
                for sign in (1, -1)
            ):
                return None
    return read, values.pop()


def _is_box(
    constraint: ir.Constraint, node: ir.Reduce | ir.IsExtremum, shapes: Shapes | None = None
) -> bool:
    """Whether ``constraint`` is ``v >= 0`` or ``bound - v >= 0`` of one variable of
    ``node``, the bound free of indices: a box that the variable's extent gives. With
    ``shapes``, a bound above is one only where it is the extent that reading the line
    back gives: that of an axis the variable indexes alone (``i <= 2`` is no box of
    ``sum_{i}(dY[i])`` with ``dY`` of 4)."""
    own = constraint.free_symbols & set(node.variables)
    if constraint.kind != "ge" or len(own) != 1:
        return False
    (var,) = own
    coefficient = ir.coefficient(constraint.expr, var)
    rest = ir.expand(constraint.expr - coefficient * var)
    if any(s.is_integer and not s.is_positive for s in rest.free_symbols):
        return False  # a bound that moves with an index (or an offset parameter)
    if coefficient == 1:
        return rest == 0
    if coefficient == -1 and shapes is not None:
        lone = [
            shapes[read.tensor][axis]
            for read in ir.accesses(node.body)
            if read.tensor in shapes and len(shapes[read.tensor]) == len(read.indices)
            for axis, index in enumerate(read.indices)
            if index == var
        ]
        return not lone or any(ir.expand(rest - size + 1) == 0 for size in lone)
    return coefficient == -1


def _moves(expr: sympy.Expr) -> bool:
    """Whether ``expr`` has an index (or an offset parameter) in it, not only sizes."""
    return any(s.is_integer and not s.is_positive for s in expr.free_symbols)


def _implied_by_factors(
    constraint: ir.Constraint, node: ir.Reduce | ir.IsExtremum, shapes: Shapes | None = None
) -> bool:
    """Whether a factor of the body is zero wherever ``constraint`` fails: a read outside
    its tensor (``e >= 0`` or ``bound - e >= 0`` of one of its indices ``e``, up to a
    positive factor), a read by an exact division that does not divide, or an argmax
    indicator outside its window."""
    terms = node.body.terms if isinstance(node.body, ir.Add) else (node.body,)
    return all(_implied_in(constraint, term, shapes) for term in terms)


def _implied_in(constraint: ir.Constraint, term: ir.Node, shapes: Shapes | None = None) -> bool:
    """Whether a factor of ``term`` is zero wherever ``constraint`` fails.

    With ``shapes``, a bound above is implied where it is at least the read's axis; without
    them, where it is in sizes or numbers (what a box of the read's own extent gives)."""
    factors = term.factors if isinstance(term, ir.Mul) else (term,)
    for factor in factors:
        if isinstance(factor, ir.IsExtremum):
            at = dict(zip(factor.variables, factor.at, strict=True))
            if any(ir.normalise(c.subs(at)) == ir.normalise(constraint) for c in factor.where):
                return True
        if not isinstance(factor, ir.Access):
            continue
        if constraint.kind == "div":
            if any(_divides_alike(constraint, index) for index in factor.indices):
                return True
            continue
        if constraint.kind != "ge":
            continue
        shape = shapes.get(factor.tensor) if shapes is not None else None
        for axis, index in enumerate(factor.indices):
            moving = [s for s in index.free_symbols if _moves(s)]
            if not moving:
                continue
            var = moving[0]
            scale = sympy.cancel(ir.coefficient(constraint.expr, var) / ir.coefficient(index, var))
            above = affine.negative(scale)
            if not (above or affine.positive(scale)):
                continue
            rest = ir.expand(constraint.expr - scale * index)
            if _moves(rest):
                continue
            # e >= 0 (or weaker), or a bound above that the axis implies: N - 1 - e >= 0
            if not above and rest.is_number and rest >= 0:
                return True
            if above and shape is not None and len(shape) == len(factor.indices):
                if affine.nonnegative(ir.expand(rest + scale * (shape[axis] - 1))):
                    return True
            elif above:
                return True
    return False


def _divides_alike(constraint: ir.Constraint, index: sympy.Expr) -> bool:
    """Whether ``index``, printed, is an exact division whose condition is ``constraint``:
    ``dY[(p - 1) / 2]`` reads where 2 divides p - 1 (or p + 1: the same condition)."""
    exact = ir.exact_quotient(index)
    if exact is None:
        return False
    numerator, denominator, _ = exact
    said = simplify_constraints([ir.Constraint("div", numerator, denominator)])
    wanted = simplify_constraints([constraint])
    if not said or not wanted or len(said) != 1 or len(wanted) != 1:
        return False
    (said_one,), (wanted_one,) = said, wanted
    if said_one.modulus != wanted_one.modulus:
        return False
    modulus = said_one.modulus
    return any(
        ir.exact_quotient(ir.expand((said_one.expr + sign * wanted_one.expr) / modulus)) is None
        for sign in (1, -1)
    )


def _constant_level(value: sympy.Expr) -> int:
    """How tightly a constant's printed form binds: `1/2` is a division, `2 - sqrt(2)` a sum."""
    if value.is_Integer or value.is_Float or value.is_Symbol or value.is_NumberSymbol:
        return ATOM
    if isinstance(value, sympy.Function):
        return ATOM  # sqrt(2), exp(2)
    if isinstance(value, sympy.Add):
        return ADD
    if isinstance(value, sympy.Pow) and value.exp == sympy.Rational(1, 2):
        return ATOM  # printed as sqrt(...)
    if isinstance(value, sympy.Pow):
        return POW
    return MUL  # a fraction, a product


_INDEX_TEXTS: dict[tuple[type[NotationPrinter], tuple[sympy.Symbol, ...], sympy.Expr], str] = {}


def _index_text(
    kind: type[NotationPrinter], order: tuple[sympy.Symbol, ...], expr: sympy.Expr
) -> str:
    key = (kind, order, expr)
    text = _INDEX_TEXTS.get(key)
    if text is None:
        if len(_INDEX_TEXTS) >= 65536:
            _INDEX_TEXTS.clear()
        text = _INDEX_TEXTS[key] = kind(order).index_text(expr)
    return text


def _looks_negative(value: sympy.Expr) -> bool:
    if value.is_Rational:
        return bool(value.p < 0)
    if value.is_number:
        return bool(value < 0)
    return bool(value.could_extract_minus_sign())


def _split_sign(node: ir.Node) -> tuple[bool, ir.Node]:
    """Whether a term reads as negative, and its magnitude."""
    if isinstance(node, ir.Reduce) and not node.variables:
        negative, body = _split_sign(node.body)
        return negative, replace(node, body=body)
    if isinstance(node, ir.Const) and _looks_negative(node.value):
        return True, ir.Const(-node.value)
    if isinstance(node, ir.Mul):
        first = node.factors[0]
        if isinstance(first, ir.Const) and _looks_negative(first.value):
            return True, ir.make_mul([ir.Const(-first.value), *node.factors[1:]])
    return False, node
