"""Higher order: a pullback is a program in the IR, and its own pullbacks are second derivatives.

For ``Y = f(X, W)`` and the first pullback ``dX(X, W, dY)``, the second-order
pullbacks of a cotangent ``V`` of ``dX`` are the gradients of ``<V, dX>``:
checked against float64 central differences of that inner product (the first
pullback computed by ``ed.vjp``) and, where ``dX`` is linear in an argument,
exactly on integers.
"""

from __future__ import annotations

import numpy as np
import pytest

import einderive as ed
from einderive.errors import ArgumentError
from einderive.higher import backward_program, derive_twice, verify_twice
from einderive.run.compile import run

STRIDED = "Y[i] = W[m]*X[s*i+m-1]"
STRIDED_2D = "Y[i,j] = W[m,n]*X[s*i+m-1, s*j+n-1]"
CONV_TANH = "Y[i] = tanh(sum_{m}(W[m]*X[s*i+m]))"
LAYER = "Z[o,i] = W[o,c]*X[c,i] + B[o]; A[o,i] = sigmoid(Z[o,i])"
FAST = ["loops", "numpy"]  # jax and torch take seconds to start; the backends' tests cross them

# (id, text, first, second, params)
CASES = [
    ("strided-X", STRIDED, "X", ["W", "dY"], None),
    ("strided-X-s2", STRIDED, "X", ["W", "dY"], {"s": 2}),
    ("strided-X-s3", STRIDED, "X", ["W", "dY"], {"s": 3}),
    ("strided-W", STRIDED, "W", ["X", "dY"], None),
    ("strided-2d-X", STRIDED_2D, "X", ["W", "dY"], {"s": 2}),
    ("downsample", "Y[i] = X[s*i]", "X", ["dY"], None),
    ("conv-tanh-X", CONV_TANH, "X", ["W", "dY"], None),
    ("conv-tanh-W", CONV_TANH, "W", ["X", "dY"], {"s": 2}),
    ("softmax", "Y[i] = exp(X[i]) / sum_{j}(exp(X[j]))", "X", ["dY"], None),
    ("transposed-conv", "Y[s*i+m] = X[i]*W[m]", "X", ["W", "dY"], None),
]


@pytest.mark.parametrize(
    ("name", "text", "first", "second", "params"), CASES, ids=[c[0] for c in CASES]
)
def test_second_order_pullbacks_match_finite_differences(name, text, first, second, params):
    report = verify_twice(text, first, second, params=params, backends_to_check=FAST)
    assert report.ok, str(report)
    assert {c.tensor for c in report.checks} == set(second)
    assert {c.backend for c in report.checks} == set(FAST)


def test_max_pool_second_order():
    report = verify_twice(
        "Y[i] = max_{m}(X[2*i+m])", "X", ["dY"], ranges={"m": 3}, backends_to_check=FAST
    )
    assert report.ok, str(report)


@pytest.mark.parametrize(
    ("text", "first", "params"),
    [(STRIDED, "X", {"s": 2}), (CONV_TANH, "X", None)],
    ids=["strided", "conv-tanh"],
)
def test_second_order_into_every_input(text, first, params):
    assert verify_twice(text, first, params=params, backends_to_check=FAST).ok


@pytest.mark.parametrize("first", ["W", "X"])
def test_second_order_of_a_layer_with_an_intermediate(first):
    assert verify_twice(LAYER, first, ["dA", "B"], backends_to_check=FAST).ok


# ---- the strided convolution by hand: finite differences of <V, dX> ------------------------


def _second_order(text, first, second, inputs, seed, cotangent, params):
    shapes = {k: v.shape for k, v in inputs.items()}
    derivation = derive_twice(text, first, second, params=params, shapes=shapes)
    arrays = {**inputs, derivation.program.inputs[-1]: seed}
    return run("loops", derivation, arrays, cotangent)


