"""The records the stages pass on: the analysed program, the backward, the derivation.

Plain values: nothing here prints, explains or runs them (those are functions of
a record, in ``emit``, ``show`` and ``run``; the public objects in ``api`` offer
them as methods).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import sympy

from . import ir


@dataclass(frozen=True)
class Program:
    """An analysed program: gather-form statements over tensors of known shape."""

    text: str
    statements: tuple[ir.Statement, ...]
    shapes: dict[str, tuple[sympy.Expr, ...]]
    inputs: tuple[str, ...]
    params: tuple[sympy.Symbol, ...]
    sizes: tuple[sympy.Symbol, ...]
    values: dict[str, int | float] = field(default_factory=dict)
    extents: dict[sympy.Symbol, sympy.Expr] = field(default_factory=dict)
    definitions: dict[sympy.Symbol, sympy.Expr] = field(default_factory=dict)
    # the inputs read inside brackets (``tok`` in ``E[tok[b], d]``): integer arrays, no gradient
    index_arrays: tuple[str, ...] = ()

    @property
    def differentiable(self) -> tuple[str, ...]:
        """The inputs that have a pullback: all but the index arrays."""
        return tuple(name for name in self.inputs if name not in self.index_arrays)

    @property
    def output(self) -> str:
        return self.statements[-1].target

    @property
    def symbols(self) -> tuple[sympy.Symbol, ...]:
        """The symbols a numeric evaluation must be given: parameters, then sizes."""
        return self.params + self.sizes


@dataclass(frozen=True)
class ReadTrace:
    """One read ``derive`` differentiated, and what eliminating its delta made of it.

    In the names ``derive`` used while substituting (its bound variables renamed
    apart, ``m1`` for the forward's ``m``), before the pullback's bound indices were
    given back their plain names.
    """

    statement: ir.Statement  # the forward statement that holds the read
    cotangent: str  # the cotangent of that statement's target: the seed's first factor
    access: ir.Access  # the read T[w(v)]
    seed: ir.Node  # what the read is sent: the cotangent times d rhs / d(this read)
    scope: tuple[sympy.Symbol, ...]  # the variables bound around the read, in pivot order
    where: tuple[ir.Constraint, ...]  # their domain (the output's box, the sums' ranges)
    # what derive added to the domain: the seed's factor reads kept inside their tensors,
    # where the seed holds 1/x or log(x) (outside, a read is zero and the term inf * 0)
    in_range: tuple[ir.Constraint, ...]
    # each index the delta removed, in the order ``solve.gather`` solved for it: the
    # variable, its solution then (later ones not yet put in), the divisibility condition
    solved: tuple[tuple[sympy.Symbol, sympy.Expr, ir.Constraint | None], ...]
    term: ir.Node  # the read's term of the pullback (ZERO: it never contributes)


@dataclass(frozen=True)
class PullbackTrace:
    """How ``derive`` built one cotangent statement: the reads whose terms it added up."""

    tensor: str  # the input or intermediate whose cotangent this is
    name: str  # the cotangent's name (the statement's target)
    targets: tuple[sympy.Symbol, ...]  # the statement's indices
    extents: dict[sympy.Symbol, sympy.Expr]  # each target's extent: the tensor's shape
    reads: tuple[ReadTrace, ...]


@dataclass(frozen=True)
class Backward:
    """The backward program: cotangent statements in evaluation order."""

    statements: tuple[ir.Statement, ...]
    cotangents: dict[str, str]  # tensor name -> its cotangent's name
    seeds: tuple[str, ...]  # the cotangents given from outside (the output's)
    # how each statement was derived, in the same order (what ``explain`` shows); empty
    # where the statements were not derived but made from others (numbers put in)
    trace: tuple[PullbackTrace, ...] = field(default=(), compare=False, repr=False)


@dataclass(frozen=True)
class Pullback:
    """The pullback (vector-Jacobian product) into one tensor, in gather form."""

    tensor: str
    statement: ir.Statement
    cotangent: str
    # the shapes of the tensors the statement reads (its derivation's): its printed line
    # leaves out a bound that a read's axis implies, and says one that is narrower
    shapes: Mapping[str, tuple[sympy.Expr, ...]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @property
    def name(self) -> str:
        return self.statement.target

    @property
    def indices(self) -> tuple[sympy.Symbol, ...]:
        return self.statement.indices

    @property
    def terms(self) -> tuple[ir.Node, ...]:
        rhs = self.statement.rhs
        return rhs.terms if isinstance(rhs, ir.Add) else (rhs,)


@dataclass(frozen=True)
class Derivation:
    """A forward program and the pullbacks of its inputs."""

    program: Program
    backward: Backward
    pullbacks: Mapping[str, Pullback] = field(default_factory=dict)
    # what later stages compute from the record and keep (recognitions, say): not part of
    # its value, so it is neither compared nor copied by dataclasses.replace
    memo: dict[str, object] = field(default_factory=dict, init=False, compare=False, repr=False)

    @property
    def text(self) -> str:
        return self.program.text

    @property
    def shapes(self) -> dict[str, tuple[sympy.Expr, ...]]:
        """The shape of every tensor: forward ones, and each cotangent (its tensor's shape)."""
        shapes = dict(self.program.shapes)
        for tensor, name in self.backward.cotangents.items():
            shapes[name] = self.program.shapes[tensor]
        shapes[self.backward.seeds[0]] = self.program.shapes[self.program.output]
        return shapes

    @property
    def kernels(self) -> list[str]:
        """The tensors recognition may take for a convolution's kernel: all but the output."""
        return [t for t in self.program.shapes if t != self.program.output]

    @property
    def intermediates(self) -> tuple[Pullback, ...]:
        """The pullbacks into intermediate tensors (their cotangents), in evaluation order."""
        inputs = {p.name for p in self.pullbacks.values()}
        tensors = {name: tensor for tensor, name in self.backward.cotangents.items()}
        return tuple(
            Pullback(tensors[s.target], s, self.backward.seeds[0], self.shapes)
            for s in self.backward.statements
            if s.target not in inputs
        )


def substitute(program: Program, mapping: Mapping[sympy.Symbol, sympy.Expr]) -> Program:
    """The program with numbers (or expressions) in place of parameters and sizes."""
    statements = tuple(replace(s, rhs=ir.subs(s.rhs, mapping)) for s in program.statements)
    shapes = {k: tuple(e.xreplace(mapping) for e in v) for k, v in program.shapes.items()}
    definitions = {k: v.xreplace(mapping) for k, v in program.definitions.items()}
    settled = {k: v for k, v in definitions.items() if v.is_number}
    if settled:
        # a derived extent that became a number is replaced by it everywhere
        return substitute(
            replace(
                program, definitions={k: v for k, v in definitions.items() if k not in settled}
            ),
            {**mapping, **settled},
        )
    extents = {k: v.xreplace(mapping) for k, v in program.extents.items()}
    return Program(
        text=program.text,
        statements=statements,
        shapes=shapes,
        inputs=program.inputs,
        params=tuple(p for p in program.params if p not in mapping),
        sizes=tuple(s for s in program.sizes if s not in mapping),
        values=program.values,
        extents=extents,
        definitions=definitions,
        index_arrays=program.index_arrays,
    )


def index_positions(program: Program) -> dict[str, list[tuple[sympy.Expr, str]]]:
    """Each index array's uses as a whole position, with the size of that axis: ``tok`` in
    ``E[tok[b], d]`` -> ``[(N_E0, "axis 0 of 'E'")]``; a write ``Y[idx[i], d] = ...``
    counts as a position of ``Y``. A value of the array is inside these axes or it reads
    (writes) nothing."""
    found: dict[str, list[tuple[sympy.Expr, str]]] = {}
    for statement in program.statements:
        target_shape = program.shapes[statement.target]
        for node in ir.walk(statement.rhs):
            if isinstance(node, ir.Access) and node.tensor in program.shapes:
                shape = program.shapes[node.tensor]
                for axis, index in enumerate(node.indices):
                    if isinstance(index, ir.IndexRead):
                        where = f"axis {axis} of {node.tensor!r}"
                        found.setdefault(index.array, []).append((shape[axis], where))
            scattered = ir.scatter(node, statement.indices)
            if scattered is not None:
                for var, write in scattered.writes.items():
                    if isinstance(write, ir.IndexRead):
                        axis = statement.indices.index(var)
                        where = f"axis {axis} of {statement.target!r}"
                        found.setdefault(write.array, []).append((target_shape[axis], where))
    return found
