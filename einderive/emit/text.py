"""Statements and derivations as plain text in the notation."""

from __future__ import annotations

from collections.abc import Sequence

import sympy

from .. import ir
from ..model import Derivation, Program
from ..solve import loop_bounds
from .padding_mode import padding_mode_lines
from .printer import NotationPrinter, Shapes


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


def scatter_lines(
    statement: ir.Statement, with_domain: bool = True, shapes: Shapes | None = None
) -> list[str] | None:
    """A statement whose terms write through index arrays, one ``+=`` line per term in
    scatter form (``dE[tok[b], q] += dY[b, q]``), each with its domain and why it is not
    a gather; None if no term is such a scatter."""
    terms = terms_of(statement.rhs)
    scatters = [ir.scatter(term, statement.indices) for term in terms]
    if not any(scatters):
        return None
    printer = NotationPrinter(variables_of(statement), shapes)
    printer.domain_terms = {id(term) for term in terms}
    lines = []
    for term, found in zip(terms, scatters, strict=True):
        if found is None:
            lines.append(f"{lhs(statement, printer)} += {printer.expr(term)}")
            domain = printer.domain(term)
        else:
            positions = ", ".join(printer.index(e) for e in found.positions(statement.indices))
            lines.append(f"{statement.target}[{positions}] += {printer.expr(found.body)}")
            bounds, conditions = loop_bounds(found.variables, found.where)
            domain = [printer.bounds(b) for b in bounds]
            domain += [printer.condition(c) for c in conditions]
            summed = ", ".join(printer.symbol(v) for v in found.variables)
            pinned = ", ".join(
                f"{printer.symbol(t)} = {printer.index(w)}" for t, w in found.writes.items()
            )
            domain.append(
                f"scatter form: {pinned} cannot be solved for {summed}; "
                f"a gather would search every {summed}"
            )
        if with_domain and domain:
            lines.append(f"    {'; '.join(domain)}")
    return lines


def statement_text(
    statement: ir.Statement, with_domain: bool = True, shapes: Shapes | None = None
) -> str:
    """``target[...] = rhs``, then the bounds and conditions of each term, indented.

    A term that writes through an index array is printed as a scatter (see
    ``scatter_lines``). ``shapes`` (the tensors' shapes) leaves out of the line a bound
    that a read's axis implies; without them, one in numbers is taken as implied.
    """
    scattered = scatter_lines(statement, with_domain, shapes)
    if scattered is not None:
        return "\n".join(scattered)
    printer = NotationPrinter(variables_of(statement), shapes)
    printer.domain_terms = {id(term) for term in terms_of(statement.rhs)}
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


def forward_lines(program: Program) -> list[str]:
    """Each forward statement, its free and summed indices, and its domain."""
    lines = []
    for statement in program.statements:
        first, *domain = statement_text(statement, shapes=program.shapes).splitlines()
        if statement.written is not None:
            # reads rewritten into pieces: the statement as written, then its pieces
            lines.append(statement.written)
            if " += " in first:  # through an index array: the scatter it is
                domain = ["  as a scatter: " + first, *domain]
            else:
                domain = ["  = " + first.partition(" = ")[2], *domain]
        else:
            lines.append(first)
        printer = NotationPrinter(variables_of(statement))
        scatters = [ir.scatter(t, statement.indices) for t in terms_of(statement.rhs)]
        # a scatter's written axes are no free index of its own: tok[b] stands there
        pinned = {v for s in scatters if s is not None for v in s.writes}
        free = ", ".join(printer.symbol(v) for v in statement.indices if v not in pinned)
        free = free or "none"
        summed = [
            printer.symbol(v)
            for node in ir.walk(statement.rhs)
            if isinstance(node, ir.Reduce)
            for v in node.variables
        ]
        if pinned or statement.written is not None:
            # a scatter's terms, or the pieces of one read, sum over the same written index
            summed = list(dict.fromkeys(summed))
        lines.append(f"    free: {free}; summed: {', '.join(summed) or 'none'}")
        lines += domain
    return lines


def derivation_text(derivation: Derivation) -> str:
    """The forward (indices, parameters, shapes) and every statement of the backward."""
    program = derivation.program
    printer = NotationPrinter()
    lines = ["forward:"]
    lines += ["  " + line for line in forward_lines(program)]
    if program.params:
        lines.append(f"  parameters: {', '.join(p.name for p in program.params)}")
    if program.values:
        given = ", ".join(f"{k}={v}" for k, v in program.values.items())
        lines.append(f"  given: {given}")
    shapes = "; ".join(
        f"{name}: ({', '.join(printer.scalar(n) for n in shape)})"
        for name, shape in program.shapes.items()
    )
    lines.append(f"  shapes: {shapes}")
    for symbol, definition in program.definitions.items():
        lines.append(f"    {symbol.name} = {printer.scalar(definition)}")
    seed = derivation.backward.seeds[0]
    lines.append(f"pullbacks ({seed} is the cotangent of {program.output}):")
    for statement in derivation.backward.statements:
        for line in statement_text(statement, shapes=derivation.shapes).splitlines():
            lines.append("  " + line)
    lines += padding_mode_lines(derivation, with_reason=False)  # the calls, where it is one
    return "\n".join(lines)
