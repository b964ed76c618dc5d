"""The elementwise functions of the notation: one row each, every place they appear.

A row holds a function's derivative (as IR, for the pullbacks and tangents), its
value on one float (the reference interpreter), and its spelling in each target:
the emitted loops (Python floats), NumPy, JAX, PyTorch and LaTeX. A new function
is one new row; the notation's own spelling is its name. ``step`` and ``sign``
are the ones derivatives introduce (``relu' = step``, ``abs' = sign``); they parse
too, so that printed pullbacks read back. ``max(a, b)`` and ``min(a, b)`` take two
arguments, and send the cotangent to the first on ties, as ``max_`` sends it to the
first position.
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
    """One elementwise function: its partial derivatives, its value and its spellings.

    A spelling is a format string of the arguments: ``{x}`` (the first) and ``{y}``
    (the second) printed as they are, ``{x_operand}`` bracketed where an operator of a
    product would bind it wrongly, ``{minus_x}`` its negation.
    """

    name: str
    # the partial derivative by each argument, as IR, given the arguments (f'(x) for one)
    derivatives: tuple[Callable[..., ir.Node], ...]
    value: Callable[..., float]  # f on floats (the interpreter)
    loops: str  # in the emitted loops, on Python floats (``math`` is imported there)
    numpy: str
    jax: str
    torch: str
    latex: str

    @property
    def arity(self) -> int:
        """How many arguments the function takes."""
        return len(self.derivatives)

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


def _larger(a: float, b: float) -> float:
    return a if a >= b else b


def _smaller(a: float, b: float) -> float:
    return a if a <= b else b


def _step(node: ir.Node) -> ir.Node:
    return ir.Call("step", node)


def _difference(a: ir.Node, b: ir.Node) -> ir.Node:
    return ir.make_add([a, _neg(b)])


_ROWS = (
    Elementwise(
        "exp",
        (lambda x: ir.Call("exp", x),),
        math.exp,
        "math.exp({x})",
        "np.exp({x})",
        "jnp.exp({x})",
        "torch.exp({x})",
        r"\exp\left({x}\right)",
    ),
    Elementwise(
        "log",
        (lambda x: ir.make_pow(x, sympy.Integer(-1)),),
        _log,
        "math.log({x})",
        "np.log({x})",
        "jnp.log({x})",
        "torch.log({x})",
        r"\log\left({x}\right)",
    ),
    Elementwise(
        "sqrt",
        (
            lambda x: ir.make_mul(
                [ir.Const(sympy.Rational(1, 2)), ir.make_pow(ir.Call("sqrt", x), sympy.Integer(-1))]
            ),
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
        (lambda x: ir.Call("sign", x),),
        abs,
        "abs({x})",
        "np.abs({x})",
        "jnp.abs({x})",
        "torch.abs({x})",
        r"\left|{x}\right|",
    ),
    Elementwise(
        "tanh",
        (lambda x: ir.make_add([ir.ONE, _neg(ir.make_pow(ir.Call("tanh", x), sympy.Integer(2)))]),),
        math.tanh,
        "math.tanh({x})",
        "np.tanh({x})",
        "jnp.tanh({x})",
        "torch.tanh({x})",
        r"\tanh\left({x}\right)",
    ),
    Elementwise(
        "sigmoid",
        (
            lambda x: ir.make_mul(
                [ir.Call("sigmoid", x), ir.make_add([ir.ONE, _neg(ir.Call("sigmoid", x))])]
            ),
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
        (lambda x: ir.Call("step", x),),
        lambda a: a if a > 0 else 0.0,
        "max({x}, 0.0)",
        "np.maximum({x_operand}, 0.0)",
        "jnp.maximum({x_operand}, 0.0)",
        "torch.relu({x_operand})",
        r"\operatorname{{relu}}\left({x}\right)",
    ),
    Elementwise(
        "step",
        (lambda x: ir.ZERO,),
        lambda a: 1.0 if a > 0 else 0.0,
        "(1.0 if {x} > 0 else 0.0)",
        "({x} > 0)",
        "({x} > 0)",
        "({x} > 0)",
        r"\operatorname{{step}}\left({x}\right)",
    ),
    Elementwise(
        "sign",
        (lambda x: ir.ZERO,),
        lambda a: float((a > 0) - (a < 0)),
        "np.sign({x})",
        "np.sign({x})",
        "jnp.sign({x})",
        "torch.sign({x})",
        r"\operatorname{{sign}}\left({x}\right)",
    ),
    Elementwise(
        "sin",
        (lambda x: ir.Call("cos", x),),
        math.sin,
        "math.sin({x})",
        "np.sin({x})",
        "jnp.sin({x})",
        "torch.sin({x})",
        r"\sin\left({x}\right)",
    ),
    Elementwise(
        "cos",
        (lambda x: _neg(ir.Call("sin", x)),),
        math.cos,
        "math.cos({x})",
        "np.cos({x})",
        "jnp.cos({x})",
        "torch.cos({x})",
        r"\cos\left({x}\right)",
    ),
    # ties go to the first argument: d max(a, b)/da = [a >= b] = 1 - step(b - a)
    Elementwise(
        "max",
        (
            lambda a, b: ir.make_add([ir.ONE, _neg(_step(_difference(b, a)))]),
            lambda a, b: _step(_difference(b, a)),
        ),
        _larger,
        "max({x}, {y})",
        "np.maximum({x}, {y})",
        "jnp.maximum({x}, {y})",
        "torch.maximum({x}, {y})",
        r"\max\left({x}, {y}\right)",
    ),
    Elementwise(
        "min",
        (
            lambda a, b: ir.make_add([ir.ONE, _neg(_step(_difference(a, b)))]),
            lambda a, b: _step(_difference(a, b)),
        ),
        _smaller,
        "min({x}, {y})",
        "np.minimum({x}, {y})",
        "jnp.minimum({x}, {y})",
        "torch.minimum({x}, {y})",
        r"\min\left({x}, {y}\right)",
    ),
)

FUNCTIONS: dict[str, Elementwise] = {row.name: row for row in _ROWS}


def derivative(name: str, argument: ir.Node) -> ir.Node:
    """``f'(argument)`` as IR, for a function of one argument; ``relu'(0) = 0``."""
    return FUNCTIONS[name].derivatives[0](argument)


def partials(call: ir.Call) -> tuple[ir.Node, ...]:
    """The partial derivative of ``call`` by each of its arguments, as IR."""
    return tuple(d(*call.args) for d in FUNCTIONS[call.func].derivatives)
