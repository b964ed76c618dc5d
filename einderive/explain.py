"""Show the work: a derivation as numbered steps, in plain text and in LaTeX.

For every read ``T[w(v)]`` of a tensor in a statement ``Out[o] = rhs`` the steps
spell out what ``derive`` does (see derive.py):

1. the derivative of ``Out[o]`` with respect to one element ``T[u]``: the local
   derivative times one Kronecker delta per axis, ``delta(u, w(v))``;
2. the chain rule, ``dT[u] = sum_{o, v} dOut[o] * local * delta(u, w(v))``;
3. the substitution that removes the deltas (which index ``solve.gather``
   solves for, from which equation);
4. the bounds it leaves: the eliminated index's range, with its solution put
   in, becomes bounds on the indices still summed;
5. a divisibility condition, where an index was solved through a coefficient;
6. the pullback, and the convolution call it is, with the role of each parameter.

The steps are read off the trace ``derive`` keeps while it derives
(``Backward.trace``: each read, its seed, the pivots ``gather`` chose, the term it
left), so they show what ``derive`` did without deriving again; where the pullback
names a bound index differently from the steps (``k1``, because ``k`` is taken), the
last step says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import sympy

from . import ir
from .conv.recognise import convolutions
from .derive import _rename, _stem
from .emit.latex import LatexPrinter, statement_latex
from .emit.printer import MUL, NotationPrinter
from .emit.text import statement_text, variables_of
from .errors import ArgumentError
from .ir import fresh
from .solve import Bounds, implied_by_box, loop_bounds

if TYPE_CHECKING:
    from .conv.calls import GenericConv
    from .conv.recognise import ConvPullback, Recognition
    from .model import Derivation, PullbackTrace, ReadTrace


@dataclass(frozen=True)
class Step:
    """One step: a title, its lines in plain text, and the same lines in LaTeX.

    ``tensor`` names the input (or intermediate) whose pullback the step belongs
    to; None for the forward.
    """

    title: str
    lines: tuple[str, ...]
    latex: str
    tensor: str | None = None

    def text(self, number: int | None = None) -> str:
        head = self.title if number is None else f"{number}. {self.title}"
        return "\n".join([head, *("   " + line for line in self.lines)])

    def __str__(self) -> str:
        return self.text()

    def _repr_latex_(self) -> str:
        return rf"$$\begin{{array}}{{l}}{_title(self.title)} \\ {self.latex}\end{{array}}$$"


@dataclass(frozen=True)
class Elimination:
    """One index removed by a delta: ``var = solution``, from the equation ``left = right``."""

    var: sympy.Symbol
    solution: sympy.Expr
    equation: tuple[sympy.Expr, sympy.Expr] | None
    condition: ir.Constraint | None  # "div": the solution is an integer only where it holds


@dataclass(frozen=True)
class Read:
    """One read of a tensor in one forward statement, and what its deltas leave."""

    statement: ir.Statement
    cotangent: str  # the cotangent of the statement's target
    access: ir.Access
    local: ir.Node  # d rhs / d(this read), inside the reductions around it
    seed: ir.Node  # cotangent * local
    scope: tuple[sympy.Symbol, ...]  # the variables bound around the read, in pivot order
    where: tuple[ir.Constraint, ...]
    in_range: tuple[ir.Constraint, ...]  # guards derive added that the domain lacks
    targets: tuple[sympy.Symbol, ...]  # the pullback's indices
    extents: dict[sympy.Symbol, sympy.Expr]  # each target's extent: the pullback's shape
    eliminated: tuple[Elimination, ...]
    guards: tuple[tuple[sympy.Expr, sympy.Expr], ...]  # equations left with no index to solve
    term: ir.Node  # the read's term of the pullback (ZERO: it never contributes)

    @property
    def summed(self) -> tuple[sympy.Symbol, ...]:
        """The scope's variables bound by reductions (the others index the output)."""
        return tuple(v for v in self.scope if v not in self.statement.indices)

    @property
    def remaining(self) -> tuple[sympy.Symbol, ...]:
        """The variables still summed in the term."""
        return self.term.variables if isinstance(self.term, ir.Reduce) else ()


@dataclass(frozen=True)
class PullbackWork:
    """A pullback read by read, as derived: its reads, and the statement they add up to."""

    tensor: str
    reads: tuple[Read, ...]
    statement: ir.Statement

    @property
    def name(self) -> str:
        return self.statement.target


# ---- the derivation's trace, in the forward's names -----------------------------------------


def pullback_work(derivation: Derivation) -> list[PullbackWork]:
    """Every cotangent statement of ``derivation``, in its order, read by read, as ``derive``
    recorded it while deriving (``Backward.trace``): nothing is derived again.

    ``derive`` renames bound indices apart while it substitutes (``m1`` for ``m``); the
    steps show the forward's names where they clash with nothing (see ``_shown_names``).
    """
    backward = derivation.backward
    if len(backward.trace) != len(backward.statements):
        raise ArgumentError(
            "this derivation kept no trace of how it was derived (its numbers were put in "
            "after deriving); explain the derivation that ed.derive returned"
        )
    program = derivation.program
    cotangents = [*backward.cotangents.values(), *backward.seeds]
    base = set(program.shapes) | {s.name for s in program.symbols} | set(cotangents)
    base |= {v.name for s in backward.statements for v in s.indices}
    result = []
    for pullback in backward.trace:
        reads = tuple(_shown(pullback, read, base) for read in pullback.reads)
        rhs = ir.make_add([read.term for read in reads])
        statement = ir.Statement(pullback.name, pullback.targets, rhs)
        result.append(PullbackWork(pullback.tensor, reads, statement))
    return result


