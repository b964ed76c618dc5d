"""Forward mode: the tangent (Jacobian-vector product) of every statement, in the notation.

For ``T[o] = rhs`` the tangent statement is

    tT[o] = sum over every read A[e] in rhs of (d rhs / d A[e]) * tA[e]

built node by node (the product rule per occurrence, the chain rule through
``functions.FUNCTIONS``). It is a gather already: it reads ``tA`` where
the forward reads ``A``, so no delta is eliminated. A ``sum_{v}`` passes the
tangent inside; a ``max_{v}``/``min_{v}`` passes the tangent of its body at the
first extremum in row-major order, as ``sum_{v}([v = argmax_{v'} body] * t(body))``.
Statements are processed in order: an intermediate's tangent is its own
statement, read by the tangents of the statements after it.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import sympy

from . import ir
from .derive import derivation as derive_record
from .derive import exclusive_product, factor_reads_in_range, nothing_to_differentiate, rename_bound
from .emit.text import statement_text
from .errors import ArgumentError, EinderiveError
from .front import (
    ParamValues,
    RangeValues,
    ShapeValues,
    analyse,
    learnable_scalars,
)
from .functions import partials
from .ir import fresh
from .model import Program, substitute
from .run.compile import run
from .run.inputs import check_inputs as _check_inputs
from .run.inputs import numeric_program
from .run.interpret import run_statements
from .verify import Check, Report, _plain, _random_inputs, draw_values

STEP = 1e-6
TOLERANCE = 1e-6


def tangent_name(name: str, taken: set[str]) -> str:
    """``tX`` for ``X``, with more ``t``s while the name is taken."""
    candidate = f"t{name}"
    while candidate in taken:
        candidate = f"t{candidate}"
    return candidate


def tangent(
    node: ir.Node,
    names: Mapping[str, str],
    taken: set[str],
    shapes: Mapping[str, Sequence[sympy.Expr]] | None = None,
) -> ir.Node:
    """The directional derivative of ``node``: each tensor ``A`` of ``names`` moves by ``tA``.

    With ``shapes`` (of the tensors and their tangents), a term ``f'(x) * tA[e]`` is
    evaluated only where its reads lie inside their tensors: outside, ``tA[e]`` is zero
    and ``f'`` of the zero read may be infinite (``1/sqrt(0)``).
    """

    def moving(part: ir.Node) -> ir.Node:
        return tangent(part, names, taken, shapes)

    def chain(local: ir.Node, moved: ir.Node) -> ir.Node:
        terms = moved.terms if isinstance(moved, ir.Add) else (moved,)
        products = []
        for term in terms:
            product = ir.make_mul([local, term])
            guards = factor_reads_in_range(product, shapes) if shapes is not None else ()
            products.append(ir.Reduce("sum", (), product, guards) if guards else product)
        return ir.make_add(products)

    if isinstance(node, ir.Access):
        if node.tensor in names:
            return ir.Access(names[node.tensor], node.indices)
        return ir.ZERO
    if isinstance(node, ir.Add):
        return ir.make_add([moving(t) for t in node.terms])
    if isinstance(node, ir.Mul):
        terms = []
        for k, factor in enumerate(node.factors):
            moved = moving(factor)
            if moved != ir.ZERO:
                terms.append(ir.make_mul([*node.factors[:k], moved, *node.factors[k + 1 :]]))
        return ir.make_add(terms)
    if isinstance(node, ir.Pow):
        moved = moving(node.base)
        if moved == ir.ZERO:
            return ir.ZERO
        local = ir.make_pow(node.base, node.exponent - 1)
        return chain(ir.make_mul([ir.Const(node.exponent), local]), moved)
    if isinstance(node, ir.Call):
        parts = []
        for argument, local in zip(node.args, partials(node), strict=True):
            moved = moving(argument)
            if moved != ir.ZERO:
                parts.append(chain(local, moved))
        return ir.make_add(parts)
    if isinstance(node, ir.Reduce):
        if node.op == "sum":
            moved = moving(node.body)
            if moved == ir.ZERO:
                return ir.ZERO
            return ir.Reduce("sum", node.variables, moved, node.where)
        mapping = {v: fresh(v.name, taken) for v in node.variables}
        body = ir.subs(node.body, mapping)
        moved = moving(body)
        if moved == ir.ZERO:
            return ir.ZERO
        points = tuple(mapping[v] for v in node.variables)
        if node.op == "prod":
            # the tangent of each factor times the product of all the others
            others = rename_bound(exclusive_product(node, points), taken)
            where = tuple(c.subs(mapping) for c in node.where)
            return ir.Reduce("sum", points, ir.make_mul([others, moved]), where)
        # max_/min_: the body's tangent at the first extremum, picked out by an indicator
        indicator = ir.IsExtremum(node.op, node.variables, node.body, node.where, points)
        where = tuple(c.subs(mapping) for c in node.where)
        return ir.Reduce("sum", points, ir.make_mul([indicator, moved]), where)
    # constants, and IsExtremum (piecewise constant), do not move
    return ir.ZERO


def _reserved(program: Program) -> set[str]:
    """Names no new variable may take: tensors, parameters and sizes."""
    return (
        set(program.shapes)
        | {s.name for s in program.symbols}
        | {s.name for s in program.definitions}
    )


def _bound_names(statement: ir.Statement) -> set[str]:
    names = {v.name for v in statement.indices}
    for node in ir.walk(statement.rhs):
        if isinstance(node, ir.Reduce | ir.IsExtremum):
            names |= {v.name for v in node.variables}
    return names


def tangents(program: Program, wrt: Iterable[str] | None = None) -> list[ir.Statement]:
    """The tangent statement of every statement that depends on the inputs ``wrt`` (default all).

    An intermediate that does not depend on them has no tangent statement; the
    output always has one (``tY[i] = 0`` when it does not depend on them).
    """
    return list(_forward_mode(program, wrt)[0])


def _forward_mode(
    program: Program, wrt: Iterable[str] | None
) -> tuple[tuple[ir.Statement, ...], dict[str, str]]:
    moving = list(program.differentiable if wrt is None else wrt)
    arrays = [name for name in moving if name in program.index_arrays]
    if arrays:
        raise ArgumentError(
            f"cannot take tangents along {', '.join(map(repr, arrays))}: an index array "
            "holds integer positions"
        )
    unknown = [name for name in moving if name not in program.inputs]
    if unknown:
        raise ArgumentError(
            f"cannot take tangents along {', '.join(map(repr, unknown))}: "
            f"the inputs are {', '.join(program.inputs)}"
        )
    reserved = _reserved(program)
    names: dict[str, str] = {}
    for tensor in program.shapes:
        names[tensor] = tangent_name(tensor, reserved | set(names.values()))
    reserved |= set(names.values())
    shapes = {**program.shapes, **{names[t]: program.shapes[t] for t in program.shapes}}
    active = {name: names[name] for name in moving}
    statements: list[ir.Statement] = []
    for statement in program.statements:
        taken = reserved | _bound_names(statement)
        rhs = tangent(statement.rhs, active, taken, shapes)
        if rhs == ir.ZERO and statement.target != program.output:
            continue
        # every bound variable distinct within the statement; the first keeps its name
        rhs = rename_bound(rhs, reserved | {v.name for v in statement.indices})
        target = names[statement.target]
        statements.append(ir.Statement(target, statement.indices, rhs, statement.span))
        active[statement.target] = target
    return tuple(statements), active


@dataclass(frozen=True)
class JVP:
    """A forward program and the tangent statements of forward mode."""

    program: Program
    statements: tuple[ir.Statement, ...]
    tangents: dict[str, str]  # tensor -> its tangent's name (inputs given, then statements)

    @property
    def text(self) -> str:
        return self.program.text

    @property
    def output(self) -> str:
        """The name of the output's tangent."""
        return self.tangents[self.program.output]

    @property
    def seeds(self) -> tuple[str, ...]:
        """The tangents given from outside (the inputs')."""
        return tuple(self.tangents[n] for n in self.program.inputs if n in self.tangents)

    @property
    def shapes(self) -> dict[str, tuple[sympy.Expr, ...]]:
        """Every tensor's shape, the tangents' included."""
        shapes = dict(self.program.shapes)
        for tensor, name in self.tangents.items():
            shapes[name] = self.program.shapes[tensor]
        return shapes

    def notation(self) -> str:
        """The tangent statements in the notation, one per line, without their domains."""
        return "\n".join(statement_text(s, with_domain=False) for s in self.statements)

    def latex(self) -> str:
        from .emit.latex import statement_latex

        lines = [statement_latex(s) for s in self.statements]
        return r"\begin{aligned}" + r" \\ ".join(f"&{line}" for line in lines) + r"\end{aligned}"

    def _repr_latex_(self) -> str:
        return f"$\\displaystyle {self.latex()}$"

    def __str__(self) -> str:
        lines = ["forward:"]
        for statement in self.program.statements:
            lines += ["  " + line for line in statement_text(statement).splitlines()]
        seeds = ", ".join(
            f"{self.tangents[n]} of {n}" for n in self.program.inputs if n in self.tangents
        )
        lines.append(f"tangents (given: {seeds}):")
        for statement in self.statements:
            lines += ["  " + line for line in statement_text(statement).splitlines()]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"JVP({self.text!r} -> {self.output})"


