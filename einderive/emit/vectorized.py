"""Vectorized sources: the forward and every pullback as NumPy, JAX or PyTorch array code.

Each statement is computed as its plan says
(``lower/plan.py``): a contraction is one ``einsum``; a convolution is one call
(``_conv``, the package's own NumPy kernel copied into the module, or
``jax.lax.conv_general_dilated`` / ``torch.nn.functional.conv*d``); anything else is
evaluated over a dense grid of its index variables::

    # dX[p] = dY[p] * X[p + 1] + dY[p - 1] * X[p - 1]
    p = np.arange(I)
    dX = dY * _read(X, p + 1) + np.where(p >= 1, _read(dY, p - 1) * _read(X, p - 1), 0.0)

Each index variable is an ``np.arange`` along an axis of its own. A summed variable
takes a leading axis, in front of those of the variables around it, so that an array
indexed by the statement's own variables broadcasts against every grid, and a sum runs
over the leading axes. A read goes through ``_read`` (zero outside the tensor and at a
fractional index) unless it is the whole array at the statement's own indices
(``dZ = dA * (Z > 0)``); the conditions of a domain are masks; the derivative of
``max_`` compares the position with the first (row-major) ``argmax``.

The skeleton of every function (sizes unpacked from ``X.shape``, derived sizes, shape
checks, the docstring, parameters as keyword-only arguments) is the loops emitter's.
"""

from __future__ import annotations

import dataclasses
import itertools
import textwrap
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeAlias

import sympy
from sympy.codegen.ast import Assignment, Return, String, Token

from .. import affine, ir
from ..conv.calls import jax_call, torch_call
from ..conv.recognise import ConvPullback
from ..errors import EinderiveError
from ..lower.plan import Einsum, Method, Scatter, Terms, plans
from ..lower.window import narrowed
from ..solve import bound_of, quotient
from . import runtime
from .conv import operand_code, result_code
from .loops import (
    _RESERVED,
    ELEMENTWISE,
    WIDTH,
    AtLeastZero,
    Condition,
    Divides,
    IsZero,
    LoopsPrinter,
    PullbackCalls,
    PythonFunction,
    Ranked,
    TrueDivide,
    _canonical,
    _fill,
    _plus_one,
    _Source,
    _Value,
    index_value,
)
from .text import statement_text, variables_of

if TYPE_CHECKING:
    from ..model import Derivation

# ---- statements ------------------------------------------------------------------------------


class Comment(Token):
    """``# text``, wrapped to the page."""

    __slots__ = _fields = ("text",)
    _construct_text = staticmethod(String)


class Grid(Token):
    """``i = np.arange(start, stop).reshape(-1, 1)``: an index variable along its own axis.

    ``trailing`` is the number of unit axes after it (the axes of the variables around it).
    """

    __slots__ = _fields = ("var", "start", "stop", "trailing")
    _construct_trailing = staticmethod(sympy.Integer)


class ConvCall(Token):
    """``target`` computed by one convolution call: operands arranged, call, result arranged."""

    __slots__ = _fields = ("target", "output", "lhs", "rhs", "conv")
    not_in_args = ["conv"]


class PullbackCall(Token):
    """``dB = pullback_B(dY, W, X, B)``: one pullback by its function."""

    __slots__ = _fields = ("target", "function", "arguments", "keywords")
    _construct_function = staticmethod(String)
    _construct_arguments = staticmethod(lambda names: sympy.Tuple(*names))
    _construct_keywords = staticmethod(lambda names: sympy.Tuple(*names))


class FusedConv2d(Token):
    """``dX, dW`` of a 2-D convolution forward from one call that computes both."""

    __slots__ = _fields = ("grad_x", "grad_w", "seed", "conv")
    not_in_args = ["conv"]


# ---- values ----------------------------------------------------------------------------------


class Read(_Value):
    """``_read(X, i, j)``: a gather, zero outside ``X`` and at a fractional index."""


class View(_Value):
    """``dY[:, None, :]``: an array laid out along the axes of the grids it is read at."""


class IndexValues(_Value):
    """``_index(tok, b)``: an index array read over grids (NaN outside it)."""


class ScatterAdd(_Value):
    """``_scatter_add(shape, values, *positions)``: zeros with ``values`` added at the
    positions, repeated ones summed (``np.add.at``, ``index_add``, ``.at[].add``)."""


class Contraction(_Value):
    """``np.einsum("ij,jk->ik", A, B, optimize=True)``."""


class Reduction(_Value):
    """``np.sum(values, axis=(0, 1))`` (or ``max``, ``min``) over the leading axes."""


class Masked(_Value):
    """``np.where(condition, value, fill)``."""


class ArgSearch(_Value):
    """``_argmax(values, m, n)``: the row-major position of the first extremum over the grids."""


class IsFirst(_Value):
    """``((position == rank) & (condition) & ...)``: this point is the first extremum."""


class Broadcast(_Value):
    """``np.broadcast_to(value, shape)``: a value that does not vary along every axis."""


class AsFloat(_Value):
    """A boolean array as 0.0 and 1.0."""


class Constant(_Value):
    """A value that reads no tensor, where an array is needed (PyTorch needs a float64 tensor)."""


class Both(Condition):
    """``(a) & (b) & ...``: every condition holds, elementwise."""


# ---- the printers ----------------------------------------------------------------------------

Piece: TypeAlias = sympy.Basic | str


