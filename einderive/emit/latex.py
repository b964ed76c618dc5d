"""The notation in LaTeX: tensors with subscripts, sums with their exact bounds."""

from __future__ import annotations

from typing import TYPE_CHECKING

import sympy

from .. import ir
from ..functions import FUNCTIONS
from ..solve import Bounds, loop_bounds
from .printer import ATOM, MUL, NotationPrinter
from .text import terms_of, variables_of

if TYPE_CHECKING:
    from ..model import Derivation


def _name(name: str) -> str:
    """A tensor or symbol name: single letters in italics, longer names upright."""
    head, _, tail = name.partition("_")
    head_tex = head if len(head) == 1 else rf"\mathrm{{{head}}}"
    return head_tex + (rf"_{{\mathrm{{{tail}}}}}" if tail else "")


class LatexPrinter(NotationPrinter):
    times = r" \, "
    minus = "-"
    at_most = r"\leq"
    at_least = r"\geq"
    equals = "="

    def symbol(self, symbol: sympy.Symbol) -> str:
        return _name(symbol.name)

    def scalar(self, expr: sympy.Expr) -> str:
        return sympy.latex(expr, symbol_names={s: _name(s.name) for s in expr.free_symbols})

    def product(self, coefficient: str, symbol: str) -> str:
        return f"{coefficient} {symbol}"

    def group(self, text: str) -> str:
        return rf"\left({text}\right)"

    def fraction(self, numerator: str, denominator: str, compound: bool) -> str:
        return rf"\frac{{{numerator}}}{{{denominator}}}"

    def quotient(self, numerator: str, denominator: str, sum_above: bool, compound: bool) -> str:
        return rf"\frac{{{numerator}}}{{{denominator}}}"

    def index_read(self, read: ir.IndexRead) -> str:
        return rf"{_tensor(read.array)}_{{{', '.join(self.index(e) for e in read.args)}}}"

    def _print_Access(self, node: ir.Access) -> tuple[str, int]:
        name = _tensor(node.tensor)
        if not node.indices:
            return name, ATOM
        return f"{name}_{{{', '.join(self.index(e) for e in node.indices)}}}", ATOM

    def padded(self, read: ir.Access, pad: sympy.Expr) -> str:
        text, _ = self._print_Access(read)
        return rf"{text}\big|_{{\mathrm{{pad}} = {self.scalar(pad)}}}"

    def _print_Pow(self, node: ir.Pow) -> tuple[str, int]:
        if node.exponent == sympy.Rational(1, 2):
            return rf"\sqrt{{{self.expr(node.base)}}}", ATOM
        return f"{{{self.expr(node.base, ATOM)}}}^{{{self.scalar(node.exponent)}}}", ATOM

    def _print_Call(self, node: ir.Call) -> tuple[str, int]:
        arguments = dict(zip("xy", (self.expr(a) for a in node.args), strict=False))
        return FUNCTIONS[node.func].spell("latex", **arguments), ATOM

    def _print_Reduce(self, node: ir.Reduce) -> tuple[str, int]:
        if not node.variables:
            return self.expr(node.body, MUL), MUL
        names = ", ".join(self.symbol(v) for v in node.variables)
        operator = {"sum": r"\sum", "max": r"\max", "min": r"\min", "prod": r"\prod"}[node.op]
        conditions = self.reduction_conditions(node)
        if conditions:
            names = r" \\ ".join([names, *conditions])
            names = rf"\substack{{{names}}}"
        return rf"{operator}_{{{names}}} {self.expr(node.body, MUL)}", MUL

    def _print_IsExtremum(self, node: ir.IsExtremum) -> tuple[str, int]:
        names = ", ".join(self.symbol(v) for v in node.variables)
        at = ", ".join(self.index(e) for e in node.at)
        body = self.expr(node.body)
        return (
            rf"\left[\left({at}\right) = \operatorname{{arg{node.op}}}_{{{names}}} {body}\right]",
            ATOM,
        )

    def condition(self, constraint: ir.Constraint) -> str:
        if constraint.kind == "div":
            return rf"{self.scalar(constraint.modulus)} \mid {self.index(constraint.expr)}"
        expr = constraint.expr
        if constraint.kind == "eq":
            expr = self.leading_positive(expr)
        left, right, flipped = self.sides(expr)
        relation = "=" if constraint.kind == "eq" else (r"\leq" if flipped else r"\geq")
        return f"{self.index(left)} {relation} {self.side(right)}"

    def bounds(self, bound: Bounds) -> str:
        low, high = self.scalar(bound.low), self.scalar(bound.high)
        return rf"{low} \leq {self.symbol(bound.var)} \leq {high}"

    def term(self, term: ir.Node) -> str:
        """A top-level term: a sum with its bounds under the sign, conditions as brackets."""
        if not isinstance(term, ir.Reduce) or term.op != "sum":
            return self.expr(term)
        bounds, conditions = loop_bounds(term.variables, term.where)
        brackets = "".join(rf"\left[{self.condition(c)}\right]" for c in conditions)
        body = self.expr(term.body, MUL)
        if not bounds:
            return f"{brackets} {body}".strip()
        limits = r" \\ ".join(self.bounds(b) for b in bounds)
        return rf"\sum_{{\substack{{{limits}}}}} {brackets} {body}".replace("  ", " ")


def _tensor(name: str) -> str:
    """A tensor's name, braced when it has a subscript of its own (``X_in``), so that its
    indices are not a double subscript."""
    return "{" + _name(name) + "}" if "_" in name else _name(name)


def statement_latex(statement: ir.Statement) -> str:
    printer = LatexPrinter(variables_of(statement))
    target = _tensor(statement.target)
    if statement.indices:
        target += "_{" + ", ".join(printer.symbol(v) for v in statement.indices) + "}"
    terms = [printer.term(t) for t in terms_of(statement.rhs)]
    rhs = terms[0]
    for text in terms[1:]:
        rhs += text if text.startswith("-") else f" + {text}"
    return f"{target} = {rhs}"


def derivation_latex(derivation: Derivation) -> str:
    lines = [statement_latex(s) for s in derivation.program.statements]
    lines += [statement_latex(s) for s in derivation.backward.statements]
    return r"\begin{aligned}" + r" \\ ".join(f"&{line}" for line in lines) + r"\end{aligned}"
