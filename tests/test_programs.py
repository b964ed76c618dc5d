"""The acceptance list of issue 3: pullbacks verified, printed, and exact at kinks and ties.

Every case is checked by ``ed.verify`` (the adjoint identity against float64
central differences, on three random draws of the sizes left symbolic, and
the vectorized NumPy backend against the interpreter).
Where a function is piecewise linear the checks are exact: integer-valued
inputs, hand-computed pullbacks at ``relu'(0)`` and at ties of ``max_``.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import einderive as ed
from einderive.emit.text import statement_text

LAYER = "Z[o,i,j] = W[o,c,m,n]*A0[c,i+m,j+n] + B[o]; A[o,i,j] = sigmoid(Z[o,i,j])"
CNN_BLOCK = (
    "Z[o,i,j] = W[o,c,m,n]*X[c,i+m,j+n] + B[o]; R[o,i,j] = relu(Z[o,i,j]); "
    "P[o,i,j] = max_{a,b}(R[o,2*i+a,2*j+b])"
)
LAYER_NORM = (
    "mu = sum_{j}(X[j]) / N; var = sum_{j}((X[j] - mu)**2) / N; "
    "Y[i] = (X[i] - mu) / sqrt(var + eps)"
)
ROW_LAYER_NORM = (
    "mu[b] = sum_{j}(X[b,j]) / N; var[b] = sum_{j}((X[b,j] - mu[b])**2) / N; "
    "Y[b,i] = (X[b,i] - mu[b]) / sqrt(var[b] + eps)"
)

# (id, text, params, shapes, ranges); sizes left out are drawn at random by verify
CASES = [
    ("layer", LAYER, None, None, None),
    ("layer-sized", LAYER, None, {"A0": (2, 5, 4), "W": (3, 2, 2, 3)}, None),
    ("cnn-block", CNN_BLOCK, None, {"X": (1, 6, 6), "W": (2, 1, 3, 3)}, {"a": 2, "b": 2}),
    ("cnn-block-odd", CNN_BLOCK, None, {"X": (2, 7, 5), "W": (2, 2, 2, 2)}, {"a": 2, "b": 2}),
    ("max-pool-3-stride-2", "Y[i] = max_{m}(X[2*i+m])", None, None, {"m": 3}),
    ("max-pool-2d-3x3", "Y[i,j] = max_{a,b}(X[2*i+a, 2*j+b])", None, None, {"a": 3, "b": 3}),
    ("min-pool-2d", "Y[i,j] = min_{a,b}(X[2*i+a, 2*j+b])", None, None, {"a": 2, "b": 2}),
    ("average-pool", "Y[i] = sum_{m}(X[2*i+m]) / 2", None, None, {"m": 2}),
    ("softmax", "Y[i] = exp(X[i]) / sum_{j}(exp(X[j]))", None, None, None),
    ("softmax-scalar", "S = sum_{j}(exp(X[j])); Y[i] = exp(X[i]) / S", None, None, None),
    ("softmax-axis", "Y[i,k] = exp(X[i,k]) / sum_{j}(exp(X[i,j]))", None, None, None),
    ("logsumexp", "Y[i] = log(sum_{j}(exp(X[i,j])))", None, None, None),
    ("layer-norm-3", LAYER_NORM, {"N": 3, "eps": 0.001}, {"X": (3,)}, None),
    ("layer-norm-5", LAYER_NORM, {"N": 5}, {"X": (5,)}, None),
    ("layer-norm-rows", ROW_LAYER_NORM, {"N": 4}, {"X": (3, 4)}, None),
    ("transposed-conv-2", "Y[s*i+m] = X[i]*W[m]", {"s": 2}, None, None),
    ("transposed-conv-3", "Y[s*i+m] = X[i]*W[m]", {"s": 3}, None, None),
    ("transposed-conv-s", "Y[s*i+m] = X[i]*W[m]", None, None, None),
    ("transposed-conv-2d", "Y[2*i+m, 2*j+n] = X[i,j]*W[m,n]", None, None, None),
    ("mirror", "Y[i] = X[i] + X[9-i]", None, {"X": (10,)}, None),
    ("mirror-sized", "Y[i] = X[i] + X[9-i]", None, None, None),
    ("residual", "Z[i] = W[i,j]*X[j]; Y[i] = relu(Z[i]) + X[i]", None, None, None),
    ("arithmetic", "Y[i] = -X[i]**3 / 4 + 2 - tanh(X[i]) * abs(X[i]) / W[i]**2", None, None, None),
    ("exp-log-sqrt", "Y[i] = sqrt(X[i]) * log(X[i] + 1) + exp(-X[i])", None, None, None),
]

ids = [case[0] for case in CASES]


@pytest.mark.parametrize(("name", "text", "params", "shapes", "ranges"), CASES, ids=ids)
def test_pullbacks_match_finite_differences(name, text, params, shapes, ranges):
    # loops against finite differences, vectorized NumPy against loops (jax and torch are slow
    # to start; the backends' own tests cross them)
    report = ed.verify(text, params, shapes, ranges, backends_to_check=["loops", "numpy"])
    assert report.ok, str(report)
    assert {c.backend for c in report.checks} == {"loops", "numpy"}


def test_cnn_block_with_symbolic_sizes():
    assert ed.verify(CNN_BLOCK, ranges={"a": 2, "b": 2}, backends_to_check=["loops"]).ok


# ---- the pullbacks as printed ---------------------------------------------------------------


def _notation(text, name, **kwargs):
    return ed.derive(text, **kwargs).pullbacks[name].notation()


def _statement(text, target, **kwargs):
    """One statement of the backward program (an intermediate's cotangent too), in the notation."""
    derivation = ed.derive(text, **kwargs)
    statement = next(s for s in derivation.backward.statements if s.target == target)
    return statement_text(statement, with_domain=False)


def test_sigmoid_layer_prints_the_chain_rule():
    line = _statement(LAYER, "dZ")
    sigmoid = r"sigmoid\(Z\[p, q, r\]\)"
    one_minus = rf"(1 - {sigmoid}|-{sigmoid} \+ 1)"
    assert re.fullmatch(rf"dZ\[p, q, r\] = dA\[p, q, r\] \* {sigmoid} \* \({one_minus}\)", line)


def test_cnn_block_prints_relu_and_the_first_argmax():
    derivation = ed.derive(CNN_BLOCK, ranges={"a": 2, "b": 2})
    printed = str(derivation)
    assert "dZ[p, q, r] = dR[p, q, r] * step(Z[p, q, r])" in printed
    assert re.search(
        r"dR\[p, q, r\] = sum_\{i,j\}\(dP\[p, i, j\] \* \(\(q - 2\*i, r - 2\*j\) == argmax_",
        printed,
    )


def test_scalars_and_sums_print_without_brackets():
    printed = str(ed.derive(LAYER_NORM, params={"N": 5}))
    assert "dvar = sum_{i}(" in printed
    assert re.search(r"^  dmu = ", printed, re.MULTILINE)
    assert re.search(r"dX\[p\] = dY\[p\] / sqrt\(var \+ eps\) .* \+ 1/5 \* dmu$", printed, re.M)


def test_printed_pullbacks_of_linear_programs():
    assert _notation("Y[i] = X[i] + X[9-i]", "X") == "dX[p] = dY[p] + dY[9 - p]"
    assert _notation("Y[i] = sum_{m}(X[2*i+m]) / 2", "X", ranges={"m": 2}) == (
        "dX[p] = sum_{i : 2*i <= p, 2*i >= p - 1}(1/2 * dY[i])"
    )
    assert re.fullmatch(
        r"dX\[(\w+)\] = sum_\{(\w+)\}\(dY\[\2\] \* W\[\2 - s\*\1\]\)",
        _notation("Y[s*i+m] = X[i]*W[m]", "X"),
    )
    softmax = _notation("Y[i] = exp(X[i]) / sum_{j}(exp(X[j]))", "X")
    assert softmax.startswith("dX[p] = dY[p] * exp(X[p]) / sum_{")


# ---- exact pullbacks at kinks and ties ------------------------------------------------------


def test_relu_derivative_at_zero_is_zero():
    text = "Z[o,i] = W[o,c]*X[c,i] + B[o]; A[o,i] = relu(Z[o,i])"
    W = np.array([[1.0, -1.0], [2.0, 1.0]])
    X = np.array([[1.0, 2.0, 0.0], [1.0, -2.0, 1.0]])
    B = np.array([0.0, -1.0])
    # Z = [[0, 4, -1], [2, 1, 0]]: two pre-activations exactly 0
    np.testing.assert_array_equal(
        ed.evaluate(text.split(";")[0], {"W": W, "X": X, "B": B}),
        [
            [0.0, 4.0, -1.0],
            [2.0, 1.0, 0.0],
        ],
    )
    dA = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    grads = ed.vjp(text, {"W": W, "X": X, "B": B}, dA)
    # dZ = dA * [Z > 0] = [[0, 2, 0], [4, 5, 0]]
    np.testing.assert_array_equal(grads["B"], [2.0, 9.0])
    np.testing.assert_array_equal(grads["W"], [[4.0, -4.0], [14.0, -6.0]])
    np.testing.assert_array_equal(grads["X"], [[8.0, 12.0, 0.0], [4.0, 3.0, 0.0]])


def test_relu_of_an_input_at_zero():
    grads = ed.vjp("Y[i] = relu(X[i])", {"X": [-1.0, 0.0, 2.0, 0.0]}, [1.0, 1.0, 1.0, 1.0])
    np.testing.assert_array_equal(grads["X"], [0.0, 0.0, 1.0, 0.0])


def test_max_pool_ties_go_to_the_first_position():
    X = np.array([1.0, 3.0, 3.0, 0.0, 3.0, 2.0, 2.0])
    # windows X[0:3], X[2:5], X[4:7] all peak at 3; the first 3 of each is at 1, 2, 4
    text = "Y[i] = max_{m}(X[2*i+m])"
    np.testing.assert_array_equal(ed.evaluate(text, {"X": X}, ranges={"m": 3}), [3.0, 3.0, 3.0])
    grads = ed.vjp(text, {"X": X}, [1.0, 10.0, 100.0], ranges={"m": 3})
    np.testing.assert_array_equal(grads["X"], [0.0, 1.0, 10.0, 0.0, 100.0, 0.0, 0.0])


def test_max_pool_2d_ties_follow_row_major_order_of_the_window():
    X = np.array(
        [
            [5.0, 5.0, 0.0, 1.0],
            [5.0, 5.0, 1.0, 0.0],
            [2.0, 0.0, 7.0, 7.0],
            [2.0, 1.0, 7.0, 7.0],
        ]
    )
    text = "P[i,j] = max_{a,b}(X[2*i+a, 2*j+b])"
    grads = ed.vjp(text, {"X": X}, [[1.0, 2.0], [3.0, 4.0]], ranges={"a": 2, "b": 2})
    expected = np.zeros((4, 4))
    expected[0, 0] = 1.0  # four-way tie: (a, b) = (0, 0)
    expected[0, 3] = 2.0  # tie of (0, 1) and (1, 0): (0, 1) comes first
    expected[2, 0] = 3.0  # tie of (0, 0) and (1, 0)
    expected[2, 2] = 4.0
    np.testing.assert_array_equal(grads["X"], expected)


def test_min_pool_ties_go_to_the_first_position():
    grads = ed.vjp(
        "Y[i] = min_{m}(X[2*i+m])", {"X": [0.0, 0.0, -1.0, 4.0, -1.0]}, [1.0, 2.0], ranges={"m": 3}
    )
    np.testing.assert_array_equal(grads["X"], [0.0, 0.0, 3.0, 0.0, 0.0])


@pytest.mark.parametrize("bias", [0.0, 1.0])
def test_cnn_block_with_ties(bias):
    X = np.zeros((1, 4, 4))
    X[0, 1, 1] = 1.0
    inputs = {"W": np.ones((1, 1, 1, 1)), "X": X, "B": np.array([bias])}
    dP = np.array([[[1.0, 2.0], [3.0, 4.0]]])
    grads = ed.vjp(CNN_BLOCK, inputs, dP, ranges={"a": 2, "b": 2})
    # R = relu(X + bias); three of the four windows are constant: ties at the window's start
    expected = np.zeros((1, 4, 4))
    expected[0, 1, 1] = 1.0
    if bias > 0:
        expected[0, 0, 2], expected[0, 2, 0], expected[0, 2, 2] = 2.0, 3.0, 4.0
    # with bias 0 the tied values sit at relu's kink, where relu' = 0
    np.testing.assert_array_equal(grads["X"], expected)
    np.testing.assert_array_equal(grads["W"], [[[[1.0]]]])
    np.testing.assert_array_equal(grads["B"], [expected.sum()])


# Piecewise-linear and positively homogeneous in X: <dY, f(X)> = <dX, X> exactly.
HOMOGENEOUS = [
    ("average-pool", "Y[i] = sum_{m}(X[2*i+m]) / 2", None, {"m": 2}, {"X": (9,)}),
    ("max-pool", "Y[i] = max_{m}(X[2*i+m])", None, {"m": 3}, {"X": (9,)}),
    ("mirror", "Y[i] = X[i] + X[9-i]", None, None, {"X": (10,)}),
    ("transposed-conv-2", "Y[s*i+m] = X[i]*W[m]", {"s": 2}, None, {"X": (5,), "W": (3,)}),
    ("transposed-conv-3", "Y[s*i+m] = X[i]*W[m]", {"s": 3}, None, {"X": (4,), "W": (5,)}),
    (
        "conv-relu-pool",
        "Z[o,i,j] = W[o,c,m,n]*X[c,i+m,j+n]; R[o,i,j] = relu(Z[o,i,j]); "
        "P[o,i,j] = max_{a,b}(R[o,2*i+a,2*j+b])",
        None,
        {"a": 2, "b": 2},
        {"X": (2, 6, 7), "W": (2, 2, 2, 2)},
    ),
]


@pytest.mark.parametrize(
    ("name", "text", "params", "ranges", "shapes"), HOMOGENEOUS, ids=[c[0] for c in HOMOGENEOUS]
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_adjoint_identity_is_exact_on_integers(name, text, params, ranges, shapes, seed):
    rng = np.random.default_rng(seed)
    inputs = {k: rng.integers(-3, 4, size).astype(float) for k, size in shapes.items()}
    output = ed.evaluate(text, inputs, params=params, ranges=ranges)
    cotangent = rng.integers(-3, 4, output.shape).astype(float)
    grads = ed.vjp(text, inputs, cotangent, params=params, ranges=ranges)
    assert np.sum(cotangent * output) == np.sum(grads["X"] * inputs["X"])


def test_intermediates_print_as_notation():
    d = ed.derive("H[i] = W[m]*X[i+m]; Y[i] = tanh(H[i])")
    (intermediate,) = d.intermediates
    assert repr(d.intermediates) == "(Pullback('dH[p] = dY[p] * (1 - tanh(H[p])**2)'),)"
    assert str(intermediate) == "dH[p] = dY[p] * (1 - tanh(H[p])**2)"
    assert intermediate.tensor == "H" and intermediate.cotangent == "dY"