def _shown_names(read: ReadTrace, base: set[str]) -> dict[sympy.Symbol, sympy.Symbol]:
    """The names the steps give ``derive``'s bound variables in one read.

    A variable summed around the read takes its forward name unless that is a tensor's,
    a size's, a cotangent's or a pullback index's (``fresh``, in scope order); a variable
    bound inside the seed (``sum_{j}`` of a softmax, an argmax) is named apart from those.
    """
    taken = base | {v.name for v in read.statement.indices}
    names: dict[sympy.Symbol, sympy.Symbol] = {}
    for var in read.scope:
        if var not in read.statement.indices:
            names[var] = fresh(_stem(var), taken)
    inner = (
        base | {v.name for v in read.statement.indices} | {names.get(v, v).name for v in read.scope}
    )
    for node in ir.walk(read.seed):
        if isinstance(node, ir.Reduce | ir.IsExtremum):
            for var in node.variables:
                names[var] = fresh(_stem(var), inner)
    return names


def _shown(pullback: PullbackTrace, trace: ReadTrace, base: set[str]) -> Read:
    """One recorded read, with the names the steps give it (``_shown_names``)."""
    names = _shown_names(trace, base)
    seed = _rename(trace.seed, names)
    scope = tuple(names.get(v, v) for v in trace.scope)
    where = tuple(_renamed(c, names) for c in trace.where)
    access = ir.subs(trace.access, names)
    assert isinstance(access, ir.Access)
    solved = tuple(
        (names.get(var, var), solution.xreplace(names), None if c is None else _renamed(c, names))
        for var, solution, c in trace.solved
    )
    writes = access.indices
    eliminated, guards = _eliminations(pullback.targets, writes, where, solved)
    return Read(
        statement=trace.statement,
        cotangent=trace.cotangent,
        access=access,
        local=_local(seed),
        seed=seed,
        scope=scope,
        where=where,
        in_range=tuple(c for c in (_renamed(g, names) for g in trace.in_range) if c not in where),
        targets=pullback.targets,
        extents=pullback.extents,
        eliminated=eliminated,
        guards=guards,
        term=_rename(trace.term, names),
    )


def _renamed(constraint: ir.Constraint, names: dict[sympy.Symbol, sympy.Symbol]) -> ir.Constraint:
    """The constraint with variables renamed, as ``gather`` wrote it (``subs`` would also
    clear its denominators: ``d/f divides p - q/f`` is shown as solved)."""
    return replace(
        constraint,
        expr=constraint.expr.xreplace(names),
        modulus=constraint.modulus.xreplace(names),
    )


def _local(seed: ir.Node) -> ir.Node:
    """The derivative of the right-hand side with respect to the read: the seed without its
    first factor, the statement's cotangent (``backprop`` multiplies onto it from the right,
    and ``make_mul`` keeps the order of the factors, a constant first)."""
    factors = list(seed.factors) if isinstance(seed, ir.Mul) else [seed]
    first = next(k for k, f in enumerate(factors) if not isinstance(f, ir.Const))
    return ir.make_mul(factors[:first] + factors[first + 1 :])


def _eliminations(
    targets: Sequence[sympy.Symbol],
    writes: Sequence[sympy.Expr],
    where: Sequence[ir.Constraint],
    trace: Sequence[tuple[sympy.Symbol, sympy.Expr, ir.Constraint | None]],
) -> tuple[tuple[Elimination, ...], tuple[tuple[sympy.Expr, sympy.Expr], ...]]:
    """The indices ``gather`` solved for in one read (``trace``: its pivots, in order), each
    with its final solution and the equation it came from, and the equations left over
    (each ``left = right`` with the solutions put in): guards.

    Later solutions are put into earlier ones.
    """
    solved: list[tuple[sympy.Symbol, sympy.Expr, ir.Constraint | None]] = []
    final: dict[sympy.Symbol, sympy.Expr] = {}
    for var, solution, condition in reversed(trace):
        final[var] = ir.expand(solution.xreplace(final))
        solved.insert(0, (var, final[var], condition))
    equations = list(zip(targets, writes, strict=True))
    equations += [(c.expr, sympy.Integer(0)) for c in where if c.kind == "eq"]
    used: set[int] = set()
    eliminations = []
    for var, solution, condition in solved:
        equation = None
        for k, (left, right) in enumerate(equations):
            if k not in used and ir.expand(left - right).coeff(var) != 0:
                used.add(k)
                equation = (left, right)
                break
        if condition is None:
            numerator, denominator = sympy.fraction(sympy.together(solution))
            if denominator != 1:
                condition = ir.Constraint("div", ir.expand(numerator), denominator)
        eliminations.append(Elimination(var, solution, equation, condition))
    mapping = {e.var: e.solution for e in eliminations}
    guards = tuple(
        (ir.expand(left.xreplace(mapping)), ir.expand(right.xreplace(mapping)))
        for k, (left, right) in enumerate(equations)
        if k not in used
    )
    return tuple(eliminations), guards


# ---- lines that print as text and as LaTeX --------------------------------------------------

# A line is a sequence of parts: a str is words; a callable is math, given a printer.
Math = Callable[[NotationPrinter], str]
Line = Sequence[str | Math]


