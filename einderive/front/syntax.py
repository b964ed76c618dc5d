"""Questions asked of the syntax tree before any IR exists: which names a node mentions,
which are read alone or multiplied inside brackets, the top-level terms of a right-hand
side, and the spelling of an index position that is one name."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import sympy

from ..parse import (
    SAccess,
    SBinary,
    SCall,
    SCompare,
    SName,
    SNeg,
    SNumber,
    SProduct,
    SReduce,
    SStatement,
    SSum,
    operands,
    syntax_nodes,
)
from .limits import MAX_NUMBER_LENGTH


def names_in(node: Any) -> set[str]:
    if isinstance(node, SName):
        return {node.name}
    if isinstance(node, SCall):  # an index function, inside brackets
        return set().union(*(names_in(argument) for argument in node.arguments))
    return set().union(*(names_in(operand) for operand in operands(node)))


def comparisons(node: Any) -> list[SCompare]:
    """The index comparisons ``(j <= i)`` of a syntax tree."""
    return [n for n in syntax_nodes(node) if isinstance(n, SCompare)]


def multiplied_names(node: Any) -> set[str]:
    """Names that appear as a factor of a product inside an index expression.

    In ``a * b / c`` the names of ``a`` and ``b`` are multiplied; a divisor's too (an exact
    division's divisor is a positive parameter, as a stride).
    """
    inner = set().union(*(multiplied_names(operand) for operand in operands(node)))
    if isinstance(node, SCall):
        inner |= set().union(*(multiplied_names(a) for a in node.arguments))
        if node.name in ("mod", "reflect"):  # the period, a divisor: a positive parameter
            inner |= names_in(node.rest[0])
    if isinstance(node, SBinary) and node.op == "//":
        inner |= names_in(node.right)
    if isinstance(node, SProduct):
        multiplied = [k for k, divides in enumerate(node.divides) if k and not divides]
        if multiplied:
            inner |= set().union(*(names_in(f) for f in node.factors[: multiplied[-1] + 1]))
        inner |= set().union(
            *(names_in(f) for f, divides in zip(node.factors, node.divides, strict=True) if divides)
        )
    return inner


def accesses(node: Any) -> list[SAccess]:
    """Every tensor read in a syntax tree, in source order (index positions included)."""
    return [n for n in syntax_nodes(node) if isinstance(n, SAccess)]


def reductions(node: Any) -> list[SReduce]:
    return [n for n in syntax_nodes(node) if isinstance(n, SReduce)]


def condition_sides(node: Any) -> list[Any]:
    """The sides of every condition of every reduction in a syntax tree (index expressions:
    ``k`` and ``j - 1`` of ``prod_{k : k <= j - 1}``)."""
    return [side for r in reductions(node) for c in r.conditions for side in (c.left, c.right)]


def value_names(node: Any) -> list[SName]:
    """Names used as values (outside brackets)."""
    return [n for n in syntax_nodes(node, brackets=False) if isinstance(n, SName)]


def count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}es" if noun.endswith("x") else f"{n} {noun}s"


def all_names(statement: SStatement) -> set[str]:
    """Every identifier a statement mentions (indices, parameters, tensors)."""
    names = set(names_in(statement.target)) if isinstance(statement.target, SName) else set()
    for access in accesses(statement.rhs) + (
        [statement.target] if isinstance(statement.target, SAccess) else []
    ):
        names.add(access.name)
        for index in access.indices:
            names |= names_in(index)
    for reduction in reductions(statement.rhs):
        names |= {n.name for n in reduction.names}
    for side in condition_sides(statement.rhs):
        names |= names_in(side)
    names |= {n.name for n in value_names(statement.rhs)}
    return names


def written_value(node: Any) -> sympy.Expr | None:
    """An index position's value with every name a plain symbol (None if it is not a
    polynomial of names and integers: the analysis reports that at its text)."""
    if isinstance(node, SName):
        return sympy.Symbol(node.name)
    if isinstance(node, SNumber):
        usable = node.text.isdigit() and len(node.text) <= MAX_NUMBER_LENGTH
        return sympy.Integer(int(node.text)) if usable else None
    if isinstance(node, SNeg):
        operand = written_value(node.operand)
        return None if operand is None else -operand
    if isinstance(node, SSum | SProduct) and not (isinstance(node, SProduct) and any(node.divides)):
        written = [written_value(operand) for operand in operands(node)]
        values = [value for value in written if value is not None]
        if len(values) < len(written):
            return None
        if isinstance(node, SSum):
            return sympy.Add(*(v * sign for v, sign in zip(values, node.signs, strict=True)))
        return sympy.Mul(*values)
    return None


def plain_index(node: Any) -> Any:
    """An index position whose value is one name (``i+0``, ``1*i``, ``(i)``) as that name."""
    if isinstance(node, SName):
        return node
    value = written_value(node)
    if value is not None and isinstance(value := sympy.expand(value), sympy.Symbol):
        return SName(value.name, node.span)
    return node


def plain_indices(node: Any) -> Any:
    """The syntax tree with every index position that is one name spelled as that name:
    an index expression means its value, however it is spelled."""
    if isinstance(node, SAccess):
        return replace(node, indices=tuple(plain_index(i) for i in node.indices))
    if isinstance(node, SSum):
        return replace(node, terms=tuple(plain_indices(t) for t in node.terms))
    if isinstance(node, SProduct):
        return replace(node, factors=tuple(plain_indices(f) for f in node.factors))
    if isinstance(node, SBinary):
        return replace(node, left=plain_indices(node.left), right=plain_indices(node.right))
    if isinstance(node, SNeg):
        return replace(node, operand=plain_indices(node.operand))
    if isinstance(node, SCall):
        return replace(
            node, arg=plain_indices(node.arg), rest=tuple(plain_indices(a) for a in node.rest)
        )
    if isinstance(node, SReduce):
        return replace(node, body=plain_indices(node.body))
    if isinstance(node, SStatement):
        return replace(node, target=plain_indices(node.target), rhs=plain_indices(node.rhs))
    return node


def is_gather_target(target: SAccess | SName) -> bool:
    if isinstance(target, SName):
        return True
    names = [i.name for i in target.indices if isinstance(i, SName)]
    return len(names) == len(target.indices) and len(set(names)) == len(names)


def top_terms(node: Any, sign: int = 1) -> list[tuple[int, Any]]:
    """The top-level additive terms of a right-hand side, with their signs (a sum in
    parentheses among them is split too: ``a - (b + c)`` has the terms a, -b, -c)."""
    if isinstance(node, SSum):
        return [
            found
            for term, term_sign in zip(node.terms, node.signs, strict=True)
            for found in top_terms(term, sign * term_sign)
        ]
    return [(sign, node)]


def output_names(rank: int) -> list[str]:
    letters = ["p", "q", "r", "t", "u", "v", "w"]
    return letters[:rank] if rank <= len(letters) else [f"p{k}" for k in range(rank)]