class NumpyPrinter(LoopsPrinter):
    """Vectorized NumPy: index grids, gathers, masks and reductions over the loops printer.

    ``array`` names the module of the data operations; JAX and PyTorch change it and the
    few calls that differ. Index grids and masks are NumPy in every framework.
    """

    array = "np"
    target = "numpy"
    reserved_words = LoopsPrinter.reserved_words | {"jnp", "jax", "torch"}

    # ---- statements --------------------------------------------------------------------------

    def _print_Comment(self, node: Comment) -> str:
        width = WIDTH - len(self.tab) * self._depth - 2
        lines = textwrap.wrap(
            node.text.text,
            width,
            subsequent_indent="    ",
            break_long_words=False,
            break_on_hyphens=False,
        )
        return "\n".join(f"# {line}" for line in lines)

    def _print_Grid(self, node: Grid) -> str:
        start, stop = node.start, node.stop
        bounds = [stop] if start == 0 else [start, stop]
        text = f"np.arange({', '.join(self._print(b) for b in bounds)})"
        if node.trailing:
            text += f".reshape(-1{', 1' * int(node.trailing)})"
        return f"{self._print(node.var)} = {text}"

    def _assign(self, lhs: sympy.Basic, op: str, rhs: sympy.Basic) -> str:
        head = f"{self._print(lhs)} {op} "
        return head + self._layout(rhs, len(head))

    def _print_ConvCall(self, node: ConvCall) -> str:
        conv = node.conv
        call = conv.call
        arguments: list[Piece] = [
            operand_code(self._print(sympy.Symbol(call.x)), conv.x_layout),
            operand_code(self._print(sympy.Symbol(call.w)), conv.w_layout),
            "padding=" + self._print(sympy.Tuple(*(sympy.Tuple(*pair) for pair in call.padding))),
        ]
        for name in ("stride", "dilation", "fill"):
            arguments.append(f"{name}={self._print(sympy.Tuple(*getattr(call, name)))}")
        for name in ("flip_kernel", "permute_kernel", "permute_input"):
            arguments.append(f"{name}={getattr(call, name)}")
        arguments.append(f"groups={self._print(sympy.sympify(call.groups))}")
        arguments.append(f"batch_groups={self._print(sympy.sympify(call.batch_groups))}")
        return self._arranged(node, self._call("_conv", arguments, len("out = ")))

    def _pullback_arguments(self, node: PullbackCalls | PullbackCall) -> list[str]:
        """``dY, W, X, s=s``: a pullback function's arguments, keywords by name."""
        arguments = [self._print(a) for a in node.arguments]
        return arguments + [f"{self._print(k)}={self._print(k)}" for k in node.keywords]

    def _print_PullbackCalls(self, node: PullbackCalls) -> str:
        arguments = self._pullback_arguments(node)
        calls = [self._call(f.text, arguments) for f in node.functions]
        line = "return " + ", ".join(calls) + ("," if len(calls) == 1 else "")
        if self._fits(line):
            return line
        inner = [self._call(f.text, arguments, len(self.tab)) for f in node.functions]
        return (
            "return (\n" + "".join(textwrap.indent(f"{c},", self.tab) + "\n" for c in inner) + ")"
        )

    def _print_PullbackCall(self, node: PullbackCall) -> str:
        arguments = self._pullback_arguments(node)
        head = f"{self._print(node.target)} = "
        return head + self._call(node.function.text, arguments, len(head))

    def _print_FusedConv2d(self, node: FusedConv2d) -> str:
        call = node.conv.call
        arguments: list[Piece] = [self._print(sympy.Symbol(n)) for n in (call.x, call.w)]
        arguments.insert(0, self._print(node.seed))
        arguments += [
            f"stride={self._print(sympy.Tuple(*call.stride))}",
            "padding=" + self._print(sympy.Tuple(*(sympy.Tuple(*pair) for pair in call.padding))),
            f"dilation={self._print(sympy.Tuple(*call.dilation))}",
        ]
        head = f"{self._print(node.grad_x)}, {self._print(node.grad_w)} = "
        return head + self._call("_conv2d_vjp", arguments, len(head))

    def _arranged(self, node: ConvCall, call: str) -> str:
        """``out = call`` then ``target = out[0, 0]``, or ``target = call`` if nothing is left."""
        target, output = self._print(node.target), self._print(node.output)
        result = self._result(node.conv, output)
        if result == output:
            return f"{target} = {call}"
        return f"{output} = {call}\n{target} = {result}"

    def _result(self, conv: ConvPullback, output: str) -> str:
        return result_code(conv, output)

    # ---- call-shaped values ------------------------------------------------------------------

    def _call(
        self, function: str, arguments: Sequence[Piece], indent: int | None = None, level: int = 0
    ) -> str:
        """``function(a, b)``; given ``indent``, one argument a line where it does not fit.

        ``indent`` counts the columns before the call, ``level`` those before its line.
        """
        line = f"{function}({', '.join(self._piece(a) for a in arguments)})"
        if indent is None or self._fits(" " * indent + line):
            return line
        inner_level = level + len(self.tab)
        inner = [
            a if isinstance(a, str) else self._layout(a, inner_level, inner_level)
            for a in arguments
        ]
        lines = "".join(textwrap.indent(f"{a},", self.tab) + "\n" for a in inner)
        return f"{function}(\n{lines})"

    def _piece(self, piece: Piece) -> str:
        return piece if isinstance(piece, str) else self._print(piece)

    def _layout(self, expr: sympy.Basic, indent: int = 0, level: int = 0) -> str:
        """``expr``, broken over lines where it does not fit after ``indent`` columns."""
        text = self._print(expr)
        if self._fits(" " * indent + text):
            return text
        parts = getattr(self, f"_parts_{type(expr).__name__}", None)
        if parts is not None:
            function, arguments = parts(expr)
            return self._call(function, arguments, indent, level)
        if isinstance(expr, Both):
            pieces = [f"({self._print(c)})" for c in expr.args]
            pieces = pieces[:1] + [f"& {p}" for p in pieces[1:]]
        elif isinstance(expr, sympy.Add | sympy.Mul) and len(self._pieces(expr)) > 1:
            pieces = self._pieces(expr)
        else:
            return text
        return "(\n" + textwrap.indent("\n".join(pieces), self.tab) + "\n)"

    def _parts_Read(self, expr: Read) -> tuple[str, list[Piece]]:
        return "_read", list(expr.args)

    def _print_Read(self, expr: Read) -> str:
        return self._call(*self._parts_Read(expr))

    def _print_AppliedUndef(self, expr: sympy.Expr) -> str:
        # sympy dispatches the read of an index array (ir.IndexRead) as an AppliedUndef
        assert isinstance(expr, ir.IndexRead)
        return self._print(IndexValues(sympy.Symbol(expr.array), *expr.args))

    def _print_View(self, expr: View) -> str:
        tensor, subscript = expr.args
        if all(part == ":" for part in subscript.text.split(", ")):
            return self._print(tensor)
        return f"{self._print(tensor)}[{subscript.text}]"

    def _parts_IndexValues(self, expr: IndexValues) -> tuple[str, list[Piece]]:
        return "_index", list(expr.args)

    def _print_IndexValues(self, expr: IndexValues) -> str:
        return self._call(*self._parts_IndexValues(expr))

    def _parts_ScatterAdd(self, expr: ScatterAdd) -> tuple[str, list[Piece]]:
        shape, values, *positions = expr.args
        return "_scatter_add", [self._tuple(shape.args), values, *positions]

    def _print_ScatterAdd(self, expr: ScatterAdd) -> str:
        return self._call(*self._parts_ScatterAdd(expr))

    def _parts_Contraction(self, expr: Contraction) -> tuple[str, list[Piece]]:
        subscripts, *operands = expr.args
        return f"{self.array}.einsum", [f'"{subscripts.text}"', *operands, "optimize=True"]

    def _print_Contraction(self, expr: Contraction) -> str:
        return self._call(*self._parts_Contraction(expr))

    def _axes(self, axes: sympy.Tuple) -> str:
        return str(int(axes[0])) if len(axes) == 1 else str(tuple(int(a) for a in axes))

    def _parts_Reduction(self, expr: Reduction) -> tuple[str, list[Piece]]:
        op, values, axes = expr.args
        return f"{self.array}.{op.text}", [values, f"axis={self._axes(axes)}"]

    def _print_Reduction(self, expr: Reduction) -> str:
        return self._call(*self._parts_Reduction(expr))

    def _parts_Masked(self, expr: Masked) -> tuple[str, list[Piece]]:
        condition, value, fill = expr.args
        return f"{self.array}.where", [condition, value, fill]

    def _print_Masked(self, expr: Masked) -> str:
        return self._call(*self._parts_Masked(expr))

    def _parts_ArgSearch(self, expr: ArgSearch) -> tuple[str, list[Piece]]:
        op, values, *grids = expr.args
        return f"_arg{op.text}", [values, *grids]

    def _print_ArgSearch(self, expr: ArgSearch) -> str:
        return self._call(*self._parts_ArgSearch(expr))

    def _parts_Broadcast(self, expr: Broadcast) -> tuple[str, list[Piece]]:
        value, shape = expr.args
        return f"{self.array}.broadcast_to", [value, self._tuple(shape.args)]

    def _print_Broadcast(self, expr: Broadcast) -> str:
        return self._call(*self._parts_Broadcast(expr))

    def _print_IsFirst(self, expr: IsFirst) -> str:
        position, rank, *conditions = expr.args
        tests = [f"({self._print(position)} == {self._print(rank)})"]
        tests += [f"({self._print(c)})" for c in conditions]
        return tests[0] if len(tests) == 1 else f"({' & '.join(tests)})"

    def _print_AsFloat(self, expr: AsFloat) -> str:
        return f"1.0 * {self._operand(expr.args[0], ATOM_LEVEL)}"

    def _print_Constant(self, expr: Constant) -> str:
        return self._print(expr.args[0])

    def _print_Both(self, cond: Both) -> str:
        if len(cond.args) == 1:
            return self._print(cond.args[0])
        return " & ".join(f"({self._print(c)})" for c in cond.args)

    def _precedence(self, expr: sympy.Basic) -> int:
        if isinstance(expr, AsFloat) and self._print_AsFloat(expr).startswith("1.0 * "):
            return MUL_LEVEL
        if isinstance(expr, Constant) and self._print_Constant(expr) == self._print(expr.args[0]):
            return self._precedence(expr.args[0])  # printed as it is: `(2*p + 1) * dY`
        return super()._precedence(expr)

    # ---- numbers and functions ---------------------------------------------------------------

    def _print_Pow(self, expr: sympy.Pow, rational: bool = False) -> str:
        base, exponent = expr.args
        if exponent == sympy.S.Half:
            return f"{self.array}.sqrt({self._print(base)})"
        return super()._print_Pow(expr, rational)

    def _print_NegativeInfinity(self, expr: sympy.Basic) -> str:
        return "-np.inf"

    def _print_Infinity(self, expr: sympy.Basic) -> str:
        return "np.inf"