def jvp_program(program: Program, wrt: Iterable[str] | None = None) -> JVP:
    """The tangent statements of an analysed program."""
    if not program.inputs:
        raise nothing_to_differentiate(program)
    statements, names = _forward_mode(program, wrt)
    return JVP(program, statements, names)


def derive_jvp(
    text: str,
    params: ParamValues | None = None,
    shapes: ShapeValues | None = None,
    ranges: RangeValues | None = None,
    wrt: Iterable[str] | None = None,
) -> JVP:
    """The tangent of every statement of ``text`` (forward mode), symbolic where sizes are.

    >>> print(derive_jvp("Y[i] = W[m]*X[i+m]").notation())
    tY[i] = sum_{m}(tW[m] * X[i + m] + W[m] * tX[i + m])
    """
    try:
        return jvp_program(analyse(text, params, shapes, ranges, learnable_scalars(text, wrt)), wrt)
    except EinderiveError as error:
        raise error.with_text(text) from None


def run_tangents(
    derivation: JVP, arrays: Mapping[str, np.ndarray], directions: Mapping[str, np.ndarray]
) -> np.ndarray:
    """The output's tangent: the forward, then the tangent statements, by the interpreter."""
    program = derivation.program
    values = run_statements(program.statements, program.shapes, arrays)
    for name, direction in directions.items():
        if name in derivation.tangents:
            values[derivation.tangents[name]] = direction
    values = run_statements(derivation.statements, derivation.shapes, values)
    return values[derivation.output]


