"""Pullbacks by reverse accumulation over the IR, then scatter -> gather per occurrence.

For ``Out[o] = rhs`` every read ``T[A v + b]`` of a tensor, somewhere inside
the right-hand side with the variables ``v`` in scope, contributes

    dT[u] += sum_v dOut[o] * (d rhs / d T[A v + b]) * [u = A v + b]

(the product rule per occurrence, so ``X[i]*X[i+1]`` gives two terms), and
``solve.gather`` removes the delta. Programs are differentiated statement by
statement from the last: an intermediate's cotangent is the sum of what the
statements that read it send back, and is itself a statement. What is done with
each read (its seed, the indices solved for, the term left) is kept as it goes,
in ``Backward.trace``: ``explain`` prints it.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import sympy

from . import affine, ir
from .errors import ArgumentError
from .functions import partials
from .ir import fresh
from .model import Backward, Derivation, Program, Pullback, PullbackTrace, ReadTrace
from .solve import gather

_rename_counter = itertools.count()


@dataclass(frozen=True)
class Contribution:
    """One occurrence's share of a pullback, before the delta is eliminated."""

    access: ir.Access
    seed: ir.Node
    scope: tuple[sympy.Symbol, ...]
    where: tuple[ir.Constraint, ...]
    statement: ir.Statement | None = None  # the forward statement that holds the read


def _neg(node: ir.Node) -> ir.Node:
    return ir.make_mul([ir.Const(sympy.Integer(-1)), node])


def _may_be_infinite(node: ir.Node) -> bool:
    """Whether ``node`` can be infinite where a tensor read in it is zero (``1/x``, ``log``)."""
    return any(
        (isinstance(n, ir.Pow) and n.exponent.is_negative)
        or (isinstance(n, ir.Call) and n.func == "log")
        for n in ir.walk(node)
    )


def factor_reads_in_range(
    product: ir.Node, shapes: Mapping[str, Sequence[sympy.Expr]]
) -> tuple[ir.Constraint, ...]:
    """Where the reads that multiply a derivative term lie inside their tensors.

    Outside, such a read is the constant zero and so is the term; evaluating it there
    would give ``inf * 0`` when the term also holds ``f'`` of that zero (``1/sqrt(0)``).
    Only terms that can be infinite are guarded; the guard never changes a finite value.
    """
    if not _may_be_infinite(product):
        return ()
    factors = product.factors if isinstance(product, ir.Mul) else (product,)
    constraints: list[ir.Constraint] = []
    for factor in factors:
        if isinstance(factor, ir.Access) and factor.tensor in shapes:
            for index, size in zip(factor.indices, shapes[factor.tensor], strict=True):
                constraints += [
                    ir.Constraint("ge", index),
                    ir.Constraint("ge", ir.expand(size - 1 - index)),
                ]
    return tuple(c for c in constraints if not affine.nonnegative(c.expr))


def rename_bound(node: ir.Node, taken: set[str]) -> ir.Node:
    """Give every variable bound inside ``node`` a fresh name, so substitution cannot capture."""
    if not any(isinstance(n, ir.Reduce | ir.IsExtremum) for n in ir.walk(node)):
        return node  # nothing bound: the tree as it is (a product's seed has n factors)
    return _rename_bound(node, taken)


def _rename_bound(node: ir.Node, taken: set[str]) -> ir.Node:
    if isinstance(node, ir.Access | ir.Const):
        return node
    if isinstance(node, ir.Reduce | ir.IsExtremum):
        mapping = {v: fresh(_stem(v), taken) for v in node.variables}
        return replace(
            node,
            variables=tuple(mapping[v] for v in node.variables),
            body=_rename_bound(ir.subs(node.body, mapping), taken),
            where=tuple(c.subs(mapping) for c in node.where),
        )
    return ir.map_children(node, lambda child: _rename_bound(child, taken))


def _stem(var: sympy.Symbol) -> str:
    """The name a renamed variable is renamed from: ``m2`` -> ``m`` (then ``m3``, not ``m21``)."""
    return var.name.rstrip("0123456789") or var.name


