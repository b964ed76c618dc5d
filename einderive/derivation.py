"""The result of ``derive``: the analysed forward and its pullbacks, printable."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import sympy

from . import ir
from .analysis import Program
from .derive import Backward
from .emit.printer import NotationPrinter
from .emit.text import statement_text, variables_of
from .errors import ArgumentError

if TYPE_CHECKING:
    from .conv.recognise import Recognition


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

    def notation(self) -> str:
        """The pullback in the notation, on one line (reads out of range are zero)."""
        return statement_text(self.statement, with_domain=False)

    def latex(self) -> str:
        from .emit.latex import statement_latex

        return statement_latex(self.statement)

    def _repr_latex_(self) -> str:
        return f"$\\displaystyle {self.latex()}$"

    def __str__(self) -> str:
        return statement_text(self.statement)

    def __repr__(self) -> str:
        return f"Pullback({self.notation()!r})"


@dataclass(frozen=True)
class Derivation:
    """A forward program and the pullbacks of its inputs."""

    program: Program
    backward: Backward
    pullbacks: dict[str, Pullback] = field(default_factory=dict)

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

    @cached_property
    def convolutions(self) -> dict[str, Recognition]:
        """Each pullback recognised as a generic convolution call, or why it is not one."""
        from .conv.recognise import recognise

        kernels = [t for t in self.program.shapes if t != self.program.output]
        shapes = self.shapes
        return {
            name: recognise(pullback.statement, shapes, prefer_kernel=kernels)
            for name, pullback in self.pullbacks.items()
        }

    @property
    def intermediates(self) -> tuple[Pullback, ...]:
        """The pullbacks into intermediate tensors (their cotangents), in evaluation order.

        >>> from einderive import derive
        >>> derive("H[i] = W[m]*X[i+m]; Y[i] = tanh(H[i])").intermediates
        (Pullback('dH[p] = dY[p] * (1 - tanh(H[p])**2)'),)
        """
        inputs = {p.name for p in self.pullbacks.values()}
        tensors = {name: tensor for tensor, name in self.backward.cotangents.items()}
        return tuple(
            Pullback(tensors[s.target], s, self.backward.seeds[0])
            for s in self.backward.statements
            if s.target not in inputs
        )

    def forward_lines(self) -> list[str]:
        program = self.program
        lines = []
        for statement in program.statements:
            first, *domain = statement_text(statement).splitlines()
            lines.append(first)
            printer = NotationPrinter(variables_of(statement))
            free = ", ".join(printer.symbol(v) for v in statement.indices) or "none"
            summed = [
                printer.symbol(v)
                for node in ir.walk(statement.rhs)
                if isinstance(node, ir.Reduce)
                for v in node.variables
            ]
            lines.append(f"    free: {free}; summed: {', '.join(summed) or 'none'}")
            lines += domain
        return lines

    def __str__(self) -> str:
        program = self.program
        printer = NotationPrinter()
        lines = ["forward:"]
        lines += ["  " + line for line in self.forward_lines()]
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
        seed = self.backward.seeds[0]
        lines.append(f"pullbacks ({seed} is the cotangent of {program.output}):")
        for statement in self.backward.statements:
            for line in statement_text(statement).splitlines():
                lines.append("  " + line)
        return "\n".join(lines)

    def source(self, kind: str = "loops") -> str:
        """Standalone Python source of the forward and every pullback.

        ``kind`` is ``"loops"`` (NumPy loops with the exact bounds), ``"numpy"``
        (vectorized NumPy), ``"jax"`` or ``"torch"`` (the convolution calls, einsum
        elsewhere).
        """
        if kind == "loops":
            from .emit.loops import loops_source

            return loops_source(self)
        if kind in ("numpy", "jax", "torch"):
            from .emit import vectorized

            return str(getattr(vectorized, f"{kind}_source")(self))
        raise ArgumentError(
            f"unknown source kind {kind!r}; choose 'loops', 'numpy', 'jax' or 'torch'"
        )

    def steps(self) -> list:
        """The derivation as numbered steps (see ``einderive.explain``)."""
        from .explain import steps

        return steps(self)

    def explain(self) -> object:
        """The steps, printable as text (``.text()``) and LaTeX (``.latex()``)."""
        from .explain import explain

        return explain(self)

    def jacobian(self, wrt: str, **options: Any) -> object:
        """The Jacobian of the output in ``wrt`` over the flattened tensors (numeric sizes)."""
        from .matrix import jacobian

        return jacobian(self, wrt, **options)

    def im2col(self) -> object:
        """The im2col view of a convolution: the unfolded input and the reshaped kernel."""
        from .matrix import im2col

        return im2col(self)

    def latex(self) -> str:
        from .emit.latex import derivation_latex

        return derivation_latex(self)

    def _repr_latex_(self) -> str:
        return f"$\\displaystyle {self.latex()}$"

    def __repr__(self) -> str:
        names = ", ".join(p.name for p in self.pullbacks.values())
        return f"Derivation({self.program.text!r} -> {names})"