# precedence levels of the loops printer (``loops.ADD, UNARY, MUL, POW, ATOM``)
MUL_LEVEL, ATOM_LEVEL = 2, 4


class JaxPrinter(NumpyPrinter):
    """``jnp`` for the data; ``jax.nn.sigmoid``; grids and masks stay NumPy."""

    array = "jnp"
    target = "jax"

    def _parts_Contraction(self, expr: Contraction) -> tuple[str, list[Piece]]:
        subscripts, *operands = expr.args
        return "jnp.einsum", [f'"{subscripts.text}"', *operands]

    def _print_ConvCall(self, node: ConvCall) -> str:
        record = jax_call(node.conv.call)
        return self._framework_call(node, record)

    def _framework_call(self, node: ConvCall, record: Any) -> str:
        """The operands arranged into locals, the framework's call, and its result arranged."""
        conv = node.conv
        lines = []
        names = []
        for tensor, layout, local in (
            (conv.call.x, conv.x_layout, node.lhs),
            (conv.call.w, conv.w_layout, node.rhs),
        ):
            name = self._print(sympy.Symbol(tensor))
            code = self._operand_code(name, layout)
            if code != name:
                lines.append(f"{self._print(local)} = {code}")
                name = self._print(local)
            names.append(name)
        call = str(dataclasses.replace(record, x=names[0], w=names[1]))
        return "\n".join([*lines, self._arranged(node, call)])

    def _operand_code(self, name: str, layout: Any) -> str:
        return operand_code(name, layout)