def backprop(
    node: ir.Node,
    seed: ir.Node,
    scope: tuple[sympy.Symbol, ...],
    where: tuple[ir.Constraint, ...],
    wrt: set[str],
    taken: set[str],
    out: list[Contribution],
) -> None:
    """Send ``seed`` (the cotangent of ``node``) down to every read of a tensor in ``wrt``."""
    if seed == ir.ZERO:
        return
    if isinstance(node, ir.Access):
        if node.tensor in wrt:
            out.append(Contribution(node, seed, scope, where))
    elif isinstance(node, ir.Add):
        for term in node.terms:
            backprop(term, seed, scope, where, wrt, taken, out)
    elif isinstance(node, ir.Mul):
        for k, factor in enumerate(node.factors):
            others = [f for j, f in enumerate(node.factors) if j != k]
            backprop(factor, ir.make_mul([seed, *others]), scope, where, wrt, taken, out)
    elif isinstance(node, ir.Pow):
        local = ir.make_mul([ir.Const(node.exponent), ir.make_pow(node.base, node.exponent - 1)])
        backprop(node.base, ir.make_mul([seed, local]), scope, where, wrt, taken, out)
    elif isinstance(node, ir.Call):
        for argument, local in zip(node.args, partials(node), strict=True):
            backprop(argument, ir.make_mul([seed, local]), scope, where, wrt, taken, out)
    elif isinstance(node, ir.Reduce):
        # the reduced variables join the scope under fresh names (the seed may mention the old)
        mapping = {v: fresh(_stem(v), taken) for v in node.variables}
        body = ir.subs(node.body, mapping)
        inner_where = tuple(c.subs(mapping) for c in node.where)
        variables = tuple(mapping[v] for v in node.variables)
        if node.op == "prod":
            # each factor's cotangent is the product of all the others
            rest = rename_bound(exclusive_product(node, variables), taken)
            seed = ir.make_mul([seed, rest])
        elif node.op != "sum":
            # max_/min_: the cotangent goes to the first extremum only
            indicator = rename_bound(
                ir.IsExtremum(node.op, node.variables, node.body, node.where, variables), taken
            )
            seed = ir.make_mul([seed, indicator])
        backprop(body, seed, scope + variables, where + inner_where, wrt, taken, out)
    # constants and IsExtremum (piecewise constant) send nothing back


def exclusive_product(node: ir.Reduce, at: tuple[sympy.Expr, ...]) -> ir.Node:
    """The product of ``node`` (a ``prod_``) over every point of its domain but ``at``.

    The points before ``at`` in row-major order, and those after, as products with
    affine bounds and no division, so that it is exact where a factor is zero:
    ``prod_{k : k <= j - 1}(f[k]) * prod_{k : k >= j + 1}(f[k])`` for one variable.
    With several, the first ``l`` variables equal ``at``'s and the next is before
    (after) it, for each ``l``.
    """
    pieces: list[ir.Node] = []
    variables = node.variables
    for level, var in enumerate(variables):
        fixed = dict(zip(variables[:level], at[:level], strict=True))
        body = ir.subs(node.body, fixed)
        # conditions on the fixed variables alone hold at ``at``, a point of the domain
        remaining = set(variables[level:])
        where = tuple(c.subs(fixed) for c in node.where if c.free_symbols & remaining)
        for before in (True, False):
            # var <= at - 1, or var >= at + 1
            bound = at[level] - 1 - var if before else var - at[level] - 1
            edge = ir.normalise(ir.Constraint("ge", ir.expand(bound)))
            pieces.append(ir.Reduce("prod", variables[level:], body, (*where, edge)))
    return ir.make_mul(pieces)


def cotangent_name(name: str, taken: set[str]) -> str:
    candidate = f"d{name}"
    while candidate in taken:
        candidate = f"d{candidate}"
    return candidate


