"""Forward mode: the tangent of every statement, printed in the notation and checked numerically.

Each program of the acceptance list is checked by ``verify_jvp``: the output's
tangent against float64 central differences of the forward along a random
direction, and the duality ``<dY, tY> = sum_X <dX, tX>`` with the pullbacks,
on three random draws of the sizes left symbolic.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from test_programs import CASES, CNN_BLOCK, LAYER, LAYER_NORM

import einderive as ed
from einderive.errors import ArgumentError
from einderive.jvp import JVP, derive_jvp, jvp, tangents, verify_jvp


@pytest.mark.parametrize(
    ("name", "text", "params", "shapes", "ranges"), CASES, ids=[c[0] for c in CASES]
)
def test_tangents_match_finite_differences_and_pullbacks(name, text, params, shapes, ranges):
    report = verify_jvp(text, params=params, shapes=shapes, ranges=ranges)
    assert report.ok, str(report)
    assert {c.reference for c in report.checks} == {"finite differences", "vjp duality"}


def test_cnn_block_with_symbolic_sizes():
    # jvp's own instantiation resolves derived extents defined through others
    assert verify_jvp(CNN_BLOCK, ranges={"a": 2, "b": 2}).ok


# Numeric sizes: the public jvp against ed.vjp (duality) and against finite differences.
SIZED = [
    ("layer", LAYER, None, None, {"W": (2, 2, 2, 3), "A0": (2, 4, 5), "B": (2,)}),
    (
        "cnn-block",
        CNN_BLOCK,
        None,
        {"a": 2, "b": 2},
        {"W": (2, 1, 3, 3), "X": (1, 6, 7), "B": (2,)},
    ),
    ("layer-norm", LAYER_NORM, {"N": 4, "eps": 0.01}, None, {"X": (4,)}),
    ("transposed-conv", "Y[s*i+m] = X[i]*W[m]", {"s": 3}, None, {"X": (4,), "W": (5,)}),
    ("softmax-axis", "Y[i,k] = exp(X[i,k]) / sum_{j}(exp(X[i,j]))", None, None, {"X": (3, 4)}),
]


@pytest.mark.parametrize(
    ("name", "text", "params", "ranges", "shapes"), SIZED, ids=[c[0] for c in SIZED]
)
def test_jvp_is_dual_to_vjp(name, text, params, ranges, shapes):
    rng = np.random.default_rng(7)
    inputs = {k: rng.standard_normal(size) for k, size in shapes.items()}
    directions = {k: rng.standard_normal(size) for k, size in shapes.items()}
    tangent = jvp(text, inputs, directions, params=params, ranges=ranges)
    output = ed.evaluate(text, inputs, params=params, ranges=ranges)
    assert tangent.shape == output.shape
    cotangent = rng.standard_normal(output.shape)
    grads = ed.vjp(text, inputs, cotangent, params=params, ranges=ranges)
    left = np.sum(cotangent * tangent)
    right = sum(np.sum(grads[k] * directions[k]) for k in inputs)
    assert left == pytest.approx(right, rel=1e-12, abs=1e-12)
    step = 1e-6
    ahead = {k: v + step * directions[k] for k, v in inputs.items()}
    behind = {k: v - step * directions[k] for k, v in inputs.items()}
    finite = (
        ed.evaluate(text, ahead, params=params, ranges=ranges)
        - ed.evaluate(text, behind, params=params, ranges=ranges)
    ) / (2 * step)
    np.testing.assert_allclose(tangent, finite, rtol=1e-6, atol=1e-7)


def test_jvp_along_some_inputs_keeps_the_others_fixed():
    inputs = {"W": np.array([1.0, 2.0]), "X": np.array([1.0, 0.0, 3.0])}
    along_x = jvp("Y[i] = W[m]*X[i+m]", inputs, {"X": np.array([1.0, 0.0, 0.0])})
    np.testing.assert_array_equal(along_x, [1.0, 0.0])
    along_w = jvp("Y[i] = W[m]*X[i+m]", inputs, {"W": np.array([0.0, 1.0])})
    np.testing.assert_array_equal(along_w, [0.0, 3.0])


# ---- exact tangents at kinks and ties -------------------------------------------------------


def test_relu_tangent_at_zero_is_zero():
    text = "Z[o,i] = W[o,c]*X[c,i] + B[o]; A[o,i] = relu(Z[o,i])"
    inputs = {
        "W": np.array([[1.0, -1.0], [2.0, 1.0]]),
        "X": np.array([[1.0, 2.0, 0.0], [1.0, -2.0, 1.0]]),
        "B": np.array([0.0, -1.0]),
    }
    # Z = [[0, 4, -1], [2, 1, 0]]; moving B moves every Z by 1
    tangent = jvp(text, inputs, {"B": np.array([1.0, 1.0])})
    np.testing.assert_array_equal(tangent, [[0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])


def test_max_pool_tangent_follows_the_first_of_tied_positions():
    X = np.array([1.0, 3.0, 3.0, 0.0, 3.0, 2.0, 2.0])
    direction = np.arange(1.0, 8.0)
    tangent = jvp("Y[i] = max_{m}(X[2*i+m])", {"X": X}, {"X": direction}, ranges={"m": 3})
    np.testing.assert_array_equal(tangent, [2.0, 3.0, 5.0])  # tX at positions 1, 2, 4


def test_max_pool_2d_tangent_at_ties_is_row_major():
    X = np.array(
        [
            [5.0, 5.0, 0.0, 1.0],
            [5.0, 5.0, 1.0, 0.0],
            [2.0, 0.0, 7.0, 7.0],
            [2.0, 1.0, 7.0, 7.0],
        ]
    )
    direction = np.arange(16.0).reshape(4, 4)
    text = "P[i,j] = max_{a,b}(X[2*i+a, 2*j+b])"
    tangent = jvp(text, {"X": X}, {"X": direction}, ranges={"a": 2, "b": 2})
    # first maxima at (0, 0), (0, 3), (2, 0), (2, 2)
    np.testing.assert_array_equal(tangent, [[0.0, 3.0], [8.0, 10.0]])


# ---- printing -------------------------------------------------------------------------------


def test_tangent_statements_in_the_notation():
    derivation = derive_jvp(LAYER)
    assert isinstance(derivation, JVP)
    lines = derivation.notation().splitlines()
    assert lines[0] == (
        "tZ[o, i, j] = sum_{c,m,n}(tW[o, c, m, n] * A0[c, i + m, j + n] "
        "+ W[o, c, m, n] * tA0[c, i + m, j + n]) + tB[o]"
    )
    sigmoid = r"sigmoid\(Z\[o, i, j\]\)"
    assert re.fullmatch(
        rf"tA\[o, i, j\] = {sigmoid} \* \((1 - {sigmoid}|-{sigmoid} \+ 1)\) \* tZ\[o, i, j\]",
        lines[1],
    )
    assert derivation.output == "tA"
    assert derivation.seeds == ("tW", "tA0", "tB")
    assert repr(derivation) == f"JVP({LAYER!r} -> tA)"
    assert "\n" not in repr(derivation)
    assert r"\sigma" in derivation.latex()
    assert str(derivation).startswith("forward:\n  Z[o, i, j] = ")


def test_max_tangent_prints_an_argmax_weight():
    derivation = derive_jvp(CNN_BLOCK, ranges={"a": 2, "b": 2})
    statements = {s.target: s for s in derivation.statements}
    assert set(statements) == {"tZ", "tR", "tP"}
    text = derivation.notation()
    assert "tR[o, i, j] = step(Z[o, i, j]) * tZ[o, i, j]" in text
    assert re.search(
        r"tP\[o, i, j\] = sum_\{a,b\}\(\(\(a, b\) == argmax_\{(\w+),(\w+)\}"
        r"\(R\[o, 2\*i \+ \1, 2\*j \+ \2\]\)\) \* tR\[o, 2\*i \+ a, 2\*j \+ b\]\)",
        text,
    )


def test_scalar_tangents_and_linear_programs():
    text = derive_jvp(LAYER_NORM, params={"N": 5}).notation()
    assert text.splitlines()[0] == "tmu = 1/5 * sum_{j}(tX[j])"
    assert text.splitlines()[1].startswith("tvar = ")
    assert derive_jvp("Y[i] = X[i] + X[9-i]").notation() == "tY[i] = tX[i] + tX[9 - i]"
    assert derive_jvp("Y[s*i+m] = X[i]*W[m]").notation() == (
        "tY[p] = sum_{i}(tX[i] * W[p - s*i] + X[i] * tW[p - s*i])"
    )


def test_tangents_only_where_the_inputs_reach():
    program = ed.derive("Z[i] = W[i]*2; Y[i] = Z[i] + X[i]").program
    statements = tangents(program, wrt=["X"])
    assert [s.target for s in statements] == ["tY"]
    assert derive_jvp("Y[i] = W[i]*2", wrt=[]).notation() == "tY[i] = 0"


def test_tangent_names_avoid_taken_names():
    text = "tX[i] = X[i]*2; Y[i] = tX[i] + 1"
    derivation = derive_jvp(text)
    assert derivation.tangents == {"X": "ttX", "tX": "tttX", "Y": "tY"}
    assert derivation.notation() == "tttX[i] = 2 * ttX[i]\ntY[i] = tttX[i]"
    tangent = jvp(text, {"X": np.array([1.0, 2.0])}, {"X": np.array([1.0, -1.0])})
    np.testing.assert_array_equal(tangent, [2.0, -2.0])


def test_bad_tangents_are_errors():
    inputs = {"W": [1.0, 2.0], "X": [1.0, 0.0, 3.0]}
    with pytest.raises(ArgumentError, match="tangent is given for 'Q'"):
        jvp("Y[i] = W[m]*X[i+m]", inputs, {"Q": [1.0]})
    with pytest.raises(ArgumentError, match=r"tangent of 'X' has shape \(1,\)"):
        jvp("Y[i] = W[m]*X[i+m]", inputs, {"X": [1.0]})
    with pytest.raises(ArgumentError, match="cannot take tangents along 'Y'"):
        derive_jvp("Y[i] = W[m]*X[i+m]", wrt=["Y"])
