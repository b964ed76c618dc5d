"""Convolution calls as text: the generic row, and the JAX and PyTorch calls that compute it."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Literal

import sympy
from sympy.printing.pycode import PythonCodePrinter

from .. import affine
from ..conv.calls import jax_call, torch_call
from ..conv.indexing import IndexCall, recognise_indexing
from ..conv.recognise import (
    ConvPullback,
    Layout,
    NotConvolution,
    convolutions,
    flat_axes,
    has_merges,
)
from .printer import NotationPrinter

if TYPE_CHECKING:
    from ..model import Derivation


Framework = Literal["jax", "torch"]

# How each array library spells "these axes in this order": torch's ``transpose``
# swaps two axes, its ``permute`` takes them all.
_PERMUTE = {"numpy": "transpose", "jax": "transpose", "torch": "permute"}
_SIZES = PythonCodePrinter()


def operand_code(name: str, layout: Layout, library: str = "numpy") -> str:
    """Code arranging a tensor as a call operand: axes reordered, merged, unit axes inserted."""
    present = flat_axes(layout.axes)
    code = name
    if layout.flips and library == "torch":  # torch slices take no negative step
        code += f".flip({tuple(layout.flips)})"
    elif layout.flips:
        rank = max(layout.flips) + 1
        steps = ["::-1" if a in layout.flips else ":" for a in range(rank)]
        code += f"[{', '.join(steps)}]"
    if present != sorted(present):
        code += f".{_PERMUTE[library]}({', '.join(map(str, present))})"
    if has_merges(layout.axes):  # the one merged axis takes what the others leave
        sizes = [
            "-1" if isinstance(a, tuple) else "1" if a is None else f"{name}.shape[{a}]"
            for a in layout.axes
        ]
        return f"{code}.reshape({', '.join(sizes)})"
    return code + _subscript(["None" if a is None else ":" for a in layout.axes])


def _subscript(tokens: list[str]) -> str:
    """``[None, None]`` from ``[None, None, :, :]``; empty when nothing is left."""
    while tokens and tokens[-1] == ":":
        tokens.pop()
    return f"[{', '.join(tokens)}]" if tokens else ""


def result_code(conv: ConvPullback, name: str = "out", library: str = "numpy") -> str:
    """Code taking the call's output to the pullback's axes."""
    code = name
    split = conv.split_shape
    if split is not None:  # a grouped call's channels: (group, channel within it)
        code += f".reshape({', '.join(_SIZES.doprint(n) for n in split)})"
        code += _subscript(["0" if unit else ":" for unit in conv.split_units])
    else:
        code += _subscript(["0" if a is None else ":" for a in conv.out_axes])
    if conv.transpose is not None:
        code += f".{_PERMUTE[library]}({', '.join(map(str, conv.transpose))})"
    return code


def framework_statement(conv: ConvPullback, framework: Framework) -> str:
    """One Python statement computing the pullback with JAX's or PyTorch's call.

    The operands are arranged inline and the result taken to the pullback's axes,
    so that the line runs as pasted with the tensors bound (``jax``/``torch``
    imported): ``dX = jax.lax.conv_general_dilated(dY, jax.lax.rev(W[:, None], ...), ...)``.
    """
    call = conv.call
    record: Any = jax_call(call) if framework == "jax" else torch_call(call, conv.kernel_size)
    arranged = dataclasses.replace(
        record,
        x=operand_code(call.x, conv.x_layout, framework),
        w=operand_code(call.w, conv.w_layout, framework),
    )
    return f"{conv.pullback} = {result_code(conv, str(arranged), framework)}"


def _numbers(derivation: Derivation) -> dict[sympy.Symbol, sympy.Expr]:
    """The derived sizes' definitions, to substitute into formulas."""
    return dict(derivation.program.definitions)


def in_given_sizes(expr: sympy.Expr, definitions: dict[sympy.Symbol, sympy.Expr]) -> sympy.Expr:
    """``expr`` with every derived size (an output's ``I``) replaced by its definition in the
    input's and kernel's sizes, a multiple of a floor written as a remainder:
    ``2*I + M - N_X - 3`` with ``I = floor((N_X - M + 1)/2) + 1`` is ``-((N_X - M + 1) % 2)``.
    """
    expr = sympy.sympify(expr)
    for _ in range(len(definitions) + 1):  # a definition may name another derived size
        replaced = expr.xreplace(definitions)
        if replaced == expr:
            break
        expr = replaced
    return sympy.expand(expr.replace(lambda e: isinstance(e, sympy.floor), _floor_as_remainder))


