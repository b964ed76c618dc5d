"""Signs, minima and maxima of expressions in sizes and parameters, by einderive's own rules.

sympy answers ``(N - K + 1).is_nonnegative`` through its general deduction engine,
and builds ``Min(a, b, ...)`` by comparing every pair of arguments with it: quadratic
in the number of arguments, with a large constant (the extent of a sum of a
thousand shifted tensors is a minimum of a thousand sizes). What einderive asks
about is affine in symbols whose signs are declared (sizes are positive integers,
strides positive integers, offsets integers), so an interval per term answers it:

* ``interval(e)`` bounds ``e`` from below and above (None where unbounded), by
  interval arithmetic over its terms; a symbol's interval comes from its
  assumptions (a positive integer is at least 1);
* ``nonnegative(e)`` / ``negative(e)`` are proved when the interval shows it, and
  are False when it does not (unknown, never a guess);
* ``minimum(args)`` / ``maximum(args)`` fold the numbers, keep one of the arguments
  that differ by a constant (the smallest, or largest), drop an argument that
  another is proved to bound, and keep the rest unevaluated (``affine.Min`` is a
  ``sympy.Min`` whose rebuilding, by ``subs`` or ``xreplace``, follows the same
  rules, so substituting numbers still folds it).

Candidate pairs for "drops" are found through an index of the terms each argument
must share with another to be comparable, so distinct sizes cost one look-up each.

Under facts (``proves``: does ``e >= 0`` follow from ``f >= 0`` for every fact ``f``,
inside loops whose variables are bounded by the facts) the same symbol intervals settle
what is left once each loop variable is replaced by its worst bound. This module is the
one place that decides a sign.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from fractions import Fraction
from typing import Any

import sympy

Endpoint = Fraction | None  # None: unbounded on that side
Interval = tuple[Endpoint, Endpoint]

_INF = math.inf


def _fraction(number: sympy.Expr) -> Fraction | None:
    """A sympy number as an exact fraction; None for anything that is not a finite real."""
    if number.is_Integer:
        return Fraction(int(number))
    if number.is_Rational:
        return Fraction(int(number.p), int(number.q))
    if number.is_Float and number.is_finite:
        return Fraction(float(number))
    return None


def _times(x: Fraction | float, y: Fraction | float) -> Fraction | float:
    """A product of extended reals in which zero times an infinity is zero (a bound of 0)."""
    if x == 0 or y == 0:
        return Fraction(0)
    return x * y


def _multiply(first: Interval, second: Interval) -> Interval:
    a = (-_INF if first[0] is None else first[0], _INF if first[1] is None else first[1])
    b = (-_INF if second[0] is None else second[0], _INF if second[1] is None else second[1])
    products = [_times(x, y) for x in a for y in b]
    low, high = min(products), max(products)
    return (
        None if low == -_INF else Fraction(low),
        None if high == _INF else Fraction(high),
    )


def _add(first: Interval, second: Interval) -> Interval:
    return (
        None if first[0] is None or second[0] is None else first[0] + second[0],
        None if first[1] is None or second[1] is None else first[1] + second[1],
    )


def _symbol_interval(symbol: sympy.Symbol) -> Interval:
    integer = bool(symbol.is_integer)
    if symbol.is_positive:
        return (Fraction(1) if integer else Fraction(0), None)
    if symbol.is_nonnegative:
        return (Fraction(0), None)
    if symbol.is_negative:
        return (None, Fraction(-1) if integer else Fraction(0))
    if symbol.is_nonpositive:
        return (None, Fraction(0))
    return (None, None)


@functools.lru_cache(maxsize=65536)
def interval(expr: sympy.Expr) -> Interval:
    """Lower and upper bounds of ``expr`` over every value of its symbols (None: unbounded)."""
    if expr.is_Number:
        value = _fraction(expr)
        return (value, value) if value is not None else (None, None)
    if expr.is_Symbol:
        return _symbol_interval(expr)
    if expr.is_Add:
        total: Interval = (Fraction(0), Fraction(0))
        for term in expr.args:
            total = _add(total, interval(term))
            if total == (None, None):
                break
        return total
    if expr.is_Mul:
        product: Interval = (Fraction(1), Fraction(1))
        for factor in expr.args:
            product = _multiply(product, interval(factor))
        return product
    if isinstance(expr, sympy.floor | sympy.ceiling):
        low, high = interval(expr.args[0])
        rounding = math.floor if isinstance(expr, sympy.floor) else math.ceil
        return (
            None if low is None else Fraction(rounding(low)),
            None if high is None else Fraction(rounding(high)),
        )
    if isinstance(expr, sympy.Min | sympy.Max):
        bounds = [interval(a) for a in expr.args]
        lows = [b[0] for b in bounds]
        highs = [b[1] for b in bounds]
        if isinstance(expr, sympy.Min):
            known_highs = [h for h in highs if h is not None]
            return (
                None if None in lows else min(lows),  # type: ignore[type-var]
                min(known_highs) if known_highs else None,
            )
        known_lows = [low for low in lows if low is not None]
        return (
            max(known_lows) if known_lows else None,
            None if None in highs else max(highs),  # type: ignore[type-var]
        )
    if isinstance(expr, sympy.Mod):
        low, high = interval(expr.args[1])
        if low is not None and low > 0:
            return (Fraction(0), high)
        return (None, None)
    if expr.is_Pow:
        base, exponent = expr.args
        low, high = interval(base)
        if exponent.is_Integer and exponent > 0 and low is not None and low >= 0:
            n = int(exponent)
            return (low**n, None if high is None else high**n)
        if exponent == -1 and low is not None and low > 0:
            return (Fraction(0) if high is None else 1 / high, 1 / low)
        if low is not None and low >= 0:
            return (Fraction(0), None)
    return (None, None)


def _product_of_positives(expr: sympy.Expr) -> bool:
    """A positive number, a positive symbol, or a product or power of them (> 0 strictly,
    which an interval closed at 0 does not show for a positive real symbol)."""
    if expr.is_Number or expr.is_Symbol:
        return bool(expr.is_positive)
    if expr.is_Mul:
        return all(_product_of_positives(factor) for factor in expr.args)
    if expr.is_Pow:
        return _product_of_positives(expr.base) and bool(expr.exp.is_real)
    return False


def nonnegative(expr: sympy.Expr) -> bool:
    """``expr >= 0`` for every value of its symbols, as far as intervals show."""
    low = interval(sympy.sympify(expr))[0]
    return low is not None and low >= 0


def positive(expr: sympy.Expr) -> bool:
    """``expr > 0`` for every value of its symbols, as far as intervals show."""
    expr = sympy.sympify(expr)
    low = interval(expr)[0]
    return low is not None and (low > 0 or (low == 0 and _product_of_positives(expr)))


def negative(expr: sympy.Expr) -> bool:
    """``expr < 0`` for every value of its symbols, as far as intervals show."""
    return positive(-sympy.sympify(expr))


# ---- minima and maxima ------------------------------------------------------------------------

# the pairs compared while dropping bounded arguments, at most (beyond: kept unevaluated)
_COMPARISON_BUDGET = 200_000


class _Argument:
    """One argument of a minimum, compared as ``constant + sum(coefficient * monomial)``."""

    __slots__ = ("expr", "constant", "terms")

    def __init__(self, expr: sympy.Expr, value: sympy.Expr, sign: int) -> None:
        self.expr = expr
        constant, rest = value.as_coeff_add()
        terms: dict[sympy.Expr, Fraction] = {}
        for term in rest:
            coefficient, monomial = term.as_coeff_Mul()
            value = _fraction(coefficient)
            if value is None:  # a non-real coefficient: the term stays whole
                value, monomial = Fraction(1), term
            terms[monomial] = terms.get(monomial, Fraction(0)) + sign * value
        self.constant = sign * (_fraction(constant) or Fraction(0))
        self.terms = {m: c for m, c in terms.items() if c != 0}

    @property
    def shape(self) -> frozenset[tuple[sympy.Expr, Fraction]]:
        return frozenset(self.terms.items())


def _kind(monomial: sympy.Expr) -> str:
    """How a term may grow: "up" (bounded below only), "down", "free" or "bounded"."""
    low, high = interval(monomial)
    if low is None:
        return "free" if high is None else "down"
    return "up" if high is None else "bounded"


def _needs(argument: _Argument, dropped: bool) -> set[sympy.Expr]:
    """The terms that the other argument of a comparison must also have.

    ``a`` is dropped from a minimum when ``a - b >= 0`` is proved; that needs each
    term of ``a - b`` bounded below: for a term that grows upwards, ``a``'s
    coefficient at least ``b``'s, and so on. ``dropped`` asks for the terms ``b`` must
    have (given ``a``), otherwise for those ``a`` must have (given ``b``).
    """
    needed = set()
    for monomial, coefficient in argument.terms.items():
        kind = _kind(monomial)
        sign = -coefficient if dropped else coefficient
        if kind == "free" or (kind == "up" and sign > 0) or (kind == "down" and sign < 0):
            needed.add(monomial)
    return needed


def _bounds(dropped: _Argument, other: _Argument) -> bool:
    """Whether ``dropped - other >= 0`` is proved (so ``other`` alone makes the minimum)."""
    total: Interval = (dropped.constant - other.constant,) * 2  # type: ignore[assignment]
    for monomial in dropped.terms.keys() | other.terms.keys():
        difference = dropped.terms.get(monomial, Fraction(0)) - other.terms.get(
            monomial, Fraction(0)
        )
        if difference == 0:
            continue
        total = _add(total, _multiply((difference, difference), interval(monomial)))
        if total[0] is None:
            return False
    return total[0] is not None and total[0] >= 0


def _smallest(arguments: list[_Argument]) -> list[_Argument]:
    """The arguments of a minimum with every one that another bounds dropped."""
    # arguments that differ by a constant: the smallest one
    by_shape: dict[frozenset[tuple[sympy.Expr, Fraction]], _Argument] = {}
    for argument in arguments:
        shape = argument.shape
        if shape not in by_shape or argument.constant < by_shape[shape].constant:
            by_shape[shape] = argument
    kept = list(by_shape.values())
    if len(kept) < 2:
        return kept
    containing: dict[sympy.Expr, list[int]] = {}
    for k, argument in enumerate(kept):
        for monomial in argument.terms:
            containing.setdefault(monomial, []).append(k)
    # each argument filed under one of the terms any argument it bounds must have
    keyed: dict[sympy.Expr, list[int]] = {}
    unkeyed: list[int] = []
    for k, argument in enumerate(kept):
        required = _needs(argument, dropped=False)
        if required:
            key = min(required, key=lambda m: len(containing[m]))
            keyed.setdefault(key, []).append(k)
        else:
            unkeyed.append(k)
    dropped: set[int] = set()
    budget = _COMPARISON_BUDGET
    for k, argument in enumerate(kept):
        needed = _needs(argument, dropped=True)
        if needed:
            rarest = min(needed, key=lambda m: len(containing.get(m, ())))
            candidates: Iterable[int] = containing.get(rarest, ())
        else:
            candidates = [
                *unkeyed,
                *(j for monomial in argument.terms for j in keyed.get(monomial, ())),
            ]
        for j in candidates:
            if j == k or j in dropped:
                continue
            budget -= 1
            if budget < 0:
                return [a for i, a in enumerate(kept) if i not in dropped]
            if _bounds(argument, kept[j]):
                dropped.add(k)
                break
    return [a for i, a in enumerate(kept) if i not in dropped]


def _lattice(
    cls: type[sympy.Expr],
    args: Iterable[Any],
    sign: int,
    compared: Iterable[Any] | None = None,
) -> sympy.Expr:
    """``cls`` (Min for sign +1, Max for -1) of ``args`` by the rules of this module;
    ``compared`` (one per argument) is what is compared in place of each, if given."""
    pairs: dict[sympy.Expr, sympy.Expr] = {}  # argument -> the value compared
    if compared is not None:
        for arg, value in zip(args, compared, strict=True):
            pairs.setdefault(sympy.sympify(arg), sympy.sympify(value))
    else:
        nested = sympy.Min if sign > 0 else sympy.Max
        pending = [sympy.sympify(a) for a in args]
        while pending:
            arg = pending.pop()
            if isinstance(arg, nested):
                pending.extend(arg.args)
            else:
                pairs.setdefault(arg, arg)
    if not pairs:  # as sympy: the minimum of nothing is +oo, the maximum -oo
        return sympy.oo if sign > 0 else -sympy.oo
    numbers = [(value, arg) for arg, value in pairs.items() if value.is_number]
    rest = [(arg, value) for arg, value in pairs.items() if not value.is_number]
    if numbers:
        value, arg = min(numbers, key=lambda n: sign * n[0])
        rest.append((arg, value))
    if len(rest) == 1:
        return rest[0][0]
    kept = _smallest([_Argument(arg, value, sign) for arg, value in rest])
    if len(kept) == 1:
        return kept[0].expr
    base: Any = cls.__base__
    return base.__new__(cls, *(a.expr for a in kept), evaluate=False)


class Min(sympy.Min):
    """A ``sympy.Min`` built by ``minimum``: rebuilt (``subs``, ``xreplace``) by it too.

    It prints, and compares, as ``Min``; only its construction differs.
    """

    def __new__(cls, *args: Any, **options: Any) -> sympy.Expr:  # noqa: D102
        return _lattice(cls, args, 1)


class Max(sympy.Max):
    """A ``sympy.Max`` built by ``maximum``: rebuilt (``subs``, ``xreplace``) by it too."""

    def __new__(cls, *args: Any, **options: Any) -> sympy.Expr:  # noqa: D102
        return _lattice(cls, args, -1)


def minimum(args: Iterable[sympy.Expr], compared: Iterable[sympy.Expr] | None = None) -> sympy.Expr:
    """The minimum of ``args``: numbers folded, arguments bounded by another dropped.

    ``compared`` gives, for each argument, the expression to compare in its place
    (an extent named by a symbol, compared by its definition).

    >>> N, K = sympy.symbols("N K", integer=True, positive=True)
    >>> minimum([N, N - K + 1, N - 1, 5, 7])
    Min(5, N - 1, -K + N + 1)
    """
    return _lattice(Min, args, 1, compared)


def maximum(args: Iterable[sympy.Expr]) -> sympy.Expr:
    """The maximum of ``args``: numbers folded, arguments bounded by another dropped."""
    return _lattice(Max, args, -1)


def nonpositive(expr: sympy.Expr) -> bool:
    """``expr <= 0`` for every value of its symbols, as far as intervals show."""
    high = interval(sympy.sympify(expr))[1]
    return high is not None and high <= 0


# ---- signs under facts ------------------------------------------------------------------
#
# ``proves`` works on polynomials as {monomial: coefficient}, a monomial being a sorted
# tuple of symbols: plain dictionaries, where sympy's expand and assumptions are slow.
Monomial = tuple[sympy.Symbol, ...]
Poly = dict[Monomial, Fraction]


@functools.lru_cache(maxsize=4096)
def _poly(expr: sympy.Expr) -> tuple[tuple[Monomial, Fraction], ...]:
    terms: Poly = {}
    for monomial, coefficient in sympy.expand(expr).as_coefficients_dict().items():
        factors: list[sympy.Symbol] = []
        for factor in sympy.Mul.make_args(monomial):
            base, exponent = factor.as_base_exp()
            if not (base.is_Symbol or base == 1) or not exponent.is_Integer or exponent < 0:
                raise ValueError(f"{expr} is not a polynomial")
            factors += [base] * int(exponent) if base.is_Symbol else []
        key = tuple(sorted(factors, key=lambda s: s.name))
        terms[key] = terms.get(key, Fraction(0)) + Fraction(int(coefficient.p), int(coefficient.q))
    return tuple((k, v) for k, v in terms.items() if v)


def _combine(*scaled: tuple[Poly, Poly]) -> Poly:
    """The sum of ``factor * poly`` over the pairs given."""
    out: Poly = {}
    for factor, poly in scaled:
        for m1, c1 in factor.items():
            for m2, c2 in poly.items():
                key = tuple(sorted(m1 + m2, key=lambda s: s.name))
                out[key] = out.get(key, Fraction(0)) + c1 * c2
    return {k: v for k, v in out.items() if v}


def _lowest(poly: Poly) -> Fraction | None:
    """A lower bound of ``poly`` over every value of its symbols, None if unbounded: the
    same rule as ``interval``, each monomial bounded by its symbols' intervals."""
    lowest = Fraction(0)
    for monomial, coefficient in poly.items():
        bounds: Interval = (Fraction(1), Fraction(1))
        for symbol in monomial:
            bounds = _multiply(bounds, _symbol_interval(symbol))
        low, high = bounds
        end = low if coefficient > 0 else high
        if end is None:
            return None
        lowest += coefficient * end
    return lowest