_TEX_ESCAPES = {c: "\\" + c for c in "&%$#_{}"} | {
    "\\": r"\textbackslash{}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def _tex_escape(text: str) -> str:
    """Words for ``\\text{...}``: the characters special to LaTeX escaped."""
    return "".join(_TEX_ESCAPES.get(char, char) for char in text)


def _title(title: str) -> str:
    return rf"\textbf{{{_tex_escape(title)}}}"


def _symbol_of(symbol: sympy.Symbol) -> Callable[[NotationPrinter], str]:
    """A part of a line: a symbol as the printer spells it."""
    return lambda printer: printer.symbol(symbol)


def _render(line: Line, printer: NotationPrinter) -> str:
    out: list[str] = []
    for part in line:
        if isinstance(part, str) and _is_latex(printer):
            # blanks that indent a line in text are a quad in LaTeX
            words = part if out else part.lstrip(" ")
            indent = r"\quad " if words != part else ""
            out.append(indent + (rf"\text{{{_tex_escape(words)}}}" if words else ""))
        elif isinstance(part, str):
            out.append(part)
        else:
            out.append(part(printer))
    return "".join(out)


def _step(
    title: str, order: Sequence[sympy.Symbol], lines: Sequence[Line], tensor: str | None = None
) -> Step:
    text, latex = NotationPrinter(order), LatexPrinter(order)
    return Step(
        title,
        tuple(_render(line, text) for line in lines),
        r" \\ ".join(_render(line, latex) for line in lines),
        tensor,
    )


def _is_latex(printer: NotationPrinter) -> bool:
    return isinstance(printer, LatexPrinter)


def _equals(printer: NotationPrinter) -> str:
    return " = "


def _index(expr: sympy.Expr) -> Math:
    return lambda pr: pr.index(expr)


def _scalar(expr: object) -> Math:
    return lambda pr: pr.scalar(sympy.sympify(expr))


def _node(node: ir.Node) -> Math:
    return lambda pr: pr.expr(node)


def _tensor(name: str, indices: Sequence[sympy.Expr] = ()) -> Math:
    return _node(ir.Access(name, tuple(indices)))


def _condition(constraint: ir.Constraint) -> Math:
    return lambda pr: pr.condition(constraint)


def _bounds(bounds: Bounds) -> Math:
    # max and min built once, not once per printer (sympy's Max is slow to build)
    bounds = Bounds(bounds.var, (bounds.low,), (bounds.high,))
    return lambda pr: pr.bounds(bounds)


def _statement(statement: ir.Statement, with_domain: bool = False) -> Math:
    """``target[...] = rhs``; with its domain: bounds under the sums in LaTeX, lines in text."""

    def show(pr: NotationPrinter) -> str:
        if not _is_latex(pr):
            return statement_text(statement, with_domain=with_domain)
        if with_domain:
            return statement_latex(statement)
        order = variables_of(statement)
        printer = LatexPrinter(order + [v for v in pr.order if v not in order])
        return f"{printer.expr(ir.Access(statement.target, statement.indices))} = " + (
            printer.expr(statement.rhs)
        )

    return show


def _joined(parts: Sequence[Math], text: str = ", ", latex: str = r",\ ") -> Math:
    return lambda pr: (latex if _is_latex(pr) else text).join(part(pr) for part in parts)


def _between(low: sympy.Expr, middle: Math, high: sympy.Expr) -> Math:
    def show(pr: NotationPrinter) -> str:
        le = r" \leq " if _is_latex(pr) else " <= "
        return f"{pr.side(low)}{le}{middle(pr)}{le}{pr.side(high)}"

    return show


def _box(
    var: sympy.Symbol, constraints: Sequence[ir.Constraint]
) -> tuple[sympy.Expr, sympy.Expr] | None:
    """``(low, high)`` where ``constraints`` are exactly ``var >= low`` and ``var <= high``."""
    lower: list[sympy.Expr] = []
    upper: list[sympy.Expr] = []
    for c in constraints:
        coefficient = c.expr.coeff(var) if c.kind == "ge" else 0
        if coefficient not in (1, -1):
            return None
        bound = ir.expand(-(c.expr - coefficient * var) / coefficient)
        (lower if coefficient == 1 else upper).append(bound)
    if len(lower) != 1 or len(upper) != 1:
        return None
    return lower[0], upper[0]


def _range(
    var: sympy.Symbol, constraints: Sequence[ir.Constraint], solution: sympy.Expr | None = None
) -> Math:
    """``0 <= m <= M - 1``; with ``solution`` put in for ``var``, ``0 <= p - s*i + 1 <= M - 1``."""
    box = _box(var, constraints)
    if box is None:
        mapping = {} if solution is None else {var: solution}
        return _joined([_condition(c.subs(mapping)) for c in constraints])
    middle = _over(var if solution is None else solution)
    return _between(box[0], middle, box[1])


def _sum(variables: Sequence[sympy.Symbol], body: Math) -> Math:
    def show(pr: NotationPrinter) -> str:
        if not variables:
            return body(pr)
        names = [pr.symbol(v) for v in variables]
        if _is_latex(pr):
            return rf"\sum_{{{', '.join(names)}}} {body(pr)}"
        return f"sum_{{{','.join(names)}}}({body(pr)})"

    return show


def _product(factors: Sequence[ir.Node | Math]) -> Math:
    """A product of IR factors (ones dropped) and math parts, in the printer's spelling."""

    def show(pr: NotationPrinter) -> str:
        parts = []
        for factor in factors:
            if isinstance(factor, ir.Node):
                if factor != ir.ONE:
                    parts.append(pr.expr(factor, MUL))
            else:
                parts.append(factor(pr))
        return pr.times.join(parts) if parts else "1"

    return show


def _delta(target: sympy.Expr, write: sympy.Expr) -> Math:
    def show(pr: NotationPrinter) -> str:
        if _is_latex(pr):
            return rf"\delta_{{{pr.index(target)},\, {pr.index(write)}}}"
        return f"delta({pr.index(target)}, {pr.index(write)})"

    return show


def _partial(read: Read) -> Math:
    """``dY[i, j]/dX[p, q]`` (a fraction of partials in LaTeX)."""
    out = _tensor(read.statement.target, read.statement.indices)
    element = _tensor(read.access.tensor, read.targets)

    def show(pr: NotationPrinter) -> str:
        if _is_latex(pr):
            return rf"\frac{{\partial {out(pr)}}}{{\partial {element(pr)}}}"
        return f"d{out(pr)}/d{element(pr)}"

    return show


# ---- the steps ------------------------------------------------------------------------------


def _forward_step(derivation: Derivation) -> Step:
    program = derivation.program
    lines: list[Line] = []
    order: list[sympy.Symbol] = []
    for statement in program.statements:
        order += variables_of(statement)
        shape = program.shapes[statement.target]
        free = [
            _bounds(Bounds(v, (sympy.Integer(0),), (ir.expand(n - 1),)))
            for v, n in zip(statement.indices, shape, strict=True)
        ]
        summed: list[Math] = []
        for node in ir.walk(statement.rhs):
            if isinstance(node, ir.Reduce) and node.variables:
                bounds, conditions = loop_bounds(node.variables, node.where)
                summed += [_bounds(b) for b in bounds] + [_condition(c) for c in conditions]
        if statement.written is not None:
            lines.append([f"{statement.written}    (as written; in pieces:)"])
        lines.append([_statement(statement)])
        lines.append(["    free indices: ", _joined(free, "; ")] if free else ["    no free index"])
        lines.append(
            ["    summed indices: ", _joined(summed, "; ")] if summed else ["    no summed index"]
        )
    if program.params:
        lines.append(["parameters (symbolic): ", _joined([_scalar(p) for p in program.params])])
    if program.values:
        given = [
            _joined([_scalar(sympy.Symbol(k)), _scalar(v)], " = ", " = ")
            for k, v in program.values.items()
        ]
        lines.append(["given: ", _joined(given)])
    lines.append(["shapes: ", _shapes(program.shapes)])
    for symbol, value in program.definitions.items():
        lines.append(["    ", _joined([_scalar(symbol), _scalar(value)], " = ", " = ")])
    lines.append(["a read outside a tensor is zero: this is how padding is written"])
    return _step("The forward", order, lines)


def _shapes(shapes: dict[str, tuple[sympy.Expr, ...]]) -> Math:
    """``W: (M, N); X: (N_X0, N_X1)``."""

    def show(pr: NotationPrinter) -> str:
        open_, close, sep = (r"\left(", r"\right)", r",\ ") if _is_latex(pr) else ("(", ")", "; ")
        sizes = {name: _joined([_scalar(n) for n in shape])(pr) for name, shape in shapes.items()}
        return sep.join(
            f"{pr.expr(ir.Access(name, ()))}: {open_}{text}{close}" for name, text in sizes.items()
        )

    return show


def _parenthesised(math: Math) -> Math:
    return lambda pr: rf"\left({math(pr)}\right)" if _is_latex(pr) else f"({math(pr)})"


def _under(math: Math) -> Math:
    """Blanks as wide as ``math``'s text, to line up a continued equation (a quad in LaTeX)."""
    return lambda pr: r"\quad" if _is_latex(pr) else " " * len(math(pr))


def _order_of(read: Read) -> list[sympy.Symbol]:
    order = list(read.targets) + variables_of(read.statement)
    return list(dict.fromkeys(order + list(read.scope)))


def _label(read: Read, work: PullbackWork) -> str:
    if len(work.reads) == 1:
        return ""
    printer = NotationPrinter(variables_of(read.statement))
    number = work.reads.index(read) + 1
    return f" (read {number} of {len(work.reads)}: {printer.expr(read.access)})"


def _read_steps(work: PullbackWork, read: Read) -> list[Step]:
    """The steps of one read: derivative, chain rule, substitution, bounds, divisibility."""
    label = _label(read, work)
    found: list[Step | None] = [
        _derivative_step(work, read, label),
        _chain_step(work, read, label),
        _substitution_step(work, read, label),
    ]
    if read.term != ir.ZERO:
        found += [_bounds_step(work, read, label), _divisibility_step(work, read, label)]
    return [step for step in found if step is not None]


def _deltas(read: Read) -> list[Math]:
    return [_delta(t, w) for t, w in zip(read.targets, read.access.indices, strict=True)]


def _derivative_step(work: PullbackWork, read: Read, label: str) -> Step:
    """``dY[i, j]/dX[p, q] = sum_{m,n}(W[m, n] * delta(p, s*i + m - 1) * ...)``."""
    tensor = work.tensor
    if read.targets:
        where = _joined([_index(w) for w in read.access.indices])
        at = _joined([_index(t) for t in read.targets])
        if len(read.targets) > 1:
            where, at = _parenthesised(where), _parenthesised(at)
        kind = "one Kronecker delta per axis" if len(read.targets) > 1 else "a Kronecker delta"
        element = _tensor(tensor, read.targets)
        reason: Line = [
            _node(read.access), " is the element ", element, " where ", where, _equals, at,
            f": {kind}",
        ]  # fmt: skip
    else:
        reason = [f"{tensor} is a scalar: no delta"]
    derivative = _sum(read.summed, _product([read.local, *_deltas(read)]))
    title = f"the derivative of {read.statement.target} with respect to one element of {tensor}"
    return _step(
        f"{work.name}: {title}{label}",
        _order_of(read),
        [[_partial(read), _equals, derivative], reason],
        tensor,
    )


def _chain_step(work: PullbackWork, read: Read, label: str) -> Step:
    """``dX[p, q] = sum_{i,j}(dY[i, j] * dY[i, j]/dX[p, q])``, the deltas written out."""
    target = read.statement.target
    lhs = _tensor(work.name, read.targets)
    cotangent = _tensor(read.cotangent, read.statement.indices)
    outer = _sum(read.statement.indices, _product([cotangent, _partial(read)]))
    inner = [*read.statement.indices, *read.summed]
    expanded = _sum(inner, _product([read.seed, *_deltas(read)]))
    lines: list[Line] = [
        [lhs, _equals, outer],
        [_under(lhs), _equals, expanded],
        [f"({read.cotangent} = dL/d{target}, the cotangent of {target}, for a scalar loss L)"],
    ]
    return _step(f"{work.name}: the chain rule{label}", _order_of(read), lines, work.tensor)


def _substitution_step(work: PullbackWork, read: Read, label: str) -> Step:
    """Which index each delta removes, from which equation; the term it leaves."""
    lines: list[Line] = []
    for e in read.eliminated:
        line: list[str | Math] = []
        if e.equation is not None:
            line += [_index(e.equation[0]), _equals, _index(e.equation[1]), " is solved for "]
            line += [_index(e.var), ": "]
        line += [_index(e.var), _equals, _over(e.solution)]
        if e.condition is not None:
            line += [", an integer only where ", _condition(e.condition)]
        lines.append(line)
    for left, right in read.guards:
        lines.append(
            [_index(left), _equals, _index(right), " has no index left to solve for: a condition"]
        )
    if read.term == ir.ZERO:
        lines.append([f"the conditions never hold: this read adds nothing to {work.name}"])
    else:
        lines.append([_statement(ir.Statement(work.name, read.targets, read.term))])
    title = f"{work.name}: the substitution that removes the deltas{label}"
    return _step(title, _order_of(read), lines, work.tensor)


def _term(read: Read) -> ir.Reduce:
    """The read's term as a sum, with no variables where nothing is left to sum."""
    return read.term if isinstance(read.term, ir.Reduce) else ir.Reduce("sum", (), read.term, ())


def _bounds_step(work: PullbackWork, read: Read, label: str) -> Step | None:
    """The eliminated index's range, its solution put in; the bounds left on the sum."""
    lines: list[Line] = []
    for e in read.eliminated:
        box = [c for c in read.where if c.kind == "ge" and c.expr.has(e.var)]
        if box:
            line: Line = [_range(e.var, box), " becomes ", _range(e.var, box, e.solution)]
            if all(implied_by_box(c.subs({e.var: e.solution}), read.extents) for c in box):
                line = [*line, f": the shape of {work.name} says so already"]
            lines.append(line)
    if read.in_range:
        mapping = {e.var: e.solution for e in read.eliminated}
        kept = _joined([_condition(c.subs(mapping)) for c in read.in_range])
        lines.append(
            ["the reads the term multiplies stay inside their tensors: ", kept, " (outside, "
             "a read is zero, and 1/x or log(x) of it would make the term inf * 0)"]
        )  # fmt: skip
    term = _term(read)
    bounds, conditions = loop_bounds(term.variables, term.where)
    if read.remaining:
        scope = set(read.scope)
        ranges = [
            _range(v, [c for c in read.where if c.kind == "ge" and c.free_symbols & scope == {v}])
            for v in read.remaining
        ]
        lines.append(["with ", _joined(ranges, "; "), ", the sum runs over:"])
    lines += [["    ", _bounds(b)] for b in bounds]
    lines += [["    where ", _condition(c)] for c in conditions if c.kind != "div"]
    if not lines:
        return None
    return _step(f"{work.name}: the bounds{label}", _order_of(read), lines, work.tensor)


def _divisibility_step(work: PullbackWork, read: Read, label: str) -> Step | None:
    divisible = [c for c in _term(read).where if c.kind == "div"]
    if not divisible:
        return None
    lines: list[Line] = [
        [_condition(c), ": the solved index is an integer only there"] for c in divisible
    ]
    lines.append(["(where the pullback is a convolution call, this is its fill: input dilation)"])
    title = f"{work.name}: a divisibility condition{label}"
    return _step(title, _order_of(read), lines, work.tensor)


def _pullback_step(work: PullbackWork, derived: ir.Statement) -> Step:
    lines: list[Line] = []
    if len(work.reads) > 1:
        lines.append([f"the {len(work.reads)} reads add up:"])
    lines.append([_statement(work.statement, with_domain=True)])
    printed = statement_text(derived, with_domain=False)
    if printed != statement_text(work.statement, with_domain=False):
        # the steps keep apart what the seed binds (argmax_{m1} beside the summed m); once
        # the deltas are gone, the printed pullback may give the plain names back
        lines.append([f"(einderive prints it with other names for its bound indices: {printed})"])
    return _step(f"{work.name}: the pullback", variables_of(work.statement), lines, work.tensor)


def kernel_positions(rank: int) -> list[sympy.Symbol]:
    """``k`` (one spatial axis) or ``k0, k1, ...``: positions in a call's kernel."""
    return [sympy.Symbol("k" if rank == 1 else f"k{a}", integer=True) for a in range(rank)]


def input_reads(conv: ConvPullback, indices: Sequence[sympy.Symbol]) -> list[sympy.Expr]:
    """Where a call reads its input, per spatial axis, at kernel position ``k``.

    From the definition of the generic call (conv/calls.py): the filled and
    padded input is read at ``stride*u + dilation*m``, with ``m = K-1-k`` where
    the kernel is flipped, and its position ``t`` holds ``x[(t - lo) / fill]``.
    """
    call = conv.call
    spatial = [indices[a] for a in conv.out_axes[2:] if isinstance(a, int)]
    reads = []
    for a, k in enumerate(kernel_positions(call.rank)):
        tap = conv.kernel_size[a] - 1 - k if call.flip_kernel else k
        position = call.stride[a] * spatial[a] + call.dilation[a] * tap - call.padding[a][0]
        reads.append(ir.expand(position) / call.fill[a])
    return reads


def _over(expr: sympy.Expr) -> Math:
    """An index expression over its denominator: ``(p - 2*i) / 3``, not ``p / 3 - 2*i / 3``."""
    numerator, denominator = sympy.fraction(sympy.together(expr))

    def show(pr: NotationPrinter) -> str:
        top = pr.index(ir.expand(numerator))
        if denominator == 1:
            return top
        bottom = pr.scalar(denominator)
        if _is_latex(pr):
            return rf"\frac{{{top}}}{{{bottom}}}"
        return f"({top}) / {bottom}" if numerator.is_Add else f"{top} / {bottom}"

    return show


def _added(terms: Sequence[ir.Node]) -> list[Line]:
    """``+ B[o]``, the terms a call leaves out, on a line of their own (none: no line)."""
    if not terms:
        return []
    added = _joined([_node(t) for t in terms], " + ", " + ")

    def plus(pr: NotationPrinter) -> str:
        return f"+ {added(pr)}"

    return [["    ", plus, ": the statement's other terms, added to the call's result"]]


def _call(call: GenericConv) -> Math:
    def show(pr: NotationPrinter) -> str:
        if not _is_latex(pr):
            return str(call)

        def entry(value: object) -> str:
            if isinstance(value, tuple):
                return r"\left(" + ", ".join(entry(v) for v in value) + r"\right)"
            return pr.scalar(sympy.sympify(value))

        parts = [pr.expr(ir.Access(call.x, ())), pr.expr(ir.Access(call.w, ()))]
        for key in ("padding", "stride", "dilation", "fill"):
            parts.append(rf"\mathrm{{{key}}} = {entry(getattr(call, key))}")
        flags = ("flip_kernel", "permute_kernel", "permute_input")
        parts += [rf"\mathrm{{{_tex_escape(f)}}}" for f in flags if getattr(call, f)]
        if call.groups != 1:
            parts.append(rf"\mathrm{{groups}} = {entry(call.groups)}")
        return rf"\operatorname{{conv}}\left({', '.join(parts)}\right)"

    return show


def _roles(conv: ConvPullback) -> list[Line]:
    """What each parameter of the call does here, with its value."""
    call = conv.call

    def per_axis(values: Sequence[object]) -> Math:
        return _joined([_scalar(v) for v in values])

    pads = [_joined([_scalar(lo), _scalar(hi)]) for lo, hi in call.padding]
    lines: list[Line] = [
        ["padding ((", _joined(pads, "), (", "), ("), ")): per spatial axis, lo zeros "
         "before the filled input and hi after (negative values crop)"],
        ["stride (", per_axis(call.stride), "): the window moves this far per output position"],
        ["dilation (", per_axis(call.dilation), "): the kernel's taps are this far apart"],
        ["fill (", per_axis(call.fill), "): fill - 1 zeros between neighbouring input elements "
         "(input dilation; lhs_dilation in JAX), so the input is read at a position / fill"],
    ]  # fmt: skip
    if call.flip_kernel:
        lines.append(
            ["flip_kernel: the kernel runs backwards (its index falls as the input's rises)"]
        )
    else:
        lines.append(["flip_kernel: no"])
    swapped = {
        "permute_kernel": "the kernel's two channel axes are swapped (input and output trade)",
        "permute_input": "the input's batch and channel axes are swapped",
    }
    for flag, meaning in swapped.items():
        lines.append([f"{flag}: " + (meaning if getattr(call, flag) else "no")])
    if call.groups != 1:
        # the kernel's axis of input channels per group (after permute_kernel): a unit
        # axis the call inserts when each group is one channel
        if conv.w_layout.axes[0 if call.permute_kernel else 1] is None:
            lines.append(["groups ", _scalar(call.groups), ": every channel has its own kernel"])
        else:
            lines.append(
                ["groups ", _scalar(call.groups), ": the input's channels form ",
                 _scalar(call.groups), " groups, and each output channel reads only the "
                 "channels of its own group"]
            )  # fmt: skip
    if call.batch_groups != 1:
        lines.append(
            ["batch_groups ", _scalar(call.batch_groups), ": every channel sums its own batch"]
        )
    for role, layout in (("input", conv.x_layout), ("kernel", conv.w_layout)):
        if layout.flips:
            lines.append([f"the {role} is read backwards along its axes {layout.flips}"])
    if conv.transpose is not None:
        lines.append([f"the call's output is transposed by {conv.transpose} into the pullback"])
    return lines


def conv_step(
    name: str,
    recognition: Recognition,
    indices: Sequence[sympy.Symbol],
    definitions: dict[sympy.Symbol, sympy.Expr] | None = None,
    transposition: Sequence[Line] = (),
    rest: Sequence[ir.Node] = (),
) -> Step:
    """The convolution a statement is (its generic call and the role of each parameter).

    With ``definitions`` (the derived sizes), the padding is written in the sizes of the
    tensors given, not the output's; ``transposition`` says how the call transposes the
    forward's, where it does; ``rest`` are the statement's terms the call leaves out (a
    bias), added after it.
    """
    from .conv.recognise import NotConvolution
    from .emit.conv import in_given_sizes

    if isinstance(recognition, NotConvolution):
        return _step(f"{name}: not a convolution", (), [[f"{recognition.reason}"]], None)
    if definitions:
        padding = tuple(
            (in_given_sizes(lo, definitions), in_given_sizes(hi, definitions))
            for lo, hi in recognition.call.padding
        )
        recognition = replace(recognition, call=replace(recognition.call, padding=padding))
    call = recognition.call
    positions = kernel_positions(call.rank)
    at = _joined([_symbol_of(k) for k in positions])
    where = _joined([_over(e) for e in input_reads(recognition, indices)])
    if call.rank > 1:
        at, where = _parenthesised(at), _parenthesised(where)
    lines: list[Line] = [
        [_tensor(name), _equals, _call(call)],
        *_added(rest),
        ["x = ", _tensor(call.x), ", the input of the call; w = ", _tensor(call.w), ", the kernel"],
        ["at kernel position ", at, ", ", _tensor(call.x), " is read at ", where],
        *transposition,
        *_roles(recognition),
    ]  # fmt: skip
    kind = "a convolution, the forward's transposed" if transposition else "a convolution"
    return _step(f"{name}: {kind}", [*indices, *positions], lines)


def transposition(derivation: Derivation, tensor: str, forward: ConvPullback | None) -> list[Line]:
    """How the pullback into the forward's input transposes the forward's convolution.

    It is the transposed convolution where it runs the forward's kernel reversed over
    the cotangent with the forward's stride as its fill; each further role swap (its
    dilation the forward's, its stride the forward's fill) is said where it holds.
    """
    from .conv.recognise import ConvPullback

    pullback = convolutions(derivation).get(tensor)
    if forward is None or not isinstance(pullback, ConvPullback) or tensor != forward.call.x:
        return []
    before, after = forward.call, pullback.call
    seed = derivation.backward.seeds[0]

    def same(left: Sequence[object], right: Sequence[object]) -> bool:
        return all(
            sympy.expand(sympy.sympify(a) - b) == 0 for a, b in zip(left, right, strict=True)
        )

    if not (
        after.x == seed
        and after.w == before.w
        and after.flip_kernel != before.flip_kernel
        and same(after.fill, before.stride)
    ):
        return []

    def values(entries: Sequence[object]) -> Math:
        return _joined([_scalar(e) for e in entries])

    name = derivation.pullbacks[tensor].name
    statement = derivation.pullbacks[tensor].statement
    kernel_reads = [n for n in ir.walk(statement.rhs) if isinstance(n, ir.Access)]
    kernel_read = next(n for n in kernel_reads if n.tensor == before.w)

    def read(printer: NotationPrinter) -> str:
        return type(printer)(variables_of(statement)).expr(kernel_read)

    def ones(entries: Sequence[object]) -> bool:
        return all(sympy.sympify(e) == 1 for e in entries)

    strided = not ones(before.stride)
    lines: list[Line] = [
        [f"{name} is the transposed convolution of the forward (conv_transpose in PyTorch"
         + ("; the gradient of a strided convolution" if strided else "")
         + f"): the kernel {before.w} run backwards over the cotangent {seed}"],
    ]  # fmt: skip
    if strided:
        lines.append(
            ["its fill (", values(after.fill), ") is the forward's stride (",
             values(before.stride), f"): fill - 1 zeros go between neighbouring elements of "
             f"{seed}, as the forward's outputs stand stride input positions apart"]
        )  # fmt: skip
    lines.append(
        ["its flip is the kernel's reversal: the pullback reads ", read,
         f", so {before.w} is walked backwards as the position in {seed} rises"]
    )  # fmt: skip
    if not ones(before.dilation) and same(after.dilation, before.dilation):
        lines.append(
            ["its dilation (", values(after.dilation), ") is the forward's: the taps stay as "
             "far apart"]
        )  # fmt: skip
    if not ones(before.fill) and same(after.stride, before.fill):
        lines.append(["its stride (", values(after.stride), ") is the forward's fill"])
    return lines


def _forward_conv_steps(derivation: Derivation) -> list[Step]:
    """The forward as a convolution call and as one matrix product (im2col), where it is one."""
    from .matrix import forward_convolution, im2col

    try:
        found = forward_convolution(derivation)
    except ArgumentError:
        return []
    statement = derivation.program.statements[-1]
    call = conv_step(
        statement.target,
        found.conv,
        statement.indices,
        derivation.program.definitions,
        rest=found.rest,
    )
    x, w = found.conv.call.x, found.conv.call.w
    result = [
        Step(f"The forward as a convolution of {x} with the kernel {w}", call.lines, call.latex)
    ]
    try:
        view = im2col(derivation)
    except ArgumentError as error:
        line = f"no im2col view: {error}"
        return [*result, Step("The forward as one matrix product (im2col)", (line,), _words(line))]
    lines = tuple(view.lines())
    return [*result, Step("The forward as one matrix product (im2col)", lines, view.latex())]


def _words(text: str) -> str:
    return rf"\text{{{_tex_escape(text)}}}"


def steps(derivation: Derivation) -> list[Step]:
    """The derivation as steps: the forward, then every pullback, read by read.

    >>> import einderive as ed
    >>> found = steps(ed.derive("Y[i] = X[s*i]"))
    >>> [line for step in found for line in step.lines if "solved for" in line]
    ['p = s*i is solved for i: i = p / s, an integer only where s divides p']
    """
    rewritten = _reads_step(derivation)
    if rewritten is not None:  # pieces: the forward is no single convolution call
        result = [_forward_step(derivation), rewritten, *_padding_mode_steps(derivation)]
    else:
        result = [_forward_step(derivation), *_forward_conv_steps(derivation)]
    derived = {s.target: s for s in derivation.backward.statements}
    forward = _forward_convolution(derivation)
    for work in pullback_work(derivation):
        for read in work.reads:
            result += _read_steps(work, read)
        result.append(_pullback_step(work, derived[work.name]))
        if work.tensor in derivation.pullbacks:
            recognition = convolutions(derivation)[work.tensor]
            step = conv_step(
                work.name,
                recognition,
                work.statement.indices,
                derivation.program.definitions,
                transposition(derivation, work.tensor, forward),
            )
            result.append(Step(step.title, step.lines, step.latex, work.tensor))
    return result


def _reads_step(derivation: Derivation) -> Step | None:
    """What the wrapped, clamped, reflected, divided and padded reads and the comparisons
    of the forward mean, in pieces, and what their pullbacks do (None if there are none)."""
    from .parse import SAccess, SCompare, parse, syntax_nodes

    lines: list[str] = []
    for statement in derivation.program.statements:
        if statement.written is None:
            continue
        (written,) = parse(statement.written)
        for node in syntax_nodes(written.rhs):
            if isinstance(node, SAccess):
                for index in node.indices:
                    for part in syntax_nodes(index):
                        said = _read_in_words(node.name, part, statement.written)
                        if said is not None and said not in lines:
                            lines.append(said)
                if node.pad is not None:
                    value = statement.written[node.pad.value.span[0] : node.pad.value.span[1]]
                    lines.append(
                        f"{node.name} reads {value} outside its shape (pad={value}): a constant "
                        "there, which sends nothing back; inside, the read and its pullback "
                        "are the plain ones"
                    )
            elif isinstance(node, SCompare):
                text = statement.written[node.span[0] : node.span[1]]
                lines.append(
                    f"{text} is a condition: the forward's sum, and each pullback's, runs only "
                    "where it holds (a bound or a guard, not a mask)"
                )
    if not lines:
        return None
    lines.append(
        "each piece is an affine read under affine conditions, differentiated as any read; "
        "the pullbacks below are sums over the pieces, each with its own exact bounds"
    )
    return _step("The reads, in pieces", [], [[line] for line in lines])


def _padding_mode_steps(derivation: Derivation) -> list[Step]:
    """The forward as PyTorch's convolution with a padding_mode, where it is one: the lines
    of the text output and ``--emit conv``, code that runs as printed."""
    from .emit.padding_mode import padding_mode_data, padding_mode_lines

    lines = padding_mode_lines(derivation, with_reason=False)
    if not lines:
        return []
    data = padding_mode_data(derivation)
    assert data is not None
    title = f"The forward as a convolution with padding_mode={data['mode']!r}"
    return [_step(title, [], [[line] for line in lines])]


def _read_in_words(tensor: str, node: object, text: str) -> str | None:
    """One index function of a read of ``tensor``, and what its pullback does."""
    from .parse import SBinary, SCall

    if isinstance(node, SBinary) and node.op == "//":
        e, n = (text[part.span[0] : part.span[1]] for part in (node.left, node.right))
        return (
            f"{tensor}[... {e} // {n} ...] reads {tensor}[k] for the one k with "
            f"{n}*k <= {e} <= {n}*k + {n} - 1: the pullback into {tensor}[k] sums the "
            f"cotangent over every position whose {e} falls in that range"
        )
    if not isinstance(node, SCall) or node.name not in ("mod", "clamp", "reflect"):
        return None
    e, *rest = (text[part.span[0] : part.span[1]] for part in node.arguments)
    if node.name == "mod":
        (n,) = rest
        return (
            f"{tensor}[... mod({e}, {n}) ...] is a wrapped (circular) read of {tensor}[{e} - "
            f"{n}*k] for the one k with {n}*k <= {e} <= {n}*k + {n} - 1: the pullback folds "
            f"the cotangent around, {tensor}[p] collecting that of every position whose {e} "
            f"is p + {n}*k, a sum over k"
        )
    if node.name == "clamp":
        lo, hi = rest
        return (
            f"{tensor}[... clamp({e}, {lo}, {hi}) ...] is a clamped (replicate) read, three "
            f"pieces: {tensor}[{lo}] where {e} < {lo}, {tensor}[{e}] where {lo} <= {e} <= "
            f"{hi}, {tensor}[{hi}] where {e} > {hi}: the pullback sends the cotangent of every "
            f"position read below {lo} to the edge {tensor}[{lo}] and of every one above {hi} "
            f"to the edge {tensor}[{hi}], and the rest back as a plain read does"
        )
    (n,) = rest
    return (
        f"{tensor}[... reflect({e}, {n}) ...] is a reflected read (PyTorch's reflect), three "
        f"pieces: {tensor}[-({e})] where {e} < 0, {tensor}[{e}] where 0 <= {e} <= {n} - 1, "
        f"{tensor}[2*{n} - 2 - ({e})] where {e} > {n} - 1: the pullback mirrors the cotangent "
        f"of the positions read before the start onto {tensor}[1], {tensor}[2], ... and of "
        f"those past the end onto {tensor}[{n} - 2], {tensor}[{n} - 3], ..., and adds it to "
        "theirs"
    )


def _forward_convolution(derivation: Derivation) -> ConvPullback | None:
    from .errors import ArgumentError
    from .matrix import forward_convolution

    try:
        return forward_convolution(derivation).conv
    except ArgumentError:
        return None


@dataclass(frozen=True)
class Explanation:
    """The steps of a derivation: ``str()`` numbers them as text, ``latex()`` in LaTeX."""

    steps: tuple[Step, ...]

    def text(self) -> str:
        return "\n\n".join(step.text(k) for k, step in enumerate(self.steps, 1))

    def latex(self) -> str:
        """One ``array``, a bold numbered title above each step (KaTeX and MathJax render it)."""
        rows = []
        for k, step in enumerate(self.steps, 1):
            rows += [_title(f"{k}. {step.title}"), step.latex]
        return r"\begin{array}{l}" + r" \\ ".join(rows) + r"\end{array}"

    def __str__(self) -> str:
        return self.text()

    def _repr_latex_(self) -> str:
        return f"$$\\displaystyle {self.latex()}$$"


def explain(derivation: Derivation) -> Explanation:
    """The steps of ``derivation``, to print in a terminal or display in a notebook."""
    return Explanation(tuple(steps(derivation)))


def explain_text(derivation: Derivation) -> str:
    """The steps as numbered plain text, for a terminal."""
    return explain(derivation).text()


def explain_latex(derivation: Derivation) -> str:
    """The steps in LaTeX (see ``Explanation.latex``)."""
    return explain(derivation).latex()