def axis_names(rank: int) -> list[str]:
    letters = ["p", "q", "r", "t", "u", "v", "w", "z"]
    return letters[:rank] if rank <= len(letters) else [f"p{k}" for k in range(rank)]


def pullbacks(program: Program, wrt: Iterable[str] | None = None) -> Backward:
    """Reverse accumulation through every statement of ``program``."""
    # no new index may be named like a tensor, a parameter or a size (derived ones too)
    taken: set[str] = (
        set(program.shapes)
        | {s.name for s in program.symbols}
        | {s.name for s in program.definitions}
    )
    for statement in program.statements:
        for node in ir.walk(statement.rhs):
            if isinstance(node, ir.Reduce | ir.IsExtremum):
                taken |= {v.name for v in node.variables}
        taken |= {v.name for v in statement.indices}
    # later tensors first, so that a backward program's seed dX keeps the name ddX
    names: dict[str, str] = {}
    claimed = taken | set(program.shapes)
    for tensor in reversed(list(program.shapes)):
        names[tensor] = cotangent_name(tensor, claimed)
        claimed.add(names[tensor])
    taken |= set(names.values())
    # every tensor's shape (cotangents too), and the names a bound variable must not take
    shapes = dict(program.shapes)
    shapes.update({names[t]: program.shapes[t] for t in names if t in program.shapes})
    reserved = (
        set(shapes)
        | {s.name for s in program.symbols}
        | {s.name for s in program.definitions}
        | set(program.values)
    )
    written = {s.target for s in program.statements}
    wanted = set(program.differentiable if wrt is None else wrt)
    contributions: dict[str, list[Contribution]] = defaultdict(list)
    statements: list[ir.Statement] = []
    traces: list[PullbackTrace] = []  # how each statement was derived, for ``explain``
    produced: set[str] = set()
    output = program.output
    for statement in reversed(program.statements):
        target = statement.target
        if target != output:
            if not contributions[target]:
                continue
            statements.append(
                _collect(
                    program, target, names, contributions[target], taken, shapes, reserved, traces
                )
            )
            produced.add(names[target])
        seed = ir.Access(names[target], statement.indices)
        where = tuple(
            c
            for v, extent in zip(statement.indices, program.shapes[target], strict=True)
            for c in ir.box(v, extent)
        )
        prefer = _summed_first(statement)
        found: list[Contribution] = []
        backprop(statement.rhs, seed, statement.indices, where, written | wanted, taken, found)
        for contribution in found:
            contributions[contribution.access.tensor].append(
                replace(contribution, scope=_order(contribution.scope, prefer), statement=statement)
            )
    for name in program.differentiable:
        if name in wanted:
            statements.append(
                _collect(program, name, names, contributions[name], taken, shapes, reserved, traces)
            )
    return Backward(
        statements=tuple(statements),
        cotangents={k: v for k, v in names.items() if k in wanted or v in produced},
        seeds=(names[output],),
        trace=tuple(traces),
    )


def _summed_first(statement: ir.Statement) -> tuple[sympy.Symbol, ...]:
    summed: list[sympy.Symbol] = []
    for node in ir.walk(statement.rhs):
        if isinstance(node, ir.Reduce):
            summed.extend(node.variables)
    return tuple(summed) + statement.indices


def _order(scope: tuple[sympy.Symbol, ...], prefer: tuple[sympy.Symbol, ...]) -> tuple:
    """The scope with the forward's summed variables (and their renamings) first."""
    names = [v.name for v in prefer]

    def key(var: sympy.Symbol) -> int:
        base = var.name.rstrip("0123456789")
        if var.name in names:
            return names.index(var.name)
        if base in names:
            return names.index(base)
        return len(names)

    return tuple(sorted(scope, key=key))


class _LocalNames(set[str]):
    """The names ``shared`` holds and those added here, without copying ``shared``
    (a pullback's own names, taken once per pullback of a program of many tensors)."""

    def __init__(self, shared: set[str]) -> None:
        super().__init__()
        self.shared = shared

    def __contains__(self, name: object) -> bool:
        return super().__contains__(name) or name in self.shared


