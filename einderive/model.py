"""The records the stages pass on: the analysed program, the backward, the derivation.

Plain values: nothing here prints, explains or runs them (those are functions of
a record, in ``emit``, ``show`` and ``run``; the public objects in ``api`` offer
them as methods).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

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

    @property
    def output(self) -> str:
        return self.statements[-1].target

    @property
    def symbols(self) -> tuple[sympy.Symbol, ...]:
        """The symbols a numeric evaluation must be given: parameters, then sizes."""
        return self.params + self.sizes


@dataclass(frozen=True)
class Backward:
    """The backward program: cotangent statements in evaluation order."""

    statements: tuple[ir.Statement, ...]
    cotangents: dict[str, str]  # tensor name -> its cotangent's name
    seeds: tuple[str, ...]  # the cotangents given from outside (the output's)


@dataclass(frozen=True)
class Pullback:
    """The pullback (vector-Jacobian product) into one tensor, in gather form."""

    tensor: str
    statement: ir.Statement
    cotangent: str

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
            Pullback(tensors[s.target], s, self.backward.seeds[0])
            for s in self.backward.statements
            if s.target not in inputs
        )
