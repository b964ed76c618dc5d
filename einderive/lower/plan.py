"""How each backward statement is computed by a vectorized backend.

Three ways, fastest first: a recognised convolution (one framework call, or
NumPy's GEMM-shaped kernels), a plain contraction (``einsum``), or the dense
grid evaluator (anything else: shifts, guards, nonlinear functions). A sum whose
terms are not all dense is computed term by term (a convolution plus a bias).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import sympy

from .. import ir
from ..conv.recognise import ConvPullback, recognise
from ..model import Derivation


@dataclass(frozen=True)
class Einsum:
    """``coefficient * einsum(subscripts, *operands)``."""

    subscripts: str
    operands: tuple[str, ...]
    coefficient: float


@dataclass(frozen=True)
class Dense:
    """Evaluate the statement over a dense index grid."""


@dataclass(frozen=True)
class Scatter:
    """A term that writes through index arrays (``dE[tok[b], q] += dY[b, q]``): its body
    over a grid of its variables, added at the positions in one scatter-add."""


@dataclass(frozen=True)
class Terms:
    """A sum computed term by term and added: each part is the statement with one term of
    the sum (the dense terms together, as one part), with its own method."""

    parts: tuple[tuple[ir.Statement, Method], ...]


Method = ConvPullback | Einsum | Scatter | Dense | Terms

_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def einsum_plan(
    statement: ir.Statement, shapes: Mapping[str, Sequence[sympy.Expr]]
) -> Einsum | None:
    """The statement as one einsum, when it is a product of reads at lone indices."""
    rhs = statement.rhs
    variables: tuple[sympy.Symbol, ...] = ()
    where: tuple[ir.Constraint, ...] = ()
    if isinstance(rhs, ir.Reduce):
        if rhs.op != "sum":
            return None
        variables, body, where = rhs.variables, rhs.body, rhs.where
    else:
        body = rhs
    factors = body.factors if isinstance(body, ir.Mul) else (body,)
    coefficient = 1.0
    reads: list[ir.Access] = []
    for factor in factors:
        if isinstance(factor, ir.Const) and factor.value.is_number:
            coefficient *= float(factor.value)
        elif isinstance(factor, ir.Access) and all(
            isinstance(e, sympy.Symbol) for e in factor.indices
        ):
            reads.append(factor)
        else:
            return None
    if not reads:
        return None
    all_vars = list(statement.indices) + list(variables)
    if len(all_vars) > len(_LETTERS):
        return None
    extents: dict[sympy.Symbol, sympy.Expr] = {}
    for read in reads:
        for var, size in zip(read.indices, shapes[read.tensor], strict=True):
            if var not in all_vars or extents.setdefault(var, size) != size:
                return None
    for var, size in zip(statement.indices, shapes[statement.target], strict=True):
        if extents.get(var) != size:
            return None
    if any(v not in extents for v in variables):
        return None  # a summed index that no read has: a count, which the dense grid sums
    # the domain must be exactly the boxes of the tensors' axes
    boxes = {(c.kind, c.expr) for v in variables for c in ir.box(v, extents[v])}
    if any((c.kind, c.expr) not in boxes for c in where):
        return None
    letter = {v: _LETTERS[k] for k, v in enumerate(all_vars)}
    inputs = ",".join("".join(letter[v] for v in read.indices) for read in reads)
    output = "".join(letter[v] for v in statement.indices)
    return Einsum(f"{inputs}->{output}", tuple(r.tensor for r in reads), coefficient)


def plan(
    statement: ir.Statement,
    shapes: Mapping[str, Sequence[sympy.Expr]],
    prefer_kernel: Sequence[str] = (),
) -> Method:
    if ir.scatter(statement.rhs, statement.indices) is not None:
        return Scatter()
    contraction = einsum_plan(statement, shapes)
    if contraction is not None:
        return contraction
    recognition = recognise(statement, shapes, prefer_kernel)
    if isinstance(recognition, ConvPullback):
        return recognition
    if isinstance(statement.rhs, ir.Add):
        fast: list[tuple[ir.Statement, Method]] = []
        dense: list[tuple[ir.Statement, Method]] = []
        for term in statement.rhs.terms:
            part = replace(statement, rhs=term)
            method = plan(part, shapes, prefer_kernel)
            (dense if isinstance(method, Dense) else fast).append((part, method))
        if fast:
            if dense:
                terms = [part.rhs for part, _ in dense]
                rhs = terms[0] if len(terms) == 1 else ir.Add(tuple(terms))
                fast.append((replace(statement, rhs=rhs), Dense()))
            return Terms(tuple(fast))
    return Dense()


def plans(derivation: Derivation) -> dict[str, Method]:
    """How each statement of a derivation is computed: forward ones, then the backward's."""
    shapes = derivation.shapes
    methods = {s.target: plan(s, shapes) for s in derivation.program.statements}
    kernels = derivation.kernels
    methods.update({s.target: plan(s, shapes, kernels) for s in derivation.backward.statements})
    return methods