def jvp(
    text: str,
    inputs: Mapping[str, np.ndarray],
    tangents: Mapping[str, np.ndarray],
    params: ParamValues | None = None,
    shapes: ShapeValues | None = None,
    ranges: RangeValues | None = None,
) -> np.ndarray:
    """The tangent of the output when each input ``X`` moves along ``tangents[X]``.

    Inputs left out of ``tangents`` stay fixed.

    >>> jvp("Y[i] = W[m]*X[i+m]", {"W": [1.0, 2.0], "X": [1.0, 0.0, 3.0]}, {"X": [1.0, 0.0, 0.0]})
    array([1., 0.])
    """
    program = numeric_program(text, inputs, params, shapes, ranges)
    arrays = _check_inputs(program, inputs)
    directions: dict[str, np.ndarray] = {}
    for name, direction in tangents.items():
        if name not in arrays:
            raise ArgumentError(
                f"a tangent is given for {name!r}; the inputs are {', '.join(program.inputs)}"
            )
        direction = np.asarray(direction, dtype=np.float64)
        if direction.shape != arrays[name].shape:
            raise ArgumentError(
                f"the tangent of {name!r} has shape {direction.shape}; "
                f"{name!r} has shape {arrays[name].shape}"
            )
        directions[name] = direction
    derivation = jvp_program(program, wrt=list(directions))
    return run_tangents(derivation, arrays, directions)