class TorchPrinter(JaxPrinter):
    """``torch`` for everything: the data, and the index grids and masks too, on the device
    of the data and in its dtype (those of ``like``, the function's first tensor that is
    not an index array), so that no value goes through NumPy or the host."""

    array = "torch"
    target = "torch"
    index_arrays: frozenset[str] = frozenset()
    scalars: frozenset[str] = frozenset()  # sizes and parameters: Python numbers, not grids
    like = "dY"

    def _print_AsNumber(self, expr: sympy.Expr) -> str:
        # an index read as a number (`sin(i / 100)`): its grid in the data's dtype (torch
        # would compute an integer tensor times a float in its default dtype, float32)
        (var,) = expr.args
        name = self._print(var)
        return name if str(var) in self.scalars else f"{name}.to({self.like}.dtype)"

    def _print_PythonFunction(self, node: PythonFunction) -> str:
        names = [self._print(p) for p in node.parameters]
        data = [n for n in names if n not in self.index_arrays]
        self.like = (data or names or ["dY"])[0]
        return super()._print_PythonFunction(node)

    def _print_Grid(self, node: Grid) -> str:
        start, stop = node.start, node.stop
        bounds = [self._print(b) for b in ([stop] if start == 0 else [start, stop])]
        text = f"torch.arange({', '.join([*bounds, f'device={self.like}.device'])})"
        if node.trailing:
            text += f".reshape(-1{', 1' * int(node.trailing)})"
        return f"{self._print(node.var)} = {text}"

    def _print_NegativeInfinity(self, expr: sympy.Basic) -> str:
        return "-torch.inf"

    def _print_Infinity(self, expr: sympy.Basic) -> str:
        return "torch.inf"

    def _parts_Contraction(self, expr: Contraction) -> tuple[str, list[Piece]]:
        subscripts, *operands = expr.args
        return "torch.einsum", [f'"{subscripts.text}"', *operands]

    def _parts_Reduction(self, expr: Reduction) -> tuple[str, list[Piece]]:
        op, values, axes = expr.args
        if op.text == "prod":
            # torch.prod takes one dimension: the leading axes flattened into one
            count = len(axes)
            flat = values if count == 1 else f"torch.flatten({self._print(values)}, 0, {count - 1})"
            return "torch.prod", [flat, "dim=0"]
        function = {"sum": "torch.sum", "max": "torch.amax", "min": "torch.amin"}[op.text]
        return function, [values, f"dim={self._axes(axes)}"]

    # the masks and positions are NumPy: the helpers put them on the data's device
    def _parts_Masked(self, expr: Masked) -> tuple[str, list[Piece]]:
        condition, value, fill = expr.args
        return "_where", [self._print(condition), value, fill]

    def _print_IsFirst(self, expr: IsFirst) -> str:
        position, rank, *conditions = expr.args
        arguments: list[Piece] = [self._print(position), self._print(rank)]
        if conditions:
            arguments.append(self._print(Both(*conditions)))
        return self._call("_is_at", arguments)

    def _print_AsFloat(self, expr: AsFloat) -> str:
        return f"{self._operand(expr.args[0], ATOM_LEVEL)}.to({self.like}.dtype)"

    def _print_Constant(self, expr: Constant) -> str:
        value = self._print(expr.args[0])
        return f"torch.as_tensor({value}, dtype={self.like}.dtype, device={self.like}.device)"

    def _print_ConvCall(self, node: ConvCall) -> str:
        record = torch_call(node.conv.call, node.conv.kernel_size)
        return self._framework_call(node, record)

    def _print_FusedConv2d(self, node: FusedConv2d) -> str:
        # autograd's own kernel for both pullbacks of a convolution (output_mask: dX, dW),
        # its arguments positional: keywords cost the op's Python binding more than a small
        # convolution's backward takes to compute (~10-30 us a call)
        call = node.conv.call
        arguments: list[Piece] = [
            self._print(node.seed),
            *(self._print(sympy.Symbol(n)) for n in (call.x, call.w)),
            "None",
            self._print(sympy.Tuple(*call.stride)),
            self._print(sympy.Tuple(*(lo for lo, _ in call.padding))),
            self._print(sympy.Tuple(*call.dilation)),
            "False",
            "(0, 0)",
            "1",
            "(True, True, False)",
        ]
        comment = Comment(
            "autograd's own kernel, arguments positional (faster than keywords): dY, input, "
            "weight, bias_sizes, stride, padding, dilation, transposed, output_padding, "
            "groups, output_mask"
        )
        head = f"{self._print(node.grad_x)}, {self._print(node.grad_w)}, _ = "
        function = "torch.ops.aten.convolution_backward"
        inner = ", ".join(self._piece(a) for a in arguments)
        if not self._fits(f"{head}{function}({inner})") and self._fits(inner, 1):
            call_text = f"{function}(\n{self.tab}{inner}\n)"  # the arguments on a line of their own
        else:
            call_text = self._call(function, arguments, len(head))
        return f"{self._print(comment)}\n{head}{call_text}"

    def _operand_code(self, name: str, layout: Any) -> str:
        # torch's transpose swaps two axes; permute takes them all
        return operand_code(name, layout, "torch")

    def _result(self, conv: ConvPullback, output: str) -> str:
        return result_code(conv, output).replace(".transpose(", ".permute(")


# ---- from IR to arrays -----------------------------------------------------------------------


def _bound_variables(node: ir.Node) -> list[sympy.Symbol]:
    return [
        v for n in ir.walk(node) if isinstance(n, ir.Reduce | ir.IsExtremum) for v in n.variables
    ]


def _distinct(node: ir.Node, seen: set[sympy.Symbol], fresh: Callable[[str], str]) -> ir.Node:
    """``node`` with every bound variable distinct from the others (each has one grid)."""
    if isinstance(node, ir.Reduce | ir.IsExtremum):
        mapping = {}
        for var in node.variables:
            if var in seen:
                mapping[var] = sympy.Symbol(fresh(var.name), integer=True)
            seen.add(mapping.get(var, var))
        if mapping:
            node = replace(
                node,
                variables=tuple(mapping.get(v, v) for v in node.variables),
                body=ir.subs(node.body, mapping),
                where=tuple(c.subs(mapping) for c in node.where),
            )
        return replace(node, body=_distinct(node.body, seen, fresh))
    if isinstance(node, ir.Add):
        return replace(node, terms=tuple(_distinct(t, seen, fresh) for t in node.terms))
    if isinstance(node, ir.Mul):
        return replace(node, factors=tuple(_distinct(f, seen, fresh) for f in node.factors))
    if isinstance(node, ir.Pow):
        return replace(node, base=_distinct(node.base, seen, fresh))
    if isinstance(node, ir.Call):
        return ir.map_children(node, lambda child: _distinct(child, seen, fresh))
    return node


def _condition(constraint: ir.Constraint) -> Condition:
    if constraint.kind == "ge":
        return AtLeastZero(constraint.expr)
    if constraint.kind == "eq":
        return IsZero(constraint.expr)
    return Divides(constraint.modulus, constraint.expr)


def _holds(constraint: ir.Constraint) -> bool:
    """Whether a condition on no index variable is certainly true (``3 >= 0``)."""
    expr = constraint.expr
    if constraint.kind == "ge":
        return affine.nonnegative(expr)
    if constraint.kind == "eq":
        return expr == 0
    return expr == 0 or (constraint.modulus == 1)


Bounds = dict[sympy.Symbol, tuple[sympy.Expr, sympy.Expr]]