def _collect(
    program: Program,
    tensor: str,
    names: dict[str, str],
    contributions: list[Contribution],
    taken: set[str],
    shapes: Mapping[str, Sequence[sympy.Expr]],
    reserved: set[str],
    traces: list[PullbackTrace],
) -> ir.Statement:
    """``dT[u] = sum of every contribution``, each delta eliminated into a gather.

    What it does with each read is kept in ``traces`` (for ``explain``), as it goes.
    """
    rank = len(program.shapes[tensor])
    local = _LocalNames(taken)  # each pullback names its own axes p, q, ...
    targets = tuple(fresh(name, local) for name in axis_names(rank))
    terms: list[ir.Node] = []
    reads: list[ReadTrace] = []
    boxes = dict(zip(targets, program.shapes[tensor], strict=True))
    for contribution in contributions:
        seed = rename_bound(contribution.seed, taken)
        solved: list[tuple[sympy.Symbol, sympy.Expr, ir.Constraint | None]] = []
        in_range = factor_reads_in_range(seed, shapes)
        term = gather(
            targets,
            contribution.access.indices,
            seed,
            contribution.scope,
            contribution.where + in_range,
            prefer=contribution.scope,
            trace=solved,
        )
        term = _drop_read_guards(_drop_box_guards(term, boxes), shapes)
        statement = contribution.statement
        assert statement is not None  # pullbacks() sets it on every contribution
        reads.append(
            ReadTrace(
                statement,
                names[statement.target],
                contribution.access,
                seed,
                contribution.scope,
                contribution.where,
                in_range,
                tuple(solved),
                term,
            )
        )
        terms.append(_plain_names(term, reserved))
    traces.append(PullbackTrace(tensor, names[tensor], targets, boxes, tuple(reads)))
    return ir.Statement(names[tensor], targets, ir.make_add(terms))


def _plain_names(term: ir.Node, reserved: set[str]) -> ir.Node:
    """Bound variables renamed back to their stems where that clashes with nothing, nor
    with a ``reserved`` name (``sum_{k1}`` -> ``sum_{k}``); renaming was only needed while
    substituting."""
    renamed = [
        var
        for node in ir.walk(term)
        if isinstance(node, ir.Reduce | ir.IsExtremum)
        for var in node.variables
        if _stem(var) != var.name
    ]
    if not renamed:
        return term
    used = _LocalNames(reserved)
    used.update(s.name for s in _symbols(term))
    mapping: dict[sympy.Symbol, sympy.Symbol] = {}
    for var in renamed:
        stem = _stem(var)
        if stem not in used:
            mapping[var] = sympy.Symbol(stem, integer=True)
            used.add(stem)
    return _rename(term, mapping) if mapping else term


def _symbols(node: ir.Node) -> set[sympy.Symbol]:
    """Every symbol a term mentions, bound or free."""
    found: set[sympy.Symbol] = set()
    for part in ir.walk(node):
        if isinstance(part, ir.Access):
            found |= set().union(*(e.free_symbols for e in part.indices))
        elif isinstance(part, ir.Const):
            found |= part.value.free_symbols
        elif isinstance(part, ir.Reduce | ir.IsExtremum):
            found |= set(part.variables)
            for constraint in part.where:
                found |= constraint.free_symbols
            if isinstance(part, ir.IsExtremum):
                found |= set().union(*(e.free_symbols for e in part.at))
    return found


def _rename(node: ir.Node, mapping: dict[sympy.Symbol, sympy.Symbol]) -> ir.Node:
    """Rename variables, bound ones included (the new names are unused)."""
    if isinstance(node, ir.Reduce | ir.IsExtremum):
        renamed = replace(
            node,
            variables=tuple(mapping.get(v, v) for v in node.variables),
            body=_rename(node.body, mapping),
            where=tuple(c.subs(mapping) for c in node.where),
        )
        if isinstance(renamed, ir.IsExtremum):
            renamed = replace(renamed, at=tuple(e.xreplace(mapping) for e in renamed.at))
        return renamed
    if isinstance(node, ir.Access | ir.Const):
        return ir.subs(node, mapping)
    return ir.map_children(node, lambda child: _rename(child, mapping))


