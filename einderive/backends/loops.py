"""The ``loops`` backend: the reference interpreter run over the backward statements."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from .. import ir
from ..evaluate import run_statements

if TYPE_CHECKING:
    from ..derivation import Derivation


def forward_values(
    derivation: Derivation, arrays: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Inputs plus every forward tensor the backward statements read."""
    program = derivation.program
    written = {s.target for s in program.statements}
    read = {a.tensor for s in derivation.backward.statements for a in ir.accesses(s.rhs)}
    if not read & written:
        return dict(arrays)
    return run_statements(program.statements, program.shapes, arrays)


def run(
    derivation: Derivation, arrays: Mapping[str, np.ndarray], cotangent: np.ndarray
) -> dict[str, np.ndarray]:
    backward = derivation.backward
    values = forward_values(derivation, arrays)
    values[backward.seeds[0]] = cotangent
    shapes = dict(derivation.program.shapes)
    for tensor, name in backward.cotangents.items():
        shapes[name] = derivation.program.shapes[tensor]
    values = run_statements(backward.statements, shapes, values)
    return {name: values[p.name] for name, p in derivation.pullbacks.items()}
