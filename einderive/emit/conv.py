"""Convolution calls as text: the generic row, and the JAX and PyTorch calls that compute it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sympy

from ..conv.calls import jax_call, torch_call
from ..conv.recognise import ConvPullback, Layout, NotConvolution
from .printer import NotationPrinter

if TYPE_CHECKING:
    from ..derivation import Derivation


def operand_code(name: str, layout: Layout) -> str:
    """NumPy code arranging a tensor as a call operand: transposed, unit axes inserted."""
    present = [a for a in layout.axes if a is not None]
    code = name
    if present != sorted(present):
        code += f".transpose({', '.join(map(str, present))})"
    return code + _subscript(["None" if a is None else ":" for a in layout.axes])


def _subscript(tokens: list[str]) -> str:
    """``[None, None]`` from ``[None, None, :, :]``; empty when nothing is left."""
    while tokens and tokens[-1] == ":":
        tokens.pop()
    return f"[{', '.join(tokens)}]" if tokens else ""


def result_code(conv: ConvPullback, name: str = "out") -> str:
    """NumPy code taking the call's output to the pullback's axes."""
    code = name
    code += _subscript(["0" if a is None else ":" for a in conv.out_axes])
    if conv.transpose is not None:
        code += f".transpose({', '.join(map(str, conv.transpose))})"
    return code


def _numbers(derivation: Derivation) -> dict[sympy.Symbol, sympy.Expr]:
    """The derived sizes' definitions, to substitute into formulas."""
    return dict(derivation.program.definitions)


def describe(derivation: Derivation, name: str) -> list[str]:
    """The lines of ``--emit conv`` for one pullback."""
    recognition = derivation.convolutions[name]
    pullback = derivation.pullbacks[name].name
    if isinstance(recognition, NotConvolution):
        return [f"{pullback}: not a convolution: {recognition.reason}"]
    call = recognition.call
    lines = [
        f"{pullback} = {result_code(recognition)}, out = {call}",
        f"    x = {operand_code(call.x, recognition.x_layout)}; "
        f"w = {operand_code(call.w, recognition.w_layout)}",
    ]
    expanded = recognition.subs(_numbers(derivation))
    if expanded.call != call:
        lines.append(f"    in the sizes: {expanded.call}")
    lines.append(f"    jax:   {jax_call(call)}")
    lines.append(f"    torch: {torch_call(call, recognition.kernel_size)}")
    return lines


def conv_text(derivation: Derivation) -> str:
    lines: list[str] = []
    printer = NotationPrinter()
    for symbol, definition in derivation.program.definitions.items():
        lines.append(f"{symbol.name} = {printer.scalar(definition)}")
    for name in derivation.pullbacks:
        lines += describe(derivation, name)
    return "\n".join(lines)


def conv_data(derivation: Derivation, name: str) -> dict[str, Any]:
    """The ``conv`` entry of a pullback in JSON: generic, jax and torch (null if not a conv)."""
    recognition = derivation.convolutions[name]
    if isinstance(recognition, NotConvolution):
        return {"generic": None, "jax": None, "torch": None, "reason": recognition.reason}
    call = recognition.subs(_numbers(derivation)).call
    generic = call.as_dict()
    generic["x_operand"] = operand_code(call.x, recognition.x_layout)
    generic["w_operand"] = operand_code(call.w, recognition.w_layout)
    generic["result"] = result_code(recognition)
    return {
        "generic": generic,
        "jax": jax_call(call).as_dict(),
        "torch": torch_call(call, recognition.subs(_numbers(derivation)).kernel_size).as_dict(),
    }
