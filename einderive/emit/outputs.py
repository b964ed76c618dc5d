"""What ``--emit`` can print: one function per format, taking a Derivation."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..derivation import Derivation


def text(derivation: Derivation) -> str:
    return str(derivation)


def latex(derivation: Derivation) -> str:
    return derivation.latex()


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


def conv(derivation: Derivation) -> str:
    from .conv import conv_text

    return conv_text(derivation)


def as_data(derivation: Derivation) -> dict[str, Any]:
    """Everything as JSON-ready data: the forward, its shapes, and every pullback with its
    notation, LaTeX and convolution calls (``conv.{generic,jax,torch}``, null if none)."""
    from .conv import conv_data
    from .printer import NotationPrinter

    program = derivation.program
    printer = NotationPrinter()
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
            {"notation": p.notation(), "text": str(p)} for p in derivation.intermediates
        ],
        "pullbacks": {
            name: {
                "name": pullback.name,
                "notation": pullback.notation(),
                "text": str(pullback),
                "latex": pullback.latex(),
                "conv": conv_data(derivation, name),
            }
            for name, pullback in derivation.pullbacks.items()
        },
    }


def as_json(derivation: Derivation) -> str:
    return json.dumps(as_data(derivation), indent=2)


EMITTERS: dict[str, Callable[[Derivation], str]] = {
    "text": text,
    "latex": latex,
    "numpy-loops": numpy_loops,
    "numpy": numpy,
    "conv": conv,
    "jax": jax,
    "torch": torch,
    "json": as_json,
}