def _drop_read_guards(term: ir.Node, shapes: Mapping[str, Sequence[sympy.Expr]]) -> ir.Node:
    """Remove guards through index arrays that a factor's read already makes: ``0 <=
    row[k] <= N_Y - 1`` where the term is ``dY[row[k]] * ...``, zero outside anyway."""
    if not isinstance(term, ir.Reduce) or _may_be_infinite(term.body):
        return term
    factors = term.body.factors if isinstance(term.body, ir.Mul) else (term.body,)
    implied = set()
    for factor in factors:
        if isinstance(factor, ir.Access) and factor.tensor in shapes:
            for index, size in zip(factor.indices, shapes[factor.tensor], strict=True):
                if ir.index_reads(index):
                    implied.add(ir.normalise(ir.Constraint("ge", index)))
                    implied.add(ir.normalise(ir.Constraint("ge", ir.expand(size - 1 - index))))
    if not implied:
        return term
    where = tuple(c for c in term.where if ir.normalise(c) not in implied)
    if not term.variables and not where:
        return term.body
    return replace(term, where=where)


def _drop_box_guards(term: ir.Node, boxes: dict[sympy.Symbol, sympy.Expr]) -> ir.Node:
    """Remove guards on the pullback's own indices that its shape already implies."""
    from .solve import implied_by_box

    if not isinstance(term, ir.Reduce):
        return term
    summed = set(term.variables)
    where = tuple(c for c in term.where if c.free_symbols & summed or not implied_by_box(c, boxes))
    if not term.variables and not where:
        return term.body
    return replace(term, where=where)


def derivation(program: Program, wrt: Iterable[str] | None = None) -> Derivation:
    """The pullbacks of an analysed program, as the plain record."""
    if not program.differentiable:
        raise nothing_to_differentiate(program)
    if wrt is not None:
        unknown = [name for name in wrt if name not in program.inputs]
        integers = [p.name for p in program.params if p.name in unknown and p.is_integer]
        arrays = [name for name in wrt if name in program.index_arrays]
        if arrays:
            raise ArgumentError(
                f"cannot differentiate with respect to {', '.join(map(repr, arrays))}: read "
                "inside brackets, an index array holds integer positions and has no gradient"
            )
        if integers:
            raise ArgumentError(
                f"cannot differentiate with respect to {', '.join(map(repr, integers))}: "
                "used in an index, a parameter is an integer (a stride, a dilation, an "
                "offset); only one used as a value (alpha*X[i]) can be learned"
            )
        if unknown:
            raise ArgumentError(
                f"cannot differentiate with respect to {', '.join(map(repr, unknown))}: "
                f"the inputs are {', '.join(program.inputs)}"
            )
    backward = pullbacks(program, wrt)
    shapes = Derivation(program, backward).shapes
    result = {
        name: Pullback(
            name,
            next(s for s in backward.statements if s.target == backward.cotangents[name]),
            backward.seeds[0],
            shapes,
        )
        for name in program.differentiable
        if wrt is None or name in wrt
    }
    return Derivation(program, backward, result)


def nothing_to_differentiate(program: Program) -> ArgumentError:
    """The error for a program that reads no tensor, with the way to make one."""
    statement = program.statements[-1]
    named = sorted({p.name for p in program.params} | set(program.values))
    if not named:
        return ArgumentError("nothing to differentiate: the expression reads no tensor")
    names = ", ".join(named)
    first = named[0]
    return ArgumentError(
        f"nothing to differentiate: the expression reads no tensor ({names} "
        f"{'is a parameter' if len(named) == 1 else 'are parameters'}); write {first}[] "
        f"for a 0-d tensor, or differentiate with respect to it (--wrt {first}, "
        f"wrt=[{first!r}])",
        statement.span,
        program.text,
    )