@pytest.mark.parametrize(("stride", "n", "k"), [(1, 6, 3), (2, 7, 3), (3, 10, 2), (2, 9, 4)])
def test_strided_conv_second_order_against_finite_differences(stride, n, k):
    rng = np.random.default_rng(stride * 100 + n)
    params = {"s": stride}
    inputs = {"W": rng.standard_normal(k), "X": rng.standard_normal(n)}
    out = ed.evaluate(STRIDED, inputs, params=params)
    dY = rng.standard_normal(out.shape)
    V = rng.standard_normal(n)

    def penalty(W, dY):
        pullback = ed.vjp(STRIDED, {"W": W, "X": inputs["X"]}, dY, params=params)["X"]
        return float(np.sum(V * pullback))

    second = _second_order(STRIDED, "X", ["W", "dY"], inputs, dY, V, params)
    step = 1e-6
    for name, direction in (("W", rng.standard_normal(k)), ("dY", rng.standard_normal(out.shape))):
        moved = {"W": inputs["W"], "dY": dY}
        ahead = dict(moved, **{name: moved[name] + step * direction})
        behind = dict(moved, **{name: moved[name] - step * direction})
        finite = (penalty(**ahead) - penalty(**behind)) / (2 * step)
        assert np.sum(second[name] * direction) == pytest.approx(finite, rel=1e-7, abs=1e-9)


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_strided_conv_second_order_is_exact_on_integers(stride):
    # dX is bilinear in (W, dY): <V, dX> = <ddW, W> = <ddY, dY> exactly
    rng = np.random.default_rng(stride)
    params = {"s": stride}
    inputs = {"W": rng.integers(-3, 4, 3).astype(float), "X": rng.integers(-3, 4, 11).astype(float)}
    dY = rng.integers(-3, 4, ed.evaluate(STRIDED, inputs, params=params).shape).astype(float)
    V = rng.integers(-3, 4, 11).astype(float)
    pullback = ed.vjp(STRIDED, inputs, dY, params=params)["X"]
    second = _second_order(STRIDED, "X", ["W", "dY"], inputs, dY, V, params)
    assert np.sum(V * pullback) == np.sum(second["W"] * inputs["W"]) == np.sum(second["dY"] * dY)


# ---- the backward program and the printed result --------------------------------------------


def test_backward_program_of_a_layer():
    derivation = ed.derive("Z[o,i] = W[o,c]*X[c,i] + B[o]; A[o,i] = relu(Z[o,i])")
    program = backward_program(derivation, "W")
    assert [s.target for s in program.statements] == ["Z", "dZ", "dW"]
    assert program.inputs == ("W", "X", "B", "dA")
    assert program.output == "dW"
    assert program.shapes["dA"] == program.shapes["Z"]
    assert program.shapes["dW"] == program.shapes["W"]
    assert program.text == (
        "Z[o, i] = sum_{c}(W[o, c] * X[c, i]) + B[o]; dZ[p, q] = dA[p, q] * step(Z[p, q]); "
        "dW[p, q] = sum_{i}(dZ[p, i] * X[q, i])"
    )


def test_backward_program_keeps_only_what_the_pullback_reads():
    program = backward_program(ed.derive("Y[i] = W[m]*X[i+m]"), "X")
    assert [s.target for s in program.statements] == ["dX"]
    assert program.inputs == ("W", "X", "dY")


def test_second_order_pullbacks_are_printed_in_the_notation():
    derivation = derive_twice(STRIDED, "X", ["W", "dY"])
    assert derivation.backward.seeds == ("ddX",)
    assert derivation.program.text == "dX[p] = sum_{i}(dY[i] * W[p - s*i + 1])"
    assert derivation.pullbacks["W"].notation() == "dW[p1] = sum_{i}(ddX[p1 + s*i - 1] * dY[i])"
    assert derivation.pullbacks["dY"].notation() == "ddY[p1] = sum_{p}(ddX[p] * W[p - s*p1 + 1])"
    assert "ddX is the cotangent of dX" in str(derivation)
    assert "\\mathrm{ddX}" in derivation.latex()


def test_second_order_of_a_downsampling_reads_a_rational_index():
    # dX[p] = dY[p/s] where s divides p; its pullback into dY gathers ddX[s*p]
    first = ed.derive("Y[i] = X[s*i]").pullbacks["X"].notation()
    assert first == "dX[p] = dY[p / s]"
    second = derive_twice("Y[i] = X[s*i]", "X", "dY").pullbacks["dY"].notation()
    assert second == "ddY[p1] = ddX[s*p1]"


def test_errors_name_the_inputs():
    with pytest.raises(ArgumentError, match="inputs are W, X"):
        derive_twice(STRIDED, "Q")
    with pytest.raises(ArgumentError, match="pullbacks are into W, X"):
        backward_program(ed.derive(STRIDED), "Y")
    with pytest.raises(ArgumentError, match="the inputs are W, X, dY"):
        derive_twice(STRIDED, "X", ["dX"])