class _DenseStatement:
    """One statement over a dense grid of its index variables (cf. ``DenseEvaluator``).

    The statement's own variables take the last axes, in order; the variables of a
    reduction take leading axes in front of the axes around it (``depth`` of them).
    """

    def __init__(
        self,
        statement: ir.Statement,
        shapes: dict[str, tuple[sympy.Expr, ...]],
        fresh: Callable[[str], str],
    ) -> None:
        rhs = _distinct(statement.rhs, set(statement.indices), fresh)
        self.statement = replace(statement, rhs=rhs)
        self.shapes = shapes
        self.fresh = fresh
        self.index_vars = set(statement.indices) | set(_bound_variables(rhs))
        self.grids: dict[sympy.Symbol, Grid] = {}
        self.lines: list[sympy.Basic] = []
        self.cache: dict[ir.Node, sympy.Symbol] = {}
        self.whole = False  # a whole array was read: the value has the statement's full shape
        self.views = False  # a read at whole grids may be a view of the array (scatters)
        self.facts: list[ir.Constraint] = []  # the conditions of the masks around the value
        count = len(statement.indices)
        for k, (var, size) in enumerate(
            zip(statement.indices, shapes[statement.target], strict=True)
        ):
            self.grids[var] = Grid(var, sympy.Integer(0), size, count - 1 - k)

    def code(self) -> list[sympy.Basic]:
        statement = self.statement
        depth = len(statement.indices)
        terms = statement.rhs.terms if isinstance(statement.rhs, ir.Add) else (statement.rhs,)
        values = [self.term(t, depth) for t in terms]
        value = values[0] if len(values) == 1 else sympy.Add(*values, evaluate=False)
        used = set().union(value.free_symbols, *(line.rhs.free_symbols for line in self.lines))
        if statement.indices and not (self.whole or set(statement.indices) <= used):
            shape = sympy.Tuple(*self.shapes[statement.target])
            value = Broadcast(self.array(value, statement.rhs), shape)
        grids = [grid for var, grid in self.grids.items() if var in used]
        return [*grids, *self.lines, Assignment(sympy.Symbol(statement.target), value)]

    def scatter(self) -> list[sympy.Basic]:
        """A statement of one term that writes through index arrays: its body over a grid of
        the term's variables (leading axes) and the target's own, then one scatter-add."""
        statement = self.statement
        found = ir.scatter(statement.rhs, statement.indices)
        assert found is not None  # the plan says so
        depth = len(statement.indices)
        bounds, rest = self.box(found.variables, found.where)
        self.place(found.variables, bounds, depth)
        self.views = True
        with self.known(rest):
            body = self.number(found.body, depth + len(found.variables))
        body = self.array(body, found.body)
        mask = self.mask(rest)
        values = body if mask is None else Masked(mask, body, sympy.Float(0.0))
        shape = sympy.Tuple(*self.shapes[statement.target])
        value = ScatterAdd(shape, values, *found.positions(statement.indices))
        used = set().union(value.free_symbols, *(line.rhs.free_symbols for line in self.lines))
        grids = [grid for var, grid in self.grids.items() if var in used]
        return [*grids, *self.lines, Assignment(sympy.Symbol(statement.target), value)]

    # ---- values ------------------------------------------------------------------------------

    def term(self, node: ir.Node, depth: int) -> sympy.Expr:
        """A top-level term: a reduction is written in place, not into a local first."""
        if isinstance(node, ir.Reduce) and node.variables:
            return self.reduction(node, depth)
        if (
            isinstance(node, ir.Mul)
            and len(node.factors) == 2
            and isinstance(node.factors[0], ir.Const)
            and isinstance(node.factors[1], ir.Reduce)
            and node.factors[1].variables
        ):
            reduced = self.reduction(node.factors[1], depth)
            coefficient, _ = self.value(node.factors[0], depth)  # an array if it reads an index
            return sympy.Mul(coefficient, reduced, evaluate=False)
        return self.number(node, depth)

    def number(self, node: ir.Node, depth: int) -> sympy.Expr:
        """``node`` as a floating-point value (a test becomes 0.0 or 1.0)."""
        value, test = self.value(node, depth)
        return AsFloat(value) if test else value

    def array(self, value: sympy.Expr, node: ir.Node) -> sympy.Expr:
        """``value`` where an array is needed: a value that reads no tensor is marked."""
        if value.atoms(Constant) or any(True for _ in ir.accesses(node)):
            return value  # an array already (an index read as a number is one)
        return Constant(value)

    def value(self, node: ir.Node, depth: int) -> tuple[sympy.Expr, bool]:
        """The value of ``node`` over the grid, and whether it is a boolean test."""
        if isinstance(node, ir.Const):
            if node.value.free_symbols & self.index_vars:
                # an index read as a number (`X[i] + i`): an array over the grid
                return Constant(index_value(node.value)), False
            return node.value, False
        if isinstance(node, ir.Access):
            return self.read(node), False
        if isinstance(node, ir.Add):
            terms = [self.number(t, depth) for t in node.terms]
            return sympy.Add(*terms, evaluate=False), False
        if isinstance(node, ir.Mul):
            return self.product(node, depth), False
        if isinstance(node, ir.Pow):
            return sympy.Pow(self.number(node.base, depth), node.exponent, evaluate=False), False
        if isinstance(node, ir.Call):
            # an argument that reads no tensor (``sin(i / 100)``) is still an array of floats
            args = [self.array(self.number(a, depth), a) for a in node.args]
            return ELEMENTWISE[node.func](*args, evaluate=False), node.func == "step"
        if isinstance(node, ir.Reduce):
            if not node.variables:
                return self.guarded(node, depth), False
            key = _canonical(node)
            if key not in self.cache:
                stem = {"sum": "total", "max": "largest", "min": "smallest", "prod": "product"}[
                    node.op
                ]
                name = sympy.Symbol(self.fresh(stem), real=True)
                self.lines.append(Assignment(name, self.reduction(node, depth)))
                self.cache[key] = name
            return self.cache[key], False
        if isinstance(node, ir.IsExtremum):
            return self.is_extremum(node, depth), True
        raise TypeError(f"unknown node {node!r}")  # pragma: no cover

    def product(self, node: ir.Mul, depth: int) -> sympy.Expr:
        """Factors in order, tests last: ``dA * (Z > 0)``; tests alone become a float."""
        values = [self.value(f, depth) for f in node.factors]
        numbers = [v for v, test in values if not test]
        tests = [v for v, test in values if test]
        carried = any(
            not test and any(True for _ in ir.accesses(factor))
            for factor, (_, test) in zip(node.factors, values, strict=True)
        )
        if tests and not carried:
            # no factor is an array of floats to carry the tests
            joined = tests[0] if len(tests) == 1 else sympy.Mul(*tests, evaluate=False)
            tests = [AsFloat(joined)]
        return sympy.Mul(*numbers, *tests, evaluate=False)

    def read(self, node: ir.Access) -> sympy.Expr:
        tensor = sympy.Symbol(node.tensor)
        if not node.indices:
            return tensor
        statement = self.statement
        if node.indices == statement.indices and tuple(self.shapes[node.tensor]) == tuple(
            self.shapes[statement.target]
        ):
            self.whole = True
            return tensor
        if self.views and (view := self.view(node)) is not None:
            return view
        indices = []
        for expr in node.indices:
            numerator, denominator = quotient(expr)
            indices.append(TrueDivide(numerator, denominator) if denominator != 1 else expr)
        return Read(tensor, *indices)

    def view(self, node: ir.Access) -> sympy.Expr | None:
        """``dY[:, None, :]``: a read at grids that each span the whole of their axis, in
        the order of the axes, as a view of the array laid out along the grids' axes (no
        copy, nothing outside); None for any other read."""
        grids = [self.grids.get(e) for e in node.indices]
        shape = self.shapes[node.tensor]
        if any(
            g is None or g.start != 0 or ir.expand(g.stop - n) != 0
            for g, n in zip(grids, shape, strict=True)
        ):
            return None
        trailing = [int(g.trailing) for g in grids if g is not None]
        if any(a <= b for a, b in zip(trailing, trailing[1:], strict=False)):
            return None
        subscript = [":" if t in trailing else "None" for t in range(trailing[0], -1, -1)]
        return View(sympy.Symbol(node.tensor), String(", ".join(subscript)))

    def mask(self, where: Sequence[ir.Constraint]) -> Both | None:
        conditions = [_condition(c) for c in where if not _holds(c)]
        return Both(*conditions) if conditions else None

    def guarded(self, node: ir.Reduce, depth: int) -> sympy.Expr:
        """A term under conditions and no sum: zero where they fail."""
        with self.known(node.where):
            body = self.number(node.body, depth)
        mask = self.mask(node.where)
        if mask is None:
            return body
        return Masked(mask, self.array(body, node.body), sympy.Float(0.0))

    def box(
        self, variables: Sequence[sympy.Symbol], where: Sequence[ir.Constraint]
    ) -> tuple[Bounds, list[ir.Constraint]]:
        """Each variable's range, from the conditions on it alone; the other conditions."""
        lows: dict[sympy.Symbol, list[sympy.Expr]] = {v: [] for v in variables}
        highs: dict[sympy.Symbol, list[sympy.Expr]] = {v: [] for v in variables}
        rest = []
        for constraint in where:
            inside = constraint.expr.free_symbols & self.index_vars
            if constraint.kind == "ge" and len(inside) == 1 and (var := next(iter(inside))) in lows:
                bound = bound_of(constraint, var)
                if bound is not None:
                    (lows if bound[0] > 0 else highs)[var].append(bound[1])
                    continue
            rest.append(constraint)
        bounds: Bounds = {}
        for var in variables:
            if not lows[var] or not highs[var]:
                raise EinderiveError(f"the range of {var} is not bounded by the sizes")
            bounds[var] = (sympy.Max(*lows[var]), sympy.Min(*highs[var]))
        return bounds, rest

    @contextmanager
    def known(self, conditions: Sequence[ir.Constraint]) -> Iterator[None]:
        """Inside: ``conditions`` hold wherever the value counts (a mask around it tests them)."""
        start = len(self.facts)
        self.facts += conditions
        try:
            yield
        finally:
            del self.facts[start:]

    def place(self, variables: Sequence[sympy.Symbol], bounds: Bounds, depth: int) -> None:
        """Grids for ``variables`` on leading axes, in front of ``depth`` axes."""
        for k, var in enumerate(variables):
            low, high = bounds[var]
            trailing = len(variables) - 1 - k + depth
            self.grids[var] = Grid(var, low, _plus_one(high), trailing)

    def reduction(self, node: ir.Reduce, depth: int) -> sympy.Expr:
        """``sum_`` / ``max_`` / ``min_`` over the leading axes of its variables (over a
        window of a variable that the variables around pin, see ``lower/window.py``)."""

        def size(var: sympy.Symbol) -> int | None:
            low, high = self.box([var], node.where)[0][var]
            values = ir.expand(high - low + 1)
            return int(values) if values.is_number else None

        def fresh() -> sympy.Symbol:
            offset = sympy.Symbol(self.fresh("k"), integer=True)
            self.index_vars.add(offset)
            return offset

        node = narrowed(node, self.index_vars - set(node.variables), size, fresh)
        bounds, rest = self.box(node.variables, node.where)
        used = ir.free_index_symbols(node.body).union(*(c.free_symbols for c in rest))
        present = [v for v in node.variables if v in used]
        self.place(present, bounds, depth)
        with self.known(rest):
            body = self.array(self.number(node.body, depth + len(present)), node.body)
        mask = self.mask(rest)
        fill = {"sum": 0.0, "max": -sympy.oo, "min": sympy.oo, "prod": 1.0}[node.op]
        values = body if mask is None else Masked(mask, body, sympy.sympify(fill))
        if present:
            axes = sympy.Tuple(*range(len(present)))
            values = Reduction(String(node.op), values, axes)
        if node.op == "prod":
            # a variable that nothing depends on repeats the factor
            repeats = [
                ir.expand(bounds[v][1] - bounds[v][0] + 1)
                for v in node.variables
                if v not in present
            ]
            count = sympy.Mul(*(sympy.Max(0, r) for r in repeats))
            return values if not repeats else sympy.Pow(values, count, evaluate=False)
        if node.op != "sum":
            return values
        # a variable that nothing depends on counts the terms
        counts = []
        for var in node.variables:
            if var not in present:
                low, high = bounds[var]
                extent = ir.expand(high - low + 1)
                counts.append(extent if affine.nonnegative(extent) else sympy.Max(0, extent))
        return sympy.Mul(*counts, values, evaluate=False) if counts else values

    def is_extremum(self, node: ir.IsExtremum, depth: int) -> sympy.Expr:
        """Whether ``at`` is the first (row-major) extremum: the search once, then a test."""
        bounds, rest = self.box(node.variables, node.where)
        key = _canonical(replace(node, at=()))
        if key not in self.cache:
            self.place(node.variables, bounds, depth)
            body = self.array(self.number(node.body, depth + len(node.variables)), node.body)
            mask = self.mask(rest)
            fill = -sympy.oo if node.op == "max" else sympy.oo
            values = body if mask is None else Masked(mask, body, fill)
            name = sympy.Symbol(self.fresh(f"arg{node.op}"), real=True)
            self.lines.append(Assignment(name, ArgSearch(String(node.op), values, *node.variables)))
            self.cache[key] = name
        rank: sympy.Expr = sympy.Integer(0)
        valid: list[ir.Constraint] = []
        for var, at in zip(node.variables, node.at, strict=True):
            low, high = bounds[var]
            numerator, denominator = quotient(at)
            index = at
            if denominator != 1:
                valid.append(ir.Constraint("div", numerator, denominator))
                index = sympy.floor(numerator / denominator, evaluate=False)
            rank = rank * ir.expand(high - low + 1) + index - low
            valid += [ir.normalise(ir.Constraint("ge", at - low))]
            valid += [ir.normalise(ir.Constraint("ge", high - at))]
        mapping = dict(zip(node.variables, node.at, strict=True))
        valid += [c.subs(mapping) for c in rest]
        # the masks around the test already hold these
        known = {ir.normalise(c) for c in self.facts}
        conditions = [_condition(c) for c in valid if not _holds(c) and c not in known]
        return IsFirst(self.cache[key], rank, *conditions)


