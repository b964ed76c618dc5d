"""What ``--emit`` can print: one function per format, taking a Derivation."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ..errors import ArgumentError
from ..model import Derivation


def text(derivation: Derivation) -> str:
    from .text import derivation_text

    return derivation_text(derivation)


def latex(derivation: Derivation) -> str:
    from .latex import derivation_latex

    return derivation_latex(derivation)


def numpy_loops(derivation: Derivation) -> str:
    from .loops import loops_source

    return loops_source(derivation)


def numpy(derivation: Derivation) -> str:
    from .vectorized import numpy_source

    return numpy_source(derivation)


def jax(derivation: Derivation) -> str:
    from .vectorized import jax_source

    return jax_source(derivation)


def torch(derivation: Derivation) -> str:
    from .vectorized import torch_source

    return torch_source(derivation)


def torch_function(derivation: Derivation) -> str:
    from .framework_ops import torch_function_source

    return torch_function_source(derivation)


def jax_custom_vjp(derivation: Derivation) -> str:
    from .framework_ops import jax_custom_vjp_source

    return jax_custom_vjp_source(derivation)


def conv(derivation: Derivation) -> str:
    from .conv import conv_text
    from .padding_mode import padding_mode_lines

    return "\n".join([conv_text(derivation), *padding_mode_lines(derivation)])


def as_data(derivation: Derivation) -> dict[str, Any]:
    """Everything as JSON-ready data: the forward, its shapes, every pullback with its
    notation, LaTeX and convolution calls (``conv.{generic,jax,torch}``, null if none), and
    the forward as a convolution with a padding_mode (``padding_mode``, null if it reads
    nothing through mod, clamp or reflect)."""
    from .conv import conv_data
    from .latex import statement_latex
    from .padding_mode import padding_mode_data
    from .printer import NotationPrinter
    from .text import statement_text

    program = derivation.program
    printer = NotationPrinter()
    shapes = derivation.shapes
    return {
        "expression": program.text,
        "output": program.output,
        "inputs": list(program.inputs),
        "parameters": [p.name for p in program.params],
        "given": dict(program.values),
        "shapes": {
            name: [printer.scalar(n) for n in shape] for name, shape in program.shapes.items()
        },
        "definitions": {s.name: printer.scalar(v) for s, v in program.definitions.items()},
        "cotangent": derivation.backward.seeds[0],
        "intermediates": [
            {
                "notation": statement_text(p.statement, with_domain=False, shapes=shapes),
                "text": statement_text(p.statement, shapes=shapes),
            }
            for p in derivation.intermediates
        ],
        "pullbacks": {
            name: {
                "name": pullback.name,
                "notation": statement_text(pullback.statement, with_domain=False, shapes=shapes),
                "text": statement_text(pullback.statement, shapes=shapes),
                "latex": statement_latex(pullback.statement),
                "conv": conv_data(derivation, name),
            }
            for name, pullback in derivation.pullbacks.items()
        },
        # a forward convolving a wrapped, clamped or reflected read: PyTorch's padding_mode
        "padding_mode": padding_mode_data(derivation),
    }


def as_json(derivation: Derivation) -> str:
    return json.dumps(as_data(derivation), indent=2)


# the kinds of source a derivation prints as: the names that d.source(kind), --emit and
# the backends of ed.compile share (a backend runs exactly its kind's source)
SOURCES: dict[str, Callable[[Derivation], str]] = {
    "loops": numpy_loops,
    "numpy": numpy,
    "jax": jax,
    "torch": torch,
    "torch-function": torch_function,
    "jax-custom-vjp": jax_custom_vjp,
}


def source(derivation: Derivation, kind: str = "loops") -> str:
    """Standalone Python source of the forward and every pullback of ``derivation``."""
    if kind not in SOURCES:
        choices = ", ".join(map(repr, SOURCES))
        raise ArgumentError(f"unknown source kind {kind!r}; choose {choices}")
    return SOURCES[kind](derivation)


EMITTERS: dict[str, Callable[[Derivation], str]] = {
    "text": text,
    "latex": latex,
    "loops": numpy_loops,
    "numpy-loops": numpy_loops,
    "numpy": numpy,
    "conv": conv,
    "jax": jax,
    "torch": torch,
    "torch-function": torch_function,
    "jax-custom-vjp": jax_custom_vjp,
    "json": as_json,
}
