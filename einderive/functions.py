"""The elementwise functions of the notation: one row each, every place they appear.

A row holds a function's derivative (as IR, for the pullbacks and tangents), its
value on one float (the reference interpreter), and its spelling in each target:
the emitted loops (Python floats), NumPy, JAX, PyTorch and LaTeX. A new function
is one new row; the notation's own spelling is its name. ``step`` and ``sign``
are the ones derivatives introduce (``relu' = step``, ``abs' = sign``); they parse
too, so that printed pullbacks read back.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import sympy

from . import ir


@dataclass(frozen=True)
class Elementwise:
    """One elementwise function: its derivative, its value and its spellings.

    A spelling is a format string of the argument: ``{x}`` printed as it is,
    ``{x_operand}`` bracketed where an operator of a product would bind it wrongly,
    ``{minus_x}`` its negation.
    """

    name: str
    derivative: Callable[[ir.Node], ir.Node]  # f'(x) as IR, given x
    value: Callable[[float], float]  # f on one float (the interpreter)
    loops: str  # in the emitted loops, on Python floats (``math`` is imported there)
    numpy: str
    jax: str
    torch: str
    latex: str

    def spell(self, target: str, **argument: str) -> str:
        """The call in ``target`` ("loops", "numpy", "jax", "torch", "latex")."""
        return str(getattr(self, target)).format(**argument)

    def is_atom(self, target: str) -> bool:
        """Whether the spelling in ``target`` is one call or bracket (binds as an atom)."""
        spelling = str(getattr(self, target))
        if spelling.startswith("(") or re.match(r"^[\w.]+\(", spelling):
            depth = 0
            for k, char in enumerate(spelling):
                depth += {"(": 1, ")": -1}.get(char, 0)
                if depth == 0 and char == ")":
                    return k == len(spelling) - 1
        return False


def _neg(node: ir.Node) -> ir.Node:
    return ir.make_mul([ir.Const(sympy.Integer(-1)), node])


def _sigmoid(a: float) -> float:
    # the two forms keep exp from overflowing on either side
    return 1.0 / (1.0 + math.exp(-a)) if a >= 0 else math.exp(a) / (1.0 + math.exp(a))


def _log(a: float) -> float:
    return math.log(a) if a > 0 else (-math.inf if a == 0 else math.nan)


def _sqrt(a: float) -> float:
    return math.sqrt(a) if a >= 0 else math.nan


_ROWS = (
    Elementwise(
        "exp",
        lambda x: ir.Call("exp", x),
        math.exp,
        "math.exp({x})",
        "np.exp({x})",
        "jnp.exp({x})",
        "torch.exp({x})",
        r"\exp\left({x}\right)",
    ),
    Elementwise(
        "log",
        lambda x: ir.make_pow(x, sympy.Integer(-1)),
        _log,
        "math.log({x})",
        "np.log({x})",
        "jnp.log({x})",
        "torch.log({x})",
        r"\log\left({x}\right)",
    ),
    Elementwise(
        "sqrt",
        lambda x: ir.make_mul(
            [ir.Const(sympy.Rational(1, 2)), ir.make_pow(ir.Call("sqrt", x), sympy.Integer(-1))]
        ),
        _sqrt,
        "math.sqrt({x})",
        "np.sqrt({x})",
        "jnp.sqrt({x})",
        "torch.sqrt({x})",
        r"\sqrt{{{x}}}",
    ),
    Elementwise(
        "abs",
        lambda x: ir.Call("sign", x),
        abs,
        "abs({x})",
        "np.abs({x})",
        "jnp.abs({x})",
        "torch.abs({x})",
        r"\left|{x}\right|",
    ),
    Elementwise(
        "tanh",
        lambda x: ir.make_add([ir.ONE, _neg(ir.make_pow(ir.Call("tanh", x), sympy.Integer(2)))]),
        math.tanh,
        "math.tanh({x})",
        "np.tanh({x})",
        "jnp.tanh({x})",
        "torch.tanh({x})",
        r"\tanh\left({x}\right)",
    ),
    Elementwise(
        "sigmoid",
        lambda x: ir.make_mul(
            [ir.Call("sigmoid", x), ir.make_add([ir.ONE, _neg(ir.Call("sigmoid", x))])]
        ),
        _sigmoid,
        # np.exp gives inf, not an OverflowError, for a large negative argument
        "1 / (1 + np.exp({minus_x}))",
        "0.5 * (1.0 + np.tanh(0.5 * {x_operand}))",
        "jax.nn.sigmoid({x_operand})",
        "torch.sigmoid({x_operand})",
        r"\sigma\left({x}\right)",
    ),
    Elementwise(
        "relu",
        lambda x: ir.Call("step", x),
        lambda a: a if a > 0 else 0.0,
        "max({x}, 0.0)",
        "np.maximum({x_operand}, 0.0)",
        "jnp.maximum({x_operand}, 0.0)",
        "torch.relu({x_operand})",
        r"\operatorname{{relu}}\left({x}\right)",
    ),
    Elementwise(
        "step",
        lambda x: ir.ZERO,
        lambda a: 1.0 if a > 0 else 0.0,
        "(1.0 if {x} > 0 else 0.0)",
        "({x} > 0)",
        "({x} > 0)",
        "({x} > 0)",
        r"\operatorname{{step}}\left({x}\right)",
    ),
    Elementwise(
        "sign",
        lambda x: ir.ZERO,
        lambda a: float((a > 0) - (a < 0)),
        "np.sign({x})",
        "np.sign({x})",
        "jnp.sign({x})",
        "torch.sign({x})",
        r"\operatorname{{sign}}\left({x}\right)",
    ),
)

FUNCTIONS: dict[str, Elementwise] = {row.name: row for row in _ROWS}


def derivative(name: str, argument: ir.Node) -> ir.Node:
    """``f'(argument)`` as IR; ``relu'(0) = 0``."""
    return FUNCTIONS[name].derivative(argument)