# ---- functions and the module ----------------------------------------------------------------


@dataclass
class _VectorSource(_Source):
    """The loops emitter's function skeletons, with vectorized bodies."""

    methods: dict[str, Method] = dataclasses.field(default_factory=dict)
    conv_calls: bool = True

    def function(
        self,
        name: str,
        cotangent: str | None,
        statements: Sequence[ir.Statement],
        result: str,
        title: str,
    ) -> PythonFunction:
        skeleton = super().function(name, cotangent, statements, result, title)
        prologue = list(
            itertools.takewhile(lambda s: not isinstance(s, Ranked), skeleton.body.args)
        )
        taken = set(self.taken)

        def fresh(stem: str) -> str:
            for k in itertools.count(1):
                candidate = stem if k == 1 else f"{stem}{k}"
                if candidate not in taken:
                    taken.add(candidate)
                    return candidate
            raise AssertionError  # pragma: no cover

        body = [*prologue, *(self.statement(s, fresh) for s in statements)]
        body.append(Return(sympy.Symbol(result)))
        return PythonFunction(
            skeleton.name, skeleton.parameters, skeleton.keywords, skeleton.docstring, body
        )

    def statement(self, statement: ir.Statement, fresh: Callable[[str], str]) -> Ranked:
        code = self.code(statement, self.methods[statement.target], fresh)
        comment = Comment(statement_text(statement, with_domain=False))
        return Ranked(variables_of(statement), [comment, *code])

    def code(
        self, statement: ir.Statement, method: Method, fresh: Callable[[str], str]
    ) -> list[sympy.Basic]:
        """The lines that compute ``statement`` by ``method``."""
        target = sympy.Symbol(statement.target)
        if isinstance(method, Einsum) and not _is_copy(method):
            operands = [sympy.Symbol(name) for name in method.operands]
            value: sympy.Expr = Contraction(String(method.subscripts), *operands)
            if method.coefficient != 1.0:
                value = sympy.Mul(sympy.Float(method.coefficient), value, evaluate=False)
            return [Assignment(target, value)]
        if isinstance(method, ConvPullback) and self.framework_call(method):
            symbols = [sympy.Symbol(fresh(stem)) for stem in ("out", "lhs", "rhs")]
            return [ConvCall(target, *symbols, method)]
        if isinstance(method, Terms):  # each term into a local, then their sum
            code, terms = [], []
            for part, part_method in method.parts:
                stem = {ConvPullback: "conv", Einsum: "product", Scatter: "scattered"}.get(
                    type(part_method), "rest"
                )
                local = fresh(stem)
                self.shapes[local] = self.shapes[statement.target]
                code += self.code(replace(part, target=local), part_method, fresh)
                terms.append(sympy.Symbol(local))
            return [*code, Assignment(target, sympy.Add(*terms, evaluate=False))]
        if isinstance(method, Scatter):
            return _DenseStatement(statement, self.shapes, fresh).scatter()
        return _DenseStatement(statement, self.shapes, fresh).code()

    def framework_call(self, conv: ConvPullback) -> bool:
        """Whether the framework has a call for this convolution (JAX and PyTorch: 1-3 axes)."""
        return self.conv_calls or conv.call.rank in (1, 2, 3)