def _floor_as_remainder(floor: sympy.Expr) -> sympy.Expr:
    """``floor(a/q) = (a - a % q) / q`` for whole ``a`` and positive whole ``q``."""
    numerator, denominator = sympy.fraction(sympy.together(floor.args[0]))
    numerator = sympy.expand(numerator)
    if denominator == 1 or not (numerator.is_integer and denominator.is_integer):
        return floor
    if not affine.positive(denominator):
        return floor
    return (numerator - sympy.Mod(numerator, denominator)) / denominator


def index_calls(derivation: Derivation) -> dict[str, IndexCall]:
    """The forward statements and pullbacks that are one indexing call (a lookup, a gather,
    a scatter-add), by the name of the tensor each computes."""
    shapes = derivation.shapes
    tensors = {name: tensor for tensor, name in derivation.backward.cotangents.items()}
    found = {}
    for statement in derivation.program.statements:
        call = recognise_indexing(statement, shapes)
        if call is not None:
            found[statement.target] = call
    for pullback in derivation.pullbacks.values():
        call = recognise_indexing(pullback.statement, shapes, like=tensors.get(pullback.name))
        if call is not None:
            found[pullback.name] = call
    return found


def describe(derivation: Derivation, name: str) -> list[str]:
    """The lines of ``--emit conv`` for one pullback."""
    recognition = convolutions(derivation)[name]
    pullback = derivation.pullbacks[name].name
    if isinstance(recognition, NotConvolution):
        lines = [f"{pullback}: not a convolution: {recognition.reason}"]
        indexing = index_calls(derivation).get(pullback)
        if indexing is not None:
            lines += [f"    jax:   {indexing.jax()}", f"    torch: {indexing.torch()}"]
        return lines
    call = recognition.call
    lines = [
        f"{pullback} = {result_code(recognition)}, out = {call}",
        f"    x = {operand_code(call.x, recognition.x_layout)}; "
        f"w = {operand_code(call.w, recognition.w_layout)}",
    ]
    expanded = recognition.subs(_numbers(derivation))
    padding = tuple(tuple(in_given_sizes(e, {}) for e in pair) for pair in expanded.call.padding)
    expanded = dataclasses.replace(
        expanded, call=dataclasses.replace(expanded.call, padding=padding)
    )
    if expanded.call != call:
        lines.append(f"    in the sizes: {expanded.call}")
    lines.append(f"    jax:   {framework_statement(recognition, 'jax')}")
    lines.append(f"    torch: {framework_statement(recognition, 'torch')}")
    return lines


def conv_text(derivation: Derivation) -> str:
    lines: list[str] = []
    printer = NotationPrinter()
    for symbol, definition in derivation.program.definitions.items():
        lines.append(f"{symbol.name} = {printer.scalar(definition)}")
    calls = index_calls(derivation)
    for statement in derivation.program.statements:
        if statement.target in calls:  # the forward's lookups, gathers and scatter-adds
            call = calls[statement.target]
            lines += [f"{statement.target}: {call.kind.replace('_', ' ')} (forward)"]
            lines += [f"    jax:   {call.jax()}", f"    torch: {call.torch()}"]
    for name in derivation.pullbacks:
        lines += describe(derivation, name)
    return "\n".join(lines)


def conv_data(derivation: Derivation, name: str) -> dict[str, Any]:
    """The ``conv`` entry of a pullback in JSON: generic, jax and torch (null if not a conv)."""
    recognition = convolutions(derivation)[name]
    if isinstance(recognition, NotConvolution):
        data: dict[str, Any] = {
            "generic": None,
            "jax": None,
            "torch": None,
            "reason": recognition.reason,
        }
        indexing = index_calls(derivation).get(derivation.pullbacks[name].name)
        if indexing is not None:  # a gather or a scatter-add: its framework calls
            data["indexing"] = indexing.as_dict()
        return data
    in_sizes = recognition.subs(_numbers(derivation))
    call = in_sizes.call
    generic = call.as_dict()
    generic["x_operand"] = operand_code(call.x, recognition.x_layout)
    generic["w_operand"] = operand_code(call.w, recognition.w_layout)
    generic["result"] = result_code(recognition)
    return {
        "generic": generic,
        "jax": {**jax_call(call).as_dict(), "code": framework_statement(in_sizes, "jax")},
        "torch": {
            **torch_call(call, in_sizes.kernel_size).as_dict(),
            "code": framework_statement(in_sizes, "torch"),
        },
    }
