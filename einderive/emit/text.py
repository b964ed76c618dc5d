"""Statements and derivations as plain text in the notation."""

from __future__ import annotations

from collections.abc import Sequence

import sympy

from .. import ir
from .printer import NotationPrinter


def variables_of(statement: ir.Statement) -> list[sympy.Symbol]:
    """The statement's index variables in reading order: its own, then each reduction's."""
    order = list(statement.indices)
    for node in ir.walk(statement.rhs):
        if isinstance(node, ir.Reduce | ir.IsExtremum):
            order += [v for v in node.variables if v not in order]
            if isinstance(node, ir.IsExtremum):
                for e in node.at:
                    order += sorted(e.free_symbols - set(order), key=lambda s: s.name)
    return order


def lhs(statement: ir.Statement, printer: NotationPrinter) -> str:
    if not statement.indices:
        return statement.target
    return f"{statement.target}[{', '.join(printer.symbol(v) for v in statement.indices)}]"


def terms_of(rhs: ir.Node) -> Sequence[ir.Node]:
    return rhs.terms if isinstance(rhs, ir.Add) else (rhs,)


def statement_text(statement: ir.Statement, with_domain: bool = True) -> str:
    """``target[...] = rhs``, then the bounds and conditions of each term, indented."""
    printer = NotationPrinter(variables_of(statement))
    lines = [f"{lhs(statement, printer)} = {printer.expr(statement.rhs)}"]
    if with_domain:
        terms = terms_of(statement.rhs)
        for k, term in enumerate(terms, 1):
            domain = printer.domain(term)
            if not domain:
                continue
            label = f"term {k}: " if len(terms) > 1 else ""
            lines.append(f"    {label}{'; '.join(domain)}")
    return "\n".join(lines)