def _is_copy(method: Einsum) -> bool:
    """``einsum("ab->ab", dY)``: written as the array itself."""
    inputs, output = method.subscripts.split("->")
    return len(method.operands) == 1 and inputs == output


# ---- runtime code copied into the module ----------------------------------------------------

# the runtime definitions a module may call, and the runtime modules they come from
_RUNTIME_CALLS = (
    "_read",
    "_index",
    "_scatter_add",
    "_argmax",
    "_argmin",
    "_conv",
    "_conv2d_vjp",
    "_where",
    "_is_at",
)
_RUNTIME_MODULES = {
    "numpy": ("numpy_helpers", "numpy_conv"),
    "jax": ("jax_helpers", "numpy_helpers"),
    "torch": ("torch_helpers",),
}


@dataclass(frozen=True)
class _Framework:
    """What one kind of module needs: its printer, imports, setup and helpers."""

    name: str
    title: str
    printer: type[NumpyPrinter]
    imports: tuple[str, ...]
    setup: str = ""
    note: str = ""


_FRAMEWORKS = {
    "numpy": _Framework(
        "numpy",
        "NumPy",
        NumpyPrinter,
        ("import numpy as np",),
        note="They need only NumPy; no Python loop runs over elements.",
    ),
    "jax": _Framework(
        "jax",
        "JAX",
        JaxPrinter,
        ("import jax", "import jax.numpy as jnp", "import numpy as np"),
        setup='jax.config.update("jax_enable_x64", True)',
        note="They need JAX and NumPy; importing the module switches on float64 (jax_enable_x64).",
    ),
    "torch": _Framework(
        "torch",
        "PyTorch",
        TorchPrinter,
        ("import torch",),
        note="They need PyTorch only, and compute on the device of the tensors they are "
        "given, in their dtype (index arrays: integer tensors).",
    ),
}


def _module(derivation: Derivation, framework: _Framework) -> str:
    program = derivation.program
    backward = derivation.backward
    shapes = derivation.shapes
    statements = [*program.statements, *backward.statements]
    order: list[sympy.Symbol] = []
    for statement in statements:
        order += variables_of(statement)
    taken = set(_RESERVED) | set(shapes) | {s.name for s in program.symbols}
    taken |= {s.name for s in program.definitions} | {v.name for v in order}
    taken |= {"jnp", "jax", "torch"}
    for statement in statements:
        taken |= {v.name for v in _bound_variables(statement.rhs)}
    printer = framework.printer(order)
    if isinstance(printer, TorchPrinter):
        printer.index_arrays = frozenset(program.index_arrays)
        printer.scalars = frozenset(s.name for s in [*program.symbols, *program.definitions])
    source = _VectorSource(
        derivation, printer, dict(shapes), taken, plans(derivation), framework.name == "numpy"
    )
    functions = source.functions()
    functions.append(_vjp(derivation, source, functions[1:], framework.name))
    texts = [printer.doprint(f) for f in functions]
    code = "\n".join(texts)
    imports = list(framework.imports)
    future = []
    roots = tuple(name for name in _RUNTIME_CALLS if f"{name}(" in code)
    helpers: list[str] = []
    if roots:
        runtime_imports, definitions = runtime.definitions(_RUNTIME_MODULES[framework.name], roots)
        imports += [line for line in runtime_imports if line not in imports]
        helpers = list(definitions)
        if any("->" in text for text in definitions):  # annotated: keep annotations lazy
            future = ["from __future__ import annotations", ""]
    summary = "\n".join(
        _fill(
            f"The forward and the pullbacks of `{program.text}`, vectorized with {framework.title}."
        )
    )
    note = "\n".join(_fill(f"Emitted by einderive. {framework.note}"))
    header = f'"""{summary}\n\n{note}\n"""'
    top = "\n".join([header, "", *future, *sorted(imports, key=_import_key)])
    if framework.setup:
        top += f"\n\n{framework.setup}"
    return "\n\n\n".join([top, *helpers, *texts]) + "\n"