def _poly_sign(poly: Poly) -> int:
    """+1 or -1 where the sign is known for all sizes and parameters, else 0."""
    if (low := _lowest(poly)) is not None and low > 0:
        return 1
    if (low := _lowest({k: -v for k, v in poly.items()})) is not None and low > 0:
        return -1
    return 0


def _split(poly: Poly, var: sympy.Symbol) -> tuple[Poly, Poly] | None:
    """``poly`` as ``coefficient * var + rest``; None if ``var`` appears squared."""
    coefficient: Poly = {}
    rest: Poly = {}
    for monomial, value in poly.items():
        count = monomial.count(var)
        if count > 1:
            return None
        if count:
            position = monomial.index(var)
            coefficient[monomial[:position] + monomial[position + 1 :]] = value
        else:
            rest[monomial] = value
    return coefficient, rest


ONE: Poly = {(): Fraction(1)}


@functools.lru_cache(maxsize=8192)
def proves(
    expr: sympy.Expr, facts: tuple[sympy.Expr, ...], order: tuple[sympy.Symbol, ...]
) -> bool:
    """Whether ``expr >= 0`` follows from ``fact >= 0`` for every fact.

    The innermost loop variable of ``expr`` is replaced by its worst bound among the
    facts (a lower bound where its coefficient is positive), until a fact or the
    signs of the sizes settle it: ``N_X0 - 1 - 2*i - m`` with ``m <= 1``,
    ``i <= I - 1`` and ``N_X0 - 2*I >= 0`` holds.
    """
    try:
        target = dict(_poly(expr))
    except ValueError:
        return False
    known = []
    for fact in facts:
        try:
            known.append(dict(_poly(fact)))
        except ValueError:  # through an index array (0 <= tok[b]): says nothing here
            continue
    budget = [200]

    def settled(poly: Poly) -> bool:
        if (low := _lowest(poly)) is not None and low >= 0:
            return True
        for fact in known:
            difference = _combine((ONE, poly), ({(): Fraction(-1)}, fact))
            if (low := _lowest(difference)) is not None and low >= 0:
                return True
        return False

    def prove(poly: Poly) -> bool:
        budget[0] -= 1
        if budget[0] < 0:
            return False
        if settled(poly):
            return True
        present = [v for v in order if any(v in m for m in poly)]
        if not present:
            return False
        var = present[-1]
        split = _split(poly, var)
        if split is None or not (sign := _poly_sign(split[0])):
            return False
        coefficient, rest = split
        inner = set(order[order.index(var) :])
        for fact in known:
            bound = _split(fact, var)
            if bound is None or _poly_sign(bound[0]) != sign:
                continue
            a, remainder = bound
            if any(s in inner for m in remainder for s in m):
                continue
            # c*var >= -c*r/a from a*var + r >= 0 (a of the sign of c): times |a| > 0
            magnitude = a if sign > 0 else {k: -v for k, v in a.items()}
            minus_c = {k: -v * sign for k, v in coefficient.items()}
            if prove(_combine((magnitude, rest), (minus_c, remainder))):
                return True
        return False

    return prove(target)


def lowest(expr: sympy.Expr) -> Fraction | None:
    """A lower bound of a polynomial in positive integer sizes, None if none is known."""
    try:
        return _lowest(dict(_poly(expr)))
    except ValueError:
        return None
