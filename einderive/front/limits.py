"""The input limits: what a literal, a folded constant, an exponent or a rank may be.

A number past a float64's range, an absurdly long literal or a huge exponent is refused
at its text, before sympy is asked to build it.
"""

from __future__ import annotations

import math

import sympy

from .. import ir
from ..errors import IndexNotationError, Span
from ..parse import SBinary, SNumber

MAX_NUMBER_LENGTH = 64
MAX_RANK = 64
MAX_EXPONENT = 1000
MAX_MAGNITUDE = 300  # a constant, literal or folded, lies within 1e-300..1e300 (a float64's)


def decimal_magnitude(literal: str) -> int | None:
    """The power of ten of a number literal's first significant digit (None for zero).

    >>> decimal_magnitude("0.0025e-3"), decimal_magnitude("12.5"), decimal_magnitude("0.0")
    (-6, 1, None)
    """
    mantissa, _, exponent = literal.lower().partition("e")
    whole, _, fraction = mantissa.partition(".")
    whole = whole.lstrip("0")
    power = int(exponent or 0)
    if whole:
        return power + len(whole) - 1
    significant = fraction.lstrip("0")
    return power - (len(fraction) - len(significant)) - 1 if significant else None


def number(node: SNumber, text: str) -> sympy.Expr:
    """A literal as an exact sympy number; absurdly long or large ones are refused."""
    if len(node.text) > MAX_NUMBER_LENGTH:
        raise IndexNotationError(
            f"a number of {len(node.text)} characters; the limit is {MAX_NUMBER_LENGTH}",
            node.span,
            text,
        )
    if node.text.isdigit():
        return sympy.Integer(int(node.text))
    magnitude = decimal_magnitude(node.text)
    if magnitude is not None and abs(magnitude) > MAX_MAGNITUDE:
        size = "large" if magnitude > 0 else "small"
        raise IndexNotationError(
            f"the number {node.text} is too {size} (the limit is 1e\u00b1{MAX_MAGNITUDE})",
            node.span,
            text,
        )
    return sympy.nsimplify(node.text, rational=True)


def check_folded_power(base: sympy.Expr, exponent: sympy.Expr, node: SBinary, text: str) -> None:
    """Refuse ``base**exponent`` of two numbers before sympy folds it, if it is unusable."""
    if base.is_negative and not exponent.is_integer:
        raise IndexNotationError(
            f"{text[node.span[0] : node.span[1]]} is not a real number", node.span, text
        )
    check_magnitude(float(exponent) * math.log10(abs(float(base))), node.span, text)


def checked_constant(value: ir.Node, span: Span, text: str) -> ir.Node:
    """A folded constant, if it is a real number a float64 can hold; an error otherwise.

    The constant is the node itself, or the folded factor or term of a product or sum.
    """
    parts = (
        value.factors
        if isinstance(value, ir.Mul)
        else value.terms
        if isinstance(value, ir.Add)
        else (value,)
    )
    for part in parts:
        if isinstance(part, ir.Const) and part.value.is_number and part.value != 0:
            if part.value.is_extended_real is False:
                raise IndexNotationError(
                    f"{text[span[0] : span[1]]} is not a real number", span, text
                )
            size = abs(part.value)
            if size.is_Rational:  # exactly, past a float's range too
                magnitude = math.log10(size.p) - math.log10(size.q)
            else:
                try:
                    magnitude = math.log10(float(size))
                except (OverflowError, TypeError, ValueError):
                    magnitude = math.inf
            check_magnitude(magnitude, span, text)
    return value


def check_magnitude(magnitude: float, span: Span, text: str) -> None:
    """Refuse a constant of about ``10**magnitude`` beyond a float64's range (as a literal:
    its first significant digit at a power of ten within +-MAX_MAGNITUDE)."""
    if abs(math.floor(magnitude + 1e-9)) > MAX_MAGNITUDE:
        size = "large" if magnitude > 0 else "small"
        raise IndexNotationError(
            f"{text[span[0] : span[1]]} is too {size} for a float ("
            + (f"about 1e{magnitude:+.0f}; " if math.isfinite(magnitude) else "")
            + f"the limit is 1e\u00b1{MAX_MAGNITUDE})",
            span,
            text,
        )