def _vjp(
    derivation: Derivation,
    source: _VectorSource,
    pullbacks: Sequence[PythonFunction],
    framework: str,
) -> PythonFunction:
    """``vjp``: every pullback at once, in the order of the ``pullback_*`` functions.

    A 2-D convolution forward gets one call computing both of its pullbacks (NumPy:
    the phase-flat kernel sharing its im2col blocks; PyTorch: autograd's own
    ``convolution_backward``); anything else calls the pullback functions.
    """
    program = derivation.program
    seed = derivation.backward.seeds[0]
    names = [derivation.pullbacks[t].name for t in derivation.pullbacks]
    title = (
        f"Every pullback of `{program.text}` at once: ({', '.join(names)}"
        f"{',' if len(names) == 1 else ''}) given {seed} = dL/d{program.output}."
    )
    parameters = pullbacks[0].parameters
    keywords: list[sympy.Basic] = []
    for function in pullbacks:
        keywords += [k for k in function.keywords if k not in keywords]
    fused = _fused_conv2d(derivation, source.methods, framework)
    body: list[sympy.Basic]
    if fused is None:
        body = [PullbackCalls([f.name.text for f in pullbacks], parameters, keywords)]
    else:
        x, w = fused.call.x, fused.call.w
        grad_x, grad_w = (sympy.Symbol(derivation.pullbacks[t].name) for t in (x, w))
        body = [FusedConv2d(grad_x, grad_w, sympy.Symbol(seed), fused)]
        for tensor, function in zip(derivation.pullbacks, pullbacks, strict=True):
            if tensor not in (x, w):  # a bias, say: its own function
                name = sympy.Symbol(derivation.pullbacks[tensor].name)
                body.append(PullbackCall(name, function.name.text, parameters, keywords))
        body.append(Return(sympy.Tuple(*(sympy.Symbol(n) for n in names))))
        both = f"{derivation.pullbacks[x].name} and {derivation.pullbacks[w].name}"
        title += f" One call computes {both}, from the forward's convolution."
    docstring = "\n".join([*_fill(title), "", "Shapes and bounds: see the pullback functions."])
    return PythonFunction("vjp", parameters, keywords, docstring, body)


def _fused_conv2d(
    derivation: Derivation, methods: dict[str, Method], framework: str
) -> ConvPullback | None:
    """The forward's convolution, if one call of ``framework`` computes both its pullbacks.

    The forward is one 2-D convolution ``Y[b,o,i,j] = W[o,c,m,n]*X[b,c,...]`` in NCHW and
    OIHW (no fill, flip, permutation or groups) with numeric parameters, possibly plus
    terms that read neither X nor W (a bias), and its pullbacks include those into X and
    W; PyTorch also needs a padding that is symmetric as far as the output sees it, and
    numeric sizes.
    """
    if framework not in ("numpy", "torch") or len(derivation.program.statements) != 1:
        return None
    forward = methods[derivation.program.output]
    if isinstance(forward, Terms):
        convs = [m for _, m in forward.parts if isinstance(m, ConvPullback)]
        if len(convs) != 1:
            return None
        operands = {convs[0].call.x, convs[0].call.w}
        others = [part for part, m in forward.parts if m is not convs[0]]
        if any(a.tensor in operands for part in others for a in ir.accesses(part.rhs)):
            return None
        forward = convs[0]
    if not isinstance(forward, ConvPullback):
        return None
    conv = forward.subs(derivation.program.definitions)
    call = conv.call
    identity = (0, 1, 2, 3)
    if (
        call.rank != 2
        or call.x == call.w
        or not {call.x, call.w} <= set(derivation.pullbacks)
        or conv.x_layout.axes != identity
        or conv.w_layout.axes != identity
        or conv.x_layout.flips
        or conv.w_layout.flips
        or conv.out_axes != identity
        or call.flip_kernel
        or call.permute_kernel
        or call.permute_input
        or call.groups != 1
        or any(f != 1 for f in call.fill)
    ):
        return None
    entries = [*call.stride, *call.dilation, *(v for pair in call.padding for v in pair)]
    if not all(sympy.sympify(e).is_Integer for e in entries):
        return None
    if framework == "torch":
        shapes = derivation.shapes
        sizes = [*shapes[call.x][2:], *shapes[call.w][2:], *shapes[derivation.program.output][2:]]
        if not all(sympy.sympify(n).is_Integer for n in sizes):
            return None
        for axis in range(2):
            n, k = int(shapes[call.x][2 + axis]), int(shapes[call.w][2 + axis])
            out = int(shapes[derivation.program.output][2 + axis])
            lo = int(call.padding[axis][0])
            s, d = int(call.stride[axis]), int(call.dilation[axis])
            if lo < 0 or out < 1 or (n + 2 * lo - d * (k - 1) - 1) // s + 1 != out:
                return None
    return conv


def _import_key(line: str) -> tuple[int, str]:
    """``import x`` lines first, then ``from x import y``, each alphabetical (as isort)."""
    return (line.startswith("from "), line.split()[1])


def numpy_source(derivation: Derivation) -> str:
    """A module of vectorized NumPy: ``forward`` and one ``pullback_<input>`` per pullback.

    The functions take the arguments of the loops emitter's; contractions are
    ``np.einsum``, convolutions one call of ``_conv`` (the package's kernel, copied
    in), everything else dense index grids. The module imports only NumPy.

    >>> import numpy as np
    >>> from einderive import derive
    >>> emitted = {}
    >>> exec(numpy_source(derive("Y[i] = X[i]*X[i+1]")), emitted)
    >>> emitted["pullback_X"](np.ones(3), np.array([1.0, 2.0, 3.0]))
    array([2., 4., 2.])
    """
    return _module(derivation, _FRAMEWORKS["numpy"])


def jax_source(derivation: Derivation) -> str:
    """The same module in JAX: ``jax.lax.conv_general_dilated`` calls, ``jnp`` arrays."""
    return _module(derivation, _FRAMEWORKS["jax"])


def torch_source(derivation: Derivation) -> str:
    """The same module in PyTorch: ``torch.nn.functional`` calls, everything on the
    tensors' device and in their dtype."""
    return _module(derivation, _FRAMEWORKS["torch"])