def instantiate_jvp(derivation: JVP, values: Mapping[sympy.Symbol, sympy.Expr]) -> JVP:
    """The symbolic tangents with numbers for their parameters and sizes (not derived again)."""
    program = derivation.program
    # a derived extent may be defined through an earlier one (a pooling after a convolution)
    mapping = dict(values)
    for symbol, definition in program.definitions.items():
        mapping[symbol] = definition.xreplace(mapping)
    statements = tuple(replace(s, rhs=ir.subs(s.rhs, mapping)) for s in derivation.statements)
    return replace(derivation, program=substitute(program, mapping), statements=statements)


def verify_jvp(
    text: str,
    params: ParamValues | None = None,
    shapes: ShapeValues | None = None,
    ranges: RangeValues | None = None,
    trials: int = 3,
    seed: int = 0,
) -> Report:
    """Check the tangents of ``text`` on random sizes and inputs, as ``verify`` checks pullbacks.

    Per draw: the output's tangent against central differences of the forward
    along the same direction (every input moving), and the duality
    ``<dY, tY> = sum_X <dX, tX>`` against the derived pullbacks.

    >>> verify_jvp("Y[i] = W[m]*X[2*i+m]").ok
    True
    """
    try:
        program = analyse(text, params, shapes, ranges)
        derivation = jvp_program(program)
    except EinderiveError as error:
        raise error.with_text(text) from None
    rng = random.Random(seed)
    generator = np.random.default_rng(seed)
    checks: list[Check] = []
    for trial in range(trials):
        values = draw_values(program, rng)
        given = {s.name: _plain(v) for s, v in values.items()}
        numeric = instantiate_jvp(derivation, values)
        checks += _check_draw(numeric, generator, trial, given)
    return Report(text, tuple(checks))


def _forward_output(program: Program, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    return run_statements(program.statements, program.shapes, arrays)[program.output]


def _check_draw(
    derivation: JVP, generator: np.random.Generator, trial: int, given: dict[str, int | float]
) -> list[Check]:
    program = derivation.program
    arrays = _random_inputs(program, generator)
    directions = {name: generator.standard_normal(a.shape) for name, a in arrays.items()}
    derived = run_tangents(derivation, arrays, directions)
    ahead = {name: a + STEP * directions[name] for name, a in arrays.items()}
    behind = {name: a - STEP * directions[name] for name, a in arrays.items()}
    finite = (_forward_output(program, ahead) - _forward_output(program, behind)) / (2 * STEP)
    scale = np.max(np.abs(finite), initial=0.0) + np.max(np.abs(derived), initial=0.0) + 1e-12
    error = float(np.max(np.abs(derived - finite), initial=0.0) / scale)
    name = program.output
    checks = [
        Check(name, "jvp", trial, given, error, error <= TOLERANCE, "finite differences", "t")
    ]
    cotangent = generator.standard_normal(derived.shape)
    pulled = run("loops", derive_record(program), arrays, cotangent)
    left = float(np.sum(cotangent * derived))
    right = sum(float(np.sum(pulled[n] * directions[n])) for n in arrays)
    error = abs(left - right) / (float(np.sum(np.abs(cotangent * derived))) + abs(right) + 1e-12)
    checks.append(Check(name, "jvp", trial, given, error, error <= TOLERANCE, "vjp duality", "t"))
    return checks
